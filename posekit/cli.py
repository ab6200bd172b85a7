"""The ``posekit`` command line: one subcommand per job.

Each subcommand has an ``_add_<name>(subparsers)`` that declares its options and a
``_run_<name>(args) -> int`` that does the work through the library and returns the exit code.
Heavy imports (torch, torchvision) happen inside the runners so ``posekit --help`` stays instant.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from posekit.defaults import (
    BACKENDS,
    DEFAULT,
    DEFAULT_DETECTOR,
    DEFAULT_WEIGHTS,
    DEMO_DETECTOR,
    FALLBACK_WEIGHTS,
    PRECISIONS,
)
from posekit.errors import PosekitError

if TYPE_CHECKING:
    import numpy as np

    from posekit.poses import Poses


def _add_info(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("info", help="versions, device, cache directory and cached weights")


def _run_info(args: argparse.Namespace) -> int:
    import platform

    import torch
    import torchvision

    from importlib.metadata import PackageNotFoundError, version

    from posekit import hub, weights
    from posekit.device import resolve_device

    try:
        coco_version = version("pycocotools")
    except PackageNotFoundError:
        coco_version = "missing"
    device = resolve_device("auto")
    if device.type == "cuda":
        device = f"cuda ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        device = f"cpu ({torch.get_num_threads()} threads)"
    cached = [name for name in weights.WEIGHTS if weights.cached_weights_path(name) is not None]
    rows = [
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("torchvision", torchvision.__version__),
        ("pycocotools", coco_version),
        ("device", device),
        ("cache", str(hub.cache_dir())),
        ("cached weights", ", ".join(cached) if cached else "none (posekit weights download NAME)"),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _add_weights(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("weights", help="list or download pretrained pose weights")
    actions = parser.add_subparsers(dest="weights_action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the registry with reported COCO AP and cache status")
    download = actions.add_parser("download", help="download weights into the cache")
    download.add_argument("name", help="a name from `posekit weights list`")


def _run_weights(args: argparse.Namespace) -> int:
    from posekit import weights

    if args.weights_action == "download":
        path = weights.download_weights(args.name)
        print(f"{args.name}: {path}")
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


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda, cuda:1, mps ...")


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--backend, --precision and --channel-order, as PoseEstimator takes them."""
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="network runtime; auto: onnxruntime for fp32 on the CPU, torch on a GPU (default: auto)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: fp16 on CUDA, fp32 elsewhere (default: auto)")
    parser.add_argument("--channel-order", choices=("rgb", "bgr"),
                        help="the channel order the weights were trained on (default: what the checkpoint says)")


def _weights_option(parser: argparse.ArgumentParser, extra: str = "") -> None:
    parser.add_argument("--weights", default=DEFAULT,
                        help=f"registered weights name, checkpoint file or URL; {DEFAULT}: {DEFAULT_WEIGHTS}, or "
                             f"{FALLBACK_WEIGHTS} (said on screen) when Google Drive refuses{extra} (default: %(default)s)")


def _estimator(args: argparse.Namespace, **options: object):
    """The PoseEstimator the command's options describe."""
    from posekit.estimator import PoseEstimator

    return PoseEstimator(args.weights, device=args.device, backend=args.backend, precision=args.precision,
                         channel_order=args.channel_order, **options)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="COCO val2017 keypoint AP with the paper's protocol (pycocotools)")
    parser.add_argument("--coco-root", type=Path, required=True,
                        help="folder holding val2017/, annotations/person_keypoints_val2017.json and "
                             "person_detection_results/ (what --download creates)")
    _weights_option(parser)
    parser.add_argument("--boxes", default="gt",
                        help="'gt' for the annotated boxes (default), 'detections' for the paper's person "
                             "detections (detector AP 56.4), or a COCO detection-results JSON file")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help="flip test, as in the paper (default: on)")
    parser.add_argument("--decode", choices=("quarter", "dark", "argmax"), default="quarter",
                        help="heatmap decoding (default: the official quarter-pixel shift)")
    parser.add_argument("--limit", type=_at_least(1), metavar="N", help="evaluate only the first N images (by id)")
    parser.add_argument("--out", type=Path, help="also write the COCO-format results JSON here")
    parser.add_argument("--batch-size", type=_at_least(1), default=32,
                        help="people per network call (default: %(default)s)")
    parser.add_argument("--workers", type=_at_least(0), default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers that read and decode images (default: %(default)s)")
    _add_device_option(parser)
    _add_runtime_options(parser)
    parser.add_argument("--download", action="store_true",
                        help="first download the missing COCO parts (images ~780 MB, annotations ~240 MB)")


def _run_eval(args: argparse.Namespace) -> int:
    from posekit import coco, cocodata, distributed

    paths = cocodata.CocoPaths(args.coco_root)
    needed = ["val2017", "annotations"] + (["detections"] if args.boxes == "detections" else [])
    if args.download:
        cocodata.download_coco(args.coco_root, needed)
    missing = [str(paths.path(part)) for part in paths.missing(needed)]
    if missing:
        raise PosekitError(
            f"{args.coco_root}: missing {', '.join(missing)}; run again with --download on a machine with internet "
            "(or put COCO val2017 there in that layout)"
        )
    # The estimator resolves the weights (name, file or URL), how to feed them, the device and the backend.
    # Under torchrun each process takes its own GPU and a share of the images (posekit.distributed).
    args.device = distributed.device_for_rank(args.device)
    with _warnings_as_lines("eval"):
        estimator = _estimator(args)
    boxes = paths.detections_file if args.boxes == "detections" else args.boxes
    dataset = coco.CocoPersonDataset(paths.ann_file, paths.image_dir, boxes=boxes, max_images=args.limit)
    if distributed.process_rank() == 0:
        print(
            f"{estimator.weights_source}: {dataset.num_people} people in {len(dataset.image_ids)} images, boxes "
            f"{args.boxes}, flip test {'on' if args.flip else 'off'}, decode {args.decode}, device {estimator.device}, "
            f"backend {estimator.backend} {estimator.precision}",
            file=sys.stderr,
        )
    result = distributed.evaluate(
        estimator.model, dataset, flip_test=args.flip, decode=args.decode, batch_size=args.batch_size,
        num_workers=args.workers, backend=estimator.backend, precision=estimator.precision,
    )
    if result is None:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    reported = estimator.weights.reported_ap if estimator.weights is not None else None
    print(result.table(reported))
    if reported:
        print(f"reported: the {estimator.weights.name} release on all of val2017, detector boxes (AP 56.4), flip test")
    timing = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.timing.items())
    print(f"time: {timing} ({result.num_people / result.timing['total']:.1f} people/s)")
    if args.out is not None:
        print(f"results: {result.save_results(args.out)}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="detect, estimate and draw the bundled COCO images; timed; works offline")
    parser.add_argument("--out", type=Path, default=Path("posekit_output"),
                        help="folder for demo.png (default: %(default)s)")
    _weights_option(parser, "; if none can be had, an untrained network runs and says so")
    parser.add_argument("--detector", default=DEMO_DETECTOR,
                        help="person detector, or 'none' for the annotated boxes, which are also used when its "
                             "weights are unavailable (default: %(default)s, the fast one)")
    _add_device_option(parser)
    _add_runtime_options(parser)


def _run_demo(args: argparse.Namespace) -> int:
    from posekit.demo import run_demo

    detector = None if args.detector == "none" else args.detector
    with _warnings_as_lines("demo"):
        result = run_demo(args.out, args.weights, detector, args.device, backend=args.backend,
                          precision=args.precision, channel_order=args.channel_order)
        print(result.summary())
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="keypoints for image files, folders or globs: annotated images + COCO JSON")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (their images) or glob patterns")
    parser.add_argument("--out", type=Path, default=Path("posekit_output"),
                        help="folder for the annotated images NAME_pose.jpg (default: %(default)s)")
    parser.add_argument("--json", type=Path,
                        help="COCO keypoint results file; image_id from COCO-style numeric file names, else from "
                             "--boxes' image list, else the input's index (default: OUT/results.json)")
    parser.add_argument("--boxes", type=Path,
                        help="person boxes instead of a detector: COCO detection results or a COCO annotation file")
    _weights_option(parser)
    parser.add_argument("--detector", default=DEFAULT_DETECTOR,
                        help="person detector (fasterrcnn_mobilenet_v3_large_fpn is ~8x faster on CPU), or 'none' "
                             "to take each whole image as one person (default: %(default)s)")
    _add_device_option(parser)
    _add_runtime_options(parser)
    parser.add_argument("--no-flip", action="store_true", help="skip the flip test: ~2x faster, slightly less accurate")


def _run_predict(args: argparse.Namespace) -> int:
    import time
    import warnings

    import numpy as np
    from tqdm.auto import tqdm

    from posekit.errors import ImageReadError, OutputError
    from posekit.files import write_json
    from posekit.images import load_image

    start = time.perf_counter()  # the summary counts reading the inputs and loading the networks too
    with _warnings_as_lines("predict"):
        paths, boxes, image_ids, drawings, json_path = _plan_predict(args)
        detector = None if boxes is not None or args.detector == "none" else args.detector
        estimator = _estimator(args, detector=detector, flip_test=not args.no_flip)
        no_boxes = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        results: list[dict] = []
        done = people = 0
        ready = time.perf_counter()
        try:
            for path, image_id, drawing in zip(tqdm(paths, desc="posekit predict", unit="image"), image_ids, drawings):
                try:
                    image = load_image(path)
                except ImageReadError as error:
                    warnings.warn(f"{error}; skipped")
                    continue
                found = boxes.get(image_id, no_boxes) if boxes is not None else estimator.detect([image])[0]
                poses = estimator.estimate(image, *found, name=str(path))
                image_results = _coco_results(path, image_id, poses)
                try:
                    _save_annotated(image, poses.keypoints, poses.boxes, drawing)
                except (OutputError, ValueError) as error:
                    if isinstance(error, OutputError) and error.errno not in _ONE_FILE_ERRNOS:
                        raise  # disk full, read-only, no folder: every other image would fail the same way
                    warnings.warn(f"{path}: annotated image not written ({error}); its keypoints are in {json_path}")
                results += image_results  # only now: an interrupted image is in neither the drawings nor the results
                done, people = done + 1, people + len(poses)
        except KeyboardInterrupt:
            # Replace an earlier run's results rather than leave them beside this run's drawings.
            if done:
                write_json(json_path, results)
                tqdm.write(f"posekit predict: {json_path} holds the results of the {done} images done", file=sys.stderr)
            raise
    if done == 0:
        raise ImageReadError(f"none of the {len(paths)} images could be read (see the warnings above)")
    write_json(json_path, results)
    end = time.perf_counter()
    skipped = f", {len(paths) - done} skipped (see warnings)" if done < len(paths) else ""
    print(
        f"posekit predict: {done} images, {people} people in {end - start:.1f} s ({ready - start:.1f} s reading the "
        f"inputs and loading the networks, then {(end - ready) / done:.2f} s per image; {estimator.weights_source}, "
        f"device {estimator.device}){skipped}; annotated images in {args.out}, results in {json_path}"
    )
    return 0


# Output errors that concern one file name only (too long, a folder or a device in the way): that image's
# drawing is skipped with a warning and the run goes on. Others (disk full, read-only) end the run.
# None: an encoder failed (no system error number).
_ONE_FILE_ERRNOS = {errno.ENAMETOOLONG, errno.EFBIG, errno.EISDIR, errno.EINVAL, None}

# The largest width or height a JPEG file can have (libjpeg's limit).
_JPEG_MAX_SIDE = 65500


def _plan_predict(args: argparse.Namespace) -> tuple[list[Path], dict | None, list[int], list[Path], Path]:
    """Everything ``predict`` settles before loading a network: the images, the --boxes, an image id and a
    drawing path per image, and the results file; no output may be one of the inputs."""
    from posekit.detect import read_boxes_file
    from posekit.files import check_writable, file_key
    from posekit.images import find_images

    paths = _without_earlier_drawings(find_images(args.inputs), args)
    boxes, file_ids = read_boxes_file(args.boxes) if args.boxes is not None else (None, {})
    image_ids = _image_ids(paths, file_ids, boxes is not None)
    inputs = {file_key(path): path for path in [*paths, args.boxes, Path(args.weights)] if path is not None}
    inputs.pop(None, None)  # --weights given by name
    drawings = _drawing_paths(paths, args.out, inputs)
    json_path = args.json or args.out / "results.json"
    if file_key(json_path) in inputs:
        raise PosekitError(f"--json {json_path} is the input {inputs[file_key(json_path)]}; expected a new file name")
    if os.path.realpath(json_path) in {os.path.realpath(drawing) for drawing in drawings}:
        raise PosekitError(f"--json {json_path} is where an annotated image goes; expected another file name")
    check_writable(json_path)  # a folder in the way fails now, not after the last image
    return paths, boxes, image_ids, drawings, json_path


def _without_earlier_drawings(paths: list[Path], args: argparse.Namespace) -> list[Path]:
    """Drop the NAME_pose.jpg drawings of an earlier run that a folder or glob input found in the --out
    folder; files named one by one on the command line stay inputs."""
    import warnings

    from posekit.files import file_key

    out, named = file_key(args.out), {file_key(item) for item in args.inputs}
    earlier = {p for p in paths if p.name.endswith("_pose.jpg") and file_key(p.parent) == out and file_key(p) not in named}
    if earlier:
        warnings.warn(
            f"{args.out}: skipped {len(earlier)} drawing(s) of an earlier run (*_pose.jpg) in the output folder; "
            "name such a file on its own to use it as an input"
        )
    return [path for path in paths if path not in earlier]


def _image_ids(paths: list[Path], file_ids: dict[str, int], boxes_given: bool) -> list[int]:
    """A distinct COCO image id per path: its entry in the --boxes annotation file's image list, else the
    number of a COCO-style file name (000000000785.jpg, COCO_val2014_000000000785.jpg), else its position
    among the inputs (0-based). Numbering by position, and renumbering an id an earlier input already has
    (after the largest id), are announced in a warning.

    Raises:
        DetectionsFormatError: with --boxes, two images would share an id, so the file's boxes for that id
            could belong to either.
    """
    import re
    import warnings

    from posekit.errors import DetectionsFormatError

    named = []
    for path in paths:
        number = re.fullmatch(r"(?:.*_)?([0-9]+)", path.stem)
        # Beyond int64 no COCO tool can hold the id: such a name counts as having none.
        from_name = int(number.group(1)) if number and int(number.group(1)) < 2**63 else None
        named.append(file_ids.get(path.name, from_name))
    # An id belongs to the first input named with it; positions come second.
    owners: dict[int, Path] = {}
    for path, number in zip(paths, named):
        if number is not None:
            owners.setdefault(number, path)
    ids, by_position, renumbered = [], 0, []
    next_free = max([n for n in named if n is not None] + [len(paths) - 1]) + 1
    for index, (path, number) in enumerate(zip(paths, named)):
        wanted = index if number is None else number
        owner = owners.setdefault(wanted, path)
        if owner is not path:
            if boxes_given:
                raise DetectionsFormatError(
                    f"{owner} and {path} both get image id {wanted}, so the boxes that --boxes gives for that id "
                    "could belong to either; expected inputs with distinct ids (rename or leave out one)"
                )
            wanted, next_free = next_free, next_free + 1
            owners[wanted] = path
            renumbered.append(f"{path.name}={wanted}")
        elif number is None:
            by_position += 1
        ids.append(wanted)
    if by_position:
        warnings.warn(
            f"{by_position} image(s) have no image id in their file name or the --boxes image list: each is numbered "
            "by its position among the inputs (0 for the first, folders sorted by name), as results.json shows"
        )
    if renumbered:
        warnings.warn(
            f"{len(renumbered)} image(s) have the image id of an earlier input: numbered after the largest id "
            f"instead: {_few(renumbered)}"
        )
    return ids


def _few(items: list[str], shown: int = 5) -> str:
    """The first ``shown`` items, comma-separated, and how many more there are."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _drawing_paths(paths: list[Path], out: Path, inputs: dict) -> list[Path]:
    """OUT/NAME_pose.jpg per path (NAME from :func:`_output_stems`), NAME_2_pose.jpg ... where that file is
    itself an input, so that no input is ever overwritten."""
    import warnings

    from posekit.files import file_key

    drawings: dict[Path, None] = {}  # ordered, and a set for the membership test (100k images stay linear)
    for path, name in zip(paths, _output_stems(paths)):
        drawing, number = out / f"{name}_pose.jpg", 2
        while file_key(drawing) in inputs or drawing in drawings:
            drawing, number = out / f"{name}_{number}_pose.jpg", number + 1
        if number > 2:
            warnings.warn(f"{out / f'{name}_pose.jpg'} is an input: the drawing of {path} goes to {drawing}")
        drawings[drawing] = None
    return list(drawings)


def _coco_results(path: Path, image_id: int, poses: Poses) -> list[dict]:
    """COCO keypoint results of one image's people; people with a NaN or infinite keypoint or score (a
    broken checkpoint, a NaN score in --boxes) are left out, with a warning."""
    import warnings

    import numpy as np

    finite = np.isfinite(poses.keypoints).all(axis=(1, 2)) & np.isfinite(poses.scores)
    if not finite.all():
        warnings.warn(f"{path}: left {int((~finite).sum())} person(s) with NaN or infinite keypoints or score out of the results")
    return [result for result, keep in zip(poses.to_coco(image_id), finite) if keep]


def _output_stems(paths: list[Path]) -> list[str]:
    """A distinct output name per input: its stem, or where stems repeat (a/img.jpg, b/img.jpg, b/img.png) its
    path below the common folder of those files, with the suffix, as one name (a_img_jpg, b_img_jpg, b_img_png)."""
    absolute = [Path(os.path.abspath(path)) for path in paths]
    folders: dict[str, list[Path]] = {}
    for path in absolute:
        folders.setdefault(path.stem, []).append(path.parent)
    # Where a stem repeats, the folder its files' names are taken relative to.
    bases = {stem: os.path.commonpath(group) for stem, group in folders.items() if len(group) > 1}
    names: list[str] = []
    taken: set[str] = set()
    for path in absolute:
        name = "_".join(path.relative_to(bases[path.stem]).parts).replace(".", "_") if path.stem in bases else path.stem
        unique, number = name, 2
        while unique in taken:  # flattening met another input's name (a_b/x.jpg, a/b/x.jpg): number the later one
            unique, number = f"{name}_{number}", number + 1
        taken.add(unique)
        names.append(unique)
    return names


def _save_annotated(image: np.ndarray, keypoints: np.ndarray, boxes: np.ndarray, path: Path) -> None:
    """Write the image with its skeletons and boxes at its own resolution (temporary file, then renamed)."""
    from matplotlib.figure import Figure

    from posekit.viz import draw_skeleton, save_figure

    height, width = image.shape[:2]
    if max(height, width) > _JPEG_MAX_SIDE:
        raise ValueError(f"{width}x{height} is larger than JPEG's limit of {_JPEG_MAX_SIDE} pixels per side")
    figure = Figure(figsize=(width / 100, height / 100))
    draw_skeleton(image, keypoints, ax=figure.add_axes((0, 0, 1, 1)), boxes=boxes)
    save_figure(figure, path, dpi=100)


@contextlib.contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Show each warning as one line ``posekit COMMAND: warning: ...`` that does not break the progress bar."""
    import warnings

    from tqdm.auto import tqdm

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        tqdm.write(f"posekit {command}: warning: {_one_line(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _add_bench(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="time inference per stage on mini-batches of person crops (random weights)")
    parser.add_argument("--batches", type=_at_least(1), nargs="+", default=[200, 100], metavar="N",
                        help="people per mini-batch (default: 200 100, the seed's K80 protocol)")
    parser.add_argument("--depth", type=int, default=50, choices=(18, 34, 50, 101, 152), help="ResNet depth")
    parser.add_argument("--input", type=_height_by_width, default=(192, 256), metavar="HxW",
                        help="network input, height x width, multiples of 32 (default: 256x192)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="network runtime; auto: onnxruntime for fp32 on the CPU when installed, else torch")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help="flip test, the mirrored crops in the same forward call (default: on)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp16/bf16: torch autocast; auto: fp16 on CUDA, fp32 elsewhere (default: %(default)s)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC memory layout for the torch backend (default: on)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the torch backend")
    parser.add_argument("--threads", type=_at_least(1), metavar="N", help="CPU threads (default: torch's setting)")
    parser.add_argument("--repeats", type=_at_least(1), default=3, metavar="R", help="warm runs per batch (default: 3)")
    parser.add_argument("--max-batch", type=_at_least(1), default=64, metavar="M",
                        help="people per network call; bounds the memory (default: %(default)s)")
    parser.add_argument("--memory-people", type=_at_least(1), nargs="+", default=[100, 200, 800], metavar="N",
                        help="numbers of people whose peak memory is shown (default: 100 200 800)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write all measurements as JSON")


def _height_by_width(text: str) -> tuple[int, int]:
    """'256x192' (height x width, as the weights are named) -> (width, height), both positive."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        height = width = 0
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH in pixels, such as 256x192")
    return width, height


def _at_least(minimum: int) -> Callable[[str], int]:
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


def _run_bench(args: argparse.Namespace) -> int:
    from posekit.bench import format_table, run_benchmark

    result = run_benchmark(
        batches=args.batches, depth=args.depth, input_size=args.input, device=args.device, flip=args.flip,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile, threads=args.threads,
        repeats=args.repeats, max_batch=args.max_batch, backend=args.backend, memory_people=args.memory_people,
    )
    print(format_table(result))
    if args.json is not None:
        print(f"json: {result.save_json(args.json)}")
    return 0


def _add_track(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("track", help="people through a video with stable ids: annotated mp4 + PoseTrack JSON, fps")
    parser.add_argument("input", metavar="INPUT", help="a video file, a folder of frames, a webcam index (0) or a stream URL")
    parser.add_argument("--out", type=Path, help="write the annotated video here (.mp4, H.264)")
    parser.add_argument("--json", type=Path, help="write the tracks here, PoseTrack 2018 format (track_id per person)")
    _weights_option(parser, "; registered weights that are neither cached nor downloadable run an untrained "
                            "network, said on screen and on the frames")
    parser.add_argument("--detector", default="fasterrcnn_resnet50_fpn_v2",
                        help="person detector, or 'none' to take each whole frame as one person (default: %(default)s)")
    parser.add_argument("--boxes", type=Path,
                        help="person boxes instead of a detector: COCO detection results with image_id = frame index")
    parser.add_argument("--detector-every", type=int, default=1, metavar="K",
                        help="run the detector every K frames (and after a track is lost), propagate boxes in between")
    parser.add_argument("--propagation", choices=("flow", "pose", "none"), default="flow",
                        help="boxes from the previous poses: moved by RAFT optical flow, left in place, or none "
                             "(default: %(default)s, the paper's)")
    parser.add_argument("--similarity", choices=("flow-oks", "oks", "iou"), default="flow-oks",
                        help="how new poses are matched to tracks (default: %(default)s, the paper's)")
    parser.add_argument("--max-age", type=int, default=0, metavar="N",
                        help="frames a lost track may be matched again before its id is retired (default: 0, the paper)")
    parser.add_argument("--smooth", action="store_true", help="One-Euro filter on each track's joints")
    parser.add_argument("--no-flip", action="store_true", help="skip the flip test: ~2x faster pose network")
    parser.add_argument("--max-frames", type=int, metavar="N",
                        help="stop after N frames; Ctrl-C also stops and keeps what was tracked (for webcams)")
    parser.add_argument("--eval", type=Path, metavar="GT.json",
                        help="score the tracks against PoseTrack 2018 annotations of this video: MOTA and mAP")
    _add_device_option(parser)
    _add_runtime_options(parser)


def _run_track(args: argparse.Namespace) -> int:
    from posekit.demo import UNTRAINED_TITLE
    from posekit.detect import PersonDetector
    from posekit.errors import DownloadError
    from posekit.estimator import PoseEstimator
    from posekit.files import write_json
    from posekit.smoothing import OneEuro
    from posekit.track import PoseTracker, to_posetrack, track_video
    from posekit.video import VideoSource
    from posekit.weights import WEIGHTS

    if args.detector_every < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise PosekitError("--detector-every and --max-frames take a positive number")
    propagation = None if args.propagation == "none" else args.propagation
    with _warnings_as_lines("track"):
        video = VideoSource(args.input)  # a bad input is reported before any model loads
        detect = _frame_boxes(args.boxes) if args.boxes is not None else None
        try:
            estimator = _estimator(args, flip_test=not args.no_flip)
        except DownloadError as error:
            if args.weights not in (*WEIGHTS, DEFAULT):
                raise
            print(f"posekit track: note: {error.for_cli()}", file=sys.stderr)
            depth = WEIGHTS[DEFAULT_WEIGHTS if args.weights == DEFAULT else args.weights].depth
            estimator = PoseEstimator(None, depth=depth, device=args.device, flip_test=not args.no_flip,
                                      backend=args.backend, precision=args.precision)
        if detect is None and args.detector != "none":
            # Separately from the pose weights: missing detector weights are an error, not a fallback.
            estimator.detector = PersonDetector(args.detector, device=estimator.device)
        tracker = PoseTracker(estimator, propagation, args.similarity, args.detector_every, args.max_age, detect=detect,
                              smoothing=OneEuro() if args.smooth else None)
        caption = None if estimator.pretrained else UNTRAINED_TITLE
        run = track_video(tracker, video, args.out, caption, 0.3 if estimator.pretrained else float("-inf"),
                          args.max_frames)
    if not run.frames:
        raise PosekitError(f"{args.input}: no frames could be read")
    if args.json is not None:
        write_json(args.json, to_posetrack(run.frames, run.file_names))
    tracks = len({int(i) for f in run.frames for i in f.track_ids})
    detected = sum(f.detected for f in run.frames)
    print(
        f"posekit track: {'stopped by Ctrl-C after ' if run.interrupted else ''}{len(run.frames)} frames, {tracks} tracks, {run.tracking_fps:.2f} fps tracking, "
        f"{run.total_fps:.2f} fps end to end (detector on {detected} frames; {estimator.weights_source}; "
        f"device {estimator.device})"
    )
    if not estimator.pretrained:
        print(f"WARNING: {UNTRAINED_TITLE}; real weights: posekit weights download {args.weights}")
    for label, path in (("video", args.out), ("tracks", args.json)):
        if path is not None:
            print(f"{label}: {path}")
    if args.eval is not None:
        from posekit.track_eval import evaluate_tracking, load_posetrack

        print(evaluate_tracking(load_posetrack(args.eval), run.frames).table())
    return 0


def _frame_boxes(path: Path) -> Callable:
    """``(rgb, frame index) -> (boxes, scores)`` from a COCO detection-results file keyed by frame index."""
    import numpy as np

    from posekit.detect import load_detections

    boxes = load_detections(path)
    none = (np.zeros((0, 4)), np.zeros(0))
    return lambda rgb, index: boxes.get(index, none)


def _add_export(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="the pose network as ONNX (dynamic batch), checked against torch")
    parser.add_argument("--weights", required=True,
                        help="registered weights name, checkpoint file or URL (its architecture is read from the file)")
    parser.add_argument("--input", type=_height_by_width, metavar="HxW",
                        help="network input, height x width, multiples of 32 (default: the weights')")
    parser.add_argument("--fp16", action="store_true", help="half-precision graph (for GPUs, TensorRT, Jetson)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")


def _run_export(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise PosekitError(f"export needs the onnx and onnxruntime packages ({error}): pip install onnx onnxruntime") from None

    from posekit.estimator import PoseEstimator
    from posekit.export import export_onnx

    estimator = PoseEstimator(args.weights, device="cpu")
    width, height = args.input or estimator.spec.input_size
    if width % 32 or height % 32:
        raise PosekitError(f"--input {height}x{width}: expected multiples of 32 (the network downsamples by 32)")
    dtype = torch.float16 if args.fp16 else torch.float32
    model = estimator.model.to(memory_format=torch.contiguous_format, dtype=dtype)
    path = export_onnx(model, args.out, (width, height), args.opset)
    onnx.checker.check_model(str(path), full_check=True)
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.inference_mode():
        expected = model(images).float().numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"images": images.numpy()})
    error = float(np.abs(actual.astype(np.float32) - expected).max() / max(np.abs(expected).max(), 1e-12))
    print(
        f"posekit export: {path} ({path.stat().st_size / 2**20:.1f} MB, opset {args.opset}, "
        f"{'float16' if args.fp16 else 'float32'}): images (batch, 3, {height}, {width}) -> heatmaps "
        f"(batch, {expected.shape[1]}, {height // 4}, {width // 4}); onnx.checker passed; onnxruntime vs torch on a "
        f"batch of 2: max difference {error:.1e} of the largest heatmap value ({estimator.weights_source})"
    )
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train or fine-tune with the paper's recipe (torchrun for many GPUs)")
    parser.add_argument("--data", required=True,
                        help="'coco' (COCO train2017 under --images ROOT, validated on val2017) or a COCO keypoint "
                             "annotation file of any keypoint set")
    parser.add_argument("--images", type=Path, required=True, help="image folder of --data (for coco: the COCO root)")
    parser.add_argument("--val", type=Path, metavar="ANN", help="validation annotation file (PCK; COCO AP for COCO-17)")
    parser.add_argument("--val-images", type=Path, metavar="DIR", help="images of --val (default: --images)")
    parser.add_argument("--depth", type=int, default=50, choices=(18, 34, 50, 101, 152))
    parser.add_argument("--input", type=_height_by_width, default=(192, 256), metavar="HxW",
                        help="crop height x width, multiples of 32 (default: 256x192)")
    parser.add_argument("--schedule", choices=("paper", "finetune"), default="paper",
                        help="paper: 140 epochs, x0.1 at 90 and 120; finetune: 14 epochs, x0.1 at 9 and 12")
    parser.add_argument("--epochs", type=int, help="number of epochs (default: the schedule's)")
    parser.add_argument("--batch-size", type=int, help="people per process and step (default: 32)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default: 1e-3)")
    parser.add_argument("--init", default="imagenet",
                        help="imagenet (torchvision's ResNet), none, or pose weights: a registered name or a "
                             "checkpoint file; a head of another joint count is re-initialised (default: imagenet)")
    parser.add_argument("--resume", type=Path, metavar="CKPT", help="continue a run exactly from its last.pth")
    parser.add_argument("--out", type=Path, default=Path("posekit_train"),
                        help="folder for last.pth, best.pth, log.csv (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers per process that decode images (default: %(default)s)")
    parser.add_argument("--val-every", type=int, default=10, metavar="N", help="validate every N epochs (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, order and augmentation")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs (CUDA only)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--half-body", action="store_true",
                        help="HRNet's half-body crops with probability 0.3 (not in the paper's recipe)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_device_option(parser)


def _run_train(args: argparse.Namespace) -> int:
    from posekit import cocodata
    from posekit.train import TrainConfig, train

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
        batch_size=args.batch_size, lr=args.lr, init=args.init, resume=args.resume, workers=args.workers,
        sync_bn=args.sync_bn, amp=args.amp, half_body=args.half_body, seed=args.seed, val_every=args.val_every, device=args.device,
        progress=args.progress,
    )
    history = train(config)
    if history and int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {history[-1]['epoch']} epochs, loss {history[-1]['loss']:.4g}: {args.out / 'last.pth'}")
    return 0


# name -> (add parser, run); the order is the order of `posekit --help`.
_COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "info": (_add_info, _run_info),
    "demo": (_add_demo, _run_demo),
    "predict": (_add_predict, _run_predict),
    "weights": (_add_weights, _run_weights),
    "eval": (_add_eval, _run_eval),
    "bench": (_add_bench, _run_bench),
    "track": (_add_track, _run_track),
    "export": (_add_export, _run_export),
    "train": (_add_train, _run_train),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subparser per entry of ``_COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="posekit",
        description="Top-down human pose estimation with SimpleBaseline (Xiao et al., ECCV 2018).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, _ in _COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``posekit`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _, run = _COMMANDS[args.command]
    try:
        with _signals_unwind():
            return run(args)
    except PosekitError as error:
        # A user-facing problem: one sentence, no traceback, its advice worded for the command line.
        print(f"posekit {args.command}: error: {_one_line(error.for_cli())}", file=sys.stderr)
        return 1
    except OSError as error:
        # The system refused (disk full, permission denied): one line, as for the errors above.
        print(f"posekit {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        # Every atomic_write on the way out has removed its temporary file: no partial output is left.
        signum = getattr(error, "signum", signal.SIGINT)
        print(f"posekit {args.command}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds the run like Ctrl-C, so every open output is cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` for the duration of a command (main thread only)."""
    from posekit.files import remove_pending

    def handler(signum: int, frame: object) -> None:
        remove_pending()  # right away, in case code on the way out swallows the exception
        raise Terminated(signum)

    previous = {}
    with contextlib.suppress(ValueError):  # signal.signal works in the main thread only
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _one_line(message: object) -> str:
    """A message (an exception or a warning) on one line. An error raised in a DataLoader worker arrives
    with the worker's traceback in its message: its last line holds the original message. Control
    characters (a newline in a file name) are shown escaped, as in Python strings."""
    import re

    text = str(message)
    if "Traceback (most recent call last)" in text:
        text = re.sub(r"^[\w.]+: ", "", text.strip().splitlines()[-1].strip())
    escaped = re.sub(r"[\x00-\x1f\x7f]", lambda match: repr(match.group())[1:-1], text)
    return escaped or type(message).__name__


if __name__ == "__main__":
    raise SystemExit(main())
