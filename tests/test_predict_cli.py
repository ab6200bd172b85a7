"""`posekit predict` and `posekit demo` through posekit.cli.main, offline, with given boxes."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from posekit import demo
from posekit.cli import main
from posekit.models import detect, weights
from posekit.models.pose_resnet import pose_resnet

SAMPLE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample"
ANNOTATIONS = SAMPLE / "test_coco.json"
JPEGS = sorted(SAMPLE.glob("*.jpg"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """Random weights of the default architecture, saved as a user's checkpoint file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "my_pose_resnet_50.pth"
    torch.save(pose_resnet(50).state_dict(), path)
    return str(path)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty caches; the default pose weights and the detectors are only on a closed local port."""
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    entry = weights.get_weights(weights.DEFAULT_WEIGHTS)
    closed = dataclasses.replace(entry, url="http://127.0.0.1:9/" + entry.filename, gdrive_folder=None, gdrive_path=None)
    monkeypatch.setitem(weights.WEIGHTS, entry.name, closed)
    for name, spec in detect.DETECTORS.items():
        monkeypatch.setitem(detect.DETECTORS, name, dataclasses.replace(spec, url="http://127.0.0.1:9/" + name + ".pth"))


def predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_folder_with_annotation_boxes(tmp_path, capsys, checkpoint):
    out = tmp_path / "out"
    code, stdout, stderr = predict(capsys, SAMPLE, "--boxes", ANNOTATIONS, "--weights", checkpoint, "--out", out)
    assert code == 0, stderr
    assert "4 images, 14 people" in stdout and str(out / "results.json") in stdout
    # The folder's non-image files are named in one warning.
    assert "test_coco.json" in stderr and "warning" in stderr
    for jpeg in JPEGS:
        with Image.open(out / f"{jpeg.stem}_pose.jpg") as drawn, Image.open(jpeg) as original:
            assert drawn.size == original.size
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 14
    assert all(r["category_id"] == 1 and len(r["keypoints"]) == 51 for r in results)
    ground_truth = COCO(str(ANNOTATIONS))
    loaded = ground_truth.loadRes(results)  # asserts every image_id is one of the annotation file's
    assert sorted(loaded.getImgIds()) == sorted(ground_truth.getImgIds())
    # Keypoints lie inside the padded crop of their annotated box (3:4 aspect, 1.25 padding).
    boxes = {a["image_id"]: [] for a in ground_truth.dataset["annotations"]}
    for annotation in ground_truth.dataset["annotations"]:
        boxes[annotation["image_id"]].append(annotation["bbox"])
    for result in results:
        xy = np.array(result["keypoints"]).reshape(17, 3)[:, :2]
        inside = []
        for x, y, w, h in boxes[result["image_id"]]:
            half = np.array([max(w, h * 0.75), max(h, w / 0.75)]) * 1.25 / 2
            center = np.array([x + w / 2, y + h / 2])
            inside.append(bool(((xy >= center - half - 0.01) & (xy <= center + half + 0.01)).all()))
        assert any(inside)
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))


def test_bad_files_are_skipped_with_one_warning_each(tmp_path, capsys, checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(JPEGS[0], folder / "good.jpg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "cut.jpg").write_bytes(JPEGS[1].read_bytes()[:2000])
    (folder / "fake.jpg").write_text("hello")
    out = tmp_path / "out"
    code, stdout, stderr = predict(
        capsys, folder, tmp_path / "missing.jpg", "--detector", "none", "--weights", checkpoint, "--out", out, "--no-flip"
    )
    assert code == 0, stderr
    for bad in ("empty.png", "cut.jpg", "fake.jpg", "missing.jpg"):
        assert sum(bad in line for line in stderr.splitlines()) == 1, (bad, stderr)
    assert "1 images, 1 people" in stdout and "3 skipped" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["good_pose.jpg", "results.json"]
    [result] = json.loads((out / "results.json").read_text())
    # Not a COCO file name: its index among the found inputs (cut, empty, fake, good).
    assert result["image_id"] == 3


def test_nothing_readable_exits_non_zero(tmp_path, capsys, checkpoint):
    (tmp_path / "broken.jpg").write_text("not a jpeg")
    code, stdout, stderr = predict(capsys, tmp_path / "broken.jpg", "--detector", "none", "--weights", checkpoint,
                                   "--out", tmp_path / "out")
    assert code == 1 and "none of the 1 images could be read" in stderr and "broken.jpg" in stderr
    assert not (tmp_path / "out" / "results.json").exists()
    (tmp_path / "empty").mkdir()
    code, _, stderr = predict(capsys, tmp_path / "empty", "--weights", checkpoint)
    assert code == 1 and "no images found" in stderr


def test_wrong_detections_schema_names_file_and_entry(tmp_path, capsys, checkpoint):
    boxes = tmp_path / "dets.json"
    boxes.write_text(json.dumps([{"image_id": 785, "bbox": [1, 2, 3], "score": 1}]))
    code, _, stderr = predict(capsys, JPEGS[0], "--boxes", boxes, "--weights", checkpoint, "--out", tmp_path)
    assert code == 1 and str(boxes) in stderr and "entries[0].bbox" in stderr and "Traceback" not in stderr


def test_empty_and_bad_boxes(tmp_path, capsys, checkpoint):
    boxes = tmp_path / "dets.json"
    out = tmp_path / "out"
    boxes.write_text("[]")
    code, stdout, _ = predict(capsys, *JPEGS, "--boxes", boxes, "--weights", checkpoint, "--out", out)
    assert code == 0 and "4 images, 0 people" in stdout
    assert json.loads((out / "results.json").read_text()) == []
    assert len(list(out.glob("*_pose.jpg"))) == 4
    bad = [[10, 10, 0, 40], [700, 10, 50, 50], [100, 50, 80, 200]]  # zero width, outside, fine
    boxes.write_text(json.dumps([{"image_id": 785, "category_id": 1, "bbox": b, "score": 0.9} for b in bad]))
    code, stdout, stderr = predict(capsys, JPEGS[0], "--boxes", boxes, "--weights", checkpoint, "--out", out, "--no-flip")
    assert code == 0 and "1 images, 1 people" in stdout
    assert "000000000785.jpg" in stderr and "2 person box" in stderr


def test_image_id_from_annotation_file_names(tmp_path, capsys, checkpoint):
    shutil.copy(SAMPLE / "000000000785.jpg", tmp_path / "skier.jpg")
    coco = json.loads(ANNOTATIONS.read_text())
    coco["images"] = [dict(coco["images"][0], file_name="skier.jpg")]
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    code, _, stderr = predict(capsys, tmp_path / "skier.jpg", "--boxes", tmp_path / "ann.json", "--weights", checkpoint,
                              "--json", tmp_path / "r.json", "--out", tmp_path, "--no-flip")
    assert code == 0, stderr
    [result] = json.loads((tmp_path / "r.json").read_text())
    assert result["image_id"] == 785


def test_offline_default_weights_fail_in_one_line(tmp_path, capsys, offline):
    code, _, stderr = predict(capsys, JPEGS[0], "--detector", "none", "--out", tmp_path / "out")
    assert code == 1
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "--weights PATH" in errors[0]


def test_demo_offline_runs_end_to_end_and_says_untrained(tmp_path, capsys, offline, monkeypatch):
    titles = []

    def capture(figure, path, **kwargs):
        titles.append(figure.get_suptitle())
        return save(figure, path, **kwargs)

    save = demo.save_figure
    monkeypatch.setattr(demo, "save_figure", capture)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    stdout = capsys.readouterr().out
    figure = tmp_path / "demo" / "demo.png"
    assert figure.stat().st_size > 10_000 and str(figure) in stdout
    assert "UNTRAINED" in stdout and "NOT a prediction" in stdout
    assert "posekit weights download pose_resnet_50_256x192" in stdout and "--weights PATH" in stdout
    # The notes are shown in a terminal: their advice names flags, not Python arguments.
    notes = [line for line in stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2 and not any("PoseEstimator(" in note or "estimator(images" in note for note in notes)
    assert "ground truth from test_coco.json" in stdout and "4 images, 14 people" in stdout
    assert "UNTRAINED" in titles[0] and "posekit weights download" in titles[0]
    with Image.open(figure) as image:
        assert image.size[0] > 800


QUICK = ("--detector", "none", "--backend", "torch", "--no-flip")


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 KB file system (tmpfs), mounted for the test: root only, else the test is skipped loudly."""
    import os
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("SKIPPED LOUDLY: the full-disk test mounts a 64 KB tmpfs and needs root (CI runs it as root)")
    mount = tmp_path / "small_disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs here ({made.stderr.strip()})")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def jpeg_is_whole(path: Path) -> bool:
    data = path.read_bytes()
    return data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"


def test_a_real_full_disk_leaves_no_truncated_drawing(small_disk, tmp_path, capsys, small_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    for jpeg in JPEGS[:2]:  # two photos whose drawings (~40-60 KB each) cannot both fit in 64 KB
        shutil.copy(jpeg, folder / jpeg.name)
    code, _, stderr = predict(capsys, folder, "--weights", small_checkpoint, "--out", small_disk, *QUICK)
    assert code == 1
    written = sorted(small_disk.iterdir())
    assert all(path.name.endswith("_pose.jpg") and jpeg_is_whole(path) for path in written), written
    # The error names the drawing that did not fit: the first image (sorted) without a whole drawing.
    failed = next(jpeg for jpeg in JPEGS[:2] if not (small_disk / f"{jpeg.stem}_pose.jpg").exists())
    line = stderr.strip().splitlines()[-1]
    assert line == (f"posekit predict: error: cannot write {small_disk / (failed.stem + '_pose.jpg')} "
                    "(No space left on device); the disk is full; free some space or write elsewhere"), stderr


def test_a_users_photo_named_like_a_drawing_is_never_replaced(tmp_path, capsys, small_checkpoint):
    from posekit.predict import is_posekit_drawing

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(JPEGS[0], folder / "warrior.jpg")
    shutil.copy(JPEGS[1], folder / "warrior_pose.jpg")  # the user's own photo, not a drawing
    photo = (folder / "warrior_pose.jpg").read_bytes()
    args = [folder, "--weights", small_checkpoint, "--out", folder, *QUICK]
    code, stdout, stderr = predict(capsys, *args)
    assert code == 0 and "2 images" in stdout, stderr  # the photo stays an input
    assert (folder / "warrior_pose.jpg").read_bytes() == photo
    assert (f"{folder / 'warrior_pose.jpg'} is an input: the drawing of {folder / 'warrior.jpg'} goes to "
            f"{folder / 'warrior_2_pose.jpg'}") in stderr
    drawings = ["warrior_2_pose.jpg", "warrior_pose_pose.jpg"]
    assert all(is_posekit_drawing(folder / name) for name in drawings) and not is_posekit_drawing(folder / "warrior.jpg")
    # Named alone, warrior.jpg is the only input; the photo is still not replaced, and posekit's own
    # earlier drawings are taken for what they are: replaced, never used as inputs.
    code, _, stderr = predict(capsys, folder / "warrior.jpg", *args[1:])
    assert code == 0 and (folder / "warrior_pose.jpg").read_bytes() == photo
    assert (f"{folder / 'warrior_pose.jpg'} is not a drawing of posekit (it lacks posekit's mark), so it is kept: "
            f"the drawing of {folder / 'warrior.jpg'} goes to {folder / 'warrior_2_pose.jpg'}") in stderr
    code, stdout, stderr = predict(capsys, *args)
    assert code == 0 and "2 images" in stdout and "skipped 2 drawing(s) of an earlier run" in stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(["results.json", "warrior.jpg", "warrior_pose.jpg", *drawings])


def test_offline_detector_advice_works_as_printed(tmp_path, capsys, offline, small_checkpoint):
    out = tmp_path / "out"
    args = [JPEGS[0], "--weights", small_checkpoint, "--out", out, "--backend", "torch", "--no-flip"]
    code, _, stderr = predict(capsys, *args, "--detector", "fasterrcnn_mobilenet_v3_large_fpn")
    [line] = stderr.strip().splitlines()[-1:]
    assert code == 1 and "(connection refused)" in line and "pass --detector none to take the whole image" in line
    code, stdout, stderr = predict(capsys, *args, "--detector", "none")  # the advice, as printed
    assert code == 0 and "1 images, 1 people" in stdout, stderr
