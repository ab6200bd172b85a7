"""`posekit train`: training and fine-tuning with the paper's recipe."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from posekit.cli._common import add_device_option, at_least, height_by_width
from posekit.errors import PosekitError


def learning_rate(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number > 0, such as 1e-3")
    return value


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train or fine-tune with the paper's recipe (torchrun for many GPUs)")
    parser.add_argument("--data", required=True,
                        help="'coco' (COCO train2017 under --images ROOT, validated on val2017) or a COCO keypoint "
                             "annotation file of any keypoint set")
    parser.add_argument("--images", type=Path, required=True, help="image folder of --data (for coco: the COCO root)")
    parser.add_argument("--val", type=Path, metavar="ANN", help="validation annotation file (PCK; COCO AP for COCO-17)")
    parser.add_argument("--val-images", type=Path, metavar="DIR", help="images of --val (default: --images)")
    parser.add_argument("--depth", type=int, choices=(18, 34, 50, 101, 152),
                        help="ResNet depth (default: 50; a resumed run keeps its own)")
    parser.add_argument("--input", type=height_by_width, metavar="HxW",
                        help="crop height x width, multiples of 32 (default: 256x192; a resumed run keeps its own)")
    parser.add_argument("--schedule", choices=("paper", "finetune"), default="paper",
                        help="paper: 140 epochs, x0.1 at 90 and 120; finetune: 14 epochs, x0.1 at 9 and 12")
    parser.add_argument("--epochs", type=at_least(1), help="number of epochs (default: the schedule's)")
    parser.add_argument("--batch-size", type=at_least(1), help="people per process and step (default: 32)")
    parser.add_argument("--lr", type=learning_rate, help="Adam learning rate (default: 1e-3)")
    parser.add_argument("--init", default="imagenet",
                        help="imagenet (torchvision's ResNet), none, or pose weights: a registered name or a "
                             "checkpoint file; a head of another joint count is re-initialised (default: imagenet)")
    parser.add_argument("--resume", type=Path, metavar="CKPT", help="continue a run exactly from its last.pth")
    parser.add_argument("--out", type=Path, default=Path("posekit_train"),
                        help="folder for last.pth, best.pth, log.csv, one run at a time; a folder holding a run is "
                             "refused unless --resume continues it or --overwrite (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    parser.add_argument("--workers", type=at_least(0), default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers per process that decode images (default: %(default)s)")
    parser.add_argument("--val-every", type=at_least(1), default=10, metavar="N",
                        help="validate every N epochs (default: 10)")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed of initialisation, order and augmentation")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs (CUDA only)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--half-body", action="store_true",
                        help="HRNet's half-body crops with probability 0.3 (not in the paper's recipe)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_device_option(parser)


def run(args: argparse.Namespace) -> int:
    from posekit.io import cocodata
    from posekit.train.trainer import TrainConfig, train

    val_ann, val_images = args.val, args.val_images
    if args.data == "coco":
        paths = cocodata.CocoPaths(args.images)
        ann_file, image_dir = args.images / "annotations" / "person_keypoints_train2017.json", args.images / "train2017"
        val_ann, val_images = val_ann or paths.ann_file, val_images or paths.image_dir
        missing = [str(p) for p in (ann_file, image_dir, val_ann, val_images) if not Path(p).exists()]
        if missing:
            raise PosekitError(f"{args.images}: missing {', '.join(missing)}; put COCO 2017 (cocodataset.org) there "
                               "in that layout")
    else:
        ann_file, image_dir = Path(args.data), args.images
    config = TrainConfig(
        ann_file=ann_file, image_dir=image_dir, out=args.out, val_ann_file=val_ann, val_image_dir=val_images,
        depth=args.depth, input_size=args.input, schedule=args.schedule, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, init=args.init, resume=args.resume, overwrite=args.overwrite,
        workers=args.workers, sync_bn=args.sync_bn, amp=args.amp, half_body=args.half_body, seed=args.seed,
        val_every=args.val_every, device=args.device, progress=args.progress,
    )
    history = train(config)
    if history and int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {history[-1]['epoch']} epochs, loss {history[-1]['loss']:.4g}: {args.out / 'last.pth'}")
    return 0

