"""Real time on a CPU: the tracker's real-time preset, and the check that int8 keeps the accuracy.

The preset (``posekit track --realtime``, :meth:`PoseTracker.realtime <posekit.track.PoseTracker.realtime>`)
spends the CPU where it counts (docs/realtime.md has the measurements):

- a light detector (:data:`REALTIME_DETECTOR`) on the first frame, on the frame after a track was
  lost or a pose grew unsure (:data:`REDETECT_BELOW`), and otherwise every
  :data:`REALTIME_DETECTOR_EVERY` frames; in between, boxes from the previous poses ("pose"
  propagation: RAFT flow costs far more than it gives on a CPU), matched by OKS;
- the pose network without flip test, in int8 (:mod:`posekit.models.int8`) on the CPU, the people of a
  frame in one batched call;
- the annotated video encoded with libx264's :data:`REALTIME_ENCODER_PRESET`, as encoding shares the
  cores with the network; torch's small per-frame work (crops, decoding) on one thread when every
  network runs in ONNX Runtime (:func:`~posekit.models.runtime.torch_on_one_thread`).

:func:`check_int8` compares the int8 network with fp32 on annotated people, so that a user can
verify their own weights before trusting int8.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from posekit.data import COCO_SAMPLE_ANNOTATIONS, COCO_SAMPLE_DIR
from posekit.defaults import DEFAULT, REALTIME_DETECTOR, REALTIME_DETECTOR_EVERY, REALTIME_ENCODER_PRESET
from posekit.track import PoseTracker

if TYPE_CHECKING:
    from torch import nn

    from posekit.estimator import PoseEstimator
    from posekit.io.images import ImageSource

# A tracked pose whose mean confident-joint score falls under this sends the detector to the next frame.
REDETECT_BELOW = 0.6
# What int8 may cost against fp32 (issue 20): PCK@0.1 points, and the two networks' joint distance in heatmap pixels.
MAX_PCK_DROP = 0.01
MAX_HEATMAP_DISTANCE = 0.5


def realtime_estimator(
    pose_weights: str | os.PathLike | None = DEFAULT,
    detector: str | None = REALTIME_DETECTOR,
    device: str = "cpu",
    depth: int = 18,
    calibration_images: Sequence[ImageSource] | None = None,
) -> PoseEstimator:
    """The preset's :class:`~posekit.estimator.PoseEstimator`: no flip test, int8 on the CPU (fp16 on
    CUDA), ``detector`` (None: none). ``depth`` applies to random weights (``pose_weights=None``)."""
    from posekit.estimator import PoseEstimator

    return PoseEstimator(pose_weights, detector=detector, device=device, flip_test=False, depth=depth,
                         precision=realtime_precision(device), calibration_images=calibration_images)


def realtime_precision(device: str = "cpu") -> str:
    """The preset's network precision on ``device``: int8 on the CPU, ``"auto"`` (fp16 on CUDA) elsewhere."""
    from posekit.core.device import resolve_device

    return "int8" if resolve_device(device).type == "cpu" else "auto"


def realtime_tracker(
    estimator: PoseEstimator | str | os.PathLike | None = None,
    detector_every: int = REALTIME_DETECTOR_EVERY,
    **options,
) -> PoseTracker:
    """The real-time :class:`~posekit.track.PoseTracker`: pose propagation, OKS matching, the detector
    only when needed (see the module docstring).

    Args:
        estimator: a :class:`~posekit.estimator.PoseEstimator` used as it is (set its ``flip_test``,
            precision and detector yourself), or pose weights for :func:`realtime_estimator`
            (None: posekit's default weights).
        detector_every: the most frames between two detector runs.
        options: further :class:`~posekit.track.PoseTracker` arguments (``detect``, ``max_age``, ``smoothing`` ...).

    The tracker's ``preset`` attribute says in words what was chosen.
    """
    if estimator is None or isinstance(estimator, (str, os.PathLike)):
        estimator = realtime_estimator(DEFAULT if estimator is None else estimator)
    options = {"propagation": "pose", "similarity": "oks", "redetect_below": REDETECT_BELOW, **options}
    tracker = PoseTracker(estimator, detector_every=detector_every, **options)
    given_boxes = options.get("detect") is not None
    person_detector = None if given_boxes else getattr(estimator, "detector", None)
    detector = "the given boxes" if given_boxes else getattr(person_detector, "name", None)
    network = f"{getattr(estimator, 'precision', '?')} pose network ({getattr(estimator, 'weights_source', '?')})"
    flip = "flip test" if getattr(estimator, "flip_test", False) else "no flip test"
    tracker.encoder_preset = REALTIME_ENCODER_PRESET
    # Given boxes, no detector or one in ONNX Runtime leave torch only small work: one thread does it best.
    tracker.torch_on_one_thread = (getattr(estimator, "backend", None) == "onnxruntime"
                                   and getattr(person_detector, "backend", "onnxruntime") == "onnxruntime")
    tracker.preset = (
        f"realtime preset: detector {detector or 'none (whole frame)'} on the first frame, after a lost or unsure "
        f"track (pose score < {tracker.redetect_below}) and at least every {detector_every} frames; boxes from the "
        f"previous poses in between ({tracker.propagation} propagation), {tracker.similarity.upper()} matching; "
        f"{network}, {flip}, one batched call per frame"
    )
    return tracker


# The CPU's int8 dot-product instructions ONNX Runtime's quantized kernels use, by their Linux
# /proc/cpuinfo names: Intel AMX, AVX-512 VNNI, AVX-VNNI, and the Arm dot product.
INT8_INSTRUCTIONS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp")


def int8_instructions(cpuinfo: str | None = None) -> tuple[str, ...] | None:
    """Which of :data:`INT8_INSTRUCTIONS` this CPU has, from the text of ``/proc/cpuinfo``
    (``cpuinfo``: that text, for tests); None where it cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
                cpuinfo = file.read()
        except OSError:
            return None
    flags = {word for line in cpuinfo.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
             for word in line.split(":", 1)[-1].split()}
    return tuple(name for name in INT8_INSTRUCTIONS if name in flags)


def int8_outlook(instructions: tuple[str, ...] | None) -> str:
    """In words, whether int8 will be fast on a CPU with ``instructions`` (:func:`int8_instructions`)."""
    if instructions is None:
        return "unknown (no /proc/cpuinfo to read): time it with python benchmarks/realtime.py --quick"
    if not instructions:
        return ("slow: no VNNI or dot-product instructions, int8 may be no faster than fp32 here "
                "(use --precision fp32 with --realtime)")
    return (f"fast: {', '.join(instructions)} (int8 about 2x fp32 measured with VNNI, docs/realtime.md); "
            "accuracy of your weights: posekit check-int8")


@dataclasses.dataclass
class Int8Check:
    """int8 against fp32 on the same annotated people (:func:`check_int8`).

    Attributes:
        people: how many people were compared.
        pck_fp32, pck_int8: PCK@0.1 (joints within 0.1 x the longer box side of the truth).
        mean_distance: mean distance between the two networks' joints, in heatmap pixels.
        max_distance: the largest such distance.
    """

    people: int
    pck_fp32: float
    pck_int8: float
    mean_distance: float
    max_distance: float

    @property
    def passed(self) -> bool:
        """PCK drop at most :data:`MAX_PCK_DROP` and mean distance at most :data:`MAX_HEATMAP_DISTANCE`."""
        return self.pck_fp32 - self.pck_int8 <= MAX_PCK_DROP and self.mean_distance <= MAX_HEATMAP_DISTANCE

    def table(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"int8 vs fp32 on {self.people} people: PCK@0.1 {self.pck_fp32:.3f} -> {self.pck_int8:.3f} "
            f"(drop {self.pck_fp32 - self.pck_int8:+.3f}, allowed {MAX_PCK_DROP}); joints apart by "
            f"{self.mean_distance:.3f} heatmap px on average (allowed {MAX_HEATMAP_DISTANCE}), "
            f"{self.max_distance:.2f} at most: {verdict}"
        )


def check_int8(
    model: nn.Module,
    ann_file: str | os.PathLike = COCO_SAMPLE_ANNOTATIONS,
    image_dir: str | os.PathLike = COCO_SAMPLE_DIR,
    calibration_images: Sequence[ImageSource] | None = None,
    flip_test: bool = False,
) -> Int8Check:
    """Compare the int8 network with fp32 on the annotated people of a COCO keypoint file.

    Both run the same top-down pipeline on the ground-truth boxes (quarter-pixel decoding); the
    int8 one is built as ``PoseEstimator(precision="int8")`` builds it (same cache).

    Args:
        model: the network, with its ``input_spec`` (e.g. ``PoseEstimator(weights).model``, or
            :func:`posekit.train.trainer.load_trained`'s).
        ann_file, image_dir: held-out people; default the bundled COCO sample (14 people).
        calibration_images: as for ``PoseEstimator``; None: the bundled COCO people.
        flip_test: run both with the flip test (the real-time preset runs without).
    """
    from posekit.core import topdown
    from posekit.core.crop import PIXEL_STD
    from posekit.models.int8 import cached_int8_forward
    from posekit.models.runtime import inference_forward
    from posekit.train.trainer import KeypointPeople, pck

    model = model.eval().cpu()
    spec = model.input_spec
    people = KeypointPeople(ann_file, image_dir, spec.input_size)
    forwards = {"fp32": inference_forward(model, "torch", "fp32", channels_last=False),
                "int8": cached_int8_forward(model, calibration_images=calibration_images)}
    found = {name: np.zeros((len(people.image_ids), spec.num_keypoints, 3)) for name in forwards}
    heatmap_pixel = np.zeros(len(people.image_ids))  # image px per heatmap px, per person
    for image_id in np.unique(people.image_ids):
        rows = np.flatnonzero(people.image_ids == image_id)
        image, _, _ = people[rows[0]]  # (3, H, W) uint8, read as training and evaluation read it
        for name, forward in forwards.items():
            points, _, scales = topdown.keypoints(forward, spec, image, people.boxes[rows], flip_test, "quarter")
            found[name][rows] = points
        heatmap_pixel[rows] = scales[:, 0] * PIXEL_STD / spec.heatmap_size[0]
    distance = np.linalg.norm(found["int8"][..., :2] - found["fp32"][..., :2], axis=2) / heatmap_pixel[:, None]
    labelled = people.visibility > 0
    return Int8Check(len(people.image_ids), pck(found["fp32"], people), pck(found["int8"], people),
                     float(distance[labelled].mean()), float(distance[labelled].max()))
