"""Render the README's figures.

    python docs/make_figures.py            # writes docs/skeleton.png and docs/compare.png

skeleton.png shows annotations, not predictions: it needs no weights and no network, and shows
posekit.viz.draw_skeleton on real COCO keypoints (labelled joints drawn, unlabelled ones hidden).
The photographs are shown in faded grey: the skeleton's side colours stand out, and the PNG of
four photographs stays small enough for the README (under 300 KB).

compare.png is the angle plot of ``posekit compare --plot`` (posekit.compare.plot_angles) on
synthetic motion, labelled so: the reference is posekit.motion.synthetic_motion over its 3 s, the
attempt the same movement time-warped (slow start, a pause, a rush; 20% more frames) with its left
forearm turned 30 degrees over half a second of the movement. No video and no network are involved.
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
COMPARE_OUTPUT = OUTPUT.with_name("compare.png")
COMPARE_LABEL = "SYNTHETIC MOTION: generated joints, no video, no network"
FPS = 30.0
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


def synthetic_takes() -> tuple[np.ndarray, np.ndarray]:
    """The reference (90 frames) and a time-warped attempt (108 frames) whose left forearm is turned
    30 degrees while the reference's frames 50-64 play. Shape: -> (90, 17, 3), (108, 17, 3)."""
    from posekit.core.coco17 import KEYPOINT_NAMES
    from posekit.motion import synthetic_motion

    reference_times = np.arange(90) / FPS
    u = np.linspace(0, 1, 108)
    warp = np.clip(np.where(u < 0.5, 0.8 * u, np.where(u < 0.6, 0.4, 0.4 + 1.5 * (u - 0.6))), 0, 1)  # slow, pause, rush
    attempt_times = warp * reference_times[-1]
    attempt = synthetic_motion(attempt_times)
    turned = (attempt_times >= 50 / FPS) & (attempt_times < 65 / FPS)
    elbow, wrist = KEYPOINT_NAMES.index("left_elbow"), KEYPOINT_NAMES.index("left_wrist")
    angle = np.radians(30)
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    forearm = attempt[turned, wrist, :2] - attempt[turned, elbow, :2]
    attempt[turned, wrist, :2] = attempt[turned, elbow, :2] + forearm @ rotation
    return synthetic_motion(reference_times), attempt


def compare_figure() -> Figure:
    """posekit compare's angle plot of the synthetic takes, labelled synthetic as an untrained run is labelled."""
    from posekit.compare import plot_angles
    from posekit.motion import compare_motion

    figure = plot_angles(compare_motion(*synthetic_takes()))
    figure.text(0.83, 0.12, COMPARE_LABEL.replace(": ", "\n"), ha="center", va="center", color="red", fontsize=12,
                bbox={"facecolor": "white", "edgecolor": "red"})
    return figure


def main() -> int:
    for figure, path in ((skeleton_figure(), OUTPUT), (compare_figure(), COMPARE_OUTPUT)):
        path = save_figure(figure, path, dpi=DPI)
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
