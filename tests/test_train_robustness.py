"""Hostile inputs to `posekit train` and `posekit export` (issues 23 and 25), each built for real:
annotation files, images, checkpoints, locks held by other processes, a torchrun peer killed.

Every refusal is one `posekit CMD: error:` line (or a PosekitError from Python) and leaves
nothing half-written. Tiny everywhere: ResNet-18, 32x32 crops, one or two synthetic images.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.cli import main
from posekit.errors import ArgumentError, PosekitError
from posekit.train.synthetic import make_synthetic_coco

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
VIDEO = next((ROOT / "posekit" / "data" / "video_sample").glob("*.mp4"), None)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """Two synthetic images with two people each (COCO-17)."""
    return make_synthetic_coco(tmp_path_factory.mktemp("data"), num_images=2, people_per_image=2,
                               image_size=(96, 64), seed=3)


def _train_args(ann: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(ann), "--images", str(images), "--depth", "18", "--init", "none", "--workers", "0",
            "--device", "cpu", "--no-progress", "--input", "32x32", "--epochs", "1", "--out", str(out), *extra]


def _error_line(capsys, command: str = "train") -> str:
    """The one line a refusal prints (nothing else on stderr)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"posekit {command}: error: "), lines
    return lines[0]


def _refused(capsys, argv: list[str], command: str = "train") -> str:
    assert main(argv) == 1
    return _error_line(capsys, command)


def _edited(data: tuple[Path, Path], tmp_path: Path, edit) -> Path:
    """A copy of the annotation file of ``data`` after ``edit(content)``."""
    content = json.loads(data[0].read_text())
    edit(content)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(content))
    return path


def _trained_run(data, out: Path, capsys, *extra: str) -> Path:
    assert main(_train_args(*data, out, *extra)) == 0, capsys.readouterr().err
    capsys.readouterr()
    return out / "last.pth"


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory) -> Path:
    """The last.pth of a finished 1-epoch run (trained once for the module, through the Python API)."""
    from posekit.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "out"
    train(TrainConfig(ann_file=data[0], image_dir=data[1], out=out, depth=18, input_size=(32, 32), epochs=1,
                      init="none", workers=0, device="cpu", progress=False))
    return out / "last.pth"


# ----------------------------------------------------------------------------------- training data


def _no_annotations(content):
    content["annotations"] = []


def _no_labelled_joints(content):
    for annotation in content["annotations"]:
        annotation["keypoints"] = [0] * 51


@pytest.mark.parametrize("edit", [_no_annotations, _no_labelled_joints], ids=["no people", "no labelled joints"])
def test_data_without_a_person_to_train_on_is_one_line(data, tmp_path, capsys, edit):
    ann = _edited(data, tmp_path, edit)
    line = _refused(capsys, _train_args(ann, data[1], tmp_path / "out"))
    assert f"{ann}: no person with a labelled keypoint and a box; nothing to train on" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("category, message", [
    ({"id": 1, "keypoints": []}, "expected at least one name"),
    ({"id": 1, "keypoints": ["a", "b", "a"]}, "all different"),
    ({"id": 1, "keypoints": ["a", "b"], "skeleton": [[1, 3]]}, "indices outside 0..1"),
    ({"id": 1, "name": "person"}, "no category lists 'keypoints'"),
], ids=["0 keypoints", "duplicate names", "skeleton out of range", "no keypoint list"])
def test_keypoint_categories_that_do_not_fit_are_one_line_naming_the_file(data, tmp_path, capsys, category, message):
    ann = _edited(data, tmp_path, lambda content: content.update(categories=[category]))
    line = _refused(capsys, _train_args(ann, data[1], tmp_path / "out"))
    assert line.startswith(f"posekit train: error: {ann}: ") and message in line


def test_a_thousand_keypoints_train_and_load(data, tmp_path, capsys):
    from posekit.train.trainer import load_trained

    def thousand(content):
        content["categories"] = [{"id": 1, "name": "dot", "keypoints": [f"p{k}" for k in range(1000)]}]
        for annotation in content["annotations"]:
            x, y, w, h = annotation["bbox"]
            annotation["keypoints"] = [x + w / 2, y + h / 2, 2] * 1000

    ann = _edited(data, tmp_path, thousand)
    _trained_run((ann, data[1]), tmp_path / "out", capsys)
    model, spec = load_trained(tmp_path / "out" / "last.pth")
    assert spec.keypoint_set.num_keypoints == 1000 and model.final_layer.out_channels == 1000


def test_a_missing_image_is_one_line_before_training(data, tmp_path, capsys):
    ann = _edited(data, tmp_path, lambda content: content["images"][1].update(file_name="gone.png"))
    line = _refused(capsys, _train_args(ann, data[1], tmp_path / "out"))
    assert "1 image(s) of people in" in line and "(gone.png)" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_corrupt_image_is_one_line_naming_it(data, tmp_path, capsys, workers):
    images = tmp_path / "images"
    images.mkdir()
    for path in data[1].iterdir():
        (images / path.name).write_bytes(path.read_bytes()[: 300 if path.name.endswith("2.png") else None])
    argv = _train_args(data[0], images, tmp_path / "out")
    argv[argv.index("--workers") + 1] = workers
    line = _refused(capsys, argv)
    assert line.startswith(f"posekit train: error: {images / '000000000002.png'}: truncated or corrupt image")
    assert not (tmp_path / "out" / "last.pth").exists()


def test_images_without_width_and_height_take_their_size_from_the_file(data, tmp_path):
    from posekit.train.data import KeypointPeople

    def sizeless(content):
        content["annotations"][0]["bbox"][2] = 500.0  # past the 96 px wide image: clipped to its size
        for image in content["images"]:
            del image["width"], image["height"]

    people = KeypointPeople(_edited(data, tmp_path, sizeless), data[1], (32, 32))
    x, _, width, _ = people.boxes[0]
    assert x + width == 96 - 1  # the official clipping, x2 = min(width - 1, ...), with the width of the file
    np.testing.assert_array_equal(people.boxes[1:], KeypointPeople(data[0], data[1], (32, 32)).boxes[1:])


@pytest.mark.parametrize("field, value, expected", [
    ("keypoints", None, "is NoneType None; expected 51 numbers (x, y, v per joint)"),
    ("iscrowd", "no", "is str 'no'; expected 0 or 1"),  # optional in training, checked when present
])
def test_wrong_annotation_fields_are_one_line_naming_the_record(data, tmp_path, capsys, field, value, expected):
    ann = _edited(data, tmp_path, lambda content: content["annotations"][1].update({field: value}))
    line = _refused(capsys, _train_args(ann, data[1], tmp_path / "out"))
    assert f"{ann}: annotations[1].{field} {expected}" in line


# --------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("option, value, message", [
    ("--epochs", "0", "expected a whole number >= 1"),
    ("--batch-size", "0", "expected a whole number >= 1"),
    ("--workers", "-1", "expected a whole number >= 0"),
    ("--val-every", "0", "expected a whole number >= 1"),
    ("--lr", "nan", "expected a finite number > 0"),
    ("--lr", "0", "expected a finite number > 0"),
])
def test_options_that_cannot_train_are_refused_before_anything_runs(data, tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exited:
        main(_train_args(*data, tmp_path / "out", option, value))
    assert exited.value.code == 2 and f"argument {option}: '{value}': {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("workers", -1), ("val_every", 0),
                                          ("lr", float("nan")), ("input_size", (0, 0)), ("input_size", (48, 64))])
def test_the_python_api_checks_every_option_before_training(data, tmp_path, field, value):
    from posekit.train.trainer import TrainConfig, Trainer

    config = TrainConfig(ann_file=data[0], image_dir=data[1], out=tmp_path / "out", depth=18, input_size=(32, 32),
                         init="none", workers=0, device="cpu", progress=False)
    with pytest.raises(ArgumentError, match=field.split("_")[0]):
        Trainer(TrainConfig(**{**config.__dict__, field: value}))
    assert not (tmp_path / "out").exists()


def test_a_batch_larger_than_the_dataset_trains_one_step_per_epoch(data, tmp_path, capsys):
    last = _trained_run(data, tmp_path / "out", capsys, "--batch-size", "64")
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["optimizer"]["state"][0]["step"] == 1  # one step: 4 people


# --------------------------------------------------------------------------------- resume and --out


def test_a_finished_run_is_kept_unless_resumed_or_overwritten(data, tmp_path, capsys, finished_run):
    out = tmp_path / "out"
    last = _trained_run(data, out, capsys)
    before, before_file = last.read_bytes(), os.stat(last).st_ino
    line = _refused(capsys, _train_args(*data, out))
    assert f"--out {out} holds a training run (last.pth, log.csv); continue it with --resume {last}" in line
    assert last.read_bytes() == before
    # Resuming another run into it is no continuation of it either.
    assert "holds a training run" in _refused(capsys, _train_args(*data, out, "--resume", str(finished_run), "--epochs", "2"))
    (out / "best.pth").write_bytes(before)  # what an earlier run's best.pth would be
    _trained_run(data, out, capsys, "--overwrite")
    assert os.stat(last).st_ino != before_file and not (out / "best.pth").exists()  # no metric: no best of this run
    _trained_run(data, out, capsys, "--resume", str(last), "--epochs", "2")
    assert torch.load(last, weights_only=True)["epoch"] == 2


def test_a_second_run_into_a_folder_in_use_is_refused_and_a_killed_holder_leaves_no_lock(data, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [PYTHON, "-c", "import sys, time; from pathlib import Path; from posekit.train.run_folder import RunLock; "
                       "lock = RunLock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = _refused(capsys, _train_args(*data, out))
        assert f"--out {out} is in use by another posekit train (pid {holder.pid})" in line
        assert not (out / "last.pth").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    _trained_run(data, out, capsys)  # the kernel released the killed run's lock
    assert not (out / ".posekit-train.lock").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--depth", "34", "is a pose_resnet_18 run; --depth differs"),
    ("--input", "64x32", "is a 32x32 input run; --input differs"),
    ("--epochs", "1", "has trained 1 of its 1 epochs: nothing is left to train; pass --epochs above 1"),
])
def test_resume_refuses_options_that_contradict_its_checkpoint(data, capsys, finished_run, option, value, message):
    argv = _train_args(*data, finished_run.parent, "--resume", str(finished_run))  # --depth 18 --input 32x32 --epochs 1
    argv[argv.index(option) + 1] = value
    assert message in _refused(capsys, argv)


def _resume_line(data, tmp_path, capsys, checkpoint: Path) -> str:
    return _refused(capsys, _train_args(*data, tmp_path / "out", "--resume", str(checkpoint), "--epochs", "2"))


def test_resume_from_a_truncated_checkpoint_or_a_deleted_run_is_one_line(data, tmp_path, capsys, finished_run):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(finished_run.read_bytes()[:5000])
    assert f"{truncated} is not a readable PyTorch checkpoint (truncated" in _resume_line(data, tmp_path, capsys, truncated)
    gone = tmp_path / "deleted_run" / "last.pth"
    assert f"{gone}: no such checkpoint" in _resume_line(data, tmp_path, capsys, gone)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_whose_saved_spec_disagrees_with_its_weights_is_one_line(data, tmp_path, capsys, finished_run):
    checkpoint = torch.load(finished_run, weights_only=True)
    checkpoint["spec"]["keypoint_set"] = {"names": list("abcde"), "skeleton": [], "flip_pairs": [], "sigmas": [0.1] * 5}
    checkpoint["input_spec"]["keypoint_names"] = list("abcde")
    checkpoint["input_spec"]["flip_pairs"] = []
    wrong = tmp_path / "wrong.pth"
    torch.save(checkpoint, wrong)
    line = _resume_line(data, tmp_path, capsys, wrong)
    assert f"{wrong} (its saved spec) does not fit the model (pose_resnet_18 with 5 joints)" in line
    assert "pose_resnet_18 with 17 joints" in line
    # The weights loader (PoseEstimator, export, track) says the same of it.
    line = _refused(capsys, ["export", "--weights", str(wrong), "--out", str(tmp_path / "x.onnx")], "export")
    assert f"{wrong}: its saved input spec names 5 joints, its weights have 17" in line


# ------------------------------------------------------------------------------- torchrun, no hang


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_torchrun_rank_killed_mid_run_ends_the_other_with_one_line(data, tmp_path):
    """Two gloo ranks started as torchrun starts them (RANK, WORLD_SIZE, MASTER_*), without its agent,
    which would kill the survivor itself: here the survivor must notice and end on its own."""
    out = tmp_path / "out"
    argv = [PYTHON, "-m", "posekit", *_train_args(*data, out)]
    argv[argv.index("--epochs") + 1] = "10000"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    ranks = [subprocess.Popen(argv, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    try:
        deadline = time.monotonic() + 240
        while not (out / "last.pth").exists():  # training, past its first epoch
            assert time.monotonic() < deadline and ranks[0].poll() is None, ranks[0].stderr.read() if ranks[0].poll() else ""
            time.sleep(0.2)
        ranks[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = ranks[0].communicate(timeout=90)
        assert time.monotonic() - killed < 90
    finally:
        for rank in ranks:
            rank.kill()
            rank.wait(timeout=30)
    lines = [line for line in stderr.splitlines() if line.startswith("posekit train: ")]
    assert ranks[0].returncode == 1 and len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith("posekit train: error: process 0 of 2: another process of this run stopped")
    assert f"Continue from {out / 'last.pth'}" in lines[0] and "Traceback" not in stderr
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] >= 1  # whole, and resumable


# ------------------------------------------------------------------------------------------ export


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from posekit.models.pose_resnet import pose_resnet
    from posekit.models.weights import save_checkpoint

    model = pose_resnet(18)
    model.input_spec = model.input_spec.replace(input_size=(64, 64))
    return save_checkpoint(model, tmp_path_factory.mktemp("weights") / "res18.pth")


@pytest.mark.parametrize("extra, message", [
    (["--opset", "99"], "--opset 99: expected 7 to 20"),
    (["--input", "60x48"], "--input 60x48: expected multiples of 32"),
])
def test_export_options_it_cannot_write_are_one_line(weights, tmp_path, capsys, extra, message):
    line = _refused(capsys, ["export", "--weights", str(weights), "--out", str(tmp_path / "m.onnx"), *extra], "export")
    assert message in line and not (tmp_path / "m.onnx").exists()


def test_export_input_0x0_is_refused_by_the_parser(weights, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["export", "--weights", str(weights), "--out", str(tmp_path / "m.onnx"), "--input", "0x0"])
    assert exited.value.code == 2 and "argument --input: '0x0': expected HEIGHTxWIDTH" in capsys.readouterr().err


def test_export_never_replaces_its_weights_or_a_read_only_file(weights, tmp_path, capsys):
    before = weights.read_bytes()
    link = tmp_path / "link.onnx"
    link.symlink_to(weights)
    for spelling in (weights, f"{weights.parent}/./{weights.name}", link):
        line = _refused(capsys, ["export", "--weights", str(weights), "--out", str(spelling)], "export")
        assert f"is --weights ({weights}); posekit never replaces an input" in line
    assert weights.read_bytes() == before
    protected = tmp_path / "protected.onnx"
    protected.write_bytes(b"\x08\x07 an earlier export")  # starts like an ONNX model: only its mode protects it
    protected.chmod(0o444)
    assert "is read-only" in _refused(capsys, ["export", "--weights", str(weights), "--out", str(protected)], "export")
    assert protected.read_bytes() == b"\x08\x07 an earlier export"


def test_export_into_a_missing_folder_creates_it_and_writes_a_whole_graph(weights, tmp_path, capsys):
    import onnx

    out = tmp_path / "new" / "folder" / "m.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(out)]) == 0
    onnx.checker.check_model(str(out))
    assert [p.name for p in out.parent.iterdir()] == ["m.onnx"]  # no temporary left beside it


# ------------------------------------------------------------------------ checkpoints that run code


class _WritesMarker:
    """Unpickling this object would create ``marker``: a stand-in for any code a file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture
def crafted(tmp_path, finished_run) -> tuple[Path, Path]:
    """A posekit train checkpoint that also holds an object whose unpickling writes a marker file."""
    marker = tmp_path / "code_ran"
    checkpoint = torch.load(finished_run, weights_only=True)
    checkpoint["payload"] = _WritesMarker(marker)
    path = tmp_path / "crafted.pth"
    torch.save(checkpoint, path)
    return path, marker


@pytest.mark.parametrize("command", ["export --weights", "train --init", "train --resume", "track --weights"])
def test_a_checkpoint_crafted_to_run_code_runs_nothing(data, tmp_path, capsys, crafted, command):
    path, marker = crafted
    name, option = command.split()
    if name == "export":
        argv = ["export", "--weights", str(path), "--out", str(tmp_path / "m.onnx")]
    elif name == "track":
        if VIDEO is None:
            pytest.skip("no sample video")
        argv = ["track", str(VIDEO), "--weights", str(path), "--boxes", str(VIDEO.parent / "boxes.json"),
                "--json", str(tmp_path / "t.json"), "--device", "cpu"]
    else:
        argv = _train_args(*data, tmp_path / "out", option, str(path)) + (["--epochs", "2"] if option == "--resume" else [])
    line = _refused(capsys, argv, name)
    assert "holds Python objects besides tensors" in line and "posekit does not unpickle" in line
    assert not marker.exists()
