"""Tracking metrics with the PoseTrack protocol: per-joint CLEAR-MOT MOTA and per-joint AP.

As PoseTrack's ``poseval``: a predicted joint matches an annotated one when their distance is at
most ``0.5 x head size`` (head size = 0.6 x the diagonal of the annotated head box, PCKh style).
Joints inside a frame's ignore regions are removed from the ground truth and the predictions
first. MOT: every joint type is its own multi-object tracking problem (objects: the annotated
people with that joint, hypotheses: the predicted people with that joint, both named by track id),
fed frame by frame to ``motmetrics`` (what ``poseval`` uses), giving misses, false positives and id
switches per joint; MOTA = 1 - (misses + switches + false positives) / annotated joints, MOTP =
1 - the mean distance (in head sizes) of each frame's matched pairs. AP: each
predicted pose is assigned to the annotated pose it matches most joints of (PCKh), each predicted
joint is then a true or false positive, ranked by its score (VOC-style AP per joint). Frames
without annotated people are left out, as ``poseval`` does. Several videos are pooled as
``poseval`` pools a split: one accumulation, each video's ids apart from the others'.

Only the joint slots the ground truth annotates somewhere are scored: a slot never annotated
(PoseTrack 2018's ear slots) is left out of every metric, total and count. Slots are compared one
by one: PoseTrack 2018 annotates head_bottom and head_top where COCO has the eyes, so a
COCO-trained network's eyes are scored against those and score low.

Deliberate differences from ``poseval`` (docs/posetrack.md gives their effect): the last frame of a
sequence is counted (``poseval`` drops it from tracking); a frame with annotated people but no
predictions counts every annotated joint as a miss (``poseval`` enters one placeholder miss and
one false positive per joint); tied scores are one step of the precision-recall curve (``poseval``
orders them as its sort happens to); MOTP counts each matched pair once (``poseval`` sums the
distances of every candidate pair under current ``motmetrics``).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import PurePosixPath
from typing import Protocol, Sequence

import numpy as np

from posekit.errors import AnnotationError
from posekit.io.posetrack import AnnotatedFrame, PredictedFrame, load_posetrack, load_tracks

__all__ = ["AnnotatedFrame", "TrackingMetrics", "align_frames", "average_precision", "evaluate_files",
           "evaluate_tracking", "evaluate_videos", "head_sizes", "inside_regions", "joint_distances", "load_posetrack"]

MATCH_THRESHOLD = 0.5  # fraction of the head size
HEAD_SIZE_FACTOR = 0.6  # head size = 0.6 x head box diagonal (poseval's getHeadSize)
JOINT_THRESHOLD = 0.4  # predicted joints scoring less are not predictions (the tracker's joint threshold)


class PosesInFrame(Protocol):
    """What the metrics read of a frame's predictions (a :class:`~posekit.track.TrackedFrame` fits)."""

    track_ids: np.ndarray  # (P,)
    keypoints: np.ndarray  # (P, K, 3) x, y, score


@dataclasses.dataclass
class TrackingMetrics:
    """PoseTrack metrics, per joint slot (arrays of K) and in total (mean over the scored joints).

    Attributes:
        mota, motp, precision, recall, ap: percentages per slot, shape (K,); NaN in slots not scored.
        misses, switches, false_positives, objects, detections: counts per slot, shape (K,); 0 in slots not scored.
        scored: (K,) bool, the slots the ground truth annotates somewhere. names: a name per slot.
    """

    mota: np.ndarray
    motp: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ap: np.ndarray
    misses: np.ndarray
    switches: np.ndarray
    false_positives: np.ndarray
    objects: np.ndarray
    detections: np.ndarray
    scored: np.ndarray
    names: tuple[str, ...]

    METRICS = ("mota", "motp", "precision", "recall", "ap")
    COUNTS = ("misses", "switches", "false_positives", "objects", "detections")

    def total(self, name: str) -> float:
        """The mean of a percentage over the scored joints where it is defined (PoseTrack's "Total")."""
        values = getattr(self, name)[self.scored]
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def left_out(self) -> str:
        """Which slots are not scored, in words."""
        skipped = [name for name, scored in zip(self.names, self.scored) if not scored]
        return (f"{int(self.scored.sum())} of {len(self.names)} joint slots scored"
                + (f"; never annotated, left out: {', '.join(skipped)}" if skipped else ""))

    def table(self, per_joint: bool = False) -> str:
        """Totals (and with ``per_joint`` one row per scored joint) as a small text table."""
        lines = []
        if per_joint:
            lines.append(f"{'joint':<15}" + "".join(f"{h:>7}" for h in ("MOTA", "MOTP", "prec", "rec", "AP"))
                         + "".join(f"{h:>9}" for h in ("misses", "switches", "FP", "objects")))
            for k in np.flatnonzero(self.scored):
                lines.append(f"{self.names[k]:<15}" + "".join(f"{getattr(self, m)[k]:7.1f}" for m in self.METRICS)
                             + "".join(f"{int(getattr(self, c)[k]):9d}" for c in self.COUNTS[:4]))
            lines.append("")
        rows = [("MOTA", "mota"), ("MOTP", "motp"), ("precision", "precision"), ("recall", "recall"), ("mAP", "ap")]
        lines += [f"{label:<10} {self.total(name):6.1f}" for label, name in rows]
        lines.append(f"id switches {int(self.switches.sum())}, misses {int(self.misses.sum())}, false positives "
                     f"{int(self.false_positives.sum())} of {int(self.objects.sum())} annotated joints")
        lines.append(self.left_out())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Per joint and total, JSON-ready (null where a metric is undefined)."""
        def number(value: float) -> float | None:
            return round(float(value), 4) if np.isfinite(value) else None

        joints = {self.names[k]: {**{m: number(getattr(self, m)[k]) for m in self.METRICS},
                                  **{c: int(getattr(self, c)[k]) for c in self.COUNTS}} for k in np.flatnonzero(self.scored)}
        total = {**{m: number(self.total(m)) for m in self.METRICS}, **{c: int(getattr(self, c).sum()) for c in self.COUNTS}}
        left_out = [name for name, scored in zip(self.names, self.scored) if not scored]
        return {"total": total, "joints": joints, "left_out": left_out}


def head_sizes(head_boxes: np.ndarray) -> np.ndarray:
    """PCKh reference length per person. Shape: (G, 4) x, y, w, h -> (G,)."""
    return HEAD_SIZE_FACTOR * np.linalg.norm(np.asarray(head_boxes, np.float64)[:, 2:], axis=1)


def joint_distances(predicted: np.ndarray, annotated: np.ndarray, head_boxes: np.ndarray) -> np.ndarray:
    """Distance of every predicted joint to the same joint of every annotated person, in head sizes.

    Shape: predicted (P, K, 2+), annotated (G, K, 2+), head_boxes (G, 4) -> (P, G, K).
    """
    offsets = np.asarray(predicted, np.float64)[:, None, :, :2] - np.asarray(annotated, np.float64)[None, :, :, :2]
    return np.linalg.norm(offsets, axis=-1) / head_sizes(head_boxes)[None, :, None]


def inside_regions(points: np.ndarray, regions: Sequence[np.ndarray]) -> np.ndarray:
    """Whether each point lies strictly inside one of the polygons (even-odd rule; a point on an
    edge is outside, as for shapely's ``contains`` that ``poseval`` uses; fewer than 3 corners: empty).

    Shape: points (..., 2), regions: each (V, 2) -> (...) bool.
    """
    points = np.asarray(points, np.float64)
    flat = points.reshape(-1, 2)
    x, y = flat[:, :1], flat[:, 1:]  # (N, 1)
    inside = np.zeros(len(flat), bool)
    for polygon in regions:
        if len(polygon) < 3:
            continue
        a, b = np.asarray(polygon, np.float64), np.roll(np.asarray(polygon, np.float64), -1, axis=0)  # edges a -> b, (V, 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing = ((a[:, 1] > y) != (b[:, 1] > y)) & (x < a[:, 0] + (b[:, 0] - a[:, 0]) * (y - a[:, 1]) / (b[:, 1] - a[:, 1]))
        cross = (b[:, 0] - a[:, 0]) * (y - a[:, 1]) - (b[:, 1] - a[:, 1]) * (x - a[:, 0])
        on_edge = ((np.abs(cross) <= 1e-9 * (1 + np.abs(b - a).sum(1)))
                   & (x >= np.minimum(a[:, 0], b[:, 0])) & (x <= np.maximum(a[:, 0], b[:, 0]))
                   & (y >= np.minimum(a[:, 1], b[:, 1])) & (y <= np.maximum(a[:, 1], b[:, 1])))
        inside |= (crossing.sum(1) % 2 == 1) & ~on_edge.any(1)
    return inside.reshape(points.shape[:-1])


def average_precision(scores: np.ndarray, labels: np.ndarray, positives: int) -> float:
    """VOC-style AP (area under the precision envelope) of ranked detections, in percent.

    Detections with the same score are one step of the curve (counted together), so the result
    does not depend on their order. Shape: scores (D,), labels (D,) bool (true positive),
    positives: the number of annotated joints.
    """
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ranked = np.asarray(scores, np.float64)[order]
    hits = np.cumsum(np.asarray(labels, bool)[order])
    last_of_tie = np.diff(ranked, append=np.inf) != 0  # the curve has a point after each score level
    hits, counts = hits[last_of_tie], np.flatnonzero(last_of_tie) + 1
    recall = np.concatenate([[0.0], hits / positives, [1.0]])
    precision = np.concatenate([[0.0], hits / counts, [0.0]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(100 * np.sum((recall[steps] - recall[steps - 1]) * envelope[steps]))


def _assigned_person(matches: np.ndarray, annotated_joints: np.ndarray) -> np.ndarray:
    """poseval's pose assignment: each prediction keeps only its best annotated person (most joints
    matched, as a fraction of that person's annotated joints); each annotated person then takes the
    best prediction left pointing at it. Shape: matches (P, G, K), annotated_joints (G,) ->
    the annotated person of each prediction, (P,) int64, -1 for none."""
    if matches.shape[0] == 0 or matches.shape[1] == 0:
        return np.full(matches.shape[0], -1, np.int64)
    pck = matches.sum(2) / np.maximum(annotated_joints, 1)[None, :]
    pck = np.where(np.arange(pck.shape[1])[None, :] == pck.argmax(1)[:, None], pck, 0.0)
    best = pck.argmax(0)  # (G,)
    assigned = np.full(pck.shape[0], -1, np.int64)
    has = pck.max(0) > 0
    assigned[best[has]] = np.flatnonzero(has)
    return assigned


def evaluate_tracking(
    annotations: Sequence[AnnotatedFrame | None],
    predictions: Sequence[PosesInFrame | None],
    joint_threshold: float = JOINT_THRESHOLD,
    threshold: float = MATCH_THRESHOLD,
    names: Sequence[str] | None = None,
) -> TrackingMetrics:
    """PoseTrack metrics of predicted tracks against annotated ones, one sequence (see :func:`evaluate_videos`)."""
    return evaluate_videos([(annotations, predictions)], joint_threshold, threshold, names)


def evaluate_videos(
    videos: Sequence[tuple[Sequence[AnnotatedFrame | None], Sequence[PosesInFrame | None]]],
    joint_threshold: float = JOINT_THRESHOLD,
    threshold: float = MATCH_THRESHOLD,
    names: Sequence[str] | None = None,
) -> TrackingMetrics:
    """PoseTrack MOTA, MOTP, precision, recall and AP of several videos pooled (one accumulation).

    Args:
        videos: per video (annotations, predictions): per frame its annotated people (None: not
            annotated) and, in the same order and number, its predicted people (None: none).
        joint_threshold: predicted joints scoring under it count as not predicted.
        threshold: match distance in head sizes.
        names: a name per joint slot, for tables (default: slot numbers).

    Raises:
        AnnotationError: a video's sequences differ in length, or the numbers of joints differ.
    """
    import motmetrics

    frames = []
    for v, (annotations, predictions) in enumerate(videos):
        if len(annotations) != len(predictions):
            raise AnnotationError(f"{len(annotations)} annotated frames but {len(predictions)} predicted frames; expected one each")
        frames += [(v, a, p) for a, p in zip(annotations, predictions) if a is not None and len(a.track_ids)]
    num_joints = frames[0][1].keypoints.shape[1] if frames else (len(names) if names else 0)
    accumulators = [motmetrics.MOTAccumulator(auto_id=True) for _ in range(num_joints)]
    truth_ids: dict[tuple, int] = {}  # (video, track id) -> one id space for the pooled accumulation
    predicted_ids: dict[tuple, int] = {}
    scores, labels = [], []
    annotated_count = np.zeros(num_joints, np.int64)
    for video, truth, predicted in frames:
        if truth.keypoints.shape[1] != num_joints:
            raise AnnotationError(f"annotations have {truth.keypoints.shape[1]} joints in one frame and {num_joints} in another")
        keypoints = np.zeros((0, num_joints, 3)) if predicted is None else np.asarray(predicted.keypoints, np.float64)
        if keypoints.size and keypoints.shape[1:] != (num_joints, 3):
            raise AnnotationError(f"predictions have shape {keypoints.shape}; the annotations have {num_joints} joints")
        keypoints = keypoints.reshape(-1, num_joints, 3)
        hypothesis_ids = np.zeros(0, np.int64) if predicted is None else np.asarray(predicted.track_ids)
        object_ids = np.array([truth_ids.setdefault((video, i), len(truth_ids)) for i in np.asarray(truth.track_ids).tolist()], np.int64)
        hypothesis_ids = np.array([predicted_ids.setdefault((video, i), len(predicted_ids)) for i in hypothesis_ids.tolist()], np.int64)
        has_truth = np.asarray(truth.keypoints)[..., 2] > 0  # (G, K)
        has_prediction = keypoints[..., 2] >= joint_threshold  # (P, K); NaN scores (absent joints) are not
        if truth.ignore_regions:  # poseval removes the joints of both sides inside them, before everything else
            has_truth &= ~inside_regions(np.asarray(truth.keypoints)[..., :2], truth.ignore_regions)
            has_prediction &= ~inside_regions(keypoints[..., :2], truth.ignore_regions)
        distances = joint_distances(keypoints, truth.keypoints, truth.head_boxes)
        matches = has_prediction[:, None] & has_truth[None] & (distances <= threshold)  # (P, G, K)
        hypotheses = np.where(matches, distances, np.nan)
        for k, accumulator in enumerate(accumulators):  # one MOT problem per joint type
            rows, columns = has_prediction[:, k], has_truth[:, k]
            accumulator.update(object_ids[columns].tolist(), hypothesis_ids[rows].tolist(), hypotheses[rows][:, columns, k].T)
        assigned = _assigned_person(matches, has_truth.sum(1))
        hits = np.take_along_axis(matches, np.maximum(assigned, 0)[:, None, None], axis=1)[:, 0] & (assigned >= 0)[:, None]
        scores.append(np.where(has_prediction, keypoints[..., 2], np.nan))
        labels.append(hits)
        annotated_count += has_truth.sum(0)
    names = tuple(names) if names is not None else tuple(str(k) for k in range(num_joints))
    if len(names) != num_joints:
        raise AnnotationError(f"{len(names)} joint names for {num_joints} joints")
    return _metrics(accumulators, scores, labels, annotated_count, names)


def _metrics(accumulators: list, scores: list, labels: list, annotated_count: np.ndarray, names: tuple) -> TrackingMetrics:
    import motmetrics

    num_joints = len(names)
    counted = ["num_misses", "num_switches", "num_false_positives", "num_objects", "num_detections"]
    host = motmetrics.metrics.create()
    counts = np.array([[host.compute(a, metrics=counted, return_dataframe=False)[n] for n in counted] for a in accumulators],
                      np.float64).reshape(-1, len(counted))
    # MOTP: each frame's matched pairs once; motmetrics' TRANSFER/ASCEND/MIGRATE rows repeat a switched pair.
    distance_sums = np.array([np.nansum(e.loc[e["Type"].isin(["MATCH", "SWITCH"]), "D"].to_numpy(np.float64))
                              for e in (a.mot_events for a in accumulators)])
    scored = annotated_count > 0
    counts[~scored] = 0
    misses, switches, false_positives, objects, detections = counts.T
    with np.errstate(divide="ignore", invalid="ignore"):
        mota = 100 * (1 - (misses + switches + false_positives) / np.where(objects > 0, objects, np.nan))
        motp = np.where(detections > 0, 100 * (1 - distance_sums / np.maximum(detections, 1)), 0.0)  # poseval: 0 without detections
        precision = 100 * detections / np.where(detections + false_positives > 0, detections + false_positives, np.nan)
        recall = 100 * detections / np.where(objects > 0, objects, np.nan)
    all_scores = np.concatenate(scores).reshape(-1, num_joints) if scores else np.zeros((0, num_joints))
    all_labels = np.concatenate(labels).reshape(-1, num_joints) if labels else np.zeros((0, num_joints), bool)
    predicted = np.isfinite(all_scores)
    ap = np.array([average_precision(all_scores[predicted[:, k], k], all_labels[predicted[:, k], k], annotated_count[k])
                   for k in range(num_joints)])
    for values in (mota, motp, precision, recall, ap):
        values[~scored] = np.nan
    return TrackingMetrics(mota, motp, precision, recall, ap, misses, switches, false_positives, objects, detections,
                           scored, names)


def align_frames(annotations: Sequence[AnnotatedFrame | None], tracks: Sequence[PredictedFrame], where: str) -> list[PredictedFrame | None]:
    """Each annotated frame's predictions, found by image file name (the last path part), None where
    there are none. Ground truth and tracks name frames differently (``images/val/SEQ/000042.jpg``
    against ``000042.jpg``); the file name is what they share.

    Raises:
        AnnotationError: no annotated frame has predictions (the files are of different videos).
    """
    by_name = {PurePosixPath(f.image_name.replace("\\", "/")).name: f for f in tracks}
    aligned = [None if a is None else by_name.get(PurePosixPath(a.image_name.replace("\\", "/")).name) for a in annotations]
    labeled = [a for a in annotations if a is not None and len(a.track_ids)]
    if labeled and tracks and all(p is None for p, a in zip(aligned, annotations) if a is not None and len(a.track_ids)):
        raise AnnotationError(f"{where}: no frame of the tracks has the file name of an annotated frame; expected the "
                              f"frames of the same video (e.g. {labeled[0].image_name!r})")
    return aligned


def evaluate_files(
    pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike | dict]], joint_threshold: float = JOINT_THRESHOLD
) -> TrackingMetrics:
    """PoseTrack metrics of tracks files (or documents) against ground-truth files, all videos pooled.

    Args:
        pairs: (ground truth, tracks) per video; tracks as a path or a parsed document.
    """
    from posekit.io.posetrack import POSETRACK18_KEYPOINTS

    videos = []
    for truth_path, tracks in pairs:
        annotations = load_posetrack(truth_path)
        videos.append((annotations, align_frames(annotations, load_tracks(tracks), str(truth_path))))
    labeled = [a for annotations, _ in videos for a in annotations if a is not None and len(a.track_ids)]
    slots = labeled[0].keypoints.shape[1] if labeled else 0
    names = POSETRACK18_KEYPOINTS if slots == len(POSETRACK18_KEYPOINTS) else None
    return evaluate_videos(videos, joint_threshold, names=names)
