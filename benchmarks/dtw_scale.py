"""Does aligning two takes cost O(T1 x T2) time, with the path's memory 2 bits a cell? (posekit.motion.dtw)

Generates two takes of the synthetic movement (``posekit.motion.synthetic_motion``), the second
time-warped, at N frames each, and times ``posekit.motion.compare_motion`` on them (normalising,
DTW, scoring), with and without a Sakoe-Chiba band of N / 10 frames. It prints the best wall time of
``--repeats`` runs per size, the ratio of each time to the smallest size's against the ratio of
the cell counts (equal ratios: time proportional to T1 x T2), and the bytes the path's direction
bits take (2 bits per cell of the band, packed).

Run: python benchmarks/dtw_scale.py [--sizes 750 1500 3000] [--repeats 1]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from posekit.motion import band_columns, compare_motion, synthetic_motion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[750, 1500, 3000], help="frames of each take")
    parser.add_argument("--repeats", type=int, default=1, help="runs per size; the best is shown")
    args = parser.parse_args()
    print(f"{'frames':>7} {'band':>6} {'cells':>12} {'seconds':>8} {'time ratio':>10} {'cell ratio':>10} {'path bits MB':>12}")
    first: dict[bool, tuple[float, int]] = {}
    for size in args.sizes:
        times = np.linspace(0, 3, size)
        reference, attempt = synthetic_motion(times), synthetic_motion(3 * (times / 3) ** 1.3)
        for banded in (False, True):
            band = size // 10 if banded else None
            low, high = band_columns(size, size, band)
            cells = int((high - low + 1).sum())
            best = min(_timed(reference, attempt, band) for _ in range(args.repeats))
            first.setdefault(banded, (best, cells))
            base_time, base_cells = first[banded]
            bits = 2 * sum((int(w) + 7) // 8 for w in high - low + 1)  # two packed bit planes per row
            print(f"{size:>7} {band or '-':>6} {cells:>12,} {best:>8.2f} {best / base_time:>10.2f} "
                  f"{cells / base_cells:>10.2f} {bits / 1e6:>12.2f}")


def _timed(reference: np.ndarray, attempt: np.ndarray, band: int | None) -> float:
    start = time.perf_counter()
    compare_motion(reference, attempt, band=band)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
