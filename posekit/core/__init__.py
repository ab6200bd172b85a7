"""posekit.core: the arithmetic of top-down pose estimation, numpy and torch only.

Keypoint sets and the COCO-17 constants, the input spec, crops, heatmap encoding and decoding,
OKS, the batched top-down pass, smoothing, dynamic time warping, argument checks. Nothing here imports from a layer
above it (io, models, eval, train, the applications); ``tests/test_layers.py`` checks that.
"""
