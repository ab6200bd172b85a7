"""What users actually feed posekit, through the public API and the CLI, all at once.

The per-module tests check each reader's message on its own (test_images, test_detect,
test_weights, test_coco); this file checks the guarantees that cut across them:

- every bad input ends in a posekit.errors.* exception or one warning that names the input,
  never a traceback from deep inside PIL or torch;
- the other inputs are still processed, and the exit code says whether anything was;
- no output file is ever half-written, whatever fails and when (files via atomic_write);
- output files of same-named inputs do not overwrite each other.

Random weights throughout: a depth-18 network with 64x48 crops, registered for the module so the
CLI picks it up by its file name as it does a release file; tiny images.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import os
import shutil
import stat
import threading
import warnings
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
import torch
from PIL import Image

from posekit import coco, viz, weights
from synthetic_coco import make_synthetic_coco
from posekit.cli import main
from posekit.crop import box_to_center_scale, crop_batch
from posekit.errors import CheckpointError, DownloadError, ImageReadError, PosekitError
from posekit.estimator import PoseEstimator
from posekit.files import atomic_write
from posekit.images import load_image
from posekit.model import pose_resnet

SAMPLE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample"
PHOTO = SAMPLE / "000000000785.jpg"
ANNOTATIONS = SAMPLE / "test_coco.json"


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Random depth-18 weights in a file named like a registry entry with 64x48 input (1/16 of 256x192's pixels)."""
    entry = dataclasses.replace(
        weights.get_weights(weights.DEFAULT_WEIGHTS), name="pose_resnet_18_64x48_test", depth=18, input_size=(48, 64),
        filename="pose_resnet_18_64x48_test.pth",
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / entry.filename
    torch.save(pose_resnet(18).state_dict(), path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(weights.WEIGHTS, entry.name, entry)
        yield path


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
    from posekit.cli import _output_stems

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
        ("[{\"image_id\": 785, \"bbox\": [1, 2, 3]}]", "entry #0"),
        ("[{\"image_id\": \"785\", \"bbox\": [1, 2, 3, 4]}]", "'image_id' must be an integer"),
        ("{\"images\": [{\"id\": 785}], \"annotations\": [{\"image_id\": 785, \"category_id\": 1}]}", "'bbox'"),
        ("{\"images\": 785, \"annotations\": []}", "'images' must be a list"),
        ("{\"images\": [\"000000000785.jpg\"], \"annotations\": []}", "'images' must be a list"),
    ],
    ids=["not-json", "wrong-top-level", "short-bbox", "string-id", "annotation-without-bbox", "images-not-a-list",
         "images-not-objects"],
)
def test_wrong_boxes_file_exits_1_in_one_line_before_writing_anything(tmp_path, capsys, checkpoint, content, named):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(content)
    out = tmp_path / "out"
    code, _, stderr = predict(capsys, PHOTO, "--boxes", boxes, "--weights", checkpoint, "--out", out)
    assert code == 1
    [line] = stderr.strip().splitlines()
    assert line.startswith(f"posekit predict: error: {boxes}") and named in line
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


def test_interrupt_while_writing_an_image_leaves_only_complete_files(tmp_path, capsys, checkpoint, monkeypatch):
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(smooth_rgb(40, 30)).save(tmp_path / name)
    real_savefig = matplotlib.figure.Figure.savefig
    calls = []

    def interrupted_on_the_second(figure, file, **kwargs):
        calls.append(file)
        if len(calls) == 2:
            file.write(b"\xff\xd8\xff\xe0 half a JPEG")
            raise KeyboardInterrupt
        return real_savefig(figure, file, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupted_on_the_second)
    out = tmp_path / "out"
    code, _, stderr = predict(capsys, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", "--detector", "none",
                              "--weights", checkpoint, "--out", out, "--no-flip")
    assert code == 130 and "interrupted" in stderr
    assert [p.name for p in out.iterdir()] == ["a_pose.jpg"]  # b's half file is gone; c and the JSON never started
    with Image.open(out / "a_pose.jpg") as complete:
        complete.verify()


def test_failing_results_write_keeps_the_previous_results(tmp_path, capsys, checkpoint, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("[\"previous run\"]")

    def disk_full(results, file, **kwargs):
        file.write("[{\"image_id\": 785, \"keyp")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", disk_full)
    assert main(["predict", str(PHOTO), "--detector", "none", "--weights", str(checkpoint), "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip().endswith("error: [Errno 28] No space left on device")
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
    assert code == 1 and f"cannot write {folder_in_the_way}" in stderr and "Traceback" not in stderr
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
    with pytest.raises(PosekitError, match="max_batch must be at least 1"):
        PoseEstimator(None, depth=18, max_batch=0)


def test_a_sha256_shorter_than_8_digits_is_refused(tmp_path):
    from posekit import hub

    with pytest.raises(ValueError, match="at least its first 8 digits"):
        hub.download_url("http://127.0.0.1:1/x.pth", tmp_path / "x.pth", sha256="", progress=False)


def test_a_detector_checkpoint_that_is_no_checkpoint_is_one_checkpoint_error(tmp_path):
    from posekit.detect import PersonDetector

    for content in (b"not a checkpoint at all", PHOTO.read_bytes()[:5000]):
        path = tmp_path / "detector.pth"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="not a fasterrcnn_mobilenet_v3_large_fpn checkpoint"):
            PersonDetector("fasterrcnn_mobilenet_v3_large_fpn", checkpoint=path)
