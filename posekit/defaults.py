"""posekit's defaults, in one torch-free module: the library and the CLI read them from here.

Kept free of heavy imports so that ``posekit --help`` can show them instantly.
"""
from __future__ import annotations

# Pose weights: the authors' ResNet-50 256x192; the same network trained by mmpose when Google
# Drive refuses; and the value of ``pose_weights``/``--weights`` that means "one of those two".
DEFAULT_WEIGHTS = "pose_resnet_50_256x192"
FALLBACK_WEIGHTS = "pose_resnet_50_256x192_mmpose"
DEFAULT = "default"

# Network runtimes and precisions (see posekit.models.runtime.inference_forward).
BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")

# Person detectors: the accurate default, and the fast one the demo uses (about 1 s per image
# on 2 CPU cores, against about 9 s).
DEFAULT_DETECTOR = "fasterrcnn_resnet50_fpn_v2"
DEMO_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"

# The real-time preset (posekit track --realtime, posekit.realtime): the detector measured fastest on
# 2 CPU cores at 640x480 (docs/realtime.md), and the most frames between two of its runs.
REALTIME_DETECTOR = "ssdlite320_mobilenet_v3_large"
REALTIME_DETECTOR_EVERY = 10
