"""Keypoint sets: what joint ``k`` is, which joints a horizontal flip swaps, how OKS weighs them.

A :class:`KeypointSet` describes the K heatmaps of a model. COCO-17 (:data:`COCO17`) is the
default; any COCO-format keypoint file (what CVAT exports, Label Studio through its COCO
converter) defines another one through its ``categories`` entry: :meth:`KeypointSet.from_coco`.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

import numpy as np

from posekit.core import coco17
from posekit.errors import AnnotationError

# A new joint's OKS sigma when the file gives none: the mean of COCO-17's sigmas, so an unknown
# joint is judged as strictly as an average COCO joint (between a wrist, 0.062, and a knee, 0.087).
DEFAULT_SIGMA = float(coco17.OKS_SIGMAS.mean())

# Words that mark a joint's side; a name's mirror swaps the word for its opposite.
_SIDE_WORDS = {"left": "right", "right": "left", "l": "r", "r": "l"}
_WORD_SPLIT = re.compile(r"([_\-\s.]+)")


@dataclasses.dataclass(frozen=True)
class KeypointSet:
    """The joints a model predicts.

    Attributes:
        names: K joint names, in heatmap order.
        skeleton: limbs as 0-based (a, b) joint index pairs, for drawing.
        flip_pairs: (left, right) index pairs a horizontal flip swaps.
        sigmas: K per-joint OKS falloffs (COCO's ``kpt_oks_sigmas`` convention).
    """

    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]

    def __post_init__(self) -> None:
        k = len(self.names)
        if k == 0 or len(set(self.names)) != k:
            raise AnnotationError(f"keypoint names {list(self.names)}: expected at least one name, all different")
        if len(self.sigmas) != k or not all(s > 0 for s in self.sigmas):
            raise AnnotationError(f"{len(self.sigmas)} OKS sigmas for {k} keypoints; expected {k} positive numbers")
        indices = [i for pair in (*self.skeleton, *self.flip_pairs) for i in pair]
        if any(not 0 <= i < k for i in indices):
            raise AnnotationError(f"skeleton or flip pairs name joint indices outside 0..{k - 1}: {sorted(set(indices))}")
        flipped = [i for pair in self.flip_pairs for i in pair]
        if len(flipped) != len(set(flipped)) or any(a == b for a, b in self.flip_pairs):
            raise AnnotationError(f"flip pairs {list(self.flip_pairs)}: each joint may be in at most one pair")

    @property
    def num_keypoints(self) -> int:
        """K, the number of joints (and heatmaps)."""
        return len(self.names)

    @property
    def flip_index(self) -> np.ndarray:
        """Index each joint lands on after a horizontal flip. Shape: (K,) int64."""
        index = np.arange(self.num_keypoints)
        for left, right in self.flip_pairs:
            index[left], index[right] = right, left
        return index

    @classmethod
    def from_coco(
        cls,
        category: Mapping,
        flip_pairs: Sequence[tuple[int, int]] | None = None,
        sigmas: Sequence[float] | None = None,
    ) -> KeypointSet:
        """The keypoint set of one COCO ``categories`` entry.

        Names come from ``category["keypoints"]`` and limbs from ``category["skeleton"]``
        (1-based, as COCO writes it). Without ``flip_pairs``, joints pair up by name: a name
        whose words (split at ``_``, ``-``, ``.`` or spaces) contain ``left``/``l`` pairs with
        the name that has ``right``/``r`` there instead ("left_eye"/"right_eye", "l_paw"/"r_paw",
        "Left Ear"/"Right Ear"); case is ignored. Without ``sigmas`` every joint gets
        :data:`DEFAULT_SIGMA` (the mean of COCO-17's sigmas).

        Raises:
            AnnotationError: no ``keypoints`` list, or a skeleton / flip pairs / sigmas that do
                not fit the names.
        """
        names = category.get("keypoints") if isinstance(category, Mapping) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise AnnotationError(
                f"category {category.get('name', '?') if isinstance(category, Mapping) else category!r} has no "
                "'keypoints' list of names; expected a COCO keypoint category"
            )
        try:
            skeleton = tuple((int(a) - 1, int(b) - 1) for a, b in category.get("skeleton") or ())
        except (TypeError, ValueError):
            raise AnnotationError(f"skeleton {category.get('skeleton')!r}: expected pairs of 1-based joint numbers") from None
        pairs = _pairs_by_name(names) if flip_pairs is None else tuple((int(a), int(b)) for a, b in flip_pairs)
        return cls(
            names=tuple(names),
            skeleton=skeleton,
            flip_pairs=pairs,
            sigmas=tuple(float(s) for s in sigmas) if sigmas is not None else (DEFAULT_SIGMA,) * len(names),
        )

    def coco_category(self, category_id: int = 1, name: str = "person") -> dict:
        """This set as a COCO ``categories`` entry (1-based skeleton)."""
        return {
            "id": category_id,
            "name": name,
            "supercategory": name,
            "keypoints": list(self.names),
            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton],
        }

    def to_dict(self) -> dict:
        """Plain lists and floats (what a checkpoint stores); :meth:`from_dict` reads it back."""
        return {name: [list(v) if isinstance(v, tuple) else v for v in value]
                for name, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> KeypointSet:
        """The inverse of :meth:`to_dict`."""
        return cls(
            names=tuple(data["names"]),
            skeleton=tuple(tuple(pair) for pair in data["skeleton"]),
            flip_pairs=tuple(tuple(pair) for pair in data["flip_pairs"]),
            sigmas=tuple(float(s) for s in data["sigmas"]),
        )


def _pairs_by_name(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """(left, right) index pairs of names that differ only in their side word."""
    index = {name.lower(): i for i, name in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        parts = _WORD_SPLIT.split(name.lower())
        for position, word in enumerate(parts):
            if word in ("left", "l"):
                mirror = "".join(parts[:position] + [_SIDE_WORDS[word]] + parts[position + 1:])
                if mirror in index:
                    pairs.append((i, index[mirror]))
                    break
    return tuple(pairs)


COCO17 = KeypointSet(
    names=coco17.KEYPOINT_NAMES,
    skeleton=coco17.SKELETON,
    flip_pairs=coco17.FLIP_PAIRS,
    sigmas=tuple(float(s) for s in coco17.OKS_SIGMAS),
)
