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
from spy_network import SpyNetwork

from posekit.core.crop import box_to_center_scale, crop_batch
from posekit.core.heatmaps import decode, flip_back
from posekit.errors import DownloadError
from posekit.estimator import PoseEstimator
from posekit.io.images import load_image
from posekit.models import weights
from posekit.models.pose_resnet import pose_resnet
from posekit.poses import Person, Poses

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


# --- results as arrays ------------------------------------------------------------------------


def test_poses_are_arrays_iterable_as_people_with_coco_results(estimator):
    boxes = gt_boxes(196141)
    poses = estimator(FILES[196141], (boxes, np.linspace(0.5, 0.9, 5)))
    assert isinstance(poses, Poses) and len(poses) == 5
    assert poses.boxes.shape == (5, 4) and poses.box_scores.shape == (5,) and poses.keypoints.shape == (5, 17, 3)
    people = list(poses)
    assert all(isinstance(p, Person) for p in people)
    np.testing.assert_array_equal(np.stack([p.keypoints for p in people]), poses.keypoints)
    assert [p.box_score for p in people] == pytest.approx(np.linspace(0.5, 0.9, 5))
    results = poses.to_coco(196141)
    assert [r["image_id"] for r in results] == [196141] * 5 and {r["category_id"] for r in results} == {1}
    for result, person in zip(results, people):
        np.testing.assert_allclose(np.reshape(result["keypoints"], (17, 3)), person.keypoints, atol=5e-4)
        # The official person score, computed here: box score x mean of the joint scores above 0.2.
        confident = [s for s in person.keypoints[:, 2] if s > 0.2]
        expected = person.box_score * (sum(confident) / len(confident) if confident else 0.0)
        assert result["score"] == pytest.approx(expected, rel=1e-6)
    # One image or several: the same type.
    [first, second] = estimator([FILES[196141], FILES[785]], [boxes, gt_boxes(785)])
    assert isinstance(second, Poses) and len(second) == 1
    np.testing.assert_array_equal(first.keypoints, poses.keypoints)


# --- one core, fast by default ------------------------------------------------------------------


def test_default_runtime_is_onnxruntime_fp32_on_the_cpu():
    default = PoseEstimator(None, depth=18, device="cpu")
    assert (default.backend, default.precision) == ("onnxruntime", "fp32")


def _unambiguous(heatmaps: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """Joints whose maximum and quarter-pixel step cannot flip under float rounding: the maximum
    beats every pixel outside its 3x3 neighbourhood, and its two neighbours on each axis differ,
    by more than ``margin`` of the maximum. Shape: (N, K, h, w) -> (N, K) bool."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    peak = flat.max(-1)
    y, x = np.divmod(flat.argmax(-1), w)
    rows, cols = np.arange(h)[:, None], np.arange(w)[None]
    near = (np.abs(rows - y[..., None, None]) <= 1) & (np.abs(cols - x[..., None, None]) <= 1)
    second = np.where(near, -np.inf, heatmaps).reshape(n, k, -1).max(-1)
    padded = np.pad(heatmaps, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ni, ki = np.indices((n, k))
    dx = padded[ni, ki, y + 1, x + 2] - padded[ni, ki, y + 1, x]
    dy = padded[ni, ki, y + 2, x + 1] - padded[ni, ki, y, x + 1]
    scale = margin * np.abs(peak)
    return (peak - second > scale) & (np.abs(dx) > scale) & (np.abs(dy) > scale)


def test_torch_and_onnxruntime_backends_give_the_same_keypoints(estimator):
    image, boxes = load_image(FILES[196141]), gt_boxes(196141)
    on_torch = copy.copy(estimator)
    on_torch.backend, on_torch._forward = "torch", None
    on_onnx = copy.copy(estimator)
    on_onnx.backend, on_onnx._forward = "onnxruntime", None
    _, heatmaps = on_torch.estimate_heatmaps(image, boxes)
    clear = _unambiguous(heatmaps)
    assert clear.mean() > 0.5  # most joints are compared
    torch_points, onnx_points = on_torch.keypoints(image, boxes), on_onnx.keypoints(image, boxes)
    assert np.abs(torch_points - onnx_points)[clear][:, :2].max() < 1e-3  # px
    scale = np.abs(torch_points[..., 2]).max()
    np.testing.assert_allclose(onnx_points[..., 2], torch_points[..., 2], rtol=1e-4, atol=1e-5 * scale)  # scores


@pytest.mark.parametrize("head, fed", [("keypoint_head.", "rgb"), ("head.", "rgb"), (None, "bgr")],
                         ids=["mmpose0x", "mmpose1x", "official"])
def test_a_checkpoint_under_any_file_name_is_fed_as_its_keys_say(tmp_path, head, fed):
    state = pose_resnet(18).state_dict()
    if head is not None:
        state = {(head if k.startswith(("deconv_layers.", "final_layer.")) else "backbone.") + k: v
                 for k, v in state.items()}
    path = tmp_path / "my_model.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 3}} if head else state, path)
    estimator = PoseEstimator(path, device="cpu")
    estimator.forward = spy = SpyNetwork(estimator.spec)
    red, green, blue = 200, 100, 30
    image = np.empty((300, 200, 3), np.uint8)
    image[:] = (red, green, blue)
    estimator.keypoints(image, np.array([[50.0, 50.0, 100.0, 200.0]]))
    first_channel = spy.inputs[0][0, 0, 128, 96].item()  # the crop's centre, well inside the image
    expected = {"rgb": (red / 255 - 0.485) / 0.229, "bgr": (blue / 255 - 0.485) / 0.229}[fed]
    assert first_channel == pytest.approx(expected, abs=1e-5)


def test_crops_and_forward_calls_follow_max_batch(estimator, monkeypatch):
    from posekit.core import topdown

    cropped = []
    real_crop = topdown.crop_batch
    monkeypatch.setattr(topdown, "crop_batch", lambda image, centers, *a, **k: (
        cropped.append(len(centers)) or real_crop(image, centers, *a, **k)))
    chunked = copy.copy(estimator)
    chunked.max_batch = 4
    chunked.forward = spy = SpyNetwork(estimator.spec)
    chunked.keypoints(load_image(FILES[196141]), np.resize(gt_boxes(196141), (11, 4)))
    assert cropped == [4, 4, 3]  # crops exist for one chunk at a time
    assert [len(inputs) for inputs in spy.inputs] == [8, 8, 6]  # each chunk with its mirrors, in one call


def test_the_forward_follows_edits_of_the_weights(estimator):
    image, boxes = load_image(FILES[785]), gt_boxes(785)
    edited = copy.copy(estimator)
    edited.model, edited._forward = copy.deepcopy(estimator.model), None
    before = edited.keypoints(image, boxes)
    with torch.no_grad():
        edited.model.final_layer.weight.mul_(-1.0)  # in place, after the forward was built
    after = edited.keypoints(image, boxes)
    assert np.abs(after - before).max() > 1
    fresh = PoseEstimator(None, depth=18, device="cpu")
    fresh.model.load_state_dict(edited.model.state_dict())
    np.testing.assert_array_equal(fresh.keypoints(image, boxes), after)
