"""One object for the whole top-down pipeline: images in, people with 17 keypoints out.

For each image: person boxes (given, detected, or the whole image) -> one crop per person
(:func:`~posekit.crop.crop_batch`) -> the normalisation the weights were trained with
(:meth:`~posekit.weights.PoseWeights.preprocess`, so callers never think about BGR vs RGB) ->
the network, in chunks of ``max_batch`` people, together with the mirrored crops for the flip
test -> :func:`~posekit.heatmaps.flip_back` and averaging -> :func:`~posekit.heatmaps.decode`
to image pixels. All people of an image go through each step as one batch.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch

from posekit.crop import box_to_center_scale, crop_batch
from posekit.errors import BoxError, PosekitError
from posekit.heatmaps import decode, flip_back
from posekit.images import ImageSource, load_image, sanitize_boxes
from posekit.model import pose_resnet
from posekit.validate import check_device_type, check_weights_argument, whole_number
from posekit.weights import DEFAULT_WEIGHTS, WEIGHTS, PoseWeights, get_weights, load_weights

if TYPE_CHECKING:
    from posekit.detect import PersonDetector

# Per image: boxes (N, 4) as x, y, w, h, or (boxes, scores) as PersonDetector / load_detections give.
BoxesLike = Union[np.ndarray, Sequence[Sequence[float]], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class Person:
    """One detected person.

    Attributes:
        box: COCO box x, y, w, h in image pixels, shape (4,).
        box_score: the detector's confidence in the box (1.0 for given boxes without scores).
        keypoints: x, y, score of the 17 COCO joints in image pixels, shape (17, 3); the score
            is the heatmap maximum, not a probability.
    """

    box: np.ndarray
    box_score: float
    keypoints: np.ndarray


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first of CUDA, Apple MPS, CPU that is available; anything else as given,
    once checked to exist here (torch's own failure comes later, deep inside, and less clearly).

    Raises:
        PosekitError: an unknown device name, a CUDA or MPS device this torch cannot see, or a
            device type torch knows but cannot use here (xpu, hpu, meta ...).
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise PosekitError(f"unknown device {str(device)!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if chosen.type == "cuda" and (chosen.index or 0) >= gpus:
        build, fix = (
            (f"built for CUDA {torch.version.cuda}", "check the GPU and its NVIDIA driver with nvidia-smi")
            if torch.version.cuda
            else ("a CPU-only build", "install a CUDA build of torch (pytorch.org/get-started/locally)")
        )
        raise PosekitError(
            f"device {chosen} is not available: torch {torch.__version__} ({build}) sees {gpus} CUDA GPU(s) here; "
            f"use device cpu or auto, or {fix}"
        )
    if chosen.type == "mps" and not _mps_available():
        raise PosekitError("device mps is not available here (Apple silicon GPUs only); use device cpu or auto")
    check_device_type(chosen)
    return chosen


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


class PoseEstimator:
    """Top-down pose estimation: person boxes in each image -> 17 COCO keypoints per person.

    Args:
        pose_weights: a registered name (downloaded into the cache on first use), a checkpoint
            path, or None for random weights (untrained: the output is not a prediction). A path
            named like a registered file (e.g. ``pose_resnet_50_256x192.pth.tar``) gets that
            entry's input size and channel order; any other path is loaded into a ResNet of
            ``depth`` fed like the default weights (256x192, BGR).
        detector: None (boxes must be given, else the whole image is one person), a detector
            name (see :data:`posekit.detect.DETECTORS`) or a :class:`~posekit.detect.PersonDetector`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` ...
        flip_test: average with the heatmaps of the mirrored crop, as the paper evaluates.
        decode: heatmap decoding, ``"argmax"``, ``"quarter"`` (the paper's) or ``"dark"``.
        max_batch: people per network call (each call also runs their mirrored crops).
        depth: ResNet depth when ``pose_weights`` is None or an unregistered path.

    Raises:
        DownloadError: registered weights are not cached and cannot be downloaded.
        CheckpointError: unknown name, unreadable file, or a checkpoint of another architecture.

    Example:
        >>> estimator = PoseEstimator(detector="fasterrcnn_mobilenet_v3_large_fpn")
        >>> people = estimator("people.jpg")
        >>> people[0].keypoints.shape
        (17, 3)
    """

    def __init__(
        self,
        pose_weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
        detector: str | PersonDetector | None = None,
        device: str | torch.device = "auto",
        flip_test: bool = True,
        decode: str = "quarter",
        max_batch: int = 64,
        depth: int = 50,
    ) -> None:
        max_batch = whole_number(max_batch, "max_batch", "people per network call")
        check_weights_argument(pose_weights)
        self.device = resolve_device(device)
        registered = _registered_entry(pose_weights)
        # Input size and normalisation: the registered entry's, else the default weights' conventions.
        self.weights = registered or get_weights(DEFAULT_WEIGHTS)
        self.pretrained = pose_weights is not None
        depth = registered.depth if registered else depth
        self.weights_source = str(pose_weights) if self.pretrained else f"random pose_resnet_{depth} (untrained)"
        model = pose_resnet(depth=depth, style=registered.style if registered else "pytorch")
        if pose_weights is not None:
            load_weights(model, pose_weights)
        # NHWC convolutions: about 1.4x the eager NCHW speed on CPU (posekit bench), same results.
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        if isinstance(detector, str):
            from posekit.detect import PersonDetector

            detector = PersonDetector(detector, device=self.device)
        self.detector = detector
        self.flip_test = flip_test
        self.decode = decode
        self.max_batch = max_batch

    def __call__(
        self,
        images: ImageSource | Sequence[ImageSource],
        boxes: BoxesLike | Sequence[BoxesLike] | None = None,
        channels: str = "rgb",
    ) -> list[Person] | list[list[Person]]:
        """Estimate the poses of everyone in one image or a list of images.

        Args:
            images: a path, PIL image or (H, W, 3) uint8 array, or a list of them.
            boxes: per image the person boxes (N, 4) x, y, w, h, or a ``(boxes, scores)`` pair;
                for a single image just its boxes. None: run the detector, or without one take
                the whole image as one person.
            channels: ``"bgr"`` for OpenCV arrays; see :func:`~posekit.images.load_image`.

        Returns:
            For a single image its list of :class:`Person`; for a list, one such list per image.
            An image with nobody in it gives an empty list.
        """
        single = isinstance(images, (str, bytes, os.PathLike, np.ndarray)) or not isinstance(images, Sequence)
        batch = [images] if single else list(images)
        arrays = [load_image(image, channels) for image in batch]
        if boxes is not None:
            per_image = [boxes] if single else list(boxes)
            if len(per_image) != len(arrays):
                raise BoxError(f"got boxes for {len(per_image)} images but {len(arrays)} images")
        else:
            per_image = self.detect(arrays)
        names = [_image_name(image, None if single else index) for index, image in enumerate(batch)]
        people = [self.estimate(a, *_boxes_and_scores(b), name=n) for a, b, n in zip(arrays, per_image, names)]
        return people[0] if single else people

    def detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Person boxes per image: the detector's, or without a detector the whole image as one person.

        Shape: images: RGB uint8 (H, W, 3) each -> per image boxes (M, 4) x, y, w, h float32 and
        scores (M,) float32.
        """
        if self.detector is not None:
            return self.detector(images)
        return [(np.array([[0, 0, a.shape[1], a.shape[0]]], np.float32), np.ones(1, np.float32)) for a in images]

    def estimate(
        self,
        image: ImageSource,
        boxes_xywh: np.ndarray,
        box_scores: np.ndarray | None = None,
        channels: str = "rgb",
        name: str | None = None,
    ) -> list[Person]:
        """Keypoints of the people in the given boxes of one image.

        Boxes that are not finite, have no area or lie outside the image are skipped with one
        warning (see :func:`~posekit.images.sanitize_boxes`); the others are clipped to the image.

        Args:
            image: a path, PIL image or (H, W, 3) uint8 array.
            boxes_xywh: person boxes in image pixels. Shape: (N, 4).
            box_scores: their scores, shape (N,); 1.0 each when None.
            channels: ``"bgr"`` for OpenCV arrays.
            name: how warnings refer to the image (default: its file name, else "image").

        Returns:
            One :class:`Person` per kept box, in box order.
        """
        rgb = load_image(image, channels)
        name = name or _image_name(image, None)
        boxes, keep = sanitize_boxes(boxes_xywh, (rgb.shape[1], rgb.shape[0]), name)
        scores = np.ones(len(keep), np.float32) if box_scores is None else np.asarray(box_scores, np.float32).reshape(-1)
        if len(scores) != len(keep):
            raise BoxError(f"{name}: {len(keep)} boxes but {len(scores)} box scores")
        keypoints = self.keypoints(rgb, boxes)
        return [Person(box, float(score), points) for box, score, points in zip(boxes, scores[keep], keypoints)]

    @torch.inference_mode()
    def keypoints(self, rgb: np.ndarray, boxes_xywh: np.ndarray) -> np.ndarray:
        """The batched core: keypoints of valid boxes in one RGB image.

        Shape: rgb (H, W, 3) uint8, boxes_xywh (N, 4) finite with positive w, h ->
        (N, 17, 3) float32 x, y, score in image pixels.
        """
        if len(boxes_xywh) == 0:
            return np.zeros((0, 17, 3), np.float32)
        centers, scales, _, heatmaps = self._crops_and_heatmaps(rgb, boxes_xywh)
        coords, scores = decode(heatmaps, centers, scales, method=self.decode)
        return torch.cat([coords, scores[..., None]], dim=2).float().cpu().numpy()

    @torch.inference_mode()
    def estimate_heatmaps(
        self, image: ImageSource, boxes_xywh: np.ndarray, channels: str = "rgb"
    ) -> tuple[np.ndarray, np.ndarray]:
        """What the network sees and says for the people in the given boxes of one image.

        Bad boxes are skipped with a warning, as in :meth:`estimate`.

        Shape: boxes_xywh (M, 4) -> crops (M, H, W, 3) uint8 RGB at the weights' input size, and
        heatmaps (M, 17, H/4, W/4) float32 (averaged with the flipped crop's when flip testing).
        """
        rgb = load_image(image, channels)
        boxes, _ = sanitize_boxes(boxes_xywh, (rgb.shape[1], rgb.shape[0]), _image_name(image, None))
        width, height = self.weights.input_size
        if len(boxes) == 0:
            return np.zeros((0, height, width, 3), np.uint8), np.zeros((0, 17, height // 4, width // 4), np.float32)
        _, _, crops, heatmaps = self._crops_and_heatmaps(rgb, boxes)
        return crops.permute(0, 2, 3, 1).byte().cpu().numpy(), heatmaps.float().cpu().numpy()

    def _crops_and_heatmaps(
        self, rgb: np.ndarray, boxes_xywh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
        """centers (N, 2), scales (N, 2), RGB crops (N, 3, H, W) 0..255 and heatmaps (N, 17, h, w)."""
        centers, scales = box_to_center_scale(boxes_xywh, aspect_ratio=self.weights.aspect_ratio)
        pixels = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)
        crops = crop_batch(pixels, centers, scales, output_size=self.weights.input_size)
        inputs = self.weights.preprocess(crops)
        heatmaps = torch.cat([self._heatmaps(chunk) for chunk in inputs.split(self.max_batch)])
        return centers, scales, crops, heatmaps

    def _heatmaps(self, inputs: torch.Tensor) -> torch.Tensor:
        """Network heatmaps of normalised crops, averaged with the un-flipped mirror when flip testing."""
        # Crops and their mirrors in one call: twice the batch, half the calls.
        batch = torch.cat([inputs, inputs.flip(3)]) if self.flip_test else inputs
        heatmaps = self.model(batch.contiguous(memory_format=torch.channels_last))
        if not self.flip_test:
            return heatmaps
        heatmaps, mirrored = heatmaps.chunk(2)
        return (heatmaps + flip_back(mirrored)) * 0.5


def _registered_entry(pose_weights: str | os.PathLike | None) -> PoseWeights | None:
    """The registry entry ``pose_weights`` names, by name or by its file name; None if there is none."""
    if pose_weights is None:
        return None
    if str(pose_weights) in WEIGHTS:
        return WEIGHTS[str(pose_weights)]
    return next((w for w in WEIGHTS.values() if w.filename == Path(pose_weights).name), None)


def _boxes_and_scores(boxes: BoxesLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a ``(boxes, scores)`` pair; plain boxes come without scores."""
    if isinstance(boxes, tuple) and len(boxes) == 2 and np.ndim(boxes[0]) == 2:
        return boxes[0], boxes[1]
    return boxes, None


def _image_name(image: ImageSource, index: int | None) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return "image" if index is None else f"image #{index}"
