"""Render the README's figure: the four bundled COCO images with their ground-truth skeletons.

    python docs/make_figures.py            # writes docs/skeleton.png

The figure shows annotations, not predictions: it needs no weights and no network, and shows
posekit.viz.draw_skeleton on real COCO keypoints (labelled joints drawn, unlabelled ones hidden).
The photographs are shown in faded grey: the skeleton's side colours stand out, and the PNG of
four photographs stays small enough for the README (under 300 KB).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from posekit.core.coco17 import NUM_KEYPOINTS  # noqa: E402
from posekit.data import COCO_SAMPLE_ANNOTATIONS, COCO_SAMPLE_DIR  # noqa: E402
from posekit.io.images import load_image  # noqa: E402
from posekit.viz import draw_skeleton, save_figure  # noqa: E402

OUTPUT = Path(__file__).resolve().parent / "skeleton.png"
TITLE = "COCO ground-truth keypoints drawn by posekit.viz"
DPI = 55
# Grey = luma (ITU-R BT.601 weights), pulled toward light grey by this contrast factor.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
FADED_CONTRAST, FADED_GREY = 0.5, 160


def faded_grey(image: np.ndarray) -> np.ndarray:
    """The photo as a low-contrast grey picture. Shape: (H, W, 3) uint8 RGB -> (H, W, 3) uint8."""
    grey = FADED_GREY + FADED_CONTRAST * (image.astype(np.float64) @ LUMA_WEIGHTS - FADED_GREY)
    return np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=2)


def skeleton_figure() -> Figure:
    """A 2x2 grid: each bundled image (faded grey) with its annotated people's boxes and skeletons."""
    coco = json.loads(COCO_SAMPLE_ANNOTATIONS.read_text())
    entries = sorted(coco["images"], key=lambda entry: entry["file_name"])
    figure = Figure(figsize=(12, 8.6), layout="constrained")
    for ax, entry in zip(figure.subplots(2, 2).flat, entries):
        people = [a for a in coco["annotations"] if a["image_id"] == entry["id"]]
        keypoints = np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
        # COCO visibility v (0 unlabelled, 1 occluded, 2 visible) as a score: labelled joints fully opaque.
        keypoints[..., 2] = keypoints[..., 2] > 0
        boxes = np.array([a["bbox"] for a in people], dtype=np.float64).reshape(-1, 4)
        photo = faded_grey(load_image(COCO_SAMPLE_DIR / entry["file_name"]))
        draw_skeleton(photo, keypoints, score_threshold=0.5, ax=ax, boxes=boxes)
        ax.set_title(f"{entry['file_name']}: {len(people)} annotated {'person' if len(people) == 1 else 'people'}")
    figure.suptitle(TITLE, fontsize=15)
    return figure


def main(argv: list[str]) -> int:
    path = save_figure(skeleton_figure(), argv[0] if argv else OUTPUT, dpi=DPI)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
