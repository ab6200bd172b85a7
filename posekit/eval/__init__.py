"""posekit.eval: metrics equal to the official evaluators'.

COCO keypoint AP through pycocotools (``coco``), PoseTrack's tracking metrics (``posetrack``).
Imports from core, io and models.
"""
