"""`posekit eval`: COCO keypoint AP with the paper's protocol, on COCO val2017 (--coco-root) or any annotation
file and image folder (--ann, --images)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from posekit.cli._common import (
    add_device_option,
    add_flip_option,
    add_max_batch_option,
    add_runtime_options,
    add_weights_option,
    at_least,
    build_estimator,
    warn_if_untrained,
    warnings_as_lines,
)
from posekit.defaults import DECODE_METHODS
from posekit.errors import PosekitError


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="COCO val2017 keypoint AP with the paper's protocol (pycocotools)")
    parser.add_argument("--coco-root", type=Path,
                        help="folder holding val2017/, annotations/person_keypoints_val2017.json and "
                             "person_detection_results/ (what --download creates)")
    parser.add_argument("--ann", type=Path, metavar="FILE",
                        help="a COCO person-keypoint annotation file, instead of --coco-root (with --images)")
    parser.add_argument("--images", type=Path, metavar="DIR", help="the folder of its images (with --ann)")
    add_weights_option(parser)
    parser.add_argument("--boxes", default="gt",
                        help="'gt' for the annotated boxes (default), 'detections' for the paper's person "
                             "detections (detector AP 56.4), or a COCO detection-results JSON file")
    add_flip_option(parser, "--no-flip: ~2x faster, slightly lower AP")
    parser.add_argument("--decode", choices=DECODE_METHODS, default="quarter",
                        help="heatmap decoding (default: the official quarter-pixel shift)")
    parser.add_argument("--limit", type=at_least(1), metavar="N", help="evaluate only the first N images (by id)")
    parser.add_argument("--out", type=Path, help="also write the COCO-format results JSON here")
    add_max_batch_option(parser, 32)
    parser.add_argument("--workers", type=at_least(0), default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers that read and decode images (default: %(default)s)")
    add_device_option(parser)
    add_runtime_options(parser)
    parser.add_argument("--download", action="store_true",
                        help="first download the missing COCO parts (images ~780 MB, annotations ~240 MB)")


def run(args: argparse.Namespace) -> int:
    from posekit.eval import coco
    from posekit.io import cocodata
    from posekit.train import distributed

    ann_file, image_dir, detections_file = _data_paths(args, cocodata)
    # The estimator resolves the weights (name, file or URL), how to feed them, the device and the backend.
    # Under torchrun each process takes its own GPU and a share of the images (posekit.train.distributed).
    args.device = distributed.device_for_rank(args.device)
    with warnings_as_lines("eval"):
        estimator = build_estimator(args, flip_test=args.flip, decode=args.decode, max_batch=args.max_batch)
    boxes = detections_file if args.boxes == "detections" else args.boxes
    dataset = coco.CocoPersonDataset(ann_file, image_dir, boxes=boxes, max_images=args.limit)
    if distributed.process_rank() == 0:
        print(
            f"{estimator.weights_source}: {dataset.num_people} people in {len(dataset.image_ids)} images, boxes "
            f"{args.boxes}, flip test {'on' if args.flip else 'off'}, decode {args.decode}, device {estimator.device}, "
            f"backend {estimator.backend} {estimator.precision}",
            file=sys.stderr,
        )
    result = distributed.evaluate(estimator, dataset, num_workers=args.workers)
    if result is None:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    reported = estimator.weights.reported_ap if estimator.weights is not None else None
    print(result.table(reported))
    warn_if_untrained(estimator, args.weights)
    if reported:
        print(f"reported: the {estimator.weights.name} release on all of val2017, detector boxes (AP 56.4), flip test")
    timing = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.timing.items())
    print(f"time: {timing} ({result.num_people / result.timing['total']:.1f} people/s)")
    if args.out is not None:
        print(f"results: {result.save_results(args.out)}")
    return 0



def _data_paths(args: argparse.Namespace, cocodata) -> tuple[Path, Path, Path | None]:
    """(annotation file, image folder, the paper's detections file or None) from --coco-root or --ann and
    --images, each checked before any network loads; a --boxes file is checked here too."""
    separate = args.ann is not None or args.images is not None
    if (args.coco_root is not None) == separate or (separate and (args.ann is None or args.images is None)):
        raise PosekitError("expected --coco-root DIR (the COCO layout), or --ann FILE and --images DIR, not both")
    if args.boxes not in ("gt", "detections") and not Path(args.boxes).is_file():
        raise PosekitError(f"--boxes {args.boxes}: no such file; expected 'gt', 'detections' or a COCO "
                           "detection-results JSON file")
    if separate:
        if args.boxes == "detections" or args.download:
            raise PosekitError("--boxes detections and --download take the COCO layout: use --coco-root, or give "
                               "your detections file as --boxes FILE")
        if not args.ann.is_file():
            raise PosekitError(f"--ann {args.ann}: no such file; expected a COCO person-keypoint annotation file")
        if not args.images.is_dir():
            raise PosekitError(f"--images {args.images}: no such folder; expected the folder of the annotated images")
        return args.ann, args.images, None
    paths = cocodata.CocoPaths(args.coco_root)
    needed = ["val2017", "annotations"] + (["detections"] if args.boxes == "detections" else [])
    if args.download:
        cocodata.download_coco(args.coco_root, needed)
    missing = [str(paths.path(part)) for part in paths.missing(needed)]
    if missing:
        raise PosekitError(
            f"{args.coco_root}: missing {', '.join(missing)}; run again with --download on a machine with internet "
            "(or put COCO val2017 there in that layout, or give --ann FILE --images DIR)"
        )
    return paths.ann_file, paths.image_dir, paths.detections_file
