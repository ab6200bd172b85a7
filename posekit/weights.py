"""Pretrained SimpleBaseline checkpoints: registry, download, loading and input preprocessing.

Two families are registered, all COCO-17 and PyTorch-style ResNets:

* the authors' release (microsoft/human-pose-estimation.pytorch, Google Drive), trained on
  **BGR** crops normalised with the ImageNet mean/std listed in RGB order — i.e. torchvision's
  ``Normalize`` applied to a BGR tensor. Their keys are this package's keys.
* mmpose's re-trained models (download.openmmlab.com), trained on **RGB** crops; keys carry
  ``backbone.`` / ``keypoint_head.`` prefixes and are converted on load.

``reported_ap`` holds what each release reports on COCO val2017 with the person detector of
human AP 56.4 and flip test (the official README table; mmpose's resnet_coco.md model zoo).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn

from posekit import hub
from posekit.errors import CheckpointError, Hint
from posekit.model import RESNET_STAGES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_GDRIVE_FOLDER = "13_wJ6nC7my1KKouMkQMqyr9r1ZnLnukP"
MMPOSE_URL = "https://download.openmmlab.com/mmpose/top_down/resnet/{}"
# Keys of the containers training scripts wrap a state_dict in, most preferred first.
CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema")
# mmpose's top-down model = backbone + head (0.x calls it keypoint_head, 1.x head).
MMPOSE_PREFIXES = ("backbone.", "keypoint_head.", "head.")
MAX_LISTED_KEYS = 5
_BLOCK_KEY = re.compile(r"layer(\d)\.(\d+)\.")  # layer<stage>.<block index>.


@dataclasses.dataclass(frozen=True)
class PoseWeights:
    """One downloadable checkpoint and everything needed to feed it correctly.

    ``input_size`` and sizes derived from it are (width, height) as in the official code.
    ``mean``/``std`` are in ImageNet RGB order and applied to channels in ``channel_order``
    (see :func:`preprocess_crops`). Exactly one of ``url`` and ``gdrive_path`` (inside
    ``gdrive_folder``) says where to get the file. ``sha256`` may be a prefix of the digest.
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
    def heatmap_size(self) -> tuple[int, int]:
        """(width, height) of the network's output: a quarter of the input."""
        return self.input_size[0] // 4, self.input_size[1] // 4

    @property
    def aspect_ratio(self) -> float:
        """Crop width / height (0.75 for 192x256 and 288x384)."""
        return self.input_size[0] / self.input_size[1]

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        """Normalise RGB crops for these weights. Shape: (N, 3, H, W) 0..255 RGB -> (N, 3, H, W)."""
        return preprocess_crops(crops, self.channel_order, self.mean, self.std)


def preprocess_crops(
    crops: torch.Tensor,
    channel_order: str,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """Turn RGB crops into the normalised input a checkpoint was trained on.

    For ``channel_order="bgr"`` the channels are reversed first and ``mean``/``std`` are then
    applied position by position (B gets mean[0]): this reproduces the official pipeline,
    ``cv2.imread`` (BGR) -> ``ToTensor`` -> ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``.

    Args:
        crops: float tensor (N, 3, H, W), values 0..255, RGB.
        channel_order: "rgb" or "bgr", the order the network expects.
        mean, std: per-channel statistics on the 0..1 scale.

    Returns:
        Tensor (N, 3, H, W) of the crops' dtype and device.
    """
    if crops.ndim != 4 or crops.shape[1] != 3 or not crops.is_floating_point():
        raise ValueError(f"crops must be a float tensor (N, 3, H, W), got {crops.dtype} {tuple(crops.shape)}")
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if channel_order == "bgr":
        crops = crops.flip(1)
    mean_t = torch.tensor(mean, dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
    return (crops / 255 - mean_t) / std_t


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
DEFAULT_WEIGHTS = "pose_resnet_50_256x192"


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


def _torch_load(path: Path, trusted: bool) -> object:
    # The tensor-only loader first; a file we downloaded and verified ourselves may also carry
    # training metadata (numpy scalars, configs) that only the full unpickler accepts.
    for weights_only in (True, False) if trusted else (True,):
        with contextlib.suppress(Exception):  # torch reports bad files with many exception types
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    _raise_unreadable(path)


def _raise_unreadable(path: Path) -> NoReturn:
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint at all: truncated, corrupt or something else
        unsafe = []
    if unsafe:
        raise CheckpointError(
            f"{path} holds Python objects besides tensors ({', '.join(unsafe[:3])}), which posekit does not "
            "unpickle from a file it cannot vouch for: if you trust it, re-save just its state_dict with torch.save"
        ) from None
    raise CheckpointError(
        f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another kind of file): download it again"
    ) from None


def _read_state_dict(path: str | os.PathLike, trusted: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict with this package's key names, "official" | "mmpose") of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .pth/.pth.tar file)")
    checkpoint = _torch_load(path, trusted)
    if isinstance(checkpoint, Mapping):
        container = next((key for key in CONTAINER_KEYS if isinstance(checkpoint.get(key), Mapping)), None)
        if container is not None:
            checkpoint = checkpoint[container]
    if not isinstance(checkpoint, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in checkpoint.items()
    ):
        found = list(checkpoint)[:MAX_LISTED_KEYS] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(f"{path} holds no state_dict (a mapping of names to tensors); found {found}")
    # DataParallel prefixes every key with "module."
    state = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    key_format = "mmpose" if any(key.startswith(MMPOSE_PREFIXES) for key in state) else "official"
    if key_format == "mmpose":
        state = {_strip_mmpose_prefix(key): value for key, value in state.items()}
    return state, key_format


def _strip_mmpose_prefix(key: str) -> str:
    prefix = next((p for p in MMPOSE_PREFIXES if key.startswith(p)), "")
    return key.removeprefix(prefix)


def load_checkpoint(path: str | os.PathLike, trusted: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file as a plain state_dict with PoseResNet key names.

    Unwraps ``{"state_dict" | "model" | "state_dict_ema": ...}`` containers, strips a
    DataParallel ``module.`` prefix and converts mmpose keys (``backbone.``,
    ``keypoint_head.``/``head.`` prefixes dropped).

    Args:
        path: checkpoint file.
        trusted: allow full unpickling (arbitrary code!) if the safe tensor-only loader refuses
            the file; only for files whose origin is known, such as verified registry downloads.

    Raises:
        CheckpointError: missing, truncated or corrupt file, or no state_dict inside.
    """
    return _read_state_dict(path, trusted)[0]


def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """Which PoseResNet a state_dict belongs to, e.g. "pose_resnet_101 with 17 joints"."""
    if "final_layer.weight" not in state or "layer1.0.conv1.weight" not in state:
        return f"no PoseResNet (keys start {list(state)[:3]})"
    blocks = [(int(m[1]), int(m[2])) for m in map(_BLOCK_KEY.match, state) if m]
    stage_sizes = tuple(1 + max((i for s, i in blocks if s == stage), default=-1) for stage in (1, 2, 3, 4))
    bottleneck = "layer1.0.conv3.weight" in state
    depth = next(
        (
            d
            for d, (block, sizes) in RESNET_STAGES.items()
            if sizes == stage_sizes and (block.expansion == 4) == bottleneck
        ),
        None,
    )
    arch = f"pose_resnet_{depth}" if depth else f"a ResNet with {stage_sizes} blocks"
    return f"{arch} with {state['final_layer.weight'].shape[0]} joints"


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    return shown + (f" (+{len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else "")


def _check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], key_format: str, source: str) -> None:
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
        f"{describe_state_dict(state)} ({key_format} keys); " + "; ".join(problems)
    )


def load_weights(model: nn.Module, name_or_path_or_url: str | os.PathLike) -> nn.Module:
    """Load weights into ``model`` (in place) after checking every key and shape.

    Args:
        model: a :class:`~posekit.model.PoseResNet`.
        name_or_path_or_url: a registry name (downloaded and cached on first use), a local
            checkpoint path, or an http(s) URL (cached under its file name).

    Returns:
        ``model``.

    Raises:
        CheckpointError: unknown name, unreadable file, or keys/shapes that do not fit, listing
            the missing/unexpected/mismatched keys and which architecture the file looks like.
        DownloadError: the weights are not cached and cannot be downloaded.
    """
    source = str(name_or_path_or_url)
    trusted = source in WEIGHTS
    if trusted:
        path = download_weights(source)
    elif source.startswith(("http://", "https://")):
        path = hub.download_url(source, hub.cache_dir() / "checkpoints" / source.rsplit("/", 1)[-1].split("?")[0])
    elif Path(source).is_file():
        path = Path(source)
    else:
        raise CheckpointError(
            f"weights {source!r} are neither a registered name ({', '.join(WEIGHTS)}), an existing file nor a URL"
        )
    state, key_format = _read_state_dict(path, trusted)
    _check_fits(model, state, key_format, str(path))
    model.load_state_dict(state, strict=False)
    return model
