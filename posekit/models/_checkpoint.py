"""Reading checkpoint files: the safe loader, key conversion, architecture inference, the channel-order rule.

Private to :mod:`posekit.models.weights`, which names the public parts (``read_checkpoint``,
``load_checkpoint``, ``check_declared_sizes``, ``describe_state_dict``, ``SPEC_KEY``); the rules
themselves are described in that module's docstring.
"""
from __future__ import annotations

import dataclasses
import os
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np
import torch
from torch import nn

from posekit.errors import CheckpointError
from posekit.models.pose_resnet import RESNET_STAGES

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
        # posekit's network has the official code's key names: "official" alone would misname a user's own file.
        layout = "posekit/official" if self.key_format == "official" else self.key_format
        return f"{layout} keys" + (", DataParallel" if self.data_parallel else "")


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
        return "bgr", "posekit/official keys without a saved input spec (taken as trained like the official code, on BGR)"
    return None, f"official-layout keys in a {container!r} container the official trainer does not write"


def _strip_mmpose_prefix(key: str) -> str:
    prefix = next((p for p in MMPOSE_PREFIXES if key.startswith(p)), "")
    return key.removeprefix(prefix)


def load_checkpoint(path: str | os.PathLike, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict of a checkpoint file with PoseResNet key names; see :func:`read_checkpoint`."""
    return read_checkpoint(path, trusted).state_dict


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


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], keys: str, source: str) -> None:
    """Raise CheckpointError naming the missing, unexpected and wrongly shaped keys unless ``state`` fits ``model``."""
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
