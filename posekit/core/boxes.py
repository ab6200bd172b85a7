"""Person boxes: clipping to the image, boxes from joints, IoU and greedy non-maximum suppression.

All boxes are COCO ``x, y, w, h`` in pixels. Two clipping rules exist because two callers need
different ones, each named for its rule:

- :func:`clip_boxes` clips to ``[0, W] x [0, H]`` and keeps a box that still has a side of at
  least ``min_side`` pixels; :func:`sanitize_boxes` is that rule for boxes users pass in, with a
  shape check and one warning naming every box it drops.
- :func:`clean_boxes` is the official COCO data loader's rule (``x2 = min(W - 1, ...)``), which
  evaluation and training must follow to reproduce the paper's numbers.

:func:`greedy_nms` is the one greedy suppression loop; box NMS (:func:`box_nms`) and OKS-NMS
(:func:`posekit.core.oks.oks_nms`) differ only in the similarity and the visiting order they give it.
"""
from __future__ import annotations

import warnings

import numpy as np

from posekit.errors import BoxError

# Boxes with a side shorter than this inside the image (pixels) cannot be cropped: no area.
MIN_BOX_SIDE = 1e-3
# The paper's propagated box (Xiao et al. 2018, section 3): the extent of the joints scoring at
# least 0.4, enlarged by 15%.
JOINT_THRESHOLD = 0.4
BOX_ENLARGE = 1.15


def clip_boxes(boxes_xywh: np.ndarray, image_wh: tuple[int, int], min_side: float = MIN_BOX_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to ``[0, W] x [0, H]``; keep those finite with both sides >= ``min_side`` after clipping.

    Judged on the clipped float32 box a crop is made from: a box outside the image, of negative
    size, or with a subnormal side has (next to) nothing there.

    Shape: boxes (N, 4) xywh -> (kept clipped boxes (M, 4) float32, kept mask (N,) bool).
    """
    boxes = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    width, height = image_wh
    with np.errstate(invalid="ignore", over="ignore"):  # inf + inf, -inf + inf: dropped as not finite
        low = np.clip(boxes[:, :2], 0, [width, height])
        high = np.clip(boxes[:, :2] + boxes[:, 2:], 0, [width, height])
        clipped = np.concatenate([low, high - low], axis=1).astype(np.float32)
        keep = np.isfinite(boxes).all(1) & (clipped[:, 2:] >= min_side).all(1)
    return clipped[keep], keep


def sanitize_boxes(boxes_xywh: np.ndarray, image_wh: tuple[int, int], image_name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Clip person boxes users pass in to the image and drop those no crop can be made from.

    A box is dropped when a coordinate is NaN or infinite, its width or height inside the image
    is below :data:`MIN_BOX_SIDE` (1/1000 px: subnormal sizes included), or it lies entirely
    outside the image; one warning names ``image_name`` and every dropped
    box. Kept boxes are clipped to [0, W] x [0, H].

    Args:
        boxes_xywh: COCO boxes x, y, w, h in pixels. Shape: (N, 4); an empty array is fine.
        image_wh: (width, height) of the image.
        image_name: how the warning refers to the image (its file name, usually).

    Returns:
        (boxes, keep): the kept, clipped boxes, shape (M, 4) float32, and the mask of kept input
        rows, shape (N,) bool, to filter anything that goes with the boxes (scores).

    Raises:
        BoxError: ``boxes_xywh`` is not (N, 4) numeric.
    """
    try:
        boxes = np.asarray(boxes_xywh, dtype=np.float64)
    except (TypeError, ValueError):
        raise BoxError(f"{image_name}: person boxes must be numbers, shape (N, 4) as x, y, w, h") from None
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BoxError(f"{image_name}: person boxes have shape {boxes.shape}; expected (N, 4) as x, y, w, h")
    clipped, keep = clip_boxes(boxes, image_wh)
    if not keep.all():
        width, height = image_wh
        bad = "; ".join(f"#{i} {np.array2string(boxes[i], precision=1, separator=', ')}" for i in np.flatnonzero(~keep))
        warnings.warn(
            f"{image_name} ({width}x{height}): skipped {int((~keep).sum())} person box(es) that are not finite, "
            f"have no area (a side under {MIN_BOX_SIDE} px inside the image) or lie outside the image: {bad}",
            stacklevel=2,
        )
    return clipped, keep


def clean_boxes(boxes: np.ndarray, image_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip COCO boxes to their images the way the official data loader does.

    ``x1 = max(0, x)``, ``x2 = min(width - 1, x1 + max(0, w - 1))`` (same for y); the cleaned
    box is ``[x1, y1, x2 - x1, y2 - y1]`` and is usable when ``x2 >= x1`` and ``y2 >= y1``.

    Shape:
        boxes: (N, 4) xywh, image_sizes: (N, 2) (width, height).
        Returns: cleaned boxes (N, 4) float64, usable (N,) bool.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    sizes = np.asarray(image_sizes, dtype=np.float64)
    top_left = np.maximum(0.0, boxes[:, :2])
    bottom_right = np.minimum(sizes - 1, top_left + np.maximum(0.0, boxes[:, 2:] - 1))
    usable = (bottom_right >= top_left).all(1)
    return np.concatenate([top_left, bottom_right - top_left], 1), usable


def joint_boxes(keypoints: np.ndarray, threshold: float = JOINT_THRESHOLD, enlarge: float = BOX_ENLARGE) -> np.ndarray:
    """The extent of each pose's confident joints, enlarged about its centre (the paper's propagated box).

    A pose with fewer than two joints at or above ``threshold`` gets a NaN box.

    Shape: keypoints (N, K, 3) -> boxes (N, 4) x, y, w, h float64.
    """
    keypoints = np.asarray(keypoints, np.float64)
    confident = (keypoints[..., 2] >= threshold)[..., None]
    low = np.where(confident, keypoints[..., :2], np.inf).min(1)
    high = np.where(confident, keypoints[..., :2], -np.inf).max(1)
    with np.errstate(invalid="ignore"):  # no confident joint: inf - inf, set to NaN below anyway
        center, size = (low + high) / 2, (high - low) * enlarge
    boxes = np.concatenate([center - size / 2, size], axis=1)
    boxes[confident.sum((1, 2)) < 2] = np.nan
    return boxes


def box_iou(boxes: np.ndarray, other: np.ndarray) -> np.ndarray:
    """IoU of every box with every other box. Shape: (N, 4), (M, 4) xywh -> (N, M) float64."""
    a, b = np.asarray(boxes, np.float64)[:, None], np.asarray(other, np.float64)[None]
    overlap = np.clip(np.minimum(a[..., :2] + a[..., 2:], b[..., :2] + b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None)
    intersection = overlap.prod(-1)
    union = a[..., 2:].prod(-1) + b[..., 2:].prod(-1) - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def greedy_nms(similarity: np.ndarray, order: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: visit items in ``order``, keep an item unless its
    similarity to a kept one is above ``threshold``.

    Shape: similarity (N, N), order (N,) a permutation -> kept indices (M,) int64, in visiting order.
    """
    suppressed = np.zeros(len(order), bool)
    kept = []
    for index in order:  # greedy: whether an item survives depends on the items kept before it
        if not suppressed[index]:
            kept.append(index)
            suppressed |= similarity[index] > threshold
    return np.asarray(kept, np.int64)


def box_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """:func:`greedy_nms` of boxes by IoU, by descending score (earlier index first among equals).

    Shape: boxes (N, 4) xywh, scores (N,) -> kept indices (M,) int64, highest score first.
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return greedy_nms(box_iou(boxes, boxes), order, threshold)
