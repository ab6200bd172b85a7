"""From person boxes to fixed-size network crops, and from crop coordinates back to the image.

The geometry is the one of the official SimpleBaseline code (Xiao et al., ECCV 2018): a box
becomes a *center* (px) and a *scale* (box size / 200 px, padded by 1.25 and widened or
heightened to the crop's aspect ratio); the crop is the affine warp that sends the center to
the middle of the output and ``scale * 200`` px of the image to the output's width. Matrices
equal the official ``get_affine_transform`` to float64 precision, and crops agree with
``cv2.warpAffine(..., INTER_LINEAR, BORDER_CONSTANT 0)`` within the tolerance ``crop_batch``
states; the tests hold both claims against OpenCV. OpenCV itself is not needed: the warp is
one batched ``grid_sample`` in torch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from posekit.errors import BoxError, PosekitError

PIXEL_STD = 200.0


def box_to_center_scale(
    boxes_xywh: np.ndarray,
    aspect_ratio: float = 192 / 256,
    padding: float = 1.25,
    pixel_std: float = PIXEL_STD,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn COCO boxes into the official (center, scale) pair.

    The short side is extended until ``w / h == aspect_ratio`` (the box is never shrunk), the
    size is expressed in units of ``pixel_std`` px and multiplied by ``padding``. Rounding
    follows the official code: float64 arithmetic, float32 results.

    Shape: boxes_xywh (N, 4) -> centers (N, 2) float32, scales (N, 2) float32.
    Raises BoxError for a box that is not finite or has no width or height.
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BoxError(f"boxes_xywh has shape {boxes.shape}; expected (N, 4) boxes as x, y, w, h")
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise BoxError(
            f"boxes_xywh rows {rows.tolist()} (e.g. {boxes[rows[0]].tolist()}) are not finite or have "
            "no area; expected finite x, y and positive w, h"
        )
    x, y, w, h = boxes.T
    centers = np.stack([x + w * 0.5, y + h * 0.5], axis=1).astype(np.float32)
    too_wide = w > aspect_ratio * h
    width = np.where(too_wide, w, h * aspect_ratio)
    height = np.where(too_wide, w / aspect_ratio, h)
    sizes = np.stack([width, height], axis=1) / pixel_std
    return centers, sizes.astype(np.float32) * np.float32(padding)


def affine_matrices(
    centers: np.ndarray,
    scales: np.ndarray,
    output_size: Sequence[int] = (192, 256),
    rotations: np.ndarray | None = None,
    shift: Sequence[float] = (0.0, 0.0),
    inverse: bool = False,
) -> np.ndarray:
    """Image -> crop affine matrices for N people (crop -> image with ``inverse=True``).

    Each equals the official ``get_affine_transform(center, scale, rot, output_size, shift,
    inv)``: the official builds three point pairs in float32 (the center, a point half a crop
    width above it rotated by ``rot`` degrees, and a third one at a right angle) and solves
    for the affine map with OpenCV in float64. Here the same float32 points are built, and the
    map is solved in closed form, so results agree with OpenCV to ~1e-12 relative.

    Shape: centers (N, 2), scales (N, 2), rotations (N,) in degrees -> (N, 2, 3) float64.
    ``output_size`` is (width, height); ``shift`` is in units of the scaled box size.
    """
    centers = np.asarray(_numpy(centers), dtype=np.float32)
    scales = np.asarray(_numpy(scales), dtype=np.float32)
    if centers.ndim != 2 or centers.shape[1] != 2 or scales.shape != centers.shape:
        raise BoxError(
            f"centers have shape {centers.shape} and scales {scales.shape}; expected both (N, 2), one row per person"
        )
    bad = ~np.isfinite(centers).all(axis=1) | ~np.isfinite(scales).all(axis=1) | (scales <= 0).any(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise BoxError(
            f"people {rows.tolist()} have center {centers[rows[0]].tolist()}, scale {scales[rows[0]].tolist()}; "
            "expected a finite center and a positive finite scale"
        )
    angles = np.zeros(len(centers)) if rotations is None else np.asarray(rotations, dtype=np.float64)
    src = _official_source_points(centers, scales, angles, np.asarray(shift, dtype=np.float32))
    dst = _official_crop_points(output_size)
    dst = np.broadcast_to(dst, src.shape)
    return _solve_affine(dst, src) if inverse else _solve_affine(src, dst)


def affine_matrix(
    center: np.ndarray,
    scale: np.ndarray,
    rot: float = 0.0,
    output_size: Sequence[int] = (192, 256),
    shift: Sequence[float] = (0.0, 0.0),
    inverse: bool = False,
) -> np.ndarray:
    """One person's image -> crop matrix, the official ``get_affine_transform``.

    Shape: center (2,), scale (2,) -> (2, 3) float64. See :func:`affine_matrices`.
    """
    centers, scales = np.asarray(_numpy(center))[None], np.asarray(_numpy(scale))[None]
    return affine_matrices(centers, scales, output_size, np.array([rot]), shift, inverse)[0]


def _official_source_points(
    centers: np.ndarray, scales: np.ndarray, angles: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """The official three image points, rounded to float32 exactly where it rounds them.

    Shape: centers (N, 2) f32, scales (N, 2) f32, angles (N,) degrees, shift (2,) f32 -> (N, 3, 2) f32.
    """
    box_px = scales * np.float32(PIXEL_STD)
    offset = box_px * shift
    half_width = (box_px[:, 0] * np.float32(-0.5)).astype(np.float64)
    radians = np.pi * angles / 180
    # (0, -w/2) rotated by the angle; the official keeps this direction in float64.
    direction = np.stack([-(half_width * np.sin(radians)), half_width * np.cos(radians)], axis=1)
    first = centers + offset
    second = (centers.astype(np.float64) + direction + offset).astype(np.float32)
    return np.stack([first, second, _third_point(first, second)], axis=1)


def _official_crop_points(output_size: Sequence[int]) -> np.ndarray:
    """The official three crop points: middle, half a width above it, and the right angle.

    Shape: output_size (width, height) -> (3, 2) float32.
    """
    width, height = float(output_size[0]), float(output_size[1])
    middle = np.array([width * 0.5, height * 0.5], dtype=np.float32)
    above = middle + np.array([0.0, width * -0.5], dtype=np.float32)
    return np.stack([middle, above, _third_point(middle, above)])


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` plus ``a - b`` turned by 90 degrees, in the points' dtype. Shape: (..., 2)."""
    d = a - b
    return b + np.stack([-d[..., 1], d[..., 0]], axis=-1)


def _solve_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The affine maps sending three points onto three others, solved in float64.

    With p1 - p0 and p2 - p0 as the columns of P, and likewise Q, the linear part is Q P^-1
    and the translation is q0 - (Q P^-1) p0.

    Shape: src (N, 3, 2), dst (N, 3, 2) -> (N, 2, 3) float64.
    """
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    p = np.stack([src[:, 1] - src[:, 0], src[:, 2] - src[:, 0]], axis=2)
    q = np.stack([dst[:, 1] - dst[:, 0], dst[:, 2] - dst[:, 0]], axis=2)
    det = p[:, 0, 0] * p[:, 1, 1] - p[:, 0, 1] * p[:, 1, 0]
    p_inv = np.stack(
        [np.stack([p[:, 1, 1], -p[:, 0, 1]], axis=1), np.stack([-p[:, 1, 0], p[:, 0, 0]], axis=1)], axis=1
    ) / det[:, None, None]
    linear = q @ p_inv
    translation = dst[:, 0] - np.einsum("nij,nj->ni", linear, src[:, 0])
    return np.concatenate([linear, translation[:, :, None]], axis=2)


def crop_batch(
    image: np.ndarray | torch.Tensor,
    centers: np.ndarray,
    scales: np.ndarray,
    output_size: Sequence[int] = (192, 256),
    rotations: np.ndarray | None = None,
) -> torch.Tensor:
    """Crop every person of one image with one ``grid_sample`` call on the image's device.

    Bilinear sampling with a zero border, as ``cv2.warpAffine(image, affine_matrix(...),
    output_size, flags=INTER_LINEAR, borderMode=BORDER_CONSTANT, borderValue=0)``: crop pixel
    (x, y) samples the image at ``inverse_matrix @ (x, y, 1)``, pixel centres on integers.
    Sampling positions are float32: they are off by up to ~2e-7 * (max(H, W) + the crop's
    diagonal in image px) px, and OpenCV (>= 4.11) samples at float32 positions too, so crops
    agree with it to:

    - float input: |difference| <= 1e-4 + 3e-7 * (max(H, W) + crop diagonal) * (largest step
      between neighbouring pixels, the zero border included): <= 1e-3 on smooth images,
      ~0.1 at worst on 640-px white noise in 0..255;
    - uint8 input: the crop is rounded to whole grey levels, as OpenCV's uint8 output is, and
      differs from it by at most 1 grey level (a value near .5 rounded the other way).

    OpenCV < 4.11 snaps positions to 1/32 px, so against it the difference can reach
    |local gradient| / 64.

    Shape: image (H, W, 3) numpy uint8/float or (3, H, W) torch uint8/float, centers (N, 2),
    scales (N, 2), rotations (N,) degrees -> (N, 3, out_h, out_w) float32 in the image's value
    range and channel order, on the image's device. ``output_size`` is (width, height).
    """
    pixels, is_uint8 = _image_as_chw(image)
    crop_to_image = affine_matrices(centers, scales, output_size, rotations, inverse=True)
    # Only the pixels the crops sample become float: for one person, a fraction of a video frame.
    left, top, right, bottom = _sampled_window(crop_to_image, output_size, pixels.shape[2], pixels.shape[1])
    if right <= left or bottom <= top:  # no person, or every crop outside the image: all border
        return torch.zeros(len(crop_to_image), 3, output_size[1], output_size[0], device=pixels.device)
    window = pixels[:, top:bottom, left:right].float()[None]
    crop_to_window = crop_to_image.copy()
    crop_to_window[:, :, 2] -= (left, top)
    crops = warp_batch(window.expand(len(crop_to_image), -1, -1, -1), crop_to_window, output_size)
    return crops.round_() if is_uint8 else crops


def _sampled_window(crop_to_image: np.ndarray, output_size: Sequence[int], width: int, height: int) -> tuple[int, ...]:
    """The image pixels bilinear sampling of these crops can read: (left, top, right, bottom), ends
    excluded, within the image (the whole image when a matrix is not finite).

    Shape: crop_to_image (N, 2, 3); ``output_size`` is (width, height).
    """
    out_w, out_h = output_size
    corners = np.array([[0, 0, 1], [out_w - 1, 0, 1], [0, out_h - 1, 1], [out_w - 1, out_h - 1, 1]], np.float64)
    points = np.einsum("nij,cj->nci", crop_to_image, corners).reshape(-1, 2)  # sampling is affine: the corners bound it
    if not len(points):
        return 0, 0, 0, 0
    if not np.isfinite(points).all():
        return 0, 0, width, height
    # A position p reads pixels floor(p) and floor(p) + 1.
    low, high = np.floor(points.min(0)), np.floor(points.max(0)) + 2
    left, right = (int(np.clip(v, 0, width)) for v in (low[0], high[0]))
    top, bottom = (int(np.clip(v, 0, height)) for v in (low[1], high[1]))
    return left, top, right, bottom


def warp_batch(images: torch.Tensor, crop_to_image: np.ndarray, output_size: Sequence[int]) -> torch.Tensor:
    """Crop ``images[n]`` through ``crop_to_image[n]`` for the whole batch with one ``grid_sample``.

    The sampling of :func:`crop_batch` (bilinear, zero border, pixel centres on integers), for
    any crop -> image matrices, e.g. augmented ones. Images of different sizes may share a batch
    zero-padded at the right and bottom: padding with zeros samples exactly like the border.

    Shape: images (N, 3, H, W) float, crop_to_image (N, 2, 3) -> (N, 3, out_h, out_w) float32 on
    the images' device. ``output_size`` is (width, height).
    """
    height, width = images.shape[2:]
    out_w, out_h = int(output_size[0]), int(output_size[1])
    # grid_sample (align_corners=False) reads image pixel x at (2x + 1) / W - 1. The grid is
    # one column term plus one row term, each rounded to float32 once from float64.
    to_grid = np.array([2.0 / width, 2.0 / height])
    linear = crop_to_image[:, :, :2] * to_grid[:, None]
    offset = (crop_to_image[:, :, 2] + 0.5) * to_grid - 1.0
    col_terms = np.arange(out_w)[None, :, None] * linear[:, None, :, 0]
    row_terms = np.arange(out_h)[None, :, None] * linear[:, None, :, 1] + offset[:, None, :]
    row_grid = torch.from_numpy(row_terms.astype(np.float32)).to(images.device)
    col_grid = torch.from_numpy(col_terms.astype(np.float32)).to(images.device)
    grid = row_grid[:, :, None] + col_grid[:, None]  # (N, out_h, out_w, 2)
    return torch.nn.functional.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def _image_as_chw(image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The image as a (3, H, W) tensor on its device (a view of a numpy array), and whether it is uint8."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise PosekitError(f"image array has shape {image.shape}; expected (H, W, 3)")
        pixels = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise PosekitError(f"image tensor has shape {tuple(image.shape)}; expected (3, H, W)")
        pixels = image
    else:
        raise PosekitError(f"image is a {type(image).__name__}; expected a numpy array or a torch tensor")
    if pixels.dtype != torch.uint8 and not pixels.dtype.is_floating_point:
        raise PosekitError(f"image has dtype {pixels.dtype}; expected uint8 or a float type")
    return pixels, pixels.dtype == torch.uint8


def transform_preds(
    coords: np.ndarray | torch.Tensor,
    centers: np.ndarray,
    scales: np.ndarray,
    heatmap_size: Sequence[int],
) -> np.ndarray | torch.Tensor:
    """Map heatmap coordinates back to image pixels, as the official ``transform_preds``.

    Uses ``affine_matrices(..., heatmap_size, inverse=True)`` (the official inverse matrix)
    and applies it in float64. numpy in -> numpy out; torch in -> torch out on its device.

    Shape: coords (N, K, 2) heatmap px, centers (N, 2), scales (N, 2) -> (N, K, 2) image px,
    float32 (float64 if coords are float64). ``heatmap_size`` is (width, height).
    """
    matrices = affine_matrices(centers, scales, heatmap_size, inverse=True)[:, None]
    if isinstance(coords, torch.Tensor):
        matrices = torch.from_numpy(matrices).to(coords.device)
        points = coords.double()
        out_dtype = torch.promote_types(coords.dtype, torch.float32)
    else:
        points = np.asarray(coords, dtype=np.float64)
        out_dtype = np.result_type(np.asarray(coords).dtype, np.float32)
    mapped = points[..., 0:1] * matrices[..., 0] + points[..., 1:2] * matrices[..., 1] + matrices[..., 2]
    return mapped.to(out_dtype) if isinstance(mapped, torch.Tensor) else mapped.astype(out_dtype)


def _numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """A numpy view of an array or of a tensor on any device."""
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
