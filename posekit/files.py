"""Files in and out: JSON inputs read with errors that name the file; outputs written whole or not at all.

Every file posekit writes (results JSON, figures, benchmark reports, ONNX graphs) goes through
:func:`atomic_write`, so a crash, a full disk or Ctrl-C never leaves half a file where a reader,
or the next run, would take it for a complete one.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import IO, Iterator

from posekit.errors import PosekitError


def read_json(path: str | os.PathLike, error: type[PosekitError], expected: str) -> object:
    """Parse a JSON file, turning every failure (missing, a folder, unreadable, not JSON) into
    ``error`` naming the file and ending with ``expected``, what the file should have been."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        raise error(f"{path}: no such file; expected {expected}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as reason:
        raise error(f"{path}: not readable JSON ({reason}); expected {expected}") from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write ``path`` through a temporary file that is renamed onto it only when the block succeeds.

    The data goes to a hidden ``.NAME.<random>.part`` file in the same folder (the same file
    system, so the rename is atomic): readers see the old file or the complete new one, never a
    mix. If the ``with`` block raises, the temporary file is deleted and ``path`` is untouched.
    Missing parent folders are created. A new file gets the permissions ``open(path, "w")`` would
    give it: 0666 less the umask (``tempfile.mkstemp`` would leave 0600).

    Args:
        path: the file to write.
        mode: ``"wb"`` for bytes, ``"w"`` for UTF-8 text.

    Yields:
        The open temporary file.

    Raises:
        PosekitError: the folder cannot be created or written to, or ``path`` cannot be replaced
            (it is a folder, say); the message names ``path``.

    Example:
        >>> with atomic_write("results.json", "w") as file:
        ...     json.dump(results, file)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary, descriptor = _create_beside(path)
    except OSError as error:
        raise _cannot_write(path, error) from None
    try:
        with open(descriptor, mode, encoding=None if mode == "wb" else "utf-8") as file:
            yield file
        try:
            os.replace(temporary, path)
        except OSError as error:
            raise _cannot_write(path, error) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _create_beside(path: Path) -> tuple[Path, int]:
    """Create a new hidden temporary file next to ``path``; return its path and open descriptor."""
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            # Mode 0o666 lets the kernel apply the umask, exactly as for a plain open().
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue  # another writer drew the same random name: draw again


def _cannot_write(path: Path, error: OSError) -> PosekitError:
    return PosekitError(f"cannot write {path} ({error.strerror or error}); expected a writable folder and file name")
