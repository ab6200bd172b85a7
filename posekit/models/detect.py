"""Finding people: torchvision's Faster R-CNN as a person detector, and reading detection files.

The top-down method runs the pose network on one crop per person, so it first needs person boxes.
They come from :class:`PersonDetector` (torchvision's COCO-trained Faster R-CNN or, for real time,
SSDlite, its checkpoint fetched through posekit's cache like the pose weights) or from a COCO
detection-results file read by :func:`load_detections` (the paper's evaluation used such a file).
On the CPU, SSDlite's backbone and head run in ONNX Runtime, exported once per weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models import WeightsEnum, detection
from torchvision.models.detection.ssd import SSD
from torchvision.ops import boxes as box_ops

from posekit.core import validate
from posekit.core.coco17 import PERSON_CATEGORY_ID
from posekit.core.device import resolve_device
from posekit.defaults import BOX_SCORE_THRESHOLD, DEFAULT_DETECTOR
from posekit.errors import CheckpointError, DetectionsFormatError, Hint
from posekit.io import hub
from posekit.io.files import read_json



@dataclass(frozen=True)
class DetectorSpec:
    """How to build one torchvision detector and where its COCO checkpoint lives."""

    builder: Callable[..., nn.Module]
    url: str
    num_classes: int


def _spec(builder: Callable[..., nn.Module], weights: WeightsEnum) -> DetectorSpec:
    return DetectorSpec(builder, weights.url, len(weights.meta["categories"]))


DETECTORS: dict[str, DetectorSpec] = {
    # Accurate default (COCO box AP 46.7 per torchvision).
    "fasterrcnn_resnet50_fpn_v2": _spec(
        detection.fasterrcnn_resnet50_fpn_v2, detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    ),
    # About 4x faster on CPU, COCO box AP 32.8.
    "fasterrcnn_mobilenet_v3_large_fpn": _spec(
        detection.fasterrcnn_mobilenet_v3_large_fpn, detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1
    ),
    # Real-time detectors on a CPU (posekit track --realtime, docs/realtime.md): 320 px inputs.
    "fasterrcnn_mobilenet_v3_large_320_fpn": _spec(
        detection.fasterrcnn_mobilenet_v3_large_320_fpn, detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1
    ),
    "ssdlite320_mobilenet_v3_large": _spec(
        detection.ssdlite320_mobilenet_v3_large, detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1
    ),
}


def detector_checkpoint_path(name: str, progress: bool = True) -> Path:
    """Path of the COCO checkpoint of detector ``name``, downloading it into posekit's cache if needed.

    A copy torchvision already downloaded (``torch.hub`` checkpoints folder) is used as is.

    Raises:
        DownloadError: not cached and the download failed (offline: one sentence saying what to do).
        ChecksumError: the download does not match the hash in its torchvision file name.
    """
    url = _get_spec(name).url
    filename = url.rsplit("/", 1)[-1]
    torchvision_copy = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if torchvision_copy.is_file():
        return torchvision_copy
    # torchvision names its files <name>-<first hex digits of the sha256>.pth.
    sha256_prefix = Path(filename).stem.rsplit("-", 1)[-1]
    destination = hub.cache_dir() / "checkpoints" / filename
    hint = Hint(python="pass the person boxes yourself, as estimator(images, boxes)",
                cli="give person boxes with --boxes FILE, or pass --detector none to take the whole image as one person")
    return hub.download_url(url, destination, sha256=sha256_prefix, progress=progress, hint=hint)


def _get_spec(name: str) -> DetectorSpec:
    if name not in DETECTORS:
        raise CheckpointError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}")
    return DETECTORS[name]


class PersonDetector:
    """Person boxes from torchvision's COCO Faster R-CNN, batched over images.

    Args:
        model: a name from :data:`DETECTORS`.
        score_threshold: boxes scoring below it are dropped.
        device: ``"auto"`` (CUDA, then MPS, then CPU), or anything ``torch.device`` accepts.
        checkpoint: a state_dict file to load instead of the cached/downloaded COCO checkpoint.

    Example:
        >>> detector = PersonDetector("fasterrcnn_mobilenet_v3_large_fpn")
        >>> [(boxes, scores)] = detector([load_image("people.jpg")])
    """

    def __init__(
        self,
        model: str = DEFAULT_DETECTOR,
        score_threshold: float = BOX_SCORE_THRESHOLD,
        device: str | torch.device = "auto",
        checkpoint: str | os.PathLike | None = None,
    ) -> None:
        spec = _get_spec(model)
        self.device = resolve_device(device)  # before a download that a bad device name would waste
        path = Path(checkpoint) if checkpoint is not None else detector_checkpoint_path(model)
        # weights=None / weights_backbone=None: build the bare architecture, never let torchvision download.
        network = spec.builder(weights=None, weights_backbone=None, num_classes=spec.num_classes)
        try:
            network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as error:  # torch reports bad files with many exception types (KeyError, UnpicklingError...)
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{path}: not a {model} checkpoint ({first_line})") from None
        self.name = model
        self.score_threshold = score_threshold
        # torchvision keeps every box over its own low threshold (SSD 0.001, Faster R-CNN 0.05) in each of
        # the 90 classes for NMS, most of the post-processing time. From just under ours it keeps the same
        # people (it uses >, we >=); only its cap of boxes per image no longer counts the boxes we drop.
        below = float(np.nextafter(np.float32(score_threshold), np.float32(-np.inf)))
        setattr(network if isinstance(network, SSD) else network.roi_heads, "score_thresh", below)
        self.model = network.eval().to(self.device)
        self._onnx: tuple[SSD, Callable, torch.Tensor] | None = None  # the model, its ONNX forward, its anchors

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Detect people in each image.

        Args:
            images: RGB uint8 arrays, each of shape (H, W, 3); sizes may differ.

        Returns:
            Per image ``(boxes, scores)``: COCO boxes x, y, w, h in pixels, shape (M, 4) float32,
            and their scores, shape (M,) float32, highest first; M may be 0.
        """
        if not images:
            return []
        # The detector normalises and resizes internally; it wants RGB floats in 0..1.
        tensors = [torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1).float() / 255 for image in images]
        outputs = self._ssd_in_onnxruntime(tensors) if self.backend == "onnxruntime" else self.model(tensors)
        return [self._people(output) for output in outputs]

    @property
    def backend(self) -> str:
        """What runs the network: ``"onnxruntime"`` for SSD's backbone and head on the CPU, else ``"torch"``."""
        from posekit.models.runtime import _has_onnxruntime

        on_cpu = isinstance(self.model, SSD) and self.device.type == "cpu"
        return "onnxruntime" if on_cpu and _has_onnxruntime() else "torch"

    def _ssd_in_onnxruntime(self, tensors: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """``SSD.forward`` in eval mode for people: its backbone and head run by ONNX Runtime (4x torch's
        speed on a CPU, :mod:`posekit.models.runtime`), the post-processing of the person class only
        (:func:`_ssd_people`); resizing and anchors stay torchvision's."""
        ssd = self.model
        if self._onnx is None or self._onnx[0] is not ssd:
            from posekit.models.runtime import cached_onnx_forward

            # Every image is resized to the fixed size, so the anchors are the same for all: made once.
            width, height = ssd.transform.fixed_size
            blank, _ = ssd.transform([torch.zeros(3, height, width)])
            anchors = ssd.anchor_generator(blank, list(ssd.backbone(blank.tensors).values()))[0]
            self._onnx = (ssd, cached_onnx_forward(_SSDNetwork(ssd), (width, height)), anchors)
        _, forward, anchors = self._onnx
        images, _ = ssd.transform(tensors)
        outputs = forward(images.tensors)
        detections = [_ssd_people(ssd, out[:, :4], out[:, 4:], anchors, size)
                      for out, size in zip(outputs, images.image_sizes)]
        return ssd.transform.postprocess(detections, images.image_sizes, [t.shape[-2:] for t in tensors])

    def _people(self, output: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        # torchvision's COCO labels number person 1, as the COCO files do.
        keep = (output["labels"] == PERSON_CATEGORY_ID) & (output["scores"] >= self.score_threshold)
        boxes = output["boxes"][keep].cpu().numpy()
        boxes[:, 2:] -= boxes[:, :2]
        return boxes.astype(np.float32), output["scores"][keep].cpu().numpy().astype(np.float32)


class _SSDNetwork(nn.Module):
    """SSD's backbone and head as one tensor function, for the ONNX export.

    Shape: normalised images (N, 3, H, W) -> (N, A, 4 + C): per anchor its box regression and class logits.
    """

    def __init__(self, ssd: SSD) -> None:
        super().__init__()
        self.backbone, self.head = ssd.backbone, ssd.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.head(list(self.backbone(images).values()))
        return torch.cat([out["bbox_regression"], out["cls_logits"]], dim=2)


def _ssd_people(ssd: SSD, regression: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor,
                image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """torchvision's ``SSD.postprocess_detections`` for one image and the person class alone.

    It treats each class on its own (threshold, top-k, NMS within the class), so the people are the
    same as from all 90 classes, except that its cap of boxes per image counts people only. Decoding
    only the boxes kept saves the rest of the time.

    Shape: regression (A, 4), logits (A, C) of the A anchors (A, 4) -> boxes (M, 4) x1, y1, x2, y2 in
    the resized image, scores (M,), labels (M,).
    """
    scores = torch.softmax(logits, dim=-1)[:, PERSON_CATEGORY_ID]
    keep = torch.where(scores > ssd.score_thresh)[0]
    scores, order = scores[keep].topk(min(ssd.topk_candidates, len(keep)))
    keep = keep[order]
    boxes = ssd.box_coder.decode_single(regression[keep], anchors[keep])
    boxes = box_ops.clip_boxes_to_image(boxes, image_size)
    kept = box_ops.nms(boxes, scores, ssd.nms_thresh)[: ssd.detections_per_img]
    return {"boxes": boxes[kept], "scores": scores[kept], "labels": torch.full_like(kept, PERSON_CATEGORY_ID)}


_SCHEMA = (
    "a JSON list of {'image_id': int, 'category_id': 1, 'bbox': [x, y, w, h], 'score': number}, "
    "or a COCO annotation file"
)
_ENTRY_FIELDS = {"image_id": validate.ID, "bbox": validate.numbers(4, " [x, y, w, h]", finite=False)}
# A missing score counts as 1; a NaN one is kept here and dealt with where boxes are checked.
_OPTIONAL_FIELDS = {"score": validate.ANY_NUMBER}

Detections = dict[int, tuple[np.ndarray, np.ndarray]]


def load_detections(source: str | os.PathLike | list[dict] | dict) -> Detections:
    """Read person boxes grouped by image: COCO detection results, or a COCO annotation file's boxes.

    ``source`` is a JSON file or its already-loaded content: a list of detections, or a dict
    with an ``annotations`` list (ground-truth boxes). Entries of other categories than person
    (``category_id`` 1) are ignored, as in the paper's evaluation; a missing ``score`` counts as 1.
    Reading takes time linear in the number of entries.

    Returns:
        image_id -> (boxes, scores): COCO boxes x, y, w, h, shape (M, 4) float64 (the JSON
        values exactly, so centers and scales round as in the paper's code), and scores,
        shape (M,) float64, in file order; images in the order they first appear.

    Raises:
        DetectionsFormatError: the file is missing or not JSON, or an entry does not follow the
            schema (an id that is not an integer of int64 range, a bbox that is not 4 numbers);
            the message names the file and the first bad entry.
    """
    if isinstance(source, (str, os.PathLike)):
        return _group_detections(read_json(source, DetectionsFormatError, _SCHEMA), str(source))
    return _group_detections(source, f"detections {type(source).__name__}")


def read_boxes_file(path: str | os.PathLike) -> tuple[Detections, dict[str, int]]:
    """The person boxes of a ``--boxes`` file (see :func:`load_detections`) and, for a COCO
    annotation file, its image ids by file name. The file is read once, so a pipe works.

    Raises:
        DetectionsFormatError: as :func:`load_detections`, or an ``images`` list that is not
            ``{'id': int, 'file_name': str}`` entries.
    """
    content = read_json(path, DetectionsFormatError, _SCHEMA)
    boxes = _group_detections(content, str(path))
    images = content.get("images", []) if isinstance(content, dict) else []
    if not isinstance(images, list) or not all(isinstance(entry, dict) for entry in images):
        raise DetectionsFormatError(f"{path}: 'images' must be a list of {{'id': int, 'file_name': str}} entries")
    named = [e for e in images if isinstance(e.get("file_name"), str) and validate.ID[0](e.get("id"))]
    return boxes, {entry["file_name"]: int(entry["id"]) for entry in named}


def _group_detections(entries: object, name: str) -> Detections:
    """Check every entry of a loaded detections file and group the person boxes by image id."""
    where = f"{name}: entries"
    if isinstance(entries, dict) and "annotations" in entries:
        entries, where = entries["annotations"], f"{name}: annotations"
    if not isinstance(entries, list):
        raise DetectionsFormatError(f"{name}: top level is a {type(entries).__name__}; expected {_SCHEMA}")
    validate.check_records(entries, _ENTRY_FIELDS, where, DetectionsFormatError, _OPTIONAL_FIELDS)
    image_ids, boxes, scores = [], [], []
    for entry in entries:
        if entry.get("category_id", PERSON_CATEGORY_ID) == PERSON_CATEGORY_ID:
            image_ids.append(int(entry["image_id"]))
            boxes.append(entry["bbox"])
            scores.append(entry.get("score", 1.0))
    image_ids = np.asarray(image_ids, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64)
    # One sort instead of a scan per image: each image's entries, in file order, are one slice of it.
    order = np.argsort(image_ids, kind="stable")
    unique, first = np.unique(image_ids[order], return_index=True)
    groups = np.split(order, first[1:]) if len(order) else []
    by_appearance = np.argsort(order[first], kind="stable")
    return {int(unique[k]): (boxes[groups[k]], scores[groups[k]]) for k in by_appearance}
