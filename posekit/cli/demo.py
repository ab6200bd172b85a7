"""`posekit demo`: the bundled COCO images, detected, estimated and drawn."""
from __future__ import annotations

import argparse
from pathlib import Path

from posekit.cli._common import add_device_option, add_runtime_options, add_weights_option, warnings_as_lines
from posekit.defaults import DEMO_DETECTOR


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="detect, estimate and draw the bundled COCO images; timed; works offline")
    parser.add_argument("--out", type=Path, default=Path("posekit_output"),
                        help="folder for demo.png (default: %(default)s)")
    add_weights_option(parser, "; if none can be had, an untrained network runs and says so")
    parser.add_argument("--detector", default=DEMO_DETECTOR,
                        help="person detector, or 'none' for the annotated boxes, which are also used when its "
                             "weights are unavailable (default: %(default)s, the fast one)")
    add_device_option(parser)
    add_runtime_options(parser)


def run(args: argparse.Namespace) -> int:
    from posekit.demo import run_demo

    detector = None if args.detector == "none" else args.detector
    with warnings_as_lines("demo"):
        result = run_demo(args.out, args.weights, detector, args.device, backend=args.backend,
                          precision=args.precision, channel_order=args.channel_order)
        print(result.summary())
    return 0

