"""BatchNorm folding and the ONNX Runtime forward compute what the network computes."""
from __future__ import annotations

import os
import sys
import time

import onnx
import pytest
import torch
from torch import nn

from posekit.errors import PosekitError
from posekit.models.pose_resnet import pose_resnet
from posekit.models.runtime import OnnxRuntimeForward, export_onnx, fold_batchnorm, inference_forward, resolve_backend

INPUT = (64, 96)  # (width, height): small, multiples of 32


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A depth-18 SimpleBaseline whose BatchNorms are far from the identity, so folding matters."""
    torch.manual_seed(0)
    network = pose_resnet(depth=18)
    with torch.no_grad():  # running statistics from data, as training leaves them
        for _ in range(3):
            network(torch.randn(4, 3, INPUT[1], INPUT[0]) * 2 + 0.5)
    for bn in (m for m in network.modules() if isinstance(m, nn.BatchNorm2d)):
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.2, 0.2)
    network.eval()
    # A head of ordinary scale, so that the heatmaps are not ~1e-6 and tolerances mean something.
    nn.init.normal_(network.final_layer.weight, std=0.1)
    for module in network.deconv_layers.modules():
        if isinstance(module, nn.ConvTranspose2d):
            nn.init.normal_(module.weight, std=0.05)
    return network


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, INPUT[1], INPUT[0], generator=torch.Generator().manual_seed(1))


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, relative: float = 1e-4) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 1e-2  # the comparison is not between two near-zero tensors
    assert (actual - expected).abs().max().item() <= relative * scale


def test_fold_batchnorm_removes_every_batchnorm_and_keeps_the_outputs(model, images):
    with torch.no_grad():
        expected = model(images)
        folded = fold_batchnorm(model)
        actual = folded(images)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    # Every conv and deconv that fed a BatchNorm now carries its bias.
    deconvs = [m for m in folded.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == 3 and all(d.bias is not None for d in deconvs)
    _assert_close(actual, expected)


def test_fold_batchnorm_leaves_the_model_untouched(model, images):
    before = {name: value.clone() for name, value in model.state_dict().items()}
    fold_batchnorm(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


class _SharedConvOutput(nn.Module):
    """A conv whose output feeds a BatchNorm and also a skip path: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_fold_batchnorm_keeps_a_batchnorm_whose_conv_output_is_used_elsewhere():
    torch.manual_seed(0)
    module = _SharedConvOutput().eval()
    module.bn.running_mean.uniform_(-1, 1)
    module.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    folded = fold_batchnorm(module)
    assert any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        _assert_close(folded(x), module(x))


@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_forward_matches_the_network(model, images, channels_last):
    forward = inference_forward(model, "torch", channels_last=channels_last, input_size=INPUT)
    with torch.no_grad():
        expected = model(images)
    _assert_close(forward(images), expected)


def test_onnx_export_runs_in_onnxruntime_like_torch_for_any_batch(model, images, tmp_path):
    path = export_onnx(model, tmp_path / "pose.onnx", input_size=INPUT)
    onnx.checker.check_model(str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["pose.onnx"]  # no temporary file left behind
    forward = OnnxRuntimeForward(path)
    with torch.no_grad():
        for batch in (images[:1], images):  # exported with batch 1, the batch axis is dynamic
            _assert_close(forward(batch), model(batch))


def test_onnxruntime_backend_in_memory_matches_torch(model, images):
    forward = inference_forward(model, "onnxruntime", input_size=INPUT)
    with torch.no_grad():
        _assert_close(forward(images), model(images))


def test_missing_onnxruntime_is_one_clear_error(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(PosekitError, match="pip install onnxruntime"):
        inference_forward(model, "onnxruntime", input_size=INPUT)


def test_backend_choice():
    assert resolve_backend("auto", "cpu") == "onnxruntime"
    assert resolve_backend("auto", "cpu", precision="bf16") == "torch"
    assert resolve_backend("auto", "cpu", precision="auto") == "onnxruntime"  # auto precision on a CPU is fp32
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(PosekitError, match="expected one of"):
        resolve_backend("tensorrt", "cpu")


def test_onnxruntime_backend_refuses_torch_only_options(model):
    with pytest.raises(PosekitError, match="fp32 on the CPU"):
        inference_forward(model, "onnxruntime", precision="fp16")


def test_onnx_export_leaves_the_callers_model_in_its_mode(model, tmp_path):
    from posekit.models.runtime import export_onnx

    model.train()
    try:
        export_onnx(model, tmp_path / "model.onnx", input_size=(32, 64))
        assert model.training
    finally:
        model.eval()


# --- the ONNX export cache ------------------------------------------------------------------


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty posekit cache and no export held in this process (as in a new process)."""
    from posekit.models import runtime as export

    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    monkeypatch.setattr(export, "_SESSIONS", {})
    return tmp_path / "onnx"


def _no_export(*args, **kwargs):
    raise AssertionError("exported again")


def test_onnx_export_is_written_once_and_reused_by_the_next_process(model, images, fresh_cache, monkeypatch):
    from posekit.models import runtime as export

    first = inference_forward(model, "onnxruntime", input_size=INPUT)
    [path] = fresh_cache.iterdir()
    assert path.name == f"{export.export_key(model, INPUT)}.onnx"
    onnx.checker.check_model(str(path))
    assert inference_forward(model, "onnxruntime", input_size=INPUT) is first  # this process: in memory
    monkeypatch.setattr(export, "_SESSIONS", {})  # a new process: from disk, no export
    monkeypatch.setattr(export, "_onnx_bytes", _no_export)
    with torch.no_grad():
        _assert_close(inference_forward(model, "onnxruntime", input_size=INPUT)(images), model(images))


def test_the_export_key_follows_the_weights_and_the_input_size(model):
    from posekit.models.runtime import export_key

    other = pose_resnet(depth=18).eval()
    assert export_key(model, INPUT) == export_key(model, INPUT)
    assert export_key(model, INPUT) != export_key(model, (96, 128))
    assert export_key(model, INPUT) != export_key(other, INPUT)
    with torch.no_grad():
        other.load_state_dict(model.state_dict())
    assert export_key(model, INPUT) == export_key(other, INPUT)
    with torch.no_grad():
        other.final_layer.bias[0] += 1e-3  # one number differs
    assert export_key(model, INPUT) != export_key(other, INPUT)


def test_a_corrupt_cached_export_is_exported_again(model, images, fresh_cache):
    from posekit.models.runtime import export_key

    fresh_cache.mkdir(parents=True)
    path = fresh_cache / f"{export_key(model, INPUT)}.onnx"
    path.write_bytes(b"half an onnx file")
    forward = inference_forward(model, "onnxruntime", input_size=INPUT)
    with torch.no_grad():
        _assert_close(forward(images), model(images))
    onnx.checker.check_model(str(path))  # replaced by a whole export


def test_an_unwritable_cache_still_runs(model, images, fresh_cache, tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would be: nothing can be written below it")
    monkeypatch.setenv("POSEKIT_HOME", str(blocker / "posekit"))  # (root may write anywhere: chmod proves nothing)
    forward = inference_forward(model, "onnxruntime", input_size=INPUT)
    with torch.no_grad():
        _assert_close(forward(images), model(images))


def test_precision_choice_and_reduced_precision_forward(model, images):
    from posekit.models.runtime import resolve_precision

    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(PosekitError, match="expected one of"):
        resolve_precision("int4", "cpu")
    forward = inference_forward(model, "torch", precision="bf16", input_size=INPUT)
    output = forward(images)
    assert output.dtype == torch.float32
    with torch.no_grad():
        _assert_close(output, model(images), relative=5e-2)  # bf16 keeps ~3 significant digits


def test_the_cache_prunes_the_exports_used_longest_ago(tmp_path):
    from posekit.models.runtime import onnx_cache_usage, prune_onnx_cache

    megabyte = 2**20
    files = {}
    for age, name in enumerate(["new", "middle", "old", "oldest"]):  # one MB each, used 0, 1, 2, 3 hours ago
        files[name] = tmp_path / f"{name}.onnx"
        files[name].write_bytes(b"x" * megabyte)
        os.utime(files[name], (time.time() - 3600 * age,) * 2)
    (tmp_path / ".new.onnx.1234abcd.part").write_bytes(b"x" * megabyte)  # another process's write in progress
    assert onnx_cache_usage(tmp_path) == (4 * megabyte, 4)
    # The export just written stays even when it is the oldest; then the others go oldest first.
    assert prune_onnx_cache(tmp_path, 2 * megabyte, keep=files["oldest"]) == [files["old"], files["middle"]]
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["new.onnx", "oldest.onnx"]
    assert prune_onnx_cache(tmp_path, 0, keep=files["new"]) == [files["oldest"]]
    assert onnx_cache_usage(tmp_path) == (megabyte, 1)


def test_two_runs_of_untrained_networks_stay_within_the_limit(model, fresh_cache, monkeypatch, capsys):
    # Each untrained run exports new random weights; the limit (here under one export) keeps only the newest.
    from posekit.cli import main
    from posekit.models.runtime import export_key

    monkeypatch.setenv("POSEKIT_ONNX_CACHE_MB", "1")
    other = pose_resnet(depth=18).eval()
    for network in (model, other):
        inference_forward(network, "onnxruntime", input_size=INPUT)
    assert [p.name for p in fresh_cache.glob("*.onnx")] == [f"{export_key(other, INPUT)}.onnx"]
    size = (fresh_cache / f"{export_key(other, INPUT)}.onnx").stat().st_size
    assert main(["info"]) == 0
    assert f"onnx cache      {size / 2**20:.0f} MB in 1 export(s), limit 1 MB (POSEKIT_ONNX_CACHE_MB)" \
        in capsys.readouterr().out


def test_a_bad_cache_limit_is_one_clear_error(model, fresh_cache, monkeypatch):
    monkeypatch.setenv("POSEKIT_ONNX_CACHE_MB", "2GB")
    with pytest.raises(PosekitError, match=r"POSEKIT_ONNX_CACHE_MB='2GB': expected a whole number of MB"):
        inference_forward(model, "onnxruntime", input_size=INPUT)
