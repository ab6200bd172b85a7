"""SimpleBaseline's network: a ResNet trunk, three stride-2 deconvolutions and a 1x1 heatmap conv.

The module tree mirrors the paper's code (microsoft/human-pose-estimation.pytorch), so its
``state_dict`` has exactly the keys and shapes of the released checkpoints (``conv1``, ``bn1``,
``layer1``..``layer4``, ``deconv_layers.{0,1,3,4,6,7}``, ``final_layer``) and they load without
renaming. The residual blocks are torchvision's.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from posekit.core.spec import InputSpec, joints_spec

DECONV_CHANNELS = 256
NUM_DECONV_LAYERS = 3


class CaffeBottleneck(Bottleneck):
    """torchvision's Bottleneck with the stride on the first 1x1 conv instead of the 3x3 conv.

    This is the "caffe" ResNet of the original MSRA models, which the authors also trained
    SimpleBaselines on. Module names and shapes are those of :class:`Bottleneck`, so both
    styles share one checkpoint layout; only where the downsampling happens differs.
    """

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__(inplanes, planes, stride=1, downsample=downsample)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)
        self.stride = stride


ResidualBlock = type[BasicBlock] | type[Bottleneck]

# depth -> (block, number of blocks in layer1..layer4), as in the ResNet paper.
RESNET_STAGES: dict[int, tuple[ResidualBlock, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _make_stage(
    block: ResidualBlock, in_channels: int, planes: int, num_blocks: int, stride: int
) -> nn.Sequential:
    """One ResNet stage; the first block changes resolution/width through a 1x1 projection."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    blocks = [block(in_channels, planes, stride, downsample)]
    blocks += [block(out_channels, planes) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _make_deconv_layers(in_channels: int) -> nn.Sequential:
    """Three (ConvTranspose2d k4 s2 p1, BatchNorm2d, ReLU) triples: 8x upsampling to stride 4."""
    layers: list[nn.Module] = []
    for i in range(NUM_DECONV_LAYERS):
        layers += [
            nn.ConvTranspose2d(
                in_channels if i == 0 else DECONV_CHANNELS,
                DECONV_CHANNELS,
                kernel_size=4,
                stride=2,
                padding=1,
                output_padding=0,
                bias=False,
            ),
            nn.BatchNorm2d(DECONV_CHANNELS),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class PoseResNet(nn.Module):
    """SimpleBaseline (Xiao et al., ECCV 2018): ResNet trunk + deconvolution head.

    The trunk has no pooling/classifier, so the state_dict holds only what the official
    checkpoints hold. The trunk keeps PyTorch's default initialisation (the paper starts it
    from ImageNet weights); the head is initialised as the paper's code does it.

    Args:
        block: ``BasicBlock`` (depth 18/34), ``Bottleneck`` or ``CaffeBottleneck``.
        blocks_per_stage: number of blocks in layer1..layer4.
        num_joints: number of heatmaps.

    Attributes:
        input_spec: how to feed it and read its heatmaps (:class:`~posekit.core.spec.InputSpec`);
            the default weights' conventions until weights are loaded
            (:func:`posekit.models.weights.load_weights` sets the checkpoint's).

    Shape:
        input (N, 3, H, W) normalised image crops -> heatmaps (N, num_joints, H/4, W/4)
        (H and W multiples of 32).
    """

    def __init__(
        self, block: ResidualBlock, blocks_per_stage: tuple[int, int, int, int], num_joints: int = 17
    ) -> None:
        super().__init__()
        expansion = block.expansion
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _make_stage(block, 64, 64, blocks_per_stage[0], stride=1)
        self.layer2 = _make_stage(block, 64 * expansion, 128, blocks_per_stage[1], stride=2)
        self.layer3 = _make_stage(block, 128 * expansion, 256, blocks_per_stage[2], stride=2)
        self.layer4 = _make_stage(block, 256 * expansion, 512, blocks_per_stage[3], stride=2)
        self.deconv_layers = _make_deconv_layers(512 * expansion)
        self.final_layer = nn.Conv2d(DECONV_CHANNELS, num_joints, kernel_size=1)
        self.input_spec: InputSpec = joints_spec(num_joints)
        self._init_head()

    def _init_head(self) -> None:
        # Small random weights keep the initial heatmaps near zero, like the training targets'
        # background; BatchNorm starts as the identity.
        for module in self.deconv_layers.modules():
            if isinstance(module, nn.ConvTranspose2d):
                nn.init.normal_(module.weight, std=0.001)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Heatmaps for a batch of crops. Shape: images (N, 3, H, W) -> (N, K, H/4, W/4)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


def pose_resnet(depth: int = 50, num_joints: int = 17, style: str = "pytorch") -> PoseResNet:
    """Build a SimpleBaseline PoseResNet with random weights.

    Pretrained ones: :func:`posekit.models.weights.load_model` (architecture from the checkpoint) or
    :func:`posekit.models.weights.load_weights` (into this model).

    Args:
        depth: 18, 34, 50, 101 or 152.
        num_joints: number of output heatmaps (17 for COCO).
        style: "pytorch" (stride on each bottleneck's 3x3 conv) or "caffe" (stride on its
            first 1x1 conv; depth 50/101/152 only).

    Returns:
        The model in training mode (call ``.eval()`` for inference), on the CPU.
    """
    if depth not in RESNET_STAGES:
        raise ValueError(f"depth must be one of {sorted(RESNET_STAGES)}, got {depth!r}")
    block, blocks_per_stage = RESNET_STAGES[depth]
    if style == "caffe":
        if block is not Bottleneck:
            raise ValueError(f"style='caffe' exists only for bottleneck ResNets (50/101/152), got depth {depth}")
        block = CaffeBottleneck
    elif style != "pytorch":
        raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
    return PoseResNet(block, blocks_per_stage, num_joints)


def subpixel_conv(deconv: nn.ConvTranspose2d) -> nn.Sequential:
    """The exact sub-pixel form of a 4x4, stride-2, padding-1 transposed convolution: a 3x3 conv
    (padding 1) to ``4 * C_out`` channels, then depth-to-space (``PixelShuffle(2)``).

    Output pixel ``(2i + a, 2j + b)`` of the transposed convolution sums the input at ``(i + dy, j + dx)``,
    ``dy, dx in {-1, 0, 1}``, times kernel tap ``(a + 1 - 2 dy, b + 1 - 2 dx)`` (taps outside 0..3 are
    zero): one 3x3 conv per output phase ``(a, b)``, the four phases stacked as channels. Quantizers and
    CPU kernels handle plain convolutions far better than transposed ones (ONNX Runtime has no int8
    ConvTranspose), at the price of the zero taps (36 multiply-adds per input pixel instead of 16).

    Shape: same as ``deconv``: (N, C_in, H, W) -> (N, C_out, 2H, 2W).
    """
    if (deconv.kernel_size, deconv.stride, deconv.padding, deconv.output_padding, deconv.groups, deconv.dilation) != (
        (4, 4), (2, 2), (1, 1), (0, 0), 1, (1, 1)
    ):
        raise ValueError(f"expected a 4x4 stride-2 padding-1 ConvTranspose2d, got {deconv}")
    weight = deconv.weight.detach()  # (C_in, C_out, 4, 4)
    in_channels, out_channels = weight.shape[:2]
    phases = torch.zeros(out_channels, 2, 2, in_channels, 3, 3, dtype=weight.dtype, device=weight.device)
    for a, b, row, column in itertools.product(range(2), range(2), range(3), range(3)):
        tap_y, tap_x = a + 3 - 2 * row, b + 3 - 2 * column  # row = dy + 1
        if 0 <= tap_y < 4 and 0 <= tap_x < 4:
            phases[:, a, b, :, row, column] = weight[:, :, tap_y, tap_x].T
    conv = nn.Conv2d(in_channels, 4 * out_channels, kernel_size=3, padding=1, bias=deconv.bias is not None)
    conv = conv.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        # PixelShuffle reads channel c * 4 + a * 2 + b into pixel (2i + a, 2j + b) of channel c.
        conv.weight.copy_(phases.reshape(4 * out_channels, in_channels, 3, 3))
        if deconv.bias is not None:
            conv.bias.copy_(deconv.bias.detach().repeat_interleave(4))
    return nn.Sequential(conv, nn.PixelShuffle(2))
