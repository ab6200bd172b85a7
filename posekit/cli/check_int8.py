"""`posekit check-int8`: whether int8 keeps a network's accuracy, and whether this CPU runs it fast."""
from __future__ import annotations

import argparse
from pathlib import Path

from posekit.cli._common import add_weights_option, warnings_as_lines
from posekit.errors import PosekitError


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("check-int8", help="int8 against fp32 on annotated people (PCK@0.1, joint distance), "
                                               "and whether this CPU has the instructions that make int8 fast")
    add_weights_option(parser)
    parser.add_argument("--ann", type=Path, metavar="FILE",
                        help="COCO person-keypoint annotations of held-out people (default: the bundled COCO sample)")
    parser.add_argument("--images", type=Path, metavar="DIR", help="the folder of their images (with --ann)")
    parser.add_argument("--calibration-images", type=Path, nargs="+", metavar="IMAGE",
                        help="pictures of one person each to calibrate int8 on, as PoseEstimator(calibration_images=) "
                             "takes them (default: the people of the bundled COCO images)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                        help="run both networks with the flip test (default: off, as --realtime runs)")


def run(args: argparse.Namespace) -> int:
    from posekit.data import COCO_SAMPLE_ANNOTATIONS, COCO_SAMPLE_DIR
    from posekit.estimator import PoseEstimator
    from posekit.realtime import check_int8, int8_instructions, int8_outlook

    if (args.ann is None) != (args.images is None):
        raise PosekitError("expected --ann FILE and --images DIR together (or neither, for the bundled COCO sample)")
    print(f"int8 on this CPU: {int8_outlook(int8_instructions())}")
    with warnings_as_lines("check-int8"):
        estimator = PoseEstimator(args.weights, detector=None, device="cpu")
        if not estimator.pretrained:
            print("note: the network is untrained: agreement of two untrained networks says little")
        check = check_int8(estimator.model, args.ann or COCO_SAMPLE_ANNOTATIONS, args.images or COCO_SAMPLE_DIR,
                           args.calibration_images, args.flip)
    print(f"{estimator.weights_source}: {check.table()}")
    return 0 if check.passed else 1
