"""posekit.core.crop against OpenCV and against slow per-person transcriptions of the official rules."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

from posekit.core.crop import (
    affine_matrices,
    affine_matrix,
    box_to_center_scale,
    crop_batch,
    transform_preds,
)
from posekit.errors import BoxError, PosekitError


# ---------------------------------------------------------------- slow references (one person at a time)
def reference_center_scale(box, aspect_ratio):
    """The official box -> (center, scale) rule, written out with Python floats."""
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center, np.array([w / 200.0, h / 200.0], dtype=np.float32) * 1.25


def turn_left(a, b):
    """b + (a - b) turned by 90 degrees, in float32, as the official third point."""
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def reference_matrix(center, scale, rot, output_size, shift=(0.0, 0.0), inverse=False):
    """OpenCV's getAffineTransform on the official float32 point triples."""
    center = np.asarray(center, dtype=np.float32)
    box = np.asarray(scale, dtype=np.float32) * 200.0
    moved = box * np.asarray(shift, dtype=np.float32)
    angle = np.pi * rot / 180
    up = box[0] * -0.5
    turned = [0 * np.cos(angle) - up * np.sin(angle), 0 * np.sin(angle) + up * np.cos(angle)]
    image_pts = np.zeros((3, 2), np.float32)
    image_pts[0] = center + moved
    image_pts[1] = center + turned + moved
    image_pts[2] = turn_left(image_pts[0], image_pts[1])
    out_w, out_h = output_size
    crop_pts = np.zeros((3, 2), np.float32)
    crop_pts[0] = [out_w * 0.5, out_h * 0.5]
    crop_pts[1] = np.array([out_w * 0.5, out_h * 0.5]) + np.array([0, out_w * -0.5], np.float32)
    crop_pts[2] = turn_left(crop_pts[0], crop_pts[1])
    if inverse:
        return cv2.getAffineTransform(crop_pts, image_pts)
    return cv2.getAffineTransform(image_pts, crop_pts)


def random_people(rng, n, height, width):
    """Boxes of every kind: ordinary, partly outside, a 1-px one, a huge one; rotations in degrees."""
    boxes = np.column_stack(
        [
            rng.uniform(-0.3 * width, width, n),
            rng.uniform(-0.3 * height, height, n),
            rng.uniform(1, width, n),
            rng.uniform(1, height, n),
        ]
    )
    boxes[0] = [width / 2, height / 2, 1, 1]
    boxes[1] = [-4 * width, -4 * height, 9 * width, 9 * height]
    rotations = rng.uniform(-180, 180, n)
    rotations[2] = 0
    return boxes, rotations


def assert_matrices_close(actual, expected):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9 * scale)


# ---------------------------------------------------------------- box_to_center_scale
@pytest.mark.parametrize("aspect_ratio", [192 / 256, 1.0, 1.7])
def test_box_to_center_scale_is_the_official_rule_bit_for_bit(aspect_ratio):
    rng = np.random.default_rng(0)
    boxes = np.column_stack([rng.uniform(-50, 600, 60), rng.uniform(-50, 400, 60), rng.uniform(0.5, 700, 60),
                             rng.uniform(0.5, 500, 60)])
    boxes[0, 2:] = [30 * aspect_ratio, 30]  # already the right shape
    boxes[1, 2:] = [1, 1]
    boxes[2, 2:] = [5000, 20]
    centers, scales = box_to_center_scale(boxes, aspect_ratio=aspect_ratio)
    assert centers.dtype == np.float32 and scales.dtype == np.float32
    for box, center, scale in zip(boxes, centers, scales):
        want_center, want_scale = reference_center_scale(box, aspect_ratio)
        np.testing.assert_array_equal(center, want_center)
        np.testing.assert_array_equal(scale, want_scale)


def test_box_to_center_scale_shapes_by_hand():
    centers, scales = box_to_center_scale(np.array([[10.0, 20.0, 30.0, 80.0], [0.0, 0.0, 300.0, 100.0]]))
    np.testing.assert_allclose(centers, [[25, 60], [150, 50]])
    # tall box: width grows to 80 * 0.75 = 60; wide box: height grows to 300 / 0.75 = 400
    np.testing.assert_allclose(scales, [[60 / 200 * 1.25, 80 / 200 * 1.25], [300 / 200 * 1.25, 400 / 200 * 1.25]],
                               rtol=1e-6)


@pytest.mark.parametrize(
    "boxes, words",
    [
        ([[0, 0, 10, 10], [np.nan, 0, 10, 10]], "rows [1]"),
        ([[0, 0, 0, 10]], "rows [0]"),
        ([[0, 0, 10, -1], [0, 0, 5, 5], [0, 0, np.inf, 5]], "rows [0, 2]"),
        ([0, 0, 10, 10], "expected (N, 4)"),
    ],
)
def test_box_to_center_scale_names_bad_boxes(boxes, words):
    with pytest.raises(BoxError, match=re.escape(words)):
        box_to_center_scale(np.array(boxes, dtype=float))


# ---------------------------------------------------------------- affine matrices
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("output_size", [(192, 256), (48, 64), (288, 384), (37, 23)])
def test_affine_matrices_equal_opencv_on_the_official_points(inverse, output_size):
    rng = np.random.default_rng(1)
    n = 40
    centers = rng.uniform(-300, 2000, (n, 2)).astype(np.float32)
    scales = rng.uniform(0.004, 8, (n, 2)).astype(np.float32)
    scales[0] = [0.005, 0.0067]  # a 1-px box
    scales[1] = [60.0, 80.0]  # a 12000-px box
    rotations = rng.uniform(-180, 180, n)
    rotations[2:6] = [0, 90, -90, 180]
    batched = affine_matrices(centers, scales, output_size, rotations, inverse=inverse)
    assert batched.shape == (n, 2, 3) and batched.dtype == np.float64
    for i in range(n):
        want = reference_matrix(centers[i], scales[i], rotations[i], output_size, inverse=inverse)
        assert_matrices_close(batched[i], want)
        assert_matrices_close(affine_matrix(centers[i], scales[i], rotations[i], output_size, inverse=inverse), want)


@pytest.mark.parametrize("inverse", [False, True])
def test_affine_matrix_with_shift_equals_opencv(inverse):
    rng = np.random.default_rng(2)
    for _ in range(20):
        center, scale = rng.uniform(0, 800, 2), rng.uniform(0.1, 3, 2)
        rot, shift = rng.uniform(-60, 60), rng.uniform(-0.3, 0.3, 2)
        got = affine_matrix(center, scale, rot, (192, 256), shift=shift, inverse=inverse)
        assert_matrices_close(got, reference_matrix(center, scale, rot, (192, 256), shift, inverse))


def test_affine_matrix_geometry_by_hand():
    center, scale, rot = np.array([300.0, 200.0]), np.array([1.5, 2.0]), 30.0
    m = affine_matrix(center, scale, rot, (192, 256))
    # the center lands in the middle of the crop
    np.testing.assert_allclose(m @ [300, 200, 1], [96, 128], atol=1e-4)
    # isotropic zoom set by the box width alone (192 px of crop per 1.5 * 200 px of image),
    # and a rotation by -rot in image coordinates (y down)
    zoom = 192 / 300
    r = np.deg2rad(rot)
    np.testing.assert_allclose(m[:, :2], zoom * np.array([[np.cos(r), np.sin(r)], [-np.sin(r), np.cos(r)]]),
                               rtol=1e-6, atol=1e-7)
    back = affine_matrix(center, scale, rot, (192, 256), inverse=True)
    np.testing.assert_allclose(np.vstack([back, [0, 0, 1]]) @ np.vstack([m, [0, 0, 1]]), np.eye(3), atol=1e-9)


def test_affine_matrices_names_bad_scales():
    with pytest.raises(BoxError, match=r"people \[1\]"):
        affine_matrices(np.zeros((2, 2)), np.array([[1.0, 1.0], [0.0, 1.0]]))
    with pytest.raises(BoxError, match="expected both"):
        affine_matrices(np.zeros((2, 2)), np.ones((3, 2)))


# ---------------------------------------------------------------- crop_batch
def warp_with_opencv(image, centers, scales, rotations, output_size=(192, 256)):
    return np.stack(
        [
            cv2.warpAffine(image, reference_matrix(c, s, r, output_size), output_size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            for c, s, r in zip(centers, scales, rotations)
        ]
    )


def largest_step(image):
    """The largest jump between neighbouring pixels, the zero frame around the image included."""
    framed = np.pad(image.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    return max(np.abs(np.diff(framed, axis=0)).max(), np.abs(np.diff(framed, axis=1)).max())


def test_crop_batch_matches_opencv_on_float_noise():
    rng = np.random.default_rng(3)
    height, width = 120, 160
    image = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    boxes, rotations = random_people(rng, 12, height, width)
    centers, scales = box_to_center_scale(boxes)
    crops = crop_batch(torch.from_numpy(image).permute(2, 0, 1), centers, scales, rotations=rotations)
    want = warp_with_opencv(image, centers, scales, rotations)
    assert crops.shape == (12, 3, 256, 192) and crops.dtype == torch.float32
    diagonal = scales[:, 0] * 200 * np.hypot(1, 256 / 192)
    tolerance = 1e-4 + 3e-7 * (max(height, width) + diagonal) * largest_step(image)
    error = np.abs(crops.permute(0, 2, 3, 1).numpy() - want).reshape(12, -1).max(axis=1)
    assert (error <= tolerance).all(), (error, tolerance)
    assert want[0].any() and not want[1].all()  # the 1-px box sees the image; the huge one sees the border


def test_crop_batch_matches_opencv_to_1e3_on_a_smooth_image():
    rng = np.random.default_rng(4)
    height, width = 150, 200
    ys, xs = np.mgrid[0:height, 0:width]
    # a bump that fades to 0 at the edges, so the zero border adds no step either
    bump = np.sin(np.pi * (xs + 0.5) / width) * np.sin(np.pi * (ys + 0.5) / height)
    image = (255 * bump[..., None] * [1.0, 0.6, 0.3]).astype(np.float32)
    boxes = np.column_stack([rng.uniform(-40, 180, 10), rng.uniform(-40, 130, 10), rng.uniform(1, 150, 10),
                             rng.uniform(1, 150, 10)])
    rotations = rng.uniform(-90, 90, 10)
    centers, scales = box_to_center_scale(boxes)
    crops = crop_batch(torch.from_numpy(image).permute(2, 0, 1), centers, scales, rotations=rotations)
    want = warp_with_opencv(image, centers, scales, rotations)
    np.testing.assert_allclose(crops.permute(0, 2, 3, 1).numpy(), want, rtol=0, atol=1e-3)


@pytest.mark.parametrize("output_size", [(192, 256), (48, 64)])
def test_crop_batch_matches_opencv_on_uint8_within_one_grey_level(output_size):
    rng = np.random.default_rng(5)
    height, width = 200, 300
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    boxes, rotations = random_people(rng, 10, height, width)
    centers, scales = box_to_center_scale(boxes, aspect_ratio=output_size[0] / output_size[1])
    crops = crop_batch(image, centers, scales, output_size, rotations).permute(0, 2, 3, 1).numpy()
    want = warp_with_opencv(image, centers, scales, rotations, output_size).astype(np.float32)
    np.testing.assert_array_equal(crops, np.round(crops))  # whole grey levels, like OpenCV's uint8
    assert np.abs(crops - want).max() <= 1
    assert (crops != want).mean() < 0.01


def test_crop_batch_keeps_channel_order_and_takes_tensors_and_arrays_alike():
    image = np.zeros((40, 50, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 250
    centers, scales = box_to_center_scale(np.array([[10.0, 10.0, 20.0, 20.0]]))
    from_array = crop_batch(image, centers, scales, (16, 16))
    from_tensor = crop_batch(torch.from_numpy(image).permute(2, 0, 1), centers, scales, (16, 16))
    torch.testing.assert_close(from_array, from_tensor, rtol=0, atol=0)
    assert from_array.dtype == torch.float32 and from_array.device.type == "cpu"
    middle = from_array[0, :, 8, 8]
    assert middle.tolist() == [10.0, 20.0, 250.0]
    assert crop_batch(image, np.zeros((0, 2)), np.zeros((0, 2)), (16, 16)).shape == (0, 3, 16, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_crop_batch_runs_on_the_images_cuda_device():
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes, rotations = random_people(rng, 8, 120, 160)
    centers, scales = box_to_center_scale(boxes)
    on_gpu = crop_batch(torch.from_numpy(image).permute(2, 0, 1).cuda(), centers, scales, rotations=rotations)
    assert on_gpu.device.type == "cuda"
    want = warp_with_opencv(image, centers, scales, rotations).astype(np.float32)
    assert np.abs(on_gpu.permute(0, 2, 3, 1).cpu().numpy() - want).max() <= 1


@pytest.mark.parametrize(
    "image, words",
    [
        (np.zeros((10, 10), np.uint8), r"shape \(10, 10\); expected \(H, W, 3\)"),
        (torch.zeros(4, 10, 10), r"shape \(4, 10, 10\); expected \(3, H, W\)"),
        (torch.zeros(3, 10, 10, dtype=torch.int32), "expected uint8 or a float type"),
        ([[1, 2, 3]], "expected a numpy array or a torch tensor"),
    ],
)
def test_crop_batch_names_bad_images(image, words):
    with pytest.raises(PosekitError, match=words):
        crop_batch(image, np.zeros((1, 2)), np.ones((1, 2)))


# ---------------------------------------------------------------- transform_preds
def test_transform_preds_equals_the_official_inverse_transform():
    rng = np.random.default_rng(7)
    n, k, heatmap_size = 9, 17, (48, 64)
    boxes = np.column_stack([rng.uniform(-100, 900, (n, 2)), rng.uniform(1, 800, (n, 2))])
    centers, scales = box_to_center_scale(boxes)
    coords = rng.uniform(-5, 70, (n, k, 2)).astype(np.float32)
    got = transform_preds(coords, centers, scales, heatmap_size)
    assert got.dtype == np.float32 and got.shape == (n, k, 2)
    for i in range(n):
        back = reference_matrix(centers[i], scales[i], 0, heatmap_size, inverse=True)
        for j in range(k):
            want = np.dot(back, np.array([coords[i, j, 0], coords[i, j, 1], 1.0]))
            np.testing.assert_allclose(got[i, j], want, rtol=1e-6, atol=1e-4)
    from_tensor = transform_preds(torch.from_numpy(coords), torch.from_numpy(centers), scales, heatmap_size)
    assert isinstance(from_tensor, torch.Tensor) and from_tensor.dtype == torch.float32
    np.testing.assert_array_equal(from_tensor.numpy(), got)


def test_transform_preds_undoes_the_crop_transform():
    rng = np.random.default_rng(8)
    centers, scales = box_to_center_scale(np.array([[50.0, 80.0, 120.0, 300.0], [400.0, 10.0, 3.0, 2.0]]))
    image_points = centers[:, None, :] + rng.uniform(-60, 60, (2, 5, 2))
    to_heatmap = affine_matrices(centers, scales, (48, 64))
    heatmap_points = np.einsum("nij,nkj->nki", to_heatmap[:, :, :2], image_points) + to_heatmap[:, None, :, 2]
    np.testing.assert_allclose(transform_preds(heatmap_points, centers, scales, (48, 64)), image_points, atol=1e-6)


def test_crop_batch_reads_only_the_window_it_samples_and_equals_sampling_the_whole_image():
    """crop_batch converts only the pixels its crops can read; the crops equal warp_batch on the whole
    image, for people inside, across the border, wholly outside, and rotated."""
    from posekit.core.crop import affine_matrices, warp_batch

    image = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    centers = np.array([[320.0, 240.0], [20.0, 470.0], [900.0, -300.0], [600.0, 100.0]])
    scales = np.array([[1.0, 1.3], [0.8, 1.1], [0.5, 0.7], [0.6, 0.8]])
    rotations = np.array([0.0, 0.0, 0.0, 30.0])
    crops = crop_batch(image, centers, scales, (192, 256), rotations)
    whole = torch.from_numpy(image).permute(2, 0, 1).float()[None].expand(4, -1, -1, -1)
    expected = warp_batch(whole, affine_matrices(centers, scales, (192, 256), rotations, inverse=True), (192, 256))
    assert crops[2].abs().max() == 0  # outside: all border
    assert (crops[1] == 0).float().mean() > 0.3  # across the corner: part border, part image
    # The window moves the sampling positions' float32 rounding: at most one grey level, at a handful of pixels.
    difference = (crops - expected.round()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 1e-3
    floats = crop_batch(image.astype(np.float32), centers[3:], scales[3:], (192, 256), rotations[3:])
    # crop_batch's float bound: 3e-7 px per pixel of image size and crop diagonal, times the largest step (255).
    np.testing.assert_allclose(floats.numpy(), expected[3:].numpy(), atol=3e-7 * (640 + 320) * 255)
