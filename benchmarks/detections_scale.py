"""Does reading a detections file take time linear in its size? (posekit 0.1's grouping was quadratic)

Writes COCO detection-results files of N entries into a temporary folder, about 20 people per
image as in the paper's val2017 detections file (so the number of images grows with N too), and
times ``posekit.models.detect.read_boxes_file`` on each: parsing, checking every entry and grouping by
image, what ``posekit predict --boxes`` does before its first image. It prints the best wall
and CPU time of ``--repeats`` runs per size and the ratio of each size's CPU time to the smallest
size's against the ratio of sizes: equal ratios mean linear time.

Run: python benchmarks/detections_scale.py [--sizes 100000 500000] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from posekit.models.detect import read_boxes_file

PEOPLE_PER_IMAGE = 20


def write_detections(path: Path, entries: int, seed: int = 0) -> None:
    """A detections file of ``entries`` person boxes over ``entries // 20`` images, in random order."""
    rng = np.random.default_rng(seed)
    image_ids = rng.integers(0, max(1, entries // PEOPLE_PER_IMAGE), entries)
    boxes = np.concatenate([rng.uniform(0, 600, (entries, 2)), rng.uniform(1, 300, (entries, 2))], 1).round(2)
    scores = rng.uniform(0, 1, entries).round(4)
    path.write_text(json.dumps([
        {"image_id": int(i), "category_id": 1, "bbox": b.tolist(), "score": float(s)}
        for i, b, s in zip(image_ids, boxes, scores)
    ]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            path = Path(folder) / f"detections_{size}.json"
            write_detections(path, size)
            walls, cpus = [], []
            for _ in range(args.repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                by_image, _ = read_boxes_file(path)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            rows.append((size, len(by_image), path.stat().st_size / 1e6, min(walls), min(cpus)))
    base_size, base_cpu = rows[0][0], rows[0][4]
    print(f"{'entries':>9}  {'images':>7}  {'MB':>6}  {'wall s':>7}  {'cpu s':>6}  {'size ratio':>10}  {'cpu ratio':>9}")
    for size, images, megabytes, wall, cpu in rows:
        print(f"{size:>9}  {images:>7}  {megabytes:>6.1f}  {wall:>7.2f}  {cpu:>6.2f}  {size / base_size:>10.1f}  "
              f"{cpu / base_cpu:>9.1f}")


if __name__ == "__main__":
    main()
