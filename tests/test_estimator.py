"""PoseEstimator on the bundled COCO images with given boxes (random depth-18 network, no download)."""
from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posekit import weights
from posekit.crop import box_to_center_scale, crop_batch
from posekit.errors import DownloadError
from posekit.estimator import PoseEstimator
from posekit.poses import Person, Poses
from posekit.heatmaps import decode, flip_back
from posekit.images import load_image

SAMPLE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample"
COCO = json.loads((SAMPLE / "test_coco.json").read_text())
FILES = {image["id"]: SAMPLE / image["file_name"] for image in COCO["images"]}


def gt_boxes(image_id: int) -> np.ndarray:
    return np.array([a["bbox"] for a in COCO["annotations"] if a["image_id"] == image_id], np.float64)


@pytest.fixture(scope="module")
def estimator() -> PoseEstimator:
    torch.manual_seed(0)
    model = PoseEstimator(None, depth=18, device="cpu")
    # Variance-keeping head weights instead of the paper's near-zero init, so the heatmaps have
    # distinct, input-dependent peaks to decode.
    for module in model.model.deconv_layers:
        if isinstance(module, torch.nn.ConvTranspose2d):
            torch.nn.init.kaiming_normal_(module.weight)
    torch.nn.init.kaiming_normal_(model.model.final_layer.weight)
    return model


def padded_crop_region(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image-space corners of each crop, derived by hand: 3:4 aspect, 1.25 padding."""
    x, y, w, h = boxes.T
    width = np.maximum(w, h * 0.75) * 1.25
    height = np.maximum(h, w / 0.75) * 1.25
    center = np.stack([x + w / 2, y + h / 2], 1)
    half = np.stack([width, height], 1) / 2
    return center - half, center + half


def test_keypoints_shape_and_inside_padded_crop(estimator):
    boxes = gt_boxes(196141)
    people = estimator(FILES[196141], boxes)
    assert len(people) == len(boxes) == 5
    assert all(isinstance(p, Person) for p in people)
    keypoints = np.stack([p.keypoints for p in people])
    assert keypoints.shape == (5, 17, 3) and keypoints.dtype == np.float32
    low, high = padded_crop_region(np.stack([p.box for p in people]))
    assert (keypoints[..., :2] >= low[:, None] - 1e-3).all() and (keypoints[..., :2] <= high[:, None] + 1e-3).all()
    np.testing.assert_allclose(np.stack([p.box for p in people]), boxes, rtol=1e-6)
    assert [p.box_score for p in people] == [1.0] * 5
    # Different people get different keypoints: the crops really differ.
    assert np.abs(keypoints[0, :, :2] - keypoints[1, :, :2]).max() > 10


def test_equals_hand_composed_pipeline(estimator):
    """crop -> preprocess -> model (+ mirrored crop -> flip_back) -> average -> decode, called directly."""
    image = load_image(FILES[197388])
    boxes = gt_boxes(197388)
    people = estimator.estimate(image, boxes)
    centers, scales = box_to_center_scale(boxes, aspect_ratio=192 / 256)
    crops = crop_batch(image, centers, scales, output_size=(192, 256))
    inputs = estimator.spec.preprocess(crops)
    with torch.no_grad():
        heatmaps = estimator.model(inputs).numpy()
        mirrored = estimator.model(torch.from_numpy(inputs.numpy()[..., ::-1].copy())).numpy()
    averaged = (heatmaps + flip_back(mirrored)) * 0.5
    coords, scores = decode(averaged, centers, scales, method="quarter")
    expected = np.concatenate([coords, scores[..., None]], axis=2)
    np.testing.assert_allclose(np.stack([p.keypoints for p in people]), expected, rtol=1e-5, atol=1e-4)


def test_default_weights_convention_is_bgr_and_callers_pass_rgb(estimator):
    assert estimator.spec.channel_order == "bgr" and estimator.spec.input_size == (192, 256)
    image = load_image(FILES[785])
    boxes = gt_boxes(785)
    rgb = np.stack([p.keypoints for p in estimator(image, boxes)])
    bgr = np.stack([p.keypoints for p in estimator(np.ascontiguousarray(image[..., ::-1]), boxes, channels="bgr")])
    np.testing.assert_array_equal(rgb, bgr)
    from_pil = np.stack([p.keypoints for p in estimator(Image.open(FILES[785]), boxes)])
    np.testing.assert_array_equal(rgb, from_pil)
    # The channel order matters (a colour image: 40083 is grey) to the network: swapped input gives other heatmaps.
    swapped = np.stack([p.keypoints for p in estimator(np.ascontiguousarray(image[..., ::-1]), boxes)])
    assert np.abs(rgb - swapped).max() > 1


def test_chunking_and_flip_options(estimator):
    image = load_image(FILES[196141])
    boxes = gt_boxes(196141)
    whole = np.stack([p.keypoints for p in estimator.estimate(image, boxes)])
    chunked = copy.copy(estimator)
    chunked.max_batch = 2
    np.testing.assert_allclose(np.stack([p.keypoints for p in chunked.estimate(image, boxes)]), whole, atol=1e-4)
    no_flip = copy.copy(estimator)
    no_flip.flip_test = False
    single = np.stack([p.keypoints for p in no_flip.estimate(image, boxes)])
    assert np.abs(single - whole).max() > 1


def test_call_on_list_with_scores_and_without_boxes(estimator):
    paths = [FILES[785], FILES[40083]]
    scores = np.array([0.7, 0.8, 0.9])
    out = estimator(paths, [gt_boxes(785), (gt_boxes(40083), scores)])
    assert [len(people) for people in out] == [1, 3]
    assert [p.box_score for p in out[1]] == pytest.approx([0.7, 0.8, 0.9])
    # No boxes and no detector: the whole image is one person.
    [whole] = estimator(FILES[785])
    np.testing.assert_array_equal(whole.box, [0, 0, 640, 425])
    with pytest.raises(ValueError, match="2 images"):
        estimator(paths, [gt_boxes(785)])


def test_detector_boxes_are_used(estimator):
    class Detector:
        def __call__(self, images):
            self.calls = len(images)
            return [(np.array([[100, 50, 80, 200]], np.float32), np.array([0.6], np.float32)) for _ in images]

    with_detector = copy.copy(estimator)
    with_detector.detector = Detector()
    out = with_detector([FILES[785], FILES[40083], FILES[196141]])
    assert with_detector.detector.calls == 3  # one batched call
    assert [len(people) for people in out] == [1, 1, 1]
    np.testing.assert_array_equal(out[2][0].box, [100, 50, 80, 200])
    assert out[2][0].box_score == pytest.approx(0.6)


def test_empty_and_bad_boxes(estimator):
    image = load_image(FILES[196141])
    assert len(estimator.estimate(image, np.zeros((0, 4)))) == 0
    assert estimator(image, []).keypoints.shape == (0, 17, 3)
    good = gt_boxes(196141)[:2]
    bad = np.array([[np.nan, 1, 2, 3], [10, 10, 0, 50], [5000, 10, 20, 20]])
    with pytest.warns(UserWarning, match=r"photo\.jpg.*3 person box") as record:
        people = estimator.estimate(image, np.concatenate([bad[:1], good, bad[1:]]), np.arange(5.0), name="photo.jpg")
    assert len(record) == 1
    assert [p.box_score for p in people] == [1.0, 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alone = estimator.estimate(image, good)
    np.testing.assert_allclose(np.stack([p.keypoints for p in people]), np.stack([p.keypoints for p in alone]))


def test_untrained_and_offline_weights(monkeypatch, tmp_path):
    torch.manual_seed(0)
    assert PoseEstimator(None, depth=18).pretrained is False
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    entry = weights.get_weights("pose_resnet_50_256x192")
    closed = dataclasses.replace(entry, url="http://127.0.0.1:9/" + entry.filename, gdrive_folder=None, gdrive_path=None)
    monkeypatch.setitem(weights.WEIGHTS, entry.name, closed)
    with pytest.raises(DownloadError, match="127.0.0.1"):
        PoseEstimator("pose_resnet_50_256x192")


def test_checkpoint_path_named_like_a_release_gets_its_input_size(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "pose_resnet_50_384x288.pth.tar"
    torch.save(PoseEstimator(None, depth=50).model.state_dict(), path)
    loaded = PoseEstimator(path, depth=18)  # the file name wins over depth
    assert loaded.pretrained and loaded.weights.input_size == (288, 384)
    [person] = loaded(np.zeros((64, 48, 3), np.uint8))
    assert person.keypoints.shape == (17, 3)


def test_import_posekit_is_light_and_exports_the_api():
    code = (
        "import sys, posekit\n"
        "assert 'torch' not in sys.modules, 'import posekit loaded torch'\n"
        "assert posekit.PoseEstimator.__module__ == 'posekit.estimator'\n"
        "assert {'PoseEstimator', 'Person', 'pose_resnet', 'load_image', 'draw_skeleton'} <= set(dir(posekit))\n"
        "assert callable(posekit.draw_skeleton) and callable(posekit.load_image)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_estimate_heatmaps_shows_what_the_keypoints_come_from(estimator):
    image = load_image(FILES[196141])
    boxes = gt_boxes(196141)
    crops, heatmaps = estimator.estimate_heatmaps(image, boxes)
    assert crops.shape == (5, 256, 192, 3) and crops.dtype == np.uint8
    assert heatmaps.shape == (5, 17, 64, 48) and heatmaps.dtype == np.float32
    # The crop's centre pixel (96, 128) is the image bilinearly sampled at the box centre.
    x, y = (boxes[:, :2] + boxes[:, 2:] / 2).T
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    pixels = image.astype(np.float64)
    expected = (
        pixels[y0, x0] * (1 - fx) * (1 - fy) + pixels[y0, x0 + 1] * fx * (1 - fy)
        + pixels[y0 + 1, x0] * (1 - fx) * fy + pixels[y0 + 1, x0 + 1] * fx * fy
    )
    np.testing.assert_allclose(crops[:, 128, 96], expected, atol=1.0)
    # Decoding the returned heatmaps gives exactly the estimator's keypoints.
    centers_f, scales = box_to_center_scale(boxes, aspect_ratio=192 / 256)
    coords, scores = decode(heatmaps, centers_f, scales, method="quarter")
    keypoints = np.stack([p.keypoints for p in estimator.estimate(image, boxes)])
    np.testing.assert_allclose(keypoints[..., :2], coords, atol=1e-4)
    np.testing.assert_allclose(keypoints[..., 2], scores, atol=1e-6)
    with pytest.warns(UserWarning):
        empty_crops, empty_maps = estimator.estimate_heatmaps(image, np.array([[0.0, 0.0, 0.0, 5.0]]))
    assert empty_crops.shape == (0, 256, 192, 3) and empty_maps.shape == (0, 17, 64, 48)
