"""Object keypoint similarity, OKS non-maximum suppression and the official person rescoring.

The rules of the paper's evaluation code (``nms/nms.py`` and the COCO dataset's ``evaluate``),
vectorised; :func:`posekit.eval.coco.evaluate` and ``posekit predict`` both use them. The
tracker's similarity (:func:`pose_similarity`) is the same OKS over the joints confident in both poses.
"""
from __future__ import annotations

import numpy as np

from posekit.core.boxes import JOINT_THRESHOLD, greedy_nms, joint_boxes
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
    joints: np.ndarray | None = None,
) -> np.ndarray:
    """Object keypoint similarity of every person in one set with every person in another.

    The OKS-NMS flavour of the official code: all joints count (no visibility test) and the
    object scale is the mean of the two areas, ``exp(-d^2 / (2 * ((a1 + a2) / 2) * (2 sigma)^2))``
    averaged over joints. With ``joints``, the average is over the joints it marks for each
    pair, and a pair with none marked has similarity 0.

    Shape:
        keypoints: (N, K, 2 or 3), other_keypoints: (M, K, 2 or 3); only x, y are used.
        areas: (N,), other_areas: (M,); sigmas: (K,); joints: (N, M, K) bool.
        Returns: (N, M) float64.
    """
    a = np.asarray(keypoints, dtype=np.float64)[:, None, :, :2]
    b = np.asarray(other_keypoints, dtype=np.float64)[None, :, :, :2]
    squared_distances = ((a - b) ** 2).sum(-1)  # (N, M, K)
    variances = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    mean_areas = (np.asarray(areas, dtype=np.float64)[:, None] + np.asarray(other_areas, dtype=np.float64)[None, :]) / 2
    # np.spacing(1) keeps zero-area people finite, as in the official code.
    similarity = np.exp(-squared_distances / variances / (mean_areas[..., None] + np.spacing(1)) / 2)
    if joints is None:
        return similarity.mean(-1)
    counts = joints.sum(-1)
    return np.divide(np.where(joints, similarity, 0).sum(-1), counts, out=np.zeros(counts.shape), where=counts > 0)


def pose_similarity(
    keypoints: np.ndarray, other: np.ndarray, sigmas: np.ndarray = OKS_SIGMAS, threshold: float = JOINT_THRESHOLD
) -> np.ndarray:
    """OKS of every pose with every other, over the joints confident (>= ``threshold``) in both.

    The object scale is the mean area of the two poses' confident-joint extents; a pair with no
    joint confident in both has similarity 0.

    Shape: keypoints (N, K, 3), other (M, K, 3), sigmas (K,) -> (N, M) float64.
    """
    a, b = np.asarray(keypoints, np.float64), np.asarray(other, np.float64)
    areas = [np.nan_to_num(joint_boxes(p, threshold, 1.0)[:, 2:].prod(1)) for p in (a, b)]
    both = (a[:, None, :, 2] >= threshold) & (b[None, :, :, 2] >= threshold)  # (N, M, K)
    return oks_iou(a, b, areas[0], areas[1], sigmas, joints=both)


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
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")[::-1]
    return greedy_nms(oks_iou(keypoints, keypoints, areas, areas), order, threshold)


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
