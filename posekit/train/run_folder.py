"""A training run's output folder: owned by one run at a time, and never taken over from another run unasked.

``posekit train --out RUN`` writes ``RUN/last.pth``, ``best.pth`` and ``log.csv``. While it runs it
holds an exclusive ``flock`` on ``RUN/.posekit-train.lock`` (released by the kernel when the process
ends, however it ends, so a killed run leaves no stale lock); a second run into the same folder
is refused at once. A folder that already holds a run's files is refused too, unless the new run
continues that very run (``--resume RUN/last.pth``) or says it replaces it (``--overwrite``).
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from posekit.errors import OutputError, PosekitError
from posekit.io.files import file_key

LOCK_NAME = ".posekit-train.lock"
RUN_FILES = ("last.pth", "best.pth", "log.csv")


def check_out_folder(out: Path, resume: Path | None, overwrite: bool) -> None:
    """Refuse ``out`` when it is not a folder, or holds a run that this one neither resumes nor replaces.

    Raises:
        OutputError: ``out`` is a file.
        PosekitError: ``out`` holds ``last.pth``, ``best.pth`` or ``log.csv`` of a run, ``resume`` is
            not its ``last.pth`` and ``overwrite`` is False.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: is a file; expected a folder for the run's checkpoints and log")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found or overwrite:
        return
    if resume is not None and file_key(resume) == file_key(out / "last.pth"):
        return
    last = out / "last.pth"
    raise PosekitError(
        f"out={str(out)!r} holds a training run ({', '.join(found)}); continue it with resume={str(last)!r}, "
        "replace it with overwrite=True, or choose another out",
        cli_message=f"--out {out} holds a training run ({', '.join(found)}); continue it with --resume {last}, "
                    "replace it with --overwrite, or choose another --out",
    )


class RunLock:
    """The exclusive lock of one run on its output folder (created if missing); :meth:`release` ends
    it (so does the lock's garbage collection, or the end of the process).

    Raises:
        PosekitError: another process holds the folder's lock (its pid is named).
        OutputError: the folder cannot be created or the lock file written.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._file = open(self._acquire(), "wb")  # a file object: garbage collection closes it
        except OSError as error:
            raise OutputError(f"--out {out}: cannot write there ({error.strerror or error}); expected a folder "
                              "you may write to") from None

    def _acquire(self) -> int:
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = os.read(descriptor, 32).decode(errors="replace").strip() or "?"
                os.close(descriptor)
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise PosekitError(
                    f"{self.path.parent} is in use by another posekit train (pid {holder}); a folder holds one "
                    "run at a time: wait for that run to end or choose another out",
                    cli_message=f"--out {self.path.parent} is in use by another posekit train (pid {holder}); a "
                                "folder holds one run at a time: wait for that run to end or choose another --out",
                ) from None
            # The previous holder may have removed the file between our open and flock: lock the file
            # that is there now, or two runs would each hold a lock on a different file.
            held = os.fstat(descriptor)
            if file_key(self.path) == (held.st_dev, held.st_ino):
                break
            os.close(descriptor)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        return descriptor

    def release(self) -> None:
        """Remove the lock file and let the next run in (removed while still locked: see ``_acquire``)."""
        if self._file.closed:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self._file.close()
