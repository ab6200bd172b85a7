"""Keypoints <-> heatmaps, with the rounding rules of the official SimpleBaseline code.

``encode`` draws the training targets (an unnormalised Gaussian with peak 1 per joint),
``decode`` turns network heatmaps into image coordinates with one of three refinements, and
``flip_back`` undoes the horizontal flip of the flip test. Everything is batched over people
and joints; numpy and torch inputs both work and come back as they came.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from posekit.core.coco17 import FLIP_PAIRS
from posekit.core.crop import transform_preds
from posekit.defaults import DECODE_METHODS
from posekit.errors import PosekitError

# DARK (Zhang et al., CVPR 2020) smooths heatmaps with an 11-tap Gaussian; its code leaves the
# sigma to OpenCV, which derives 0.3 * ((k - 1) / 2 - 1) + 0.8 = 2.0 from the size k.
DARK_KERNEL_SIZE = 11
DARK_KERNEL_SIGMA = 0.3 * ((DARK_KERNEL_SIZE - 1) * 0.5 - 1) + 0.8


def encode(
    keypoints: np.ndarray,
    visibility: np.ndarray,
    image_size: Sequence[int] = (192, 256),
    heatmap_size: Sequence[int] = (48, 64),
    sigma: float = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmap targets and joint weights, as the official ``generate_target``.

    Each joint goes to heatmap pixel ``mu = int(x / stride + 0.5)`` (Python ``int``: toward
    zero); the Gaussian ``exp(-d^2 / (2 sigma^2))`` is cut to a (6 sigma + 1)-px square around
    ``mu``. A joint whose square misses the heatmap gets weight 0; a joint is drawn only if
    its weight is above 0.5; weight is the visibility otherwise. Non-finite keypoints count
    as missing the heatmap. Bit-identical to the official loop (the tests check it).

    Shape: keypoints (N, K, 2) crop px, visibility (N, K) -> targets (N, K, h, w) float32,
    weights (N, K) float32. Sizes are (width, height).
    """
    points = np.asarray(keypoints, dtype=np.float64)
    weights = np.asarray(visibility, dtype=np.float32)
    if points.ndim != 3 or points.shape[2] != 2 or weights.shape != points.shape[:2]:
        raise PosekitError(
            f"keypoints have shape {points.shape} and visibility {weights.shape}; expected (N, K, 2) and (N, K)"
        )
    width, height = int(heatmap_size[0]), int(heatmap_size[1])
    stride = np.asarray(image_size, dtype=np.float64) / np.asarray(heatmap_size, dtype=np.float64)
    radius = sigma * 3
    finite = np.isfinite(points).all(axis=2)
    mu = np.trunc(np.where(finite[..., None], points, 0.0) / stride + 0.5)
    first = np.trunc(mu - radius).astype(np.int64)  # the square's top-left pixel
    stop = np.trunc(mu + radius + 1).astype(np.int64)  # one past its bottom-right pixel
    misses = (first[..., 0] >= width) | (first[..., 1] >= height) | (stop[..., 0] < 0) | (stop[..., 1] < 0)
    weights = np.where(misses | ~finite, np.float32(0), weights)

    # The official cuts its rows and columns out of this one (size, size) float32 square.
    size = 2 * radius + 1
    steps = np.arange(0, size, 1, np.float32)
    square = np.exp(-((steps - size // 2) ** 2 + (steps[:, None] - size // 2) ** 2) / (2 * sigma**2))

    span = stop - first  # rows and columns of the square pasted, never more than it has
    col = np.arange(width) - first[..., 0, None]  # (N, K, w): column of the square at each pixel
    row = np.arange(height) - first[..., 1, None]  # (N, K, h)
    col_in = (col >= 0) & (col < span[..., 0, None])
    row_in = (row >= 0) & (row < span[..., 1, None])
    drawn = (weights > 0.5)[..., None, None] & row_in[..., :, None] & col_in[..., None, :]
    last = len(steps) - 1
    values = square[row.clip(0, last)[..., :, None], col.clip(0, last)[..., None, :]]
    return np.where(drawn, values, np.float32(0)), weights


def heatmap_maxima(heatmaps: np.ndarray | torch.Tensor) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Location and value of each heatmap's maximum, as the official ``get_max_preds``.

    The first maximum in row-major order wins; a map whose maximum is <= 0 reports (0, 0).

    Shape: heatmaps (N, K, h, w) -> coords (N, K, 2) float32 heatmap px (x, y), scores (N, K).
    numpy in -> numpy out; torch in -> torch out on its device.
    """
    maps, was_numpy = _as_tensor(heatmaps)
    coords, scores = _maxima(maps)
    return (coords.numpy(), scores.numpy()) if was_numpy else (coords, scores)


def decode(
    heatmaps: np.ndarray | torch.Tensor,
    centers: np.ndarray | torch.Tensor,
    scales: np.ndarray | torch.Tensor,
    method: str = "quarter",
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Image-pixel keypoints and their scores from heatmaps.

    ``method``:

    - ``"argmax"``: the maximum's pixel;
    - ``"quarter"``: the official post-processing: from the maximum at (px, py), a quarter
      pixel toward the higher neighbour on each axis, only where ``1 < px < w - 1`` and
      ``1 < py < h - 1`` (strict: index 1 is not refined either, as in the official code);
    - ``"dark"``: DARK (Zhang et al., CVPR 2020): smooth each map with an 11-tap Gaussian
      (zero border, rescaled to keep its maximum), take the log, and step from the maximum by
      ``-H^-1 g`` (gradient and Hessian from central differences), where
      ``1 < px < w - 2`` and ``1 < py < h - 2`` and the Hessian is invertible.

    Coordinates then go through the inverse crop transform (:func:`posekit.core.crop.transform_preds`).
    Scores are the heatmap maxima. numpy in -> numpy out; torch in -> torch out on its device.

    Shape: heatmaps (N, K, h, w), centers (N, 2), scales (N, 2) -> coords (N, K, 2) float32
    image px, scores (N, K).
    """
    if method not in DECODE_METHODS:
        raise PosekitError(f"decode method {method!r} is unknown; expected one of {', '.join(DECODE_METHODS)}")
    maps, was_numpy = _as_tensor(heatmaps)
    coords, scores = _maxima(maps)
    if method == "quarter":
        coords = coords + _quarter_offsets(maps, coords)
    elif method == "dark":
        coords = coords + _dark_offsets(maps, coords, scores)
    coords = transform_preds(coords, centers, scales, (maps.shape[3], maps.shape[2]))
    return (coords.numpy(), scores.numpy()) if was_numpy else (coords, scores)


def flip_back(
    heatmaps: np.ndarray | torch.Tensor,
    flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS,
    shift: bool = True,
) -> np.ndarray | torch.Tensor:
    """Heatmaps of a horizontally flipped crop, brought back to the unflipped crop.

    Mirrors the width and swaps each left/right pair, as the official ``flip_back``. With
    ``shift`` (the official ``SHIFT_HEATMAP``), every column then moves one pixel right and
    column 0 keeps its value: mirroring the heatmap puts a joint ``(stride - 1) / stride``
    heatmap px (0.75 at stride 4) left of where mirroring the crop put it.

    Shape: heatmaps (N, K, h, w) -> (N, K, h, w), the same type, dtype and device.
    """
    maps, was_numpy = _as_tensor(heatmaps)
    if maps.ndim != 4:
        raise PosekitError(f"heatmaps have shape {tuple(maps.shape)}; expected (N, K, h, w)")
    order = torch.arange(maps.shape[1])
    pairs = torch.as_tensor(flip_pairs, dtype=torch.long).reshape(-1, 2)
    order[pairs[:, 0]], order[pairs[:, 1]] = pairs[:, 1], pairs[:, 0]
    out = maps[:, order.to(maps.device)].flip(3)
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=3)
    return out.numpy() if was_numpy else out


def _as_tensor(heatmaps: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The heatmaps as a tensor (sharing memory with a numpy input), and whether they were numpy."""
    if isinstance(heatmaps, torch.Tensor):
        return heatmaps, False
    if isinstance(heatmaps, np.ndarray):
        return torch.from_numpy(np.require(heatmaps, requirements=["C", "W"])), True
    raise PosekitError(f"heatmaps are a {type(heatmaps).__name__}; expected a numpy array or a torch tensor")


def _maxima(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``get_max_preds`` on a tensor. Shape: (N, K, h, w) -> (N, K, 2) float32, (N, K)."""
    if maps.ndim != 4:
        raise PosekitError(f"heatmaps have shape {tuple(maps.shape)}; expected (N, K, h, w)")
    scores, index = maps.flatten(2).max(dim=2)  # the first maximum, as numpy's argmax
    width = maps.shape[3]
    coords = torch.stack([index % width, index // width], dim=2).float()
    return coords * (scores > 0)[..., None], scores


def _values_at(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """maps[n, k, y[n, k], x[n, k]], positions clamped into the map. Shape: (N, K)."""
    height, width = maps.shape[2:]
    index = y.clamp(0, height - 1) * width + x.clamp(0, width - 1)
    return maps.flatten(2).gather(2, index[..., None])[..., 0]


def _quarter_offsets(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """The official quarter-pixel step toward the higher neighbour. Shape: (N, K, 2) float32."""
    height, width = maps.shape[2:]
    x, y = (coords + 0.5).floor().long().unbind(2)
    step = torch.stack(
        [
            _values_at(maps, x + 1, y) - _values_at(maps, x - 1, y),
            _values_at(maps, x, y + 1) - _values_at(maps, x, y - 1),
        ],
        dim=2,
    ).sign()
    inside = (x > 1) & (x < width - 1) & (y > 1) & (y < height - 1)
    return (0.25 * step * inside[..., None]).float()


def _dark_offsets(maps: torch.Tensor, coords: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """DARK's Newton step on the log of the smoothed maps.

    Shape: maps (N, K, h, w), coords (N, K, 2) of the maxima, peaks (N, K) their values -> (N, K, 2) float32.
    """
    height, width = maps.shape[2:]
    smooth = _smoothed(maps, peaks)
    x, y = coords.long().unbind(2)

    def log_at(dx: int, dy: int) -> torch.Tensor:
        return _values_at(smooth, x + dx, y + dy).clamp_min(1e-10).log()

    centre = log_at(0, 0)
    dx = 0.5 * (log_at(1, 0) - log_at(-1, 0))
    dy = 0.5 * (log_at(0, 1) - log_at(0, -1))
    # Second differences span two pixels, as in the DARK code.
    dxx = 0.25 * (log_at(2, 0) - 2 * centre + log_at(-2, 0))
    dyy = 0.25 * (log_at(0, 2) - 2 * centre + log_at(0, -2))
    dxy = 0.25 * (log_at(1, 1) - log_at(1, -1) - log_at(-1, 1) + log_at(-1, -1))
    det = dxx * dyy - dxy**2
    usable = (x > 1) & (x < width - 2) & (y > 1) & (y < height - 2) & (det != 0)
    offset = torch.stack([dxy * dy - dyy * dx, dxy * dx - dxx * dy], dim=2) / det[..., None]
    return torch.where(usable[..., None], offset, 0.0).float()


def _smoothed(maps: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """Gaussian-smoothed maps (zero border), rescaled so each map's maximum is its peak again.

    Shape: maps (N, K, h, w), peaks (N, K) -> (N, K, h, w).
    """
    height, width = maps.shape[2:]
    # The separable blur as two banded matrices, one per axis: a zero border for free.
    smooth = _blur_matrix(height, maps) @ maps @ _blur_matrix(width, maps)
    return smooth * (peaks / smooth.flatten(2).amax(2))[..., None, None]


def _blur_matrix(size: int, like: torch.Tensor) -> torch.Tensor:
    """(size, size) symmetric matrix applying DARK's 1-D Gaussian with a zero border."""
    taps = torch.arange(DARK_KERNEL_SIZE, dtype=torch.float64) - DARK_KERNEL_SIZE // 2
    kernel = torch.exp(-(taps**2) / (2 * DARK_KERNEL_SIGMA**2))
    kernel = kernel / kernel.sum()
    distance = torch.arange(size)[None, :] - torch.arange(size)[:, None]
    band = distance.abs() <= DARK_KERNEL_SIZE // 2
    matrix = torch.where(band, kernel[(distance + DARK_KERNEL_SIZE // 2).clamp(0, DARK_KERNEL_SIZE - 1)], 0.0)
    return matrix.to(like.device, like.dtype)
