"""`posekit weights list|download`: the pretrained weights registry."""
from __future__ import annotations

import argparse

from posekit.defaults import DEFAULT, DEFAULT_WEIGHTS


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("weights", help="list or download pretrained pose weights")
    actions = parser.add_subparsers(dest="weights_action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the registry with reported COCO AP and cache status")
    download = actions.add_parser("download", help="download weights into the cache")
    download.add_argument("name", help=f"a name from `posekit weights list`, or {DEFAULT} ({DEFAULT_WEIGHTS})")


def run(args: argparse.Namespace) -> int:
    from posekit.models import weights

    if args.weights_action == "download":
        # `default` as --weights takes it, so advice printed with the --weights value works as printed.
        name = DEFAULT_WEIGHTS if args.name == DEFAULT else args.name
        path = weights.download_weights(name, hint=None)  # this command takes no --weights file to offer instead
        print(f"{name}: {path}")
        return 0
    header = ("name", "depth", "input", "channels", "AP", "source", "cached")
    rows = [
        (
            entry.name,
            str(entry.depth),
            f"{entry.input_size[1]}x{entry.input_size[0]}",
            entry.channel_order.upper(),
            f"{entry.reported_ap['AP']:.3f}",
            entry.source,
            "yes" if weights.cached_weights_path(entry.name) else "no",
        )
        for entry in weights.WEIGHTS.values()
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print("AP: as reported by each release on COCO val2017 (detector human AP 56.4, flip test).")
    return 0

