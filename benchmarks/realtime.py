"""`posekit track` end to end, per stage, defaults against --realtime, fp32 against int8 (issue 20).

    PYTHONPATH=. .venv/bin/python benchmarks/realtime.py [--quick] [--depths 18 50] [--threads 2]

Times :func:`posekit.track.track_video` itself (what ``posekit track`` runs): decode (reader thread),
detect, propagate (flow), pose (the batched network call, crops included), match, draw and
encode (writer thread), on (a) a 640x480 clip with one person, cut from the bundled clip, and (b)
the bundled 1280x720 clip with 3-4 people, each played forward and back and written as an mp4
first, so decoding is real. Configurations: the defaults (the R50-FPN-v2 detector on every frame,
RAFT flow, flip test, fp32) and ``--realtime`` (:mod:`posekit.realtime`), with fp32 or int8
networks, ResNet-18 and -50. Also the network alone at batch 1 and 4 (fp32, bf16, int8) and the
two real-time detector candidates at 640x480.

The ``network`` column is the pose network's share of the frame time, ``+detector`` that of the pose
network and the detector together.

RANDOM WEIGHTS, for timing only (nothing here downloads): every network (detector, RAFT, pose)
runs for its real cost, but the tracker gets stand-ins as in ``benchmarks/track_fps.py``: the
bundled boxes instead of the random detector's, confident poses laid into each box instead of
the random network's. All numbers come from one run; on a loaded machine compare the ratios.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from track_fps import StandInPoses, random_detector  # noqa: E402

from posekit.data import VIDEO_SAMPLE_BOXES, VIDEO_SAMPLE_CLIP  # noqa: E402
from posekit.estimator import PoseEstimator  # noqa: E402
from posekit.io.video import VideoSource, VideoWriter  # noqa: E402
from posekit.models.detect import load_detections  # noqa: E402
from posekit.realtime import realtime_tracker  # noqa: E402
from posekit.track import PoseTracker, track_video  # noqa: E402

STAGES = ("decode", "detect", "propagate", "pose", "match", "draw", "encode")


def make_clips(folder: Path, frames: int) -> dict[str, tuple[Path, list]]:
    """The two clips as mp4s, and per frame the person boxes (x, y, w, h) the stand-in detector returns."""
    clip = [frame.rgb for frame in VideoSource(VIDEO_SAMPLE_CLIP)]
    boxes = load_detections(VIDEO_SAMPLE_BOXES)
    order = [*range(len(clip)), *range(len(clip) - 2, 0, -1)]
    order = (order * (frames // len(order) + 1))[:frames]
    # (a) 640x480 around the first player: a one-person clip at webcam size.
    x, y, w, h = boxes[0][0][0]
    left = int(np.clip(x + w / 2 - 320, 0, 1280 - 640))
    top = int(np.clip(y + h / 2 - 240, 0, 720 - 480))
    small = [(clip[i][top:top + 480, left:left + 640], boxes[i][0][:1] - [left, top, 0, 0]) for i in order]
    large = [(clip[i], boxes[i][0]) for i in order]
    clips = {}
    for name, frames_and_boxes in (("640x480, 1 person", small), ("1280x720, 3-4 people", large)):
        path = folder / f"{name.split(',')[0]}.mp4"
        with VideoWriter(path, 30.0) as writer:
            for rgb, _ in frames_and_boxes:
                writer.write(np.ascontiguousarray(rgb))
        clips[name] = (path, [b for _, b in frames_and_boxes])
    return clips


class TimedForward:
    """The network call of an estimator, timed (its share of the frame time)."""

    def __init__(self, estimator: PoseEstimator) -> None:
        self.estimator, self.forward, self.seconds = estimator, estimator.forward, 0.0
        estimator.forward = self

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        began = time.perf_counter()
        out = self.forward(inputs)
        self.seconds += time.perf_counter() - began
        return out


def run_config(clip: Path, boxes: list, realtime: bool, depth: int, precision: str, frames: int, detectors: dict,
               folder: Path) -> dict:
    estimator = PoseEstimator(None, depth=depth, device="cpu", flip_test=not realtime, precision=precision)
    timed = TimedForward(estimator)
    detector = detectors["realtime" if realtime else "default"]

    detector_seconds = 0.0

    def detect(rgb, index):
        nonlocal detector_seconds
        began = time.perf_counter()
        detector([rgb])  # the detector's cost; its random boxes are not used
        detector_seconds += time.perf_counter() - began
        return boxes[index], np.full(len(boxes[index]), 0.9)

    if realtime:
        tracker = realtime_tracker(StandInPoses(estimator), detect=detect)
    else:
        from torchvision.models.optical_flow import raft_small

        from posekit.models.flow import RaftFlow

        tracker = PoseTracker(StandInPoses(estimator), "flow", "flow-oks", detect=detect, flow=RaftFlow(raft_small()))
    # Build the pose forward and the detector's ONNX export first: a user's second run finds both cached.
    tracker.estimator.keypoints(np.zeros((256, 192, 3), np.uint8), np.array([[0, 0, 192, 256.0]]))
    if detector.backend == "onnxruntime":
        detector([np.zeros((480, 640, 3), np.uint8)])
    timed.seconds = detector_seconds = 0.0
    run = track_video(tracker, VideoSource(clip), folder / "out.mp4", max_frames=frames, progress=False)
    count = len(run.frames)
    ms = {stage: 1000 * run.seconds.get(stage, run.seconds.get(f"tracker/{stage}", 0.0)) / count for stage in STAGES}
    total = 1000 * run.seconds["total"] / count
    return {"fps": 1000 / total, "ms": ms, "frame_ms": total, "network_share": 1000 * timed.seconds / count / total,
            "networks_share": 1000 * (timed.seconds + detector_seconds) / count / total,
            "detected": sum(f.detected for f in run.frames), "frames": count}


def forward_table(depths: list[int], repeats: int) -> None:
    from posekit.models.runtime import inference_forward

    print("\nThe pose network alone, 256x192 crops, ms per call (best of", repeats, "):")
    print(f"{'network':<12}{'batch':>6}{'fp32 (ORT)':>12}{'bf16 (torch)':>14}{'int8 (ORT)':>12}{'int8 speed-up':>15}")
    for depth in depths:
        model = PoseEstimator(None, depth=depth, device="cpu").model
        forwards = {precision: inference_forward(model, "auto", precision) for precision in ("fp32", "bf16", "int8")}
        for batch in (1, 4):
            images = torch.randn(batch, 3, 256, 192)
            best = {}
            for name, forward in forwards.items():
                forward(images)
                times = []
                for _ in range(repeats):
                    began = time.perf_counter()
                    forward(images)
                    times.append(time.perf_counter() - began)
                best[name] = 1000 * min(times)
            print(f"{f'ResNet-{depth}':<12}{batch:>6}{best['fp32']:>12.1f}{best['bf16']:>14.1f}{best['int8']:>12.1f}"
                  f"{best['fp32'] / best['int8']:>14.2f}x")


def detector_table(names: list[str], repeats: int) -> None:
    print("\nReal-time detector candidates on a 640x480 frame, ms (best of", repeats, "), random weights:")
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for name in names:
        detector = random_detector(name, "cpu")
        detector([frame])
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            detector([frame])
            times.append(time.perf_counter() - began)
        print(f"  {name:<40}{1000 * min(times):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and settings: a few minutes")
    parser.add_argument("--depths", type=int, nargs="+", default=[18, 50])
    parser.add_argument("--frames", type=int, default=120, help="frames per clip for --realtime runs")
    parser.add_argument("--default-frames", type=int, default=12, help="frames per clip for the default configuration")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames, default_frames, repeats = (40, 4, 5) if args.quick else (args.frames, args.default_frames, 20)
    depths = args.depths[:1] if args.quick else args.depths

    print(f"posekit track end to end, CPU, {torch.get_num_threads()} threads; RANDOM WEIGHTS with stand-in boxes and "
          "poses (timing only)")
    detector_table(["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn"], repeats)
    forward_table(depths, repeats)
    from posekit.defaults import DEFAULT_DETECTOR, REALTIME_DETECTOR

    detectors = {"default": random_detector(DEFAULT_DETECTOR, "cpu"), "realtime": random_detector(REALTIME_DETECTOR, "cpu")}
    with tempfile.TemporaryDirectory() as folder:
        clips = make_clips(Path(folder), frames)
        print(f"\n{'clip':<22}{'config':<22}{'fps':>7}{'frame ms':>9}" + "".join(f"{s:>10}" for s in STAGES)
              + f"{'network':>9}{'+detector':>10}{'det.':>6}")
        for name, (path, boxes) in clips.items():
            baseline = None
            configs = [(False, depths[0], "fp32")] + [(True, d, p) for d in depths for p in ("fp32", "int8")]
            for realtime, depth, precision in configs:
                result = run_config(path, boxes, realtime, depth, precision, frames if realtime else default_frames,
                                    detectors, Path(folder))
                baseline = baseline or result["fps"]
                label = f"{'--realtime' if realtime else 'defaults'} R{depth} {precision}"
                print(f"{name:<22}{label:<22}{result['fps']:>7.2f}{result['frame_ms']:>9.1f}"
                      + "".join(f"{result['ms'][s]:>10.1f}" for s in STAGES)
                      + f"{100 * result['network_share']:>8.0f}%{100 * result['networks_share']:>9.0f}%"
                      + f"{result['detected']:>3}/{result['frames']}"
                      + (f"  {result['fps'] / baseline:.1f}x the defaults" if realtime else ""), flush=True)
    print("GPU (fp16): not measured (no GPU lent to this run)")


if __name__ == "__main__":
    main()
