"""Which torch device to run on: ``"auto"`` resolved, and a named device checked to exist here."""
from __future__ import annotations

import torch

from posekit.core.validate import check_device_type
from posekit.errors import PosekitError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first of CUDA, Apple MPS, CPU that is available; anything else as given,
    once checked to exist here (torch's own failure comes later, deep inside, and less clearly).

    Raises:
        PosekitError: an unknown device name, a CUDA or MPS device this torch cannot see, or a
            device type torch knows but cannot use here (xpu, hpu, meta ...).
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise PosekitError(f"unknown device {str(device)!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if chosen.type == "cuda" and (chosen.index or 0) >= gpus:
        build, fix = (
            (f"built for CUDA {torch.version.cuda}", "check the GPU and its NVIDIA driver with nvidia-smi")
            if torch.version.cuda
            else ("a CPU-only build", "install a CUDA build of torch (pytorch.org/get-started/locally)")
        )
        raise PosekitError(
            f"device {chosen} is not available: torch {torch.__version__} ({build}) sees {gpus} CUDA GPU(s) here; "
            f"use device cpu or auto, or {fix}"
        )
    if chosen.type == "mps" and not _mps_available():
        raise PosekitError("device mps is not available here (Apple silicon GPUs only); use device cpu or auto")
    check_device_type(chosen)
    return chosen


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
