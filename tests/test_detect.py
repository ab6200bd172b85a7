"""PersonDetector (random weights, no download) and load_detections' schema checks."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.errors import CheckpointError, DetectionsFormatError, DownloadError
from posekit.io.images import load_image
from posekit.models import detect
from posekit.models.detect import PersonDetector, load_detections

SAMPLE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample"
FAST = "fasterrcnn_mobilenet_v3_large_fpn"
SSD = "ssdlite320_mobilenet_v3_large"


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    """A state_dict of the fast detector with random weights, under torchvision's file name."""
    spec = detect.DETECTORS[FAST]
    torch.manual_seed(0)
    model = spec.builder(weights=None, weights_backbone=None, num_classes=spec.num_classes)
    path = tmp_path_factory.mktemp("torch") / "checkpoints" / spec.url.rsplit("/", 1)[-1]
    path.parent.mkdir()
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty posekit and torch caches, and the detector URL on a closed local port."""
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "posekit"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    spec = detect.DETECTORS[FAST]
    closed = "http://127.0.0.1:9/" + spec.url.rsplit("/", 1)[-1]
    monkeypatch.setitem(detect.DETECTORS, FAST, dataclasses.replace(spec, url=closed))


def test_random_detector_returns_boxes_and_scores_per_image(random_checkpoint):
    detector = PersonDetector(FAST, score_threshold=0.0, device="cpu", checkpoint=random_checkpoint)
    images = [load_image(SAMPLE / "000000040083.jpg"), np.zeros((60, 90, 3), np.uint8)]
    out = detector(images)
    assert len(out) == 2
    for boxes, scores in out:
        assert boxes.dtype == np.float32 and scores.dtype == np.float32
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and scores.shape == (len(boxes),)
    assert detector([]) == []


class _FakeNetwork(torch.nn.Module):
    """Answers with fixed torchvision-style detections and records what it was given."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.seen = images
        answer = {
            "boxes": torch.tensor([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 5.0, 5.0], [30.0, 40.0, 35.0, 60.0]]),
            "labels": torch.tensor([1, 3, 1]),  # 3 = car
            "scores": torch.tensor([0.9, 0.99, 0.3]),
        }
        return [answer for _ in images]


def test_only_confident_persons_are_kept_as_xywh(random_checkpoint):
    detector = PersonDetector(FAST, score_threshold=0.5, device="cpu", checkpoint=random_checkpoint)
    detector.model = _FakeNetwork()
    image = np.full((40, 30, 3), 255, np.uint8)
    image[0, 0] = (0, 128, 255)
    [(boxes, scores), second] = detector([image, image])
    np.testing.assert_allclose(boxes, [[10, 20, 40, 80]])
    np.testing.assert_allclose(scores, [0.9])
    # One batched call with RGB float tensors (3, H, W) in 0..1.
    assert len(detector.model.seen) == 2
    tensor = detector.model.seen[0]
    assert tensor.shape == (3, 40, 30) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), [0, 128 / 255, 1])
    np.testing.assert_allclose(second[0], boxes)


def _spread_random_ssd(path: Path) -> torch.nn.Module:
    """SSDlite with random weights whose class scores spread (by default every class scores about 1/91)."""
    spec = detect.DETECTORS[SSD]
    torch.manual_seed(0)
    model = spec.builder(weights=None, weights_backbone=None, num_classes=spec.num_classes)
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.normal_(0, 0.02)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.fill_(0.01)
    torch.save(model.state_dict(), path)
    return model.eval()


def test_detector_keeps_the_people_torchvision_finds_over_the_threshold(tmp_path):
    """The post-processing threshold moved up to ours, and SSD's backbone and head in ONNX Runtime, find the
    same people, at the same places and scores, as torchvision's own forward with no threshold.
    (A random Faster R-CNN gives every proposal the same features, hence no spread of scores to test with.)"""
    path = tmp_path / "detector.pth"
    reference = _spread_random_ssd(path)
    reference.detections_per_img, reference.score_thresh = 10**6, 0.0  # every box of every class stays
    image = load_image(SAMPLE / "000000040083.jpg")
    with torch.inference_mode():
        (found,) = reference([torch.from_numpy(image).permute(2, 0, 1).float() / 255])
    people = found["labels"] == 1
    scores = np.sort(found["scores"][people].numpy())[::-1]
    # A threshold in the widest gap among the ten best people, so float rounding cannot move a person across it.
    gap = int(np.argmax(scores[:9] - scores[1:10]))
    assert scores[gap] - scores[gap + 1] > 1e-3
    threshold = float(scores[gap] + scores[gap + 1]) / 2
    detector = PersonDetector(SSD, score_threshold=threshold, device="cpu", checkpoint=path)
    detector.model.detections_per_img = 10**6
    assert detector.backend == "onnxruntime"
    [(boxes, box_scores)] = detector([image])
    keep = people & (found["scores"] >= threshold)
    expected = found["boxes"][keep].numpy()
    expected[:, 2:] -= expected[:, :2]
    assert len(boxes) == gap + 1
    np.testing.assert_allclose(box_scores, found["scores"][keep].numpy(), atol=1e-4)
    np.testing.assert_allclose(boxes, expected, atol=0.05)


def test_torchvision_cached_copy_is_used_without_network(offline, monkeypatch, random_checkpoint):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(random_checkpoint.parents[1]))
    assert detect.detector_checkpoint_path(FAST) == random_checkpoint
    assert PersonDetector(FAST, device="cpu").name == FAST


def test_offline_download_raises_one_sentence(offline, tmp_path):
    with pytest.raises(DownloadError) as error:
        PersonDetector(FAST, device="cpu")
    message = str(error.value)
    assert FAST in message and str(tmp_path / "posekit" / "checkpoints") in message
    # The way out is worded for where the error is read: Python here, the flag on the command line.
    assert message.endswith("pass the person boxes yourself, as estimator(images, boxes)")
    assert error.value.for_cli().endswith(
        "give person boxes with --boxes FILE, or pass --detector none to take the whole image as one person")
    assert "\n" not in message
    assert not list((tmp_path / "posekit" / "checkpoints").glob("*.pth"))


def test_unknown_detector_and_wrong_checkpoint(tmp_path, random_checkpoint):
    with pytest.raises(CheckpointError, match="fasterrcnn_resnet50_fpn_v2"):
        PersonDetector("yolo")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth"):
        PersonDetector(FAST, checkpoint=tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="fasterrcnn_resnet50_fpn_v2 checkpoint"):
        PersonDetector("fasterrcnn_resnet50_fpn_v2", checkpoint=random_checkpoint)


def test_load_detections_groups_the_bundled_file_by_image():
    path = SAMPLE / "test_coco_det_AP_H_56.json"
    entries = json.loads(path.read_text())
    grouped = load_detections(path)
    assert sorted(grouped) == sorted({e["image_id"] for e in entries})
    for image_id, (boxes, scores) in grouped.items():
        mine = [e for e in entries if e["image_id"] == image_id and e["category_id"] == 1]
        # The JSON values exactly: centers and scales must round as in the paper's code.
        np.testing.assert_array_equal(boxes, [e["bbox"] for e in mine])
        np.testing.assert_array_equal(scores, [e["score"] for e in mine])
        assert boxes.dtype == np.float64 and scores.dtype == np.float64
    assert load_detections(entries).keys() == grouped.keys()


def test_load_detections_reads_annotation_boxes_and_skips_other_categories():
    coco = json.loads((SAMPLE / "test_coco.json").read_text())
    grouped = load_detections(coco)
    assert sum(len(s) for _, s in grouped.values()) == len(coco["annotations"]) == 14
    np.testing.assert_array_equal(np.concatenate([s for _, s in grouped.values()]), 1.0)
    car = {"image_id": 7, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.9}
    person = {"image_id": 7, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
    only = load_detections([car, person])
    np.testing.assert_array_equal(only[7][0], [[1, 2, 3, 4]])
    assert load_detections([]) == {}


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"not": "a list"}', "top level is a dict"),
        ("[1, 2]", r"entries\[0\]: is a int; expected an object with image_id, bbox"),
        ('[{"image_id": 1, "bbox": [1, 2, 3, 4]}, {"image_id": 1, "bbox": [1, 2, 3]}]', r"entries\[1\]\.bbox is list \[1, 2, 3\]; expected 4 numbers"),
        ('[{"image_id": 1, "bbox": "1 2 3 4"}]', "4 numbers"),
        ('[{"image_id": 1.5, "bbox": [1, 2, 3, 4]}]', "image_id is float 1.5; expected a whole number from 0"),
        ('[{"image_id": 1, "bbox": [1, 2, 3, 4], "score": "high"}]', "score is str 'high'; expected a number"),
        ("[{]", "not readable JSON"),
    ],
)
def test_load_detections_names_the_file_and_bad_entry(tmp_path, content, expected):
    path = tmp_path / "dets.json"
    path.write_text(content)
    with pytest.raises(DetectionsFormatError, match=expected) as error:
        load_detections(path)
    assert str(path) in str(error.value)


def test_load_detections_missing_file_or_a_folder(tmp_path):
    with pytest.raises(DetectionsFormatError, match="nope.json: no such file; expected a JSON list"):
        load_detections(tmp_path / "nope.json")
    # A folder (IsADirectoryError) is a user mistake too, not a bare OSError.
    with pytest.raises(DetectionsFormatError, match=f"{tmp_path}: is a folder; expected a JSON list"):
        load_detections(tmp_path)
