"""`posekit export`: the pose network as ONNX, checked against torch."""
from __future__ import annotations

import argparse
from pathlib import Path

from posekit.cli._common import height_by_width, warn_if_untrained
from posekit.defaults import RANDOM
from posekit.errors import PosekitError


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="the pose network as ONNX (dynamic batch), checked against torch")
    parser.add_argument("--weights", required=True,
                        help="registered weights name, checkpoint file or URL (its architecture is read from the file), "
                             f"or {RANDOM} for an untrained network (fixed seed)")
    parser.add_argument("--input", type=height_by_width, metavar="HxW",
                        help="network input, height x width, multiples of 32 (default: the weights')")
    parser.add_argument("--fp16", action="store_true", help="half-precision graph (for GPUs, TensorRT, Jetson)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise PosekitError(f"export needs the onnx and onnxruntime packages ({error}): pip install onnx onnxruntime") from None

    from posekit.estimator import PoseEstimator
    from posekit.io.files import check_outputs
    from posekit.models.runtime import export_onnx

    check_outputs({"--out": (args.out, "onnx")}, {"--weights": args.weights})
    estimator = PoseEstimator(args.weights, device="cpu")
    width, height = args.input or estimator.spec.input_size
    if width % 32 or height % 32:
        raise PosekitError(f"--input {height}x{width}: expected multiples of 32 (the network downsamples by 32)")
    dtype = torch.float16 if args.fp16 else torch.float32
    model = estimator.model.to(memory_format=torch.contiguous_format, dtype=dtype)
    path = export_onnx(model, args.out, (width, height), args.opset)
    onnx.checker.check_model(str(path), full_check=True)
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.inference_mode():
        expected = model(images).float().numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"images": images.numpy()})
    error = float(np.abs(actual.astype(np.float32) - expected).max() / max(np.abs(expected).max(), 1e-12))
    print(
        f"posekit export: {path} ({path.stat().st_size / 2**20:.1f} MB, opset {args.opset}, "
        f"{'float16' if args.fp16 else 'float32'}): images (batch, 3, {height}, {width}) -> heatmaps "
        f"(batch, {expected.shape[1]}, {height // 4}, {width // 4}); onnx.checker passed; onnxruntime vs torch on a "
        f"batch of 2: max difference {error:.1e} of the largest heatmap value ({estimator.weights_source})"
    )
    warn_if_untrained(estimator, args.weights)
    return 0

