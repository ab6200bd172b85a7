"""Pretrained SimpleBaseline checkpoints: registry, download, loading and input preprocessing.

The registry and building the model live here; reading a checkpoint file (the safe loader, key
conversion, architecture inference, the channel-order rule) in the private
:mod:`posekit.models._checkpoint`, whose public names are importable from here.

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
import warnings
from pathlib import Path

import torch
from torch import nn

from posekit.core.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec, joints_spec
from posekit.defaults import DEFAULT, DEFAULT_WEIGHTS, FALLBACK_WEIGHTS, UNTRAINED_SEED
from posekit.errors import CheckpointError, DownloadError, Hint
from posekit.io import hub
from posekit.io.files import atomic_write
# Checkpoint reading lives in the private _checkpoint module; its public names are this module's.
from posekit.models._checkpoint import (  # noqa: F401
    SPEC_KEY,
    Checkpoint,
    check_declared_sizes,
    check_fits,
    describe_state_dict,
    infer_architecture,
    load_checkpoint,
    read_checkpoint,
)
from posekit.models.pose_resnet import PoseResNet, pose_resnet

OFFICIAL_GDRIVE_FOLDER = "13_wJ6nC7my1KKouMkQMqyr9r1ZnLnukP"
MMPOSE_URL = "https://download.openmmlab.com/mmpose/top_down/resnet/{}"


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


# Besides placing the file in the cache: what a caller that takes weights can do instead.
_GIVE_A_FILE = Hint(python="pass the file's path as PoseEstimator(pose_weights=PATH)", cli="pass --weights PATH")


def download_weights(name: str, progress: bool = True, hint: Hint | None = _GIVE_A_FILE) -> Path:
    """Download weights ``name`` into the cache (no-op if cached and intact); return the path.

    ``hint`` is the way out a failure offers besides placing the file by hand (None: only that,
    for a caller such as ``posekit weights download`` that takes no weights file).
    """
    weights = get_weights(name)
    dest = _cache_path(weights)
    if weights.url is not None:
        return hub.download_url(weights.url, dest, weights.sha256, progress, hint=hint)
    return hub.download_gdrive(
        None, dest, weights.sha256, progress,
        folder_id=weights.gdrive_folder, path_in_folder=weights.gdrive_path, hint=hint,
    )


def save_checkpoint(model: PoseResNet, path: str | os.PathLike) -> Path:
    """Write ``model``'s weights with its input spec, so that loading feeds it the same way.

    The file is ``{"state_dict": ..., "input_spec": {...}}``, plain data that the safe loader
    reads; it is written whole or not at all.
    """
    spec = dataclasses.asdict(model.input_spec)
    with atomic_write(path) as file:
        torch.save({"state_dict": model.state_dict(), SPEC_KEY: spec}, file)
    return Path(path)


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
                # The fallback's failure without its advice, which would repeat the first one's.
                failed = str(also).split(";")[0].split(", or ")[0]
                raise DownloadError(
                    f"{refused}; the fallback {FALLBACK_WEIGHTS} failed too: {failed}",
                    cli_message=f"{refused.for_cli()}; the fallback {FALLBACK_WEIGHTS} failed too: {failed}",
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
    check_fits(model, resolved.checkpoint.state_dict, resolved.checkpoint.describe(), str(resolved.path))
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


def untrained_model(depth: int = 50) -> PoseResNet:
    """A PoseResNet with random weights drawn from the fixed seed :data:`posekit.defaults.UNTRAINED_SEED`.

    Every run builds the same network, so one cached ONNX export serves all untrained runs; the
    caller's random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(UNTRAINED_SEED)
        return pose_resnet(depth=depth)
