"""Fast inference forwards for a pose network: BatchNorm folding, reduced precision, ONNX Runtime.

Every forward built here keeps the network's contract, ``(N, 3, H, W) float32 -> (N, K, H/4, W/4)``
float32, so the top-down core (:mod:`posekit.core.topdown`) does not care which one runs. The ONNX
export happens once per weights and input size: kept in memory for this process and on disk in
posekit's cache (``<cache>/onnx/<key>.onnx``) for the next ones. The cache is bounded: beyond
``$POSEKIT_ONNX_CACHE_MB`` (default 2048) the exports used longest ago are deleted.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from posekit.core.spec import DEFAULT_INPUT_SIZE
from posekit.defaults import BACKENDS, PRECISIONS
from posekit.errors import PosekitError
from posekit.io import hub
from posekit.io.files import atomic_write

Forward = Callable[[torch.Tensor], torch.Tensor]

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)
ONNX_OPSET = 17
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def fold_batchnorm(model: nn.Module) -> torch.fx.GraphModule:
    """A copy of ``model`` with every BatchNorm folded into the conv or deconv that feeds it.

    In eval mode ``bn(conv(x))`` is an affine map of ``conv(x)``, so it can be baked into the conv's
    weight and bias; the folded network computes the same function (up to float rounding) with one
    memory pass fewer per layer. The pairing follows the traced data flow, not module order, and a
    BatchNorm is only folded when the conv's output goes nowhere else. ``model`` is left untouched.

    Shape: same forward contract as ``model``.
    """
    traced = torch.fx.symbolic_trace(copy.deepcopy(model).eval())
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        producer = node.args[0]
        if (
            not isinstance(producer, torch.fx.Node)
            or producer.op != "call_module"
            or not isinstance(modules[producer.target], _CONVS)
            or len(producer.users) != 1
        ):
            continue
        conv, bn = modules[producer.target], modules[node.target]
        fused = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
        traced.add_submodule(producer.target, fused)
        node.replace_all_uses_with(producer)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    opset: int = ONNX_OPSET,
) -> Path:
    """Write ``model`` as an ONNX graph with a dynamic batch dimension; returns the path.

    The file is written whole or not at all (:func:`posekit.io.files.atomic_write`).

    Shape: graph input ``images`` (N, 3, H, W) with ``input_size = (W, H)``; output ``heatmaps`` (N, K, H/4, W/4).
    """
    data = _onnx_bytes(model, input_size, opset)
    with atomic_write(path) as file:
        file.write(data)
    return Path(path)


def _onnx_bytes(model: nn.Module, input_size: tuple[int, int], opset: int) -> bytes:
    width, height = input_size
    parameter = next(model.parameters())
    example = torch.zeros(1, 3, height, width, dtype=parameter.dtype, device=parameter.device)
    buffer = io.BytesIO()
    # The torch.export-based exporter needs the onnxscript package; the TorchScript one only torch.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            copy.deepcopy(model).eval(),  # the caller's model keeps its mode
            (example,),
            buffer,
            input_names=["images"],
            output_names=["heatmaps"],
            dynamic_axes={"images": {0: "batch"}, "heatmaps": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return buffer.getvalue()


class OnnxRuntimeForward:
    """An onnxruntime session behind the pose network's torch contract.

    Args:
        onnx_model: path to an ``.onnx`` file or its bytes (as written by :func:`export_onnx`).
            The session uses torch's number of threads (:func:`onnxruntime_threads`), so both runtimes
            compete on equal terms (``posekit bench --threads`` sets it for both).

    Shape: ``__call__`` takes images (N, 3, H, W) float32 (any device; computed on CPU) and returns
    heatmaps (N, K, H/4, W/4) float32 on the images' device.
    """

    def __init__(self, onnx_model: str | os.PathLike | bytes) -> None:
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = onnxruntime_threads()
        # Threads spin between the operators of a run (its latency), then sleep: between runs the cores go
        # to the work beside the network (decoding, encoding, the detector: posekit.io.live), not to spinning.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        (heatmaps,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(heatmaps).to(images.device)


# (export key, threads) -> session: one export and one session per weights in a process.
_SESSIONS: dict[tuple[str, int], OnnxRuntimeForward] = {}
# The threads torch had when torch_on_one_thread() began, while it holds: ONNX Runtime's to keep.
_THREADS_BEFORE_ONE: int | None = None


def onnxruntime_threads() -> int:
    """The threads an ONNX Runtime session is built with: torch's number of threads, the one it had
    before :func:`torch_on_one_thread` while that holds."""
    return _THREADS_BEFORE_ONE or torch.get_num_threads()


@contextlib.contextmanager
def torch_on_one_thread() -> Iterator[None]:
    """Run torch's own operations on one thread meanwhile; ONNX Runtime keeps its threads.

    Where the networks run in ONNX Runtime, torch has only small work per frame left (crops,
    decoding, the detector's resizing and post-processing). Split over threads on a CPU that also
    decodes and encodes video, each such operation waits for a core another thread holds: on 2
    cores, one thread made the real-time tracker 1.2-1.4x faster (docs/realtime.md).
    """
    global _THREADS_BEFORE_ONE
    before, outer = torch.get_num_threads(), _THREADS_BEFORE_ONE
    _THREADS_BEFORE_ONE = outer or before
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        _THREADS_BEFORE_ONE = outer


def export_key(model: nn.Module, input_size: tuple[int, int], opset: int = ONNX_OPSET) -> str:
    """What an ONNX export depends on, hashed: the weights' bytes, the architecture, the input
    size, the opset and the torch version that exports. 24 hex digits."""
    digest = hashlib.sha256(f"{model!r}|{tuple(input_size)}|{opset}|{torch.__version__}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:24]


def cached_onnx_forward(model: nn.Module, input_size: tuple[int, int] = DEFAULT_INPUT_SIZE) -> OnnxRuntimeForward:
    """``model`` in ONNX Runtime, exported once per weights and input size.

    The export is looked up in this process, then in ``<cache>/onnx/<key>.onnx`` (key:
    :func:`export_key`); only when neither has it is the model exported and the file written
    (atomically, so a concurrent process never reads half of it). A cached file that
    onnxruntime cannot open is exported again and replaced; a cache that cannot be written
    (read-only) only costs the next process the export.

    Shape: the returned callable maps (N, 3, H, W) -> (N, K, H/4, W/4) with ``input_size = (W, H)``.
    """
    _import_onnxruntime()  # fail before the export, with the install hint
    key = export_key(model, input_size)
    session_key = (key, onnxruntime_threads())
    if session_key not in _SESSIONS:
        path = hub.cache_dir() / "onnx" / f"{key}.onnx"
        forward = _open_session(path) if path.is_file() else None
        if forward is None:
            limit = onnx_cache_limit()  # a bad setting fails before the export, not after
            data = _onnx_bytes(model, input_size, ONNX_OPSET)
            try:
                with atomic_write(path) as file:
                    file.write(data)
                prune_onnx_cache(path.parent, limit, keep=path)
            except (OSError, PosekitError):  # atomic_write reports an unwritable folder as PosekitError
                pass  # a read-only cache: this process still has the export in memory
            forward = OnnxRuntimeForward(data)
        else:
            with contextlib.suppress(OSError):
                os.utime(path)  # used now: pruning removes the exports used longest ago first
        _SESSIONS[session_key] = forward
    return _SESSIONS[session_key]


# The ONNX cache's size limit in MB, unless POSEKIT_ONNX_CACHE_MB says otherwise: a dozen ResNet-50 exports.
ONNX_CACHE_MB = 2048


def onnx_cache_limit() -> int:
    """The ONNX cache's size limit in bytes: ``$POSEKIT_ONNX_CACHE_MB`` MB, else :data:`ONNX_CACHE_MB`.

    Raises:
        PosekitError: the variable is not a whole number of MB, 0 or more.
    """
    text = os.environ.get("POSEKIT_ONNX_CACHE_MB", str(ONNX_CACHE_MB))
    if not text.strip().isdigit():
        raise PosekitError(f"POSEKIT_ONNX_CACHE_MB={text!r}: expected a whole number of MB, 0 or more "
                           f"(default {ONNX_CACHE_MB})")
    return int(text) * 2**20


def onnx_cache_usage(folder: Path | None = None) -> tuple[int, int]:
    """Bytes and number of the ONNX exports in ``folder`` (default ``<cache>/onnx``)."""
    sizes = [size for _, size, _ in _exports(folder or hub.cache_dir() / "onnx")]
    return sum(sizes), len(sizes)


def prune_onnx_cache(folder: Path, limit: int, keep: Path) -> list[Path]:
    """Delete the exports in ``folder`` used longest ago (oldest modification time: a use touches it) until
    the rest fit in ``limit`` bytes; ``keep``, the export just written, always stays. Returns the deleted.

    Untrained networks get new random weights, hence a new export, each run: without this the cache
    grows by an export (~136 MB for ResNet-50 at 256x192) per run.
    """
    exports = sorted(_exports(folder), key=lambda item: item[2])
    total, deleted = sum(size for _, size, _ in exports), []
    for path, size, _ in exports:
        if total <= limit:
            break
        if path == keep:
            continue
        with contextlib.suppress(FileNotFoundError):  # another process pruned it already
            path.unlink()
        total -= size
        deleted.append(path)
    return deleted


def _exports(folder: Path) -> list[tuple[Path, int, float]]:
    """(path, bytes, modification time) of each ``*.onnx`` in ``folder``; none when it does not exist."""
    found = []
    for path in folder.glob("*.onnx"):
        with contextlib.suppress(FileNotFoundError):
            info = path.stat()
            found.append((path, info.st_size, info.st_mtime))
    return found


def _open_session(path: Path) -> OnnxRuntimeForward | None:
    """A session on a cached export, or None when the file is unreadable or not a valid model."""
    try:
        return OnnxRuntimeForward(path)
    except Exception:  # onnxruntime reports a damaged file with its own exception types
        return None


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise PosekitError(
            "the onnxruntime backend needs the onnxruntime package: pip install onnxruntime"
        ) from error
    return onnxruntime


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """The precision ``"auto"`` stands for: fp16 on CUDA (tensor cores), fp32 elsewhere; other
    names are checked and returned (``"int8"``: the CPU only)."""
    if precision not in PRECISIONS:
        raise PosekitError(f"precision {precision!r} is unknown; expected one of {', '.join(PRECISIONS)}")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise PosekitError(f"precision int8 runs on the CPU only (asked on {device}); use fp16 on a GPU")
    if precision != "auto":
        return precision
    return "fp16" if torch.device(device).type == "cuda" else "fp32"


def resolve_backend(
    backend: str, device: torch.device | str = "cpu", precision: str = "fp32", compile: bool = False
) -> str:
    """The backend ``"auto"`` stands for: onnxruntime for fp32 on the CPU when it is installed
    (the fastest forward measured there) and for int8, torch otherwise; other names are checked and returned."""
    if backend not in BACKENDS:
        raise PosekitError(f"backend {backend!r} is unknown; expected one of {', '.join(BACKENDS)}")
    if precision == "int8":
        if backend == "torch":
            raise PosekitError("precision int8 runs in onnxruntime: use backend auto or onnxruntime")
        return "onnxruntime"
    if backend != "auto":
        return backend
    cpu_fp32 = torch.device(device).type == "cpu" and resolve_precision(precision, device) == "fp32" and not compile
    return "onnxruntime" if cpu_fp32 and _has_onnxruntime() else "torch"


def inference_forward(
    model: nn.Module,
    backend: str = "auto",
    precision: str = "auto",
    channels_last: bool = True,
    compile: bool = False,
    input_size: tuple[int, int] | None = None,
    calibration_images: Sequence | None = None,
) -> Forward:
    """The network as a fast inference-only callable on the model's device.

    ``"torch"``: BatchNorm folded (:func:`fold_batchnorm`), ``inference_mode``, optionally NHWC
    (``channels_last``), ``torch.compile`` (with weight freezing) and autocast to ``precision``
    ``"fp16"``/``"bf16"`` (the output is float32 either way). ``"onnxruntime"``: see
    :func:`cached_onnx_forward` (CPU, fp32; ``channels_last``/``compile`` do not apply); with
    ``precision="int8"`` the statically quantized network of :func:`posekit.models.int8.cached_int8_forward`,
    calibrated on ``calibration_images`` (None: the bundled COCO people).
    ``"auto"``: see :func:`resolve_backend` and :func:`resolve_precision`. ``model`` itself is
    not modified.

    Shape: (N, 3, H, W) float32 -> (N, K, H/4, W/4) float32, ``input_size = (W, H)`` (default:
    the model's ``input_spec``, else 192x256).
    """
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    backend = resolve_backend(backend, device, precision, compile)
    spec = getattr(model, "input_spec", None)
    input_size = tuple(input_size or (spec.input_size if spec is not None else DEFAULT_INPUT_SIZE))
    if precision == "int8":
        from posekit.models.int8 import cached_int8_forward

        return cached_int8_forward(model, input_size, calibration_images)
    if backend == "onnxruntime":
        if precision != "fp32" or compile or device.type != "cpu":
            raise PosekitError(
                f"the onnxruntime backend runs fp32 on the CPU only (asked: {precision}"
                f"{', compile' if compile else ''} on {device}): use backend torch for that"
            )
        return cached_onnx_forward(model, input_size)
    network = fold_batchnorm(model)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    if compile:
        network = torch.compile(network, options={"freezing": True})
    layout = torch.channels_last if channels_last else torch.contiguous_format
    autocast_dtype = _AUTOCAST_DTYPES.get(precision)

    def forward(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, autocast_dtype or torch.float32,
                                                    enabled=autocast_dtype is not None):
            return network(images.contiguous(memory_format=layout)).float()

    return forward


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None
