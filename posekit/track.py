"""Pose tracking: people through a video with stable identities (Xiao et al. 2018, section 3).

Per frame: person boxes from the detector (score >= 0.5) plus boxes propagated from the previous
frame's poses (their confident joints moved by optical flow, or left where they were, the box
their extent enlarged by 15%), merged by box NMS; the poses of all boxes in one batched call of
:meth:`PoseEstimator.keypoints <posekit.estimator.PoseEstimator.keypoints>`; each new pose
matched to the living tracks by greedy highest-similarity-first matching on OKS between the new
pose and the track's last pose moved by the flow (joints under 0.4 left out); new ids for the rest.

Two additions to the paper, both off in its configuration: ``max_age`` keeps an unmatched track
alive for that many frames (its pose still moved by the flow), so a person hidden for a moment
gets their id back; ``detector_every=K`` runs the detector only every K frames (and whenever a
track was lost or nothing is tracked) and relies on propagated boxes in between, the route to
real time, since on a CPU the detector costs more than the pose network.
"""
from __future__ import annotations

import dataclasses
from time import perf_counter
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from posekit.core.boxes import JOINT_THRESHOLD, box_iou, box_nms, clip_boxes, greedy_nms, joint_boxes
from posekit.core.coco17 import NUM_KEYPOINTS, OKS_SIGMAS, PERSON_CATEGORY_ID
from posekit.core.oks import OKS_NMS_THRESHOLD, pose_similarity, rescore
from posekit.core.smoothing import OneEuro
from posekit.errors import ArgumentError, PosekitError
from posekit.models.flow import FlowFunction, RaftFlow, warp_keypoints

if TYPE_CHECKING:
    from posekit.io.video import Frame

# The paper's thresholds.
BOX_THRESHOLD = 0.5  # detections scoring less are dropped
# JOINT_THRESHOLD (0.4: joints scoring less take no part in propagation and matching) and
# BOX_ENLARGE (1.15: a propagated box is the joints' extent enlarged by 15%) are posekit.core.boxes'.
# posekit's choices where the paper gives no number.
NMS_IOU = 0.5  # a box overlapping a better-scored one by more is the same person
MIN_SIMILARITY = 0.3  # pairs less similar are never matched: the new pose starts a track

PROPAGATIONS = ("flow", "pose", None)
SIMILARITIES = ("flow-oks", "oks", "iou")

# (rgb, frame index) -> person boxes (M, 4) xywh and scores (M,).
DetectFunction = Callable[[np.ndarray, int], "tuple[np.ndarray, np.ndarray]"]


@dataclasses.dataclass
class TrackedFrame:
    """The tracked people of one frame.

    Attributes:
        index: frame index. time: its timestamp in seconds.
        track_ids: identity of each person, shape (N,) int64.
        boxes: the box each pose was estimated in, shape (N, 4) x, y, w, h.
        scores: person confidence (box score x mean confident joint score), shape (N,).
        keypoints: x, y, score per joint in image pixels, shape (N, K, 3) (smoothed if enabled).
        detected: whether the detector ran on this frame (False: boxes came from propagation only).
    """

    index: int
    time: float
    track_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    detected: bool


# ------------------------------------------------------------------------------------------
# Matching (boxes, IoU, NMS and OKS live in posekit.core.boxes and posekit.core.oks)
# ------------------------------------------------------------------------------------------


def greedy_match(similarity: np.ndarray, min_similarity: float = MIN_SIMILARITY) -> tuple[np.ndarray, np.ndarray]:
    """Greedy highest-similarity-first matching: repeatedly pair the most similar unpaired row and
    column, ignoring pairs under ``min_similarity``.

    Shape: similarity (N, M) -> (rows, columns), each (P,) int64, the P pairs in matching order.
    """
    rows, columns = np.unravel_index(np.argsort(-similarity, axis=None, kind="stable"), similarity.shape)
    good = similarity[rows, columns] >= min_similarity
    rows, columns = rows[good], columns[good]
    used_rows, used_columns = np.zeros(similarity.shape[0], bool), np.zeros(similarity.shape[1], bool)
    pairs = []
    for row, column in zip(rows, columns):  # greedy: a pair is taken only if both sides are still free
        if not (used_rows[row] or used_columns[column]):
            used_rows[row] = used_columns[column] = True
            pairs.append((row, column))
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


# ------------------------------------------------------------------------------------------
# The tracker
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Tracks:
    """Living tracks as parallel arrays, one row per track (T rows)."""

    ids: np.ndarray  # (T,) int64
    keypoints: np.ndarray  # (T, K, 3) last pose, as estimated
    moved: np.ndarray  # (T, K, 3) last pose moved by the flow into the current frame (with flow)
    boxes: np.ndarray  # (T, 4) last box
    age: np.ndarray  # (T,) frames since last matched (0: seen in the previous frame)
    smooth: np.ndarray  # (T, K, 2) One-Euro state: filtered joints
    speed: np.ndarray  # (T, K, 2) One-Euro state: filtered speed
    time: np.ndarray  # (T,) time of the last match

    @classmethod
    def empty(cls, num_joints: int) -> _Tracks:
        return cls(np.zeros(0, np.int64), np.zeros((0, num_joints, 3)), np.zeros((0, num_joints, 3)), np.zeros((0, 4)),
                   np.zeros(0, np.int64), np.zeros((0, num_joints, 2)), np.zeros((0, num_joints, 2)), np.zeros(0))

    def take(self, rows: np.ndarray) -> _Tracks:
        return _Tracks(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))

    def append(self, other: _Tracks) -> _Tracks:
        return _Tracks(*(np.concatenate([getattr(self, f.name), getattr(other, f.name)]) for f in dataclasses.fields(self)))


class PoseTracker:
    """Tracks people through a video on top of a pose estimator.

    Args:
        estimator: anything with ``keypoints(rgb, boxes_xywh) -> (N, K, 3)`` and
            ``detect(list_of_rgb) -> [(boxes, scores)]``, normally a
            :class:`~posekit.estimator.PoseEstimator`.
        propagation: ``"flow"`` (previous joints moved by optical flow), ``"pose"`` (previous
            joints where they were) or None (detector boxes only).
        similarity: ``"flow-oks"`` (OKS with the previous pose moved by flow), ``"oks"`` (OKS
            with the previous pose as it was) or ``"iou"`` (box IoU).
        detector_every: run the detector every this many frames (and whenever a track was
            lost in the previous frame or nothing is tracked); propagate boxes in between.
            :meth:`realtime` builds the real-time configuration.
        max_age: frames an unmatched track waits to be matched again before its id is retired
            (0: the paper, previous frame only).
        box_threshold: detections (and, for propagated boxes, the new pose's score) under it are dropped.
        joint_threshold: joints under it take no part in propagation and matching.
        smoothing: a :class:`OneEuro` to smooth each track's joints over time, or None.
        flow: ``(prev_rgb, rgb) -> (H, W, 2)`` flow; default :class:`RaftFlow` on the estimator's
            device, loaded here when the configuration uses flow (so missing weights stop it before frame 1).
        detect: ``(rgb, frame_index) -> (boxes, scores)``; default the estimator's detector.
            Pass one to use precomputed boxes.
        sigmas: per-joint OKS falloffs (K,); default COCO's, for 17 joints.
        redetect_below: with ``detector_every > 1``, also run the detector on the frame after a
            tracked pose scored under this (its mean confident joint score); None: never.

    Attributes:
        stage_seconds: wall time since :meth:`reset` per stage of :meth:`update`: ``propagate``
            (flow), ``detect`` (detector and box merging), ``pose`` (the network call), ``match``.
        encoder_preset: the libx264 preset :func:`track_video` encodes this tracker's annotated
            video with: x264's default ``"medium"``; the real-time preset takes
            :data:`~posekit.defaults.REALTIME_ENCODER_PRESET`, as encoding shares the cores with the network.
        torch_on_one_thread: whether :func:`track_video` runs torch's own operations on one thread
            (:func:`~posekit.models.runtime.torch_on_one_thread`); the real-time preset sets it when
            every network runs in ONNX Runtime.

    Example:
        >>> tracker = PoseTracker(PoseEstimator(detector="fasterrcnn_resnet50_fpn_v2"), detector_every=5)
        >>> for tracked in tracker.track(VideoSource("clip.mp4")):
        ...     print(tracked.index, tracked.track_ids)
    """

    def __init__(
        self,
        estimator,
        propagation: str | None = "flow",
        similarity: str = "flow-oks",
        detector_every: int = 1,
        max_age: int = 0,
        box_threshold: float = BOX_THRESHOLD,
        joint_threshold: float = JOINT_THRESHOLD,
        smoothing: OneEuro | None = None,
        flow: FlowFunction | None = None,
        detect: DetectFunction | None = None,
        sigmas: np.ndarray | None = None,
        redetect_below: float | None = None,
    ) -> None:
        detector_every, max_age = _whole_number("detector_every", detector_every), _whole_number("max_age", max_age)
        if propagation not in PROPAGATIONS:
            raise PosekitError(f"propagation {propagation!r} is unknown; expected 'flow', 'pose' or None")
        if similarity not in SIMILARITIES:
            raise PosekitError(f"similarity {similarity!r} is unknown; expected one of {', '.join(SIMILARITIES)}")
        if detector_every < 1 or (detector_every > 1 and propagation is None):
            raise PosekitError(
                f"detector_every={detector_every}: expected 1, or more with a propagation ('flow' or 'pose') "
                "to find people on the frames without detection"
            )
        if max_age < 0:
            raise PosekitError(f"max_age={max_age}: expected 0 or more frames")
        self.estimator = estimator
        self.propagation, self.similarity = propagation, similarity
        self.detector_every, self.max_age = detector_every, max_age
        self.box_threshold, self.joint_threshold = box_threshold, joint_threshold
        self.smoothing = smoothing
        if flow is None and self.uses_flow:
            flow = RaftFlow(device=getattr(estimator, "device", "cpu"))
        self._flow = flow
        self._detect = detect or (lambda rgb, index: estimator.detect([rgb])[0])
        self._sigmas = None if sigmas is None else _joint_falloffs(sigmas)
        self.redetect_below = redetect_below
        self.encoder_preset = "medium"
        self.torch_on_one_thread = False
        self.reset()

    @classmethod
    def realtime(cls, estimator=None, **options) -> PoseTracker:
        """The real-time preset (``posekit track --realtime``): see :func:`posekit.realtime.realtime_tracker`."""
        from posekit.realtime import realtime_tracker

        return realtime_tracker(estimator, **options)

    def reset(self) -> None:
        """Forget all tracks and start ids from 1 again (a new video)."""
        self._tracks: _Tracks | None = None
        self._previous_rgb: np.ndarray | None = None
        self._next_id = 1
        self._lost = self._weak = False
        self._frames_seen = 0
        self.stage_seconds: dict[str, float] = {}

    @property
    def uses_flow(self) -> bool:
        """Whether this configuration computes optical flow between consecutive frames."""
        return self.propagation == "flow" or self.similarity == "flow-oks"

    def track(self, frames: Iterable[Frame]) -> Iterator[TrackedFrame]:
        """Track through a sequence of :class:`~posekit.io.video.Frame` (e.g. a :class:`~posekit.io.video.VideoSource`)."""
        for frame in frames:
            yield self.update(frame.rgb, frame.index, frame.time)

    def update(self, rgb: np.ndarray, index: int | None = None, time: float | None = None) -> TrackedFrame:
        """Track one more frame. Shape: rgb (H, W, 3) uint8 RGB.

        ``index`` defaults to the number of frames seen so far, ``time`` to ``index / 30`` s.
        """
        rgb = _rgb_frame(rgb)
        index = self._frames_seen if index is None else index
        time = index / 30.0 if time is None else float(time)
        tracks = self._tracks
        clock = perf_counter()
        if tracks is not None and self.uses_flow and self._previous_rgb is not None and len(tracks.ids):
            tracks.moved = warp_keypoints(tracks.moved, self._flow(self._previous_rgb, rgb))
        clock = self._lap("propagate", clock)
        fresh = tracks.age == 0 if tracks is not None else np.zeros(0, bool)
        detected = (self.detector_every == 1 or self._frames_seen % self.detector_every == 0 or self._lost
                    or self._weak or not fresh.any())
        boxes, scores, propagated = self._boxes(rgb, index, tracks, fresh, detected)
        clock = self._lap("detect", clock)
        keypoints = np.asarray(self.estimator.keypoints(rgb, boxes), np.float64)  # the one network call of the frame
        clock = self._lap("pose", clock)
        scores = rescore(keypoints, scores, self.joint_threshold)
        # A propagated box must hold a pose as sure as a detection: else the person has left it.
        keep = ~propagated | (rescore(keypoints, np.ones(len(boxes)), self.joint_threshold) >= self.box_threshold)
        boxes, scores, keypoints = boxes[keep], scores[keep], keypoints[keep]
        # Two boxes on one person (a detection and a box the flow bent out of shape) give two
        # near-identical poses that box NMS missed: keep the better one (OKS-NMS, as COCO evaluation).
        similarity = pose_similarity(keypoints, keypoints, self._joint_sigmas(keypoints.shape[1]), self.joint_threshold)
        unique = np.sort(greedy_nms(similarity, np.argsort(-scores, kind="stable"), OKS_NMS_THRESHOLD))
        boxes, scores, keypoints = boxes[unique], scores[unique], keypoints[unique]
        if self.redetect_below is not None:  # a pose growing unsure: let the detector look again next frame
            self._weak = bool((rescore(keypoints, np.ones(len(keypoints)), self.joint_threshold) < self.redetect_below).any())
        track_ids, output = self._associate(keypoints, boxes, time)
        self._previous_rgb = rgb
        self._frames_seen += 1
        self._lap("match", clock)
        return TrackedFrame(index, time, track_ids, boxes, scores, output, detected)

    def _lap(self, stage: str, since: float) -> float:
        """Charge the time since ``since`` to ``stage`` in :attr:`stage_seconds`; returns now."""
        now = perf_counter()
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + now - since
        return now

    def _boxes(
        self, rgb: np.ndarray, index: int, tracks: _Tracks | None, fresh: np.ndarray, detected: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detected and propagated boxes merged by NMS: (boxes (M, 4), box scores (M,), propagated mask (M,))."""
        boxes, scores = np.zeros((0, 4)), np.zeros(0)
        if detected:
            found, found_scores = self._detect(rgb, index)
            found_scores = np.asarray(found_scores, np.float64).reshape(-1)
            good = found_scores >= self.box_threshold
            boxes, scores = np.asarray(found, np.float64).reshape(-1, 4)[good], found_scores[good]
        propagated = np.zeros(len(boxes), bool)
        if self.propagation is not None and fresh.any():
            source = tracks.moved if self.propagation == "flow" else tracks.keypoints
            moved = joint_boxes(source[fresh], self.joint_threshold)
            boxes = np.concatenate([boxes, moved])
            # A propagated box is as sure as the pose it came from (its mean confident joint score).
            scores = np.concatenate([scores, rescore(source[fresh], np.ones(len(moved)), self.joint_threshold)])
            propagated = np.concatenate([propagated, np.ones(len(moved), bool)])
        boxes, valid = clip_boxes(boxes, (rgb.shape[1], rgb.shape[0]), min_side=1)
        scores, propagated = scores[valid], propagated[valid]
        kept = box_nms(boxes, scores, NMS_IOU)  # stable: at equal scores the detections, listed first, win
        return boxes[kept], scores[kept], propagated[kept]

    def _associate(self, keypoints: np.ndarray, boxes: np.ndarray, time: float) -> tuple[np.ndarray, np.ndarray]:
        """Match the new poses to the living tracks, update the tracks; (track ids (N,), output keypoints (N, K, 3))."""
        num_joints = keypoints.shape[1] if keypoints.ndim == 3 else NUM_KEYPOINTS
        tracks = self._tracks if self._tracks is not None else _Tracks.empty(num_joints)
        similarity = self._similarity(keypoints, boxes, tracks)
        new_rows, track_rows = greedy_match(similarity)
        track_ids = np.zeros(len(keypoints), np.int64)
        track_ids[new_rows] = tracks.ids[track_rows]
        unmatched = np.setdiff1d(np.arange(len(keypoints)), new_rows)
        track_ids[unmatched] = self._next_id + np.arange(len(unmatched))
        self._next_id += len(unmatched)

        output = keypoints.copy()
        if self.smoothing is not None and len(new_rows):
            output[new_rows, :, :2], speed = self.smoothing(
                keypoints[new_rows, :, :2], tracks.smooth[track_rows], tracks.speed[track_rows], time - tracks.time[track_rows]
            )
        else:
            speed = np.zeros((len(new_rows), num_joints, 2))
        # Tracks seen now: the new rows in input order; the others age and retire after max_age.
        seen = np.zeros(len(tracks.ids), bool)
        seen[track_rows] = True
        rest = tracks.take(~seen)
        rest.age = rest.age + 1
        self._lost = bool((rest.age == 1).any())
        speeds = np.zeros((len(keypoints), num_joints, 2))
        speeds[new_rows] = speed
        now = _Tracks(track_ids, keypoints, keypoints, boxes.astype(np.float64), np.zeros(len(keypoints), np.int64),
                      output[..., :2], speeds, np.full(len(keypoints), time))
        self._tracks = now.append(rest.take(rest.age <= self.max_age))
        return track_ids, output

    def _similarity(self, keypoints: np.ndarray, boxes: np.ndarray, tracks: _Tracks) -> np.ndarray:
        """Similarity of each new pose (rows) with each living track (columns). Shape: (N, T)."""
        if self.similarity == "iou":
            return box_iou(boxes, tracks.boxes)
        previous = tracks.moved if self.similarity == "flow-oks" else tracks.keypoints
        return pose_similarity(keypoints, previous, self._joint_sigmas(keypoints.shape[1]), self.joint_threshold)

    def _joint_sigmas(self, num_joints: int) -> np.ndarray:
        if self._sigmas is not None:
            if len(self._sigmas) != num_joints:
                raise ArgumentError(f"sigmas has {len(self._sigmas)} values, the poses {num_joints} joints; "
                                    "expected one OKS falloff per joint")
            return self._sigmas
        if num_joints != NUM_KEYPOINTS:
            raise PosekitError(f"poses have {num_joints} joints: pass sigmas (one OKS falloff per joint)")
        return OKS_SIGMAS


def _whole_number(name: str, value: object) -> int:
    """``value`` as an int (a whole float such as 2.0 too), else an ArgumentError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)) \
            or not float(value).is_integer():
        raise ArgumentError(f"{name}={value!r}: expected a whole number")
    return int(value)


def _joint_falloffs(sigmas: object) -> np.ndarray:
    """Per-joint OKS falloffs as a (K,) float64 array of positive finite numbers, else an ArgumentError."""
    try:
        values = np.asarray(sigmas, np.float64)
    except (TypeError, ValueError):
        values = np.zeros(0)
    if values.ndim != 1 or not len(values) or not (np.isfinite(values) & (values > 0)).all():
        raise ArgumentError(f"sigmas={sigmas!r}: expected one positive OKS falloff per joint, e.g. COCO's 17")
    return values


def _rgb_frame(rgb: object) -> np.ndarray:
    """A frame as the tracker takes it, else an ArgumentError saying what is accepted. Shape: (H, W, 3) uint8."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        described = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ArgumentError(f"a frame must be an (H, W, 3) uint8 RGB array, got a {described} (a grey frame: "
                            "np.repeat(grey[..., None], 3, axis=2))")
    return rgb


def to_posetrack(frames: Iterable[TrackedFrame], file_names: Iterable[str] | None = None) -> dict:
    """Tracked frames as a PoseTrack 2018 style JSON document (COCO-like, one ``track_id`` per person).

    ``images`` lists every frame in order (id = frame index, ``file_name`` from ``file_names`` or
    ``NNNNNN.jpg``); ``annotations`` holds one entry per tracked person with ``keypoints``
    (x, y, score) * K, ``scores`` (per joint), ``bbox`` and ``score``. :func:`posekit.io.posetrack.load_tracks`
    reads it back.
    """
    from posekit.core.coco17 import KEYPOINT_NAMES, SKELETON

    frames = list(frames)
    names = list(file_names) if file_names is not None else [f"{f.index:06d}.jpg" for f in frames]
    images = [{"id": f.index, "file_name": name, "frame_id": f.index, "time": round(f.time, 6)} for f, name in zip(frames, names)]
    annotations = [
        {
            "id": f.index * 1000 + row, "image_id": f.index, "track_id": int(track_id), "category_id": PERSON_CATEGORY_ID,
            "keypoints": np.round(points, 2).ravel().tolist(), "scores": np.round(points[:, 2], 4).tolist(),
            "bbox": np.round(box, 2).tolist(), "score": round(float(score), 4),
        }
        for f in frames
        for row, (track_id, points, box, score) in enumerate(zip(f.track_ids, f.keypoints, f.boxes, f.scores))
    ]
    categories = [{"id": 1, "name": "person", "keypoints": list(KEYPOINT_NAMES), "skeleton": [[a + 1, b + 1] for a, b in SKELETON]}]
    return {"images": images, "annotations": annotations, "categories": categories}


def __getattr__(name: str):
    """The video loop (:mod:`posekit.track_run`) is importable from here too, as it always was."""
    if name in ("TrackingRun", "track_video"):
        from posekit import track_run

        return getattr(track_run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
