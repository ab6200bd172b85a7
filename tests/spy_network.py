"""A stand-in pose network for tests that check what the network is fed."""
from __future__ import annotations

import torch

from posekit.core.spec import InputSpec


class SpyNetwork:
    """Records each call's input and answers flat heatmaps; ``input_spec`` says how to feed it
    (what :func:`posekit.eval.coco.evaluate` reads from a model)."""

    def __init__(self, spec: InputSpec) -> None:
        self.input_spec, self.inputs = spec, []

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        self.inputs.append(inputs.clone())
        width, height = self.input_spec.heatmap_size
        return torch.zeros(len(inputs), self.input_spec.num_keypoints, height, width)
