"""posekit's defaults, in one torch-free module: the library and the CLI read them from here.

Kept free of heavy imports so that ``posekit --help`` can show them instantly.
"""
from __future__ import annotations

# Pose weights: the authors' ResNet-50 256x192; the same network trained by mmpose when Google
# Drive refuses; and the value of ``pose_weights``/``--weights`` that means "one of those two".
DEFAULT_WEIGHTS = "pose_resnet_50_256x192"
FALLBACK_WEIGHTS = "pose_resnet_50_256x192_mmpose"
DEFAULT = "default"
# The value of ``pose_weights``/``--weights`` for an untrained network: random weights drawn from
# this seed, so every run builds the same network (and reuses one cached ONNX export).
RANDOM = "random"
UNTRAINED_SEED = 0
# What every picture, video frame and screen of an untrained network says.
UNTRAINED_TITLE = "UNTRAINED random weights: these keypoints are NOT a prediction"

# Heatmap decodings (see posekit.core.heatmaps.decode); the paper's is "quarter".
DECODE_METHODS = ("argmax", "quarter", "dark")

# Network runtimes and precisions (see posekit.models.runtime.inference_forward).
BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")

# Person boxes scoring less are not drawn as people: the detector's threshold, and the one
# ``posekit predict`` draws the boxes of a --boxes file with (its results keep every box).
BOX_SCORE_THRESHOLD = 0.5

# Person detectors: the accurate default, and the fast one the demo uses (about 1 s per image
# on 2 CPU cores, against about 9 s).
DEFAULT_DETECTOR = "fasterrcnn_resnet50_fpn_v2"
DEMO_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"

# The real-time preset (posekit track --realtime, posekit.realtime): the detector measured fastest on
# 2 CPU cores at 640x480 (docs/realtime.md), and the most frames between two of its runs.
REALTIME_DETECTOR = "ssdlite320_mobilenet_v3_large"
REALTIME_DETECTOR_EVERY = 10
# libx264's preset for the annotated video of a real-time run: encoding shares the cores with the network.
REALTIME_ENCODER_PRESET = "veryfast"
