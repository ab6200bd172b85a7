"""The COCO-17 keypoint convention: names, left/right pairs, skeleton and OKS sigmas.

Every module that needs to know what joint ``k`` is imports it from here.
"""
from __future__ import annotations

import numpy as np

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye", "right_eye",
    "left_ear", "right_ear",
    "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
    "left_hip", "right_hip",
    "left_knee", "right_knee",
    "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
# The category id of "person" in COCO annotation, detection and result files.
PERSON_CATEGORY_ID = 1

# (left, right) joint indices swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# Joint index each joint lands on after a horizontal flip, shape (17,).
FLIP_INDEX: np.ndarray = np.arange(NUM_KEYPOINTS)
for _left, _right in FLIP_PAIRS:
    FLIP_INDEX[_left], FLIP_INDEX[_right] = _right, _left
FLIP_INDEX.setflags(write=False)

# Limbs as 0-based joint index pairs (COCO's ``categories[0].skeleton`` minus one).
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# Per-joint OKS falloff, as in pycocotools' COCOeval (kpt_oks_sigmas), shape (17,).
OKS_SIGMAS: np.ndarray = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
) / 10.0
OKS_SIGMAS.setflags(write=False)


def joint_side(index: int) -> str:
    """Return ``"left"``, ``"right"`` or ``"center"`` for a COCO-17 joint index."""
    name = KEYPOINT_NAMES[index]
    return name.split("_")[0] if "_" in name else "center"
