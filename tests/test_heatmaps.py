"""posekit.core.heatmaps against slow per-joint transcriptions of the official (and DARK) rules."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from posekit.core.coco17 import FLIP_PAIRS
from posekit.core.heatmaps import decode, encode, flip_back, heatmap_maxima
from posekit.errors import PosekitError


# ---------------------------------------------------------------- slow references (one joint at a time)
def reference_target(point, visible, image_size, heatmap_size, sigma):
    """The official generate_target for one joint, with Python ints as it uses them."""
    w, h = heatmap_size
    stride = np.array(image_size) / np.array(heatmap_size)
    target = np.zeros((h, w), np.float32)
    radius = sigma * 3
    peak_x = int(point[0] / stride[0] + 0.5)
    peak_y = int(point[1] / stride[1] + 0.5)
    left, top = int(peak_x - radius), int(peak_y - radius)
    right, bottom = int(peak_x + radius + 1), int(peak_y + radius + 1)
    if left >= w or top >= h or right < 0 or bottom < 0:
        return target, np.float32(0)
    side = 2 * radius + 1
    axis = np.arange(0, side, 1, np.float32)
    square = np.exp(-((axis - side // 2) ** 2 + (axis[:, None] - side // 2) ** 2) / (2 * sigma**2))
    if np.float32(visible) > 0.5:
        x0, x1, y0, y1 = max(0, left), min(right, w), max(0, top), min(bottom, h)
        target[y0:y1, x0:x1] = square[y0 - top : y1 - top, x0 - left : x1 - left]
    return target, np.float32(visible)


def reference_maximum(heatmap):
    """The official get_max_preds for one map: (x, y) float32 and the maximum."""
    index = int(np.argmax(heatmap))
    value = heatmap.reshape(-1)[index]
    x, y = np.float32(index % heatmap.shape[1]), np.float32(index // heatmap.shape[1])
    return (np.float32(x), np.float32(y)) if value > 0 else (np.float32(0), np.float32(0)), value


def reference_quarter(heatmap, x, y):
    h, w = heatmap.shape
    px, py = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    if 1 < px < w - 1 and 1 < py < h - 1:
        x += np.float32(0.25) * np.sign(heatmap[py, px + 1] - heatmap[py, px - 1])
        y += np.float32(0.25) * np.sign(heatmap[py + 1, px] - heatmap[py - 1, px])
    return x, y


def reference_dark(heatmap, x, y):
    """DARK as its authors' code does it: cv2 blur on a zero-framed copy, log, Newton step."""
    h, w = heatmap.shape
    framed = np.zeros((h + 10, w + 10))
    framed[5:-5, 5:-5] = heatmap
    smooth = cv2.GaussianBlur(framed, (11, 11), 0)[5:-5, 5:-5].astype(np.float32)
    with np.errstate(invalid="ignore"):  # an all-zero map gives 0 / 0, unused: its maximum is at (0, 0)
        smooth *= heatmap.max() / smooth.max()
    log = np.log(np.maximum(smooth, 1e-10))
    px, py = int(x), int(y)
    if 1 < px < w - 2 and 1 < py < h - 2:
        grad = 0.5 * np.array([log[py, px + 1] - log[py, px - 1], log[py + 1, px] - log[py - 1, px]])
        dxx = 0.25 * (log[py, px + 2] - 2 * log[py, px] + log[py, px - 2])
        dyy = 0.25 * (log[py + 2, px] - 2 * log[py, px] + log[py - 2, px])
        dxy = 0.25 * (log[py + 1, px + 1] - log[py - 1, px + 1] - log[py + 1, px - 1] + log[py - 1, px - 1])
        hessian = np.array([[dxx, dxy], [dxy, dyy]])
        if dxx * dyy - dxy**2 != 0:
            x, y = np.array([x, y]) - np.linalg.inv(hessian) @ grad
    return x, y


def to_image(x, y, center, scale, heatmap_size):
    """Heatmap px -> image px for an unrotated crop, derived by hand: the official crop keeps
    the center in the middle and scales both axes by the box width (scale[0] * 200) / w."""
    w, h = heatmap_size
    zoom = scale[..., 0] * 200 / w
    return center[..., 0] + (x - w / 2) * zoom, center[..., 1] + (y - h / 2) * zoom


def reference_decode(heatmaps, centers, scales, refine):
    n, k, h, w = heatmaps.shape
    coords, scores = np.zeros((n, k, 2)), np.zeros((n, k), heatmaps.dtype)
    for i in range(n):
        for j in range(k):
            (x, y), scores[i, j] = reference_maximum(heatmaps[i, j])
            if refine is not None:
                x, y = refine(heatmaps[i, j], x, y)
            coords[i, j] = to_image(x, y, centers[i], scales[i], (w, h))
    return coords, scores


def gaussian_maps(rng, n, k, heatmap_size, margin, sigma=2.0):
    """Unnormalised Gaussians (peak 1) at random sub-pixel centres, and those centres."""
    w, h = heatmap_size
    centres = np.stack([rng.uniform(margin, w - 1 - margin, (n, k)), rng.uniform(margin, h - 1 - margin, (n, k))], -1)
    ys, xs = np.mgrid[0:h, 0:w]
    d2 = (xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2
    return np.exp(-d2 / (2 * sigma**2)).astype(np.float32), centres


def awkward_maps(rng):
    """Maps whose maximum sits on every column and row an edge rule could trip on, plus flat ones."""
    n, k, h, w = 3, 17, 64, 48
    maps = rng.normal(0, 0.02, (n, k, h, w)).astype(np.float32)
    spots = [(0, 0), (1, 10), (2, 20), (w - 3, 30), (w - 2, 2), (w - 1, h - 1), (20, 1), (7, h - 2), (9, h - 3),
             (3, 3), (w - 4, h - 4), (24, 32)]
    for j, (x, y) in enumerate(spots):
        maps[:, j, y, x] += 1.0 + 0.01 * j
        maps[:, j, y, min(x + 1, w - 1)] += 0.5
        maps[:, j, max(y - 1, 0), x] += 0.3
    maps[:, 12] = 0.0  # all zero
    maps[:, 13] = -np.abs(maps[:, 13]) - 0.1  # all negative
    maps[:, 14] = 0.0
    maps[:, 14, 5, 5] = maps[:, 14, 9, 2] = 0.7  # a tie: the first in row-major order wins
    return maps


def identity_crop(heatmap_size, n):
    """center/scale for which heatmap px == image px (up to float32 rounding)."""
    w, h = heatmap_size
    return np.tile([w / 2, h / 2], (n, 1)), np.tile([w / 200, h / 200], (n, 1))


# ---------------------------------------------------------------- encode
@pytest.mark.parametrize(
    "image_size, heatmap_size, sigma",
    [
        ((192, 256), (48, 64), 2),
        ((288, 384), (72, 96), 3),
        ((192, 256), (48, 64), 1),
        ((192, 256), (48, 64), 1.5),
        ((100, 60), (33, 21), 2),
    ],
)
def test_encode_is_the_official_generate_target_bit_for_bit(image_size, heatmap_size, sigma):
    rng = np.random.default_rng(0)
    n, k = 6, 17
    w, h = image_size
    points = np.stack([rng.uniform(-0.4 * w, 1.4 * w, (n, k)), rng.uniform(-0.4 * h, 1.4 * h, (n, k))], -1)
    points[0, :6] = [[-3, 5], [-1.9, -2.1], [-30, 10], [-34, 10], [w + 20, 10], [w - 1, h - 1]]
    visibility = rng.choice([0.0, 1.0, 0.5, 0.7, 2.0], (n, k), p=[0.2, 0.5, 0.1, 0.1, 0.1])
    targets, weights = encode(points, visibility, image_size, heatmap_size, sigma)
    assert targets.dtype == np.float32 and weights.dtype == np.float32
    assert targets.shape == (n, k, heatmap_size[1], heatmap_size[0]) and weights.shape == (n, k)
    for i in range(n):
        for j in range(k):
            want_target, want_weight = reference_target(points[i, j], visibility[i, j], image_size, heatmap_size, sigma)
            np.testing.assert_array_equal(targets[i, j], want_target, err_msg=f"person {i} joint {j}")
            assert weights[i, j] == want_weight, (i, j)


def test_encode_rules_by_hand():
    points = np.array([[[100.0, 60.0], [-30.0, 10.0], [-34.0, 10.0], [np.nan, 5.0], [50.0, 50.0]]])
    targets, weights = encode(points, np.array([[1, 1, 1, 1, 0]]))
    # (100, 60) / 4 + 0.5 = (25.5, 15.5), truncated to (25, 15): the peak, with exp(-1/8) beside it
    assert targets[0, 0, 15, 25] == 1.0 and np.argmax(targets[0, 0]) == 15 * 48 + 25
    assert targets[0, 0, 15, 26] == pytest.approx(np.exp(-1 / 8))
    # x = -30: int(-7.0) = -7, the square ends at column 0 (exclusive): kept, but draws nothing
    assert weights[0, 1] == 1 and not targets[0, 1].any()
    # x = -34: int(-8.0) = -8, the square ends at -1: outside, weight 0
    assert weights[0, 2] == 0 and not targets[0, 2].any()
    assert weights[0, 3] == 0 and not targets[0, 3].any()  # not finite
    assert weights[0, 4] == 0 and not targets[0, 4].any()  # invisible


def test_encode_names_bad_shapes():
    with pytest.raises(PosekitError, match=r"expected \(N, K, 2\) and \(N, K\)"):
        encode(np.zeros((2, 17, 2)), np.ones((2, 16)))


# ---------------------------------------------------------------- maxima and decode
@pytest.mark.parametrize("as_tensor", [False, True])
def test_heatmap_maxima_is_the_official_get_max_preds(as_tensor):
    maps = awkward_maps(np.random.default_rng(1))
    coords, scores = heatmap_maxima(torch.from_numpy(maps) if as_tensor else maps)
    assert isinstance(coords, torch.Tensor) == as_tensor
    coords, scores = np.asarray(coords), np.asarray(scores)
    assert coords.dtype == np.float32 and coords.shape == (3, 17, 2) and scores.shape == (3, 17)
    for i in range(3):
        for j in range(17):
            (x, y), value = reference_maximum(maps[i, j])
            assert (coords[i, j, 0], coords[i, j, 1], scores[i, j]) == (x, y, value), (i, j)
    assert coords[0, 14].tolist() == [5, 5] and coords[0, 12].tolist() == [0, 0] and coords[0, 13].tolist() == [0, 0]


@pytest.mark.parametrize("method", ["argmax", "quarter", "dark"])
def test_decode_matches_the_slow_reference(method):
    rng = np.random.default_rng(2)
    peaks, _ = gaussian_maps(rng, 3, 17, (48, 64), margin=0)
    maps = np.concatenate([awkward_maps(rng), peaks + rng.normal(0, 0.01, peaks.shape).astype(np.float32)])
    centers, scales = (
        np.array(v, np.float32)
        for v in zip(*[(rng.uniform(0, 900, 2), rng.uniform(0.05, 5, 2)) for _ in range(len(maps))])
    )
    refine = {"argmax": None, "quarter": reference_quarter, "dark": reference_dark}[method]
    want_coords, want_scores = reference_decode(maps, centers, scales, refine)
    coords, scores = decode(maps, centers, scales, method)
    assert isinstance(coords, np.ndarray) and coords.dtype == np.float32 and coords.shape == (6, 17, 2)
    np.testing.assert_array_equal(scores, want_scores)
    # DARK's reference blurs in float64 with OpenCV: allow 1e-3 heatmap px; the others are exact
    heatmap_px = 1e-3 if method == "dark" else 1e-5
    zoom = scales[:, 0, None, None] * 200 / 48
    assert (np.abs(coords - want_coords) <= heatmap_px * zoom + 1e-6 * np.abs(want_coords) + 1e-4).all()


def test_quarter_refinement_skips_index_one_by_hand():
    maps = np.zeros((1, 4, 64, 48), np.float32)
    for j, (x, higher) in enumerate([(1, 2), (2, 3), (46, 47), (47, 46)]):  # 1 < x < w - 1 = 47
        maps[0, j, 20, x] = 1.0
        maps[0, j, 20, higher] = 0.5
    centers, scales = identity_crop((48, 64), 1)
    coords, _ = decode(maps, centers, scales, "quarter")
    np.testing.assert_allclose(coords[0, :, 0], [1, 2.25, 46.25, 47], atol=1e-5)
    np.testing.assert_allclose(coords[0, :, 1], 20, atol=1e-5)  # rows 19 and 21 are equal: no step


@pytest.mark.parametrize("method, worst", [("argmax", 0.5), ("quarter", 0.25), ("dark", 0.05)])
def test_decode_recovers_subpixel_gaussian_centres(method, worst):
    rng = np.random.default_rng(3)
    maps, centres = gaussian_maps(rng, 10, 17, (48, 64), margin=4)
    boxes_center = rng.uniform(100, 500, (10, 2)).astype(np.float32)
    scales = rng.uniform(0.3, 3, (10, 1)).astype(np.float32) * np.float32([1, 64 / 48])
    coords, scores = decode(maps, boxes_center, scales, method)
    np.testing.assert_allclose(scores, maps.reshape(10, 17, -1).max(-1))
    true_x, true_y = to_image(centres[..., 0], centres[..., 1], boxes_center[:, None], scales[:, None], (48, 64))
    zoom = scales[:, 0, None] * 200 / 48
    error = np.maximum(np.abs(coords[..., 0] - true_x), np.abs(coords[..., 1] - true_y)) / zoom
    assert error.max() <= worst + 1e-4, error.max()


def test_decode_on_all_zero_maps_gives_the_crop_corner_and_no_nan():
    maps = np.zeros((2, 17, 64, 48), np.float32)
    centers, scales = identity_crop((48, 64), 2)
    for method in ("argmax", "quarter", "dark"):
        coords, scores = decode(maps, centers, scales, method)
        np.testing.assert_allclose(coords, 0, atol=1e-5)
        assert not scores.any()


@pytest.mark.parametrize("method", ["argmax", "quarter", "dark"])
def test_decode_torch_in_torch_out_equals_numpy(method):
    rng = np.random.default_rng(4)
    maps = awkward_maps(rng)
    centers, scales = rng.uniform(0, 500, (3, 2)), rng.uniform(0.2, 2, (3, 2))
    want_coords, want_scores = decode(maps, centers, scales, method)
    coords, scores = decode(torch.from_numpy(maps), torch.from_numpy(centers), torch.from_numpy(scales), method)
    assert isinstance(coords, torch.Tensor) and coords.dtype == torch.float32
    np.testing.assert_array_equal(coords.numpy(), want_coords)
    np.testing.assert_array_equal(scores.numpy(), want_scores)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decode_and_flip_back_stay_on_cuda():
    rng = np.random.default_rng(5)
    maps = awkward_maps(rng)
    centers, scales = rng.uniform(0, 500, (3, 2)), rng.uniform(0.2, 2, (3, 2))
    for method in ("argmax", "quarter", "dark"):
        coords, scores = decode(torch.from_numpy(maps).cuda(), centers, scales, method)
        assert coords.device.type == "cuda" and scores.device.type == "cuda"
        want, _ = decode(maps, centers, scales, method)
        np.testing.assert_allclose(coords.cpu().numpy(), want, rtol=1e-5, atol=1e-3)
    flipped = flip_back(torch.from_numpy(maps).cuda())
    assert flipped.device.type == "cuda"
    np.testing.assert_array_equal(flipped.cpu().numpy(), flip_back(maps))


def test_decode_names_bad_input():
    with pytest.raises(PosekitError, match="expected one of argmax, quarter, dark"):
        decode(np.zeros((1, 17, 64, 48)), np.zeros((1, 2)), np.ones((1, 2)), "soft-argmax")
    with pytest.raises(PosekitError, match=r"expected \(N, K, h, w\)"):
        decode(np.zeros((17, 64, 48)), np.zeros((1, 2)), np.ones((1, 2)))


# ---------------------------------------------------------------- flip_back
def reference_flip_back(maps, pairs, shift):
    """The official flip_back (mirror, then swap pairs one by one) and SHIFT_HEATMAP."""
    out = maps[:, :, :, ::-1].copy()
    for left, right in pairs:
        kept = out[:, left].copy()
        out[:, left] = out[:, right]
        out[:, right] = kept
    if shift:
        out[:, :, :, 1:] = out.copy()[:, :, :, :-1]
    return out


@pytest.mark.parametrize("shift", [True, False])
def test_flip_back_is_the_official_one(shift):
    maps = np.random.default_rng(6).normal(size=(3, 17, 64, 48)).astype(np.float32)
    want = reference_flip_back(maps, FLIP_PAIRS, shift)
    np.testing.assert_array_equal(flip_back(maps, shift=shift), want)
    from_tensor = flip_back(torch.from_numpy(maps), shift=shift)
    assert isinstance(from_tensor, torch.Tensor)
    np.testing.assert_array_equal(from_tensor.numpy(), want)
    np.testing.assert_array_equal(maps, np.random.default_rng(6).normal(size=maps.shape).astype(np.float32))


def test_flip_back_by_hand():
    maps = np.zeros((1, 17, 4, 6), np.float32)
    maps[0, 1, 2, 1] = 1.0  # left eye, column 1
    maps[0, 0, 0, 5] = 2.0  # nose, last column
    plain = flip_back(maps, shift=False)
    assert plain[0, 2, 2, 4] == 1.0 and plain[0, 0, 0, 0] == 2.0  # right eye, mirrored column 6 - 1 - 1
    shifted = flip_back(maps)
    assert shifted[0, 2, 2, 5] == 1.0 and shifted[0, 2].sum() == 1.0
    # column 0 keeps its value and column 1 gets a copy of it
    assert shifted[0, 0, 0, 0] == 2.0 and shifted[0, 0, 0, 1] == 2.0
    np.testing.assert_array_equal(flip_back(maps, flip_pairs=(), shift=False)[0, 1, 2, 4], 1.0)
