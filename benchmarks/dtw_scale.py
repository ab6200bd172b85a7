"""Does aligning two takes cost O(T1 x T2) time and O(T1 + T2) extra memory? (posekit.core.dtw.dtw)

Generates two takes of the synthetic movement (``posekit.motion.synthetic_motion``), the second
time-warped, at N frames each, normalises them as ``compare_motion`` does and runs
``posekit.core.dtw.dtw`` on their pose distance, with and without a Sakoe-Chiba band of N / 10
frames. It prints the best wall time of ``--repeats`` runs per size, the ratio of each time to the
smallest size's against the ratio of the cell counts (equal ratios: time proportional to the
cells), and the peak memory allocated during one more, untimed run (``tracemalloc``): with the
pose distance computed row by row as ``compare_motion`` does, and ``dtw``'s own with the rows
served as views of a precomputed matrix; for scale, the two direction bits per cell that a
stored-path DTW would keep.

Run: python benchmarks/dtw_scale.py [--sizes 750 1500 3000] [--repeats 1]
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from posekit.core.dtw import band_columns, dtw
from posekit.motion import normalize_poses, pose_distance_rows, synthetic_motion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[750, 1500, 3000], help="frames of each take")
    parser.add_argument("--repeats", type=int, default=1, help="runs per size; the best is shown")
    args = parser.parse_args()
    print(f"{'frames':>7} {'band':>6} {'cells':>12} {'seconds':>8} {'time ratio':>10} {'cell ratio':>10} "
          f"{'peak MB':>8} {'dtw own MB':>10} {'2 bit/cell MB':>13}")
    first: dict[bool, tuple[float, int]] = {}
    for size in args.sizes:
        times = np.linspace(0, 3, size)
        reference = normalize_poses(synthetic_motion(times))
        attempt = normalize_poses(synthetic_motion(3 * (times / 3) ** 1.3))
        costs = pose_distance_rows(reference, attempt)
        matrix = np.stack([costs(i, 0, size - 1) for i in range(size)])
        for banded in (False, True):
            band = size // 10 if banded else None
            low, high = band_columns(size, size, band)
            cells = int((high - low + 1).sum())
            best = min(_timed(costs, size, band) for _ in range(args.repeats))
            first.setdefault(banded, (best, cells))
            base_time, base_cells = first[banded]
            peak = _peak(costs, size, band)
            own = _peak(lambda i, low, high: matrix[i, low : high + 1], size, band)
            print(f"{size:>7} {band or '-':>6} {cells:>12,} {best:>8.2f} {best / base_time:>10.2f} "
                  f"{cells / base_cells:>10.2f} {peak / 1e6:>8.2f} {own / 1e6:>10.2f} {cells / 4e6:>13.2f}")


def _peak(costs, size: int, band: int | None) -> int:
    tracemalloc.start()
    try:
        dtw(costs, size, size, band)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _timed(costs, size: int, band: int | None) -> float:
    start = time.perf_counter()
    dtw(costs, size, size, band)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
