"""Downloads into posekit's cache: resumable, checksummed, atomic, safe under concurrency.

Every download goes to ``<dest>.part`` and is renamed onto ``dest`` only once complete and
verified, so ``dest`` is either absent or whole. A lock file ``<dest>.lock`` serialises
processes fetching the same file; it is removed when the download ends. Any failure is a
:class:`~posekit.errors.DownloadError`
whose message is one sentence saying what failed and what to do; being offline is normal.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, build_opener

from posekit.errors import ChecksumError, DownloadError, Hint

CHUNK_BYTES = 1 << 20
# Seconds any network read (connecting, through a proxy too, and between bytes) may wait: a silent peer ends the download.
TIMEOUT_SECONDS = 30
GDRIVE_FOLDER_URL = "https://drive.google.com/drive/folders/{}"
GDRIVE_FILE_URL = "https://drive.google.com/uc?id={}"


def cache_dir() -> Path:
    """posekit's cache: ``$POSEKIT_HOME`` if set, else ``<torch hub dir>/posekit``.

    Checkpoints live in its ``checkpoints/`` folder. The folder is not created here.
    """
    if os.environ.get("POSEKIT_HOME"):
        return Path(os.environ["POSEKIT_HOME"]).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / "posekit"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_matches(path: Path, expected: str) -> bool:
    # A prefix is accepted: published file names often carry only the first 8 hex digits.
    return sha256_file(path).startswith(expected.lower())


# What a network failure was, in a few words: (what the message of any error in its chain says, summary).
_REASONS = (
    (("name or service not known", "temporary failure in name resolution", "nameresolutionerror",
      "nodename nor servname", "getaddrinfo failed", "failed to resolve"), "name resolution failed"),
    (("connection refused",), "connection refused"),
    (("timed out", "timeout"), "timed out"),
    (("network is unreachable", "no route to host"), "network unreachable"),
    (("connection reset", "connection aborted", "remotedisconnected", "connection broken"), "connection lost"),
    (("proxyerror", "tunnel connection failed"), "the proxy refused"),
    (("certificate", "ssl"), "TLS handshake failed"),
)


def _short_reason(error: BaseException) -> str:
    """The cause of a network failure in a few words ("connection refused", "name resolution failed",
    "timed out"): urllib3 and requests nest the cause into messages of ~900 characters."""
    texts, seen = [], set()
    pending = [error]
    while pending:  # the error, its causes and the reasons/args it wraps
        item = pending.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        texts.append(f"{type(item).__name__} {item}".lower())
        if isinstance(item, BaseException):
            pending += [item.__cause__, item.__context__, getattr(item, "reason", None),
                        *(arg for arg in item.args if isinstance(arg, BaseException))]
    for needles, summary in _REASONS:
        if any(needle in text for text in texts for needle in needles):
            return summary
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    return reason if len(reason) <= 80 else reason[:77] + "..."


def _what_to_do(source: str, dest: Path, hint: str | None) -> str:
    # Absolute: a relative path would leave the reader guessing what it is relative to.
    advice = f"download {source} on a machine with internet and put it at {dest.absolute()}"
    return f"{advice}, or {hint}" if hint else advice


def _download_error(
    error_type: type[DownloadError], sentence: Callable[[str], str], source: str, dest: Path, hint: Hint | str | None
) -> DownloadError:
    """``sentence(advice)`` as an error whose advice fits the reader: Python in str(), flags in ``for_cli()``.

    A plain-string ``hint`` is worded the same for both.
    """
    python, cli = (hint.python, hint.cli) if isinstance(hint, Hint) else (hint, hint)
    return error_type(
        sentence(_what_to_do(source, dest, python)), cli_message=sentence(_what_to_do(source, dest, cli))
    )


@contextlib.contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock tied to ``dest``; the lock file is deleted on release, whatever happened."""
    path = dest.with_name(dest.name + ".lock")
    while True:
        lock = open(path, "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
        # The previous holder deletes the file before releasing it: a lock taken on a deleted file
        # excludes nobody, so take it again on the file now at that path.
        try:
            if os.fstat(lock.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        lock.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.close()


def _fetch_once(
    dest: Path, sha256: str | None, fetch: Callable[[Path], None], what: str, source: str, hint: str | None
) -> Path:
    """Return ``dest`` if cached and intact, else ``fetch`` into ``dest.part``, verify, rename."""
    # An intact cached file needs no lock: a read-only cache keeps working.
    if dest.is_file() and (sha256 is None or _sha256_matches(dest, sha256)):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest):
        # Another process may have finished the download while we waited for the lock.
        if dest.exists():
            if sha256 is None or _sha256_matches(dest, sha256):
                return dest
            warnings.warn(f"cached {dest} does not have sha256 {sha256}: downloading it again", stacklevel=3)
            dest.unlink()
        part = dest.with_name(dest.name + ".part")
        fetch(part)
        actual = sha256_file(part) if sha256 is not None else None
        if actual is not None and not actual.startswith(sha256.lower()):
            part.unlink()
            raise _download_error(
                ChecksumError,
                lambda advice: f"{what} arrived with sha256 {actual[:16]}... instead of {sha256} (corrupt transfer "
                f"or a changed upstream file), so it was deleted: run again, or {advice}",
                source, dest, hint,
            )
        os.replace(part, dest)
    return dest


def _http_get(url: str, part: Path, progress: bool) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size with an HTTP Range request."""
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "posekit"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        # A fresh opener reads the proxy settings of this moment; urlopen's shared one keeps those of
        # the process's first download for good.
        response = build_opener().open(Request(url, headers=headers), timeout=TIMEOUT_SECONDS)
    except HTTPError as error:
        if error.code == 416 and offset:
            # The server cannot serve past our partial file: it is stale, start over.
            part.unlink()
            _http_get(url, part, progress)
            return
        raise
    with response:
        if response.status != 206:
            offset = 0  # the server ignored the Range header: the body is the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress,
        ) as bar:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(chunk)
                bar.update(len(chunk))
    received = part.stat().st_size
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)


def download_url(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    progress: bool = True,
    *,
    hint: Hint | str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` unless an intact copy is already there.

    Args:
        url: http(s) URL.
        dest: final path; ``dest.part`` holds the partial download (resumed on the next call),
            ``dest.lock`` the inter-process lock.
        sha256: expected hex digest, or a prefix of it (>= 8 digits); checked on the download
            and on a cached file (a mismatching cached file is fetched again).
        progress: show a tqdm progress bar on stderr.
        hint: another way out the failure message offers besides placing the file by hand,
            worded for Python and for the command line, e.g. ``Hint("pass pose_weights=PATH",
            "pass --weights PATH")``; a string is used for both.

    Returns:
        ``dest`` as a Path.

    Raises:
        DownloadError: no network, HTTP error or interrupted transfer (the message says what to do).
        ChecksumError: the downloaded file has the wrong sha256 (it is deleted).
    """
    if sha256 is not None and len(sha256) < 8:
        raise ValueError(f"sha256 {sha256!r}: expected the hex digest or at least its first 8 digits")
    dest = Path(dest)

    def fetch(part: Path) -> None:
        try:
            _http_get(url, part, progress)
        except HTTPError as error:
            failure = f"could not download {url} (server answered HTTP {error.code} {error.reason}): check the URL"
            raise _download_error(DownloadError, lambda advice: f"{failure}, or {advice}", url, dest, hint) from None
        except http.client.IncompleteRead as error:
            failure = (f"download of {url} stopped {error.expected} bytes short: "
                       f"run again to resume from {part.absolute()}")
            raise _download_error(DownloadError, lambda advice: f"{failure}, or {advice}", url, dest, hint) from None
        except (OSError, http.client.HTTPException) as error:
            failure = f"could not download {url} ({_short_reason(error)}); without network"
            raise _download_error(DownloadError, lambda advice: f"{failure}, {advice}", "it", dest, hint) from None

    return _fetch_once(dest, sha256, fetch, url, url, hint)


def _gdrive_folder_file_id(folder_id: str, path_in_folder: str, dest: Path, hint: Hint | str | None) -> str:
    """Look up the file id of ``path_in_folder`` (e.g. "pose_coco/x.pth.tar") in a shared folder."""
    import gdown

    listing = gdown.download_folder(id=folder_id, skip_download=True, quiet=True, timeout=TIMEOUT_SECONDS)
    for entry in listing:
        if Path(entry.path).as_posix().endswith(path_in_folder):
            return entry.id
    raise _download_error(
        DownloadError,
        lambda advice: f"Google Drive folder {folder_id} has no file {path_in_folder} (it lists "
        f"{len(listing)} files): the release may have moved; {advice}",
        "it from elsewhere", dest, hint,
    )


def download_gdrive(
    file_id: str | None,
    dest: str | os.PathLike,
    sha256: str | None = None,
    progress: bool = True,
    *,
    folder_id: str | None = None,
    path_in_folder: str | None = None,
    hint: Hint | str | None = None,
) -> Path:
    """Download a Google Drive file with gdown, with :func:`download_url`'s cache semantics.

    Args:
        file_id: the Drive file id, or None to look it up from ``folder_id`` + ``path_in_folder``
            (only done when the file is not cached).
        dest: final path (``dest.part`` while downloading; gdown resumes it).
        sha256: expected hex digest or prefix, checked as in :func:`download_url`.
        progress: let gdown show its progress bar.
        folder_id: id of a shared Drive folder holding the file.
        path_in_folder: the file's path inside that folder, e.g. "pose_coco/pose_resnet_50_256x192.pth.tar".
        hint: as in :func:`download_url`.

    Returns:
        ``dest`` as a Path.

    Raises:
        DownloadError: offline, Drive refused (quota, permissions), file not in the folder.
        ChecksumError: the downloaded file has the wrong sha256 (it is deleted).
    """
    if (file_id is None) == (folder_id is None or path_in_folder is None):
        raise ValueError("pass either file_id or both folder_id and path_in_folder")
    dest = Path(dest)
    if file_id is None:
        what = f"{path_in_folder} from Google Drive folder {folder_id}"
        source = f"{path_in_folder} from {GDRIVE_FOLDER_URL.format(folder_id)}"
    else:
        what = f"Google Drive file {file_id}"
        source = GDRIVE_FILE_URL.format(file_id)

    def fetch(part: Path) -> None:
        import gdown

        try:
            resolved_id = file_id or _gdrive_folder_file_id(folder_id, path_in_folder, dest, hint)
            gdown.download(id=resolved_id, output=str(part), quiet=not progress, resume=True, timeout=TIMEOUT_SECONDS)
        except DownloadError:
            raise
        except (OSError, gdown.exceptions.DownloadError) as error:
            failure = f"could not download {what} ({_short_reason(error)}); without network"
            raise _download_error(DownloadError, lambda advice: f"{failure}, {advice}", source, dest, hint) from None

    return _fetch_once(dest, sha256, fetch, what, source, hint)
