"""Motion comparison: one person's movement against another's, aligned in time and scored.

A pose sequence is (T, K, 3): x, y, score per joint and frame, in image pixels, as a track of
:mod:`posekit.track` gives it (a frame where the person is absent is NaN or scores 0).

1. :func:`normalize_poses`: joints scoring under a threshold become NaN (masked, never zeroed);
   each frame is moved so the hip centre is at the origin and scaled so the torso (hip centre
   to shoulder centre) is 1 long; ``mirror`` negates x and swaps left and right joints, so a
   left-handed batter is compared with a right-handed coach. A frame without both hips and both
   shoulders has no hip centre or torso: it counts as absent.
2. :func:`joint_angles` and :func:`angular_velocities`: elbows, shoulders, hips and knees
   (the inner angle at the joint, 0-180 degrees), trunk lean (hip centre to shoulder centre
   against image up, signed) and the shoulder and hip lines (right to left joint against image
   horizontal, signed): whichever of them the keypoint set names.
3. :func:`dtw`: exact dynamic time warping with an optional Sakoe-Chiba band, on the pose
   distance ``d(i, j) = mean over joints seen in both frames of |p_ik - q_jk|`` (Euclidean, in
   torso lengths). The absent frames take no part; the path is given in the input frame indices.
4. :func:`compare_motion`: scores along the warping path. A joint's similarity in a matched pair is
   ``exp(-d^2 / (2 tau^2))`` with ``tau = POSITION_TEMPERATURE`` (0.2 torso lengths, so a joint
   0.2 torsos off scores 61, 0.4 off 14); an angle's is ``exp(-delta^2 / (2 tau_a^2))`` with
   ``tau_a = ANGLE_TEMPERATURE`` (15 degrees: 15 off scores 61, 30 off 14), delta the
   difference wrapped to [-180, 180). ``score`` is 100 x the mean over matched pairs of the mean
   joint similarity over the joints seen in both; ``per_joint`` and ``per_angle`` are 100 x the
   mean over the pairs where that joint (angle) is seen in both; ``per_phase`` the ``score`` of
   the pairs whose reference frame lies in each of ``phases`` equal segments of the reference.
   Missing joints and absent frames are left out of every mean, so they lower no score.

The score says how close the attempt's 2D pose, seen from its camera, stays to the reference's
once both are aligned in time, centred and scaled; it does not know depth, the camera angle or
the speed of the movement (time warping removes speed differences by design).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from posekit.core.keypoints import COCO17, KeypointSet
from posekit.errors import ArgumentError

POSITION_TEMPERATURE = 0.2  # torso lengths: the joint distance at which similarity is exp(-1/2)
ANGLE_TEMPERATURE = 15.0  # degrees: the angle difference at which similarity is exp(-1/2)
JOINT_THRESHOLD = 0.3  # joints scoring under it are masked
WORST_FRAMES = 3  # frames listed per score where the attempt deviates most
_TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")

# Inner angles at a joint: (name, (end, vertex, end)).
JOINT_ANGLES: tuple[tuple[str, tuple[str, str, str]], ...] = tuple(
    (f"{side}_{vertex}", (f"{side}_{a}", f"{side}_{vertex}", f"{side}_{b}"))
    for vertex, a, b in (("elbow", "shoulder", "wrist"), ("shoulder", "elbow", "hip"),
                         ("hip", "shoulder", "knee"), ("knee", "hip", "ankle"))
    for side in ("left", "right")
)
# Angles of a line in the image plane: (name, (from joints, to joints)), each end the mean of its joints.
LINE_ANGLES: tuple[tuple[str, tuple[tuple[str, ...], tuple[str, ...]]], ...] = (
    ("trunk_lean", (("left_hip", "right_hip"), ("left_shoulder", "right_shoulder"))),
    ("shoulder_line", (("right_shoulder",), ("left_shoulder",))),
    ("hip_line", (("right_hip",), ("left_hip",))),
)


def _indices(keypoint_set: KeypointSet, names: Sequence[str]) -> list[int] | None:
    """Joint indices of ``names`` in the set, or None when one is missing."""
    index = {name: k for k, name in enumerate(keypoint_set.names)}
    return [index[name] for name in names] if all(name in index for name in names) else None


def normalize_poses(
    keypoints: np.ndarray, keypoint_set: KeypointSet = COCO17, threshold: float = JOINT_THRESHOLD, mirror: bool = False
) -> np.ndarray:
    """Joints relative to the hip centre in torso lengths, masked joints NaN.

    Shape: keypoints (T, K, 3) x, y, score -> (T, K, 2); a frame without both hips and both
    shoulders at or above ``threshold`` is all NaN (absent).

    Raises:
        ArgumentError: the keypoint set does not name both hips and both shoulders, or the shape is wrong.
    """
    xy = _masked(keypoints, keypoint_set, threshold)
    if mirror:
        xy = xy[:, keypoint_set.flip_index] * [-1.0, 1.0]
    centres, lengths = _torsos(xy, keypoint_set)
    return (xy - centres[:, None]) / lengths[:, None, None]


def torso_frames(
    keypoints: np.ndarray, keypoint_set: KeypointSet = COCO17, threshold: float = JOINT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Where :func:`normalize_poses` puts the origin and its unit, in the input's pixels: the hip
    centre and the torso length (hip centre to shoulder centre) per frame, NaN where absent.

    Shape: keypoints (T, K, 3) -> (T, 2), (T,).
    """
    return _torsos(_masked(keypoints, keypoint_set, threshold), keypoint_set)


def _masked(keypoints: np.ndarray, keypoint_set: KeypointSet, threshold: float) -> np.ndarray:
    """x, y with the joints under ``threshold`` NaN. Shape: (T, K, 3) -> (T, K, 2)."""
    keypoints = np.asarray(keypoints, np.float64)
    k = keypoint_set.num_keypoints
    if keypoints.ndim != 3 or keypoints.shape[1:] != (k, 3):
        raise ArgumentError(f"poses have shape {keypoints.shape}; expected (T, {k}, 3) x, y, score")
    with np.errstate(invalid="ignore"):  # NaN scores compare False: masked
        seen = keypoints[..., 2] >= threshold
    return np.where(seen[..., None], keypoints[..., :2], np.nan)


def _torsos(xy: np.ndarray, keypoint_set: KeypointSet) -> tuple[np.ndarray, np.ndarray]:
    """Hip centres (T, 2) and torso lengths (T,) of masked joints (T, K, 2); NaN where a torso joint is missing."""
    torso = _indices(keypoint_set, _TORSO)
    if torso is None:
        raise ArgumentError(f"the keypoint set names no {', '.join(_TORSO)}; expected all four to normalise poses")
    shoulders, hips = xy[:, torso[:2]].mean(1), xy[:, torso[2:]].mean(1)  # NaN when one is missing
    lengths = np.linalg.norm(shoulders - hips, axis=1)
    return hips, np.where(lengths > 0, lengths, np.nan)


def present_frames(poses: np.ndarray) -> np.ndarray:
    """Frames where the person is seen (hip centre and torso defined). Shape: (T, K, 2) normalised -> (T,) bool."""
    return np.isfinite(poses).all(-1).any(-1)


def angle_names(keypoint_set: KeypointSet = COCO17) -> list[str]:
    """The angles :func:`joint_angles` gives for this keypoint set, in its column order."""
    return [name for name, joints in JOINT_ANGLES if _indices(keypoint_set, joints) is not None] + [
        name for name, (start, end) in LINE_ANGLES if _indices(keypoint_set, start + end) is not None
    ]


def joint_angles(poses: np.ndarray, keypoint_set: KeypointSet = COCO17) -> np.ndarray:
    """Angles per frame in degrees, the columns :func:`angle_names` lists; NaN where a joint is missing.

    Inner angles lie in [0, 180]; line angles in (-180, 180], counter-clockwise as seen (y points down
    in the image). Shape: poses (T, K, 2+) x, y in any frame of reference -> (T, A).
    """
    xy = np.asarray(poses, np.float64)[..., :2]
    columns = []
    for _, joints in JOINT_ANGLES:
        index = _indices(keypoint_set, joints)
        if index is not None:
            a, vertex, b = (xy[:, k] for k in index)
            u, v = a - vertex, b - vertex
            columns.append(np.degrees(np.arctan2(np.abs(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]), (u * v).sum(1))))
    for name, (start, end) in LINE_ANGLES:
        if _indices(keypoint_set, start + end) is not None:
            line = xy[:, _indices(keypoint_set, end)].mean(1) - xy[:, _indices(keypoint_set, start)].mean(1)
            # Trunk lean against image up (0: upright); the shoulder and hip lines against image horizontal.
            up = name == "trunk_lean"
            columns.append(np.degrees(np.arctan2(line[:, 0], -line[:, 1]) if up else np.arctan2(-line[:, 1], line[:, 0])))
    return np.stack(columns, axis=1) if columns else np.zeros((len(xy), 0))


def wrap_degrees(angles: np.ndarray) -> np.ndarray:
    """Angles (any shape) wrapped to [-180, 180)."""
    return (np.asarray(angles, np.float64) + 180.0) % 360.0 - 180.0


def angular_velocities(angles: np.ndarray, fps: float) -> np.ndarray:
    """Degrees per second: central differences inside, one-sided at the ends, each step wrapped to
    [-180, 180) (a line turning past 180 degrees is not a jump); NaN next to a missing angle.

    Shape: angles (T, A) degrees -> (T, A); a single frame gives zeros.
    """
    angles = np.asarray(angles, np.float64)
    if len(angles) < 2:
        return np.zeros_like(angles)
    steps = wrap_degrees(np.diff(angles, axis=0)) * fps  # (T - 1, A)
    return np.concatenate([steps[:1], (steps[:-1] + steps[1:]) / 2, steps[-1:]])


def pose_distance_rows(reference: np.ndarray, attempt: np.ndarray):
    """The DTW cost of :func:`compare_motion`, row by row: ``(i, first, last) -> d(i, first..last)``,
    the mean Euclidean distance of reference frame ``i`` to attempt frames ``first..last`` over the
    joints seen in both (NaN where none is).

    Shape: reference (T1, K, 2), attempt (T2, K, 2) normalised (NaN: masked); a row (last - first + 1,).
    """
    seen = np.isfinite(attempt).all(-1).T  # (K, T2): joint-major, so a row reads contiguous memory
    x, y = (np.ascontiguousarray(np.where(seen, attempt[..., c].T, 0.0)) for c in (0, 1))
    weights = seen.astype(np.float64)

    def row(i: int, first: int, last: int) -> np.ndarray:
        joints = np.flatnonzero(np.isfinite(reference[i]).all(-1))
        columns = slice(first, last + 1)
        dx, dy = x[joints, columns] - reference[i, joints, 0, None], y[joints, columns] - reference[i, joints, 1, None]
        both = weights[joints, columns]
        counts = both.sum(0)
        with np.errstate(invalid="ignore"):  # 0 / 0: no joint seen in both
            return np.where(counts > 0, (np.sqrt(dx * dx + dy * dy) * both).sum(0) / counts, np.nan)

    return row


def band_columns(rows: int, columns: int, band: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The Sakoe-Chiba band about the line from (0, 0) to (rows - 1, columns - 1): per row its first
    and last column, ``|j - i (columns - 1) / (rows - 1)| <= band``. Shape: -> (rows,), (rows,) int64.

    Raises:
        ArgumentError: the band is narrower than ``max(1, (slope + 1) / 2)`` columns, which is what
            keeps consecutive rows connected (a path always exists).
    """
    i = np.arange(rows)
    if band is None:
        return np.zeros(rows, np.int64), np.full(rows, columns - 1, np.int64)
    slope = (columns - 1) / max(rows - 1, 1)
    minimum = max(1.0, (slope + 1) / 2)
    if band < minimum:
        raise ArgumentError(f"band={band}: too narrow for {rows} against {columns} frames; expected at least "
                            f"{math.ceil(minimum)} frames")
    centre = i * slope
    return (np.clip(np.ceil(centre - band), 0, columns - 1).astype(np.int64),
            np.clip(np.floor(centre + band), 0, columns - 1).astype(np.int64))


def dtw(cost_row, rows: int, columns: int, band: int | None = None) -> tuple[float, np.ndarray]:
    """Exact dynamic time warping: the monotone path from (0, 0) to (rows - 1, columns - 1) with
    steps (1, 1), (1, 0), (0, 1) that minimises the sum of the cost of its cells.

    ``D[i, j] = c[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])``, computed row by row: with
    ``a[j] = c[i, j] + min(D[i-1, j-1], D[i-1, j])`` and ``C`` the cumulative sum of the row's
    costs, ``D[i, j] = C[j] + min over l <= j of (a[l] - C[l])``, one ``np.minimum.accumulate``.
    Ties go to the diagonal, then up (previous row), then left, in the forward pass and so in
    the path.

    Time O(rows x band width) (O(rows x columns) without a band). Memory: two rows of costs,
    O(columns) floats, and two bits per cell of the band for the path (packed with
    ``np.packbits``: 2.25 MB for 3000 x 3000 frames without a band).

    Args:
        cost_row: ``(i, first, last) -> costs (last - first + 1,)`` of row ``i``, columns
            ``first..last``; finite.
        band: Sakoe-Chiba radius in columns about the diagonal (see :func:`band_columns`), or None.

    Returns:
        The total cost of the path and the path, (P, 2) int64 (row, column) pairs from (0, 0).
    """
    if rows < 1 or columns < 1:
        raise ArgumentError(f"cannot align {rows} frames with {columns}; expected at least one frame in each")
    first, last = band_columns(rows, columns, band)
    up_bits, left_bits = [], []
    previous = np.full(columns + 1, np.inf)  # D of the previous row at column j + 1; index 0 is column -1
    for i in range(rows):
        lo, hi = int(first[i]), int(last[i])
        costs = np.asarray(cost_row(i, lo, hi), np.float64)
        if i == 0:  # the path starts at (0, 0): only its first cell has a predecessor, of cost 0
            diagonal, up = np.full(hi - lo + 1, np.inf), np.full(hi - lo + 1, np.inf)
            diagonal[0] = 0.0
        else:
            diagonal, up = previous[lo : hi + 1], previous[lo + 1 : hi + 2]
        from_up = up < diagonal
        entry = costs + np.where(from_up, up, diagonal)  # a[j]
        cumulative = np.cumsum(costs)
        running = np.minimum.accumulate(entry - cumulative)
        from_left = np.zeros(len(costs), bool)
        from_left[1:] = running[:-1] < entry[1:] - cumulative[1:]
        row = np.where(from_left, np.concatenate([[0.0], cumulative[1:] + running[:-1]]), entry)
        previous = np.full(columns + 1, np.inf)
        previous[lo + 1 : hi + 2] = row
        up_bits.append(np.packbits(from_up & ~from_left))
        left_bits.append(np.packbits(from_left))
    total = float(previous[columns])
    path = [(rows - 1, columns - 1)]
    i, j = rows - 1, columns - 1
    while (i, j) != (0, 0):  # back along the stored choices
        offset = j - int(first[i])
        bit = 7 - offset % 8
        if left_bits[i][offset // 8] >> bit & 1:
            j -= 1
        elif up_bits[i][offset // 8] >> bit & 1:
            i -= 1
        else:
            i, j = i - 1, j - 1
        path.append((i, j))
    return total, np.asarray(path[::-1], np.int64)


@dataclasses.dataclass
class MotionComparison:
    """An attempt scored against a reference (see the module docstring for every formula).

    Attributes:
        alignment: the warping path as (reference frame, attempt frame) pairs in input frame indices, (P, 2) int64.
        cost: the path's total pose distance (torso lengths).
        score: overall similarity 0-100.
        per_joint, per_angle: name -> 0-100, NaN where the joint (angle) is never seen in both.
        per_phase: one dict per segment of the reference: ``reference_frames`` [first, last], ``score``, ``worst_frames``.
        worst_frames: ``{"joints": {name: [...]}, "angles": {name: [...]}}``, for each score the attempt frames of the
            matched pairs where it deviates most (lowest similarity first).
        angle_names: the columns of the angle arrays.
        reference_angles, attempt_angles: per input frame, degrees, (T1, A) and (T2, A), NaN where absent.
        joint_deviations: per matched pair the distance of each joint in torso lengths, (P, K), NaN where
            not seen in both (not in :meth:`to_dict`).
        mirror: whether the attempt was mirrored.
    """

    alignment: np.ndarray
    cost: float
    score: float
    per_joint: dict[str, float]
    per_angle: dict[str, float]
    per_phase: list[dict]
    worst_frames: dict[str, dict[str, list[int]]]
    angle_names: list[str]
    reference_angles: np.ndarray
    attempt_angles: np.ndarray
    joint_deviations: np.ndarray
    mirror: bool

    def to_dict(self) -> dict:
        """The comparison as strict JSON data (NaN becomes null)."""

        def plain(value):
            if isinstance(value, dict):
                return {key: plain(item) for key, item in value.items()}
            if isinstance(value, (list, tuple, np.ndarray)):
                return [plain(item) for item in value]
            if isinstance(value, (float, np.floating)):
                return round(float(value), 3) if math.isfinite(value) else None
            return value.item() if isinstance(value, np.generic) else value

        return plain({
            "alignment": self.alignment.tolist(), "cost": self.cost, "score": self.score, "per_joint": self.per_joint,
            "per_angle": self.per_angle, "per_phase": self.per_phase, "worst_frames": self.worst_frames,
            "mirror": self.mirror,
            "method": {"distance": "mean Euclidean joint distance in torso lengths, joints seen in both",
                       "position_temperature": POSITION_TEMPERATURE, "angle_temperature_degrees": ANGLE_TEMPERATURE},
            "angles": {"names": self.angle_names, "reference": self.reference_angles, "attempt": self.attempt_angles},
        })


def compare_motion(
    reference: np.ndarray,
    attempt: np.ndarray,
    keypoint_set: KeypointSet = COCO17,
    mirror: bool = False,
    threshold: float = JOINT_THRESHOLD,
    band: int | None = None,
    phases: int = 4,
) -> MotionComparison:
    """Align an attempt to a reference with :func:`dtw` and score it.

    Shape: reference (T1, K, 3), attempt (T2, K, 3) x, y, score per frame (absent frames NaN or score 0).

    Args:
        mirror: mirror the attempt (left and right swapped) before comparing.
        threshold: joints scoring under it are masked.
        band: Sakoe-Chiba radius in attempt frames (see :func:`band_columns`), or None for none;
            counted over the frames where the person is present.
        phases: the number of equal segments of the reference scored apart (at most one per frame
            of the span where the person is present).

    Raises:
        ArgumentError: a sequence has no frame with the person present, or the band is too narrow.
    """
    if phases < 1:
        raise ArgumentError(f"phases={phases}: expected 1 or more")
    ours, theirs = normalize_poses(reference, keypoint_set, threshold), normalize_poses(attempt, keypoint_set, threshold, mirror)
    kept = [np.flatnonzero(present_frames(poses)) for poses in (ours, theirs)]
    for name, frames, poses in zip(("reference", "attempt"), kept, (ours, theirs)):
        if len(frames) == 0:
            raise ArgumentError(f"the {name} has no frame among its {len(poses)} where the person's hips and shoulders "
                                f"are seen (joint score >= {threshold}); expected at least one")
    a, b = ours[kept[0]], theirs[kept[1]]
    cost, path = dtw(pose_distance_rows(a, b), len(a), len(b), band)
    alignment = np.stack([kept[0][path[:, 0]], kept[1][path[:, 1]]], axis=1)

    # Similarities of the matched pairs: per joint (P, K) and per angle (P, A), NaN where not seen in both.
    distances = np.linalg.norm(a[path[:, 0]] - b[path[:, 1]], axis=-1)
    joint_similarity = np.exp(-(distances**2) / (2 * POSITION_TEMPERATURE**2))
    names = angle_names(keypoint_set)
    reference_angles, attempt_angles = joint_angles(ours, keypoint_set), joint_angles(theirs, keypoint_set)
    differences = wrap_degrees(reference_angles[alignment[:, 0]] - attempt_angles[alignment[:, 1]])
    angle_similarity = np.exp(-(differences**2) / (2 * ANGLE_TEMPERATURE**2))
    pair_similarity = _nanmean(joint_similarity, axis=1)  # (P,): every pair has the torso joints seen in both

    # Phases: equal segments of the reference's span of present frames.
    phases = min(phases, int(kept[0][-1] - kept[0][0] + 1))
    edges = np.linspace(kept[0][0], kept[0][-1] + 1, phases + 1)
    segment = np.clip(np.searchsorted(edges, alignment[:, 0], side="right") - 1, 0, phases - 1)
    per_phase = []
    for p in range(phases):
        chosen = segment == p
        per_phase.append({
            "reference_frames": [int(math.ceil(edges[p])), int(math.ceil(edges[p + 1])) - 1],
            "score": 100 * float(pair_similarity[chosen].mean()) if chosen.any() else math.nan,
            "worst_frames": _worst(pair_similarity[chosen], alignment[chosen, 1]),
        })
    return MotionComparison(
        alignment=alignment, cost=cost, score=100 * float(pair_similarity.mean()),
        per_joint=dict(zip(keypoint_set.names, 100 * _nanmean(joint_similarity, axis=0))),
        per_angle=dict(zip(names, 100 * _nanmean(angle_similarity, axis=0))),
        per_phase=per_phase,
        worst_frames={
            "joints": {n: _worst(joint_similarity[:, k], alignment[:, 1]) for k, n in enumerate(keypoint_set.names)},
            "angles": {n: _worst(angle_similarity[:, k], alignment[:, 1]) for k, n in enumerate(names)},
        },
        angle_names=names, reference_angles=reference_angles, attempt_angles=attempt_angles,
        joint_deviations=distances, mirror=mirror,
    )


def synthetic_motion(times: np.ndarray, duration: float = 3.0, height: float = 300.0,
                     origin: tuple[float, float] = (320.0, 60.0)) -> np.ndarray:
    """A made-up movement with exact joints, for tests and the offline notebook: over ``duration``
    seconds the right arm swings up and over while its elbow bends, the left arm rises a little,
    the knees bend and straighten and the trunk sways; before 0 and after ``duration`` the pose holds.
    The body faces the camera, ``height`` pixels tall, its head near ``origin`` (x, y).

    Shape: times (T,) seconds, any (repeated, out of order, warped) -> (T, 17, 3) x, y, score 1.
    """
    from posekit.train.synthetic import posed_bodies

    s = np.clip(np.asarray(times, np.float64) / duration, 0.0, 1.0)
    swing = np.sin(np.pi * s) ** 2
    arm = np.stack([0.3 + 0.6 * s, 0.2 + 2.0 * swing + 0.5 * s], axis=1)
    forearm = arm + np.stack([0.4 + 0.8 * s**2, 1.2 * np.sin(np.pi * s)], axis=1)
    thigh = np.stack([0.1 + 0.3 * np.sin(2 * np.pi * s), 0.15 + 0.2 * s], axis=1)
    shin = thigh - 0.6 * swing[:, None]
    joints = posed_bodies(0.15 * np.sin(2 * np.pi * s), arm, forearm, thigh, shin) * height + origin
    return np.concatenate([joints, np.ones((*joints.shape[:2], 1))], axis=2)


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """The mean over the finite values along ``axis``; NaN where there is none (no warning)."""
    seen = np.isfinite(values)
    counts = seen.sum(axis)
    return np.divide(np.where(seen, values, 0.0).sum(axis), counts, out=np.full(counts.shape, np.nan), where=counts > 0)


def _worst(similarity: np.ndarray, attempt_frames: np.ndarray) -> list[int]:
    """Up to :data:`WORST_FRAMES` distinct attempt frames of the lowest finite similarities, lowest first."""
    order = np.argsort(np.where(np.isfinite(similarity), similarity, np.inf), kind="stable")
    order = order[np.isfinite(similarity[order])]
    frames, first = np.unique(attempt_frames[order], return_index=True)
    return [int(f) for f in frames[np.argsort(first)][:WORST_FRAMES]]
