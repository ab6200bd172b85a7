"""`posekit track`: people through a video with stable ids."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from posekit.cli._common import (
    add_device_option,
    add_runtime_options,
    add_weights_option,
    warnings_as_lines,
)
from posekit.defaults import DEFAULT, DEFAULT_DETECTOR, DEFAULT_WEIGHTS, REALTIME_DETECTOR, REALTIME_DETECTOR_EVERY
from posekit.errors import PosekitError



def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("track", help="people through a video with stable ids: annotated mp4 + PoseTrack JSON, fps")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="a video file, a folder of frames, a webcam index (0) or a stream URL; several videos "
                             "are tracked one after the other, or shared out over the processes of torchrun")
    parser.add_argument("--out", type=Path, help="write the annotated video here (.mp4, H.264); with several "
                                                 "inputs a folder, one INPUT_NAME.mp4 each")
    parser.add_argument("--json", type=Path, help="write the tracks here, PoseTrack 2018 format (track_id per person); "
                                                  "with several inputs a folder, one INPUT_NAME.json each")
    parser.add_argument("--realtime", action="store_true",
                        help="the real-time preset: light detector only when needed, pose propagation, OKS matching, "
                             "no flip test, int8 network on the CPU (docs/realtime.md); other options override it")
    add_weights_option(parser, "; registered weights that are neither cached nor downloadable run an untrained "
                            "network, said on screen and on the frames")
    parser.add_argument("--detector",
                        help="person detector, or 'none' to take each whole frame as one person (default: "
                             f"{DEFAULT_DETECTOR}; with --realtime {REALTIME_DETECTOR})")
    parser.add_argument("--boxes", type=Path,
                        help="person boxes instead of a detector: COCO detection results with image_id = frame index")
    parser.add_argument("--detector-every", type=int, metavar="K",
                        help="run the detector every K frames (and after a track is lost), propagate boxes in between "
                             f"(default: 1; with --realtime {REALTIME_DETECTOR_EVERY})")
    parser.add_argument("--propagation", choices=("flow", "pose", "none"),
                        help="boxes from the previous poses: moved by RAFT optical flow, left in place, or none "
                             "(default: flow, the paper's, or pose when RAFT's weights cannot be had (said on screen); "
                             "with --realtime pose)")
    parser.add_argument("--similarity", choices=("flow-oks", "oks", "iou"),
                        help="how new poses are matched to tracks (default: flow-oks, the paper's, oks without flow)")
    parser.add_argument("--max-age", type=int, default=0, metavar="N",
                        help="frames a lost track may be matched again before its id is retired (default: 0, the paper)")
    parser.add_argument("--smooth", action="store_true", help="One-Euro filter on each track's joints")
    parser.add_argument("--no-flip", action="store_true", help="skip the flip test: ~2x faster pose network")
    parser.add_argument("--max-frames", type=int, metavar="N",
                        help="stop after N frames; Ctrl-C also stops and keeps what was tracked (for webcams)")
    parser.add_argument("--eval", type=Path, metavar="GT.json",
                        help="score the tracks against PoseTrack 2018 annotations of this video: MOTA and mAP")
    add_device_option(parser)
    add_runtime_options(parser)


def run(args: argparse.Namespace) -> int:
    from posekit.train.distributed import process_rank, world_size

    if (args.detector_every is not None and args.detector_every < 1) or (args.max_frames is not None and args.max_frames < 1):
        raise PosekitError("--detector-every and --max-frames take a positive number")
    several = len(args.inputs) > 1
    if several and args.eval is not None:
        raise PosekitError("--eval scores one video: give one INPUT with it")
    # torchrun: each process tracks its share of the videos (rank r: videos r, r + N, ...), independently.
    mine = args.inputs[process_rank()::world_size()]
    with warnings_as_lines("track"):
        from posekit.io.video import VideoSource

        videos = [VideoSource(name) for name in mine]  # a bad input is reported before any model loads
        tracker, estimator = _tracker(args)
        for name, video in zip(mine, videos):
            out = args.out / f"{_stem(name)}.mp4" if several and args.out is not None else args.out
            tracks = args.json / f"{_stem(name)}.json" if several and args.json is not None else args.json
            _track_one(args, name, video, tracker, estimator, out, tracks)
    return 0


def _tracker(args: argparse.Namespace):
    """The PoseTracker (and its estimator) the options describe, with the offline fallbacks said on screen."""
    from posekit.core.smoothing import OneEuro
    from posekit.errors import DownloadError
    from posekit.models.detect import PersonDetector
    from posekit.models.weights import WEIGHTS
    from posekit.realtime import realtime_estimator, realtime_tracker
    from posekit.track import PoseTracker

    detect = _frame_boxes(args.boxes) if args.boxes is not None else None
    flip_test = not args.no_flip and not args.realtime
    precision = args.precision if not args.realtime or args.precision != "auto" else None

    def estimator_for(weights, depth: int = 50):
        if args.realtime and precision is None:
            return realtime_estimator(weights, detector=None, device=args.device, depth=depth)
        from posekit.estimator import PoseEstimator

        return PoseEstimator(weights, depth=depth, device=args.device, flip_test=flip_test, backend=args.backend,
                             precision=precision or args.precision, channel_order=args.channel_order)

    try:
        estimator = estimator_for(args.weights)
    except DownloadError as error:
        if args.weights not in (*WEIGHTS, DEFAULT):
            raise
        print(f"posekit track: note: {error.for_cli()}", file=sys.stderr)
        estimator = estimator_for(None, WEIGHTS[DEFAULT_WEIGHTS if args.weights == DEFAULT else args.weights].depth)
    detector = args.detector or (REALTIME_DETECTOR if args.realtime else DEFAULT_DETECTOR)
    if detect is None and detector != "none":
        # Separately from the pose weights: missing detector weights are an error, not a fallback.
        estimator.detector = PersonDetector(detector, device=estimator.device)
    options = dict(max_age=args.max_age, detect=detect, smoothing=OneEuro() if args.smooth else None)
    if args.realtime:
        options |= {"propagation": args.propagation or "pose", "similarity": args.similarity or "oks"}
        if args.propagation == "none":
            options["propagation"] = None
        tracker = realtime_tracker(estimator, args.detector_every or REALTIME_DETECTOR_EVERY, **options)
        print(f"posekit track: {tracker.preset}", file=sys.stderr)
        return tracker, estimator
    propagation = {None: "flow", "none": None}.get(args.propagation, args.propagation)
    similarity = args.similarity or "flow-oks"
    named_flow = args.propagation == "flow" or args.similarity == "flow-oks"  # then a missing download is an error
    if (propagation == "flow" or similarity == "flow-oks") and not named_flow:
        propagation, similarity, options["flow"] = _default_flow(estimator.device, propagation, similarity)
    return PoseTracker(estimator, propagation, similarity, args.detector_every or 1, **options), estimator


def _default_flow(device, propagation: str | None, similarity: str):
    """RAFT for the default flow, or, when its weights cannot be had, pose propagation and OKS matching
    instead, with one line saying so: (propagation, similarity, flow or None)."""
    from posekit.errors import DownloadError
    from posekit.models.flow import RaftFlow

    try:
        return propagation, similarity, RaftFlow(device=device)
    except DownloadError as error:
        print(f"posekit track: note: {error.for_cli()} -> tracking with pose propagation and OKS matching "
              "instead, which need no flow", file=sys.stderr)
        return "pose" if propagation == "flow" else propagation, "oks" if similarity == "flow-oks" else similarity, None


def _track_one(args, name: str, video, tracker, estimator, out: Path | None, tracks: Path | None) -> None:
    from posekit.demo import UNTRAINED_TITLE
    from posekit.io.files import write_json
    from posekit.track import to_posetrack, track_video

    caption = None if estimator.pretrained else UNTRAINED_TITLE
    run = track_video(tracker, video, out, caption, 0.3 if estimator.pretrained else float("-inf"), args.max_frames)
    if not run.frames:
        raise PosekitError(f"{name}: no frames could be read")
    if tracks is not None:
        write_json(tracks, to_posetrack(run.frames, run.file_names))
    count = len({int(i) for f in run.frames for i in f.track_ids})
    detected = sum(f.detected for f in run.frames)
    dropped = f", {run.dropped} stale frames dropped" if run.dropped else ""
    print(
        f"posekit track: {'stopped by Ctrl-C after ' if run.interrupted else ''}{len(run.frames)} frames, {count} tracks, "
        f"{run.tracking_fps:.2f} fps tracking, {run.total_fps:.2f} fps end to end{dropped} (detector on {detected} "
        f"frames; {estimator.weights_source}; device {estimator.device})"
    )
    if not estimator.pretrained:
        print(f"WARNING: {UNTRAINED_TITLE}; real weights: posekit weights download {args.weights}")
    for label, path in (("video", out), ("tracks", tracks)):
        if path is not None:
            print(f"{label}: {path}")
    if args.eval is not None:
        from posekit.eval.posetrack import evaluate_tracking, load_posetrack

        print(evaluate_tracking(load_posetrack(args.eval), run.frames).table())


def _stem(name: str) -> str:
    """The output name of an input: its file or folder name without extension."""
    return Path(name.rstrip("/")).stem or "video"


def _frame_boxes(path: Path) -> Callable:
    """``(rgb, frame index) -> (boxes, scores)`` from a COCO detection-results file keyed by frame index."""
    import numpy as np

    from posekit.models.detect import load_detections

    boxes = load_detections(path)
    none = (np.zeros((0, 4)), np.zeros(0))
    return lambda rgb, index: boxes.get(index, none)

