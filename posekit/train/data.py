"""Training data: the people of a COCO keypoint file, their augmentation, crops, heatmap targets and the loss.

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
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from posekit.core.crop import PIXEL_STD, affine_matrices, box_to_center_scale, warp_batch
from posekit.core.heatmaps import encode
from posekit.core.keypoints import COCO17, KeypointSet
from posekit.core.spec import InputSpec, preprocess_crops
from posekit.errors import AnnotationError, ImageReadError
from posekit.core.boxes import clean_boxes
from posekit.eval.coco import keypoint_set_of, load_keypoint_annotations
from posekit.io.images import load_image


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
        data = load_keypoint_annotations(ann_file, image_dir)
        found_set = keypoint_set_of(data, ann_file)
        self.keypoint_set = keypoint_set or found_set
        if self.keypoint_set.num_keypoints != found_set.num_keypoints:
            raise AnnotationError(
                f"{ann_file}: {found_set.num_keypoints} keypoints per person; expected "
                f"{self.keypoint_set.num_keypoints} ({', '.join(self.keypoint_set.names)})"
            )
        self.image_dir = Path(image_dir)
        self.schedule, self.seed, self.epoch = schedule, seed, 0
        images = {image["id"]: image for image in data["images"]}
        category = next(c.get("id") for c in data["categories"] if "keypoints" in c)
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
        # Checked here, in one line, rather than by a DataLoader worker halfway through an epoch.
        missing = sorted({self._files[i].name for i in self.image_ids.tolist() if not self._files[i].is_file()})
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise ImageReadError(f"{self.image_dir}: {len(missing)} image(s) of people in {ann_file} are missing "
                                 f"({shown}); expected the images of that annotation file in that folder")

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
