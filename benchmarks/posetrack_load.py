"""Does reading PoseTrack ground truth take linear time? Loads 10^4 and 10^5 annotations.

Prints the seconds for each size and their ratio from one run (10: linear; 100 would be quadratic,
what matching annotations to frames by scanning the image list gives).

Run: python benchmarks/posetrack_load.py
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from posekit.io.posetrack import POSETRACK18_KEYPOINTS, load_posetrack


def ground_truth(annotations: int, people_per_frame: int = 10) -> dict:
    frames = annotations // people_per_frame
    images = [{"id": 10_000_000 + t, "file_name": f"images/val/000342_mpii_test/{t:06d}.jpg"} for t in range(frames)]
    pose = [v for k in range(17) for v in (10.0 * k, 5.0 * k, 1)]
    return {"images": images,
            "annotations": [{"image_id": 10_000_000 + t, "track_id": i, "keypoints": pose, "bbox_head": [0, 0, 30, 40]}
                            for t in range(frames) for i in range(people_per_frame)],
            "categories": [{"name": "person", "keypoints": list(POSETRACK18_KEYPOINTS)}]}


def main() -> None:
    seconds = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in (10_000, 100_000):
            path = Path(folder) / f"gt{size}.json"
            path.write_text(json.dumps(ground_truth(size)))
            start = time.perf_counter()
            frames = load_posetrack(path)
            seconds[size] = time.perf_counter() - start
            print(f"{size:>7} annotations in {len(frames)} frames: {seconds[size]:.2f} s")
    print(f"ratio 10^5 / 10^4: {seconds[100_000] / seconds[10_000]:.1f} (10 = linear)")


if __name__ == "__main__":
    main()
