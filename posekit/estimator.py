"""One object for the whole top-down pipeline: images in, per image the poses of its people out.

For each image: person boxes (given, detected, or the whole image) -> the top-down core
(:func:`posekit.core.topdown.keypoints`: crops, normalisation as the weights were trained, the
network with the flip test, flip-back, decoding), the same code ``posekit eval`` and
``posekit bench`` run. The network runs on the fastest forward measured for the device
(:func:`posekit.models.runtime.inference_forward`): ONNX Runtime in fp32 on the CPU, torch with folded
BatchNorm, NHWC and fp16 autocast on CUDA.
"""
from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch

from posekit.core import topdown
from posekit.core.boxes import sanitize_boxes
from posekit.core.device import resolve_device
from posekit.core.spec import InputSpec
from posekit.core.validate import check_weights_argument, whole_number
from posekit.defaults import DEFAULT_WEIGHTS, RANDOM, UNTRAINED_SEED
from posekit.errors import BoxError, DownloadError
from posekit.io.images import ImageSource, load_image
from posekit.models.runtime import inference_forward, resolve_backend, resolve_precision
from posekit.models.weights import DEFAULT, WEIGHTS, PoseWeights, load_model, resolve_weights, untrained_model
from posekit.poses import Person, Poses

if TYPE_CHECKING:
    from posekit.models.detect import PersonDetector

__all__ = ["PoseEstimator", "Poses", "Person", "resolve_device"]

# Per image: boxes (N, 4) as x, y, w, h, or (boxes, scores) as PersonDetector / load_detections give.
BoxesLike = Union[np.ndarray, Sequence[Sequence[float]], tuple[np.ndarray, np.ndarray]]


class PoseEstimator:
    """Top-down pose estimation: person boxes in each image -> keypoints per person.

    Args:
        pose_weights: ``"default"`` (the authors' pose_resnet_50_256x192, or mmpose's
            equivalent with a notice when Google Drive refuses), a registered name (downloaded
            into the cache on first use; never replaced by another), a checkpoint path or URL,
            or ``"random"`` (or None) for an untrained network, its weights drawn from a fixed
            seed (the output is not a prediction). The architecture and how to feed it come from
            the checkpoint: see :func:`posekit.models.weights.resolve_weights`.
        detector: None (boxes must be given, else the whole image is one person), a detector
            name (see :data:`posekit.models.detect.DETECTORS`) or a :class:`~posekit.models.detect.PersonDetector`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` ...
        flip_test: average with the heatmaps of the mirrored crop, as the paper evaluates.
        decode: heatmap decoding, ``"argmax"``, ``"quarter"`` (the paper's) or ``"dark"``.
        max_batch: people per network call (each call also runs their mirrored crops); bounds
            the memory.
        depth: ResNet depth when ``pose_weights`` is None.
        backend: ``"auto"`` (onnxruntime for fp32 on the CPU, else torch), ``"torch"`` or
            ``"onnxruntime"``.
        precision: ``"auto"`` (fp16 on CUDA, else fp32), ``"fp32"``, ``"fp16"``, ``"bf16"`` or
            ``"int8"`` (CPU, ONNX Runtime static quantization, built once per weights and cached;
            check it with :func:`posekit.realtime.check_int8`).
        channel_order: ``"rgb"``/``"bgr"`` to override the order the checkpoint implies.
        calibration_images: for int8, pictures of one person each to calibrate the activation
            ranges on (your application's people); None: the people of the bundled COCO images.
        allow_untrained: when registered weights are neither cached nor downloadable, run an
            untrained network of their depth instead of raising (``pretrained`` is then False and
            ``untrained_because`` holds the download error, for the caller to show).

    Attributes:
        model: the network (``nn.Module``) on ``device``; ``model.input_spec`` says how it is fed.
        spec: ``model.input_spec``.
        weights: the registry entry of the weights (reported AP ...), None for other weights.
        weights_source: what runs, in words, for messages.
        pretrained: False for an untrained network.
        untrained_because: the :class:`~posekit.errors.DownloadError` that made ``allow_untrained``
            fall back to an untrained network, else None.

    Raises:
        DownloadError: registered weights are not cached and cannot be downloaded.
        CheckpointError: unknown name, unreadable file, or a checkpoint of another architecture.

    Example:
        >>> estimator = PoseEstimator(detector="fasterrcnn_mobilenet_v3_large_fpn")
        >>> poses = estimator("people.jpg")
        >>> poses.keypoints.shape
        (N, 17, 3)
    """

    def __init__(
        self,
        pose_weights: str | os.PathLike | None = DEFAULT,
        detector: str | PersonDetector | None = None,
        device: str | torch.device = "auto",
        flip_test: bool = True,
        decode: str = "quarter",
        max_batch: int = 64,
        depth: int = 50,
        backend: str = "auto",
        precision: str = "auto",
        channel_order: str | None = None,
        calibration_images: Sequence[ImageSource] | None = None,
        allow_untrained: bool = False,
    ) -> None:
        max_batch = whole_number(max_batch, "max_batch", "people per network call")
        check_weights_argument(pose_weights)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.backend = resolve_backend(backend, self.device, self.precision)
        self.weights: PoseWeights | None = None
        self.untrained_because: DownloadError | None = None
        model = None
        if pose_weights is not None and str(pose_weights) != RANDOM:
            try:
                resolved = resolve_weights(pose_weights, channel_order)
            except DownloadError as error:
                entry = WEIGHTS.get(DEFAULT_WEIGHTS if str(pose_weights) == DEFAULT else str(pose_weights))
                if not allow_untrained or entry is None:  # a URL that fails is the caller's to fix
                    raise
                self.untrained_because = error
                depth = entry.depth  # the untrained stand-in has the depth of the weights asked for
            else:
                if resolved.notice:
                    warnings.warn(resolved.notice, stacklevel=2)
                model = load_model(resolved)
                self.weights = resolved.entry
                self.weights_source = (
                    f"{resolved.name} ({resolved.checkpoint.describe()}, {model.input_spec.channel_order.upper()} input)"
                )
        self.pretrained = model is not None
        if model is None:
            model = untrained_model(depth)
            if channel_order is not None:
                model.input_spec = model.input_spec.replace(channel_order=channel_order)
            self.weights_source = f"random pose_resnet_{depth} (untrained, seed {UNTRAINED_SEED})"
        self.model = model.eval().to(self.device)
        if isinstance(detector, str):
            from posekit.models.detect import PersonDetector

            detector = PersonDetector(detector, device=self.device)
        self.detector = detector
        self.flip_test = flip_test
        self.decode = decode
        self.max_batch = max_batch
        self.calibration_images = calibration_images
        self._forward: tuple[tuple, topdown.Forward] | None = None

    @property
    def spec(self) -> InputSpec:
        """How the network is fed and what its heatmaps mean (``model.input_spec``)."""
        return self.model.input_spec

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network on normalised crops, as the configured backend runs it.

        Built on first use and again whenever ``model``'s weights have changed since (e.g. edited
        in place), so it always computes what ``model`` computes.

        Shape: (B, 3, H, W) float32 -> (B, K, H/4, W/4) float32.
        """
        # Every in-place edit of a tensor bumps its version counter: a cheap weights identity.
        state = tuple((id(t), t._version) for t in self.model.state_dict(keep_vars=True).values())
        if self._forward is None or self._forward[0] != state:
            self._forward = (state, inference_forward(
                self.model, self.backend, self.precision, calibration_images=self.calibration_images))
        return self._forward[1](inputs)

    def __call__(
        self,
        images: ImageSource | Sequence[ImageSource],
        boxes: BoxesLike | Sequence[BoxesLike] | None = None,
        channels: str = "rgb",
    ) -> Poses | list[Poses]:
        """Estimate the poses of everyone in one image or a list of images.

        Args:
            images: a path, PIL image or (H, W, 3) uint8 array, or a list of them.
            boxes: per image the person boxes (N, 4) x, y, w, h, or a ``(boxes, scores)`` pair;
                for a single image just its boxes. None: run the detector, or without one take
                the whole image as one person.
            channels: ``"bgr"`` for OpenCV arrays; see :func:`~posekit.io.images.load_image`.

        Returns:
            For a single image its :class:`~posekit.poses.Poses`; for a list, one per image.
            An image with nobody in it gives an empty one (N = 0).
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
        poses = [self.estimate(a, *_boxes_and_scores(b), name=n) for a, b, n in zip(arrays, per_image, names)]
        return poses[0] if single else poses

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
    ) -> Poses:
        """The poses of the people in the given boxes of one image.

        Boxes that are not finite, have no area or lie outside the image are skipped with one
        warning (see :func:`~posekit.core.boxes.sanitize_boxes`); the others are clipped to the image.

        Args:
            image: a path, PIL image or (H, W, 3) uint8 array.
            boxes_xywh: person boxes in image pixels. Shape: (N, 4).
            box_scores: their scores, shape (N,); 1.0 each when None.
            channels: ``"bgr"`` for OpenCV arrays.
            name: how warnings refer to the image (default: its file name, else "image").

        Returns:
            :class:`~posekit.poses.Poses` of the kept boxes, in box order.
        """
        rgb = load_image(image, channels)
        name = name or _image_name(image, None)
        boxes, keep = sanitize_boxes(boxes_xywh, (rgb.shape[1], rgb.shape[0]), name)
        scores = np.ones(len(keep), np.float32) if box_scores is None else np.asarray(box_scores, np.float32).reshape(-1)
        if len(scores) != len(keep):
            raise BoxError(f"{name}: {len(keep)} boxes but {len(scores)} box scores")
        return Poses(np.asarray(boxes, np.float32).reshape(-1, 4), scores[keep], self.keypoints(rgb, boxes))

    def keypoints(self, rgb: np.ndarray, boxes_xywh: np.ndarray) -> np.ndarray:
        """The batched core: keypoints of valid boxes in one RGB image (:func:`posekit.core.topdown.keypoints`).

        Shape: rgb (H, W, 3) uint8, boxes_xywh (N, 4) finite with positive w, h ->
        (N, K, 3) float32 x, y, score in image pixels.
        """
        points, _, _ = topdown.keypoints(
            self.forward, self.spec, rgb, boxes_xywh, self.flip_test, self.decode, self.max_batch, self.device
        )
        return points

    def estimate_heatmaps(
        self, image: ImageSource, boxes_xywh: np.ndarray, channels: str = "rgb"
    ) -> tuple[np.ndarray, np.ndarray]:
        """What the network sees and says for the people in the given boxes of one image.

        Bad boxes are skipped with a warning, as in :meth:`estimate`.

        Shape: boxes_xywh (M, 4) -> crops (M, H, W, 3) uint8 RGB at the input size, and
        heatmaps (M, K, H/4, W/4) float32 (averaged with the flipped crop's when flip testing).
        """
        rgb = load_image(image, channels)
        boxes, _ = sanitize_boxes(boxes_xywh, (rgb.shape[1], rgb.shape[0]), _image_name(image, None))
        return topdown.crops_and_heatmaps(
            self.forward, self.spec, rgb, boxes, self.flip_test, self.max_batch, self.device
        )


def _boxes_and_scores(boxes: BoxesLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a ``(boxes, scores)`` pair; plain boxes come without scores."""
    if isinstance(boxes, tuple) and len(boxes) == 2 and np.ndim(boxes[0]) == 2:
        return boxes[0], boxes[1]
    return boxes, None


def _image_name(image: ImageSource, index: int | None) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return "image" if index is None else f"image #{index}"
