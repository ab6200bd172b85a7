"""The poses found in one image, as arrays: boxes, box scores and keypoints of its N people."""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from posekit.core.coco17 import PERSON_CATEGORY_ID
from posekit.core.oks import rescore


@dataclasses.dataclass(frozen=True)
class Person:
    """One person of a :class:`Poses`: views into its arrays.

    Attributes:
        box: x, y, w, h in image pixels, shape (4,).
        box_score: the detector's confidence in the box (1.0 for given boxes without scores).
        keypoints: x, y, score of the K joints in image pixels, shape (K, 3); the score is the
            heatmap maximum, not a probability.
    """

    box: np.ndarray
    box_score: float
    keypoints: np.ndarray


@dataclasses.dataclass(frozen=True)
class Poses:
    """The people of one image. ``PoseEstimator`` returns one per image (a list for a list).

    Attributes:
        boxes: (N, 4) float32 x, y, w, h in image pixels.
        box_scores: (N,) float32.
        keypoints: (N, K, 3) float32 x, y, score in image pixels.

    Iterating gives one :class:`Person` per row; ``len`` is N.
    """

    boxes: np.ndarray
    box_scores: np.ndarray
    keypoints: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    def __iter__(self) -> Iterator[Person]:
        return (self[index] for index in range(len(self)))

    def __getitem__(self, index: int) -> Person:
        return Person(self.boxes[index], float(self.box_scores[index]), self.keypoints[index])

    @property
    def scores(self) -> np.ndarray:
        """The official person score: box score x mean keypoint score above 0.2, shape (N,)."""
        return rescore(self.keypoints, self.box_scores)

    def to_coco(self, image_id: int, decimals: int = 3) -> list[dict]:
        """COCO keypoint results, one dict per person:
        ``{image_id, category_id: 1, keypoints: [x, y, score] * K, score}`` (see :attr:`scores`)."""
        points = np.round(self.keypoints.astype(np.float64), decimals).reshape(len(self), -1 if len(self) else 0)
        return [
            {"image_id": int(image_id), "category_id": PERSON_CATEGORY_ID, "keypoints": row.tolist(), "score": float(score)}
            for row, score in zip(points, self.scores)
        ]
