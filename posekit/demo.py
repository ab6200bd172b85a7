"""``posekit demo``: the whole pipeline on the four bundled COCO images, timed, drawn into one figure.

Being offline is normal, so the demo never needs the network: without cached detector weights it
takes the people's boxes from the bundled ground truth, and without cached pose weights it runs
an untrained network of the same size, saying so on screen and across the figure, together with
the command that fetches the real weights.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from posekit.data import COCO_SAMPLE_ANNOTATIONS, COCO_SAMPLE_DIR
from posekit.defaults import DEFAULT, DEFAULT_WEIGHTS, DEMO_DETECTOR, UNTRAINED_TITLE
from posekit.errors import DownloadError
from posekit.estimator import PoseEstimator
from posekit.io.images import load_image
from posekit.models.detect import PersonDetector, load_detections
from posekit.poses import Poses
from posekit.viz import draw_skeleton, save_figure


@dataclasses.dataclass
class DemoResult:
    """What the demo did, for printing and for tests.

    Attributes:
        figure: where the figure was written.
        image_names: the bundled images, in figure order.
        people: per image, the estimated poses.
        pretrained: whether real pose weights were used.
        weights: which pose weights ran (name, path, or the untrained architecture).
        boxes_from: where the person boxes came from (a detector or the ground truth).
        notes: why a fallback happened and how to get the real thing, worded for the command line
            (``posekit demo`` prints them); empty when none did.
        seconds: wall-clock seconds per stage ("load models", "detect", "estimate", "draw").
        device: the torch device the networks ran on.
    """

    figure: Path
    image_names: list[str]
    people: list[Poses]
    pretrained: bool
    weights: str
    boxes_from: str
    notes: list[str]
    seconds: dict[str, float]
    device: str

    def summary(self) -> str:
        """A few lines for the terminal: what ran, how long it took, where the figure is."""
        count = sum(map(len, self.people))
        per_person = f", {1000 * self.seconds['estimate'] / count:.0f} ms per person" if count else ""
        stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.seconds.items())
        lines = [
            f"posekit demo: {len(self.image_names)} images, {count} people, on {self.device}",
            f"boxes: {self.boxes_from}",
            f"pose weights: {self.weights}",
        ]
        if not self.pretrained:
            lines += [
                f"WARNING: {UNTRAINED_TITLE}; it only shows that the pipeline runs.",
                f"  real weights: `posekit weights download {DEFAULT_WEIGHTS}`, or `posekit demo --weights PATH`",
            ]
        lines += [f"note: {note}" for note in self.notes]
        lines += [
            f"time: {stages}, total {sum(self.seconds.values()):.1f} s (flip test on{per_person})",
            f"figure: {self.figure}",
        ]
        return "\n".join(lines)


def run_demo(
    out_dir: str | os.PathLike = "posekit_output",
    pose_weights: str | os.PathLike = DEFAULT,
    detector: str | None = DEMO_DETECTOR,
    device: str = "auto",
    backend: str = "auto",
    precision: str = "auto",
    channel_order: str | None = None,
) -> DemoResult:
    """Detect, estimate and draw the people of the bundled COCO images; write ``out_dir/demo.png``.

    Args:
        out_dir: folder for the figure (created if needed).
        pose_weights: registered name, checkpoint path or ``"random"``; if a name is neither
            cached nor downloadable, an untrained network of the same depth runs instead (reported).
        detector: detector name, or None to use the ground-truth boxes; if its weights are
            neither cached nor downloadable, the ground-truth boxes are used (reported).
        device, backend, precision, channel_order: as for :class:`~posekit.estimator.PoseEstimator`.

    Raises:
        CheckpointError: ``pose_weights`` is a path that is not a fitting checkpoint.
    """
    notes: list[str] = []
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    options = dict(device=device, backend=backend, precision=precision, channel_order=channel_order)
    estimator = PoseEstimator(pose_weights, allow_untrained=True, **options)
    if estimator.untrained_because is not None:
        notes.append(estimator.untrained_because.for_cli())
    person_detector = None
    if detector is not None:
        try:
            person_detector = PersonDetector(detector, device=estimator.device)
        except DownloadError as error:
            notes.append(error.for_cli())
    seconds["load models"] = time.perf_counter() - start

    with open(COCO_SAMPLE_ANNOTATIONS, encoding="utf-8") as file:
        coco = json.load(file)
    images = sorted(coco["images"], key=lambda entry: entry["file_name"])
    arrays = [load_image(COCO_SAMPLE_DIR / entry["file_name"]) for entry in images]
    if person_detector is not None:
        start = time.perf_counter()
        boxes = person_detector(arrays)
        seconds["detect"] = time.perf_counter() - start
        boxes_from = f"detector {detector} (score >= {person_detector.score_threshold})"
    else:
        ground_truth = load_detections(coco["annotations"])
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        boxes = [ground_truth.get(entry["id"], empty) for entry in images]
        reason = "no detector asked for" if detector is None else f"{detector} weights unavailable"
        boxes_from = f"ground truth from {COCO_SAMPLE_ANNOTATIONS.name} ({reason})"

    start = time.perf_counter()
    people = estimator(arrays, boxes)
    seconds["estimate"] = time.perf_counter() - start

    start = time.perf_counter()
    names = [entry["file_name"] for entry in images]
    figure = save_figure(_draw(arrays, people, names, estimator, boxes_from), Path(out_dir) / "demo.png")
    seconds["draw"] = time.perf_counter() - start
    return DemoResult(
        figure, names, people, estimator.pretrained, estimator.weights_source, boxes_from, notes, seconds, str(estimator.device)
    )


def _draw(arrays: list[np.ndarray], people: list[Poses], names: list[str], estimator: PoseEstimator, boxes_from: str) -> Figure:
    """A 2-column grid, one panel per image: boxes and skeletons; the title says what the weights and the boxes are."""
    rows = -(-len(arrays) // 2)
    figure = Figure(figsize=(12, 4.6 * rows), layout="constrained")
    axes = figure.subplots(rows, 2, squeeze=False).ravel()
    for ax, image, found, name in zip(axes, arrays, people, names):
        # Untrained scores are all near zero: draw every joint, or the figure would show nothing.
        threshold = 0.3 if estimator.pretrained else -np.inf
        draw_skeleton(image, found.keypoints, score_threshold=threshold, ax=ax, boxes=found.boxes)
        ax.set_title(f"{name}: {len(found)} {'person' if len(found) == 1 else 'people'}")
    for unused in axes[len(arrays):]:
        unused.remove()
    if estimator.pretrained:
        figure.suptitle(f"posekit demo: {estimator.weights_source}\nboxes: {boxes_from}", fontsize=14)
    else:
        figure.suptitle(
            f"{UNTRAINED_TITLE}\nreal weights: posekit weights download {DEFAULT_WEIGHTS}  (or --weights PATH)"
            f"\nboxes: {boxes_from}",
            fontsize=14, color="red",
        )
    return figure
