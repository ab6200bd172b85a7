"""`posekit info`: posekit's and its dependencies' versions, device, cache directory and cached weights."""
from __future__ import annotations

import argparse


def add(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("info", help="versions, device, cache directory and cached weights")


def run(args: argparse.Namespace) -> int:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import torchvision

    import posekit
    from posekit.core.device import resolve_device
    from posekit.io import hub
    from posekit.models import runtime, weights
    from posekit.realtime import int8_instructions, int8_outlook

    try:
        coco_version = version("pycocotools")
    except PackageNotFoundError:
        coco_version = "missing"
    device = resolve_device("auto")
    if device.type == "cuda":
        device = f"cuda ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        device = f"cpu ({torch.get_num_threads()} threads)"
    onnx_bytes, onnx_count = runtime.onnx_cache_usage()
    cached = [name for name in weights.WEIGHTS if weights.cached_weights_path(name) is not None]
    rows = [
        ("posekit", posekit.__version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("torchvision", torchvision.__version__),
        ("pycocotools", coco_version),
        ("device", device),
        ("int8 speed", int8_outlook(int8_instructions())),
        ("cache", str(hub.cache_dir())),
        ("onnx cache", f"{onnx_bytes / 2**20:.0f} MB in {onnx_count} export(s), limit "
                       f"{runtime.onnx_cache_limit() // 2**20} MB (POSEKIT_ONNX_CACHE_MB)"),
        ("cached weights", ", ".join(cached) if cached else "none (posekit weights download NAME)"),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0

