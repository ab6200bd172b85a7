"""Shared test setup: posekit's cache (weights, ONNX exports) goes to a temporary folder, never the user's."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_posekit_cache(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("POSEKIT_HOME", str(tmp_path_factory.mktemp("posekit_home")))
    yield
    patch.undo()
