"""posekit.widgets: the picker redraws on image/threshold changes and runs the estimator once per image."""
from __future__ import annotations

import io
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from posekit.core.coco17 import KEYPOINT_NAMES  # noqa: E402
from posekit.demo import UNTRAINED_TITLE  # noqa: E402
from posekit.errors import PosekitError  # noqa: E402
from posekit.poses import Poses  # noqa: E402
from posekit.widgets import NO_FRONTEND_MESSAGE, NO_WIDGETS_MESSAGE, image_picker  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample"
COCO = json.loads((SAMPLE / "test_coco.json").read_text())
# The four sample images differ in size, so the fake estimator recognises an image by its shape.
BY_SHAPE = {(info["height"], info["width"]): info["id"] for info in COCO["images"]}
PATHS = {info["file_name"]: SAMPLE / info["file_name"] for info in COCO["images"]}
FIRST, SECOND = list(PATHS)[:2]
# Labelled joints get scores spread over (0, 1) so that the threshold slider changes what is shown.
JOINT_SCORES = np.linspace(0.05, 0.95, 17)


def _people(image_id: int) -> Poses:
    annotations = [a for a in COCO["annotations"] if a["image_id"] == image_id]
    keypoints = np.array([a["keypoints"] for a in annotations], dtype=np.float32).reshape(-1, 17, 3)
    keypoints[..., 2] = np.where(keypoints[..., 2] > 0, JOINT_SCORES, 0.0)
    boxes = np.array([a["bbox"] for a in annotations], dtype=np.float32).reshape(-1, 4)
    return Poses(boxes, np.ones(len(boxes), np.float32), keypoints)


class FakeEstimator:
    """Returns the annotated people of a sample image (one person per given box otherwise); records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.boxes: list = []

    def __call__(self, image, boxes=None):
        # As PoseEstimator called with one image: its Poses.
        assert isinstance(image, np.ndarray) and image.ndim == 3
        self.calls.append(image.shape)
        self.boxes.append(boxes)
        if boxes is not None:
            boxes = np.asarray(boxes, np.float32)
            assert boxes.ndim == 2 and boxes.shape[1] == 4
            return Poses(boxes, np.ones(len(boxes), np.float32), np.full((len(boxes), 17, 3), 0.5, np.float32))
        return _people(BY_SHAPE.get(image.shape[:2], -1))


class FakeHeatmapEstimator(FakeEstimator):
    def __init__(self) -> None:
        super().__init__()
        self.heatmap_boxes: list[np.ndarray] = []

    def estimate_heatmaps(self, image, boxes_xywh):
        self.heatmap_boxes.append(boxes_xywh)
        heatmaps = np.zeros((len(boxes_xywh), 17, 64, 48), np.float32)
        heatmaps[:, :, 32, 24] = 1.0
        return np.zeros((len(boxes_xywh), 256, 192, 3), np.uint8), heatmaps


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _shown_joints(picker) -> int:
    (joints,) = [c for c in picker.figure.axes[0].collections if c.get_label() == "joints"]
    return len(joints.get_offsets())


def _expected_joints(file_name: str, threshold: float) -> int:
    image_id = next(i["id"] for i in COCO["images"] if i["file_name"] == file_name)
    return int((_people(image_id).keypoints[..., 2] >= threshold).sum())


def _png_bytes(mode: str, size: tuple[int, int], colour) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_first_image_is_estimated_and_drawn_on_creation():
    estimator = FakeEstimator()
    picker = image_picker(PATHS, estimator, score_threshold=0.3)
    assert picker.dropdown.options == tuple(PATHS)
    assert estimator.calls == [(425, 640, 3)]
    assert picker.redraw_count == 1
    assert bytes(picker.image.value).startswith(b"\x89PNG")
    assert _shown_joints(picker) == _expected_joints(FIRST, 0.3)
    assert picker.caption.value.startswith(f"<b>{FIRST}</b>: 1 person,")
    assert f"{_expected_joints(FIRST, 0.3)} joints drawn (score &ge; 0.30)" in picker.caption.value


def test_threshold_change_redraws_without_running_the_estimator():
    estimator = FakeEstimator()
    picker = image_picker(PATHS, estimator, score_threshold=0.3)
    before = bytes(picker.image.value)

    picker.slider.value = 0.7
    assert estimator.calls == [(425, 640, 3)]
    assert picker.redraw_count == 2
    assert _shown_joints(picker) == _expected_joints(FIRST, 0.7) < _expected_joints(FIRST, 0.3)
    assert bytes(picker.image.value) != before
    assert f"{_expected_joints(FIRST, 0.7)} joints drawn (score &ge; 0.70)" in picker.caption.value


def test_image_change_runs_the_estimator_once_per_image():
    estimator = FakeEstimator()
    picker = image_picker(PATHS, estimator)

    picker.dropdown.value = SECOND
    assert estimator.calls == [(425, 640, 3), (333, 500, 3)]
    assert picker.redraw_count == 2
    assert picker.figure.axes[0].images[0].get_array().shape == (333, 500, 3)
    assert _shown_joints(picker) == _expected_joints(SECOND, 0.3)

    picker.dropdown.value = FIRST  # cached: redraw only
    picker.slider.value = 0.5
    assert len(estimator.calls) == 2
    assert picker.redraw_count == 4
    assert _shown_joints(picker) == _expected_joints(FIRST, 0.5)


def test_heatmap_toggle_shows_the_first_person_and_caches_it():
    estimator = FakeHeatmapEstimator()
    picker = image_picker(PATHS, estimator)
    assert picker.heatmap_image.layout.display == "none"

    picker.toggle.value = True
    assert [ax.get_title() for ax in picker.heatmap_figure.axes] == list(KEYPOINT_NAMES)
    assert picker.heatmap_image.layout.display is None and bytes(picker.heatmap_image.value).startswith(b"\x89PNG")
    first_box = next(a["bbox"] for a in COCO["annotations"] if a["image_id"] == 785)
    np.testing.assert_allclose(estimator.heatmap_boxes[0], [first_box], rtol=1e-6)  # Poses hold float32

    picker.toggle.value = False
    assert picker.heatmap_image.layout.display == "none"
    picker.toggle.value = True
    picker.slider.value = 0.6
    assert len(estimator.heatmap_boxes) == 1 and len(estimator.calls) == 1

    picker.dropdown.value = SECOND  # the toggle stays on: the new image's heatmaps follow
    assert len(estimator.heatmap_boxes) == 2


def test_heatmap_toggle_without_heatmaps_says_so():
    picker = image_picker(PATHS, FakeEstimator())
    picker.toggle.value = True
    assert "does not expose heatmaps" in picker.message.value
    assert picker.heatmap_image.layout.display == "none"
    assert picker.redraw_count == 1


def test_heatmap_toggle_on_an_image_without_people_says_so():
    picker = image_picker({"empty": np.zeros((40, 30, 3), np.uint8)}, FakeHeatmapEstimator())
    picker.toggle.value = True
    assert "No person in empty: no heatmaps to show." in picker.message.value
    assert picker.caption.value.startswith("<b>empty</b>: 0 people, 0 joints drawn")


def test_upload_adds_an_rgb_image_and_selects_it():
    estimator = FakeEstimator()
    picker = image_picker(PATHS, estimator)
    content = _png_bytes("RGBA", (33, 21), (10, 200, 30, 255))  # four channels in, three out
    picker.upload.value = ({"name": "mine.png", "type": "image/png", "size": len(content),
                            "content": memoryview(content), "last_modified": datetime.now(timezone.utc)},)

    assert picker.dropdown.options == (*PATHS, "mine.png")
    assert picker.dropdown.value == "mine.png"
    assert estimator.calls == [(425, 640, 3), (21, 33, 3)]  # not re-run on the first image in between
    shown = picker.figure.axes[0].images[0].get_array()
    assert shown.dtype == np.uint8 and (shown == [10, 200, 30]).all()
    assert picker.message.value == ""


def test_upload_of_a_broken_file_names_it_and_keeps_the_picker():
    picker = image_picker(PATHS, FakeEstimator())
    picker.upload.value = ({"name": "notes.txt", "type": "text/plain", "size": 5,
                            "content": memoryview(b"hello"), "last_modified": datetime.now(timezone.utc)},)
    assert "uploaded file &#x27;notes.txt&#x27; is not an image; expected a JPEG, PNG" in picker.message.value
    assert "BytesIO" not in picker.message.value and " at 0x" not in picker.message.value
    assert picker.dropdown.options == tuple(PATHS) and picker.dropdown.value == FIRST


def test_add_images_takes_files_as_colab_uploads_them():
    estimator = FakeEstimator()
    picker = image_picker(PATHS, estimator)
    picker.add_images({"a.png": _png_bytes("RGB", (20, 10), (1, 2, 3)), "b.bin": b"\x00\x01"})
    assert picker.dropdown.value == "a.png" and estimator.calls[-1] == (10, 20, 3)
    assert "&#x27;b.bin&#x27; is not an image" in picker.message.value


def test_missing_file_is_reported_in_the_picker(tmp_path):
    picker = image_picker([PATHS[FIRST], tmp_path / "gone.jpg"], FakeEstimator())
    assert picker.dropdown.options == (FIRST, "gone.jpg")
    picker.dropdown.value = "gone.jpg"
    assert f"{tmp_path / 'gone.jpg'}: no such file" in picker.message.value
    picker.slider.value = 0.5  # the threshold callback reports the same instead of raising
    assert f"{tmp_path / 'gone.jpg'}: no such file" in picker.message.value


def test_random_weights_are_not_called_a_prediction():
    estimator = FakeHeatmapEstimator()
    estimator.pretrained = False
    picker = image_picker(PATHS, estimator)
    assert "random weights: not a prediction" in picker.caption.value
    assert [t.get_text() for t in picker.figure.axes[0].texts] == [UNTRAINED_TITLE]  # on the picture itself
    picker.toggle.value = True
    assert picker.heatmap_figure.get_suptitle() == UNTRAINED_TITLE


def test_given_boxes_are_used_and_named_in_the_caption():
    estimator = FakeEstimator()
    estimator.detector = None
    boxes = np.array([[10.0, 20.0, 30.0, 40.0], [50.0, 60.0, 20.0, 30.0]])
    picker = image_picker(PATHS, estimator, boxes={SECOND: boxes})
    # Without a detector or given boxes the estimator takes the whole image: the caption says so.
    assert estimator.boxes == [None]
    assert "1 person (no detector, so the whole image is taken as one person)" in picker.caption.value
    picker.dropdown.value = SECOND
    np.testing.assert_array_equal(estimator.boxes[1], boxes)
    assert picker.caption.value.startswith(f"<b>{SECOND}</b>: 2 people (in the given boxes), 34 joints drawn")
    estimator.detector = object()
    picker.dropdown.value = list(PATHS)[2]
    assert "(found by the detector)" in picker.caption.value


@pytest.mark.parametrize(
    ("images", "estimator", "message"),
    [
        ({}, FakeEstimator(), "images is empty"),
        ([SAMPLE / FIRST, SAMPLE / "sub" / FIRST], FakeEstimator(), "repeated file names"),
        (PATHS, object(), "estimator must be callable"),
    ],
)
def test_bad_arguments_are_named(images, estimator, message):
    with pytest.raises(PosekitError, match=message):
        image_picker(images, estimator)


def test_boxes_for_an_unknown_image_are_named():
    with pytest.raises(PosekitError, match=r"boxes are given for \['other.jpg'\], which are not among the images"):
        image_picker(PATHS, FakeEstimator(), boxes={"other.jpg": np.zeros((0, 4))})


def test_front_ends_without_widgets_get_a_sentence():
    bundle = image_picker(PATHS, FakeEstimator())._repr_mimebundle_()
    assert bundle["text/plain"] == NO_FRONTEND_MESSAGE
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_missing_ipywidgets_prints_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` raise ImportError
    estimator = FakeEstimator()
    assert image_picker(PATHS, estimator) is None
    assert capsys.readouterr().out.strip() == NO_WIDGETS_MESSAGE
    assert estimator.calls == []


def test_with_a_real_estimator_given_boxes_and_uploads_without_boxes_both_run():
    from posekit.estimator import PoseEstimator

    estimator = PoseEstimator(None, device="cpu", depth=18, flip_test=False)
    boxes = np.array([[10.0, 10.0, 60.0, 120.0], [100.0, 20.0, 50.0, 100.0]])
    image = np.full((160, 200, 3), 90, np.uint8)
    picker = image_picker({"two": image}, estimator, score_threshold=0.0, boxes={"two": boxes})
    assert picker.caption.value.startswith("<b>two</b>: 2 people (in the given boxes)")
    # The joints drawn are the estimator's own for those boxes, all people's, above the threshold.
    keypoints = estimator(image, boxes).keypoints
    (joints,) = [c for c in picker.figure.axes[0].collections if c.get_label() == "joints"]
    assert len(joints.get_offsets()) > 0
    np.testing.assert_allclose(joints.get_offsets(), keypoints[keypoints[..., 2] >= 0.0][:, :2], atol=1e-4)
    picker.add_images({"mine.png": _png_bytes("RGB", (64, 48), (200, 10, 10))})
    assert picker.message.value == ""
    assert "1 person (no detector, so the whole image is taken as one person)" in picker.caption.value
    assert "random weights: not a prediction" in picker.caption.value
