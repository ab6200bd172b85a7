"""Optical flow between consecutive frames, and joints moved by it (the paper's pose propagation).

A flow function maps two frames to a field of displacements: ``(prev_rgb, rgb) -> (H, W, 2)``,
where pixel (x, y) of ``prev_rgb`` moved to ``(x, y) + flow[y, x]`` in ``rgb``. :class:`RaftFlow`
is torchvision's RAFT (small), its weights through posekit's cache; tests pass their own functions.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch

# (prev_rgb, rgb) -> flow (H, W, 2) in pixels: where each pixel of prev_rgb moved to in rgb.
FlowFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def warp_keypoints(keypoints: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Move joints by an optical-flow field, sampled bilinearly at each joint (clamped to the image).

    Shape: keypoints (N, K, 3), flow (H, W, 2) as dx, dy -> (N, K, 3), scores unchanged.
    """
    keypoints = np.asarray(keypoints, np.float64)
    height, width = flow.shape[:2]
    x = np.clip(keypoints[..., 0], 0, width - 1)
    y = np.clip(keypoints[..., 1], 0, height - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    moved = (
        flow[y0, x0] * (1 - fx) * (1 - fy) + flow[y0, x1] * fx * (1 - fy)
        + flow[y1, x0] * (1 - fx) * fy + flow[y1, x1] * fx * fy
    )
    out = keypoints.copy()
    out[..., :2] += np.nan_to_num(moved)
    return out


RAFT_URL = "https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth"
RAFT_SHA256 = "01064c6d"  # the prefix torchvision puts in the file name


class RaftFlow:
    """Optical flow from torchvision's RAFT (small), on frames shrunk so the long side is at most
    ``max_side`` pixels (RAFT needs sides divisible by 8, at least 128); the flow is scaled back to the frame.

    Args:
        model: a RAFT module; None loads ``raft_small`` with the C_T_V2 weights from posekit's
            cache (``<cache>/checkpoints``), downloading them once.
        device: where RAFT runs.
        max_side: long side of the frames RAFT sees.

    Raises:
        DownloadError: the weights are not cached and cannot be downloaded; the message says
            where to put the file.

    Shape: ``__call__(prev_rgb, rgb)`` with two (H, W, 3) uint8 frames -> flow (H, W, 2) float32.
    """

    def __init__(self, model: torch.nn.Module | None = None, device: str | torch.device = "cpu", max_side: int = 512) -> None:
        from torchvision.models.optical_flow import raft_small

        if model is None:
            from posekit.io.hub import cache_dir, download_url

            path = download_url(
                RAFT_URL, cache_dir() / "checkpoints" / os.path.basename(RAFT_URL), sha256=RAFT_SHA256,
                hint="track with propagation 'pose' (--propagation pose), which needs no flow",
            )
            model = raft_small()
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.max_side = max_side

    @torch.inference_mode()
    def __call__(self, prev_rgb: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        factor = min(1.0, self.max_side / max(height, width))
        # Sides divisible by 8 and at least 128: RAFT's correlation pyramid halves its 1/8 maps 3 times.
        size = [max(128, int(round(side * factor / 8)) * 8) for side in (height, width)]
        pair = torch.from_numpy(np.stack([prev_rgb, rgb])).to(self.device).permute(0, 3, 1, 2).float()
        pair = torch.nn.functional.interpolate(pair, size=size, mode="bilinear", antialias=True, align_corners=False)
        pair = pair / 127.5 - 1.0  # RAFT's input range [-1, 1]
        flow = self.model(pair[:1], pair[1:])[-1]  # (1, 2, h, w), the last refinement
        flow = flow * torch.tensor([width / size[1], height / size[0]], device=self.device)[None, :, None, None]
        flow = torch.nn.functional.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
        return flow[0].permute(1, 2, 0).float().cpu().numpy()
