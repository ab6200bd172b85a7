"""What users actually feed posekit, through the public API and the CLI, all at once.

The per-module tests check each reader's message on its own (test_images, test_detect,
test_weights, test_coco); this file checks the guarantees that cut across them:

- every bad input ends in a posekit.errors.* exception or one warning that names the input,
  never a traceback from deep inside PIL or torch;
- the other inputs are still processed, and the exit code says whether anything was;
- no output file is ever half-written, whatever fails and when (files via atomic_write);
- output files of same-named inputs do not overwrite each other.

The adversarial suite at the end (issue 15) has one section per class of failure found in 0.1:
special output files (devices, FIFOs, symlinks, sockets, a full device), outputs colliding with
inputs, signals and full disks mid-write, undrawable images, image ids and NaN in results, hostile
detection and annotation files (fuzzed with hypothesis), CLI numbers, devices, Python API kinds,
and the scale of detection files. Subprocess tests cover what only a real process shows (SIGTERM's
exit status, the kernel refusing a write).

Random weights throughout: a depth-18 network with 64x48 crops, registered for the module so the
CLI picks it up by its file name as it does a release file; tiny images.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import warnings
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from posekit import viz
from posekit.cli import main
from posekit.core.crop import box_to_center_scale, crop_batch
from posekit.errors import (
    ArgumentError,
    CheckpointError,
    DetectionsFormatError,
    DownloadError,
    ImageReadError,
    OutputError,
    PosekitError,
)
from posekit.estimator import PoseEstimator
from posekit.eval import coco
from posekit.io.files import atomic_write
from posekit.io.images import load_image
from posekit.models import weights
from posekit.models.pose_resnet import pose_resnet
from posekit.train.synthetic import make_synthetic_coco

SAMPLE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample"
PHOTO = SAMPLE / "000000000785.jpg"
ANNOTATIONS = SAMPLE / "test_coco.json"


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def checkpoint(small_checkpoint) -> Path:
    """The quick registered depth-18 network of conftest.py, by the name these tests use."""
    return small_checkpoint


@pytest.fixture(scope="module")
def estimator(checkpoint) -> PoseEstimator:
    model = PoseEstimator(checkpoint, device="cpu", flip_test=False)
    assert model.weights.input_size == (48, 64) and len(model.model.layer1) == 2  # the small network
    return model


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def smooth_rgb(width: int, height: int) -> np.ndarray:
    """A smooth colour ramp: survives JPEG within a grey level or two."""
    x = np.linspace(0, 255, width)[None, :]
    y = np.linspace(0, 255, height)[:, None]
    return np.stack(np.broadcast_arrays(x + 0 * y, y + 0 * x, np.full((height, width), 60.0)), axis=2).astype(np.uint8)


def write_good_images(folder: Path) -> dict[str, tuple[int, int]]:
    """One file of each image kind users have; returns file name -> (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = smooth_rgb(40, 30)
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(np.dstack([rgb, np.full((30, 40), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(folder / "deep.png")  # 16-bit
    Image.fromarray(rgb[:1, :1]).save(folder / "tiny.png")  # 1x1
    shutil.copy(PHOTO, folder / "photo.jpg")
    return {"gray.png": (40, 30), "cmyk.jpg": (40, 30), "rgba.png": (40, 30), "deep.png": (40, 30),
            "tiny.png": (1, 1), "photo.jpg": (640, 425)}


def write_bad_images(folder: Path) -> list[str]:
    """Files named like images that are not readable ones; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cut.jpg").write_bytes(PHOTO.read_bytes()[:3000])
    Image.fromarray(smooth_rgb(40, 30)).save(folder / "whole.png")
    (folder / "cut.png").write_bytes((folder / "whole.png").read_bytes()[:-60])
    (folder / "whole.png").unlink()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not a PNG\n")
    return ["cut.jpg", "cut.png", "empty.jpg", "text.png"]


def predict(capsys, *args) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(folder: Path) -> list[str]:
    """Temporary or hidden files anywhere under ``folder``: a half-written output would be one."""
    return [str(p) for p in folder.rglob("*") if p.name.startswith(".") or ".part" in p.name]


# ------------------------------------------------------------------------------------ images


def test_every_kind_of_image_file_gives_one_person_inside_the_image_crop(tmp_path, estimator):
    sizes = write_good_images(tmp_path)
    people = estimator([tmp_path / name for name in sizes])  # no boxes: each whole image is one person
    for (name, (width, height)), (person,) in zip(sizes.items(), people):
        np.testing.assert_array_equal(person.box, [0, 0, width, height])
        xy = person.keypoints[:, :2]
        # The whole-image box, widened to 3:4 and padded by 1.25 around its centre, bounds the crop.
        half = np.array([max(width, height * 0.75), max(height, width / 0.75)]) * 1.25 / 2
        centre = np.array([width, height]) / 2
        assert np.isfinite(person.keypoints).all(), name
        assert ((xy >= centre - half - 1e-3) & (xy <= centre + half + 1e-3)).all(), name


def test_a_bad_file_in_an_api_batch_is_named_not_a_deep_traceback(tmp_path, estimator):
    write_good_images(tmp_path / "good")
    bad = write_bad_images(tmp_path / "bad")
    for name in bad:
        with pytest.raises(ImageReadError, match=name.replace(".", r"\.")):
            estimator([tmp_path / "good" / "gray.png", tmp_path / "bad" / name])


def test_a_10000_px_image_loads_with_a_named_warning_and_crops_exactly(tmp_path, estimator):
    # A constant 10000 x 10000 grey PNG: ~0.5 MB on disk, 300 MB as RGB.
    path = tmp_path / "huge.png"
    Image.new("L", (10000, 10000), 77).save(path, compress_level=1)
    with pytest.warns(Warning, match="huge.png") as record:  # PIL's decompression-bomb notice, naming the file
        image = load_image(path)
    assert image.shape == (10000, 10000, 3) and all("huge.png" in str(w.message) for w in record)
    # One box deep inside (its crop is all grey), one over the bottom-right corner (grey, then zero border).
    boxes = np.array([[4000.0, 5000.0, 300.0, 400.0], [9900.0, 9900.0, 200.0, 200.0]])
    centers, scales = box_to_center_scale(boxes)
    crops = crop_batch(image, centers, scales, output_size=(48, 64)).numpy()
    assert (crops[0] == 77).all()
    # Box 2's crop spans x, y in 9900 +- 125 (200 px * 1.25, 3:4 widened to 250 x 333): the image ends halfway.
    assert (crops[1][:, :20, :20] == 77).all() and (crops[1][:, -20:, -20:] == 0).all()
    [inside, corner] = estimator.estimate(image, boxes, name=str(path))
    assert np.isfinite(inside.keypoints).all() and np.isfinite(corner.keypoints).all()
    np.testing.assert_array_equal(corner.box, [9900, 9900, 100, 100])  # clipped to the image


@pytest.mark.parametrize(
    "box",
    [[0.0, 0.0, 1e-3, 1e-3], [-1e6, -1e6, 3e6, 3e6], [39.5, 29.5, 0.5, 0.5]],
    ids=["sub-pixel", "far-larger-than-image", "last-pixel"],
)
def test_extreme_but_valid_boxes_give_finite_keypoints(estimator, box):
    image = smooth_rgb(40, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [person] = estimator.estimate(image, np.array([box]))
    assert np.isfinite(person.keypoints).all()
    assert (person.box[2:] > 0).all()


def test_only_bad_boxes_give_no_people_and_one_warning_naming_the_image(estimator):
    image = smooth_rgb(40, 30)
    bad = np.array([[np.nan, 0, 5, 5], [0, 0, np.inf, 5], [0, -np.inf, 5, 5], [5, 5, -3, 10],
                    [5, 5, 0, 0], [100, 100, 10, 10], [-50, 0, 10, 10]])
    with pytest.warns(UserWarning, match=r"street\.jpg \(40x30\): skipped 7 person box") as record:
        assert len(estimator.estimate(image, bad, name="street.jpg")) == 0
    assert len(record) == 1


# ------------------------------------------------------------------------------------ predict CLI


def test_predict_processes_the_good_images_and_names_each_bad_one_once(tmp_path, capsys, checkpoint):
    folder = tmp_path / "in"
    sizes = write_good_images(folder)
    bad = write_bad_images(folder)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    Image.fromarray(smooth_rgb(8, 8)).save(folder / "sub" / "nested.png")  # folders are not recursed
    out = tmp_path / "out"
    code, stdout, stderr = predict(capsys, folder, "--detector", "none", "--weights", checkpoint, "--out", out,
                                   "--no-flip")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    for name in [*bad, "notes.txt"]:
        assert sum(name in line for line in stderr.splitlines()) == 1, (name, stderr)
    assert f"{len(sizes)} images, {len(sizes)} people" in stdout and f"{len(bad)} skipped" in stdout
    drawings = [f"{Path(name).stem}_pose.jpg" for name in sizes]
    assert sorted(p.name for p in out.iterdir()) == sorted([*drawings, "results.json"])
    for name, size in sizes.items():
        with Image.open(out / f"{Path(name).stem}_pose.jpg") as drawn:
            assert drawn.size == size
    results = json.loads((out / "results.json").read_text())
    assert len(results) == len(sizes)
    assert all(np.isfinite(r["keypoints"]).all() and len(r["keypoints"]) == 51 for r in results)
    assert leftovers(tmp_path) == []


def test_predict_with_only_bad_inputs_exits_1_and_writes_nothing(tmp_path, capsys, checkpoint):
    bad = write_bad_images(tmp_path / "in")
    out = tmp_path / "out"
    code, stdout, stderr = predict(capsys, *(tmp_path / "in" / n for n in bad), tmp_path / "missing.jpg",
                                   "--detector", "none", "--weights", checkpoint, "--out", out)
    assert code == 1 and stdout == ""
    assert f"none of the {len(bad)} images could be read" in stderr
    assert all(name in stderr for name in [*bad, "missing.jpg"]) and "Traceback" not in stderr
    assert not out.exists()


def test_same_named_inputs_get_distinct_deterministic_output_names(tmp_path, capsys, checkpoint):
    inputs = {"a/img.jpg": (40, 30), "b/img.jpg": (24, 20), "b/img.png": (30, 44), "b/solo.png": (16, 16)}
    for name, (width, height) in inputs.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(smooth_rgb(width, height)).save(tmp_path / name)
    expected = {"a_img_jpg_pose.jpg": (40, 30), "b_img_jpg_pose.jpg": (24, 20), "b_img_png_pose.jpg": (30, 44),
                "solo_pose.jpg": (16, 16)}
    out = tmp_path / "out"
    code, stdout, stderr = predict(capsys, tmp_path / "a", tmp_path / "b", "--detector", "none", "--weights",
                                   checkpoint, "--out", out, "--no-flip")
    assert code == 0 and "4 images" in stdout, stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([*expected, "results.json"])
    for name, size in expected.items():  # each drawing is of its own input
        with Image.open(out / name) as drawn:
            assert drawn.size == size, name


def test_output_names_stay_distinct_when_flattened_paths_meet():
    from posekit.predict import _output_stems

    paths = [Path("a_b/x.jpg"), Path("a/b/x.jpg"), Path("x.png"), Path("a/solo.jpg"), Path("b/solo.jpg")]
    assert _output_stems(paths) == ["a_b_x_jpg", "a_b_x_jpg_2", "x_png", "a_solo_jpg", "b_solo_jpg"]


def test_boxes_file_with_nan_inf_negative_and_outside_boxes(tmp_path, capsys, checkpoint):
    # Python's json reads NaN and Infinity, as many writers produce them.
    boxes = tmp_path / "dets.json"
    bad = ["[NaN, 10, 50, 50]", "[10, 10, Infinity, 50]", "[10, 10, -20, 50]", "[10, 10, 0, 0]", "[5000, 10, 5, 5]"]
    good = "[100, 50, 80, 200]"
    entries = [f'{{"image_id": 785, "category_id": 1, "bbox": {b}, "score": 0.9}}' for b in [*bad, good]]
    boxes.write_text("[" + ", ".join(entries) + "]")
    out = tmp_path / "out"
    code, stdout, stderr = predict(capsys, PHOTO, "--boxes", boxes, "--weights", checkpoint, "--out", out, "--no-flip")
    assert code == 0, stderr
    assert "1 images, 1 people" in stdout
    [warning] = [line for line in stderr.splitlines() if "warning" in line]
    assert PHOTO.name in warning and "5 person box" in warning
    [result] = json.loads((out / "results.json").read_text())
    assert result["image_id"] == 785 and np.isfinite(result["keypoints"]).all()


@pytest.mark.parametrize(
    "content, named",
    [
        ("[{\"image_id\": 785, \"bbox\": [1, 2, 3", "not readable JSON"),
        ("{\"detections\": []}", "top level is a dict"),
        ("[{\"image_id\": 785, \"bbox\": [1, 2, 3]}]", "entries[0].bbox"),
        ("[{\"image_id\": \"785\", \"bbox\": [1, 2, 3, 4]}]", "; expected a whole number from 0 to 9223372036854775807"),
        ("{\"images\": [{\"id\": 785}], \"annotations\": [{\"image_id\": 785, \"category_id\": 1}]}", "annotations[0]: missing field(s) bbox"),
        ("{\"images\": 785, \"annotations\": []}", "'images' must be a list"),
        ("{\"images\": [\"000000000785.jpg\"], \"annotations\": []}", "'images' must be a list"),
        # Hostile files (issue 15): ids that are no int64, numbers beyond float64, nesting beyond the stack.
        ('[{"image_id": Infinity, "bbox": [1, 2, 3, 4]}]', "image_id is float inf; expected a whole number from 0 to"),
        ('[{"image_id": NaN, "bbox": [1, 2, 3, 4]}]', "; expected a whole number from 0 to 9223372036854775807"),
        ('[{"image_id": 1e300, "bbox": [1, 2, 3, 4]}]', "; expected a whole number from 0 to 9223372036854775807"),
        ('[{"image_id": 99999999999999999999999, "bbox": [1, 2, 3, 4]}]', "; expected a whole number from 0 to 9223372036854775807"),
        ('[{"image_id": -1, "bbox": [1, 2, 3, 4]}]', "; expected a whole number from 0 to 9223372036854775807"),
        ('[{"image_id": true, "bbox": [1, 2, 3, 4]}]', "; expected a whole number from 0 to 9223372036854775807"),
        ('[{"image_id": 1, "bbox": [1, 2, 3, 1' + "0" * 400 + "]}]", "bbox is list [1, 2, 3, 1000"),
        ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply to read"),
        ("[1, 2, 1" + "0" * 5000 + "]", "not readable JSON"),  # more digits than Python turns into an int
    ],
    ids=["not-json", "wrong-top-level", "short-bbox", "string-id", "annotation-without-bbox", "images-not-a-list",
         "images-not-objects", "inf-id", "nan-id", "1e300-id", "huge-int-id", "negative-id", "bool-id", "huge-bbox",
         "nested", "5000-digits"],
)
def test_wrong_boxes_file_exits_1_in_one_line_before_writing_anything(tmp_path, capsys, checkpoint, content, named):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(content)
    out = tmp_path / "out"
    code, _, stderr = predict(capsys, PHOTO, "--boxes", boxes, "--weights", checkpoint, "--out", out)
    assert code == 1 and "Traceback" not in stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith(f"posekit predict: error: {boxes}: ") and named in line and len(line) < 600
    assert not out.exists()


def make_bad_checkpoint(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.pth"
    if kind == "incomplete-pose-resnet":  # the right family, but a block is missing: no known depth
        torch.save({k: v for k, v in pose_resnet(18).state_dict().items() if not k.startswith("layer4.1.")}, path)
    elif kind == "truncated":
        torch.save(pose_resnet(18).state_dict(), path)
        path.write_bytes(path.read_bytes()[:200_000])
    elif kind == "classifier":  # another architecture altogether
        torch.save({"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, path)
    elif kind == "jpeg":
        shutil.copy(PHOTO, path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not-a-state-dict":
        torch.save({"epoch": 140, "best_ap": 0.70}, path)
    return path


BAD_CHECKPOINTS = ["incomplete-pose-resnet", "truncated", "classifier", "jpeg", "empty", "not-a-state-dict"]


@pytest.mark.parametrize("kind", BAD_CHECKPOINTS)
def test_bad_checkpoint_is_one_checkpoint_error_naming_the_file(tmp_path, kind):
    path = make_bad_checkpoint(kind, tmp_path)
    with pytest.raises(CheckpointError) as error:
        PoseEstimator(path, depth=50)
    message = str(error.value)
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("kind", ["incomplete-pose-resnet", "truncated", "jpeg"])
def test_bad_checkpoint_on_the_command_line_exits_1_before_writing_anything(tmp_path, capsys, kind):
    path = make_bad_checkpoint(kind, tmp_path)
    out = tmp_path / "out"
    code, stdout, stderr = predict(capsys, PHOTO, "--detector", "none", "--weights", path, "--out", out)
    assert code == 1 and stdout == ""
    [line] = stderr.strip().splitlines()
    assert line.startswith(f"posekit predict: error: {path}")
    assert not out.exists()


@pytest.mark.parametrize(
    "breakage, named",
    [
        (lambda data: data.pop("images"), "'images' and 'annotations'"),
        (lambda data: data["images"][0].pop("file_name"), "images[0]: missing field(s) file_name"),
        (lambda data: [a.pop("bbox") for a in data["annotations"]], "annotations[0]: missing field(s) bbox"),
        (lambda data: data["annotations"][3].pop("keypoints"), "annotations[3]: missing field(s) keypoints"),
    ],
    ids=["no-images", "image-without-file-name", "no-bbox", "no-keypoints"],
)
def test_eval_with_an_annotation_file_missing_fields_exits_1_naming_it(tmp_path, capsys, checkpoint, breakage, named):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").symlink_to(SAMPLE, target_is_directory=True)
    data = json.loads(ANNOTATIONS.read_text())
    breakage(data)
    ann_file = root / "annotations" / "person_keypoints_val2017.json"
    ann_file.write_text(json.dumps(data))
    out = tmp_path / "results.json"
    code = main(["eval", "--coco-root", str(root), "--weights", str(checkpoint), "--out", str(out), "--workers", "0"])
    stderr = capsys.readouterr().err
    assert code == 1
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and str(ann_file) in errors[0] and named in errors[0], stderr
    assert "Traceback" not in stderr and not out.exists()


def test_a_device_this_machine_lacks_is_one_clear_error(tmp_path, capsys, checkpoint):
    missing_gpu = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: absent on any machine
    with pytest.raises(PosekitError, match=rf"device {missing_gpu} is not available: .* sees \d+ CUDA GPU"):
        PoseEstimator(None, depth=18, device=missing_gpu)
    with pytest.raises(PosekitError, match="unknown device 'gpu'; expected auto, cpu, cuda"):
        PoseEstimator(None, depth=18, device="gpu")
    out = tmp_path / "out"
    code, _, stderr = predict(capsys, PHOTO, "--detector", "none", "--weights", checkpoint, "--device", missing_gpu,
                              "--out", out)
    [line] = stderr.strip().splitlines()
    assert code == 1 and line.startswith(f"posekit predict: error: device {missing_gpu} is not available")
    assert not out.exists()


# ------------------------------------------------------------------------------------ no half-written files


def test_failing_results_write_keeps_the_previous_results(tmp_path, capsys, checkpoint, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("[\"previous run\"]")

    real_fsync = os.fsync

    def disk_full_for_results(descriptor):  # the data is in the page cache; the disk turns out to be full
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith(".part") and "results.json" in os.readlink(
            f"/proc/self/fd/{descriptor}"
        ):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", disk_full_for_results)
    assert main(["predict", str(PHOTO), "--detector", "none", "--weights", str(checkpoint), "--out", str(out)]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line == (f"posekit predict: error: cannot write {out / 'results.json'} (No space left on device); "
                    "the disk is full; free some space or write elsewhere")
    assert (out / "results.json").read_text() == "[\"previous run\"]"
    assert sorted(p.name for p in out.iterdir()) == ["000000000785_pose.jpg", "results.json"]


def test_unwritable_outputs_are_one_line_naming_the_path(tmp_path, capsys, checkpoint):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, stderr = predict(capsys, PHOTO, "--detector", "none", "--weights", checkpoint, "--out", blocker / "out")
    assert code == 1 and f"posekit predict: error: cannot write {blocker / 'out'}" in stderr
    folder_in_the_way = tmp_path / "results.json"
    folder_in_the_way.mkdir()
    code, _, stderr = predict(capsys, PHOTO, "--detector", "none", "--weights", checkpoint, "--out", tmp_path / "out",
                              "--json", folder_in_the_way, "--no-flip")
    assert code == 1 and f"cannot write {folder_in_the_way}: it is a folder" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()  # refused before the first image, not after the last
    assert leftovers(tmp_path) == []


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "new" / "folder" / "data.bin"
    with atomic_write(target) as file:
        file.write(b"first")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_write(target) as file:
            file.write(b"second, cut")
            raise RuntimeError("half way")
    assert target.read_bytes() == b"first"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "never.txt", "w") as file:
            file.write("partial")
            raise KeyboardInterrupt
    assert not (tmp_path / "never.txt").exists()
    with atomic_write(tmp_path / "text.txt", "w") as file:
        file.write("é ✓")
    assert (tmp_path / "text.txt").read_bytes() == "é ✓".encode("utf-8")
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="'a'"):
        with atomic_write(target, "a"):
            pass


def test_atomic_write_failures_name_the_path_and_leave_no_temporary(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(PosekitError, match=f"cannot write {tmp_path / 'folder'}"):
        with atomic_write(tmp_path / "folder") as file:
            file.write(b"x")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(PosekitError, match=f"cannot write {tmp_path / 'plain' / 'below.json'}"):
        with atomic_write(tmp_path / "plain" / "below.json"):
            pass
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_permissions_follow_the_umask_like_open(tmp_path, umask, mask, mode):
    umask(mask)
    with atomic_write(tmp_path / "atomic.bin") as file:
        file.write(b"x")
    with open(tmp_path / "plain.bin", "wb") as file:
        file.write(b"x")
    assert stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == mode  # what the umask gives a plain open
    assert stat.S_IMODE((tmp_path / "atomic.bin").stat().st_mode) == mode


def test_every_writer_leaves_files_readable_by_others(tmp_path, umask, capsys, checkpoint):
    umask(0o022)
    ann_file, image_dir = make_synthetic_coco(tmp_path / "syn", num_images=1, people_per_image=1,
                                                   image_size=(64, 48))
    figure = viz.save_figure(viz.plot_timing({"model": 0.5}), tmp_path / "timing.png")
    results = coco.EvalResult(stats={}, results=[], timing={}, num_people=0, num_images=0).save_results(
        tmp_path / "results.json"
    )
    code, _, stderr = predict(capsys, PHOTO, "--detector", "none", "--weights", checkpoint, "--out", tmp_path / "out",
                              "--no-flip")
    assert code == 0, stderr
    written = [ann_file, *image_dir.glob("*.png"), figure, results, *(tmp_path / "out").iterdir()]
    assert len(written) == 6
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {str(p): oct(0o644) for p in written}


# ------------------------------------------------------------------------------------ downloads


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A registry entry with a sha256, served over HTTP from 127.0.0.1; yields it, the state_dict and the
    bytes it serves, where the cache keeps it, and the server."""
    folder = tmp_path / "server"
    folder.mkdir()
    torch.manual_seed(1)
    state = pose_resnet(18).state_dict()
    torch.save(state, folder / "served.pth")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    entry = dataclasses.replace(
        weights.get_weights(weights.DEFAULT_WEIGHTS), name="served_test", depth=18, input_size=(48, 64),
        filename="served.pth", url=f"http://127.0.0.1:{httpd.server_address[1]}/served.pth", gdrive_folder=None,
        gdrive_path=None, sha256=hashlib.sha256((folder / "served.pth").read_bytes()).hexdigest(),
    )
    monkeypatch.setitem(weights.WEIGHTS, entry.name, entry)
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "checkpoints" / "served.pth"
    cached.parent.mkdir(parents=True)
    yield entry, state, (folder / "served.pth").read_bytes(), cached, httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_corrupt_cached_checkpoint_is_caught_by_its_checksum_and_fetched_again(served):
    entry, state, served_bytes, cached, _ = served
    cached.write_bytes(served_bytes[:-5000] + bytes(5000))  # the right size, damaged at the end
    with pytest.warns(UserWarning, match=f"cached {cached} does not have sha256"):
        estimator = PoseEstimator(entry.name, device="cpu")
    assert cached.read_bytes() == served_bytes
    assert all(torch.equal(estimator.model.state_dict()[k], v) for k, v in state.items())
    assert weights.cached_weights_path(entry.name) == cached and leftovers(cached.parent) == []


def test_a_corrupt_cached_checkpoint_offline_is_deleted_and_explained_in_one_sentence(served):
    entry, _, _, cached, httpd = served
    httpd.shutdown()
    httpd.server_close()
    cached.write_bytes(b"not the checkpoint")
    with pytest.warns(UserWarning, match="does not have sha256"), pytest.raises(DownloadError) as error:
        weights.download_weights(entry.name, progress=False)
    message = str(error.value)
    assert message.startswith(f"could not download {entry.url}") and "\n" not in message
    assert "put it at" in message and str(cached) in message
    assert not cached.exists()  # the damaged copy is never used again


def test_predict_takes_image_ids_from_the_boxes_annotation_file_before_the_file_name(tmp_path, capsys, checkpoint):
    """A file named frame_0007.jpg that the --boxes annotation file lists as image 785 is image 785."""
    shutil.copy(PHOTO, tmp_path / "frame_0007.jpg")
    annotations = json.loads(ANNOTATIONS.read_text())
    annotations["images"] = [dict(annotations["images"][0], id=785, file_name="frame_0007.jpg")]
    annotations["annotations"] = [a for a in annotations["annotations"] if a["image_id"] == 785]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(annotations))
    out = tmp_path / "out"
    code, _, _ = predict(capsys, tmp_path / "frame_0007.jpg", "--boxes", boxes, "--weights", checkpoint, "--out", out)
    results = json.loads((out / "results.json").read_text())
    assert code == 0 and [r["image_id"] for r in results] == [785] * len(annotations["annotations"]) and results


def test_max_batch_below_one_is_a_clear_error():
    with pytest.raises(PosekitError, match=r"max_batch must be a whole number >= 1 \(people per network call\), got 0"):
        PoseEstimator(None, depth=18, max_batch=0)


def test_a_sha256_shorter_than_8_digits_is_refused(tmp_path):
    from posekit.io import hub

    with pytest.raises(ValueError, match="at least its first 8 digits"):
        hub.download_url("http://127.0.0.1:1/x.pth", tmp_path / "x.pth", sha256="", progress=False)


def test_a_detector_checkpoint_that_is_no_checkpoint_is_one_checkpoint_error(tmp_path):
    from posekit.models.detect import PersonDetector

    for content in (b"not a checkpoint at all", PHOTO.read_bytes()[:5000]):
        path = tmp_path / "detector.pth"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="not a fasterrcnn_mobilenet_v3_large_fpn checkpoint"):
            PersonDetector("fasterrcnn_mobilenet_v3_large_fpn", checkpoint=path)


# ==================================================================================== adversarial suite (issue 15)
# One section per class of failure; each test would have caught its class in posekit 0.1.

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def write_png(path: Path, width: int = 40, height: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_rgb(width, height)).save(path)
    return path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


def warning_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.replace("\r", "\n").splitlines() if ": warning: " in line]


def written_path(file) -> str:
    """The path atomic_write's file object writes to (its temporary file). It hands out no fileno(), so that
    every write is checked: the descriptor is its raw file's name."""
    return os.readlink(f"/proc/self/fd/{file.raw.name}")


def strict_json(path: Path) -> object:
    """Parse as the JSON standard does: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} in {path}")
    return json.loads(path.read_text(), parse_constant=refuse)


# ------------------------------------------------------------------------------------ writing through special files


def test_atomic_write_to_dev_null_writes_through_and_keeps_the_device():
    before = os.stat("/dev/null")
    with atomic_write("/dev/null", "w") as file:
        file.write("discarded")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_rdev, after.st_ino) == (before.st_rdev, before.st_ino)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is Linux's always-full device")
def test_atomic_write_to_a_full_device_is_one_output_error_and_the_device_stays():
    with pytest.raises(OutputError, match=r"^cannot write /dev/full \(No space left on device\)") as error:
        with atomic_write("/dev/full") as file:
            file.write(b"x" * 10)  # buffered: the device refuses it on the flush
    assert error.value.errno == errno.ENOSPC
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_atomic_write_into_a_fifo_feeds_its_reader_and_keeps_the_fifo(tmp_path):
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    received = []

    def read():
        with open(fifo, "rb") as pipe:
            received.append(pipe.read())

    reader = threading.Thread(target=read)
    reader.start()
    # open() of the reader blocks until a writer comes; give it a moment to be in place.
    deadline = time.monotonic() + 10
    while True:
        try:
            with atomic_write(fifo) as file:
                file.write(b"[1, 2]")
            break
        except OutputError:  # the reader has not opened its end yet
            assert time.monotonic() < deadline
            time.sleep(0.01)
    reader.join(10)
    assert received == [b"[1, 2]"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_atomic_write_into_a_fifo_nobody_reads_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "lonely.fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="is a FIFO that no process is reading"):
        with atomic_write(fifo, "w") as file:
            file.write("x")
    assert stat.S_ISFIFO(fifo.stat().st_mode) and leftovers(tmp_path) == []


def test_atomic_write_through_symlinks_replaces_the_target_and_keeps_the_links(tmp_path):
    target = tmp_path / "real" / "results.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    chain = tmp_path / "chain.json"
    chain.symlink_to(link)
    with atomic_write(chain, "w") as file:
        file.write("new")
    assert chain.is_symlink() and link.is_symlink() and os.readlink(chain) == str(link)
    assert target.read_text() == "new" and not target.is_symlink()
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "real" / "created.json")
    with atomic_write(dangling, "w") as file:
        file.write("through")
    assert dangling.is_symlink() and (tmp_path / "real" / "created.json").read_text() == "through"
    assert leftovers(tmp_path) == []


def test_atomic_write_refuses_a_socket_and_a_folder_without_touching_them(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    path = tmp_path / "s.sock"
    server.bind(str(path))
    try:
        with pytest.raises(OutputError, match=f"cannot write {path}: it is a socket, which posekit does not replace"):
            with atomic_write(path) as file:
                file.write(b"x")
        assert stat.S_ISSOCK(path.stat().st_mode)
    finally:
        server.close()
    with pytest.raises(OutputError, match="it is a folder") as error:
        with atomic_write(tmp_path) as file:
            file.write(b"x")
    assert error.value.errno == errno.EISDIR and leftovers(tmp_path) == []


def test_a_full_disk_at_fsync_or_close_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    for stage in ("fsync", "replace"):
        with monkeypatch.context() as patch:
            def refuse(*args, **kwargs):
                raise OSError(errno.ENOSPC, "No space left on device")
            patch.setattr(os, stage, refuse)
            with pytest.raises(OutputError, match=r"No space left on device\); the disk is full"):
                with atomic_write(target) as file:
                    file.write(b"new")
        assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_the_temporary_name_of_a_255_byte_name_still_fits(tmp_path):
    target = tmp_path / ("n" * 250 + ".json")  # its temporary ".NAME.<8 hex>.part" would be 265 bytes
    with atomic_write(target, "w") as file:
        file.write("{}")
    assert target.read_text() == "{}" and leftovers(tmp_path) == []


def test_predict_json_on_special_files(tmp_path, capsys, checkpoint):
    out = tmp_path / "out"
    common = ["--detector", "none", "--weights", checkpoint, "--out", out, "--no-flip"]
    code, stdout, stderr = predict(capsys, PHOTO, *common, "--json", "/dev/null")
    assert code == 0 and "results in /dev/null" in stdout and stat.S_ISCHR(os.stat("/dev/null").st_mode), stderr
    if os.path.exists("/dev/full"):
        code, _, stderr = predict(capsys, PHOTO, *common, "--json", "/dev/full")
        assert code == 1 and error_lines(stderr) == [
            "posekit predict: error: cannot write /dev/full (No space left on device); the disk is full; free some "
            "space or write elsewhere"
        ]
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    code, _, stderr = predict(capsys, PHOTO, *common, "--json", fifo)
    assert code == 1 and error_lines(stderr) == [
        f"posekit predict: error: cannot write {fifo}: it is a FIFO that no process is reading; start the reader first"
    ]
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    # The drawings are complete files either way.
    with Image.open(out / "000000000785_pose.jpg") as drawn:
        drawn.verify()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("out", ["/dev/null", "fifo", "file"])
def test_predict_out_that_is_not_a_folder_is_one_line_and_stays(tmp_path, capsys, checkpoint, out):
    path = {"/dev/null": Path("/dev/null"), "fifo": tmp_path / "fifo", "file": tmp_path / "file"}[out]
    if out == "fifo":
        os.mkfifo(path)
    elif out == "file":
        path.write_text("mine")
    kind = stat.S_IFMT(path.stat().st_mode)
    code, stdout, stderr = predict(capsys, PHOTO, "--detector", "none", "--weights", checkpoint, "--out", path,
                                   "--no-flip")
    # Found while planning, before a network is loaded: the results file cannot go there either.
    assert code == 1 and stdout == "" and error_lines(stderr) == [
        f"posekit predict: error: cannot write {path / 'results.json'} (Not a directory); expected a writable folder "
        "and file name"
    ]
    assert stat.S_IFMT(path.stat().st_mode) == kind and leftovers(tmp_path) == []
    if out == "file":
        assert path.read_text() == "mine"


# ------------------------------------------------------------------------------------ overwriting the user's files


def test_outputs_never_overwrite_inputs_named_like_outputs(tmp_path, capsys, checkpoint):
    folder = tmp_path / "photos"
    for name, size in {"a.png": (40, 30), "a_pose.jpg": (24, 20)}.items():
        write_png(folder / "tmp.png", *size).rename(folder / name)
    originals = {p.name: p.read_bytes() for p in folder.iterdir()}
    inputs = [folder / "a.png", folder / "a_pose.jpg"]
    code, stdout, stderr = predict(capsys, *inputs, "--detector", "none", "--weights", checkpoint, "--out", folder,
                                   "--no-flip")
    assert code == 0 and "2 images, 2 people" in stdout, stderr
    assert {name: (folder / name).read_bytes() for name in originals} == originals  # inputs untouched
    assert f"{folder / 'a_pose.jpg'} is an input: the drawing of {folder / 'a.png'} goes to {folder / 'a_2_pose.jpg'}" \
        in stderr
    with Image.open(folder / "a_2_pose.jpg") as drawn, Image.open(folder / "a_pose_pose.jpg") as other:
        assert drawn.size == (40, 30) and other.size == (24, 20)  # each drawing is of its own input


@pytest.mark.parametrize("which", ["image", "image-by-another-spelling", "boxes"])
def test_json_naming_an_input_is_refused_before_anything_runs(tmp_path, capsys, checkpoint, monkeypatch, which):
    image = write_png(tmp_path / "a.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 0, "bbox": [1, 1, 20, 20]}]))
    monkeypatch.chdir(tmp_path)
    target = {"image": image, "image-by-another-spelling": Path("./sub/../a.png"), "boxes": boxes}[which]
    (tmp_path / "sub").mkdir()
    before = {p: p.read_bytes() for p in (image, boxes)}
    out = tmp_path / "out"
    code, stdout, stderr = predict(capsys, image, "--boxes", boxes, "--weights", checkpoint, "--out", out,
                                   "--json", target)
    assert code == 1 and stdout == ""
    [line] = error_lines(stderr)
    assert line.startswith(f"posekit predict: error: --json {target} is the input ") and "expected a new file name" in line
    assert {p: p.read_bytes() for p in before} == before and not out.exists()


def test_an_earlier_runs_drawings_in_the_output_folder_are_not_inputs(tmp_path, capsys, checkpoint):
    folder = tmp_path / "photos"
    write_png(folder / "a.png")
    write_png(folder / "b.png", 24, 20)
    args = [folder, "--detector", "none", "--weights", checkpoint, "--out", folder, "--no-flip"]
    assert predict(capsys, *args)[0] == 0
    code, stdout, stderr = predict(capsys, *args)  # the same command again
    assert code == 0 and "2 images, 2 people" in stdout
    assert f"{folder}: skipped 2 drawing(s) of an earlier run (*_pose.jpg) in the output folder" in stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_pose.jpg", "b.png", "b_pose.jpg", "results.json"]
    # Named on its own, a drawing is an input like any file.
    code, stdout, _ = predict(capsys, folder / "a_pose.jpg", *args[1:])
    assert code == 0 and "1 images" in stdout and (folder / "a_pose_pose.jpg").is_file()


def test_a_drawing_path_that_links_to_an_input_is_not_written_through(tmp_path, capsys, checkpoint):
    image = write_png(tmp_path / "a.png")
    original = image.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_pose.jpg").symlink_to(image)
    code, _, stderr = predict(capsys, image, "--detector", "none", "--weights", checkpoint, "--out", out, "--no-flip")
    assert code == 0, stderr
    assert image.read_bytes() == original and (out / "a_pose.jpg").is_symlink() and (out / "a_2_pose.jpg").is_file()


# ------------------------------------------------------------------------------------ nothing lost, nothing half-written


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_writing_a_drawing_leaves_no_part_file_and_fresh_results(
    tmp_path, capsys, checkpoint, monkeypatch, signum
):
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / "in" / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("[\"an earlier run\"]")
    real_savefig = matplotlib.figure.Figure.savefig
    calls = []

    def signalled_on_the_second(figure, file, **kwargs):
        calls.append(file)
        if len(calls) == 2:
            file.write(b"\xff\xd8\xff\xe0 half a JPEG")
            os.kill(os.getpid(), signum)  # Python runs the handler at the next bytecode, inside this write
        return real_savefig(figure, file, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", signalled_on_the_second)
    before = signal.getsignal(signal.SIGTERM)
    code, _, stderr = predict(capsys, tmp_path / "in", "--detector", "none", "--weights", checkpoint, "--out", out,
                              "--no-flip")
    assert code == 128 + signum and f"posekit predict: interrupted ({signal.Signals(signum).name})" in stderr
    assert signal.getsignal(signal.SIGTERM) == before  # main() puts the previous handler back
    # b's half file is gone, c never started, and the results are a's alone: not the earlier run's.
    assert sorted(p.name for p in out.iterdir()) == ["a_pose.jpg", "results.json"] and leftovers(tmp_path) == []
    with Image.open(out / "a_pose.jpg") as complete:
        complete.verify()
    assert [r["image_id"] for r in strict_json(out / "results.json")] == [0]
    assert f"{out / 'results.json'} holds the results of the 1 images done" in stderr


SIGTERM_CHILD = """
import dataclasses, pathlib, sys, time
import matplotlib.figure
from posekit.models import weights
from posekit.cli import main

checkpoint, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
entry = dataclasses.replace(weights.get_weights(weights.DEFAULT_WEIGHTS), name="child_test", depth=18,
                            input_size=(48, 64), filename=checkpoint.name)
weights.WEIGHTS[entry.name] = entry
real_savefig = matplotlib.figure.Figure.savefig

count = []

def savefig(figure, file, **kwargs):
    count.append(1)
    if len(count) == 2:  # half-way through the second drawing's temporary file: SIGTERM now
        file.write(b"half a JPEG")
        file.flush()
        marker.write_text("writing")
        time.sleep(60)
    return real_savefig(figure, file, **kwargs)

matplotlib.figure.Figure.savefig = savefig
raise SystemExit(main(sys.argv[3:]))
"""


def test_sigterm_to_a_real_process_leaves_only_complete_files(tmp_path, checkpoint):
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / "in" / name)
    out, marker = tmp_path / "out", tmp_path / "marker"
    child = subprocess.Popen(
        [PYTHON, "-c", SIGTERM_CHILD, str(checkpoint), str(marker), "predict", str(tmp_path / "in"), "--detector",
         "none", "--weights", str(checkpoint), "--out", str(out), "--no-flip"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
            time.sleep(0.05)
        assert any(".part" in p.name for p in out.iterdir())  # caught in the act
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == 128 + signal.SIGTERM and "interrupted (SIGTERM)" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_pose.jpg", "results.json"] and leftovers(out) == []
    assert len(strict_json(out / "results.json")) == 1


def test_remove_pending_deletes_temporaries_even_when_the_exception_is_swallowed(tmp_path):
    from posekit.io.files import remove_pending

    target = tmp_path / "x.bin"
    writer = atomic_write(target)
    file = writer.__enter__()
    file.write(b"half")
    assert len(leftovers(tmp_path)) == 1
    remove_pending()  # what the SIGTERM handler does first
    assert leftovers(tmp_path) == [] and not target.exists()
    with pytest.raises(OutputError):  # the block can no longer be completed: nothing appears
        writer.__exit__(None, None, None)
    assert not target.exists() and leftovers(tmp_path) == []


def test_an_image_that_cannot_be_drawn_is_a_warning_and_the_others_results_are_written(tmp_path, capsys, checkpoint):
    folder = tmp_path / "in"
    write_png(folder / "ok.png")
    Image.new("RGB", (70000, 8), (90, 90, 90)).save(folder / "wide.png")  # wider than any JPEG may be
    long_name = "x" * 250 + ".png"  # its drawing's name, x..._pose.jpg, is over the 255-byte limit
    write_png(folder / long_name)
    out = tmp_path / "out"
    code, stdout, stderr = predict(capsys, folder, "--detector", "none", "--weights", checkpoint, "--out", out,
                                   "--no-flip")
    assert code == 0 and "3 images, 3 people" in stdout, stderr
    warnings_ = warning_lines(stderr)
    assert any(line.startswith(f"posekit predict: warning: {folder / 'wide.png'}: annotated image not written "
                               "(70000x8 is larger than JPEG's limit of 65500 pixels per side)") for line in warnings_)
    assert any(f"{folder / long_name}: annotated image not written (cannot write" in line and "File name too long"
               in line for line in warnings_)
    assert sorted(p.name for p in out.iterdir()) == ["ok_pose.jpg", "results.json"]
    assert sorted(r["image_id"] for r in strict_json(out / "results.json")) == [0, 1, 2]
    assert "Traceback" not in stderr and leftovers(tmp_path) == []


def test_a_full_disk_while_drawing_ends_the_run_without_a_truncated_file(tmp_path, capsys, checkpoint, monkeypatch):
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "in" / name)
    out = tmp_path / "out"
    real_savefig = matplotlib.figure.Figure.savefig

    def disk_fills_up(figure, file, **kwargs):
        if "b_pose" in written_path(file):
            file.write(b"\xff\xd8\xff\xe0 the first blocks")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savefig(figure, file, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_fills_up)
    code, _, stderr = predict(capsys, tmp_path / "in", "--detector", "none", "--weights", checkpoint, "--out", out,
                              "--no-flip")
    assert code == 1 and error_lines(stderr) == [
        f"posekit predict: error: cannot write {out / 'b_pose.jpg'} (No space left on device); the disk is full; "
        "free some space or write elsewhere"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["a_pose.jpg"] and leftovers(tmp_path) == []


FILE_SIZE_LIMIT_CHILD = """
import dataclasses, resource, sys
from posekit.models import weights
from posekit.cli import main

entry = dataclasses.replace(weights.get_weights(weights.DEFAULT_WEIGHTS), name="child_test", depth=18,
                            input_size=(48, 64), filename=sys.argv[1].rsplit("/", 1)[-1])
weights.WEIGHTS[entry.name] = entry
# The kernel refuses writes past 20 kB from here on (EFBIG; Python ignores SIGXFSZ): a disk that fills up mid-file.
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
raise SystemExit(main(sys.argv[2:]))
"""


def test_a_file_size_limit_hit_mid_drawing_leaves_no_truncated_jpeg(tmp_path, checkpoint):
    """A real write refused by the kernel half-way: the drawing is absent, not truncated; the others are written."""
    write_png(tmp_path / "in" / "small.png", 40, 30)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(
        tmp_path / "in" / "noisy.png")  # its drawing is far above 20 kB
    out = tmp_path / "out"
    child = subprocess.run(
        [PYTHON, "-c", FILE_SIZE_LIMIT_CHILD, str(checkpoint), "predict", str(tmp_path / "in"), "--detector", "none",
         "--weights", str(checkpoint), "--out", str(out), "--no-flip"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )
    assert child.returncode == 0, child.stderr
    assert any(f"{tmp_path / 'in' / 'noisy.png'}: annotated image not written (cannot write {out / 'noisy_pose.jpg'}"
               " (File too large)" in line for line in warning_lines(child.stderr)), child.stderr
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "small_pose.jpg"] and leftovers(out) == []
    assert len(strict_json(out / "results.json")) == 2


# ------------------------------------------------------------------------------------ valid, unambiguous output


def reference_ids(names: list[str], file_ids: dict[str, int]) -> list[int | None]:
    """The id each name asks for, by the documented rule, written independently: the annotation file's id,
    else the digits after the last underscore (or the whole stem), else None (numbered by position)."""
    wanted = []
    for name in names:
        stem = name.rsplit(".", 1)[0]
        tail = stem.rsplit("_", 1)[-1]
        wanted.append(file_ids[name] if name in file_ids else int(tail) if tail.isdigit() and tail.isascii() else None)
    return wanted


name_parts = st.sampled_from(["a", "img", "frame_", "COCO_val2014_", "x_y_", ""])


@FUZZ
@given(
    entries=st.lists(st.tuples(name_parts, st.one_of(st.none(), st.integers(0, 12)), st.sampled_from([".jpg", ".png"])),
                     min_size=1, max_size=12),
    listed=st.dictionaries(st.integers(0, 11), st.integers(0, 15), max_size=4),
)
def test_image_ids_are_unique_and_keep_every_id_that_is_not_contested(entries, listed):
    from posekit.predict import _image_ids

    # Distinct folders, so equal names are different files (as a/img.jpg and b/img.jpg).
    paths = [Path(f"d{i}") / f"{part}{'' if number is None else f'{number:0{i % 3 + 1}d}'}{suffix}"
             for i, (part, number, suffix) in enumerate(entries)]
    file_ids = {paths[i].name: value for i, value in listed.items() if i < len(paths)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = _image_ids(paths, file_ids, boxes_given=False)
    assert len(set(ids)) == len(ids) == len(paths)
    wanted = reference_ids([p.name for p in paths], file_ids)
    named = [w for w in wanted if w is not None]
    for index, (got, want) in enumerate(zip(ids, wanted)):
        earlier = [w for w in wanted[:index] if w is not None]
        if want is not None and want not in earlier:
            assert got == want  # the first file asking for an id gets it
        elif want is None and index not in named and index not in ids[:index]:
            assert got == index  # numbered by position when that number is free
        else:
            assert got > max(named + [len(paths) - 1])  # renumbered past every id in use
    messages = " ".join(str(w.message) for w in caught)
    by_position = any(want is None and got == index for index, (got, want) in enumerate(zip(ids, wanted)))
    assert ("numbered by its position" in messages) == by_position
    assert ("numbered after the largest id" in messages) == any(got > max(named + [len(paths) - 1]) for got in ids)
    # With --boxes, a contested id is an error rather than boxes applied to the wrong image.
    if any(got != want for got, want in zip(ids, [w if w is not None else i for i, w in enumerate(wanted)])):
        with pytest.raises(DetectionsFormatError, match="both get image id"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _image_ids(paths, file_ids, boxes_given=True)


def test_numbers_in_names_beyond_int64_or_not_ascii_are_no_image_ids():
    from posekit.predict import _image_ids

    paths = [Path("9" * 30 + ".jpg"), Path(f"{2**63}.jpg"), Path(f"{2**63 - 1}.jpg"), Path("\u0663\u0664.jpg")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = _image_ids(paths, {}, boxes_given=False)
    assert ids == [0, 1, 2**63 - 1, 3]
    assert any("3 image(s) have no image id in their file name" in str(w.message) for w in caught)


def test_colliding_ids_with_boxes_are_one_error_naming_both_files(tmp_path, capsys, checkpoint):
    first, second = write_png(tmp_path / "a" / "785.png"), write_png(tmp_path / "b" / "frame_000785.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 785, "bbox": [1, 1, 20, 20]}]))
    out = tmp_path / "out"
    code, _, stderr = predict(capsys, first, second, "--boxes", boxes, "--weights", checkpoint, "--out", out)
    assert code == 1 and error_lines(stderr) == [
        f"posekit predict: error: {first} and {second} both get image id 785, so the boxes that --boxes gives for that "
        "id could belong to either; expected inputs with distinct ids (rename or leave out one)"
    ]
    assert not out.exists()


def test_colliding_ids_without_boxes_are_renumbered_and_said(tmp_path, capsys, checkpoint):
    paths = [write_png(tmp_path / "a" / "1.png"), write_png(tmp_path / "b" / "0001.png"), write_png(tmp_path / "c.png")]
    out = tmp_path / "out"
    code, _, stderr = predict(capsys, *paths, "--detector", "none", "--weights", checkpoint, "--out", out, "--no-flip")
    assert code == 0, stderr
    # 1.png keeps 1; 0001.png would be 1 too: numbered after the largest id in use (1, or position 2): 3; c.png: 2.
    assert [r["image_id"] for r in strict_json(out / "results.json")] == [1, 3, 2]
    assert "1 image(s) have the image id of an earlier input: numbered after the largest id instead: 0001.png=3" \
        in stderr
    assert "1 image(s) have no image id in their file name" in stderr


def test_one_file_under_many_spellings_is_one_image(tmp_path, capsys, checkpoint, monkeypatch):
    from posekit.io.images import find_images

    image = write_png(tmp_path / "a.png")
    (tmp_path / "link.png").symlink_to(image)
    os.link(image, tmp_path / "hard.png")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    spellings = ["a.png", "./a.png", str(image), "sub/../a.png", "link.png", "hard.png", "*.png", "."]
    assert find_images(spellings) == [Path("a.png")]  # the first spelling
    out = tmp_path / "out"
    code, stdout, stderr = predict(capsys, *spellings, "--detector", "none", "--weights", checkpoint, "--out", out,
                                   "--no-flip")
    assert code == 0 and "1 images, 1 people" in stdout, stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_pose.jpg", "results.json"]


def test_nan_scores_never_reach_the_json(tmp_path, capsys, checkpoint):
    # Python's json reads NaN and Infinity, as many writers produce them; a score of NaN makes a NaN person score.
    boxes = tmp_path / "boxes.json"
    boxes.write_text('[{"image_id": 785, "bbox": [100, 50, 80, 200], "score": NaN},'
                     ' {"image_id": 785, "bbox": [300, 50, 80, 200], "score": Infinity},'
                     ' {"image_id": 785, "bbox": [200, 50, 80, 200], "score": 0.9}]')
    out = tmp_path / "out"
    code, stdout, stderr = predict(capsys, PHOTO, "--boxes", boxes, "--weights", checkpoint, "--out", out, "--no-flip")
    assert code == 0, stderr
    assert f"{PHOTO}: left 2 person(s) with NaN or infinite keypoints or score out of the results" in stderr
    [person] = strict_json(out / "results.json")
    assert person["image_id"] == 785 and np.isfinite(person["score"])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_writing_nan_as_json_is_refused_and_writes_nothing(tmp_path, value):
    from posekit.io.files import write_json

    with pytest.raises(OutputError, match="holds NaN or infinity, which JSON cannot represent"):
        write_json(tmp_path / "r.json", [{"score": value}])
    result = coco.EvalResult(stats={}, results=[{"score": value}], timing={}, num_people=1, num_images=1)
    with pytest.raises(OutputError, match="NaN or infinity"):
        result.save_results(tmp_path / "eval.json")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ clear errors: boxes and detections

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=5), inner, max_size=4)), max_leaves=12)
ids = st.one_of(st.integers(-5, 2**64), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=3),
                st.just(2**63 - 1), st.just(1e300), st.just(785.0))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**1100, 2**1100))
entries = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"image_id": ids, "bbox": st.one_of(st.lists(numbers, min_size=3, max_size=5), json_values)},
        optional={"score": st.one_of(numbers, json_values), "category_id": st.sampled_from([1, 2, "1", None])},
    ),
)


@FUZZ
@given(content=st.one_of(st.lists(entries, max_size=8), st.fixed_dictionaries({"annotations": st.lists(entries, max_size=6)}),
                         json_values))
def test_any_detections_content_loads_or_is_one_detections_format_error(content):
    from posekit.models.detect import load_detections

    try:
        by_image = load_detections(content)
    except DetectionsFormatError as error:
        assert "\n" not in str(error) and "expected" in str(error)
        return
    entries_ = content["annotations"] if isinstance(content, dict) else content
    people = [e for e in entries_ if e.get("category_id", 1) == 1]
    assert sum(len(scores) for _, scores in by_image.values()) == len(people)
    for image_id, (boxes, scores) in by_image.items():
        assert isinstance(image_id, int) and 0 <= image_id < 2**63
        assert boxes.shape == (len(scores), 4) and boxes.dtype == scores.dtype == np.float64


def test_a_boxes_file_with_a_byte_order_mark_or_a_785_0_id_is_read(tmp_path, capsys, checkpoint):
    boxes = tmp_path / "boxes.json"
    boxes.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"image_id": 785.0, "bbox": [100, 50, 80, 200]}]).encode())
    code, stdout, stderr = predict(capsys, PHOTO, "--boxes", boxes, "--weights", checkpoint, "--out", tmp_path / "out",
                                   "--no-flip")
    assert code == 0 and "1 images, 1 people" in stdout, stderr


def test_a_boxes_file_that_can_be_read_only_once_works(tmp_path, capsys, checkpoint):
    """A FIFO, as `--boxes <(zcat boxes.json.gz)` gives: posekit 0.1 opened it twice and waited forever."""
    fifo = tmp_path / "boxes.fifo"
    os.mkfifo(fifo)
    content = json.dumps([{"image_id": 785, "bbox": [100, 50, 80, 200]}]).encode()
    stop = threading.Event()

    def writer():
        with open(fifo, "wb") as pipe:  # waits for the reader
            pipe.write(content)
        while not stop.is_set():  # a second reader gets an empty file (an error), never a hang
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        code, stdout, stderr = predict(capsys, PHOTO, "--boxes", fifo, "--weights", checkpoint, "--out",
                                       tmp_path / "out", "--no-flip")
    finally:
        stop.set()
        thread.join(10)
    assert code == 0 and "1 images, 1 people" in stdout, stderr


def test_control_characters_in_file_names_cannot_split_or_colour_a_message(tmp_path, capsys, checkpoint):
    bad = tmp_path / "two\nlines\x1b[31m.png"
    bad.write_text("not a PNG")
    boxes = tmp_path / "boxes\r\n.json"
    boxes.write_text("[")
    code, _, stderr = predict(capsys, bad, PHOTO, "--detector", "none", "--weights", checkpoint, "--out",
                              tmp_path / "out", "--no-flip")
    assert code == 0 and "\x1b" not in stderr
    [warning] = [line for line in stderr.replace("\r", "\n").splitlines() if "lines" in line]
    assert warning.startswith(f"posekit predict: warning: {tmp_path}/two\\nlines\\x1b[31m.png: not an image file")
    code, _, stderr = predict(capsys, PHOTO, "--boxes", boxes, "--weights", checkpoint, "--out", tmp_path / "out")
    [line] = stderr.strip().splitlines()
    assert code == 1 and line.startswith(f"posekit predict: error: {tmp_path}/boxes\\r\\n.json: not readable JSON")


def test_an_empty_input_is_skipped_not_the_current_folder(tmp_path, capsys, checkpoint, monkeypatch):
    write_png(tmp_path / "unrelated.png")
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = predict(capsys, "", PHOTO, "--detector", "none", "--weights", checkpoint, "--out",
                                   tmp_path / "out", "--no-flip")
    assert code == 0 and "1 images" in stdout
    assert "posekit predict: warning: an empty input (an unset variable?); skipped" in stderr
    code, _, stderr = predict(capsys, "", "--detector", "none", "--weights", checkpoint, "--out", tmp_path / "out")
    assert code == 1 and error_lines(stderr)[0].startswith("posekit predict: error: no images found")


def test_devices_and_fifos_as_image_inputs_are_skipped_without_blocking(tmp_path, capsys, checkpoint):
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_image(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_image("/dev/zero")  # would never end
    code, stdout, stderr = predict(capsys, fifo, "/dev/zero", PHOTO, "--detector", "none", "--weights", checkpoint,
                                   "--out", tmp_path / "out", "--no-flip")
    assert code == 0 and "1 images" in stdout
    for name in (fifo, "/dev/zero"):
        assert f"posekit predict: warning: {name}: not a regular file (a FIFO, device or socket)" in stderr


finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([5e-324, 1e-310, 1e-45, 1e-40, 1e-300, 1e-4, 1e-3, 1e300, -0.0]),
)


@settings(max_examples=60, deadline=None, database=None)
@given(boxes=st.lists(st.tuples(finite_or_not, finite_or_not, finite_or_not, finite_or_not), min_size=1, max_size=4))
def test_any_float_boxes_give_finite_keypoints_or_a_warning_never_an_exception(estimator, boxes):
    image = smooth_rgb(40, 30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        people = estimator.estimate(image, np.array(boxes, dtype=np.float64), name="fuzz.jpg")
    dropped = len(boxes) - len(people)
    assert (dropped > 0) == any("fuzz.jpg (40x30): skipped" in str(w.message) for w in caught)
    for person in people:
        assert np.isfinite(person.keypoints).all() and (person.box[2:] >= 1e-3).all()
        assert (person.box[:2] >= 0).all() and person.box[0] + person.box[2] <= 40 + 1e-3


@pytest.mark.parametrize("side", [5e-324, 1e-310, 1e-40, 1e-300])
def test_subnormal_box_sizes_in_a_boxes_file_are_a_warning(tmp_path, capsys, checkpoint, side):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 785, "bbox": [10, 10, side, side]},
                                 {"image_id": 785, "bbox": [100, 50, 80, 200]}]))
    code, stdout, stderr = predict(capsys, PHOTO, "--boxes", boxes, "--weights", checkpoint, "--out", tmp_path / "out",
                                   "--no-flip")
    assert code == 0 and "1 images, 1 people" in stdout, stderr
    [warning] = warning_lines(stderr)
    assert "skipped 1 person box(es) that are not finite, have no area (a side under 0.001 px" in warning


# ------------------------------------------------------------------------------------ clear errors: eval, CLI numbers


def coco_root(tmp_path: Path, change=None) -> Path:
    """A COCO layout of the bundled sample, its annotation file changed by ``change``."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    for image in SAMPLE.glob("*.jpg"):
        (root / "val2017" / image.name).symlink_to(image)
    data = json.loads(ANNOTATIONS.read_text())
    if change:
        change(data, root)
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(data))
    return root


def run_eval(capsys, root, checkpoint, *extra) -> tuple[int, str]:
    code = main(["eval", "--coco-root", str(root), "--weights", str(checkpoint), "--no-flip", *map(str, extra)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "where, field, value, expected",
    [
        ("images", "id", "785", "a whole number"),
        ("images", "file_name", 785, "a non-empty string"),
        ("images", "width", "640", "a whole number > 0"),
        ("images", "height", -1, "a whole number > 0"),
        ("annotations", "image_id", [785], "a whole number"),
        ("annotations", "bbox", "1,2,3,4", "4 numbers [x, y, w, h], all finite"),
        ("annotations", "bbox", [1, 2, 3, None], "4 numbers [x, y, w, h], all finite"),
        ("annotations", "keypoints", {"nose": [1, 2]}, "51 numbers (x, y, v per joint), all finite"),
        ("annotations", "iscrowd", "no", "0 or 1"),
        ("annotations", "area", None, "a finite number"),
        ("annotations", "category_id", 1.5, "a whole number"),
        ("annotations", "num_keypoints", True, "a whole number"),
    ],
)
def test_eval_annotation_fields_of_the_wrong_type_are_one_line(tmp_path, capsys, checkpoint, where, field, value,
                                                               expected):
    def change(data, root):
        data[where][1][field] = value

    root = coco_root(tmp_path, change)
    code, stderr = run_eval(capsys, root, checkpoint, "--workers", 0)
    ann_file = root / "annotations" / "person_keypoints_val2017.json"
    assert code == 1 and error_lines(stderr) == [
        f"posekit eval: error: {ann_file}: {where}[1].{field} is {type(value).__name__} {value!r}; expected {expected}"
    ], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("categories", ["person", [{"id": "1", "name": "person"}], [7]])
def test_eval_categories_of_the_wrong_type_are_one_line(tmp_path, capsys, checkpoint, categories):
    def change(data, root):
        data["categories"] = categories

    root = coco_root(tmp_path, change)
    code, stderr = run_eval(capsys, root, checkpoint, "--workers", 0)
    [line] = error_lines(stderr)
    assert code == 1 and line.startswith(
        f"posekit eval: error: {root / 'annotations' / 'person_keypoints_val2017.json'}: categories")
    assert "Traceback" not in stderr


def test_eval_with_a_missing_image_is_one_line_before_any_worker_starts(tmp_path, capsys, checkpoint):
    root = coco_root(tmp_path, lambda data, root: (root / "val2017" / "000000040083.jpg").unlink())
    code, stderr = run_eval(capsys, root, checkpoint, "--workers", 2)
    assert code == 1 and error_lines(stderr) == [
        f"posekit eval: error: {root / 'val2017'}: 1 image(s) that {root / 'annotations' / 'person_keypoints_val2017.json'}"
        " lists are missing (000000040083.jpg); expected the images of that annotation file in that folder"
    ]


def test_eval_with_a_corrupt_image_read_by_a_worker_is_one_line(tmp_path, capsys, checkpoint):
    def corrupt(data, root):
        (root / "val2017" / "000000040083.jpg").unlink()
        (root / "val2017" / "000000040083.jpg").write_bytes((SAMPLE / "000000040083.jpg").read_bytes()[:2000])

    root = coco_root(tmp_path, corrupt)
    code, stderr = run_eval(capsys, root, checkpoint, "--workers", 1)
    [line] = error_lines(stderr)
    assert code == 1 and line.startswith(f"posekit eval: error: {root / 'val2017' / '000000040083.jpg'}: truncated")
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--coco-root", "x", "--max-batch", "0"], "argument --max-batch: '0': expected a whole number >= 1"),
        (["eval", "--coco-root", "x", "--workers", "-1"], "argument --workers: '-1': expected a whole number >= 0"),
        (["eval", "--coco-root", "x", "--limit", "0"], "argument --limit: '0': expected a whole number >= 1"),
        (["eval", "--coco-root", "x", "--max-batch", "2.5"], "argument --max-batch: '2.5': expected a whole number"),
        (["bench", "--input", "0x0"], "argument --input: '0x0': expected HEIGHTxWIDTH in pixels, such as 256x192"),
        (["bench", "--input", "256x-192"], "argument --input: '256x-192': expected HEIGHTxWIDTH"),
        (["bench", "--batches", "0"], "argument --batches: '0': expected a whole number >= 1"),
        (["bench", "--max-batch", "-3"], "argument --max-batch: '-3': expected a whole number >= 1"),
        (["bench", "--repeats", "0"], "argument --repeats: '0': expected a whole number >= 1"),
    ],
)
def test_numbers_out_of_range_are_refused_by_the_argument_parser(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    stderr = capsys.readouterr().err
    [line] = error_lines(stderr)
    assert exited.value.code == 2 and line.startswith(f"posekit {argv[0]}: error: {message}")


# ------------------------------------------------------------------------------------ clear errors: devices, Python API


@pytest.mark.parametrize("device", ["xpu", "hpu", "meta", "cuda:abc", "vulkan", "privateuseone", None, 3.5, "cuda:-1"])
def test_devices_torch_knows_but_posekit_cannot_use_are_one_posekit_error(device):
    from posekit.core.device import resolve_device

    if device == "xpu" and getattr(torch, "xpu", None) is not None and torch.xpu.is_available():
        pytest.skip("this machine has an XPU")
    with pytest.raises(PosekitError) as error:
        resolve_device(device)
    message = str(error.value)
    assert "\n" not in message and ("use device cpu" in message or "expected auto, cpu" in message)


def test_a_device_without_a_backend_on_the_command_line_is_one_line(tmp_path, capsys, checkpoint):
    out = tmp_path / "out"
    for device in ("meta", "hpu"):
        code, _, stderr = predict(capsys, PHOTO, "--detector", "none", "--weights", checkpoint, "--device", device,
                                  "--out", out)
        [line] = stderr.strip().splitlines()
        assert code == 1 and line.startswith(f"posekit predict: error: device {device} ")
    assert not out.exists()


@pytest.mark.parametrize(
    "source, error, message",
    [
        (b"\xff\xd8\xff", ArgumentError, r"image of type bytes: expected a file path .*PIL.Image.open\(io.BytesIO"),
        (torch.zeros(3, 30, 40, dtype=torch.uint8), ArgumentError, r"image of type Tensor: .*permute\(1, 2, 0\)"),
        (None, ArgumentError, "image of type NoneType: expected a file path"),
        (42, ArgumentError, "image of type int: expected a file path"),
        (np.zeros((30, 40), complex), ImageReadError, "image array of dtype complex128: expected numbers"),
        (np.zeros((30, 40, 3), object), ImageReadError, "image array of dtype object: expected numbers"),
        (np.array(["a", "b"]), ImageReadError, "dtype <U1"),
    ],
    ids=["bytes", "tensor", "none", "int", "complex", "object", "strings"],
)
def test_python_api_images_of_the_wrong_kind_say_what_is_accepted(estimator, source, error, message):
    with pytest.raises(error, match=message):
        estimator(source)
    with pytest.raises(PosekitError, match=message):
        load_image(source)


@pytest.mark.parametrize("max_batch", [2.5, True, "8", None, 0, -1])
def test_max_batch_of_the_wrong_kind_is_an_argument_error(max_batch):
    with pytest.raises(ArgumentError, match=r"max_batch must be a whole number >= 1 \(people per network call\)"):
        PoseEstimator(None, depth=18, device="cpu", max_batch=max_batch)
    assert PoseEstimator(None, depth=18, device="cpu", max_batch=np.int64(3)).max_batch == 3


@pytest.mark.parametrize("argument, value", [("batch_size", 0), ("batch_size", 2.0), ("num_workers", -1),
                                             ("num_workers", None)])
def test_evaluate_batch_size_and_workers_of_the_wrong_kind_are_argument_errors(argument, value):
    dataset = coco.CocoPersonDataset(ANNOTATIONS, SAMPLE)
    with pytest.raises(ArgumentError, match=f"{argument} must be a whole number >= "):
        coco.evaluate(lambda crops: crops, dataset, **{argument: value})


@pytest.mark.parametrize("pose_weights", [123, b"pose_resnet_50_256x192", {"conv1.weight": 0}])
def test_pose_weights_of_the_wrong_kind_is_an_argument_error(pose_weights):
    with pytest.raises(ArgumentError, match="expected a registered name .*, a checkpoint path .*, or None"):
        PoseEstimator(pose_weights, device="cpu")


def test_channels_other_than_rgb_or_bgr_is_an_argument_error():
    with pytest.raises(ArgumentError, match="channels must be 'rgb' or 'bgr', got 'RGB '"):
        load_image(smooth_rgb(4, 4), channels="RGB ")


# ------------------------------------------------------------------------------------ scale


def test_grouping_a_large_detections_file_matches_a_plain_grouping(tmp_path):
    """100k entries over 5000 images: the linear grouping gives what a dictionary of lists gives."""
    from posekit.models.detect import read_boxes_file

    rng = np.random.default_rng(0)
    image_ids = rng.integers(0, 5000, 100_000)
    bboxes = rng.uniform(0, 600, (100_000, 4)).round(2)
    scores = rng.uniform(0, 1, 100_000).round(3)
    categories = np.where(rng.uniform(size=100_000) < 0.1, 2, 1)
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([
        {"image_id": int(i), "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
        for i, c, b, s in zip(image_ids, categories, bboxes, scores)
    ]))
    by_image, _ = read_boxes_file(path)
    expected: dict[int, list[int]] = {}
    for row, (image_id, category) in enumerate(zip(image_ids.tolist(), categories.tolist())):
        if category == 1:
            expected.setdefault(image_id, []).append(row)
    assert list(by_image) == list(expected)  # images in order of first appearance
    for image_id, rows in expected.items():
        np.testing.assert_array_equal(by_image[image_id][0], bboxes[rows])
        np.testing.assert_array_equal(by_image[image_id][1], scores[rows])


def test_the_summary_time_includes_reading_the_boxes(tmp_path, capsys, checkpoint, monkeypatch):
    """posekit 0.1 started its clock after reading --boxes: minutes of reading showed as under a second."""
    from posekit.models import detect

    real = detect.read_boxes_file

    def slow(path):
        time.sleep(1.0)
        return real(path)

    monkeypatch.setattr(detect, "read_boxes_file", slow)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 785, "bbox": [100, 50, 80, 200]}]))
    code, stdout, _ = predict(capsys, PHOTO, "--boxes", boxes, "--weights", checkpoint, "--out", tmp_path / "out",
                              "--no-flip")
    match = re.search(r"1 people in ([\d.]+) s \(([\d.]+) s reading the inputs and loading the networks", stdout)
    assert code == 0 and match, stdout
    assert float(match.group(1)) >= 1.0 and float(match.group(2)) >= 1.0
