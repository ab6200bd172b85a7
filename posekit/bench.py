"""``posekit bench``: where the time of top-down inference goes, measured on this machine.

Mini-batches of people (200 and 100 by default) go through the library's own top-down core
(:func:`posekit.core.topdown.keypoints`, what :class:`~posekit.estimator.PoseEstimator` and
``posekit eval`` run) on one bundled image holding all of them, timed per stage through its
stopwatch hook. Next to every number the benchmark puts what it can be judged against, measured
in the same run: the machine's dense throughput (a large matmul) against the network's achieved
FLOP/s (FLOPs counted on a real forward). A reference row, a Colab K80 GPU's seconds for the same
two batch sizes, is printed below them and labelled as another machine's. The comparison with a
pipeline written the way the paper's code works lives in ``benchmarks/reference.py``.

The network has random weights: timing does not depend on them, and the keypoints are never
presented as predictions.

Kept as one module (about 480 lines): the measurements, the table that prints them and the JSON
that saves them share one result type and are read together.
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
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from posekit.core import topdown
from posekit.core.coco17 import PERSON_CATEGORY_ID
from posekit.core.device import resolve_device
from posekit.core.spec import DEFAULT_INPUT_SIZE, InputSpec
from posekit.data import COCO_SAMPLE_ANNOTATIONS, COCO_SAMPLE_DIR
from posekit.errors import PosekitError
from posekit.io.files import atomic_write
from posekit.io.images import load_image
from posekit.models.pose_resnet import pose_resnet
from posekit.models.runtime import inference_forward, resolve_backend, resolve_precision

# The reference row: seconds per mini-batch of 200 and 100 person crops on a Colab K80 GPU, not measured here.
K80_SECONDS = {200: 3.856, 100: 0.611}
K80_LABEL = "Colab K80 GPU, another machine"
STAGES = topdown.STAGES
PRE_POST_STAGES = ("crop", "normalise", "flip_back", "decode")


@dataclasses.dataclass
class StageTimes:
    """Seconds spent in each stage of one pipeline run (summed over its chunks)."""

    crop: float = 0.0
    normalise: float = 0.0
    forward: float = 0.0  # with the flip test: the crops and their mirrors in one call
    flip_back: float = 0.0
    decode: float = 0.0

    @property
    def total(self) -> float:
        return sum(dataclasses.astuple(self))

    def as_dict(self) -> dict[str, float]:
        """Stage -> seconds, in pipeline order, with display names (the input of ``viz.plot_timing``)."""
        return {name.replace("_", " "): value for name, value in dataclasses.asdict(self).items()}

    @classmethod
    def median(cls, runs: Sequence[StageTimes]) -> StageTimes:
        """Stage by stage, the median over ``runs``."""
        return cls(*(statistics.median(getattr(run, stage) for run in runs) for stage in STAGES))

    @classmethod
    def from_timer(cls, timer: topdown.StageTimer) -> StageTimes:
        """What a :class:`~posekit.core.topdown.StageTimer` summed, 0 for stages that did not run."""
        return cls(**{stage: timer.seconds.get(stage, 0.0) for stage in STAGES})


@dataclasses.dataclass
class BatchResult:
    """Everything measured for one mini-batch size.

    ``median`` is per stage over the warm runs; ``total_min``/``total_max`` their spread.
    ``achieved_flops`` is the counted network FLOPs over the forward time, and
    ``flops_fraction`` that over the machine's matmul FLOP/s. ``peak_memory_bytes`` is the peak
    resident memory (CUDA: allocated memory) above what the process held before the first run.
    ``k80_seconds`` is None when the K80 reference row has no figure for this batch size.
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
    precision: str
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
    now = topdown.StageTimer(device).now
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    best = math.inf
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        for run in range(8):
            start = now()
            torch.mm(a, b)
            elapsed = now() - start
            if run >= 2:  # the first calls pay for thread start-up and kernel selection
                best = min(best, elapsed)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * size**3 / best


def count_flops(model: torch.nn.Module, input_size: tuple[int, int] = DEFAULT_INPUT_SIZE) -> int:
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
    """People to estimate: ``boxes`` in one ``image`` (H, W, 3) uint8 RGB, shape (N, 4) x, y, w, h."""

    image: np.ndarray
    boxes: np.ndarray


def sample_people(people: int) -> PersonBatch:
    """``people`` person boxes in one image: the bundled COCO image with the most annotated
    people and their boxes, repeated in turn (a crowd, as a user's photo of many people)."""
    if people < 1:
        raise PosekitError(f"a batch must hold at least 1 person, got {people}")
    annotations = json.loads(COCO_SAMPLE_ANNOTATIONS.read_text())
    persons = [a for a in annotations["annotations"] if a["category_id"] == PERSON_CATEGORY_ID and not a["iscrowd"]]
    image_ids = [a["image_id"] for a in persons]
    busiest = max(sorted(set(image_ids)), key=image_ids.count)  # ties: the lowest id
    boxes = np.array([a["bbox"] for a in persons if a["image_id"] == busiest], dtype=np.float64)
    file_name = next(entry["file_name"] for entry in annotations["images"] if entry["id"] == busiest)
    return PersonBatch(load_image(COCO_SAMPLE_DIR / file_name), np.resize(boxes, (people, 4)))


def time_stages(
    forward: topdown.Forward,
    spec: InputSpec,
    batch: PersonBatch,
    flip: bool = True,
    max_batch: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, StageTimes]:
    """The top-down core (:func:`posekit.core.topdown.keypoints`) on ``batch``, timed per stage.

    Shape: -> keypoints (N, K, 3) x, y, score in image pixels, and the stage times.
    """
    timer = topdown.StageTimer(device)
    keypoints, _, _ = topdown.keypoints(forward, spec, batch.image, batch.boxes, flip, "quarter", max_batch, device, timer)
    return keypoints, StageTimes.from_timer(timer)


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
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    device: str = "auto",
    flip: bool = True,
    precision: str = "auto",
    channels_last: bool = True,
    compile: bool = False,
    threads: int | None = None,
    repeats: int = 3,
    max_batch: int = 64,
    backend: str = "auto",
    memory_people: Sequence[int] = (),
    progress: bool = False,
) -> BenchResult:
    """Time posekit's top-down core per stage on mini-batches of real person boxes.

    For each size in ``batches``: one cold run, then ``repeats`` warm runs of
    :func:`time_stages`, each timed per stage and watched for peak memory. Sizes in
    ``memory_people`` not already run are run once more to show that peak memory follows
    ``max_batch``, not the number of people (none by default: those runs take longer than the timing).

    Args:
        batches: people per mini-batch (all in one image).
        depth: ResNet depth of the random-weight SimpleBaseline.
        input_size: network input (width, height).
        device: "auto" (a GPU if there is one), "cpu", "cuda", "cuda:1" ...
        flip: run the flip test (the mirrored crops in the same forward call).
        precision: "fp32", "fp16", "bf16" (torch autocast) or "auto" (fp16 on CUDA, else fp32).
        channels_last: NHWC memory layout for the torch backend.
        compile: ``torch.compile`` the torch backend (the first run pays the compilation).
        threads: CPU threads for torch and onnxruntime (None: torch's current setting).
        repeats: warm runs per batch size.
        max_batch: people per network call; bounds the memory.
        backend: "torch", "onnxruntime", or "auto" (see :func:`posekit.models.runtime.inference_forward`).
        memory_people: numbers of people whose peak memory is reported.
        progress: say each stage on stderr as it starts (the command line does).

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
    precision = resolve_precision(precision, device)
    with _torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same random network every run, without touching the caller's RNG
        return _measure(batches, depth, tuple(input_size), device, flip, precision, channels_last, compile, repeats,
                        max_batch, backend, memory_people, _say if progress else lambda message: None)


def _say(message: str) -> None:
    print(f"posekit bench: {message}", file=sys.stderr, flush=True)


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


def _measure(batches, depth, input_size, device, flip, precision, channels_last, compile, repeats, max_batch, backend,
             memory_people, say: Callable[[str], None]) -> BenchResult:
    """The body of :func:`run_benchmark`, on checked arguments; ``say`` reports progress."""
    say(f"building pose_resnet_{depth} and measuring the machine's matmul FLOP/s")
    model = pose_resnet(depth=depth).eval().to(device)
    model.input_spec = model.input_spec.replace(input_size=input_size)
    model_flops = count_flops(model, input_size)
    matmul_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    # A GPU needs a larger problem than a CPU to reach its peak.
    matmul_size = 8192 if device.type == "cuda" else 2048
    matmul = matmul_flops(device, matmul_dtype, matmul_size)
    say(f"preparing the {backend} forward (an ONNX export or a compilation can take a minute)")
    started = time.perf_counter()
    forward = inference_forward(model, backend, precision, channels_last=channels_last, compile=compile)
    setup_seconds = time.perf_counter() - started
    notes = [f"random weights (pose_resnet_{depth}, seed 0): timing only, the keypoints are not predictions"]

    baseline = _current_memory(device)
    measured, peaks_by_people = [], {}
    for people in batches:
        batch = sample_people(people)
        runs, peaks = [], []
        for run in range(repeats + 1):
            say(f"{people} people: {'cold run' if run == 0 else f'warm run {run} of {repeats}'}")
            with _peak_memory(device, baseline, peaks):
                _, times = time_stages(forward, model.input_spec, batch, flip, max_batch, device)
            runs.append(times)
        peaks_by_people[people] = max(peaks)
        measured.append((people, runs, max(peaks)))

    for people in sorted(set(memory_people) - set(peaks_by_people)):
        say(f"peak memory of {people} people")
        peaks = []
        with _peak_memory(device, baseline, peaks):
            time_stages(forward, model.input_spec, sample_people(people), flip, max_batch, device)
        peaks_by_people[people] = peaks[0]

    # Measured again at the end and the better kept: load from elsewhere may have slowed one of them.
    matmul = max(matmul, matmul_flops(device, matmul_dtype, matmul_size))
    results = [_batch_result(people, runs, flip, model_flops, matmul, peak) for people, runs, peak in measured]
    return BenchResult(
        depth=depth,
        input_size=tuple(input_size),
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        backend=resolve_backend(backend, device, precision, compile),
        flip=flip,
        precision=precision,
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


def _batch_result(people, runs, flip, model_flops, matmul, peak) -> BatchResult:
    cold, warm = runs[0], runs[1:]
    median = StageTimes.median(warm)
    totals = [run.total for run in warm]
    network_flops = model_flops * people * (2 if flip else 1)
    achieved = network_flops / median.forward
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
        pre_post_fraction=pre_post / median.forward,
        network_flops=network_flops,
        achieved_flops=achieved,
        flops_fraction=achieved / matmul,
        peak_memory_bytes=peak,
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
    header = [
        f"posekit bench: pose_resnet_{result.depth} {height}x{width}, {result.notes[0]}",
        f"device {result.device} ({result.device_name}), {result.threads} threads, backend {result.backend}, "
        f"{result.precision}, flip test {'on' if result.flip else 'off'}, max_batch {result.max_batch}, "
        f"setup {result.setup_seconds:.1f} s",
        f"machine: {result.matmul_flops / 1e9:.0f} GFLOP/s dense matmul ({result.precision}); "
        f"network: {result.model_flops / 1e9:.2f} GFLOP per person per forward (counted)",
        "",
    ]
    rows: list[tuple[str, list[str]]] = [("people per batch (one image)", [str(b.people) for b in result.batches])]
    for stage in STAGES:
        label = "forward (+ mirrored crops)" if stage == "forward" and result.flip else stage.replace("_", " ")
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
        (f"reference row: {K80_LABEL} (s)", [_optional(b.k80_seconds, "{:.3f}") for b in result.batches]),
        ("  reference ms per person", [_optional(b.k80_seconds and 1000 * b.k80_seconds / b.people, "{:.1f}")
                                       for b in result.batches]),
    ]
    label_width = max(len(label) for label, _ in rows)
    column_width = max(12, *(len(cell) for _, cells in rows for cell in cells))
    lines = header + [f"{label:<{label_width}}" + "".join(f"{cell:>{column_width + 2}}" for cell in cells) for label, cells in rows]
    lines.append("")
    if result.memory_peaks:
        memory = ", ".join(f"{people} people {peak / 2**20:.0f} MB" for people, peak in result.memory_peaks.items())
        lines.append(f"peak memory in chunks of {result.max_batch} "
                     f"({'CUDA allocated' if result.device.startswith('cuda') else 'RSS'} above start): {memory}")
    lines.append("the stages are those of posekit.core.topdown, the code PoseEstimator and posekit eval run; "
                 "the paper-style reference pipeline: python benchmarks/reference.py")
    lines += [f"note: {note}" for note in result.notes[1:]]
    return "\n".join(lines)


def _optional(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)
