"""Object keypoint similarity, OKS non-maximum suppression and the official person rescoring.

The rules of the paper's evaluation code (``nms/nms.py`` and the COCO dataset's ``evaluate``),
vectorised; :func:`posekit.eval.coco.evaluate` and ``posekit predict`` both use them.
"""
from __future__ import annotations

import numpy as np

from posekit.core.coco17 import OKS_SIGMAS

# The paper's COCO test settings (the official experiments/coco/*.yaml, TEST section).
OKS_NMS_THRESHOLD = 0.9
VISIBILITY_THRESHOLD = 0.2


def oks_iou(
    keypoints: np.ndarray,
    other_keypoints: np.ndarray,
    areas: np.ndarray,
    other_areas: np.ndarray,
    sigmas: np.ndarray = OKS_SIGMAS,
) -> np.ndarray:
    """Object keypoint similarity of every person in one set with every person in another.

    The OKS-NMS flavour of the official code: all joints count (no visibility test) and the
    object scale is the mean of the two areas, ``exp(-d^2 / (2 * ((a1 + a2) / 2) * (2 sigma)^2))``
    averaged over joints.

    Shape:
        keypoints: (N, K, 2 or 3), other_keypoints: (M, K, 2 or 3); only x, y are used.
        areas: (N,), other_areas: (M,); sigmas: (K,).
        Returns: (N, M) float64.
    """
    a = np.asarray(keypoints, dtype=np.float64)[:, None, :, :2]
    b = np.asarray(other_keypoints, dtype=np.float64)[None, :, :, :2]
    squared_distances = ((a - b) ** 2).sum(-1)  # (N, M, K)
    variances = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    mean_areas = (np.asarray(areas, dtype=np.float64)[:, None] + np.asarray(other_areas, dtype=np.float64)[None, :]) / 2
    # np.spacing(1) keeps zero-area people finite, as in the official code.
    exponents = squared_distances / variances / (mean_areas[..., None] + np.spacing(1)) / 2
    return np.exp(-exponents).mean(-1)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    threshold: float = OKS_NMS_THRESHOLD,
) -> np.ndarray:
    """Greedy non-maximum suppression of people by OKS, as the official evaluation does per image.

    Visits people by descending score; each kept person removes every remaining one whose OKS
    with it is above ``threshold``. Among equal scores the later index is visited first, the
    order the official ``argsort()[::-1]`` gives.

    Shape:
        keypoints: (N, K, 3) or (N, K, 2), scores: (N,), areas: (N,).
        Returns: (M,) int64 indices of the kept people, highest score first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="stable")[::-1]
    similarity = oks_iou(keypoints, keypoints, areas, areas)
    suppressed = np.zeros(len(scores), dtype=bool)
    kept = []
    # Greedy by nature: whether a person survives depends on the people kept before it.
    for index in order:
        if not suppressed[index]:
            kept.append(index)
            suppressed |= similarity[index] > threshold
    return np.asarray(kept, dtype=np.int64)


def rescore(keypoints: np.ndarray, box_scores: np.ndarray, threshold: float = VISIBILITY_THRESHOLD) -> np.ndarray:
    """The official person score: box score x mean of the keypoint scores above ``threshold``.

    A person with no keypoint score above ``threshold`` gets score 0.

    Shape:
        keypoints: (N, K, 3) with scores in ``[..., 2]``, box_scores: (N,). Returns: (N,) float64.
    """
    keypoint_scores = np.asarray(keypoints, dtype=np.float64)[..., 2]
    confident = keypoint_scores > threshold
    counts = confident.sum(1)
    totals = np.where(confident, keypoint_scores, 0.0).sum(1)
    means = np.divide(totals, counts, out=np.zeros(len(counts)), where=counts > 0)
    return np.asarray(box_scores, dtype=np.float64) * means


def per_image_oks_nms(
    keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, image_ids: np.ndarray
) -> np.ndarray:
    """Indices kept by :func:`oks_nms` run separately on each image's people.

    Shape: keypoints (N, K, 3), scores (N,), areas (N,), image_ids (N,). Returns: (M,) int64.
    """
    order = np.argsort(image_ids, kind="stable")
    boundaries = np.flatnonzero(np.diff(image_ids[order])) + 1
    kept = [group[oks_nms(keypoints[group], scores[group], areas[group])] for group in np.split(order, boundaries)]
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
