"""The ``posekit`` command line: one subcommand per job.

Each subcommand has an ``_add_<name>(subparsers)`` that declares its options and a
``_run_<name>(args) -> int`` that does the work through the library and returns the exit code.
Heavy imports (torch, torchvision) happen inside the runners so ``posekit --help`` stays instant.
"""
from __future__ import annotations

import argparse
import contextlib
import os
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
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images (by id)")
    parser.add_argument("--out", type=Path, help="also write the COCO-format results JSON here")
    parser.add_argument("--batch-size", type=int, default=32, help="people per network call (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers that read and decode images (default: %(default)s)")
    _add_device_option(parser)
    _add_runtime_options(parser)
    parser.add_argument("--download", action="store_true",
                        help="first download the missing COCO parts (images ~780 MB, annotations ~240 MB)")


def _run_eval(args: argparse.Namespace) -> int:
    from posekit import coco, cocodata, distributed

    if args.limit is not None and args.limit < 1:
        raise PosekitError(f"--limit {args.limit}: expected a positive number of images")
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
    import json
    import time
    import warnings

    import numpy as np
    from tqdm.auto import tqdm

    from posekit.errors import ImageReadError
    from posekit.files import atomic_write
    from posekit.images import load_image

    with _warnings_as_lines("predict"):
        paths, boxes, file_ids = _predict_inputs(args)
        names = _output_stems(paths)
        detector = None if boxes is not None or args.detector == "none" else args.detector
        estimator = _estimator(args, detector=detector, flip_test=not args.no_flip)
        no_boxes = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        results: list[dict] = []
        done = people = 0
        start = time.perf_counter()
        for index, path in enumerate(tqdm(paths, desc="posekit predict", unit="image")):
            try:
                image = load_image(path)
            except ImageReadError as error:
                warnings.warn(f"{error}; skipped")
                continue
            image_id = _image_id(path, index, file_ids)
            found = boxes.get(image_id, no_boxes) if boxes is not None else estimator.detect([image])[0]
            poses = estimator.estimate(image, *found, name=str(path))
            results += poses.to_coco(image_id)
            _save_annotated(image, poses.keypoints, poses.boxes, args.out / f"{names[index]}_pose.jpg")
            done, people = done + 1, people + len(poses)
    if done == 0:
        raise ImageReadError(f"none of the {len(paths)} images could be read (see the warnings above)")
    json_path = args.json or args.out / "results.json"
    with atomic_write(json_path, "w") as file:
        json.dump(results, file)
    seconds = time.perf_counter() - start
    skipped = f", {len(paths) - done} skipped (see warnings)" if done < len(paths) else ""
    print(
        f"posekit predict: {done} images, {people} people in {seconds:.1f} s ({seconds / done:.2f} s per image, "
        f"{estimator.weights_source}, device {estimator.device}){skipped}; annotated images in {args.out}, "
        f"results in {json_path}"
    )
    return 0


def _predict_inputs(args: argparse.Namespace) -> tuple[list[Path], dict | None, dict[str, int]]:
    """(image paths, boxes by image id or None, image ids by file name from a COCO annotation --boxes file)."""
    import json

    from posekit.detect import load_detections
    from posekit.errors import DetectionsFormatError
    from posekit.images import find_images

    paths = find_images(args.inputs)
    if args.boxes is None:
        return paths, None, {}
    boxes = load_detections(args.boxes)  # validates the file, so it is JSON below
    content = json.loads(args.boxes.read_text(encoding="utf-8"))
    images = content.get("images", []) if isinstance(content, dict) else []
    if not isinstance(images, list) or not all(isinstance(entry, dict) for entry in images):
        raise DetectionsFormatError(f"{args.boxes}: 'images' must be a list of {{'id': int, 'file_name': str}} entries")
    named = [e for e in images if isinstance(e.get("file_name"), str) and isinstance(e.get("id"), int)]
    return paths, boxes, {entry["file_name"]: entry["id"] for entry in named}


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


def _image_id(path: Path, index: int, file_ids: dict[str, int]) -> int:
    """COCO image id: the file's entry in the --boxes annotation file, else the number in a COCO-style
    file name (000000000785.jpg, COCO_val2014_000000000785.jpg), else its index among the inputs."""
    import re

    if path.name in file_ids:
        return file_ids[path.name]
    number = re.fullmatch(r"(?:.*_)?(\d+)", path.stem)
    return int(number.group(1)) if number else index


def _save_annotated(image: np.ndarray, keypoints: np.ndarray, boxes: np.ndarray, path: Path) -> None:
    """Write the image with its skeletons and boxes at its own resolution (temporary file, then renamed)."""
    from matplotlib.figure import Figure

    from posekit.viz import draw_skeleton, save_figure

    height, width = image.shape[:2]
    figure = Figure(figsize=(width / 100, height / 100))
    draw_skeleton(image, keypoints, ax=figure.add_axes((0, 0, 1, 1)), boxes=boxes)
    save_figure(figure, path, dpi=100)


@contextlib.contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Show each warning as one line ``posekit COMMAND: warning: ...`` that does not break the progress bar."""
    import warnings

    from tqdm.auto import tqdm

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        tqdm.write(f"posekit {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _add_bench(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="time inference per stage on mini-batches of person crops (random weights)")
    parser.add_argument("--batches", type=int, nargs="+", default=[200, 100], metavar="N",
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
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: torch's setting)")
    parser.add_argument("--repeats", type=int, default=3, metavar="R", help="warm runs per batch (default: 3)")
    parser.add_argument("--max-batch", type=int, default=64, metavar="M",
                        help="people per network call; bounds the memory (default: %(default)s)")
    parser.add_argument("--memory-people", type=int, nargs="+", default=[100, 200, 800], metavar="N",
                        help="numbers of people whose peak memory is shown (default: 100 200 800)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write all measurements as JSON")


def _height_by_width(text: str) -> tuple[int, int]:
    """'256x192' (height x width, as the weights are named) -> (width, height)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH such as 256x192") from None
    return width, height


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
    import json

    from posekit.demo import UNTRAINED_TITLE
    from posekit.detect import PersonDetector
    from posekit.errors import DownloadError
    from posekit.estimator import PoseEstimator
    from posekit.files import atomic_write
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
            print(f"posekit track: note: {error}", file=sys.stderr)
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
        with atomic_write(args.json, "w") as file:
            json.dump(to_posetrack(run.frames, run.file_names), file)
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
        return run(args)
    except PosekitError as error:
        # A user-facing problem: one sentence, no traceback, its advice worded for the command line.
        print(f"posekit {args.command}: error: {error.for_cli()}", file=sys.stderr)
        return 1
    except OSError as error:
        # The system refused (disk full, permission denied): one line, as for the errors above.
        print(f"posekit {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"posekit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
