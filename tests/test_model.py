"""PoseResNet: official state_dict layout, strides, forward pass against independent computations."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from posekit.models.pose_resnet import PoseResNet, pose_resnet

# Copy of ../shared/manifests/official_pose_resnet.json: keys and shapes the paper's code builds.
MANIFEST = json.loads((Path(__file__).parent / "data" / "official_pose_resnet.json").read_text())


@functools.lru_cache(maxsize=None)
def _state_shapes(depth: int, style: str) -> tuple[list[tuple[str, list[int]]], int]:
    model = pose_resnet(depth, style=style)
    keys = [(key, list(value.shape)) for key, value in model.state_dict().items()]
    return keys, sum(p.numel() for p in model.parameters())


def test_manifest_covers_every_released_architecture():
    assert sorted(MANIFEST) == sorted(
        [f"pose_resnet_{d}_pytorch" for d in (18, 34, 50, 101, 152)]
        + [f"pose_resnet_{d}_caffe" for d in (50, 101, 152)]
    )


@pytest.mark.parametrize("arch", sorted(MANIFEST))
def test_state_dict_keys_and_shapes_equal_official(arch):
    _, depth, style = arch.rsplit("_", 2)
    keys, _ = _state_shapes(int(depth), style)
    assert keys == list(MANIFEST[arch].items())  # same names, same order, same shapes


@pytest.mark.parametrize("depth, millions", [(50, 34.0), (101, 53.0), (152, 68.6)])
def test_parameter_count_matches_reported(depth, millions):
    _, count = _state_shapes(depth, "pytorch")
    assert round(count / 1e6, 1) == millions
    # Independently: the manifest's learnable tensors (BN running stats and counters are buffers).
    manifest = MANIFEST[f"pose_resnet_{depth}_pytorch"]
    learnable = [shape for key, shape in manifest.items() if not key.split(".")[-1].startswith(("running_", "num_"))]
    assert count == sum(torch.Size(shape).numel() for shape in learnable)


@pytest.mark.parametrize("batch, size, joints", [(1, (256, 192), 17), (1, (384, 288), 17), (3, (128, 96), 5)])
def test_output_is_quarter_resolution(batch, size, joints):
    model = pose_resnet(18, num_joints=joints).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 3, *size))
    assert out.shape == (batch, joints, size[0] // 4, size[1] // 4)


@pytest.mark.parametrize("style, conv1_stride, conv2_stride", [("pytorch", 1, 2), ("caffe", 2, 1)])
def test_bottleneck_stride_position(style, conv1_stride, conv2_stride):
    model = pose_resnet(50, style=style)
    for stage in (model.layer2, model.layer3, model.layer4):
        first = stage[0]
        assert first.conv1.stride == (conv1_stride, conv1_stride)
        assert first.conv2.stride == (conv2_stride, conv2_stride)
        assert first.downsample[0].stride == (2, 2)
        assert all(block.conv1.stride == (1, 1) and block.conv2.stride == (1, 1) for block in stage[1:])
    assert model.layer1[0].conv1.stride == (1, 1) and model.layer1[0].conv2.stride == (1, 1)


def test_caffe_and_pytorch_styles_share_weights_but_differ_in_output():
    torch.manual_seed(0)
    pytorch_style = pose_resnet(50).eval()
    caffe_style = pose_resnet(50, style="caffe").eval()
    caffe_style.load_state_dict(pytorch_style.state_dict())
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = pytorch_style(images), caffe_style(images)
    assert a.shape == b.shape == (1, 17, 16, 16)
    # The head's 0.001-scale init makes the outputs tiny: compare relative to their size.
    assert (a - b).abs().max() > 0.05 * a.abs().max()


def _randomise_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)


def test_trunk_equals_torchvision_resnet18_and_head_equals_functional_computation():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    _randomise_batchnorm(reference)
    model = pose_resnet(18).eval()
    _randomise_batchnorm(model)
    trunk_state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(trunk_state, strict=False)
    assert unexpected == [] and all(k.startswith(("deconv_layers.", "final_layer.")) for k in missing)
    # Give the head weights of a realistic scale so its output is not ~0.
    for module in model.deconv_layers:
        if isinstance(module, nn.ConvTranspose2d):
            module.weight.data.normal_(0, 0.05)

    images = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        features = create_feature_extractor(reference, {"layer4": "features"})(images)["features"]
        captured = {}
        model.layer4.register_forward_hook(lambda module, args, out: captured.setdefault("features", out))
        heatmaps = model(images)
    torch.testing.assert_close(captured["features"], features, rtol=0, atol=0)

    x = features
    for i in (0, 3, 6):
        deconv, bn = model.deconv_layers[i], model.deconv_layers[i + 1]
        x = F.conv_transpose2d(x, deconv.weight, stride=2, padding=1)
        x = F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
    expected = F.conv2d(x, model.final_layer.weight, model.final_layer.bias)
    assert expected.shape == (2, 17, 32, 24)
    torch.testing.assert_close(heatmaps, expected, rtol=1e-5, atol=1e-6)


def test_head_initialisation_follows_the_paper_code():
    torch.manual_seed(0)
    model = pose_resnet(18)
    deconvs = [m for m in model.deconv_layers if isinstance(m, nn.ConvTranspose2d)]
    norms = [m for m in model.deconv_layers if isinstance(m, nn.BatchNorm2d)]
    assert len(deconvs) == len(norms) == 3
    for weight in [d.weight for d in deconvs] + [model.final_layer.weight]:
        assert abs(weight.std().item() - 0.001) < 0.0001
        assert abs(weight.mean().item()) < 0.0001
    assert torch.equal(model.final_layer.bias, torch.zeros(17))
    assert all(torch.equal(n.weight, torch.ones(256)) and torch.equal(n.bias, torch.zeros(256)) for n in norms)
    assert all(d.bias is None for d in deconvs)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_factory_returns_pose_resnet_and_rejects_unknown_configurations():
    assert isinstance(pose_resnet(18), PoseResNet)
    with pytest.raises(ValueError, match="depth must be one of"):
        pose_resnet(42)
    with pytest.raises(ValueError, match="caffe"):
        pose_resnet(18, style="caffe")
    with pytest.raises(ValueError, match="style must be"):
        pose_resnet(50, style="tensorflow")
