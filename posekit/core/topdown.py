"""The top-down core: person boxes of one image -> keypoints. The only implementation of it.

Per chunk of ``max_batch`` people: crop (:func:`~posekit.core.crop.crop_batch`) -> normalise as the
network was trained (``spec.preprocess``) -> the forward, on the crops and their mirror images in
one call when flip testing -> :func:`~posekit.core.heatmaps.flip_back` and averaging ->
:func:`~posekit.core.heatmaps.decode` to image pixels. Crops exist for one chunk at a time, so memory
follows ``max_batch``, not the number of people in the image.

:class:`~posekit.estimator.PoseEstimator`, :func:`posekit.eval.coco.evaluate` and ``posekit bench``
all run these functions; the benchmark times their stages through the ``stopwatch`` hook
(called with each name in :data:`STAGES` around that stage's work).
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, ContextManager, Iterator

import numpy as np
import torch

from posekit.core.crop import box_to_center_scale, crop_batch
from posekit.core.heatmaps import decode as decode_heatmaps
from posekit.core.heatmaps import flip_back
from posekit.core.spec import InputSpec
from posekit.errors import PosekitError

Forward = Callable[[torch.Tensor], torch.Tensor]
Stopwatch = Callable[[str], ContextManager[object]]
STAGES = ("crop", "normalise", "forward", "flip_back", "decode")


class StageTimer:
    """A ``stopwatch`` that sums wall time per stage name into :attr:`seconds`.

    On CUDA it waits for the queued kernels at each stage boundary, so a stage is charged for
    its own GPU work and not for what an earlier one left running.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = self.now()
        yield
        self.add(stage, self.now() - start)

    def now(self) -> float:
        """``time.perf_counter()`` once the device's queued work is done."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _no_stopwatch(stage: str) -> ContextManager[object]:
    return contextlib.nullcontext()


@torch.inference_mode()
def keypoints(
    forward: Forward,
    spec: InputSpec,
    image: np.ndarray | torch.Tensor,
    boxes_xywh: np.ndarray,
    flip_test: bool = True,
    decode: str = "quarter",
    max_batch: int = 64,
    device: torch.device | str = "cpu",
    stopwatch: Stopwatch | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints of the people in ``boxes_xywh`` of one image.

    Args:
        forward: the network as a callable, normalised crops (B, 3, H, W) -> heatmaps
            (B, K, H/4, W/4) float32 (see :func:`posekit.models.runtime.inference_forward`).
        spec: the network's input spec (``model.input_spec``): crop size, normalisation,
            channel order, joints and their flip pairs.
        image: RGB, (H, W, 3) uint8 numpy or (3, H, W) tensor.
        boxes_xywh: finite boxes with positive width and height, image pixels.
        flip_test: average with the flipped-back heatmaps of the mirrored crops (one forward
            call of twice the batch).
        decode: heatmap decoding, see :func:`posekit.core.heatmaps.decode`.
        max_batch: people per forward call (each call also holds their mirrored crops).
        device: where crops are made and decoded; the forward's device.
        stopwatch: timing hook, called with each stage name of :data:`STAGES`.

    Returns:
        keypoints (N, K, 3) float32 x, y, score in image pixels, and the crops' centers (N, 2)
        and scales (N, 2) (:func:`~posekit.core.crop.box_to_center_scale`).
    """
    stopwatch = stopwatch or _no_stopwatch
    centers, scales = _centers_and_scales(boxes_xywh, spec)
    found = []
    for chunk, _, heatmaps in _heatmaps(forward, spec, image, centers, scales, flip_test, max_batch, device, stopwatch):
        with stopwatch("decode"):
            coords, scores = decode_heatmaps(heatmaps, centers[chunk], scales[chunk], method=decode)
            found.append(torch.cat([coords, scores[..., None]], dim=2).float().cpu())
    points = torch.cat(found).numpy() if found else np.zeros((0, spec.num_keypoints, 3), np.float32)
    return points, centers, scales


@torch.inference_mode()
def crops_and_heatmaps(
    forward: Forward,
    spec: InputSpec,
    image: np.ndarray | torch.Tensor,
    boxes_xywh: np.ndarray,
    flip_test: bool = True,
    max_batch: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """What the network sees and says for the people in ``boxes_xywh``: :func:`keypoints` before decoding.

    Shape: -> crops (N, H, W, 3) uint8 RGB at ``spec.input_size`` and heatmaps (N, K, H/4, W/4)
    float32 (averaged with the flipped-back mirror's when ``flip_test``).
    """
    centers, scales = _centers_and_scales(boxes_xywh, spec)
    parts = list(_heatmaps(forward, spec, image, centers, scales, flip_test, max_batch, device, _no_stopwatch))
    width, height = spec.input_size
    if not parts:
        (map_width, map_height), joints = spec.heatmap_size, spec.num_keypoints
        return np.zeros((0, height, width, 3), np.uint8), np.zeros((0, joints, map_height, map_width), np.float32)
    crops = torch.cat([crop for _, crop, _ in parts]).permute(0, 2, 3, 1).byte().cpu().numpy()
    return crops, torch.cat([heatmaps for _, _, heatmaps in parts]).float().cpu().numpy()


def _centers_and_scales(boxes_xywh: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes_xywh, np.float64)
    return box_to_center_scale(boxes.reshape(0, 4) if boxes.size == 0 else boxes, spec.aspect_ratio)


def _heatmaps(
    forward: Forward,
    spec: InputSpec,
    image: np.ndarray | torch.Tensor,
    centers: np.ndarray,
    scales: np.ndarray,
    flip_test: bool,
    max_batch: int,
    device: torch.device | str,
    stopwatch: Stopwatch,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Per chunk of ``max_batch`` people: its slice of the people, their crops (B, 3, H, W)
    0..255 RGB and their heatmaps (B, K, h, w)."""
    if max_batch < 1:
        raise PosekitError(f"max_batch must be at least 1 person per network call, got {max_batch}")
    if len(centers) == 0:
        return
    with stopwatch("crop"):
        pixels = torch.from_numpy(image).permute(2, 0, 1) if isinstance(image, np.ndarray) else image
        pixels = pixels.to(device)
    for start in range(0, len(centers), max_batch):
        chunk = slice(start, start + max_batch)
        with stopwatch("crop"):
            crops = crop_batch(pixels, centers[chunk], scales[chunk], output_size=spec.input_size)
        with stopwatch("normalise"):
            inputs = spec.preprocess(crops)
            if flip_test:
                inputs = torch.cat([inputs, inputs.flip(3)])
        with stopwatch("forward"):
            heatmaps = forward(inputs)
        _check_heatmaps(heatmaps, inputs, spec)
        if flip_test:
            with stopwatch("flip_back"):
                heatmaps, mirrored = heatmaps.chunk(2)
                heatmaps = (heatmaps + flip_back(mirrored, spec.flip_pairs)) * 0.5
        yield chunk, crops, heatmaps


def _check_heatmaps(heatmaps: object, inputs: torch.Tensor, spec: InputSpec) -> None:
    expected = (len(inputs), spec.num_keypoints)
    if not isinstance(heatmaps, torch.Tensor) or heatmaps.ndim != 4 or tuple(heatmaps.shape[:2]) != expected:
        found = tuple(heatmaps.shape) if isinstance(heatmaps, torch.Tensor) else type(heatmaps).__name__
        raise PosekitError(
            f"the model returned {found} for crops {tuple(inputs.shape)}; expected heatmaps "
            f"({len(inputs)}, {spec.num_keypoints}, h, w) for the {spec.num_keypoints} joints of its input spec"
        )
