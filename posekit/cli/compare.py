"""`posekit compare`: one person's movement against another's, aligned in time and scored (posekit.motion)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from posekit.cli._common import (
    add_device_option,
    add_runtime_options,
    add_weights_option,
    at_least,
    build_estimator,
    warnings_as_lines,
)
from posekit.defaults import DEFAULT, DEFAULT_DETECTOR, DEFAULT_WEIGHTS
from posekit.errors import PosekitError

WORST_SHOWN = 3  # joints and angles listed on screen


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="a movement against a reference: time-aligned (DTW), scored 0-100 per "
                                            "joint, angle and phase; report JSON, angle plot, side-by-side mp4")
    parser.add_argument("reference", metavar="REFERENCE",
                        help="the reference take: a tracks JSON (.json, as `posekit track --json` writes) or a video "
                             "or folder of frames, tracked on the fly")
    parser.add_argument("attempt", metavar="ATTEMPT", help="the take to score, the same kinds as REFERENCE")
    parser.add_argument("--track-id", type=int, nargs="+", metavar="ID",
                        help="the person to compare: one id for both inputs or one each (default: each input's "
                             "longest track, said on screen)")
    parser.add_argument("--mirror", action="store_true",
                        help="mirror the attempt (left and right swapped): a left-handed attempt against a right-handed reference")
    parser.add_argument("--json", type=Path, help="write the report here: alignment, score, per_joint, per_angle, "
                                                  "per_phase, worst frames and the angles of both per frame")
    parser.add_argument("--out", type=Path, help="write the two takes side by side here (.mp4), one frame per step of "
                                                 "the alignment, the reference skeleton also over the attempt")
    parser.add_argument("--plot", type=Path, help="write the angle curves of both after alignment here (.png, .pdf, .svg)")
    parser.add_argument("--phases", type=at_least(1), default=4, metavar="N",
                        help="score N equal segments of the reference apart (default: %(default)s)")
    parser.add_argument("--band", type=at_least(1), metavar="FRAMES",
                        help="Sakoe-Chiba band: match no frame further than this from the diagonal (default: none)")
    parser.add_argument("--threshold", type=float, default=0.3,
                        help="joints scoring under it are left out (default: %(default)s; an untrained network keeps all)")
    video = parser.add_argument_group("tracking videos (as `posekit track`, without optical flow: one person matters)")
    add_weights_option(video, "; registered weights that are neither cached nor downloadable run an untrained "
                              "network, said on screen and in the side-by-side video")
    video.add_argument("--detector", default=DEFAULT_DETECTOR,
                       help="person detector, or 'none' to take each whole frame as one person (default: %(default)s)")
    video.add_argument("--no-flip", action="store_true", help="skip the flip test: ~2x faster pose network")
    video.add_argument("--max-frames", type=at_least(1), metavar="N", help="track at most N frames of each video")
    add_device_option(video)
    add_runtime_options(video)


def run(args: argparse.Namespace) -> int:
    from posekit.compare import plot_angles, write_side_by_side
    from posekit.io.files import check_writable, file_key, write_json
    from posekit.motion import compare_motion, normalize_poses, present_frames

    inputs = (args.reference, args.attempt)
    if args.track_id is not None and len(args.track_id) > 2:
        raise PosekitError(f"--track-id {' '.join(map(str, args.track_id))}: expected one id for both inputs or one each")
    ids = (None, None) if args.track_id is None else (args.track_id * 2)[:2]
    outputs = [path for path in (args.json, args.out, args.plot) if path is not None]
    for path in outputs:  # refused before any tracking, not after it
        check_writable(path)
        if file_key(path) is not None and file_key(path) in {file_key(name) for name in inputs}:
            raise PosekitError(f"{path}: is one of the inputs; expected a new file name for the output")
    with warnings_as_lines("compare"):
        takes, caption, threshold = _takes(args, inputs)
        people = []
        for take, track_id, role in zip(takes, ids, ("reference", "attempt")):
            chosen, poses = take.person(track_id)
            if track_id is None and len(take.tracks) > 1:
                print(f"posekit compare: {take.name}: track {chosen}, the longest of {len(take.tracks)} "
                      f"(pass --track-id to choose)")
            if not present_frames(normalize_poses(poses, take.keypoint_set, threshold)).any():
                raise PosekitError(f"{take.name}: track {chosen} has no frame where both hips and both shoulders score "
                                   f">= {threshold}; expected the {role} person seen at least once")
            people.append(poses)
        if takes[0].keypoint_set.names != takes[1].keypoint_set.names:
            raise PosekitError(f"{args.reference} and {args.attempt} name different joints; expected the same keypoints")
        result = compare_motion(people[0], people[1], takes[0].keypoint_set, args.mirror, threshold, args.band,
                                args.phases)
        if args.json is not None:
            report = result.to_dict()
            report["inputs"] = {"reference": str(args.reference), "attempt": str(args.attempt)}
            report["untrained"] = caption is not None
            write_json(args.json, report)
        if args.plot is not None:
            import matplotlib.pyplot as plt

            from posekit.viz import save_figure

            figure = plot_angles(result)
            if caption is not None:
                figure.text(0.5, 0.5, caption, ha="center", va="center", color="red", alpha=0.5, fontsize=14)
            save_figure(figure, args.plot)
            plt.close(figure)
        if args.out is not None:
            write_side_by_side(args.out, result, (takes[0], people[0]), (takes[1], people[1]), threshold, caption)
    _print_summary(result)
    if caption is not None:
        print(f"WARNING: {caption}; the score compares random joints. Real weights: posekit weights download "
              f"{DEFAULT_WEIGHTS if args.weights == DEFAULT else args.weights}")
    for label, path in (("report", args.json), ("plot", args.plot), ("video", args.out)):
        if path is not None:
            print(f"{label}: {path}")
    return 0


def _takes(args: argparse.Namespace, inputs: tuple[str, str]):
    """The two takes, the caption for untrained weights (None when trained) and the joint threshold to use."""
    from posekit.compare import read_tracks, take_from_frames

    videos = [name for name in inputs if not name.lower().endswith(".json")]
    if not videos:
        return [read_tracks(name) for name in inputs], None, args.threshold
    from posekit.demo import UNTRAINED_TITLE
    from posekit.io.video import VideoSource
    from posekit.track import PoseTracker, track_video

    sources = {name: VideoSource(name) for name in videos}  # a bad input is reported before any model loads
    estimator = _estimator(args)
    if args.detector != "none":
        from posekit.models.detect import PersonDetector

        estimator.detector = PersonDetector(args.detector, device=estimator.device)
    # Untrained joints are noise, so OKS would start a new track every frame: match their boxes instead.
    tracker = PoseTracker(estimator, propagation="pose", similarity="oks" if estimator.pretrained else "iou")
    takes = []
    for name in inputs:
        if name in sources:
            run = track_video(tracker, sources[name], max_frames=args.max_frames)
            takes.append(take_from_frames(run.frames, name, run.fps, video=name))
        else:
            takes.append(read_tracks(name))
    if estimator.pretrained:
        return takes, None, args.threshold
    # Untrained joints all score low: keep every one, so the pipeline runs end to end (and says so).
    return takes, UNTRAINED_TITLE, float("-inf")


def _estimator(args: argparse.Namespace):
    """The estimator of the options; offline, registered weights fall back to an untrained network (said)."""
    from posekit.errors import DownloadError
    from posekit.estimator import PoseEstimator
    from posekit.models.weights import WEIGHTS

    try:
        return build_estimator(args, flip_test=not args.no_flip)
    except DownloadError as error:
        if args.weights not in (*WEIGHTS, DEFAULT):
            raise
        print(f"posekit compare: note: {error.for_cli()}", file=sys.stderr)
        depth = WEIGHTS[DEFAULT_WEIGHTS if args.weights == DEFAULT else args.weights].depth
        return PoseEstimator(None, depth=depth, device=args.device, flip_test=not args.no_flip, backend=args.backend,
                             precision=args.precision)


def _print_summary(result) -> None:
    def worst(scores: dict) -> str:
        known = sorted((value, name) for name, value in scores.items() if value == value)  # NaN: never seen
        return ", ".join(f"{name} {value:.0f}" for value, name in known[:WORST_SHOWN])

    print(f"posekit compare: score {result.score:.1f}/100{' (attempt mirrored)' if result.mirror else ''}; "
          f"{len(result.alignment)} aligned steps")
    print(f"worst joints: {worst(result.per_joint)}")
    print(f"worst angles: {worst(result.per_angle)}")
    phases = "; ".join(f"frames {p['reference_frames'][0]}-{p['reference_frames'][1]}: "
                       + ("-" if p["score"] != p["score"] else f"{p['score']:.0f}") for p in result.per_phase)
    print(f"phases of the reference: {phases}")
