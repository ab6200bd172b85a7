"""Shared test setup: posekit's cache (weights, ONNX exports) goes to a temporary folder, never the user's."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_posekit_cache(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("POSEKIT_HOME", str(tmp_path_factory.mktemp("posekit_home")))
    yield
    patch.undo()


@pytest.fixture()
def offline(tmp_path, monkeypatch) -> Path:
    """No network (every download goes through a proxy on a closed local port) and empty posekit and
    torch caches, as on a machine that never downloaded anything. Returns posekit's cache folder."""
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """Random depth-18 weights in a file named like a registry entry with 64x48 input (1/16 of 256x192's
    pixels): a quick network for tests of files and options, not of accuracy."""
    import dataclasses

    import torch

    from posekit.models import weights
    from posekit.models.pose_resnet import pose_resnet

    entry = dataclasses.replace(
        weights.get_weights(weights.DEFAULT_WEIGHTS), name="pose_resnet_18_64x48_test", depth=18, input_size=(48, 64),
        filename="pose_resnet_18_64x48_test.pth",
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / entry.filename
    torch.save(pose_resnet(18).state_dict(), path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(weights.WEIGHTS, entry.name, entry)
        yield path
