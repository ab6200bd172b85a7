"""`posekit track-eval`: PoseTrack's tracking metrics of tracks files against ground truth, videos pooled."""
from __future__ import annotations

import argparse
from pathlib import Path

from posekit.cli._common import warnings_as_lines
from posekit.errors import PosekitError


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("track-eval", help="PoseTrack MOTA, MOTP, precision, recall and AP per joint of tracks "
                                               "files, all videos pooled as the official evaluation pools them")
    parser.add_argument("ground_truth", type=Path, metavar="GT",
                        help="a PoseTrack ground-truth JSON (2018 or 2017 layout) or a folder of them, one per video")
    parser.add_argument("predictions", type=Path, metavar="PRED",
                        help="the tracks: a JSON file (with GT a file) or a folder holding one file per ground-truth "
                             "file under the same name (what `posekit track --json` or the official format writes)")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write the metrics here, per joint and in total")
    parser.add_argument("--joint-threshold", type=float, default=0.4, metavar="S",
                        help="predicted joints scoring under S are not predictions (default: %(default)s, as "
                             "`posekit track --eval`; 0 counts every joint written, as the official evaluation)")


def run(args: argparse.Namespace) -> int:
    from posekit.eval.posetrack import evaluate_files
    from posekit.io.files import write_json

    pairs = _pairs(args.ground_truth, args.predictions)
    if args.json is not None and args.json.resolve() in {p.resolve() for pair in pairs for p in pair}:
        raise PosekitError(f"--json {args.json}: is one of the inputs; expected a new file for the metrics")
    with warnings_as_lines("track-eval"):
        metrics = evaluate_files(pairs, args.joint_threshold)
    print(f"posekit track-eval: {len(pairs)} video{'s' * (len(pairs) != 1)} pooled, joints from score "
          f"{args.joint_threshold:g}")
    print(metrics.table(per_joint=True))
    if args.json is not None:
        write_json(args.json, {**metrics.to_dict(), "videos": [p.name for p, _ in pairs], "joint_threshold": args.joint_threshold})
        print(f"metrics: {args.json}")
    return 0


def _pairs(truth: Path, predictions: Path) -> list[tuple[Path, Path]]:
    """(ground truth, tracks) per video: a folder's JSON files, each with the tracks file of the same name."""
    if truth.is_dir():
        files = sorted(truth.glob("*.json"))
        if not files:
            raise PosekitError(f"{truth}: no .json files; expected PoseTrack ground truth, one file per video")
    elif truth.is_file():
        files = [truth]
    else:
        raise PosekitError(f"{truth}: no such file or folder; expected PoseTrack ground truth (a JSON file or a folder of them)")
    if predictions.is_file():
        if len(files) > 1:
            raise PosekitError(f"{predictions}: is a file, but {truth} holds {len(files)} videos; expected a folder "
                               "with one tracks file per ground-truth file, under the same name")
        return [(files[0], predictions)]
    if not predictions.is_dir():
        raise PosekitError(f"{predictions}: no such file or folder; expected the tracks (a JSON file or a folder of them)")
    missing = [f.name for f in files if not (predictions / f.name).is_file()]
    if missing:
        raise PosekitError(f"{predictions}: no tracks for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; "
                           "expected a tracks file under the name of each ground-truth file")
    return [(f, predictions / f.name) for f in files]
