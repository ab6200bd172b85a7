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
from posekit.defaults import DEFAULT_DETECTOR
from posekit.errors import PosekitError


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("track", help="people through a video with stable ids: annotated mp4 + PoseTrack JSON, fps")
    parser.add_argument("input", metavar="INPUT", help="a video file, a folder of frames, a webcam index (0) or a stream URL")
    parser.add_argument("--out", type=Path, help="write the annotated video here (.mp4, H.264)")
    parser.add_argument("--json", type=Path, help="write the tracks here, PoseTrack 2018 format (track_id per person)")
    add_weights_option(parser, "; registered weights that are neither cached nor downloadable run an untrained "
                            "network, said on screen and on the frames")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR,
                        help="person detector, or 'none' to take each whole frame as one person (default: %(default)s)")
    parser.add_argument("--boxes", type=Path,
                        help="person boxes instead of a detector: COCO detection results with image_id = frame index")
    parser.add_argument("--detector-every", type=int, default=1, metavar="K",
                        help="run the detector every K frames (and after a track is lost), propagate boxes in between")
    parser.add_argument("--propagation", choices=("flow", "pose", "none"), default="flow",
                        help="boxes from the previous poses: moved by RAFT optical flow, left in place, or none "
                             "(default: %(default)s, the paper's)")
    parser.add_argument("--similarity", choices=("flow-oks", "oks", "iou"), default="flow-oks",
                        help="how new poses are matched to tracks (default: %(default)s, the paper's)")
    parser.add_argument("--max-age", type=int, default=0, metavar="N",
                        help="frames a lost track may be matched again before its id is retired (default: 0, the paper)")
    parser.add_argument("--smooth", action="store_true", help="One-Euro filter on each track's joints")
    add_flip_option(parser, "--no-flip: ~2x faster pose network")
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
    from posekit.core.smoothing import OneEuro
    from posekit.defaults import UNTRAINED_TITLE
    from posekit.io.files import write_json
    from posekit.io.video import VideoSource
    from posekit.models.detect import PersonDetector
    from posekit.track import JOINT_THRESHOLD, PoseTracker, to_posetrack, track_video

    _check_arguments(args)
    propagation = None if args.propagation == "none" else args.propagation
    if args.posetrack_format == "official":
        from posekit.io.posetrack import sequence_folder

        sequence = sequence_folder(args.input)  # before any work: the official file needs the sequence's name
    with warnings_as_lines("track"):
        video = VideoSource(args.input)  # a bad input is reported before any model loads
        detect = _FrameBoxes(args.boxes) if args.boxes is not None else None
        estimator = build_estimator(args, flip_test=args.flip, allow_untrained=True)
        if estimator.untrained_because is not None:
            print(f"posekit track: note: {estimator.untrained_because.for_cli()}", file=sys.stderr)
        if detect is None and args.detector != "none":
            # Separately from the pose weights: missing detector weights are an error, not a fallback.
            estimator.detector = PersonDetector(args.detector, device=estimator.device)
        tracker = PoseTracker(estimator, propagation, args.similarity, args.detector_every, args.max_age, detect=detect,
                              smoothing=OneEuro() if args.smooth else None)
        caption = None if estimator.pretrained else UNTRAINED_TITLE
        run = track_video(tracker, video, args.out, caption, 0.3 if estimator.pretrained else float("-inf"),
                          args.max_frames)
    if not run.frames:
        raise PosekitError(f"{args.input}: no frames could be read")
    if detect is not None:
        _warn_unmatched_boxes(args.boxes, detect.frames, run.frames)
    document = to_posetrack(run.frames, run.file_names)
    if args.posetrack_format == "official":
        from posekit.io.posetrack import official_posetrack

        document = official_posetrack(document, sequence, JOINT_THRESHOLD)
    if args.json is not None:
        write_json(args.json, document)
    tracks = len({int(i) for f in run.frames for i in f.track_ids})
    detected = sum(f.detected for f in run.frames)
    print(
        f"posekit track: {'stopped by Ctrl-C after ' if run.interrupted else ''}{len(run.frames)} frames, {tracks} tracks, {run.tracking_fps:.2f} fps tracking, "
        f"{run.total_fps:.2f} fps end to end (detector on {detected} frames; {estimator.weights_source}; "
        f"device {estimator.device})"
    )
    warn_if_untrained(estimator, args.weights)
    for label, path in (("video", args.out), ("tracks", args.json)):
        if path is not None:
            print(f"{label}: {path}")
    if args.eval is not None:
        from posekit.eval.posetrack import evaluate_files

        with warnings_as_lines("track"):  # the document --json writes, as `posekit track-eval` reads the file
            print(evaluate_files([(args.eval, document)], JOINT_THRESHOLD).table())
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """Numbers in range and outputs that destroy nothing, before any model loads or frame is read."""
    from posekit.io.files import check_outputs

    for flag, value, minimum in (("--detector-every", args.detector_every, 1), ("--max-age", args.max_age, 0),
                                 ("--max-frames", args.max_frames, 1)):
        if value is not None and value < minimum:
            raise PosekitError(f"{flag} {value}: expected a whole number >= {minimum}")
    source = Path(args.input)
    check_outputs({"--out": (args.out, "mp4"), "--json": (args.json, "json")},
                  {"the input video": source if source.is_file() else None, "--boxes": args.boxes,
                   "--eval's ground truth": args.eval})


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

