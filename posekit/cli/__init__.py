"""The ``posekit`` command line: one subcommand per module of this package.

Each module has ``add(subparsers)``, which declares its options, and ``run(args) -> int``, which maps
them to the Python API and returns the exit code. Heavy imports (torch, torchvision) happen inside
``run`` so ``posekit --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
from typing import Sequence

import posekit
from posekit.cli._common import one_line
from posekit.errors import PosekitError
from posekit.io.files import signals_raise

# name -> its module (add(subparsers), run(args) -> exit code; track-eval: track_eval.py); the order is `posekit --help`'s.
_COMMANDS = {name: importlib.import_module(f"posekit.cli.{name.replace('-', '_')}") for name in (
    "info", "demo", "predict", "weights", "eval", "bench", "track", "track-eval", "compare", "export", "train",
    "check-int8",
)}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subparser per entry of ``_COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="posekit",
        description="Top-down human pose estimation with SimpleBaseline (Xiao et al., ECCV 2018).",
    )
    parser.add_argument("--version", action="version", version=f"posekit {posekit.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _COMMANDS.values():
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``posekit`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with signals_raise():
            return _COMMANDS[args.command].run(args)
    except PosekitError as error:
        # A user-facing problem: one sentence, no traceback, its advice worded for the command line.
        print(f"posekit {args.command}: error: {one_line(error.for_cli())}", file=sys.stderr)
        return 1
    except OSError as error:
        # The system refused (disk full, permission denied): one line, as for the errors above.
        print(f"posekit {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        # Every atomic_write on the way out has removed its temporary file: no partial output is left.
        signum = getattr(error, "signum", signal.SIGINT)
        print(f"posekit {args.command}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum

