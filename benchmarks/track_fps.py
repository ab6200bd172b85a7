"""Frames per second of pose tracking on the bundled clip, per setting, measured in one run.

    .venv/bin/python benchmarks/track_fps.py [--depths 50 18] [--every 1 5] [--loops 4] [--device cpu]

Settings: the detector on every frame vs every ``K`` frames (boxes propagated from the previous
poses in between, the paper's "pose" propagation), the pose network at each ResNet depth, flip
test on and off. The clip's five frames are played forward and back ``--loops`` times (a longer
sequence, with no jump between the last frame and the first).

RANDOM WEIGHTS, for timing only: speed does not depend on the weights' values, and no weights
need downloading. But a tracker fed random outputs behaves unlike a real one (no confident joint,
so no propagated box, no match, every track lost, the detector on every frame), so the networks
run for their real cost while the tracker receives stand-ins: the clip's bundled boxes instead of
the random detector's, and, for the random pose network's keypoints, a fixed confident pose laid
into each box. The tracker then does what it does with trained networks on this clip. Only the
tracker is timed (detector, pose network, matching), not video decoding. Settings are run round-robin ``--passes``
times and the best pass of each is reported, so a burst of load from elsewhere hits all alike.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from posekit.data import VIDEO_SAMPLE_BOXES, VIDEO_SAMPLE_CLIP
from posekit.estimator import PoseEstimator
from posekit.io.video import VideoSource
from posekit.models.detect import DETECTORS, PersonDetector, load_detections
from posekit.core.boxes import BOX_ENLARGE
from posekit.track import PoseTracker


def random_detector(name: str, device: str) -> PersonDetector:
    """The detector architecture with random weights (saved and loaded the way real ones are)."""
    spec = DETECTORS[name]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.pth"
        torch.save(spec.builder(weights=None, weights_backbone=None, num_classes=spec.num_classes).state_dict(), path)
        return PersonDetector(name, device=device, checkpoint=path)


# A standing person's 17 joints as fractions of their box (x, y): a stand-in for a trained network's output.
POSE_IN_BOX = np.array([
    [0.5, 0.08], [0.45, 0.06], [0.55, 0.06], [0.4, 0.08], [0.6, 0.08], [0.3, 0.22], [0.7, 0.22], [0.22, 0.4],
    [0.78, 0.4], [0.18, 0.56], [0.82, 0.56], [0.38, 0.55], [0.62, 0.55], [0.36, 0.75], [0.64, 0.75], [0.35, 0.95],
    [0.65, 0.95],
])
# Spread so the joints' extent enlarged by 15% (the propagated box) is the box again: no drift.
POSE_IN_BOX = 0.5 + (POSE_IN_BOX - 0.5 * (POSE_IN_BOX.min(0) + POSE_IN_BOX.max(0))) / np.ptp(POSE_IN_BOX, 0) / BOX_ENLARGE


class StandInPoses:
    """The estimator contract: runs the real (random-weight) network for its cost, returns confident
    poses laid into the boxes so that propagation and matching behave as with trained weights."""

    def __init__(self, estimator: PoseEstimator) -> None:
        self.estimator, self.backend = estimator, estimator.backend

    def keypoints(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self.estimator.keypoints(rgb, boxes)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 1, 4)
        xy = boxes[..., :2] + POSE_IN_BOX[None] * boxes[..., 2:]
        return np.concatenate([xy, np.full((*xy.shape[:2], 1), 0.9)], axis=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[50, 18], help="pose network ResNet depths")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 5], help="detector every K frames")
    parser.add_argument("--detector", default="fasterrcnn_resnet50_fpn_v2", choices=list(DETECTORS))
    parser.add_argument("--loops", type=int, default=4, help="forward-and-back plays of the 5-frame clip")
    parser.add_argument("--passes", type=int, default=2, help="round-robin passes over all settings")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's setting)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    clip = list(VideoSource(VIDEO_SAMPLE_CLIP))
    order = [*range(len(clip)), *range(len(clip) - 2, 0, -1)] * args.loops  # 0 1 2 3 4 3 2 1 0 1 ...
    boxes = load_detections(VIDEO_SAMPLE_BOXES)
    detector = random_detector(args.detector, args.device)
    estimators = {depth: PoseEstimator(None, device=args.device, depth=depth) for depth in args.depths}

    def detect(rgb, position):
        detector([rgb])  # the detector's cost; its random boxes are not used
        return boxes[order[position]]

    settings = list(itertools.product(args.depths, (True, False), args.every))
    best = {setting: float("inf") for setting in settings}
    for _ in range(args.passes):
        for depth, flip, every in settings:
            estimators[depth].flip_test = flip
            tracker = PoseTracker(StandInPoses(estimators[depth]), "pose", "oks", every, detect=detect)
            start = time.perf_counter()
            for position, index in enumerate(order):
                tracker.update(clip[index].rgb, position, position / 30)
            best[(depth, flip, every)] = min(best[(depth, flip, every)], time.perf_counter() - start)

    print(f"posekit tracking on the bundled clip: {len(order)} frames of 1280x720, 3-4 people, device {args.device}, "
          f"{torch.get_num_threads()} threads; detector {args.detector}; RANDOM WEIGHTS (timing only)")
    print(f"{'pose network':<14}{'flip':<6}{'detector':<18}{'fps':>8}{'vs every frame':>16}")
    for depth, flip, every in settings:
        fps = len(order) / best[(depth, flip, every)]
        base = len(order) / best[(depth, flip, args.every[0])]
        print(f"{f'ResNet-{depth}':<14}{'on' if flip else 'off':<6}{'every frame' if every == 1 else f'every {every} frames':<18}{fps:>8.2f}{fps / base:>15.2f}x")


if __name__ == "__main__":
    main()
