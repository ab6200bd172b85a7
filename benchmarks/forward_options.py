"""Which forward is fastest here? Each inference option on the same network and the same crops.

    .venv/bin/python benchmarks/forward_options.py [--people 200] [--chunk 64] [--depth 50] [--passes 2]

Times the network alone (no flip, no pre/post-processing) over ``--people`` random inputs fed in
chunks of ``--chunk``, for each option in turn, ``--passes`` times round-robin (so a burst of load
from elsewhere hits every option alike), and reports the fastest pass, the achieved FLOP/s as a
fraction of a large fp32 matmul measured in the same run, the one-off setup time (export,
compilation, warm-up) and the largest output difference from the plain eager network relative to
its largest output.
"""
from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch

from posekit.bench import count_flops, matmul_flops
from posekit.models.pose_resnet import pose_resnet
from posekit.models.runtime import fold_batchnorm, inference_forward


def _eager(model, grad_mode, layout=torch.contiguous_format):
    def forward(images):
        with grad_mode():
            return model(images.contiguous(memory_format=layout))

    return forward


def _torchscript(model, example):
    # Deprecated in torch >= 2.10 (torch.jit), measured because it is oneDNN's classic CPU path.
    network = fold_batchnorm(model).to(memory_format=torch.channels_last)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.trace(network, example.contiguous(memory_format=torch.channels_last)))
        )

    def forward(images):
        with torch.no_grad():
            return frozen(images.contiguous(memory_format=torch.channels_last))

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = pose_resnet(depth=args.depth).eval()
    # Trained-looking BatchNorm statistics, so that folding has something to fold.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    inputs = torch.randn(args.people, 3, 256, 192)
    chunks = inputs.split(args.chunk)
    flops = count_flops(model) * args.people
    matmul = matmul_flops()  # measured again at the end: the better of the two is the machine's
    options = {
        "eager NCHW, no_grad (the paper's code)": lambda: _eager(model, torch.no_grad),
        "eager NCHW, inference_mode": lambda: _eager(model, torch.inference_mode),
        "eager channels_last, inference_mode": lambda: _eager(
            copy.deepcopy(model).to(memory_format=torch.channels_last), torch.inference_mode, torch.channels_last
        ),
        "BN folded, NCHW": lambda: inference_forward(model, "torch", "fp32", channels_last=False),
        "BN folded, channels_last": lambda: inference_forward(model, "torch", "fp32", channels_last=True),
        "BN folded, channels_last, TorchScript freeze (oneDNN)": lambda: _torchscript(model, chunks[0][:1]),
        "BN folded, channels_last, torch.compile (freezing)": lambda: inference_forward(model, "torch", "fp32", compile=True),
        "ONNX Runtime (CPU EP)": lambda: inference_forward(model, "onnxruntime"),
        "bf16 autocast, BN folded, channels_last (not fp32)": lambda: inference_forward(model, "torch", precision="bf16"),
    }
    with torch.no_grad():
        expected = model(chunks[0][:4])
    forwards, setup, difference = {}, {}, {}
    for name, build in options.items():
        start = time.perf_counter()
        forwards[name] = build()
        for shape in {len(chunk): chunk for chunk in chunks}.values():  # warm every chunk shape
            output = forwards[name](shape)
        setup[name] = time.perf_counter() - start
        difference[name] = ((forwards[name](chunks[0][:4]) - expected).abs().max() / expected.abs().max()).item()
        print(f"built {name}: {setup[name]:.1f} s", flush=True)
    best = {name: float("inf") for name in options}
    for _ in range(args.passes):
        for name, forward in forwards.items():
            start = time.perf_counter()
            for chunk in chunks:
                output = forward(chunk)
            best[name] = min(best[name], time.perf_counter() - start)
    del output
    matmul = max(matmul, matmul_flops())
    print(f"\n{args.people} people in chunks of {args.chunk}, pose_resnet_{args.depth} 256x192, "
          f"{torch.get_num_threads()} threads; {flops / args.people / 1e9:.2f} GFLOP per person (counted); "
          f"fp32 matmul {matmul / 1e9:.0f} GFLOP/s; fastest of {args.passes} passes")
    print(f"{'option':<54}{'forward s':>10}{'ms/person':>10}{'GFLOP/s':>9}{'of matmul':>10}{'setup s':>9}{'rel. diff':>11}")
    for name in options:
        seconds = best[name]
        print(f"{name:<54}{seconds:>10.2f}{1000 * seconds / args.people:>10.1f}{flops / seconds / 1e9:>9.0f}"
              f"{100 * flops / seconds / matmul:>9.0f}%{setup[name]:>9.1f}{difference[name]:>11.1e}")


if __name__ == "__main__":
    main()
