"""`posekit track`: people through a video with stable ids."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from posekit.cli._common import (
    add_device_option,
    add_flip_option,
    add_runtime_options,
    add_weights_option,
    build_estimator,
    warn_if_untrained,
    warnings_as_lines,
)
from posekit.defaults import DEFAULT_DETECTOR, REALTIME_DETECTOR, REALTIME_DETECTOR_EVERY
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
                             "no flip test, int8 network on the CPU, x264 veryfast for --out (docs/realtime.md); the options above and below "
                             "override it, "
                             "--flip excepted")
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
    add_flip_option(parser, "--no-flip: ~2x faster pose network; always off with --realtime")
    parser.add_argument("--max-frames", type=int, metavar="N",
                        help="stop after N frames; Ctrl-C also stops and keeps what was tracked (for webcams)")
    parser.add_argument("--posetrack-format", choices=("posekit", "official"), default="posekit",
                        help="--json layout: posekit's (COCO joint names, every joint) or official, read unchanged by "
                             "PoseTrack's evaluation (its joint names, frames named SEQUENCE/frame, joints under 0.4 "
                             "absent); official needs a PoseTrack sequence name as INPUT (000342_mpii_test)")
    parser.add_argument("--eval", type=Path, metavar="GT.json",
                        help="score the tracks as --json writes them (joints from 0.4) against PoseTrack annotations "
                             "of this video: MOTA, MOTP, precision, recall, mAP (as `posekit track-eval`)")
    add_device_option(parser)
    add_runtime_options(parser)


def run(args: argparse.Namespace) -> int:
    from posekit.train.distributed import process_rank, world_size

    if len(args.inputs) > 1 and args.eval is not None:
        raise PosekitError("--eval scores one video: give one INPUT with it")
    # torchrun: each process tracks its share of the videos (rank r: videos r, r + N, ...), independently.
    jobs = _outputs(args)[process_rank()::world_size()]
    _check_arguments(args, jobs)
    sequences = {}
    if args.posetrack_format == "official":
        from posekit.io.posetrack import sequence_folder

        # Before any work: the official file needs the sequence's name.
        sequences = {name: sequence_folder(name) for name, _, _ in jobs}
    with warnings_as_lines("track"):
        from posekit.io.video import VideoSource

        videos = [VideoSource(name) for name, _, _ in jobs]  # a bad input is reported before any model loads
        detect = _FrameBoxes(args.boxes) if args.boxes is not None else None
        tracker, estimator = _tracker(args, detect)
    for (name, out, tracks), video in zip(jobs, videos):
        _track_one(args, name, video, tracker, estimator, detect, out, tracks, sequences.get(name))
    return 0


def _outputs(args: argparse.Namespace) -> list[tuple[str, Path | None, Path | None]]:
    """(input, its --out video, its --json file) per input: with several inputs, one file each in the folders."""
    if len(args.inputs) == 1:
        return [(args.inputs[0], args.out, args.json)]
    return [(name, args.out and args.out / f"{_stem(name)}.mp4", args.json and args.json / f"{_stem(name)}.json")
            for name in args.inputs]


def _stem(name: str) -> str:
    """The output name of an input: its file or folder name without extension."""
    return Path(name.rstrip("/")).stem or "video"


def _check_arguments(args: argparse.Namespace, jobs: list) -> None:
    """Numbers in range and outputs that destroy nothing, before any model loads or frame is read."""
    from posekit.io.files import check_outputs

    for flag, value, minimum in (("--detector-every", args.detector_every, 1), ("--max-age", args.max_age, 0),
                                 ("--max-frames", args.max_frames, 1)):
        if value is not None and value < minimum:
            raise PosekitError(f"{flag} {value}: expected a whole number >= {minimum}")
    several = len(jobs) > 1
    outputs, inputs = {}, {"--boxes": args.boxes, "--eval's ground truth": args.eval}
    for name, out, tracks in jobs:
        source, suffix = Path(name), f" for {name}" if several else ""
        outputs |= {f"--out{suffix}": (out, "mp4"), f"--json{suffix}": (tracks, "json")}
        inputs[f"the input video {name}" if several else "the input video"] = source if source.is_file() else None
    check_outputs(outputs, inputs)


def _tracker(args: argparse.Namespace, detect: _FrameBoxes | None):
    """The PoseTracker (and its estimator) the options describe, with the offline fallbacks said on screen."""
    from posekit.core.smoothing import OneEuro
    from posekit.models.detect import PersonDetector
    from posekit.realtime import realtime_precision, realtime_tracker
    from posekit.track import PoseTracker

    flip_test = args.flip and not args.realtime  # the preset's one fixed choice: the flip doubles the network's work
    precision = realtime_precision(args.device) if args.realtime and args.precision == "auto" else args.precision
    estimator = build_estimator(args, flip_test=flip_test, precision=precision, allow_untrained=True)
    if estimator.untrained_because is not None:
        print(f"posekit track: note: {estimator.untrained_because.for_cli()}", file=sys.stderr)
    detector = args.detector or (REALTIME_DETECTOR if args.realtime else DEFAULT_DETECTOR)
    if detect is None and detector != "none":
        # Separately from the pose weights: missing detector weights are an error, not a fallback.
        estimator.detector = PersonDetector(detector, device=estimator.device)
    options = dict(max_age=args.max_age, detect=detect, smoothing=OneEuro() if args.smooth else None)
    if args.realtime:
        propagation = {None: "pose", "none": None}.get(args.propagation, args.propagation)
        options |= {"propagation": propagation, "similarity": args.similarity or "oks"}
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


def _track_one(args, name: str, video, tracker, estimator, detect: _FrameBoxes | None, out: Path | None,
               tracks: Path | None, sequence: str | None) -> None:
    from posekit.defaults import UNTRAINED_TITLE
    from posekit.io.files import write_json
    from posekit.track import JOINT_THRESHOLD, to_posetrack, track_video

    caption = None if estimator.pretrained else UNTRAINED_TITLE
    with warnings_as_lines("track"):
        run = track_video(tracker, video, out, caption, 0.3 if estimator.pretrained else float("-inf"), args.max_frames)
    if not run.frames:
        raise PosekitError(f"{name}: no frames could be read")
    if detect is not None:
        _warn_unmatched_boxes(args.boxes, detect.frames, run.frames)
    document = to_posetrack(run.frames, run.file_names)
    if sequence is not None:
        from posekit.io.posetrack import official_posetrack

        document = official_posetrack(document, sequence, JOINT_THRESHOLD)
    if tracks is not None:
        write_json(tracks, document)
    count = len({int(i) for f in run.frames for i in f.track_ids})
    detected = sum(f.detected for f in run.frames)
    dropped = f", {run.dropped} stale frames dropped" if run.dropped else ""
    print(
        f"posekit track: {'stopped by Ctrl-C after ' if run.interrupted else ''}{len(run.frames)} frames, {count} tracks, "
        f"{run.tracking_fps:.2f} fps tracking, {run.total_fps:.2f} fps end to end{dropped} (detector on {detected} "
        f"frames; {estimator.weights_source}; device {estimator.device})"
    )
    warn_if_untrained(estimator, args.weights)
    for label, path in (("video", out), ("tracks", tracks)):
        if path is not None:
            print(f"{label}: {path}")
    if args.eval is not None:
        from posekit.eval.posetrack import evaluate_files

        with warnings_as_lines("track"):  # the document --json writes, as `posekit track-eval` reads the file
            print(evaluate_files([(args.eval, document)], JOINT_THRESHOLD).table())


class _FrameBoxes:
    """``(rgb, frame index) -> (boxes, scores)`` from a COCO detection-results file keyed by frame index."""

    def __init__(self, path: Path) -> None:
        import numpy as np

        from posekit.models.detect import load_detections

        self.frames = load_detections(path)
        self._none = (np.zeros((0, 4)), np.zeros(0))

    def __call__(self, rgb, index: int):
        return self.frames.get(index, self._none)


def _warn_unmatched_boxes(path: Path, boxes: dict, frames: list) -> None:
    """Say so when no image id of a --boxes file is a tracked frame's index: every frame had no boxes."""
    indices = {frame.index for frame in frames}
    if boxes and not indices & boxes.keys():
        ids = sorted(boxes)
        print(f"posekit track: warning: --boxes {path}: none of its {len(ids)} image ids ({ids[0]} ... {ids[-1]}) "
              f"is a frame index of this video (0 ... {max(indices)}), so no frame had boxes; expected "
              "image_id = frame index from 0", file=sys.stderr)
