"""What the subcommands share: common options, the estimator they describe, warnings as one line."""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable, Iterator

from posekit.defaults import BACKENDS, DEFAULT, DEFAULT_WEIGHTS, FALLBACK_WEIGHTS, PRECISIONS, RANDOM, UNTRAINED_TITLE


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda, cuda:1, mps ...")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--backend, --precision and --channel-order, as PoseEstimator takes them."""
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="network runtime; auto: onnxruntime for fp32 on the CPU, torch on a GPU (default: auto)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: fp16 on CUDA, fp32 elsewhere (default: auto)")
    parser.add_argument("--channel-order", choices=("rgb", "bgr"),
                        help="the channel order the weights were trained on (default: what the checkpoint says)")


def add_flip_option(parser: argparse.ArgumentParser, off: str) -> None:
    """--flip/--no-flip, the flip test (PoseEstimator's ``flip_test``), on by default."""
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help=f"flip test, as in the paper (default: on; {off})")


def add_max_batch_option(parser: argparse.ArgumentParser, default: int) -> None:
    """--max-batch, people per network call (PoseEstimator's ``max_batch``)."""
    parser.add_argument("--max-batch", type=at_least(1), default=default, metavar="M",
                        help="people per network call; bounds the memory (default: %(default)s)")


def add_weights_option(parser: argparse.ArgumentParser, extra: str = "") -> None:
    parser.add_argument("--weights", default=DEFAULT,
                        help=f"registered weights name, checkpoint file or URL; {DEFAULT}: {DEFAULT_WEIGHTS}, or "
                             f"{FALLBACK_WEIGHTS} (said on screen) when Google Drive refuses; {RANDOM}: an untrained "
                             f"network (fixed seed; for trying the pipeline offline){extra} (default: %(default)s)")


def build_estimator(args: argparse.Namespace, **options: object):
    """The PoseEstimator the command's options describe; ``options`` add to them or replace them."""
    from posekit.estimator import PoseEstimator

    options = {"device": args.device, "backend": args.backend, "precision": args.precision,
               "channel_order": args.channel_order, **options}  # a command may override what its options say
    return PoseEstimator(args.weights, **options)


def warn_if_untrained(estimator, weights: str) -> None:
    """Print, when the command's network is untrained, that it is and how to get real weights."""
    if estimator.pretrained:
        return
    name = DEFAULT_WEIGHTS if weights == DEFAULT else weights
    advice = f" (--weights {RANDOM})" if weights == RANDOM else f"; real weights: posekit weights download {name}"
    print(f"WARNING: {UNTRAINED_TITLE}{advice}")


def height_by_width(text: str) -> tuple[int, int]:
    """'256x192' (height x width, as the weights are named) -> (width, height), both positive."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        height = width = 0
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH in pixels, such as 256x192")
    return width, height


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= {minimum}")
        return value

    return whole_number


@contextlib.contextmanager
def warnings_as_lines(command: str) -> Iterator[None]:
    """Show each warning as one line ``posekit COMMAND: warning: ...`` that does not break the progress bar."""
    import warnings

    from tqdm.auto import tqdm

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        tqdm.write(f"posekit {command}: warning: {one_line(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def one_line(message: object) -> str:
    """A message (an exception or a warning) on one line. An error raised in a DataLoader worker arrives
    with the worker's traceback in its message: its last line holds the original message. Control
    characters (a newline in a file name) are shown escaped, as in Python strings."""
    import re

    text = str(message)
    if "Traceback (most recent call last)" in text:
        text = re.sub(r"^[\w.]+: ", "", text.strip().splitlines()[-1].strip())
    escaped = re.sub(r"[\x00-\x1f\x7f]", lambda match: repr(match.group())[1:-1], text)
    return escaped or type(message).__name__
