"""posekit: top-down 2D human pose estimation with SimpleBaseline (Xiao, Wu & Wei, ECCV 2018).

    >>> import posekit
    >>> estimator = posekit.PoseEstimator(detector="fasterrcnn_mobilenet_v3_large_fpn")
    >>> poses = estimator("people.jpg")           # boxes (N, 4), box_scores (N,), keypoints (N, 17, 3)
    >>> posekit.draw_skeleton(posekit.load_image("people.jpg"), poses.keypoints, boxes=poses.boxes)
    >>> posekit.predict(["photos/"], estimator, out_dir="drawings")      # drawings + COCO results JSON
    >>> posekit.track_video(posekit.PoseTracker(estimator), "clip.mp4", out="tracked.mp4")

The package is layered (``docs/architecture.md``): ``core`` (arithmetic), ``io``, ``models``,
``eval``, ``train``, then the applications at this level and ``cli``.

The names below are imported on first use, so ``import posekit`` stays instant (no torch).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

# public name -> module that defines it
_EXPORTS = {
    "PoseEstimator": "posekit.estimator",
    "Poses": "posekit.poses",
    "Person": "posekit.poses",
    "predict": "posekit.predict",
    "PoseTracker": "posekit.track",
    "track_video": "posekit.track",
    "PersonDetector": "posekit.models.detect",
    "pose_resnet": "posekit.models.pose_resnet",
    "WEIGHTS": "posekit.models.weights",
    "load_image": "posekit.io.images",
    "draw_skeleton": "posekit.viz",
}
__all__ = ["__version__", *_EXPORTS]


def _source_version() -> str:
    """This package's version: from the ``pyproject.toml`` of the checkout it is imported from, else from
    the installed distribution's metadata.

    A checkout's pyproject wins because an editable install's metadata keeps the version of the day it
    was installed; a wheel (site-packages, Colab) has no pyproject beside it and its metadata is current.
    """
    import re
    from importlib.metadata import PackageNotFoundError, version

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        found = re.search(r'^name = "posekit"\nversion = "([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
        if found:
            return found.group(1)
    try:
        return version("posekit")
    except PackageNotFoundError:
        return "unknown (neither installed nor in a checkout)"


__version__ = _source_version()

if TYPE_CHECKING:
    from posekit.estimator import PoseEstimator
    from posekit.io.images import load_image
    from posekit.models.detect import PersonDetector
    from posekit.models.pose_resnet import pose_resnet
    from posekit.models.weights import WEIGHTS
    from posekit.poses import Person, Poses
    from posekit.predict import predict
    from posekit.track import PoseTracker, track_video
    from posekit.viz import draw_skeleton


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'posekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
