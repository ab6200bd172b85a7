"""Training and fine-tuning SimpleBaseline with the paper's recipe, on one CPU or many GPUs (torchrun).

The recipe (:data:`SCHEDULES` ``"paper"``) is the authors' COCO ResNet-50 256x192 experiment
(microsoft/human-pose-estimation.pytorch, ``experiments/coco/resnet50/256x192_d256x3_adam_lr1e-3.yaml``,
``lib/core/loss.py``, ``lib/dataset/JointsDataset.py``, ``lib/utils/utils.py``): Adam at lr 1e-3
(no weight decay: the official optimiser ignores ``WD`` for Adam), x0.1 at epochs 90 and 120,
140 epochs, 32 people per GPU; Gaussian targets of sigma 2 (3 at 384x288); the joints MSE
``0.5 * mean((w * (pred - target))^2)``; scale ``clip(N(0,1) * 0.3 + 1, 0.7, 1.3)``, rotation
``clip(N(0,1) * 40, -80, 80)`` degrees with probability 0.6, horizontal flip with probability
0.5 and the left/right joint swap.

The data pipeline keeps one geometry with inference: DataLoader workers only decode images;
each batch's crops are one :func:`posekit.core.crop.warp_batch` (``grid_sample``) on the training
device with the official affine matrices (:func:`posekit.core.crop.affine_matrices`), and targets
come from :func:`posekit.core.heatmaps.encode`. Augmentation is drawn per person from a random
stream keyed by (seed, epoch, person), so it does not depend on the number of processes, the
batch size or the DataLoader workers: a resumed run repeats an uninterrupted one, and N
processes see the global batch one process would.

Under ``torchrun`` (``WORLD_SIZE`` set) every process trains a DistributedDataParallel replica
(NCCL on CUDA, gloo on CPU) on its share of a DistributedSampler; rank 0 validates, logs and
writes checkpoints.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from posekit.core.crop import PIXEL_STD, affine_matrices, box_to_center_scale, warp_batch
from posekit.core.heatmaps import decode, encode, flip_back
from posekit.core.keypoints import COCO17, KeypointSet
from posekit.core.spec import InputSpec, preprocess_crops
from posekit.errors import AnnotationError, CheckpointError, DownloadError, PosekitError
from posekit.core.boxes import clean_boxes
from posekit.io.files import atomic_write, read_json
from posekit.io.images import load_image
from posekit.models.pose_resnet import pose_resnet
from posekit.models.weights import SPEC_KEY, WEIGHTS, resolve_weights
from posekit.train import distributed

# PCK threshold as a fraction of the person box's longer side.
PCK_THRESHOLD = 0.1
CHECKPOINT_FORMAT = "posekit-train-1"


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Optimisation and augmentation settings; see :data:`SCHEDULES` for where the values come from."""

    epochs: int
    lr: float
    lr_steps: tuple[int, ...]
    lr_factor: float = 0.1
    batch_size: int = 32
    scale_factor: float = 0.3
    rotation_factor: float = 40.0
    rotation_probability: float = 0.6
    flip_probability: float = 0.5
    half_body_probability: float = 0.0


# Half-body crops (off in the paper's code; HRNet's loader added them, PROB_HALF_BODY 0.3): a
# person with more than HALF_BODY_MIN_JOINTS labelled joints is cropped to its upper or lower
# body, the joints' extent padded by HALF_BODY_PADDING. Upper body: joints named as COCO's head
# and arms.
HALF_BODY_PROBABILITY = 0.3
HALF_BODY_MIN_JOINTS = 8
HALF_BODY_PADDING = 1.5
UPPER_BODY_NAMES = frozenset(COCO17.names[:11])


SCHEDULES: dict[str, Schedule] = {
    # The official COCO res50 256x192 experiment (TRAIN and DATASET sections of its yaml).
    "paper": Schedule(epochs=140, lr=1e-3, lr_steps=(90, 120)),
    # posekit's choice for starting from a COCO model: the paper's augmentation and Adam, a
    # tenth of its epochs, the same two drops at the same fractions of the run.
    "finetune": Schedule(epochs=14, lr=1e-3, lr_steps=(9, 12)),
}


def default_sigma(input_size: Sequence[int]) -> float:
    """The paper's target sigma: 2 for 256x192 inputs (48x64 heatmaps), 3 for 384x288 and above."""
    return 3.0 if input_size[1] >= 384 else 2.0


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild and feed a trained model; stored in every checkpoint.

    ``input_size`` is (width, height); ``channel_order`` is what the network was trained on
    ("rgb" for ImageNet or random starts, the init weights' order when fine-tuning).
    """

    depth: int
    input_size: tuple[int, int]
    channel_order: str
    sigma: float
    keypoint_set: KeypointSet = COCO17

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(width, height) of the heatmaps: a quarter of the input."""
        return self.input_size[0] // 4, self.input_size[1] // 4

    def input_spec(self) -> InputSpec:
        """How to feed the model and read its heatmaps, as inference reads it from ``model.input_spec``."""
        return InputSpec(input_size=tuple(self.input_size), channel_order=self.channel_order,
                         keypoint_names=self.keypoint_set.names, flip_pairs=self.keypoint_set.flip_pairs)

    def to_dict(self) -> dict:
        """Plain types for a ``weights_only`` checkpoint."""
        return {"depth": self.depth, "input_size": list(self.input_size), "channel_order": self.channel_order,
                "sigma": self.sigma, "keypoint_set": self.keypoint_set.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        """The inverse of :meth:`to_dict`."""
        return cls(int(data["depth"]), tuple(data["input_size"]), data["channel_order"], float(data["sigma"]),
                   KeypointSet.from_dict(data["keypoint_set"]))


# --------------------------------------------------------------------------------------------
# Data: people of a COCO keypoint file; workers decode, the training device crops
# --------------------------------------------------------------------------------------------


def read_keypoint_file(ann_file: str | os.PathLike) -> tuple[dict, KeypointSet]:
    """A COCO keypoint file of any keypoint set and that set (from its first keypoint category).

    Raises AnnotationError for a missing file, bad JSON, no keypoint category, or annotations
    whose keypoints do not hold 3 numbers per joint.
    """
    path = Path(ann_file)
    data = read_json(path, AnnotationError, "a COCO keypoint annotation file")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise AnnotationError(f"{path}: expected a COCO object with 'images' and 'annotations' lists")
    categories = [c for c in data.get("categories") or () if isinstance(c, dict) and c.get("keypoints")]
    if not categories:
        raise AnnotationError(f"{path}: no category lists 'keypoints'; expected a COCO keypoint category")
    keypoint_set = COCO17 if categories[0]["keypoints"] == list(COCO17.names) else KeypointSet.from_coco(categories[0])
    needed = ("image_id", "bbox", "keypoints")
    width = 3 * keypoint_set.num_keypoints
    for index, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict) or any(k not in annotation for k in needed) or len(annotation["keypoints"]) != width:
            raise AnnotationError(
                f"{path}: annotations[{index}] lacks {', '.join(needed)} or has not {width} keypoint numbers "
                f"({keypoint_set.num_keypoints} joints x 3)"
            )
    return data, keypoint_set


class KeypointPeople(torch.utils.data.Dataset):
    """The people of a COCO keypoint file, selected as the official training code does.

    People: not crowd, category of the keypoint set, at least one labelled joint, a box that
    still has an area once clipped to its image. Boxes become (center, scale) at the input's
    aspect ratio with padding 1.25. Joint visibility is ``min(v, 1)``.

    Items are ``(image, index, augmentation)``: the decoded RGB image as a (3, H, W) uint8
    tensor, the person's index into the arrays below, and its augmentation draws (3,) float64
    (scale multiplier, rotation in degrees, flip 0/1), all 1/0/0 unless ``augment``.

    Attributes (N people): image_ids (N,), centers (N, 2), scales (N, 2), boxes (N, 4) xywh,
    joints (N, K, 2) image px, visibility (N, K).
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        input_size: Sequence[int],
        schedule: Schedule | None = None,
        seed: int = 0,
        keypoint_set: KeypointSet | None = None,
    ) -> None:
        data, found_set = read_keypoint_file(ann_file)
        self.keypoint_set = keypoint_set or found_set
        if self.keypoint_set.num_keypoints != found_set.num_keypoints:
            raise AnnotationError(
                f"{ann_file}: {found_set.num_keypoints} keypoints per person; expected "
                f"{self.keypoint_set.num_keypoints} ({', '.join(self.keypoint_set.names)})"
            )
        self.image_dir = Path(image_dir)
        self.schedule, self.seed, self.epoch = schedule, seed, 0
        images = {image["id"]: image for image in data["images"]}
        category = next(c["id"] for c in data["categories"] if c.get("keypoints"))
        people = [
            a for a in data["annotations"]
            if not a.get("iscrowd", 0) and a.get("category_id", category) == category and max(a["keypoints"][2::3]) > 0
            and a["image_id"] in images
        ]
        k = self.keypoint_set.num_keypoints
        keypoints = np.asarray([a["keypoints"] for a in people], dtype=np.float64).reshape(len(people), k, 3)
        sizes = np.asarray([(images[a["image_id"]]["width"], images[a["image_id"]]["height"]) for a in people],
                           dtype=np.float64).reshape(-1, 2)
        boxes, usable = clean_boxes(np.asarray([a["bbox"] for a in people], dtype=np.float64).reshape(-1, 4), sizes)
        usable &= (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        self.image_ids = np.asarray([a["image_id"] for a in people], dtype=np.int64)[usable]
        self.boxes = boxes[usable]
        self.joints = keypoints[usable, :, :2]
        self.visibility = np.minimum(keypoints[usable, :, 2], 1.0)
        self.centers, self.scales = box_to_center_scale(self.boxes, aspect_ratio=input_size[0] / input_size[1])
        self._files = {image_id: self.image_dir / image["file_name"] for image_id, image in images.items()}
        if len(self) == 0:
            raise AnnotationError(f"{ann_file}: no person with a labelled keypoint and a box; nothing to train on")

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, image_id: int) -> Path:
        """The file of image ``image_id``."""
        return self._files[image_id]

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentation draws ``__getitem__`` returns."""
        self.epoch = epoch

    def augmentation(self, index: int) -> np.ndarray:
        """Scale multiplier, rotation (deg), flip (0/1), half-body crop (0/1) and its side (1: upper
        body preferred, 0: lower) of person ``index`` this epoch. Shape: (5,)."""
        s = self.schedule
        if s is None:
            return np.array([1.0, 0.0, 0.0, 0.0, 0.0])
        rng = np.random.default_rng([self.seed, self.epoch, index])
        normal = rng.standard_normal(2)
        scale = np.clip(normal[0] * s.scale_factor + 1, 1 - s.scale_factor, 1 + s.scale_factor)
        rotate = rng.random() <= s.rotation_probability
        angle = np.clip(normal[1] * s.rotation_factor, -2 * s.rotation_factor, 2 * s.rotation_factor) if rotate else 0.0
        flip = float(rng.random() <= s.flip_probability)
        # HRNet prefers the upper body when a standard normal draw is below 0.5 (about 69%).
        half_body, upper = rng.random() < s.half_body_probability, rng.standard_normal() < 0.5
        return np.array([scale, angle, flip, float(half_body), float(upper)])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, np.ndarray]:
        image = load_image(self.image_path(int(self.image_ids[index])), upright=False)  # as OpenCV reads it
        return torch.from_numpy(image).permute(2, 0, 1), index, self.augmentation(index)


def collate_people(items: list[tuple[torch.Tensor, int, np.ndarray]]) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Batch images of any sizes: zero-padded at the right and bottom to the largest.

    Returns images (B, 3, H, W) uint8, their widths (B,), person indices (B,), augmentation (B, 3).
    """
    height = max(image.shape[1] for image, _, _ in items)
    width = max(image.shape[2] for image, _, _ in items)
    images = torch.zeros((len(items), 3, height, width), dtype=torch.uint8)
    for slot, (image, _, _) in enumerate(items):
        images[slot, :, : image.shape[1], : image.shape[2]] = image
    widths = np.asarray([image.shape[2] for image, _, _ in items], dtype=np.float64)
    return images, widths, np.asarray([i for _, i, _ in items]), np.stack([a for _, _, a in items])


def training_batch(
    images: torch.Tensor,
    widths: np.ndarray,
    people: KeypointPeople,
    indices: np.ndarray,
    augmentation: np.ndarray,
    spec: ModelSpec,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network inputs, heatmap targets and joint weights for a batch of people.

    As the official loader, for a flipped person: the image is mirrored (x -> width - 1 - x),
    its joints too with left and right swapped, and the box centre with them; then the crop is
    the affine warp of (center, scale * multiplier, rotation). Here the mirror is folded into
    the crop's matrix, so the whole batch is one ``grid_sample`` on ``device``.

    A half-body person's (center, scale) come from :func:`half_body_boxes` first, as in HRNet.

    Shape: images (B, 3, H, W) uint8, widths (B,), indices (B,), augmentation (B, 5) ->
    inputs (B, 3, h, w), targets (B, K, h/4, w/4), weights (B, K), on ``device``.
    """
    flipped = augmentation[:, 2] > 0.5
    mirror = widths - 1
    upper = np.isin(spec.keypoint_set.names, list(UPPER_BODY_NAMES))
    half_centers, half_scales, half = half_body_boxes(
        people.joints[indices], people.visibility[indices], upper, augmentation[:, 4] > 0.5,
        spec.input_size[0] / spec.input_size[1],
    )
    half &= augmentation[:, 3] > 0.5
    centers = np.where(half[:, None], half_centers, people.centers[indices]).astype(np.float64)
    scales = np.where(half[:, None], half_scales, people.scales[indices]).astype(np.float32)
    centers[:, 0] = np.where(flipped, mirror - centers[:, 0], centers[:, 0])
    scales = scales * augmentation[:, :1].astype(np.float32)
    joints, visibility = people.joints[indices].copy(), people.visibility[indices]
    swapped = spec.keypoint_set.flip_index
    joints = np.where(flipped[:, None, None], joints[:, swapped], joints)
    visibility = np.where(flipped[:, None], visibility[:, swapped], visibility)
    joints[..., 0] = np.where(flipped[:, None], mirror[:, None] - joints[..., 0], joints[..., 0])

    to_crop = affine_matrices(centers, scales, spec.input_size, augmentation[:, 1])
    crop_to_image = affine_matrices(centers, scales, spec.input_size, augmentation[:, 1], inverse=True)
    # Sampling the mirrored image at x is sampling the image at width - 1 - x.
    crop_to_image[flipped, 0] *= -1
    crop_to_image[flipped, 0, 2] += mirror[flipped]
    crops = warp_batch(images.to(device, non_blocking=True), crop_to_image, spec.input_size)

    in_crop = np.einsum("nij,nkj->nki", to_crop[:, :, :2], joints) + to_crop[:, None, :, 2]
    targets, weights = encode(in_crop, visibility, spec.input_size, spec.heatmap_size, spec.sigma)
    return (
        preprocess_crops(crops, spec.channel_order),
        torch.from_numpy(targets).to(device),
        torch.from_numpy(weights).to(device),
    )


def half_body_boxes(
    joints: np.ndarray, visibility: np.ndarray, upper: np.ndarray, prefer_upper: np.ndarray, aspect_ratio: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HRNet's half-body crops: the (center, scale) of each person's upper or lower body.

    Upper when preferred and more than 2 upper joints are labelled, else lower when more than 2
    lower ones are, else upper; the crop centres on the chosen joints' mean and spans their
    extent, widened or heightened to ``aspect_ratio`` and padded by 1.5. Usable for people with
    more than 8 labelled joints of which at least 2 are chosen.

    Shape: joints (N, K, 2), visibility (N, K), upper (K,) bool, prefer_upper (N,) bool ->
    centers (N, 2) float32, scales (N, 2) float32, usable (N,) bool.
    """
    labelled = visibility > 0
    upper_count, lower_count = (labelled & upper).sum(1), (labelled & ~upper).sum(1)
    take_upper = (prefer_upper & (upper_count > 2)) | (lower_count <= 2)
    chosen = labelled & np.where(take_upper[:, None], upper, ~upper)
    count = chosen.sum(1)
    usable = (labelled.sum(1) > HALF_BODY_MIN_JOINTS) & (count >= 2)
    points = joints.astype(np.float32)
    center = np.where(chosen[..., None], points, 0).sum(1) / np.maximum(count, 1)[:, None]
    low = np.where(chosen[..., None], points, np.inf).min(1)
    high = np.where(chosen[..., None], points, -np.inf).max(1)
    size = np.where(usable[:, None], high - low, 1.0)
    width = np.maximum(size[:, 0], size[:, 1] * aspect_ratio)
    height = np.maximum(size[:, 1], size[:, 0] / aspect_ratio)
    scales = np.stack([width, height], 1) / PIXEL_STD * HALF_BODY_PADDING
    return center.astype(np.float32), scales.astype(np.float32), usable


def joints_mse(heatmaps: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The paper's loss: ``0.5 * mean over people, joints and pixels of (w * (pred - target))^2``.

    Equal to the official ``JointsMSELoss(use_target_weight=True)`` (per-joint MSE, halved,
    averaged over joints). Shape: heatmaps, targets (B, K, h, w), weights (B, K) -> scalar.
    """
    return 0.5 * ((heatmaps.float() - targets) * weights[..., None, None]).pow(2).mean()


# --------------------------------------------------------------------------------------------
# Models: initialisation, checkpoints
# --------------------------------------------------------------------------------------------


def imagenet_trunk(depth: int) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet weights (IMAGENET1K_V1, the file the paper starts from) without the classifier.

    Downloaded once into torch's hub cache. Raises DownloadError offline, in one sentence.
    """
    import torchvision

    weights = torchvision.models.get_model_weights(f"resnet{depth}").IMAGENET1K_V1
    try:
        state = weights.get_state_dict(progress=True)
    except (OSError, RuntimeError) as error:
        raise DownloadError(
            f"the ImageNet resnet{depth} weights are not in torch's cache ({torch.hub.get_dir()}/checkpoints) and "
            f"cannot be downloaded ({error}); connect once, copy {Path(weights.url).name} there, or use --init none"
        ) from None
    return {key: value for key, value in state.items() if not key.startswith("fc.")}


def build_model(depth: int, keypoint_set: KeypointSet, init: str) -> tuple[nn.Module, str]:
    """A PoseResNet for ``keypoint_set`` started from ``init``, and the channel order it expects.

    ``init``: ``"none"`` (PyTorch's initialisation, RGB), ``"imagenet"`` (torchvision's trunk,
    RGB, the head as the paper initialises it) or pose weights (a registered name or a
    checkpoint file, posekit-trained ones included): trunk and deconvolutions are loaded, the
    final 1x1 layer too when it has K outputs, else it is re-initialised for the K joints.

    Raises CheckpointError when the file does not fit a ResNet of ``depth``.
    """
    model = pose_resnet(depth=depth, num_joints=keypoint_set.num_keypoints)
    if init == "none":
        return model, "rgb"
    if init == "imagenet":
        missing, unexpected = model.load_state_dict(imagenet_trunk(depth), strict=False)
        if unexpected or any(not k.startswith(("deconv_layers.", "final_layer.")) for k in missing):
            raise CheckpointError(f"torchvision's resnet{depth} does not fit pose_resnet_{depth}: {unexpected or missing}")
        return model, "rgb"
    state, channel_order = _pose_state(init)
    if state.get("final_layer.weight", torch.empty(0)).shape[:1] != (keypoint_set.num_keypoints,):
        state = {k: v for k, v in state.items() if not k.startswith("final_layer.")}
    expected = model.state_dict()
    wrong = [k for k, v in state.items() if k not in expected or expected[k].shape != v.shape]
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")
               and not k.startswith("final_layer.")]
    if wrong or missing:
        raise CheckpointError(
            f"{init} does not fit pose_resnet_{depth}: {len(wrong)} unexpected or wrong-shape key(s) "
            f"({', '.join(wrong[:3])}), {len(missing)} missing ({', '.join(missing[:3])}); check --depth"
        )
    model.load_state_dict(state, strict=False)
    return model, channel_order


def _pose_state(init: str) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, channel order) of registered or local pose weights (see :func:`posekit.models.weights.resolve_weights`)."""
    if init not in WEIGHTS and not init.startswith(("http://", "https://")) and not Path(init).is_file():
        raise CheckpointError(f"--init {init!r} is neither imagenet, none, a registered name ({', '.join(WEIGHTS)}), "
                              "a URL nor a file")
    resolved = resolve_weights(init)
    return resolved.checkpoint.state_dict, resolved.spec.channel_order


def _read_training_checkpoint(path: Path) -> dict | None:
    """A checkpoint written by :class:`Trainer` (tensor-only unpickling), or None for any other file."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not ours, or not a checkpoint at all: the caller decides
        return None
    return checkpoint if isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT else None


def load_trained(path: str | os.PathLike) -> tuple[nn.Module, ModelSpec]:
    """The model of a ``posekit train`` checkpoint (eval mode, CPU) and its spec (depth, input size,
    channel order, keypoint set).

    Raises CheckpointError if the file is not a posekit training checkpoint.
    """
    checkpoint = _read_training_checkpoint(Path(path))
    if checkpoint is None:
        raise CheckpointError(f"{path} is not a checkpoint written by posekit train (expected last.pth or best.pth)")
    spec = ModelSpec.from_dict(checkpoint["spec"])
    model = pose_resnet(depth=spec.depth, num_joints=spec.keypoint_set.num_keypoints)
    model.load_state_dict(checkpoint["state_dict"])
    model.input_spec = spec.input_spec()
    return model.eval(), spec


# --------------------------------------------------------------------------------------------
# Prediction and validation
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def predict_people(
    model: nn.Module, people: KeypointPeople, spec: ModelSpec, batch_size: int = 32, flip_test: bool = True
) -> np.ndarray:
    """Keypoints of every person of ``people`` from its box (no augmentation), as inference does it.

    Flip test with the keypoint set's flip pairs and the official one-pixel shift; quarter-pixel
    decoding. The model is left in eval mode. Shape: -> (N, K, 3) float32 image px x, y, score.
    """
    model.eval()
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(people, batch_size=batch_size, collate_fn=collate_people)
    rows = []
    for images, _, indices, _ in loader:
        crop_to_image = affine_matrices(people.centers[indices], people.scales[indices], spec.input_size, inverse=True)
        crops = preprocess_crops(warp_batch(images.to(device), crop_to_image, spec.input_size), spec.channel_order)
        heatmaps = model(torch.cat([crops, crops.flip(3)]) if flip_test else crops).float()
        if flip_test:
            half = len(crops)
            heatmaps = (heatmaps[:half] + flip_back(heatmaps[half:], spec.keypoint_set.flip_pairs)) * 0.5
        coords, scores = decode(heatmaps.cpu().numpy(), people.centers[indices], people.scales[indices])
        rows.append(np.concatenate([coords, scores[..., None]], 2))
    return np.concatenate(rows)


def pck(predicted: np.ndarray, people: KeypointPeople, threshold: float = PCK_THRESHOLD) -> float:
    """Fraction of labelled joints within ``threshold`` x the longer box side of the truth.

    Shape: predicted (N, K, 2 or 3) image px -> float in 0..1.
    """
    distance = np.linalg.norm(predicted[..., :2] - people.joints, axis=2)
    size = people.boxes[:, 2:].max(1, keepdims=True)
    labelled = people.visibility > 0
    return float((distance <= threshold * size)[labelled].mean())


def validate(model: nn.Module, people: KeypointPeople, spec: ModelSpec, ann_file: Path, batch_size: int) -> dict:
    """PCK@0.1 on the ground-truth boxes, and for COCO-17 also COCO AP through :func:`posekit.eval.coco.evaluate`."""
    metrics = {"pck": pck(predict_people(model, people, spec, batch_size), people)}
    if spec.keypoint_set.names == COCO17.names:
        from posekit.eval.coco import CocoPersonDataset, evaluate

        dataset = CocoPersonDataset(ann_file, people.image_dir)  # fed as model.input_spec says
        metrics["ap"] = evaluate(model, dataset, batch_size=batch_size, progress=False).stats["AP"]
    return metrics


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """One training run; ``posekit train`` fills it from its options.

    ``epochs``, ``batch_size`` (people per process) and ``lr`` default to the schedule's.
    ``half_body``: HRNet's half-body crops with probability 0.3 (off in the paper's recipe).
    ``val_every``: validate every N epochs (and after the last). ``out``: checkpoints
    ``last.pth`` / ``best.pth`` and ``log.csv`` (plus TensorBoard events when installed).
    """

    ann_file: Path
    image_dir: Path
    out: Path
    val_ann_file: Path | None = None
    val_image_dir: Path | None = None
    depth: int = 50
    input_size: tuple[int, int] = (192, 256)
    schedule: str = "paper"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    init: str = "imagenet"
    resume: Path | None = None
    workers: int = 4
    sync_bn: bool = False
    amp: bool = False
    half_body: bool = False
    seed: int = 0
    val_every: int = 10
    device: str = "auto"
    progress: bool = True


class Trainer:
    """Sets up a run (processes, data, model, optimiser; or everything from ``resume``) and trains it."""

    def __init__(self, config: TrainConfig) -> None:
        from posekit.core.device import resolve_device

        if config.schedule not in SCHEDULES:
            raise PosekitError(f"schedule {config.schedule!r} is unknown; expected one of {', '.join(SCHEDULES)}")
        self.config = config
        self.rank, self.world = distributed.setup()
        self.device = distributed.device_for_rank(resolve_device(config.device))
        if any(side % 32 for side in config.input_size):
            raise PosekitError(f"input {config.input_size[1]}x{config.input_size[0]}: expected a height and width "
                               "that are multiples of 32 (the ResNet's stride), e.g. 256x192")
        if config.amp and self.device.type != "cuda":
            raise PosekitError(f"--amp needs a CUDA device; this run is on {self.device}")
        if config.sync_bn and self.device.type != "cuda":
            raise PosekitError(f"--sync-bn needs CUDA devices (torch's SyncBatchNorm); this run is on {self.device}")
        checkpoint = self._load_resume(config.resume) if config.resume else None
        if checkpoint is None:
            overrides = {"epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
                         "half_body_probability": HALF_BODY_PROBABILITY if config.half_body else None}
            self.schedule = dataclasses.replace(
                SCHEDULES[config.schedule], **{k: v for k, v in overrides.items() if v is not None}
            )
        else:  # the run continues as it was set up; only its length may change
            saved = {**checkpoint["schedule"], "lr_steps": tuple(checkpoint["schedule"]["lr_steps"])}
            self.schedule = dataclasses.replace(Schedule(**saved), epochs=config.epochs or saved["epochs"])
        self.seed = int(checkpoint["seed"]) if checkpoint is not None else config.seed
        torch.manual_seed(self.seed)  # the head's (and a random trunk's) initialisation
        self.train_people = KeypointPeople(
            config.ann_file, config.image_dir,
            checkpoint["spec"]["input_size"] if checkpoint is not None else config.input_size, self.schedule, self.seed
        )
        if checkpoint is not None:
            self.spec = ModelSpec.from_dict(checkpoint["spec"])
            model = pose_resnet(self.spec.depth, num_joints=self.spec.keypoint_set.num_keypoints)
            model.load_state_dict(checkpoint["state_dict"])
        else:
            model, channel_order = build_model(config.depth, self.train_people.keypoint_set, config.init)
            self.spec = ModelSpec(config.depth, tuple(config.input_size), channel_order,
                                  default_sigma(config.input_size), self.train_people.keypoint_set)
        if self.spec.keypoint_set.num_keypoints != self.train_people.keypoint_set.num_keypoints:
            raise PosekitError(f"{config.ann_file} has {self.train_people.keypoint_set.num_keypoints} joints; "
                               f"the checkpoint's model has {self.spec.keypoint_set.num_keypoints}")
        self.train_people.keypoint_set = self.spec.keypoint_set
        model.input_spec = self.spec.input_spec()
        if config.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.ddp = distributed.wrap(self.model, self.device) if self.world > 1 else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.schedule.lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(self.schedule.lr_steps), gamma=self.schedule.lr_factor
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
        self.epoch, self.best, self.history = 0, -math.inf, []
        if checkpoint is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.scaler.load_state_dict(checkpoint["scaler"])
            self.epoch, self.best, self.history = checkpoint["epoch"], checkpoint["best"], checkpoint["history"]
        self.val_people = None
        if config.val_ann_file is not None:
            self.val_people = KeypointPeople(config.val_ann_file, config.val_image_dir or config.image_dir,
                                             self.spec.input_size, keypoint_set=self.spec.keypoint_set)
        self.sampler = torch.utils.data.DistributedSampler(
            self.train_people, num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed
        )

    @staticmethod
    def _load_resume(path: Path) -> dict:
        checkpoint = _read_training_checkpoint(Path(path))
        if checkpoint is None:
            raise CheckpointError(f"--resume {path}: not a checkpoint written by posekit train (expected OUT/last.pth)")
        return checkpoint

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """This process's prepared batches of ``epoch``: (inputs, targets, weights) on the device."""
        self.sampler.set_epoch(epoch)
        self.train_people.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            self.train_people, batch_size=self.schedule.batch_size, sampler=self.sampler,
            num_workers=self.config.workers, collate_fn=collate_people, pin_memory=self.device.type == "cuda",
        )
        for images, widths, indices, augmentation in loader:
            yield training_batch(images, widths, self.train_people, indices, augmentation, self.spec, self.device)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> float:
        """One optimisation step on this process's batch; returns its loss."""
        self.ddp.train()
        amp = torch.autocast("cuda", dtype=torch.float16) if self.config.amp else nullcontext()
        with amp:
            loss = joints_mse(self.ddp(inputs), targets, weights)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def run(self) -> list[dict]:
        """Train from ``self.epoch`` to the schedule's last epoch; returns the log rows (one per epoch)."""
        from tqdm.auto import tqdm

        config = self.config
        writer = _tensorboard(config.out) if self.rank == 0 else None
        try:
            for epoch in range(self.epoch, self.schedule.epochs):
                start, losses = time.perf_counter(), []
                lr = self.optimizer.param_groups[0]["lr"]
                bar = tqdm(self.batches(epoch), total=math.ceil(len(self.sampler) / self.schedule.batch_size),
                           desc=f"epoch {epoch + 1}/{self.schedule.epochs}", disable=not config.progress or self.rank != 0)
                for inputs, targets, weights in bar:
                    losses.append(self.step(inputs, targets, weights))
                    bar.set_postfix(loss=f"{losses[-1]:.3g}")
                self.scheduler.step()
                self.epoch = epoch + 1
                row = {"epoch": self.epoch, "lr": lr, "loss": distributed.mean(float(np.mean(losses)), self.device),
                       "seconds": round(time.perf_counter() - start, 3)}
                last = self.epoch == self.schedule.epochs
                if self.rank == 0 and self.val_people is not None and (self.epoch % config.val_every == 0 or last):
                    row.update(validate(self.model, self.val_people, self.spec, config.val_ann_file, self.schedule.batch_size))
                self.history.append(row)
                if self.rank == 0:
                    self._save(row, writer)
                distributed.barrier()
        finally:
            if writer is not None:
                writer.close()
        return self.history

    def _save(self, row: dict, writer: object | None) -> None:
        """Rank 0: the log (CSV, TensorBoard) and the checkpoints of the epoch just finished."""
        out = self.config.out
        metric = row.get("ap", row.get("pck"))
        improved = metric is not None and metric > self.best
        self.best = max(self.best, metric) if metric is not None else self.best
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            # posekit's checkpoint layout (weights.save_checkpoint), so PoseEstimator(path) feeds the
            # model right; SyncBatchNorm keeps BatchNorm's keys: the state loads into a plain PoseResNet.
            "state_dict": self.model.state_dict(),
            SPEC_KEY: dataclasses.asdict(self.spec.input_spec()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "history": self.history,
            "spec": self.spec.to_dict(),
            "schedule": {**dataclasses.asdict(self.schedule), "lr_steps": list(self.schedule.lr_steps)},
            "seed": self.seed,
        }
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        for name in ("last.pth",) + (("best.pth",) if improved else ()):
            with atomic_write(out / name) as file:
                file.write(buffer.getvalue())
        with atomic_write(out / "log.csv", "w") as file:
            columns = list(dict.fromkeys(key for r in self.history for key in r))
            table = csv.DictWriter(file, fieldnames=columns)
            table.writeheader()
            table.writerows(self.history)
        if writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(key, value, row["epoch"])
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
        print(shown, file=sys.stderr)


def _tensorboard(out: Path) -> object | None:
    """A TensorBoard writer in ``out/tensorboard`` if the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: the CSV log has the same numbers
        return None
    return SummaryWriter(str(out / "tensorboard"))


def train(config: TrainConfig) -> list[dict]:
    """Run a whole training (see :class:`TrainConfig`); returns the log rows. Ends the process group it started."""
    try:
        return Trainer(config).run()
    finally:
        distributed.teardown()
