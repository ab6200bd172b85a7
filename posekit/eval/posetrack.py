"""Tracking metrics with the PoseTrack protocol: per-joint CLEAR-MOT MOTA and per-joint AP.

As PoseTrack's ``poseval``: a predicted joint matches an annotated one when their distance is at
most ``0.5 x head size`` (head size = 0.6 x the diagonal of the annotated head box, PCKh style).
MOT: every joint type is its own multi-object tracking problem (objects: the annotated people
with that joint, hypotheses: the predicted people with that joint, both named by track id), fed
frame by frame to ``motmetrics`` (what ``poseval`` uses), giving misses, false positives and id
switches per joint; MOTA = 1 - (misses + switches + false positives) / annotated joints. AP:
each predicted pose is assigned to the annotated pose it matches most joints of (PCKh), each
predicted joint is then a true or false positive, ranked by its score (VOC-style AP per joint).
Frames without annotated people are left out, as ``poseval`` does.

Joints are compared slot by slot. PoseTrack 2018 files use COCO's 17 slots but annotate
head_bottom and head_top where COCO has the eyes (and no ears): a COCO-trained network's eyes are
scored against those, so expect those two joints to score low (the others mean the same thing).

Two deliberate differences from the 2017 ``poseval`` code: the last frame of a sequence is
counted (``poseval`` drops it), and a frame with annotated people but no predictions counts
those people as misses (``poseval`` enters one placeholder pair there instead).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Protocol, Sequence

import numpy as np

from posekit.errors import AnnotationError
from posekit.io.files import read_json

MATCH_THRESHOLD = 0.5  # fraction of the head size
HEAD_SIZE_FACTOR = 0.6  # head size = 0.6 x head box diagonal (poseval's SC_BIAS)
_POSETRACK_SCHEMA = (
    "a PoseTrack 2018 JSON: 'images' (in frame order) and 'annotations' with image_id, track_id, "
    "keypoints [x, y, v] * K and bbox_head [x, y, w, h]"
)


class PosesInFrame(Protocol):
    """What the metrics read of a frame's predictions (a :class:`~posekit.track.TrackedFrame` fits)."""

    track_ids: np.ndarray  # (P,)
    keypoints: np.ndarray  # (P, K, 3) x, y, score


@dataclasses.dataclass
class AnnotatedFrame:
    """The annotated people of one frame.

    Attributes:
        track_ids: (G,) int. keypoints: (G, K, 3) x, y, v (v > 0: annotated). head_boxes: (G, 4) x, y, w, h.
    """

    track_ids: np.ndarray
    keypoints: np.ndarray
    head_boxes: np.ndarray


@dataclasses.dataclass
class TrackingMetrics:
    """PoseTrack metrics, per joint (arrays of K) and in total (mean over joints).

    Attributes:
        mota, motp, precision, recall, ap: percentages per joint, shape (K,) (NaN where a joint is never annotated).
        misses, switches, false_positives, objects: counts per joint, shape (K,).
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

    def total(self, name: str) -> float:
        """The mean of a percentage over the joints where it is defined (PoseTrack's "Total")."""
        values = getattr(self, name)
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def table(self) -> str:
        """Totals as one small text table."""
        rows = [("MOTA", self.total("mota")), ("MOTP", self.total("motp")), ("precision", self.total("precision")),
                ("recall", self.total("recall")), ("mAP", self.total("ap"))]
        counts = (f"id switches {int(self.switches.sum())}, misses {int(self.misses.sum())}, false positives "
                  f"{int(self.false_positives.sum())} of {int(self.objects.sum())} annotated joints")
        return "\n".join(f"{name:<10} {value:6.1f}" for name, value in rows) + "\n" + counts


def head_sizes(head_boxes: np.ndarray) -> np.ndarray:
    """PCKh reference length per person. Shape: (G, 4) x, y, w, h -> (G,)."""
    return HEAD_SIZE_FACTOR * np.linalg.norm(np.asarray(head_boxes, np.float64)[:, 2:], axis=1)


def joint_distances(predicted: np.ndarray, annotated: np.ndarray, head_boxes: np.ndarray) -> np.ndarray:
    """Distance of every predicted joint to the same joint of every annotated person, in head sizes.

    Shape: predicted (P, K, 2+), annotated (G, K, 2+), head_boxes (G, 4) -> (P, G, K).
    """
    offsets = np.asarray(predicted, np.float64)[:, None, :, :2] - np.asarray(annotated, np.float64)[None, :, :, :2]
    return np.linalg.norm(offsets, axis=-1) / head_sizes(head_boxes)[None, :, None]


def average_precision(scores: np.ndarray, labels: np.ndarray, positives: int) -> float:
    """VOC-style AP (area under the precision envelope) of ranked detections, in percent.

    Shape: scores (D,), labels (D,) bool (true positive), positives: the number of annotated joints.
    """
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = np.cumsum(np.asarray(labels, bool)[order])
    recall = np.concatenate([[0.0], hits / positives, [1.0]])
    precision = np.concatenate([[0.0], hits / np.arange(1, len(hits) + 1), [0.0]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(100 * np.sum((recall[steps] - recall[steps - 1]) * envelope[steps]))


def _assigned_person(matches: np.ndarray, annotated_joints: np.ndarray) -> np.ndarray:
    """poseval's pose assignment: each prediction keeps only its best annotated person (most joints
    matched, as a fraction of that person's annotated joints); each annotated person then takes the
    best prediction left pointing at it. Shape: matches (P, G, K), annotated_joints (G,) ->
    the annotated person of each prediction, (P,) int64, -1 for none."""
    if matches.shape[0] == 0:
        return np.zeros(0, np.int64)
    pck = matches.sum(2) / np.maximum(annotated_joints, 1)[None, :]
    pck = np.where(np.arange(pck.shape[1])[None, :] == pck.argmax(1)[:, None], pck, 0.0)
    best = pck.argmax(0)  # (G,)
    assigned = np.full(pck.shape[0], -1, np.int64)
    has = pck.max(0) > 0
    assigned[best[has]] = np.flatnonzero(has)
    return assigned


def evaluate_tracking(
    annotations: Sequence[AnnotatedFrame | None],
    predictions: Sequence[PosesInFrame],
    joint_threshold: float = 0.4,
    threshold: float = MATCH_THRESHOLD,
) -> TrackingMetrics:
    """PoseTrack MOTA and AP of predicted tracks against annotated ones, one sequence.

    Args:
        annotations: per frame its annotated people, or None for a frame not annotated.
        predictions: per frame (same order and length) the predicted people with track ids.
        joint_threshold: predicted joints scoring under it count as not predicted.
        threshold: match distance in head sizes.

    Raises:
        AnnotationError: the sequences differ in length or in the number of joints.
    """
    import motmetrics

    if len(annotations) != len(predictions):
        raise AnnotationError(f"{len(annotations)} annotated frames but {len(predictions)} predicted frames; expected one each")
    frames = [(a, p) for a, p in zip(annotations, predictions) if a is not None and len(a.track_ids)]
    num_joints = frames[0][0].keypoints.shape[1] if frames else 0
    accumulators = [motmetrics.MOTAccumulator(auto_id=True) for _ in range(num_joints)]
    scores, labels = [], []
    annotated_count = np.zeros(num_joints, np.int64)
    for truth, predicted in frames:
        keypoints = np.asarray(predicted.keypoints, np.float64)
        if keypoints.size and keypoints.shape[1:] != (num_joints, 3):
            raise AnnotationError(f"predictions have shape {keypoints.shape}; the annotations have {num_joints} joints")
        keypoints = keypoints.reshape(len(predicted.track_ids), num_joints, 3)
        has_truth = np.asarray(truth.keypoints)[..., 2] > 0  # (G, K)
        has_prediction = keypoints[..., 2] >= joint_threshold  # (P, K)
        distances = joint_distances(keypoints, truth.keypoints, truth.head_boxes)
        matches = has_prediction[:, None] & has_truth[None] & (distances <= threshold)  # (P, G, K)
        hypotheses = np.where(matches, distances, np.nan)
        for k, accumulator in enumerate(accumulators):  # one MOT problem per joint type
            rows, columns = has_prediction[:, k], has_truth[:, k]
            accumulator.update(
                np.asarray(truth.track_ids)[columns].tolist(), np.asarray(predicted.track_ids)[rows].tolist(),
                hypotheses[rows][:, columns, k].T,
            )
        assigned = _assigned_person(matches, has_truth.sum(1))
        hits = np.take_along_axis(matches, np.maximum(assigned, 0)[:, None, None], axis=1)[:, 0] & (assigned >= 0)[:, None]
        scores.append(np.where(has_prediction, keypoints[..., 2], np.nan))
        labels.append(hits)
        annotated_count += has_truth.sum(0)
    return _metrics(accumulators, scores, labels, annotated_count, num_joints)


def _metrics(accumulators: list, scores: list, labels: list, annotated_count: np.ndarray, num_joints: int) -> TrackingMetrics:
    import motmetrics

    names = ["num_misses", "num_switches", "num_false_positives", "num_objects", "num_detections"]
    host = motmetrics.metrics.create()
    counts = np.array([[host.compute(a, metrics=names, return_dataframe=False)[n] for n in names] for a in accumulators],
                      np.float64).reshape(-1, len(names))
    misses, switches, false_positives, objects, detections = counts.T
    distance_sums = np.array([np.nansum(a.mot_events["D"].to_numpy(np.float64)) for a in accumulators])
    with np.errstate(divide="ignore", invalid="ignore"):
        mota = 100 * (1 - (misses + switches + false_positives) / np.where(objects > 0, objects, np.nan))
        motp = np.where(detections > 0, 100 * (1 - distance_sums / detections), 0.0)
        precision = 100 * detections / np.where(detections + false_positives > 0, detections + false_positives, np.nan)
        recall = 100 * detections / np.where(objects > 0, objects, np.nan)
    all_scores = np.concatenate(scores).reshape(-1, num_joints) if scores else np.zeros((0, num_joints))
    all_labels = np.concatenate(labels).reshape(-1, num_joints) if labels else np.zeros((0, num_joints), bool)
    predicted = np.isfinite(all_scores)
    ap = np.array([average_precision(all_scores[predicted[:, k], k], all_labels[predicted[:, k], k], annotated_count[k])
                   for k in range(num_joints)])
    return TrackingMetrics(mota, motp, precision, recall, ap, misses, switches, false_positives, objects)


def load_posetrack(path: str | os.PathLike) -> list[AnnotatedFrame | None]:
    """Annotated frames of a PoseTrack 2018 style JSON, in the order of its ``images`` list.

    A frame marked ``is_labeled: false`` is None; annotations without ``bbox_head`` or keypoints
    are left out (they cannot be scored). Track ids come from ``track_id``.

    Raises:
        AnnotationError: the file is missing, not JSON, or lacks the fields above.
    """
    content = read_json(path, AnnotationError, _POSETRACK_SCHEMA)
    if not isinstance(content, dict) or not isinstance(content.get("images"), list) or not isinstance(content.get("annotations"), list):
        raise AnnotationError(f"{path}: expected {_POSETRACK_SCHEMA}")
    try:
        order = {image["id"]: i for i, image in enumerate(content["images"])}
        people: list[list[dict]] = [[] for _ in order]
        for entry in content["annotations"]:
            if entry.get("bbox_head") is not None and entry.get("keypoints"):
                people[order[entry["image_id"]]].append(entry)
        frames: list[AnnotatedFrame | None] = []
        for image, entries in zip(content["images"], people):
            if image.get("is_labeled", True) is False:
                frames.append(None)
                continue
            keypoints = np.array([e["keypoints"] for e in entries], np.float64).reshape(len(entries), -1, 3)
            frames.append(AnnotatedFrame(
                np.array([e["track_id"] for e in entries], np.int64), keypoints,
                np.array([e["bbox_head"] for e in entries], np.float64).reshape(-1, 4),
            ))
    except (KeyError, TypeError, ValueError) as error:
        raise AnnotationError(f"{path}: {type(error).__name__} {error}; expected {_POSETRACK_SCHEMA}") from None
    return frames
