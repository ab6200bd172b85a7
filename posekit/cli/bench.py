"""`posekit bench`: inference time per stage on mini-batches of person crops."""
from __future__ import annotations

import argparse
from pathlib import Path

from posekit.cli._common import add_device_option, add_max_batch_option, at_least, height_by_width
from posekit.defaults import BACKENDS, PRECISIONS


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="time inference per stage on mini-batches of person crops (random weights)")
    parser.add_argument("--batches", type=at_least(1), nargs="+", default=[200, 100], metavar="N",
                        help="people per mini-batch (default: 200 100, the sizes of the K80 reference row)")
    parser.add_argument("--depth", type=int, default=50, choices=(18, 34, 50, 101, 152), help="ResNet depth")
    parser.add_argument("--input", type=height_by_width, default=(192, 256), metavar="HxW",
                        help="network input, height x width, multiples of 32 (default: 256x192)")
    add_device_option(parser)
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="network runtime; auto: onnxruntime for fp32 on the CPU when installed, else torch")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help="flip test, the mirrored crops in the same forward call (default: on)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="fp16/bf16: torch autocast; auto: fp16 on CUDA, fp32 elsewhere (default: %(default)s)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC memory layout for the torch backend (default: on)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the torch backend")
    parser.add_argument("--threads", type=at_least(1), metavar="N", help="CPU threads (default: torch's setting)")
    parser.add_argument("--repeats", type=at_least(1), default=3, metavar="R", help="warm runs per batch (default: 3)")
    add_max_batch_option(parser, 64)
    parser.add_argument("--memory", action="store_true",
                        help="also measure the peak memory of 100, 200 and 800 people (longer than the timing)")
    parser.add_argument("--memory-people", type=at_least(1), nargs="+", metavar="N",
                        help="measure the peak memory of these numbers of people instead (implies --memory)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write all measurements as JSON")


def run(args: argparse.Namespace) -> int:
    from posekit.bench import format_table, run_benchmark

    result = run_benchmark(
        batches=args.batches, depth=args.depth, input_size=args.input, device=args.device, flip=args.flip,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile, threads=args.threads,
        repeats=args.repeats, max_batch=args.max_batch, backend=args.backend, memory_people=args.memory_people or ([100, 200, 800] if args.memory else []), progress=True,
    )
    print(format_table(result))
    if args.json is not None:
        print(f"json: {result.save_json(args.json)}")
    return 0

