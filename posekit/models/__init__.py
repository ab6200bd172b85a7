"""posekit.models: networks and their weights.

The SimpleBaseline network (``pose_resnet``), the weights registry and checkpoint reading,
runtimes and ONNX export, the person detectors, optical flow. Imports from core and io.
"""
