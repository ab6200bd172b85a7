"""What a pose network expects and promises: its input spec, kept on the model itself.

Like timm's ``pretrained_cfg``, every :class:`~posekit.models.pose_resnet.PoseResNet` carries an
:class:`InputSpec` as ``model.input_spec``: crop size, channel order and normalisation the
weights were trained with, and the names and left/right pairs of the joints its heatmaps mean.
Loading weights sets it (:func:`posekit.models.weights.load_weights`), and everything that feeds the
network (the top-down core, evaluation, the benchmark) reads it from there.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from posekit.core.coco17 import FLIP_PAIRS, KEYPOINT_NAMES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNEL_ORDERS = ("rgb", "bgr")
# The default weights' conventions (the authors' pose_resnet_*_256x192): also what a random network gets.
DEFAULT_INPUT_SIZE = (192, 256)
DEFAULT_CHANNEL_ORDER = "bgr"


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How to feed a pose network and how to read its heatmaps.

    ``input_size`` is (width, height) as in the official code. ``mean``/``std`` are in ImageNet
    RGB order on the 0..1 scale and applied to channels in ``channel_order`` (see
    :func:`preprocess_crops`). ``flip_pairs`` are the (left, right) joint indices a horizontal
    flip swaps; joints in no pair map to themselves.
    """

    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    channel_order: str = DEFAULT_CHANNEL_ORDER
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    keypoint_names: tuple[str, ...] = KEYPOINT_NAMES
    flip_pairs: tuple[tuple[int, int], ...] = FLIP_PAIRS

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(width, height) of the network's output: a quarter of the input."""
        return self.input_size[0] // 4, self.input_size[1] // 4

    @property
    def aspect_ratio(self) -> float:
        """Crop width / height (0.75 for 192x256 and 288x384)."""
        return self.input_size[0] / self.input_size[1]

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        """Normalise RGB crops for this network. Shape: (N, 3, H, W) 0..255 RGB -> (N, 3, H, W)."""
        return preprocess_crops(crops, self.channel_order, self.mean, self.std)

    def replace(self, **changes: object) -> InputSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def joints_spec(num_keypoints: int) -> InputSpec:
    """The default spec for a network of ``num_keypoints`` heatmaps: COCO-17's names and flip
    pairs for 17, else numbered joints that a flip does not swap (set the real ones on the model)."""
    if num_keypoints == len(KEYPOINT_NAMES):
        return InputSpec()
    return InputSpec(keypoint_names=tuple(f"joint_{k}" for k in range(num_keypoints)), flip_pairs=())


def preprocess_crops(
    crops: torch.Tensor,
    channel_order: str,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
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
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if channel_order == "bgr":
        crops = crops.flip(1)
    mean_t = torch.tensor(mean, dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
    return (crops / 255 - mean_t) / std_t
