"""Pretrained SimpleBaseline checkpoints: registry, download, loading and input preprocessing.

Two families are registered, all COCO-17 and PyTorch-style ResNets:

* the authors' release (microsoft/human-pose-estimation.pytorch, Google Drive), trained on
  **BGR** crops normalised with the ImageNet mean/std listed in RGB order — i.e. torchvision's
  ``Normalize`` applied to a BGR tensor. Their keys are this package's keys.
* mmpose's re-trained models (download.openmmlab.com), trained on **RGB** crops; keys carry
  ``backbone.`` / ``keypoint_head.`` prefixes and are converted on load.

``reported_ap`` holds what each release reports on COCO val2017 with the person detector of
human AP 56.4 and flip test (the official README table; mmpose's resnet_coco.md model zoo).

How a checkpoint is fed (``model.input_spec``) is decided, first match wins, by: the caller's
``channel_order=``; a registry entry, by name or by release file name; the input spec posekit
saves with its own checkpoints (:func:`save_checkpoint`); the key layout: mmpose keys
(``backbone.`` + ``keypoint_head.``/``head.``) were trained on RGB, the official layout, as a
bare state_dict (the releases) or in the official trainer's container (with ``perf``), on BGR.
The order **cannot be known** for the official layout in any other container (another
trainer's ``{"model": ...}``, ``{"state_dict": ...}`` without ``perf``, EMA weights): BGR is
assumed and one warning says how to state it.

Loading is safe by default: every file goes through ``torch.load(weights_only=True)`` (tensors,
containers, numpy scalars and arrays only), after a check of the sizes it declares (a small file
declaring huge storages is refused before anything is allocated). Full unpickling, which can
run arbitrary code, happens only for a file whose full sha256 matched a registry entry's: trust
comes from a verified hash, never from a name, a URL or a place in the cache.
"""
from __future__ import annotations

import dataclasses
import os
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np
import torch
from torch import nn

from posekit.core.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec, joints_spec
from posekit.defaults import DEFAULT, DEFAULT_WEIGHTS, FALLBACK_WEIGHTS
from posekit.errors import CheckpointError, DownloadError, Hint
from posekit.io import hub
from posekit.io.files import atomic_write
from posekit.models.pose_resnet import RESNET_STAGES, PoseResNet, pose_resnet

OFFICIAL_GDRIVE_FOLDER = "13_wJ6nC7my1KKouMkQMqyr9r1ZnLnukP"
MMPOSE_URL = "https://download.openmmlab.com/mmpose/top_down/resnet/{}"
# Keys of the containers training scripts wrap a state_dict in, most preferred first.
CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema")
# mmpose's top-down model = backbone + head (0.x calls it keypoint_head, 1.x head).
MMPOSE_PREFIXES = ("backbone.", "keypoint_head.", "head.")
# The official trainer saves {"epoch", "model" (its name), "state_dict", "perf", "optimizer"}.
OFFICIAL_TRAINER_KEYS = ("state_dict", "perf")
# Where posekit's own checkpoints keep their InputSpec (see save_checkpoint).
SPEC_KEY = "input_spec"
# Storage a checkpoint may declare: 16x the fp32 weights of the largest architecture
# (pose_resnet_152, 68.6 M parameters) leaves room for optimizer state and EMA copies.
MAX_DECLARED_BYTES = 16 * 4 * 68_600_000
# The pickle that describes the tensors: tens of kB for a pose network, optimizer state included.
MAX_PICKLE_BYTES = 64 * 2**20
MAX_LISTED_KEYS = 5
_BLOCK_KEY = re.compile(r"layer(\d)\.(\d+)\.")  # layer<stage>.<block index>.


@dataclasses.dataclass(frozen=True)
class PoseWeights:
    """One downloadable checkpoint and everything needed to feed it correctly.

    ``input_size`` and sizes derived from it are (width, height) as in the official code.
    ``mean``/``std`` are in ImageNet RGB order and applied to channels in ``channel_order``
    (see :func:`~posekit.core.spec.preprocess_crops`). Exactly one of ``url`` and ``gdrive_path``
    (inside ``gdrive_folder``) says where to get the file. ``sha256`` may be a prefix of the
    digest: it then checks downloads for corruption, but only a full digest makes the file
    trusted for full unpickling.
    """

    name: str
    depth: int
    input_size: tuple[int, int]
    channel_order: str
    reported_ap: dict[str, float]
    source: str
    filename: str
    key_format: str
    url: str | None = None
    gdrive_folder: str | None = None
    gdrive_path: str | None = None
    sha256: str | None = None
    style: str = "pytorch"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def spec(self) -> InputSpec:
        """How to feed these weights (COCO-17 joints): input size, channel order, mean/std."""
        return InputSpec(self.input_size, self.channel_order, self.mean, self.std)


def _size_name(input_size: tuple[int, int]) -> str:
    return f"{input_size[1]}x{input_size[0]}"  # height x width, as the releases name them


def _official(depth: int, input_size: tuple[int, int], ap: tuple[float, ...]) -> PoseWeights:
    stem = f"pose_resnet_{depth}_{_size_name(input_size)}"
    return PoseWeights(
        name=stem, depth=depth, input_size=input_size, channel_order="bgr",
        reported_ap=dict(zip(("AP", "AP50", "AP75", "AR", "AR50"), ap)),
        source="official (Google Drive)", filename=f"{stem}.pth.tar", key_format="official",
        gdrive_folder=OFFICIAL_GDRIVE_FOLDER, gdrive_path=f"pose_coco/{stem}.pth.tar",
    )


def _mmpose(depth: int, input_size: tuple[int, int], filename: str, ap: tuple[float, ...]) -> PoseWeights:
    # mmpose names published files <stem>-<first 8 hex of sha256>_<date>.pth
    sha256_prefix = filename.split("-")[1].split("_")[0]
    return PoseWeights(
        name=f"pose_resnet_{depth}_{_size_name(input_size)}_mmpose", depth=depth, input_size=input_size,
        channel_order="rgb", reported_ap=dict(zip(("AP", "AP50", "AP75", "AR", "AR50"), ap)),
        source="mmpose", filename=filename, key_format="mmpose",
        url=MMPOSE_URL.format(filename), sha256=sha256_prefix,
    )


_SMALL, _LARGE = (192, 256), (288, 384)
WEIGHTS: dict[str, PoseWeights] = {
    w.name: w
    for w in (
        # AP, AP50, AP75, AR, AR50
        _official(50, _SMALL, (0.704, 0.886, 0.783, 0.763, 0.929)),
        _official(50, _LARGE, (0.722, 0.893, 0.789, 0.776, 0.932)),
        _official(101, _SMALL, (0.714, 0.893, 0.793, 0.771, 0.934)),
        _official(101, _LARGE, (0.736, 0.896, 0.803, 0.791, 0.936)),
        _official(152, _SMALL, (0.720, 0.893, 0.798, 0.778, 0.934)),
        _official(152, _LARGE, (0.743, 0.896, 0.811, 0.797, 0.937)),
        _mmpose(50, _SMALL, "res50_coco_256x192-ec54d7f3_20200709.pth", (0.718, 0.898, 0.795, 0.773, 0.937)),
        _mmpose(50, _LARGE, "res50_coco_384x288-e6f795e9_20200709.pth", (0.731, 0.900, 0.799, 0.783, 0.931)),
        _mmpose(101, _SMALL, "res101_coco_256x192-6e6babf0_20200708.pth", (0.726, 0.899, 0.806, 0.781, 0.939)),
        _mmpose(101, _LARGE, "res101_coco_384x288-8c71bdc9_20200709.pth", (0.748, 0.905, 0.817, 0.798, 0.940)),
        _mmpose(152, _SMALL, "res152_coco_256x192-f6e307c2_20200709.pth", (0.735, 0.905, 0.812, 0.790, 0.943)),
        _mmpose(152, _LARGE, "res152_coco_384x288-3860d4c9_20200709.pth", (0.750, 0.908, 0.821, 0.800, 0.942)),
    )
}


def get_weights(name: str) -> PoseWeights:
    """The registry entry called ``name``; CheckpointError listing the known names otherwise."""
    if name not in WEIGHTS:
        raise CheckpointError(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)}")
    return WEIGHTS[name]


def _cache_path(weights: PoseWeights) -> Path:
    return hub.cache_dir() / "checkpoints" / weights.filename


def cached_weights_path(name: str) -> Path | None:
    """Where weights ``name`` are cached, or None if they have not been downloaded."""
    path = _cache_path(get_weights(name))
    return path if path.is_file() else None


def download_weights(name: str, progress: bool = True) -> Path:
    """Download weights ``name`` into the cache (no-op if cached and intact); return the path."""
    weights = get_weights(name)
    dest = _cache_path(weights)
    hint = Hint(python="pass the file's path as PoseEstimator(pose_weights=PATH)", cli="pass --weights PATH")
    if weights.url is not None:
        return hub.download_url(weights.url, dest, weights.sha256, progress, hint=hint)
    return hub.download_gdrive(
        None, dest, weights.sha256, progress,
        folder_id=weights.gdrive_folder, path_in_folder=weights.gdrive_path, hint=hint,
    )


def _numpy_globals() -> list:
    """What numpy metadata in training checkpoints pickles to: scalars, dtypes, plain arrays.
    Rebuilding them runs no code of the file's choosing, so the safe loader may accept them."""
    dtype_classes = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDGUS"}
    return [np._core.multiarray.scalar, np._core.multiarray._reconstruct, np.ndarray, np.dtype, *dtype_classes]


def check_declared_sizes(path: str | os.PathLike, limit: int = MAX_DECLARED_BYTES) -> None:
    """Refuse a checkpoint that declares more storage than ``limit`` bytes, before loading it.

    Reads only what the file says about itself: a zip checkpoint's member sizes from its
    directory, and for every storage its pickle declares (both formats) its element count
    (counted at 8 bytes each, the widest dtype). A 1 kB file that claims terabytes is refused
    in milliseconds instead of being allocated.

    Raises:
        CheckpointError: the declared sizes exceed ``limit``.
    """
    path = Path(path)
    try:
        declared, index = _declared_sizes(path, limit)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, IndexError, KeyError):
        return  # not a checkpoint torch can read either: torch.load reports it
    size = f"a {path.stat().st_size / 2**20:.1f} MiB file"
    if index > MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"{path} declares a {index / 2**20:.0f} MiB tensor index (data.pkl) in {size}, more than any pose "
            f"network needs (limit {MAX_PICKLE_BYTES / 2**20:.0f} MiB): refused unread as corrupt or malicious"
        )
    if declared > limit:
        raise CheckpointError(
            f"{path} declares {declared / 2**30:.1f} GiB of tensors in {size}, more than any pose network "
            f"needs (limit {limit / 2**30:.1f} GiB): refused unread as corrupt or malicious"
        )


def _declared_sizes(path: Path, limit: int) -> tuple[int, int]:
    """(bytes of tensor storage, bytes of the zip format's data.pkl) that ``path`` declares."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            # The legacy format: magic number, protocol, system info, then the object's pickle.
            return _declared_storage_bytes(file, pickles=4), 0
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        declared = sum(member.file_size for member in members)
        pickles = [m for m in members if m.filename.endswith("data.pkl")]
        if not pickles or declared > limit or pickles[0].file_size > MAX_PICKLE_BYTES:
            return declared, pickles[0].file_size if pickles else 0
        with archive.open(pickles[0]) as pickled:
            return max(declared, _declared_storage_bytes(pickled, pickles=1)), pickles[0].file_size


def _declared_storage_bytes(stream: BinaryIO, pickles: int) -> int:
    """Upper bound on the storage bytes the ``pickles``-th pickle in ``stream`` declares.

    A persistent id ``("storage", type, key, location, numel, ...)`` is pushed just before each
    BINPERSID; the largest integer pushed since the previous one bounds its ``numel``.
    """
    for _ in range(pickles - 1):
        for _ in pickletools.genops(stream):
            pass
    total = largest = 0
    for opcode, argument, _ in pickletools.genops(stream):
        if isinstance(argument, int) and not isinstance(argument, bool):
            largest = max(largest, argument)
        elif opcode.name == "BINPERSID":
            total, largest = total + 8 * largest, 0
    return total


def _torch_load(path: Path, trusted: bool) -> object:
    """``torch.load`` on the CPU: tensor-only (plus numpy metadata) unless ``trusted``."""
    check_declared_sizes(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch reports bad or unsafe files with many exception types
        if not trusted:
            _raise_unreadable(path)
    # A file whose full sha256 matched the registry: its training metadata may hold other objects.
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        _raise_unreadable(path)


def _raise_unreadable(path: Path) -> NoReturn:
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint at all: truncated, corrupt or something else
        unsafe = []
    if unsafe:
        raise CheckpointError(
            f"{path} holds Python objects besides tensors ({', '.join(unsafe[:3])}), which posekit does not "
            "unpickle from a file without a verified sha256 (unpickling can run any code): if you trust it, "
            "re-save just its state_dict with torch.save"
        ) from None
    raise CheckpointError(
        f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another kind of file): download it again"
    ) from None


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds and what its keys say about it.

    Attributes:
        state_dict: the weights under this package's key names (PoseResNet's).
        key_format: ``"official"``, ``"mmpose 0.x"`` (``keypoint_head.``) or ``"mmpose 1.x"`` (``head.``).
        data_parallel: the keys carried DataParallel's ``module.`` prefix.
        channel_order: the order the file says it was trained on, None when that cannot be known.
        reason: why ``channel_order`` (or why it is unknown), for messages.
        spec: the :class:`~posekit.core.spec.InputSpec` fields posekit saved with the file (empty otherwise).
    """

    state_dict: dict[str, torch.Tensor]
    key_format: str
    data_parallel: bool
    channel_order: str | None
    reason: str
    spec: dict

    def describe(self) -> str:
        """E.g. "mmpose 1.x keys, DataParallel"."""
        return f"{self.key_format} keys" + (", DataParallel" if self.data_parallel else "")


def read_checkpoint(path: str | os.PathLike, trusted: bool = False) -> Checkpoint:
    """Read a checkpoint file: its state_dict with PoseResNet key names and what its layout says.

    Unwraps ``{"state_dict" | "model" | "state_dict_ema": ...}`` containers, strips a
    DataParallel ``module.`` prefix and converts mmpose keys (``backbone.``,
    ``keypoint_head.``/``head.`` prefixes dropped). The channel order follows the rules in
    this module's docstring.

    Args:
        path: checkpoint file.
        trusted: allow full unpickling (arbitrary code!) when the safe loader refuses the file;
            only for a file whose full sha256 was verified.

    Raises:
        CheckpointError: missing, truncated, corrupt or oversized file, or no state_dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .pth/.pth.tar file)")
    content = _torch_load(path, trusted)
    checkpoint, container = content, None
    if isinstance(content, Mapping):
        container = next((key for key in CONTAINER_KEYS if isinstance(content.get(key), Mapping)), None)
        if container is not None:
            checkpoint = content[container]
    if not isinstance(checkpoint, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in checkpoint.items()
    ):
        found = list(checkpoint)[:MAX_LISTED_KEYS] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(f"{path} holds no state_dict (a mapping of names to tensors); found {found}")
    data_parallel = any(key.startswith("module.") for key in checkpoint)
    state = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    key_format = "official"
    if any(key.startswith(MMPOSE_PREFIXES) for key in state):
        key_format = "mmpose 0.x" if any(key.startswith("keypoint_head.") for key in state) else "mmpose 1.x"
        state = {_strip_mmpose_prefix(key): value for key, value in state.items()}
    saved_spec = content.get(SPEC_KEY) if container is not None else None
    saved_spec = dict(saved_spec) if isinstance(saved_spec, Mapping) else {}
    order, reason = _channel_order_of(key_format, container, content, saved_spec)
    return Checkpoint(state, key_format, data_parallel, order, reason, saved_spec)


def _channel_order_of(key_format: str, container: str | None, content: object, saved: dict) -> tuple[str | None, str]:
    """(channel order or None, why): the file's own input spec, else what its key layout implies."""
    if saved.get("channel_order") in ("rgb", "bgr"):
        return saved["channel_order"], "the input spec saved with the checkpoint"
    if key_format.startswith("mmpose"):
        return "rgb", f"{key_format} keys (mmpose trains on RGB)"
    if container is None or (container == "state_dict" and all(key in content for key in OFFICIAL_TRAINER_KEYS)):
        return "bgr", "official keys (the official code trains on BGR)"
    return None, f"official-layout keys in a {container!r} container the official trainer does not write"


def _strip_mmpose_prefix(key: str) -> str:
    prefix = next((p for p in MMPOSE_PREFIXES if key.startswith(p)), "")
    return key.removeprefix(prefix)


def load_checkpoint(path: str | os.PathLike, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict of a checkpoint file with PoseResNet key names; see :func:`read_checkpoint`."""
    return read_checkpoint(path, trusted).state_dict


def save_checkpoint(model: PoseResNet, path: str | os.PathLike) -> Path:
    """Write ``model``'s weights with its input spec, so that loading feeds it the same way.

    The file is ``{"state_dict": ..., "input_spec": {...}}``, plain data that the safe loader
    reads; it is written whole or not at all.
    """
    spec = dataclasses.asdict(model.input_spec)
    with atomic_write(path) as file:
        torch.save({"state_dict": model.state_dict(), SPEC_KEY: spec}, file)
    return Path(path)


def infer_architecture(state: Mapping[str, torch.Tensor]) -> tuple[int | None, tuple[int, ...], int | None]:
    """(ResNet depth or None, blocks per stage, number of joints or None) of a PoseResNet state_dict."""
    blocks = [(int(m[1]), int(m[2])) for m in map(_BLOCK_KEY.match, state) if m]
    stage_sizes = tuple(1 + max((i for s, i in blocks if s == stage), default=-1) for stage in (1, 2, 3, 4))
    bottleneck = "layer1.0.conv3.weight" in state
    depth = next(
        (d for d, (block, sizes) in RESNET_STAGES.items() if sizes == stage_sizes and (block.expansion == 4) == bottleneck),
        None,
    )
    joints = state["final_layer.weight"].shape[0] if "final_layer.weight" in state else None
    return depth, stage_sizes, joints


def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """Which PoseResNet a state_dict belongs to, e.g. "pose_resnet_101 with 17 joints"."""
    if "final_layer.weight" not in state or "layer1.0.conv1.weight" not in state:
        return f"no PoseResNet (keys start {list(state)[:3]})"
    depth, stage_sizes, joints = infer_architecture(state)
    arch = f"pose_resnet_{depth}" if depth else f"a ResNet with {stage_sizes} blocks"
    return f"{arch} with {joints} joints"


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    return shown + (f" (+{len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else "")


def _check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], keys: str, source: str) -> None:
    expected = model.state_dict()
    # Checkpoints saved by PyTorch < 0.4.1 lack BatchNorm's batch counters, which only matter
    # for momentum=None training; the model keeps its own (zero) counters.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        return
    problems = [
        f"{label} {len(keys)}: {_listed(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
        if keys
    ]
    if mismatched:
        first = mismatched[0]
        problems.append(f"e.g. {first} is {tuple(state[first].shape)} vs {tuple(expected[first].shape)} in the model")
    raise CheckpointError(
        f"{source} does not fit the model ({describe_state_dict(expected)}): it looks like "
        f"{describe_state_dict(state)} ({keys}); " + "; ".join(problems)
    )


def registered_entry(source: str | os.PathLike) -> PoseWeights | None:
    """The registry entry ``source`` names, by name or by its file name; None if there is none."""
    if str(source) in WEIGHTS:
        return WEIGHTS[str(source)]
    name = str(source).rsplit("/", 1)[-1].split("?")[0]
    return next((w for w in WEIGHTS.values() if w.filename == name), None)


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """A weights source made concrete: the file, what it holds, and how the network must be fed.

    ``name`` is the registry name when the source was one (after any fallback), else the
    source as given; ``notice`` the line that says a fallback happened (empty otherwise).
    """

    name: str
    path: Path
    checkpoint: Checkpoint
    spec: InputSpec
    entry: PoseWeights | None
    notice: str = ""


def _is_trusted(path: Path, entry: PoseWeights | None) -> bool:
    """Only a full sha256 digest that the file matches makes it trusted; a prefix can be forged."""
    return entry is not None and entry.sha256 is not None and len(entry.sha256) == 64 and (
        hub.sha256_file(path) == entry.sha256.lower()
    )


def _fetch(source: str, progress: bool) -> tuple[str, Path, str]:
    """(registry name or source, local file, fallback notice) of a weights source."""
    if source == DEFAULT:
        try:
            return DEFAULT_WEIGHTS, download_weights(DEFAULT_WEIGHTS, progress), ""
        except DownloadError as refused:
            fallback = get_weights(FALLBACK_WEIGHTS)
            try:
                path = download_weights(FALLBACK_WEIGHTS, progress)
            except DownloadError as also:
                raise DownloadError(
                    f"{refused}; the fallback {FALLBACK_WEIGHTS} failed too: {also}",
                    cli_message=f"{refused.for_cli()}; the fallback {FALLBACK_WEIGHTS} failed too: {also.for_cli()}",
                ) from None
            notice = (
                f"{DEFAULT_WEIGHTS} could not be fetched from Google Drive, so posekit uses {fallback.name} "
                f"({fallback.source}, {fallback.channel_order.upper()} input, reported AP {fallback.reported_ap['AP']:.3f})"
            )
            return FALLBACK_WEIGHTS, path, notice
    if source in WEIGHTS:
        return source, download_weights(source, progress), ""
    if source.startswith(("http://", "https://")):
        name = source.rsplit("/", 1)[-1].split("?")[0]
        return source, hub.download_url(source, hub.cache_dir() / "checkpoints" / "urls" / name, progress=progress), ""
    if Path(source).is_file():
        return source, Path(source), ""
    raise CheckpointError(
        f"weights {source!r} are neither a registered name ({', '.join(WEIGHTS)}), an existing file nor a URL"
    )


def resolve_weights(
    source: str | os.PathLike, channel_order: str | None = None, progress: bool = True
) -> ResolvedWeights:
    """Fetch and read weights, and decide how they must be fed (see this module's docstring).

    Args:
        source: :data:`DEFAULT` (the default weights, falling back to :data:`FALLBACK_WEIGHTS`
            with a notice when Google Drive refuses), a registry name (downloaded and cached on
            first use), a checkpoint path, or an http(s) URL (cached under ``checkpoints/urls/``).
        channel_order: ``"rgb"``/``"bgr"`` to override what the checkpoint says.
        progress: show download progress.

    Raises:
        CheckpointError: unknown name, unreadable or oversized file, no state_dict inside.
        DownloadError: the weights are not cached and cannot be downloaded.
    """
    if channel_order not in (None, "rgb", "bgr"):
        raise CheckpointError(f"channel_order {channel_order!r}: expected 'rgb', 'bgr' or None (from the checkpoint)")
    name, path, notice = _fetch(str(source), progress)
    # Registered names come from the registry; a URL or a path only by its file name, for the input size.
    entry = WEIGHTS.get(name) or registered_entry(path.name)
    checkpoint = read_checkpoint(path, trusted=_is_trusted(path, entry))
    saved = {key: tuple(map(tuple, v)) if key == "flip_pairs" else tuple(v) if isinstance(v, list) else v
             for key, v in checkpoint.spec.items() if key in {f.name for f in dataclasses.fields(InputSpec)}}
    depth, _, joints = infer_architecture(checkpoint.state_dict)
    if joints is not None and len(saved.get("keypoint_names", ())) not in (0, joints):
        raise CheckpointError(
            f"{path}: its saved input spec names {len(saved['keypoint_names'])} joints, its weights have {joints}; "
            "expected a checkpoint whose input spec describes its weights (as save_checkpoint writes it)"
        )
    spec = joints_spec(joints or 17).replace(**saved)
    if entry is not None:
        spec = spec.replace(input_size=entry.input_size, channel_order=entry.channel_order, mean=entry.mean, std=entry.std)
    elif checkpoint.channel_order is not None:
        spec = spec.replace(channel_order=checkpoint.channel_order)
    if channel_order is not None:
        spec = spec.replace(channel_order=channel_order)
    elif entry is None and checkpoint.channel_order is None:
        warnings.warn(
            f"{path}: the channel order it was trained on cannot be known ({checkpoint.reason}); feeding BGR as "
            "the official code does: pass channel_order='rgb' (--channel-order rgb) if it was trained on RGB",
            stacklevel=2,
        )
    return ResolvedWeights(name, path, checkpoint, spec, entry, notice)


def load_weights(
    model: nn.Module, name_or_path_or_url: str | os.PathLike, channel_order: str | None = None
) -> nn.Module:
    """Load weights into ``model`` (in place) after checking every key and shape, and set
    ``model.input_spec`` to how they must be fed (:func:`resolve_weights`).

    Returns:
        ``model``.

    Raises:
        CheckpointError: unknown name, unreadable file, or keys/shapes that do not fit, listing
            the missing/unexpected/mismatched keys and which architecture the file looks like.
        DownloadError: the weights are not cached and cannot be downloaded.
    """
    resolved = resolve_weights(name_or_path_or_url, channel_order)
    if resolved.notice:
        warnings.warn(resolved.notice, stacklevel=2)
    _install(model, resolved)
    return model


def _install(model: nn.Module, resolved: ResolvedWeights) -> None:
    _check_fits(model, resolved.checkpoint.state_dict, resolved.checkpoint.describe(), str(resolved.path))
    model.load_state_dict(resolved.checkpoint.state_dict, strict=False)
    model.input_spec = resolved.spec


def load_model(resolved: ResolvedWeights) -> PoseResNet:
    """A PoseResNet of the architecture the weights hold (the registry's, else the keys'), loaded.

    Raises:
        CheckpointError: the state_dict is no PoseResNet of a known depth.
    """
    depth, _, joints = infer_architecture(resolved.checkpoint.state_dict)
    if resolved.entry is not None:
        depth, style = resolved.entry.depth, resolved.entry.style
    else:
        style = "pytorch"
    if depth is None or joints is None:
        raise CheckpointError(
            f"{resolved.path} holds {describe_state_dict(resolved.checkpoint.state_dict)} "
            f"({resolved.checkpoint.describe()}); expected a SimpleBaseline pose_resnet_18/34/50/101/152"
        )
    model = pose_resnet(depth, num_joints=joints, style=style)
    _install(model, resolved)
    return model
