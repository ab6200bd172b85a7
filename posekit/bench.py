"""``posekit bench``: where the time of top-down inference goes, measured on this machine.

The protocol is the seed's: mini-batches of 200 and 100 person crops through the whole top-down
pipeline (crop, normalise, network, flip test, decode). Next to every number the benchmark puts
what it can be judged against, all measured in the same run: the machine's dense fp32 throughput
(a large matmul) against the network's achieved FLOP/s (FLOPs counted on a real forward), and a
reference pipeline written the way the paper's code works (per-person ``cv2.warpAffine`` crop and
``ToTensor``/``Normalize``, flip by ``numpy`` with a second forward, per-joint decoding loops).
The K80 figure from the seed is printed beside them and labelled as another machine's.

The network has random weights: timing does not depend on them, and the keypoints are only
compared between the two pipelines, never presented as predictions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from posekit.coco17 import FLIP_PAIRS
from posekit.crop import affine_matrix, box_to_center_scale, crop_batch
from posekit.data import COCO_SAMPLE_ANNOTATIONS, COCO_SAMPLE_DIR
from posekit.errors import PosekitError
from posekit.estimator import resolve_device
from posekit.export import Forward, inference_forward, resolve_backend
from posekit.files import atomic_write
from posekit.heatmaps import decode, flip_back
from posekit.images import load_image
from posekit.model import pose_resnet
from posekit.weights import DEFAULT_WEIGHTS, get_weights

# The seed's headline figure: seconds per mini-batch of person crops on a Colab K80 GPU.
K80_SECONDS = {200: 3.856, 100: 0.611}
K80_LABEL = "Colab K80, another machine"
STAGES = ("crop", "normalise", "forward", "flip_forward", "flip_back", "decode")
PRE_POST_STAGES = ("crop", "normalise", "flip_back", "decode")
CV2_HINT = "the reference pipeline needs OpenCV: pip install opencv-python-headless"


@dataclasses.dataclass
class StageTimes:
    """Seconds spent in each stage of one pipeline run (summed over its chunks)."""

    crop: float = 0.0
    normalise: float = 0.0
    forward: float = 0.0
    flip_forward: float = 0.0
    flip_back: float = 0.0
    decode: float = 0.0

    @property
    def total(self) -> float:
        return sum(dataclasses.astuple(self))

    def as_dict(self) -> dict[str, float]:
        """Stage -> seconds, in pipeline order, with display names (the input of ``viz.plot_timing``)."""
        return {name.replace("_", " "): value for name, value in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class BatchResult:
    """Everything measured for one mini-batch size.

    ``median`` is per stage over the warm runs; ``total_min``/``total_max`` their spread.
    ``achieved_flops`` is the counted network FLOPs over the forward + flip-forward time, and
    ``flops_fraction`` that over the machine's matmul FLOP/s. ``peak_memory_bytes`` is the peak
    resident memory (CUDA: allocated memory) above what the process held before the first run.
    ``differing_keypoints`` counts the joints whose position differs from the reference's by more
    than 0.01 px (of ``people * 17``). The reference fields are None when OpenCV is missing;
    ``k80_seconds`` when the seed has no figure for this batch size.
    """

    people: int
    cold: StageTimes
    warm: list[StageTimes]
    median: StageTimes
    total_min: float
    total_max: float
    ms_per_person: float
    people_per_second: float
    pre_post_fraction: float
    network_flops: float
    achieved_flops: float
    flops_fraction: float
    peak_memory_bytes: int
    reference_seconds: float | None
    speedup_vs_reference: float | None
    max_keypoint_difference: float | None
    differing_keypoints: int | None
    k80_seconds: float | None


@dataclasses.dataclass
class BenchResult:
    """A whole ``posekit bench`` run: the settings, the machine's yardsticks and one row per batch.

    ``memory_peaks`` maps a number of people to the peak memory (bytes) of processing them in
    chunks of ``max_batch``. ``notes`` holds what the reader must know (random weights, skipped rows).
    """

    depth: int
    input_size: tuple[int, int]
    device: str
    device_name: str
    backend: str
    flip: bool
    amp: bool
    channels_last: bool
    compile: bool
    threads: int
    repeats: int
    max_batch: int
    setup_seconds: float
    matmul_flops: float
    model_flops: float
    batches: list[BatchResult]
    memory_peaks: dict[int, int]
    notes: list[str]

    def to_dict(self) -> dict:
        """Plain JSON-serialisable data."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, whole or not at all; returns the path."""
        with atomic_write(path, "w") as file:
            json.dump(self.to_dict(), file, indent=2)
        return Path(path)


def matmul_flops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048) -> float:
    """The machine's dense throughput: FLOP/s of the fastest of several ``size x size`` matmuls.

    On CUDA an fp32 matmul is allowed TF32 exactly when cuDNN's convolutions are (torch's default
    lets convolutions, not matmuls, use it), so the network is measured against the same arithmetic.
    """
    device = torch.device(device)
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    best = math.inf
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        for run in range(8):
            start = _now(device)
            torch.mm(a, b)
            elapsed = _now(device) - start
            if run >= 2:  # the first calls pay for thread start-up and kernel selection
                best = min(best, elapsed)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * size**3 / best


def count_flops(model: torch.nn.Module, input_size: tuple[int, int] = (192, 256)) -> int:
    """FLOPs of one person's forward pass, counted by torch (a multiply-add counts as 2).

    Shape: ``input_size`` is (width, height) of the network input.
    """
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(model.parameters())
    example = torch.zeros(1, 3, input_size[1], input_size[0], device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    return counter.get_total_flops()


@dataclasses.dataclass
class PersonBatch:
    """Person crops to cut: the bundled COCO sample's people repeated to ``people``, grouped by image.

    Shape: images (list of (H, W, 3) uint8 RGB), image_index (N,), centers (N, 2), scales (N, 2).
    """

    images: list[np.ndarray]
    image_index: np.ndarray
    centers: np.ndarray
    scales: np.ndarray


def sample_people(people: int, aspect_ratio: float = 192 / 256) -> PersonBatch:
    """``people`` person boxes from the bundled COCO sample (GT boxes, repeated in turn)."""
    if people < 1:
        raise PosekitError(f"a batch must hold at least 1 person, got {people}")
    annotations = json.loads(COCO_SAMPLE_ANNOTATIONS.read_text())
    image_ids = [entry["id"] for entry in annotations["images"]]
    images = [load_image(COCO_SAMPLE_DIR / entry["file_name"]) for entry in annotations["images"]]
    persons = [a for a in annotations["annotations"] if a["category_id"] == 1 and not a["iscrowd"]]
    chosen = np.resize(np.arange(len(persons)), people)
    # Sorted by image, so that each chunk crops from few images with one call each.
    image_of = np.array([image_ids.index(persons[i]["image_id"]) for i in chosen])
    order = np.argsort(image_of, kind="stable")
    boxes = np.array([persons[i]["bbox"] for i in chosen[order]], dtype=np.float32)
    centers, scales = box_to_center_scale(boxes, aspect_ratio=aspect_ratio)
    return PersonBatch(images, image_of[order], centers, scales)


class _Stopwatch:
    """Accumulates wall time per stage; on CUDA it waits for queued kernels at each boundary."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times = StageTimes()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = _now(self.device)
        yield
        setattr(self.times, stage, getattr(self.times, stage) + _now(self.device) - start)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def posekit_keypoints(
    forward: Forward,
    batch: PersonBatch,
    input_size: tuple[int, int] = (192, 256),
    flip: bool = True,
    max_batch: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, StageTimes]:
    """posekit's pipeline on ``batch``, ``max_batch`` people at a time, timed per stage.

    Composes the library's functions: :func:`~posekit.crop.crop_batch` ->
    :meth:`~posekit.weights.PoseWeights.preprocess` of the default weights (BGR, ImageNet
    statistics) -> ``forward`` (and on the mirrored input) -> :func:`~posekit.heatmaps.flip_back`
    -> :func:`~posekit.heatmaps.decode` ("quarter").

    Shape: -> keypoints (N, 17, 3) x, y, score in image pixels, and the stage times.
    """
    device = torch.device(device)
    weights = get_weights(DEFAULT_WEIGHTS)
    pixels = [torch.from_numpy(image).permute(2, 0, 1).to(device) for image in batch.images]
    stopwatch = _Stopwatch(device)
    keypoints = []
    for start in range(0, len(batch.centers), max_batch):
        chunk = slice(start, start + max_batch)
        centers, scales, image_index = batch.centers[chunk], batch.scales[chunk], batch.image_index[chunk]
        with stopwatch("crop"):
            crops = torch.cat([
                crop_batch(pixels[i], centers[image_index == i], scales[image_index == i], input_size)
                for i in np.unique(image_index)
            ])
        with stopwatch("normalise"):
            inputs = weights.preprocess(crops)
        with stopwatch("forward"):
            heatmaps = forward(inputs)
        if flip:
            with stopwatch("flip_forward"):
                mirrored = forward(inputs.flip(3))
            with stopwatch("flip_back"):
                heatmaps = (heatmaps + flip_back(mirrored)) * 0.5
        with stopwatch("decode"):
            coords, scores = decode(heatmaps, centers, scales, method="quarter")
            keypoints.append(torch.cat([coords, scores[..., None]], dim=2).cpu())
    return torch.cat(keypoints).numpy(), stopwatch.times


def reference_keypoints(
    model: torch.nn.Module,
    batch: PersonBatch,
    input_size: tuple[int, int] = (192, 256),
    flip: bool = True,
    max_batch: int = 64,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The same inference written the way the paper's code does it, for comparison only.

    One person at a time: ``cv2.warpAffine`` on the BGR image, ``ToTensor`` + ``Normalize``; the
    eager fp32 network under ``no_grad``; the flip test as a ``numpy`` flip of the input, a second
    forward, a pair-by-pair swap and a one-pixel shift; the quarter-pixel refinement and the
    mapping back to the image one joint at a time. The Python loops are the point: this is the
    baseline that posekit's batched pipeline is measured against.

    Shape: -> keypoints (N, 17, 3) x, y, score in image pixels.
    """
    cv2 = _import_cv2()
    from torchvision.transforms.functional import normalize, to_tensor

    device = torch.device(device)
    weights = get_weights(DEFAULT_WEIGHTS)
    # The paper's loader reads images with cv2.imread, i.e. as BGR.
    images = [np.ascontiguousarray(image[:, :, ::-1]) for image in batch.images]
    keypoints = []
    with torch.no_grad():
        for start in range(0, len(batch.centers), max_batch):
            people = range(start, min(start + max_batch, len(batch.centers)))
            tensors = []
            for n in people:
                matrix = affine_matrix(batch.centers[n], batch.scales[n], output_size=input_size)
                crop = cv2.warpAffine(images[batch.image_index[n]], matrix, tuple(input_size), flags=cv2.INTER_LINEAR)
                tensors.append(normalize(to_tensor(crop), weights.mean, weights.std))
            inputs = torch.stack(tensors).to(device)
            heatmaps = model(inputs)
            if flip:
                mirrored_inputs = torch.from_numpy(np.flip(inputs.cpu().numpy(), 3).copy()).to(device)
                mirrored = model(mirrored_inputs).cpu().numpy()[:, :, :, ::-1]
                for left, right in FLIP_PAIRS:
                    mirrored[:, [left, right]] = mirrored[:, [right, left]]
                mirrored = mirrored.copy()
                mirrored[:, :, :, 1:] = mirrored[:, :, :, :-1].copy()
                heatmaps = (heatmaps + torch.from_numpy(mirrored).to(device)) * 0.5
            keypoints.append(_reference_decode(heatmaps.cpu().numpy(), batch.centers[people], batch.scales[people]))
    return np.concatenate(keypoints)


def _reference_decode(heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Argmax, quarter-pixel step towards the higher neighbour, back to the image: joint by joint."""
    people, joints, height, width = heatmaps.shape
    flat = heatmaps.reshape(people, joints, -1)
    peaks, maxima = flat.argmax(2), flat.max(2)
    coords = np.stack([peaks % width, peaks // width], axis=2).astype(np.float32)
    coords *= (maxima > 0)[..., None]
    keypoints = np.zeros((people, joints, 3), np.float32)
    for n in range(people):
        to_image = affine_matrix(centers[n], scales[n], output_size=(width, height), inverse=True)
        for k in range(joints):
            heatmap, (x, y) = heatmaps[n, k], coords[n, k]
            px, py = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            if 1 < px < width - 1 and 1 < py < height - 1:
                step = np.array([heatmap[py, px + 1] - heatmap[py, px - 1], heatmap[py + 1, px] - heatmap[py - 1, px]])
                x, y = coords[n, k] + np.sign(step) * 0.25
            keypoints[n, k, :2] = to_image @ np.array([x, y, 1.0])
            keypoints[n, k, 2] = maxima[n, k]
    return keypoints


def _import_cv2():
    try:
        import cv2
    except ImportError as error:
        raise ImportError(CV2_HINT) from error
    return cv2


@contextlib.contextmanager
def _peak_memory(device: torch.device, baseline: int, peaks: list[int]) -> Iterator[None]:
    """Appends to ``peaks`` the peak memory of the block above ``baseline`` bytes."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield
        peaks.append(torch.cuda.max_memory_allocated(device) - baseline)
        return
    resettable = _reset_peak_rss()
    yield
    peak = _proc_status("VmHWM") if resettable else _max_rss()
    peaks.append(max(peak - baseline, 0))


def _current_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return _proc_status("VmRSS") if Path("/proc/self/status").exists() else _max_rss()


def _reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise PosekitError(f"/proc/self/status has no {field} line")


def _max_rss() -> int:
    """The process's all-time peak RSS in bytes (macOS reports bytes, Linux kilobytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def run_benchmark(
    batches: Sequence[int] = (200, 100),
    depth: int = 50,
    input_size: tuple[int, int] = (192, 256),
    device: str = "cpu",
    flip: bool = True,
    amp: bool = False,
    channels_last: bool = True,
    compile: bool = False,
    threads: int | None = None,
    repeats: int = 3,
    max_batch: int = 64,
    backend: str = "auto",
    memory_people: Sequence[int] = (100, 200, 800),
) -> BenchResult:
    """Time posekit's top-down inference per stage on mini-batches of real person crops.

    For each size in ``batches``: one cold run, then ``repeats`` warm runs, each timed per stage
    and watched for peak memory; then the reference pipeline (:func:`reference_keypoints`, skipped
    with a note without OpenCV) once on the same people with the same model and threads, and the
    largest keypoint difference between the two. Sizes in ``memory_people`` not already run are
    run once more to show that peak memory follows ``max_batch``, not the number of people.

    Args:
        batches: people per mini-batch.
        depth: ResNet depth of the random-weight SimpleBaseline.
        input_size: network input (width, height).
        device: "cpu" or "cuda".
        flip: run the flip test (a second forward on mirrored crops).
        amp: autocast the network (bfloat16 on CPU, float16 on CUDA).
        channels_last: NHWC memory layout for the torch backend.
        compile: ``torch.compile`` the torch backend (the first run pays the compilation).
        threads: CPU threads for torch and onnxruntime (None: torch's current setting).
        repeats: warm runs per batch size.
        max_batch: people per network call; bounds the memory.
        backend: "torch", "onnxruntime", or "auto" (see :func:`posekit.export.inference_forward`).
        memory_people: numbers of people whose peak memory is reported.

    Returns:
        A :class:`BenchResult`.
    """
    counts = {"repeats": [repeats], "max_batch": [max_batch], "batches": list(batches),
              "memory_people": list(memory_people), "threads": [] if threads is None else [threads]}
    for name, values in counts.items():
        if any(value < 1 for value in values) or (name == "batches" and not values):
            raise PosekitError(f"{name} {values}: expected whole numbers >= 1")
    if any(side % 32 for side in input_size):
        raise PosekitError(f"input size {input_size} (width, height): both must be multiples of 32, as in 192x256")
    device = resolve_device(device)
    with _torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same random network every run, without touching the caller's RNG
        return _measure(batches, depth, input_size, device, flip, amp, channels_last, compile, repeats, max_batch,
                        backend, memory_people)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` CPU threads (None: unchanged), then restore the setting."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _measure(batches, depth, input_size, device, flip, amp, channels_last, compile, repeats, max_batch, backend,
             memory_people) -> BenchResult:
    """The body of :func:`run_benchmark`, on checked arguments."""
    model = pose_resnet(depth=depth).eval().to(device)
    model_flops = count_flops(model, input_size)
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if amp else torch.float32
    # A GPU needs a larger problem than a CPU to reach its peak.
    matmul_size = 8192 if device.type == "cuda" else 2048
    matmul = matmul_flops(device, amp_dtype, matmul_size)
    started = time.perf_counter()
    forward = inference_forward(model, backend, channels_last=channels_last, compile=compile, amp=amp, input_size=input_size)
    setup_seconds = time.perf_counter() - started
    notes = [f"random weights (pose_resnet_{depth}, seed 0): timing only, the keypoints are not predictions"]

    try:
        _import_cv2()
        with_reference = True
    except ImportError:
        with_reference = False
        notes.append(f"reference pipeline skipped: {CV2_HINT}")

    baseline = _current_memory(device)
    measured, peaks_by_people = [], {}
    for people in batches:
        batch = sample_people(people, aspect_ratio=input_size[0] / input_size[1])
        runs, peaks = [], []
        for _ in range(repeats + 1):
            with _peak_memory(device, baseline, peaks):
                keypoints, times = posekit_keypoints(forward, batch, input_size, flip, max_batch, device)
            runs.append(times)
        peaks_by_people[people] = max(peaks)
        reference_seconds = distances = None
        if with_reference:
            started = _now(device)
            reference = reference_keypoints(model, batch, input_size, flip, max_batch, device)
            reference_seconds = _now(device) - started
            distances = np.linalg.norm(reference[..., :2] - keypoints[..., :2], axis=-1)
        measured.append((people, runs, max(peaks), reference_seconds, distances))

    for people in sorted(set(memory_people) - set(peaks_by_people)):
        peaks = []
        with _peak_memory(device, baseline, peaks):
            posekit_keypoints(forward, sample_people(people, input_size[0] / input_size[1]), input_size, flip, max_batch, device)
        peaks_by_people[people] = peaks[0]

    # Measured again at the end and the better kept: load from elsewhere may have slowed one of them.
    matmul = max(matmul, matmul_flops(device, amp_dtype, matmul_size))
    results = [_batch_result(people, runs, flip, model_flops, matmul, *rest) for people, runs, *rest in measured]
    return BenchResult(
        depth=depth,
        input_size=tuple(input_size),
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        backend=resolve_backend(backend, device, amp, compile),
        flip=flip,
        amp=amp,
        channels_last=channels_last,
        compile=compile,
        threads=torch.get_num_threads(),
        repeats=repeats,
        max_batch=max_batch,
        setup_seconds=setup_seconds,
        matmul_flops=matmul,
        model_flops=model_flops,
        batches=results,
        memory_peaks={people: peaks_by_people[people] for people in sorted(memory_people)},
        notes=notes,
    )


def _batch_result(people, runs, flip, model_flops, matmul, peak, reference_seconds, distances) -> BatchResult:
    cold, warm = runs[0], runs[1:]
    median = StageTimes(*(statistics.median(getattr(run, stage) for run in warm) for stage in STAGES))
    totals = [run.total for run in warm]
    network_flops = model_flops * people * (2 if flip else 1)
    achieved = network_flops / (median.forward + median.flip_forward)
    pre_post = sum(getattr(median, stage) for stage in PRE_POST_STAGES)
    return BatchResult(
        people=people,
        cold=cold,
        warm=warm,
        median=median,
        total_min=min(totals),
        total_max=max(totals),
        ms_per_person=1000 * median.total / people,
        people_per_second=people / median.total,
        pre_post_fraction=pre_post / (median.forward + median.flip_forward),
        network_flops=network_flops,
        achieved_flops=achieved,
        flops_fraction=achieved / matmul,
        peak_memory_bytes=peak,
        reference_seconds=reference_seconds,
        speedup_vs_reference=None if reference_seconds is None else reference_seconds / median.total,
        max_keypoint_difference=None if distances is None else float(distances.max()),
        differing_keypoints=None if distances is None else int((distances > 0.01).sum()),
        k80_seconds=K80_SECONDS.get(people),
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def format_table(result: BenchResult) -> str:
    """The human-readable report printed by ``posekit bench``."""
    width, height = result.input_size
    precision = ("bf16" if result.device == "cpu" else "fp16") + " autocast" if result.amp else "fp32"
    header = [
        f"posekit bench: pose_resnet_{result.depth} {height}x{width}, {result.notes[0]}",
        f"device {result.device} ({result.device_name}), {result.threads} threads, backend {result.backend}, "
        f"{precision}, flip test {'on' if result.flip else 'off'}, max_batch {result.max_batch}, "
        f"setup {result.setup_seconds:.1f} s",
        f"machine: {result.matmul_flops / 1e9:.0f} GFLOP/s dense matmul ({'fp32' if not result.amp else precision}); "
        f"network: {result.model_flops / 1e9:.2f} GFLOP per person per forward (counted)",
        "",
    ]
    rows: list[tuple[str, list[str]]] = [("people per batch", [str(b.people) for b in result.batches])]
    for stage, label in zip(STAGES, ("crop", "normalise", "forward", "flip forward", "flip back", "decode")):
        rows.append((f"  {label} (s)", [f"{getattr(b.median, stage):.3f}" for b in result.batches]))
    rows += [
        ("total, warm median (s)", [f"{b.median.total:.3f}" for b in result.batches]),
        (f"  spread over {result.repeats} runs (s)", [f"{b.total_min:.3f}-{b.total_max:.3f}" for b in result.batches]),
        ("  first (cold) run (s)", [f"{b.cold.total:.3f}" for b in result.batches]),
        ("ms per person", [f"{b.ms_per_person:.1f}" for b in result.batches]),
        ("people per second", [f"{b.people_per_second:.1f}" for b in result.batches]),
        ("pre/post-processing / forward", [f"{100 * b.pre_post_fraction:.1f}%" for b in result.batches]),
        ("network GFLOP/s (of matmul)", [f"{b.achieved_flops / 1e9:.0f} ({100 * b.flops_fraction:.0f}%)" for b in result.batches]),
        ("peak memory (MB)", [f"{b.peak_memory_bytes / 2**20:.0f}" for b in result.batches]),
        ("reference pipeline (s)", [_optional(b.reference_seconds, "{:.3f}") for b in result.batches]),
        ("posekit speed-up vs reference", [_optional(b.speedup_vs_reference, "{:.2f}x") for b in result.batches]),
        ("max keypoint difference (px)", [_optional(b.max_keypoint_difference, "{:.2g}") for b in result.batches]),
        ("  joints > 0.01 px apart", [_optional(b.differing_keypoints, "{}") + f" of {17 * b.people}" for b in result.batches]),
        (f"K80 seed figure ({K80_LABEL}) (s)", [_optional(b.k80_seconds, "{:.3f}") for b in result.batches]),
    ]
    label_width = max(len(label) for label, _ in rows)
    column_width = max(12, *(len(cell) for _, cells in rows for cell in cells))
    lines = header + [f"{label:<{label_width}}" + "".join(f"{cell:>{column_width + 2}}" for cell in cells) for label, cells in rows]
    memory = ", ".join(f"{people} people {peak / 2**20:.0f} MB" for people, peak in result.memory_peaks.items())
    lines += ["", f"peak memory in chunks of {result.max_batch} ({'CUDA allocated' if result.device.startswith('cuda') else 'RSS'} above start): {memory}"]
    if result.amp:
        lines.append("note: posekit ran in reduced precision (--amp), the reference in fp32: keypoints differ by design")
    elif any(b.differing_keypoints for b in result.batches):
        lines.append(
            "note: a random network can give a joint two far-apart peaks of almost equal height (seen: 0.007% "
            "apart); crops that differ from OpenCV's by one grey level in a few pixels can swap such a pair"
        )
    lines.append(
        "reference pipeline: per-person cv2.warpAffine + ToTensor/Normalize, eager NCHW fp32 network, numpy flip "
        "+ second forward, per-joint decode loops; same model, threads and chunks; one run per batch"
    )
    lines += [f"note: {note}" for note in result.notes[1:]]
    return "\n".join(lines)


def _optional(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)
