"""Does what users run go as fast as what ``posekit bench`` measures? One run, three numbers.

In one process, on one image holding ``--people`` person boxes (the bundled crowd of
``posekit bench``), flip test on:

1. ``PoseEstimator`` with its default arguments (backend, precision, max_batch, decode, device
   "cpu"), called as a user calls it: ``estimator(image, boxes)``, end to end;
2. ``posekit bench --batches N`` (:func:`posekit.bench.run_benchmark`), the same people;
3. the machine's dense matmul throughput in the same precision (:func:`posekit.bench.matmul_flops`).

It prints ms per person of 1 and 2 and their ratio (the goal: within 10%), and the network
FLOP/s the estimator achieves end to end as a fraction of the matmul's (the goal: >= 0.60).
Both networks are random ResNets of the same depth (seed 0): timing does not depend on the
weights, and no keypoint is presented as a prediction.

Run: python benchmarks/user_path.py [--people 64] [--depth 50] [--repeats 3] [--device cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from posekit.bench import count_flops, run_benchmark, sample_people
from posekit.estimator import PoseEstimator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=64, help="person boxes in the one image (default: 64)")
    parser.add_argument("--depth", type=int, default=50, choices=(18, 34, 50, 101, 152))
    parser.add_argument("--repeats", type=int, default=3, help="warm runs of each; the median counts (default: 3)")
    parser.add_argument("--device", default="cpu", help="cpu (the goal's device) or cuda (default: cpu)")
    args = parser.parse_args()

    torch.manual_seed(0)
    # Default arguments but the weights (random ones: no download) and the device.
    estimator = PoseEstimator(None, depth=args.depth, device=args.device)
    batch = sample_people(args.people)
    estimator(batch.image, batch.boxes)  # warm-up: builds (or loads) the ONNX export, starts the threads
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        estimator(batch.image, batch.boxes)
        seconds.append(time.perf_counter() - started)
    user_seconds = statistics.median(seconds)
    flops = count_flops(estimator.model, estimator.spec.input_size) * args.people * (2 if estimator.flip_test else 1)

    bench = run_benchmark(batches=(args.people,), depth=args.depth, device=args.device, precision=estimator.precision,
                          repeats=args.repeats, max_batch=estimator.max_batch, memory_people=(args.people,))
    [row] = bench.batches
    matmul = bench.matmul_flops  # the better of two measurements in the same run, in the estimator's precision

    user_ms = 1000 * user_seconds / args.people
    print(f"{args.people} people in one image, pose_resnet_{args.depth} (random weights), flip test on, "
          f"device {estimator.device}, {torch.get_num_threads()} threads, median of {args.repeats} warm runs")
    print(f"PoseEstimator defaults (backend {estimator.backend}, {estimator.precision}, max_batch "
          f"{estimator.max_batch}): {user_ms:.1f} ms per person end to end")
    print(f"posekit bench (backend {bench.backend}): {row.ms_per_person:.1f} ms per person; "
          f"estimator / bench = {user_ms / row.ms_per_person:.3f} (goal: 0.90-1.10)")
    print(f"matmul {matmul / 1e9:.0f} GFLOP/s ({bench.precision}); estimator end to end {flops / user_seconds / 1e9:.0f} GFLOP/s = "
          f"{flops / user_seconds / matmul:.2f} of matmul (goal: >= 0.60); bench forward alone "
          f"{row.achieved_flops / matmul:.2f} of matmul")


if __name__ == "__main__":
    main()
