"""Files in and out: JSON inputs read with errors that name the file; outputs written whole or not at all.

Every file posekit writes (results JSON, figures, benchmark reports, ONNX graphs) goes through
:func:`atomic_write`, so a crash, a full disk, Ctrl-C or SIGTERM never leaves half a file where a
reader, or the next run, would take it for a complete one, and never replaces what is not a
regular file (a device, a FIFO, the target of a symlink is written through, not swapped out).
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import secrets
import signal
import stat
import threading
from pathlib import Path
from typing import IO, Callable, Iterator

from posekit.errors import OutputError, PosekitError

# Temporary files of atomic_write blocks still in progress; a signal handler removes them (see remove_pending).
_PENDING: set[Path] = set()

# Room for the ".NAME.<8 hex>.part" decoration of a temporary name within the usual 255-byte limit.
_TEMPORARY_NAME_BYTES = 200


def file_key(path: str | os.PathLike) -> tuple[int, int] | None:
    """Identity of the file ``path`` leads to (device, inode), the same for every spelling of it
    (``./a.jpg``, an absolute path, a symlink, a hard link); None when it does not exist."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def read_json(path: str | os.PathLike, error: type[PosekitError], expected: str) -> object:
    """Parse a JSON file, turning every failure (missing, a folder, a device, unreadable, not JSON,
    nested too deeply) into ``error`` naming the file and ending with ``expected``.

    The file is opened once and read to its end, so a pipe or ``<(process substitution)`` works;
    a UTF-8 byte-order mark is accepted.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig") as file:
            kind = _special_kind(os.fstat(file.fileno()).st_mode)
            if kind not in (None, "FIFO"):
                raise error(f"{path}: is a {kind}, not a file; expected {expected}")
            return json.load(file)
    except FileNotFoundError:
        raise error(f"{path}: no such file; expected {expected}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder; expected {expected}") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to read; expected {expected}") from None
    except (OSError, UnicodeDecodeError, ValueError) as reason:  # json.JSONDecodeError is a ValueError
        raise error(f"{path}: not readable JSON ({reason}); expected {expected}") from None


def write_json(path: str | os.PathLike, data: object) -> Path:
    """Write ``data`` as strict JSON through :func:`atomic_write` and return ``path``.

    Raises:
        OutputError: ``data`` holds NaN or infinity (not JSON; callers drop or replace them
            first), or the file cannot be written; nothing is written then.
    """
    path = Path(path)
    try:
        text = json.dumps(data, allow_nan=False)
    except ValueError:
        raise OutputError(f"cannot write {path}: the data holds NaN or infinity, which JSON cannot represent") from None
    with atomic_write(path, "w") as file:
        file.write(text)
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write ``path`` through a temporary file that is renamed onto it only when the block succeeds.

    The data goes to a hidden ``.NAME.<random>.part`` file in the same folder (the same file
    system, so the rename is atomic): readers see the old file or the complete new one, never a
    mix. Every write is checked (the file gives writers no descriptor to bypass it, see :class:`_WritesChecked`),
    and the data is flushed and fsync'ed before the rename, so a full disk is noticed here. If
    the ``with`` block raises, the temporary file is deleted and ``path`` is untouched; SIGTERM is
    covered by :func:`remove_pending`. Missing parent folders are created. A new file gets the
    permissions ``open(path, "w")`` would give it (0666 less the umask); a replaced file keeps its own.

    What is already at ``path`` decides how it is written:

    - nothing or a regular file: as above;
    - a symlink: the file it points to is written as above; the link stays;
    - a character device (``/dev/null``, a terminal) or a FIFO: written through directly (a
      stream has no "whole or nothing"); a FIFO nobody reads from is an error, not a hang;
    - a folder, a block device or a socket: refused.

    Args:
        path: the file to write.
        mode: ``"wb"`` for bytes, ``"w"`` for UTF-8 text.

    Yields:
        The open file.

    Raises:
        OutputError: the folder cannot be created or written to, the disk is full, ``path`` is
            a folder or another file that cannot be replaced, or the name is too long; the
            message names ``path``. ``errno`` is the system's error number, when there is one.

    Example:
        >>> with atomic_write("results.json", "w") as file:
        ...     json.dump(results, file)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    encoding = None if mode == "wb" else "utf-8"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir met a file, a device ... where the folder should be
        raise _cannot_write(path, OSError(errno.ENOTDIR, f"{path.parent} is not a folder")) from None
    except OSError as error:
        raise _cannot_write(path, error) from None
    info = check_writable(path)
    kind = None if info is None else _special_kind(info.st_mode)
    if kind is not None:  # a character device or a FIFO
        with _write_through(path, mode, encoding, kind) as file:
            yield file
        return
    # A symlink (or a chain of them) is kept and the file it leads to is replaced.
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    temporary = _temporary_name(target)
    _PENDING.add(temporary)  # before the file exists, so a signal can never leave it behind unlisted
    try:
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666: the umask applies
            if info is not None:
                os.fchmod(descriptor, stat.S_IMODE(info.st_mode))
            binary = io.BufferedWriter(_WritesChecked(descriptor, "w"))
            with binary if mode == "wb" else io.TextIOWrapper(binary, encoding=encoding) as file:
                yield file
                file.flush()
                os.fsync(descriptor)
            os.replace(temporary, target)
        except PosekitError:
            raise
        except OSError as error:  # from the caller's writes, flush, fsync, close or the rename
            raise _cannot_write(path, error) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        _PENDING.discard(temporary)


class _WritesChecked(io.FileIO):
    """A file that keeps its descriptor to itself, so that every byte goes through Python's io, which writes
    all of them or raises (ENOSPC on a full disk).

    Writers handed the descriptor may not check for a short write: Pillow's encoders call write(2) once per
    buffer and carry on when a nearly full disk took only part of it, which left a truncated JPEG under its
    final name. Without ``fileno()`` Pillow (and any such writer) falls back to ``file.write``.
    """

    def fileno(self) -> int:
        raise io.UnsupportedOperation("atomic_write's files take writes through write() only")


def check_writable(path: str | os.PathLike) -> os.stat_result | None:
    """What :func:`atomic_write` finds at ``path`` (following symlinks): None for nothing yet, else its
    stat; for checking an output before a long run rather than failing at its end.

    Raises:
        OutputError: ``path`` is something atomic_write refuses (a folder, a block device, a socket),
            or lies below a file; FIFOs and character devices pass (they are written through).
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _cannot_write(path, error) from None
    kind = _special_kind(info.st_mode)
    if kind not in (None, "character device", "FIFO"):
        error = OutputError(f"cannot write {path}: it is a {kind}, which posekit does not replace; expected a file name")
        error.errno = errno.EISDIR if kind == "folder" else errno.EINVAL
        raise error
    return info


# What an existing file must look like for an output of each kind to replace it: posekit replaces
# an earlier output of the same kind, never a file of another kind (a user's .json named as the video).
_KIND_SIGNATURES = {
    "mp4": ("an mp4 video", lambda head: head[4:8] == b"ftyp"),  # ISO base media: a box whose type is ftyp
    "json": ("a JSON file", lambda head: head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[")),
    "onnx": ("an ONNX model", lambda head: head[:1] == b"\x08"),  # protobuf field 1 (ir_version), a varint
}


def check_outputs(
    outputs: dict[str, tuple[str | os.PathLike | None, str]], inputs: dict[str, str | os.PathLike | None]
) -> None:
    """Refuse, before a run starts, outputs that would destroy something: the one rule of every
    command that writes named files.

    An output is refused when it is one of the run's inputs, under any spelling (``./a.mp4``, an
    absolute path, a symlink or hard link to it); when two outputs are one file (one would silently
    replace the other); when it is something :func:`atomic_write` refuses (a folder ...); and when it
    is an existing non-empty regular file of another kind than the output (a user's ``.json`` given
    as the video). Devices and FIFOs (``/dev/null``) pass: they are written through.

    Args:
        outputs: label (``"--out"``) -> (path or None for not asked, kind: ``"mp4"``, ``"json"`` or ``"onnx"``).
        inputs: label (``"the input video"``, ``"--boxes"``) -> path or None; paths that do not
            exist (a URL, a registered weights name) are not files and cannot be replaced.

    Raises:
        OutputError: the message names the output, what it would replace and what is expected.
    """
    named = {file_key(path): (label, path) for label, path in inputs.items() if path is not None and file_key(path)}
    seen: dict[object, tuple[str, str | os.PathLike]] = {}
    for label, (path, kind) in outputs.items():
        if path is None:
            continue
        key = file_key(path)
        if key in named:
            other, other_path = named[key]
            raise OutputError(f"{label} {path} is {other} ({other_path}); posekit never replaces an input: "
                              "expected a new file name")
        same = key or os.path.realpath(path)  # not there yet: two spellings of one new name meet here
        if same in seen:
            other, other_path = seen[same]
            raise OutputError(f"{label} {path} and {other} {other_path} are one file, so one output would replace "
                              "the other; expected two file names")
        seen[same] = label, path
        info = check_writable(path)
        if info is not None and stat.S_ISREG(info.st_mode) and info.st_size:
            what, looks_right = _KIND_SIGNATURES[kind]
            with open(path, "rb") as file:
                head = file.read(64)
            if not looks_right(head):
                raise OutputError(f"{label} {path} is an existing file that is not {what}; posekit replaces only "
                                  f"an earlier output of its kind: expected a new name or {what}")


def remove_pending() -> None:
    """Delete the temporary files of the :func:`atomic_write` blocks in progress.

    For a signal handler (SIGTERM, SIGHUP) that ends the process without unwinding; the blocks'
    targets keep their previous content.
    """
    for temporary in list(_PENDING):
        with contextlib.suppress(OSError):
            temporary.unlink()


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds the run like Ctrl-C, so every open output is cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def signals_raise(error: Callable[[int], BaseException] = Terminated) -> Iterator[None]:
    """While active, SIGTERM and SIGHUP raise ``error(signum)`` in the main thread, so cleanup blocks
    run (their default action ends the process on the spot and would leave temporary files behind).
    Outside the main thread, where signals cannot be caught, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        remove_pending()  # right away, in case code on the way out swallows the exception
        raise error(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def _write_through(path: Path, mode: str, encoding: str | None, kind: str) -> Iterator[IO]:
    """Write into a device or FIFO in place; errors on the way (a full device) name ``path``."""
    try:
        # O_NONBLOCK: opening a FIFO that nobody reads fails (ENXIO) instead of waiting forever.
        descriptor = os.open(path, os.O_WRONLY | (os.O_NONBLOCK if kind == "FIFO" else 0))
        os.set_blocking(descriptor, True)
        with open(descriptor, mode, encoding=encoding) as file:
            yield file
            file.flush()
    except PosekitError:
        raise
    except OSError as error:
        if error.errno == errno.ENXIO and kind == "FIFO":
            cause = OutputError(f"cannot write {path}: it is a FIFO that no process is reading; start the reader first")
            cause.errno = error.errno
            raise cause from None
        raise _cannot_write(path, error) from None


def _special_kind(mode: int) -> str | None:
    """What a file of ``st_mode`` is, in words, when it is not a regular file."""
    for test, kind in ((stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "special file"


def _temporary_name(path: Path) -> Path:
    """A new hidden name next to ``path`` (random, so concurrent writers do not meet), short enough
    for the file system when ``path``'s own name is near its limit."""
    name = os.fsencode(path.name)[:_TEMPORARY_NAME_BYTES].decode("utf-8", "ignore")
    return path.with_name(f".{name}.{secrets.token_hex(4)}.part")


_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "expected a folder you may write to",
    errno.EPERM: "expected a folder you may write to",
    errno.ENAMETOOLONG: "expected a shorter file name",
}


def _cannot_write(path: Path, error: OSError) -> OutputError:
    """The system's refusal (an errno, with a hint what to do), or a library's failure to encode (none)."""
    hint = _HINTS.get(error.errno, "expected a writable folder and file name") if error.errno else "nothing was written"
    result = OutputError(f"cannot write {path} ({error.strerror or error}); {hint}")
    result.errno = error.errno
    return result
