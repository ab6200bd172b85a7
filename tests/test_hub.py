"""Downloads against a real HTTP server on 127.0.0.1 (and a faked gdown): no network needed."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import gdown
import pytest
import requests
import torch

from posekit.cli import main
from posekit.errors import ChecksumError, DownloadError, Hint
from posekit.io import hub
from posekit.models import weights
from posekit.models.pose_resnet import pose_resnet

PAYLOAD = bytes(range(256)) * 600  # 153,600 bytes: several reads, not a multiple of the chunk size
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@dataclasses.dataclass
class FileServer:
    """What the test server serves and what it saw."""

    files: dict[str, bytes]
    url: str = ""
    requests: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)
    cut_next_response_at: int | None = None  # send this many body bytes, then hang up
    ignore_range: bool = False
    seconds_per_chunk: float = 0.0


def _make_handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            range_header = self.headers.get("Range")
            state.requests.append((self.path, range_header))
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            if range_header and not state.ignore_range:
                start = int(range_header.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_error(416, "Range Not Satisfiable")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            remaining = body[start:]
            if state.cut_next_response_at is not None:
                remaining, state.cut_next_response_at = remaining[: state.cut_next_response_at], None
                self.close_connection = True
            for offset in range(0, len(remaining), 16384):
                time.sleep(state.seconds_per_chunk)
                self.wfile.write(remaining[offset : offset + 16384])

        def log_message(self, *args):  # keep test output quiet
            pass

    return Handler


@pytest.fixture
def server():
    state = FileServer(files={"/weights.pth": PAYLOAD})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights.pth"  # nothing listens there: connection refused


def _gets(server: FileServer) -> int:
    return sum(path == "/weights.pth" for path, _ in server.requests)


def test_cache_dir_honours_posekit_home_then_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "mine"))
    assert hub.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("POSEKIT_HOME")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert hub.cache_dir() == tmp_path / "torch" / "hub" / "posekit"


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    assert hub.sha256_file(path) == PAYLOAD_SHA256


def test_download_with_progress_and_checksum(server, tmp_path, capsys):
    dest = tmp_path / "cache" / "weights.pth"
    assert hub.download_url(f"{server.url}/weights.pth", dest, sha256=PAYLOAD_SHA256) == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["weights.pth"]  # no .part or .lock left
    progress = capsys.readouterr().err
    assert "weights.pth" in progress and "100%" in progress and "150k" in progress.lower()


def test_sha256_prefix_is_accepted(server, tmp_path):
    dest = tmp_path / "weights.pth"
    hub.download_url(f"{server.url}/weights.pth", dest, sha256=PAYLOAD_SHA256[:8].upper(), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_resumes_from_a_partial_file_with_a_range_request(server, tmp_path):
    dest = tmp_path / "weights.pth"
    (tmp_path / "weights.pth.part").write_bytes(PAYLOAD[:1000])
    hub.download_url(f"{server.url}/weights.pth", dest, sha256=PAYLOAD_SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/weights.pth", "bytes=1000-")]


def test_interrupted_download_leaves_no_file_and_resumes(server, tmp_path):
    dest = tmp_path / "weights.pth"
    server.cut_next_response_at = 40000
    with pytest.raises(DownloadError, match="stopped 113600 bytes short: run again to resume"):
        hub.download_url(f"{server.url}/weights.pth", dest, progress=False)
    assert not dest.exists()
    assert (tmp_path / "weights.pth.part").read_bytes() == PAYLOAD[:40000]
    hub.download_url(f"{server.url}/weights.pth", dest, sha256=PAYLOAD_SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/weights.pth", "bytes=40000-")


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "weights.pth"
    (tmp_path / "weights.pth.part").write_bytes(b"stale bytes")
    hub.download_url(f"{server.url}/weights.pth", dest, sha256=PAYLOAD_SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_partial_file_longer_than_the_resource_is_discarded(server, tmp_path):
    dest = tmp_path / "weights.pth"
    (tmp_path / "weights.pth.part").write_bytes(PAYLOAD + b"junk")
    hub.download_url(f"{server.url}/weights.pth", dest, sha256=PAYLOAD_SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_checksum_failure_deletes_the_download(server, tmp_path):
    dest = tmp_path / "weights.pth"
    with pytest.raises(ChecksumError, match=f"sha256 {PAYLOAD_SHA256[:16]}... instead of {'0' * 64}"):
        hub.download_url(f"{server.url}/weights.pth", dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not (tmp_path / "weights.pth.part").exists()


@pytest.mark.parametrize("sha256", [None, PAYLOAD_SHA256])
def test_cached_file_is_reused_without_a_request(server, tmp_path, sha256):
    dest = tmp_path / "weights.pth"
    dest.write_bytes(PAYLOAD)
    assert hub.download_url(f"{server.url}/weights.pth", dest, sha256=sha256, progress=False) == dest
    assert server.requests == []


def test_corrupt_cached_file_is_fetched_again(server, tmp_path):
    dest = tmp_path / "weights.pth"
    dest.write_bytes(PAYLOAD[:-1] + b"\x00")
    with pytest.warns(UserWarning, match="does not have sha256"):
        hub.download_url(f"{server.url}/weights.pth", dest, sha256=PAYLOAD_SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert _gets(server) == 1


def test_offline_gives_one_sentence_saying_what_to_do(closed_port_url, tmp_path):
    dest = tmp_path / "weights.pth"
    with pytest.raises(DownloadError) as info:
        hub.download_url(closed_port_url, dest, progress=False, hint="pass --weights PATH")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"could not download {closed_port_url} (")
    assert "refused" in message.lower()
    assert message.endswith(f"on a machine with internet and put it at {dest}, or pass --weights PATH")
    assert not dest.exists() and not (tmp_path / "weights.pth.part").exists()


def test_offline_failure_leaves_nothing_and_names_an_absolute_path(closed_port_url, tmp_path, monkeypatch):
    # A relative destination, as a notebook's COCO_ROOT = "coco" gives: the advice must not leave
    # the reader guessing what it is relative to, and no lock file may stay behind.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DownloadError) as info:
        hub.download_url(closed_port_url, Path("coco/.downloads/val2017.zip"), progress=False)
    assert f"put it at {tmp_path / 'coco' / '.downloads' / 'val2017.zip'}" in str(info.value)
    assert list((tmp_path / "coco" / ".downloads").iterdir()) == []


def test_hint_is_worded_for_python_and_for_the_command_line(closed_port_url, tmp_path):
    hint = Hint(python="pass pose_weights=PATH", cli="pass --weights PATH")
    with pytest.raises(DownloadError) as info:
        hub.download_url(closed_port_url, tmp_path / "w.pth", progress=False, hint=hint)
    assert str(info.value).endswith(f"put it at {tmp_path / 'w.pth'}, or pass pose_weights=PATH")
    assert info.value.for_cli() == str(info.value).replace("pose_weights=PATH", "--weights PATH")


PROXY_THEN_DIRECT = """
import os, sys
from posekit.io import hub
from posekit.errors import DownloadError
url, folder = sys.argv[1], sys.argv[2]
os.environ["HTTP_PROXY"] = os.environ["http_proxy"] = "http://127.0.0.1:9"  # nothing listens there
try:
    hub.download_url(url, folder + "/first.pth", progress=False)
    sys.exit("the download through a closed proxy succeeded")
except DownloadError:
    pass
del os.environ["HTTP_PROXY"], os.environ["http_proxy"]
hub.download_url(url, folder + "/second.pth", progress=False)
"""


def test_each_download_uses_the_proxy_settings_of_its_moment(server, tmp_path):
    # A fresh process: urllib's shared opener would keep the first download's (closed) proxy for good.
    environment = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "no_proxy")}
    run = subprocess.run([sys.executable, "-c", PROXY_THEN_DIRECT, f"{server.url}/weights.pth", str(tmp_path)],
                         capture_output=True, text=True, env=environment, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "second.pth").read_bytes() == PAYLOAD and not (tmp_path / "first.pth").exists()


def test_http_error_is_reported(server, tmp_path):
    with pytest.raises(DownloadError, match=r"server answered HTTP 404 Not Found\): check the URL"):
        hub.download_url(f"{server.url}/missing.pth", tmp_path / "missing.pth", progress=False)


def test_concurrent_threads_download_once(server, tmp_path):
    server.seconds_per_chunk = 0.01
    dest = tmp_path / "weights.pth"
    start = threading.Barrier(2)
    results, errors = [], []

    def fetch():
        start.wait()
        try:
            results.append(hub.download_url(f"{server.url}/weights.pth", dest, sha256=PAYLOAD_SHA256, progress=False))
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and results == [dest, dest]
    assert dest.read_bytes() == PAYLOAD
    assert _gets(server) == 1  # the second waited on the lock, then found the finished file


def test_concurrent_processes_end_with_one_intact_file(server, tmp_path):
    server.seconds_per_chunk = 0.02
    dest = tmp_path / "weights.pth"
    code = (
        "import sys; from posekit.io.hub import download_url; "
        "download_url(sys.argv[1], sys.argv[2], sha256=sys.argv[3], progress=False)"
    )
    args = [sys.executable, "-c", code, f"{server.url}/weights.pth", str(dest), PAYLOAD_SHA256]
    processes = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=60), p.stderr.read()) for p in processes]
    assert outcomes == [(0, ""), (0, "")]
    assert dest.read_bytes() == PAYLOAD
    assert _gets(server) == 1


# --- Google Drive (gdown faked: the tests never reach the network) -------------------------------

@pytest.fixture
def fake_gdown(monkeypatch):
    calls = {"download": [], "download_folder": []}
    listing = [
        # gdown lists (id, path, local_path) records; the path is relative to the shared folder.
        SimpleNamespace(id="ID_OTHER", path="pose_coco/pose_resnet_50_384x288.pth.tar", local_path="x"),
        SimpleNamespace(id="ID_WANTED", path="pose_coco/pose_resnet_50_256x192.pth.tar", local_path="y"),
    ]

    def download(id, output, quiet, resume, timeout=None):  # noqa: A002 (gdown's keyword)
        calls["download"].append({"id": id, "output": output, "resume": resume})
        Path(output).write_bytes(PAYLOAD)
        return output

    def download_folder(id, skip_download, quiet, timeout=None):  # noqa: A002
        calls["download_folder"].append(id)
        assert skip_download
        return listing

    monkeypatch.setattr(gdown, "download", download)
    monkeypatch.setattr(gdown, "download_folder", download_folder)
    return calls


def test_gdrive_download_by_file_id_uses_part_file_and_cache(fake_gdown, tmp_path):
    dest = tmp_path / "model.pth.tar"
    assert hub.download_gdrive("FILE123", dest, sha256=PAYLOAD_SHA256, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert fake_gdown["download"] == [{"id": "FILE123", "output": str(dest) + ".part", "resume": True}]
    hub.download_gdrive("FILE123", dest, sha256=PAYLOAD_SHA256, progress=False)
    assert len(fake_gdown["download"]) == 1  # cached


def test_gdrive_folder_lookup_finds_the_file_id(fake_gdown, tmp_path):
    dest = tmp_path / "pose_resnet_50_256x192.pth.tar"
    hub.download_gdrive(
        None, dest, progress=False, folder_id="FOLDER", path_in_folder="pose_coco/pose_resnet_50_256x192.pth.tar"
    )
    assert fake_gdown["download_folder"] == ["FOLDER"]
    assert [c["id"] for c in fake_gdown["download"]] == ["ID_WANTED"]
    with pytest.raises(DownloadError, match="folder FOLDER has no file pose_coco/nope.pth.tar"):
        hub.download_gdrive(
            None, tmp_path / "nope.pth.tar", folder_id="FOLDER", path_in_folder="pose_coco/nope.pth.tar"
        )
    with pytest.raises(ValueError, match="either file_id or both"):
        hub.download_gdrive("ID", dest, folder_id="FOLDER", path_in_folder="x")


def test_gdrive_checksum_failure(fake_gdown, tmp_path):
    dest = tmp_path / "m.pth"
    with pytest.raises(ChecksumError):
        hub.download_gdrive("FILE123", dest, sha256="deadbeef", progress=False)
    assert not dest.exists() and not (tmp_path / "m.pth.part").exists()


@pytest.mark.parametrize(
    "failure",
    [
        requests.exceptions.ConnectionError("HTTPSConnectionPool(host='drive.google.com'): Max retries\nmore"),
        gdown.exceptions.FileURLRetrievalError("Cannot retrieve the public link of the file."),
    ],
    ids=["offline", "drive-refused"],
)
def test_gdrive_failures_give_one_sentence(monkeypatch, tmp_path, failure):
    def download_folder(**kwargs):
        raise failure

    monkeypatch.setattr(gdown, "download_folder", download_folder)
    dest = tmp_path / "pose_resnet_50_256x192.pth.tar"
    with pytest.raises(DownloadError) as info:
        hub.download_gdrive(None, dest, folder_id="FOLDER", path_in_folder="pose_coco/pose_resnet_50_256x192.pth.tar")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "could not download pose_coco/pose_resnet_50_256x192.pth.tar from Google Drive folder FOLDER ("
    )
    folder_url = "https://drive.google.com/drive/folders/FOLDER"
    assert f"{folder_url} on a machine with internet and put it at {dest}" in message


def test_download_weights_fetches_the_official_file_from_the_authors_folder(fake_gdown, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    path = weights.download_weights("pose_resnet_50_256x192", progress=False)
    assert path == tmp_path / "checkpoints" / "pose_resnet_50_256x192.pth.tar"
    assert fake_gdown["download_folder"] == ["13_wJ6nC7my1KKouMkQMqyr9r1ZnLnukP"]
    assert [c["id"] for c in fake_gdown["download"]] == ["ID_WANTED"]
    assert weights.cached_weights_path("pose_resnet_50_256x192") == path


# --- weights over HTTP and the CLI --------------------------------------------------------------

def test_load_weights_from_a_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    source = pose_resnet(18)
    checkpoint = tmp_path / "res18.pth"
    torch.save({"state_dict": source.state_dict()}, checkpoint)
    server.files["/res18.pth"] = checkpoint.read_bytes()
    with pytest.warns(UserWarning, match="channel order it was trained on cannot be known"):
        target = weights.load_weights(pose_resnet(18), f"{server.url}/res18.pth")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    assert (tmp_path / "checkpoints" / "urls" / "res18.pth").read_bytes() == checkpoint.read_bytes()


@pytest.fixture
def served_entry(server, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    entry = dataclasses.replace(
        weights.get_weights("pose_resnet_50_256x192_mmpose"), name="served", filename="served.pth",
        url=f"{server.url}/weights.pth", sha256=PAYLOAD_SHA256[:8],
    )
    monkeypatch.setitem(weights.WEIGHTS, "served", entry)
    return entry


def test_cli_weights_download(served_entry, tmp_path, capsys):
    assert main(["weights", "download", "served"]) == 0
    dest = tmp_path / "checkpoints" / "served.pth"
    assert dest.read_bytes() == PAYLOAD
    captured = capsys.readouterr()
    assert captured.out.strip() == f"served: {dest}"
    assert "100%" in captured.err  # progress bar


def test_cli_weights_download_offline_exits_1_with_one_line(served_entry, closed_port_url, monkeypatch, capsys):
    monkeypatch.setitem(weights.WEIGHTS, "served", dataclasses.replace(served_entry, url=closed_port_url))
    assert main(["weights", "download", "served"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"posekit weights: error: could not download {closed_port_url}")
    assert err.endswith(f"put it at {weights.hub.cache_dir() / 'checkpoints' / 'served.pth'}")
    assert "--weights" not in err  # the command takes no weights file, so it does not advise passing one


def test_weights_download_error_in_python_names_the_argument(served_entry, closed_port_url, monkeypatch):
    monkeypatch.setitem(weights.WEIGHTS, "served", dataclasses.replace(served_entry, url=closed_port_url))
    with pytest.raises(DownloadError) as info:
        weights.download_weights("served", progress=False)
    assert "pose_weights=PATH" in str(info.value) and "--" not in str(info.value)


def test_cli_weights_download_unknown_name(capsys):
    assert main(["weights", "download", "pose_resnet_9"]) == 1
    assert "unknown weights 'pose_resnet_9'" in capsys.readouterr().err


# --- the default weights fall back to mmpose's when Google Drive refuses ---------------------------


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "arbitrary code ran"))


@pytest.fixture
def drive_refuses(monkeypatch):
    def refuse(**kwargs):
        raise gdown.exceptions.FileURLRetrievalError("Too many users have viewed or downloaded this file recently.")

    monkeypatch.setattr(gdown, "download_folder", refuse)


@pytest.fixture
def served_fallback(server, tmp_path, monkeypatch):
    """The mmpose fallback entry pointing at the test server: a small depth-18 network, checksummed."""
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    source = pose_resnet(18)
    mmpose_keys = {("head." if k.startswith(("deconv_layers.", "final_layer.")) else "backbone.") + k: v
                   for k, v in source.state_dict().items()}
    checkpoint = tmp_path / "mmpose.pth"
    torch.save({"meta": {"epoch": 210}, "state_dict": mmpose_keys}, checkpoint)
    server.files["/res50_coco_256x192.pth"] = checkpoint.read_bytes()
    entry = dataclasses.replace(weights.get_weights(weights.FALLBACK_WEIGHTS), depth=18,
                                url=f"{server.url}/res50_coco_256x192.pth",
                                sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest())
    monkeypatch.setitem(weights.WEIGHTS, weights.FALLBACK_WEIGHTS, entry)
    return source


def test_default_weights_fall_back_to_mmpose_with_one_notice(drive_refuses, served_fallback):
    from posekit.estimator import PoseEstimator

    with pytest.warns(UserWarning) as record:
        estimator = PoseEstimator(device="cpu")
    [notice] = [str(w.message) for w in record]
    assert notice == (
        "pose_resnet_50_256x192 could not be fetched from Google Drive, so posekit uses "
        "pose_resnet_50_256x192_mmpose (mmpose, RGB input, reported AP 0.718)"
    )
    assert estimator.spec.channel_order == "rgb" and estimator.weights.name == "pose_resnet_50_256x192_mmpose"
    assert all(torch.equal(a, b) for a, b in zip(served_fallback.state_dict().values(),
                                                 estimator.model.state_dict().values()))


def test_explicit_weights_never_fall_back(drive_refuses, served_fallback, server):
    from posekit.estimator import PoseEstimator

    with pytest.raises(DownloadError, match="pose_resnet_50_256x192.pth.tar from Google Drive"):
        PoseEstimator("pose_resnet_50_256x192", device="cpu")
    assert server.requests == []


def test_cli_predict_says_which_weights_it_fell_back_to(drive_refuses, served_fallback, tmp_path, capsys):
    image = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample" / "000000000785.jpg"
    assert main(["predict", str(image), "--detector", "none", "--device", "cpu", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "posekit predict: warning: pose_resnet_50_256x192 could not be fetched from Google Drive, so posekit " \
           "uses pose_resnet_50_256x192_mmpose (mmpose, RGB input, reported AP 0.718)" in err


def test_a_url_with_a_release_file_name_is_not_trusted(server, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "home"))
    marker = tmp_path / "owned"
    release = weights.get_weights(weights.FALLBACK_WEIGHTS)
    torch.save({"state_dict": pose_resnet(18).state_dict(), "extra": _Exploit(marker)}, tmp_path / "evil.pth")
    server.files[f"/{release.filename}"] = (tmp_path / "evil.pth").read_bytes()
    # Even a registry entry with a full digest only trusts the file that has that digest.
    monkeypatch.setitem(weights.WEIGHTS, release.name, dataclasses.replace(release, sha256="0" * 64))
    with pytest.raises(weights.CheckpointError, match="holds Python objects besides tensors"):
        weights.load_weights(pose_resnet(18), f"{server.url}/{release.filename}")
    assert not marker.exists()
    # It was kept apart from the registry's downloads, so it can never pass for the release.
    assert weights.cached_weights_path(release.name) is None


def test_cached_weights_load_from_a_cache_that_cannot_be_written(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    source = pose_resnet(18)
    entry = dataclasses.replace(weights.get_weights(weights.DEFAULT_WEIGHTS), depth=18)
    monkeypatch.setitem(weights.WEIGHTS, entry.name, entry)
    (tmp_path / "checkpoints").mkdir()
    torch.save(source.state_dict(), tmp_path / "checkpoints" / entry.filename)

    def no_lock(dest):  # what opening the lock file does in a read-only folder
        raise PermissionError(13, "Permission denied", str(dest) + ".lock")

    monkeypatch.setattr(hub, "_exclusive", no_lock)
    loaded = weights.load_weights(pose_resnet(18), entry.name)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.parametrize("error, summary", [
    (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    (requests.ConnectionError(
        "HTTPSConnectionPool(host='drive.google.com', port=443): Max retries exceeded with url: /uc?id=1 (Caused by "
        "NameResolutionError(\"<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to resolve "
        "'drive.google.com' ([Errno -3] Temporary failure in name resolution)\"))" + " " * 600), "name resolution failed"),
    (socket.timeout("timed out"), "timed out"),
    (OSError("something else entirely"), "something else entirely"),
])
def test_download_failures_are_summarised_in_a_few_words(error, summary):
    assert hub._short_reason(error) == summary


def test_offline_download_error_is_one_short_line(tmp_path, monkeypatch, capsys):
    entry = weights.get_weights(weights.DEFAULT_WEIGHTS)
    closed = dataclasses.replace(entry, url="http://127.0.0.1:9/" + entry.filename, gdrive_folder=None, gdrive_path=None)
    monkeypatch.setitem(weights.WEIGHTS, entry.name, closed)
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    # As `posekit track` and the demo print it (the --weights value), and by its registry name.
    for name in ("default", entry.name):
        assert main(["weights", "download", name]) == 1
        [line] = capsys.readouterr().err.strip().splitlines()[-1:]
        assert line.startswith("posekit weights: error: could not download http://127.0.0.1:9/")
        assert "(connection refused)" in line and "unknown weights" not in line and len(line) < 400
        assert line.count("on a machine with internet") == 1
