"""The pose network in int8 on the CPU: ONNX Runtime static quantization, calibrated on person crops.

The recipe (see docs/realtime.md for the measurements behind it): BatchNorm folded, each 4x4
stride-2 transposed convolution of the head rewritten as its exact sub-pixel form (a 3x3 conv to
4x the channels + depth-to-space, :func:`~posekit.models.pose_resnet.subpixel_conv`), exported to
ONNX, then QDQ static quantization with per-channel int8 weights and uint8 activations (the
layout ONNX Runtime's VNNI kernels run), the activation ranges calibrated on real person crops
and their mirror images (the flip test feeds those too). Without the rewrite ONNX Runtime keeps the
transposed convolutions in float (it has no int8 ConvTranspose kernel), converting the activations
back and forth around them, and int8 gains far less.

The quantized model is built once per weights, input size and calibration set, and cached beside
the fp32 exports (``<cache>/onnx/<key>-int8.onnx``).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from posekit.core.crop import box_to_center_scale, crop_batch
from posekit.core.spec import DEFAULT_INPUT_SIZE, InputSpec
from posekit.data import COCO_SAMPLE_ANNOTATIONS, COCO_SAMPLE_DIR
from posekit.errors import PosekitError
from posekit.io import hub
from posekit.io.files import atomic_write
from posekit.io.images import ImageSource, load_image
from posekit.models.pose_resnet import subpixel_conv
from posekit.models.runtime import (
    ONNX_OPSET,
    OnnxRuntimeForward,
    _import_onnxruntime,
    _onnx_bytes,
    export_key,
    fold_batchnorm,
    onnxruntime_threads,
)

CALIBRATION_BATCH = 8
# Part of the cache key: a model built by an earlier recipe is built again, not reused.
RECIPE = "subpixel head, shared initializers unshared, QDQ per-channel s8 weights, u8 activations, minmax"

# (key, torch threads) -> session, as for the fp32 exports.
_SESSIONS: dict[tuple[str, int], OnnxRuntimeForward] = {}


def subpixel_network(model: nn.Module) -> torch.fx.GraphModule:
    """``model`` with BatchNorm folded and every 4x4 stride-2 padding-1 ``ConvTranspose2d``
    replaced by its exact sub-pixel form (:func:`~posekit.models.pose_resnet.subpixel_conv`).

    Computes the same function as ``model`` in eval mode, up to float rounding; ``model`` is untouched.

    Shape: same forward contract as ``model``.
    """
    network = fold_batchnorm(model)
    for name, module in list(network.named_modules()):
        if isinstance(module, nn.ConvTranspose2d):
            network.add_submodule(name, subpixel_conv(module))
    network.recompile()
    return network


def calibration_crops(spec: InputSpec, images: Sequence[ImageSource] | None = None) -> torch.Tensor:
    """Normalised person crops and their mirror images, to calibrate the int8 activation ranges.

    Args:
        spec: how the network is fed (crop size, normalisation, channel order).
        images: None for the people of posekit's bundled COCO images (their annotated boxes); else
            your own pictures, each taken whole as one person's box: photos or frames cropped
            around one person each, as your application will see them.

    Shape: -> (2M, 3, H, W) float32 for M people, ``spec.input_size = (W, H)``.
    """
    if images is None:
        document = json.loads(COCO_SAMPLE_ANNOTATIONS.read_text())
        names = {image["id"]: image["file_name"] for image in document["images"]}
        people: dict[int, list] = {}
        for annotation in document["annotations"]:
            people.setdefault(annotation["image_id"], []).append(annotation["bbox"])
        pairs = [(load_image(COCO_SAMPLE_DIR / names[i], upright=False), np.asarray(b, np.float64)) for i, b in people.items()]
    else:
        arrays = [load_image(image) for image in images]
        pairs = [(a, np.array([[0, 0, a.shape[1], a.shape[0]]], np.float64)) for a in arrays]
    if not pairs:
        raise PosekitError("int8 calibration needs at least one image of a person; got none")
    crops = []
    for rgb, boxes in pairs:
        centers, scales = box_to_center_scale(boxes, spec.aspect_ratio)
        crops.append(crop_batch(torch.from_numpy(rgb).permute(2, 0, 1), centers, scales, output_size=spec.input_size))
    inputs = spec.preprocess(torch.cat(crops).float())
    return torch.cat([inputs, inputs.flip(3)])


def quantize_int8(model: nn.Module, calibration: torch.Tensor, input_size: tuple[int, int] = DEFAULT_INPUT_SIZE) -> bytes:
    """``model`` as a QDQ int8 ONNX model (per-channel weights), activations calibrated on ``calibration``.

    Shape: calibration (M, 3, H, W) normalised crops, ``input_size = (W, H)``; the model maps
    (N, 3, H, W) float32 -> (N, K, H/4, W/4) float32 like the fp32 export.
    """
    _import_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration.split(CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch.contiguous().numpy()}

    fp32 = _without_shared_initializers(_onnx_bytes(subpixel_network(model), input_size, ONNX_OPSET))
    with tempfile.TemporaryDirectory(prefix="posekit-int8-") as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(fp32)
        quantize_static(
            str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )
        return target.read_bytes()


def _without_shared_initializers(onnx_model: bytes) -> bytes:
    """The ONNX model with each ``Identity`` of an initializer replaced by a copy of that initializer.

    The exporter stores equal tensors once and feeds the other users through ``Identity`` nodes
    (the folded biases of BatchNorms that were never trained are all zero). ONNX Runtime's
    quantizer quantizes a convolution only when its bias is an initializer, so without this pass
    such convolutions would stay in float.
    """
    import onnx

    document = onnx.load_from_string(onnx_model)
    graph = document.graph
    tensors = {tensor.name: tensor for tensor in graph.initializer}
    shared = [node for node in graph.node if node.op_type == "Identity" and node.input[0] in tensors]
    for node in shared:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensors[node.input[0]])
        copy.name = node.output[0]
        graph.initializer.append(copy)
        graph.node.remove(node)
    return document.SerializeToString()


def cached_int8_forward(
    model: nn.Module,
    input_size: tuple[int, int] | None = None,
    calibration_images: Sequence[ImageSource] | None = None,
) -> OnnxRuntimeForward:
    """``model`` quantized to int8 in ONNX Runtime, built once per weights, input size and calibration images.

    Looked up in this process, then in ``<cache>/onnx/<key>-int8.onnx``; built (and written
    atomically) only when neither has it. ``calibration_images``: see :func:`calibration_crops`.

    Shape: the returned callable maps (N, 3, H, W) float32 -> (N, K, H/4, W/4) float32.
    """
    _import_onnxruntime()
    spec = model.input_spec
    input_size = tuple(input_size or spec.input_size)
    crops = calibration_crops(spec, calibration_images)
    digest = hashlib.sha256(export_key(model, input_size).encode())
    digest.update(crops.numpy().tobytes())
    digest.update(RECIPE.encode())
    key = digest.hexdigest()[:24]
    session_key = (key, onnxruntime_threads())
    if session_key not in _SESSIONS:
        path = hub.cache_dir() / "onnx" / f"{key}-int8.onnx"
        forward = None
        if path.is_file():
            try:
                forward = OnnxRuntimeForward(path)
            except Exception:  # a damaged cache file: build it again
                forward = None
        if forward is None:
            data = quantize_int8(model, crops, input_size)
            try:
                with atomic_write(path) as file:
                    file.write(data)
            except (OSError, PosekitError):
                pass  # a read-only cache: this process keeps the model in memory
            forward = OnnxRuntimeForward(data)
        _SESSIONS[session_key] = forward
    return _SESSIONS[session_key]

