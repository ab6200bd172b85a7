"""`posekit predict`: image files, folders or globs -> drawings and COCO JSON (posekit.predict)."""
from __future__ import annotations

import argparse
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


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="keypoints for image files, folders or globs: annotated images + COCO JSON")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (their images) or glob patterns")
    parser.add_argument("--out", type=Path, default=Path("posekit_output"),
                        help="folder for the annotated images NAME_pose.jpg (default: %(default)s)")
    parser.add_argument("--json", type=Path,
                        help="COCO keypoint results file; image_id from COCO-style numeric file names, else from "
                             "--boxes' image list, else the input's index (default: OUT/results.json)")
    parser.add_argument("--boxes", type=Path,
                        help="person boxes instead of a detector: COCO detection results or a COCO annotation file")
    add_weights_option(parser)
    parser.add_argument("--detector", default=DEFAULT_DETECTOR,
                        help="person detector (fasterrcnn_mobilenet_v3_large_fpn is ~8x faster on CPU), or 'none' "
                             "to take each whole image as one person (default: %(default)s)")
    add_device_option(parser)
    add_runtime_options(parser)
    add_flip_option(parser, "--no-flip: ~2x faster, slightly less accurate")


def run(args: argparse.Namespace) -> int:
    import time

    from posekit.predict import draw_threshold, plan_predict, run_predict

    start = time.perf_counter()  # the summary counts reading the inputs and loading the networks too
    with warnings_as_lines("predict"):
        plan = plan_predict(args.inputs, args.out, args.json, args.boxes, args.weights)
        detector = None if plan.boxes is not None or args.detector == "none" else args.detector
        estimator = build_estimator(args, detector=detector, flip_test=args.flip)
        ready = time.perf_counter()
        result = run_predict(plan, estimator)
    end = time.perf_counter()
    skipped = f", {result.skipped} skipped (see warnings)" if result.skipped else ""
    print(
        f"posekit predict: {result.images} images, {result.people} people in {end - start:.1f} s ({ready - start:.1f} s "
        f"reading the inputs and loading the networks, then {(end - ready) / result.images:.2f} s per image; "
        f"{estimator.weights_source}, device {estimator.device}){skipped}; annotated images in {args.out}, results in "
        f"{result.json_path}; the drawings show the people whose box scores >= {draw_threshold(estimator)}"
    )
    warn_if_untrained(estimator, args.weights)
    return 0
