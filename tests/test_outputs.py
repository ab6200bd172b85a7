"""Outputs of `posekit track` and `posekit export` never destroy what the user has, and arguments out
of range are one `posekit CMD: error:` line.

The rule lives in one place (posekit.io.files.check_outputs): no run replaces one of its inputs
(under any spelling), one of its other outputs, or an existing file of another kind. Refusals come
before any model loads; the runs that go further use a small depth-18 network with a 64x48 input.
The full disk is a real 64 KiB tmpfs (root only) and the signals go to a real process.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from posekit.cli import main
from posekit.data import VIDEO_SAMPLE_BOXES, VIDEO_SAMPLE_CLIP
from posekit.errors import OutputError
from posekit.io.files import check_outputs
from posekit.io.video import VideoWriter

REPOSITORY = Path(__file__).resolve().parents[1]
FAST = ["--detector", "none", "--propagation", "pose", "--similarity", "iou", "--no-flip", "--device", "cpu",
        "--backend", "torch"]


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory) -> Path:
    """Random depth-18 weights that carry their own 64x48 input spec (a small, fast network)."""
    from posekit.models.pose_resnet import pose_resnet
    from posekit.models.weights import save_checkpoint

    torch.manual_seed(0)
    model = pose_resnet(18)
    model.input_spec = model.input_spec.replace(input_size=(48, 64), channel_order="rgb")
    return save_checkpoint(model, tmp_path_factory.mktemp("weights") / "small.pth")


@pytest.fixture()
def clip(tmp_path) -> Path:
    """The user's video, a copy of the bundled clip."""
    return Path(shutil.copy(VIDEO_SAMPLE_CLIP, tmp_path / "clip.mp4"))


def track(capsys, *args) -> tuple[int, str, str]:
    code = main(["track", *map(str, args)])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def error_line(err: str) -> str:
    """The one error line of a run (the progress bar shares stderr)."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if re.match(r"posekit \w+: error: ", line)]
    assert len(lines) == 1, err
    return lines[0]


def frames_in(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


# ------------------------------------------------------------------------------------------
# Inputs, other outputs and files of another kind are never replaced
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink", "hardlink"])
def test_out_naming_the_input_video_under_any_spelling_is_refused_and_the_video_stays(clip, tmp_path, capsys,
                                                                                     monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    before = clip.read_bytes()
    out = {"same": clip, "dot": Path("./clip.mp4"), "symlink": tmp_path / "link.mp4", "hardlink": tmp_path / "hard.mp4"}[spelling]
    if spelling == "symlink":
        out.symlink_to(clip)
    elif spelling == "hardlink":
        os.link(clip, out)
    code, _, err = track(capsys, "clip.mp4", "--out", out, *FAST)
    assert code == 1
    assert f"--out {out} is the input video (clip.mp4); posekit never replaces an input" in error_line(err)
    assert clip.read_bytes() == before


@pytest.mark.parametrize("flag", ["--out", "--json"])
@pytest.mark.parametrize("input_flag", ["--boxes", "--eval"])
def test_outputs_naming_the_boxes_or_the_ground_truth_are_refused_and_they_stay(clip, tmp_path, capsys, flag, input_flag):
    given = tmp_path / "given.json"
    shutil.copy(VIDEO_SAMPLE_BOXES, given)
    before = given.read_bytes()
    code, _, err = track(capsys, clip, input_flag, given, flag, given, *FAST)
    assert code == 1
    named = "--boxes" if input_flag == "--boxes" else "--eval's ground truth"
    assert f"{flag} {given} is {named} ({given}); posekit never replaces an input" in error_line(err)
    assert given.read_bytes() == before


def test_out_and_json_naming_one_file_are_refused_before_anything_is_written(clip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = track(capsys, clip, "--out", "result", "--json", "./result", *FAST)
    assert code == 1
    assert "--json result and --out result are one file, so one output would replace the other" in error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_an_existing_file_of_another_kind_is_never_replaced(clip, tmp_path, capsys):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    code, _, err = track(capsys, clip, "--out", notes, *FAST)
    assert code == 1
    assert f"--out {notes} is an existing file that is not an mp4 video" in error_line(err)
    holiday = Path(shutil.copy(VIDEO_SAMPLE_CLIP, tmp_path / "holiday.mp4"))
    code, _, err = track(capsys, clip, "--json", holiday, *FAST)
    assert code == 1
    assert f"--json {holiday} is an existing file that is not a JSON file" in error_line(err)
    assert notes.read_text() == '{"mine": true}' and holiday.read_bytes() == VIDEO_SAMPLE_CLIP.read_bytes()


def test_check_outputs_lets_an_earlier_output_of_the_same_kind_and_devices_be_replaced(tmp_path):
    earlier_video, earlier_tracks = Path(shutil.copy(VIDEO_SAMPLE_CLIP, tmp_path / "old.mp4")), tmp_path / "old.json"
    earlier_tracks.write_text('\ufeff  [1, 2]')
    empty = tmp_path / "empty.onnx"
    empty.touch()
    check_outputs({"--out": (earlier_video, "mp4"), "--json": (earlier_tracks, "json"), "--model": (empty, "onnx"),
                   "--log": ("/dev/null", "json"), "--none": (None, "mp4")}, {"--boxes": tmp_path / "missing.json"})
    with pytest.raises(OutputError, match="is an existing file that is not an ONNX model"):
        check_outputs({"--out": (earlier_tracks, "onnx")}, {})


@pytest.mark.parametrize("flag", ["--out", "--json"])
def test_an_output_that_is_an_existing_folder_is_one_line_before_any_model_loads(clip, tmp_path, capsys, flag):
    folder = tmp_path / "results"
    folder.mkdir()
    code, _, err = track(capsys, clip, flag, folder, *FAST)
    assert code == 1
    assert f"cannot write {folder}: it is a folder, which posekit does not replace" in error_line(err)


def test_export_out_naming_the_weights_is_refused_and_the_weights_stay(small_weights, tmp_path, capsys):
    weights = Path(shutil.copy(small_weights, tmp_path / "mine.pth"))
    before = weights.read_bytes()
    link = tmp_path / "model.onnx"
    link.symlink_to(weights)
    for out in (weights, link):
        code = main(["export", "--weights", str(weights), "--out", str(out)])
        assert code == 1
        assert f"--out {out} is --weights ({weights}); posekit never replaces an input" in error_line(capsys.readouterr().err)
    assert weights.read_bytes() == before


# ------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, expected", [("--max-frames", "0", ">= 1"), ("--max-frames", "-1", ">= 1"),
                                                   ("--detector-every", "0", ">= 1"), ("--max-age", "-1", ">= 0")])
def test_numbers_out_of_range_are_one_line_before_any_model_loads(clip, capsys, flag, value, expected):
    code, _, err = track(capsys, clip, flag, value, *FAST)
    assert code == 1
    assert error_line(err) == f"posekit track: error: {flag} {value}: expected a whole number {expected}"


def test_boxes_matching_no_frame_are_a_warning_and_a_huge_max_frames_tracks_everything(small_weights, clip, tmp_path,
                                                                                        capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 1000 + i, "category_id": 1, "bbox": [10, 10, 200, 400], "score": 0.9}
                                 for i in range(5)]))
    tracks = tmp_path / "tracks.json"
    code, out, err = track(capsys, clip, "--weights", small_weights, "--boxes", boxes, "--max-frames", 10**30,
                           "--json", tracks, *FAST[2:])
    assert code == 0, err
    assert "5 frames, 0 tracks" in out
    assert (f"posekit track: warning: --boxes {boxes}: none of its 5 image ids (1000 ... 1004) is a frame index of "
            "this video (0 ... 4), so no frame had boxes") in err
    assert len(json.loads(tracks.read_text())["images"]) == 5


# ------------------------------------------------------------------------------------------
# A full disk and signals
# ------------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_disk(tmp_path):
    """A real 64 KiB file system (tmpfs), mounted for the test: only root may mount."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("SKIPPED LOUDLY: a real full disk needs root to mount a 64 KiB tmpfs; run the suite as root in CI")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs here ({result.stderr.decode().strip()})")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_leaves_no_mp4_from_the_writer_and_from_track(tiny_disk, small_weights, tmp_path, capsys):
    noise = np.random.default_rng(0).integers(0, 256, (12, 192, 256, 3), dtype=np.uint8)  # tens of KB a frame as H.264
    with pytest.raises(OutputError, match=f"cannot write {tiny_disk / 'noise.mp4'} .*the disk is full"):
        with VideoWriter(tiny_disk / "noise.mp4", fps=10) as writer:
            for frame in noise:
                writer.write(frame)
    assert list(tiny_disk.iterdir()) == []
    source = tmp_path / "noise.mp4"
    with VideoWriter(source, fps=10) as writer:
        for frame in noise:
            writer.write(frame)
    code, _, err = track(capsys, source, "--weights", small_weights, "--out", tiny_disk / "tracked.mp4", "--max-frames",
                         10, *FAST)  # 10 drawn frames of noise outgrow the disk
    assert code == 1
    assert f"cannot write {tiny_disk / 'tracked.mp4'}" in error_line(err) and "the disk is full" in err
    assert list(tiny_disk.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_track_leaves_a_playable_mp4_or_none_and_whole_json_or_none(small_weights, tmp_path, signum):
    source = tmp_path / "long.mp4"
    noise = np.random.default_rng(0).integers(0, 256, (50, 48, 64, 3), dtype=np.uint8)
    with VideoWriter(source, fps=25) as writer:
        for number in range(2000):  # far more than are tracked before the signal
            writer.write(noise[number % 50])
    out, tracks = tmp_path / "out" / "tracked.mp4", tmp_path / "out" / "tracks.json"
    command = [sys.executable, "-m", "posekit", "track", str(source), "--weights", str(small_weights), "--out", str(out),
               "--json", str(tracks), *FAST]
    process = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    deadline = time.monotonic() + 600  # a loaded machine starts torch slowly
    # FFmpeg writes in 32 KiB blocks: a temporary mp4 with data in it holds frames already.
    while not any(p.name.endswith(".part") and p.stat().st_size > 0 for p in out.parent.glob(".*")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".part")]  # no temporary file left behind
    if out.exists():
        written = frames_in(out)
        assert 0 < written < 2000
        if tracks.exists():
            assert len(json.loads(tracks.read_text())["images"]) == written  # whole, and the same run
    else:
        assert not tracks.exists() or json.loads(tracks.read_text())
    if signum == signal.SIGINT:  # Ctrl-C is how a live run is stopped: what was tracked is kept
        assert process.returncode == 0 and out.exists() and tracks.exists()
