"""COCO keypoint evaluation with the paper's protocol: person crops, OKS-NMS, rescoring, COCOeval.

The numbers SimpleBaseline reports on COCO val2017 come from one fixed recipe, which this module
reproduces step for step:

1. People: ground-truth boxes (``iscrowd`` 0, category person, at least one labelled keypoint,
   box clipped to the image) or a person-detections file (category 1, score >= 0.0).
2. Each box becomes a center/scale crop (aspect of the network input, 1.25 padding).
3. The model runs on the crop and, with flip test, on its mirror image; the mirrored heatmaps
   are flipped back, shifted one pixel and averaged in.
4. Heatmaps are decoded to image pixels (quarter-pixel shift by default).
5. Each person is rescored: box score x mean of its keypoint scores above 0.2.
6. Per image, OKS-based non-maximum suppression at 0.9 drops duplicates.
7. pycocotools' ``COCOeval`` in ``"keypoints"`` mode gives AP / AR.

:func:`download_coco` fetches val2017 into the layout :class:`CocoPaths` describes, and
:func:`make_synthetic_coco` writes a small COCO-format dataset for tests.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from posekit import hub, validate
from posekit.coco17 import FLIP_PAIRS, KEYPOINT_NAMES, NUM_KEYPOINTS, OKS_SIGMAS, SKELETON
from posekit.crop import PIXEL_STD, box_to_center_scale, crop_batch
from posekit.detect import load_detections
from posekit.errors import (
    AnnotationError,
    DetectionsFormatError,
    DownloadError,
    ImageReadError,
    PosekitError,
)
from posekit.files import atomic_write, read_json, write_json
from posekit.heatmaps import decode as decode_heatmaps
from posekit.heatmaps import flip_back
from posekit.images import load_image
from posekit.weights import DEFAULT_WEIGHTS, PoseWeights, get_weights

# The paper's COCO test settings (the official experiments/coco/*.yaml, TEST section).
OKS_NMS_THRESHOLD = 0.9
VISIBILITY_THRESHOLD = 0.2
DETECTION_SCORE_THRESHOLD = 0.0
PERSON_CATEGORY_ID = 1

# COCOeval.stats in its own order.
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


# --------------------------------------------------------------------------------------------
# OKS, OKS-NMS and rescoring
# --------------------------------------------------------------------------------------------


def oks_iou(
    keypoints: np.ndarray,
    other_keypoints: np.ndarray,
    areas: np.ndarray,
    other_areas: np.ndarray,
    sigmas: np.ndarray = OKS_SIGMAS,
) -> np.ndarray:
    """Object keypoint similarity of every person in one set with every person in another.

    The OKS-NMS flavour of the official code: all joints count (no visibility test) and the
    object scale is the mean of the two areas, ``exp(-d^2 / (2 * ((a1 + a2) / 2) * (2 sigma)^2))``
    averaged over joints.

    Shape:
        keypoints: (N, K, 2 or 3), other_keypoints: (M, K, 2 or 3); only x, y are used.
        areas: (N,), other_areas: (M,); sigmas: (K,).
        Returns: (N, M) float64.
    """
    a = np.asarray(keypoints, dtype=np.float64)[:, None, :, :2]
    b = np.asarray(other_keypoints, dtype=np.float64)[None, :, :, :2]
    squared_distances = ((a - b) ** 2).sum(-1)  # (N, M, K)
    variances = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    mean_areas = (np.asarray(areas, dtype=np.float64)[:, None] + np.asarray(other_areas, dtype=np.float64)[None, :]) / 2
    # np.spacing(1) keeps zero-area people finite, as in the official code.
    exponents = squared_distances / variances / (mean_areas[..., None] + np.spacing(1)) / 2
    return np.exp(-exponents).mean(-1)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    threshold: float = OKS_NMS_THRESHOLD,
) -> np.ndarray:
    """Greedy non-maximum suppression of people by OKS, as the official evaluation does per image.

    Visits people by descending score; each kept person removes every remaining one whose OKS
    with it is above ``threshold``. Among equal scores the later index is visited first, the
    order the official ``argsort()[::-1]`` gives.

    Shape:
        keypoints: (N, K, 3) or (N, K, 2), scores: (N,), areas: (N,).
        Returns: (M,) int64 indices of the kept people, highest score first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="stable")[::-1]
    similarity = oks_iou(keypoints, keypoints, areas, areas)
    suppressed = np.zeros(len(scores), dtype=bool)
    kept = []
    # Greedy by nature: whether a person survives depends on the people kept before it.
    for index in order:
        if not suppressed[index]:
            kept.append(index)
            suppressed |= similarity[index] > threshold
    return np.asarray(kept, dtype=np.int64)


def rescore(keypoints: np.ndarray, box_scores: np.ndarray, threshold: float = VISIBILITY_THRESHOLD) -> np.ndarray:
    """The official person score: box score x mean of the keypoint scores above ``threshold``.

    A person with no keypoint score above ``threshold`` gets score 0.

    Shape:
        keypoints: (N, K, 3) with scores in ``[..., 2]``, box_scores: (N,). Returns: (N,) float64.
    """
    keypoint_scores = np.asarray(keypoints, dtype=np.float64)[..., 2]
    confident = keypoint_scores > threshold
    counts = confident.sum(1)
    totals = np.where(confident, keypoint_scores, 0.0).sum(1)
    means = np.divide(totals, counts, out=np.zeros(len(counts)), where=counts > 0)
    return np.asarray(box_scores, dtype=np.float64) * means


# --------------------------------------------------------------------------------------------
# Annotations and detections
# --------------------------------------------------------------------------------------------

_IMAGE_FIELDS = {"id": validate.INTEGER, "file_name": validate.TEXT, "width": validate.POSITIVE,
                 "height": validate.POSITIVE}
_ANNOTATION_FIELDS = {
    "id": validate.INTEGER, "image_id": validate.INTEGER, "category_id": validate.INTEGER,
    "bbox": validate.numbers(4, " [x, y, w, h]"), "keypoints": validate.numbers(3 * NUM_KEYPOINTS, " (x, y, v per joint)"),
    "num_keypoints": validate.INTEGER, "iscrowd": validate.FLAG, "area": validate.NUMBER,
}


def load_keypoint_annotations(ann_file: str | os.PathLike) -> dict:
    """Read a COCO person-keypoints annotation file and check the fields evaluation relies on.

    Returns the parsed JSON (``images``, ``annotations``, ``categories``).

    Raises:
        AnnotationError: missing file, bad JSON, or a missing or wrongly typed field, naming it.
    """
    path = Path(ann_file)
    dataset = read_json(path, AnnotationError, "a COCO person_keypoints_*.json annotation file")
    if not isinstance(dataset, dict) or "images" not in dataset or "annotations" not in dataset:
        raise AnnotationError(f"{path}: expected a COCO annotation object with 'images' and 'annotations' lists")
    validate.check_records(dataset["images"], _IMAGE_FIELDS, f"{path}: images", AnnotationError)
    validate.check_records(dataset["annotations"], _ANNOTATION_FIELDS, f"{path}: annotations", AnnotationError)
    dataset.setdefault("categories", [{"id": PERSON_CATEGORY_ID, "name": "person"}])
    validate.check_records(dataset["categories"], {"id": validate.INTEGER}, f"{path}: categories", AnnotationError)
    return dataset


def clean_boxes(boxes: np.ndarray, image_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip COCO boxes to their images the way the official data loader does.

    ``x1 = max(0, x)``, ``x2 = min(width - 1, x1 + max(0, w - 1))`` (same for y); the cleaned
    box is ``[x1, y1, x2 - x1, y2 - y1]`` and is usable when ``x2 >= x1`` and ``y2 >= y1``.

    Shape:
        boxes: (N, 4) xywh, image_sizes: (N, 2) (width, height).
        Returns: cleaned boxes (N, 4) float64, usable (N,) bool.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    sizes = np.asarray(image_sizes, dtype=np.float64)
    top_left = np.maximum(0.0, boxes[:, :2])
    bottom_right = np.minimum(sizes - 1, top_left + np.maximum(0.0, boxes[:, 2:] - 1))
    usable = (bottom_right >= top_left).all(1)
    return np.concatenate([top_left, bottom_right - top_left], 1), usable


@dataclass(frozen=True)
class _People:
    """One row per person to evaluate; arrays of equal length N."""

    image_ids: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) float64 xywh
    scores: np.ndarray  # (N,) float64
    annotation_ids: np.ndarray  # (N,) int64, -1 for detections


def _ground_truth_people(dataset: dict, image_ids: np.ndarray) -> _People:
    """The official GT selection: not crowd, person, clean box, area > 0, a labelled keypoint."""
    wanted = set(image_ids.tolist())
    annotations = [a for a in dataset["annotations"] if a["image_id"] in wanted]
    sizes = {image["id"]: (image["width"], image["height"]) for image in dataset["images"]}
    widths = {
        "id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 1, "bbox": 4, "keypoints": 3 * NUM_KEYPOINTS
    }
    columns = {
        name: np.asarray([a[name] for a in annotations], dtype=np.float64).reshape(len(annotations), width)
        for name, width in widths.items()
    }
    boxes, usable = clean_boxes(
        columns["bbox"], np.asarray([sizes[a["image_id"]] for a in annotations], dtype=np.float64).reshape(-1, 2)
    )
    keep = (
        usable
        & (columns["area"][:, 0] > 0)
        & (columns["iscrowd"][:, 0] == 0)
        & (columns["category_id"][:, 0] == PERSON_CATEGORY_ID)
        & (columns["keypoints"].max(1, initial=0) > 0)
    )
    return _People(
        image_ids=columns["image_id"][keep, 0].astype(np.int64),
        boxes=boxes[keep],
        scores=np.ones(int(keep.sum())),
        annotation_ids=columns["id"][keep, 0].astype(np.int64),
    )


def _detected_people(detections_file: Path, image_ids: np.ndarray, all_image_ids: set, threshold: float) -> _People:
    """Person detections (category 1) of the images in ``image_ids`` with score >= ``threshold``."""
    by_image = load_detections(detections_file)
    if by_image and not all_image_ids & by_image.keys():
        raise DetectionsFormatError(
            f"{detections_file}: none of its image ids appear in the annotation file; "
            "expected detections for the same COCO split"
        )
    found = [image_id for image_id in image_ids.tolist() if image_id in by_image]
    boxes = np.concatenate([by_image[i][0] for i in found] or [np.zeros((0, 4))]).astype(np.float64)
    scores = np.concatenate([by_image[i][1] for i in found] or [np.zeros(0)]).astype(np.float64)
    counts = [len(by_image[i][1]) for i in found]
    keep = scores >= threshold
    return _People(
        image_ids=np.repeat(np.asarray(found, dtype=np.int64), counts)[keep],
        boxes=boxes[keep],
        scores=scores[keep],
        annotation_ids=np.full(int(keep.sum()), -1, dtype=np.int64),
    )


class CocoPersonDataset(torch.utils.data.Dataset):
    """One item per person of a COCO keypoint split: the network-ready crop and where it came from.

    Args:
        ann_file: COCO ``person_keypoints_*.json``; it names the images and is the ground truth.
        image_dir: folder holding the images' ``file_name``s.
        boxes: ``"gt"`` for the annotated boxes (official GT rules), or the path of a COCO
            detection-results JSON (``[{image_id, category_id, bbox, score}, ...]``).
        image_size: crop (width, height); None takes the weights' input size.
        weights: a :class:`~posekit.weights.PoseWeights` or its name; decides the channel
            order and normalisation of the crops.
        score_threshold: detections with a lower score are dropped (the paper: 0.0).
        max_images: evaluate only the first ``max_images`` images by id (quick runs).

    Items are ``(crop, meta)``: crop (3, H, W) float32 normalised for the weights, meta a dict
    with ``image_id``, ``center`` (2,), ``scale`` (2,), ``score`` (box score, 1 for GT),
    ``area`` (``prod(scale * 200)``, the OKS-NMS area) and ``annotation_id`` (-1 for detections).
    Images are decoded with PIL, ignoring EXIF orientation as the official OpenCV loader does.
    Items are ordered by image, so the last decoded image is kept for the next person: with
    ``shuffle=False`` each image is decoded about once per DataLoader worker.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        boxes: str | os.PathLike = "gt",
        image_size: tuple[int, int] | None = None,
        weights: PoseWeights | str = DEFAULT_WEIGHTS,
        score_threshold: float = DETECTION_SCORE_THRESHOLD,
        max_images: int | None = None,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.weights = get_weights(weights) if isinstance(weights, str) else weights
        self.image_size = tuple(image_size) if image_size is not None else tuple(self.weights.input_size)
        annotations = load_keypoint_annotations(self.ann_file)
        all_image_ids = np.unique(np.asarray([image["id"] for image in annotations["images"]], dtype=np.int64))
        self.image_ids = all_image_ids[:max_images]
        if str(boxes) == "gt":
            people = _ground_truth_people(annotations, self.image_ids)
        else:
            people = _detected_people(Path(boxes), self.image_ids, set(all_image_ids.tolist()), score_threshold)
        # Stable sort by image keeps the file's order within an image and lets items share a decode.
        order = np.argsort(people.image_ids, kind="stable")
        self.person_image_ids = people.image_ids[order]
        self.boxes = people.boxes[order]
        self.box_scores = people.scores[order]
        self.annotation_ids = people.annotation_ids[order]
        width, height = self.image_size
        # A cleaned box may be 0 px wide or high; the official code then takes the size from the
        # other side. A tiny positive size gives the same float32 center and scale.
        sized = np.concatenate([self.boxes[:, :2], np.maximum(self.boxes[:, 2:], 1e-6)], 1)
        self.centers, self.scales = box_to_center_scale(sized, aspect_ratio=width / height)
        self._files = {image["id"]: self.image_dir / image["file_name"] for image in annotations["images"]}
        # Checked here, in one line, rather than by a DataLoader worker's traceback halfway through.
        missing = [self._files[i].name for i in np.unique(self.person_image_ids).tolist() if not self._files[i].is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise ImageReadError(
                f"{self.image_dir}: {len(missing)} image(s) that {self.ann_file} lists are missing ({shown}); "
                "expected the images of that annotation file in that folder"
            )
        self._last_image: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.person_image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id = int(self.person_image_ids[index])
        if self._last_image is None or self._last_image[0] != image_id:
            self._last_image = (image_id, load_image(self._files[image_id], upright=False))
        center, scale = self.centers[index], self.scales[index]
        crop = crop_batch(self._last_image[1], center[None], scale[None], output_size=self.image_size)
        meta = {
            "image_id": image_id,
            "center": center,
            "scale": scale,
            "score": float(self.box_scores[index]),
            "area": float(np.prod(scale * PIXEL_STD)),
            "annotation_id": int(self.annotation_ids[index]),
        }
        return self.weights.preprocess(crop)[0], meta


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """What :func:`evaluate` measured.

    Attributes:
        stats: COCOeval's summary, keys :data:`STAT_NAMES` (AP, AP50, ..., ARl), values in 0..1.
        results: the kept people in COCO keypoint-results format
            (``{image_id, category_id, keypoints: [x, y, score] * 17, score}``).
        timing: seconds per stage: ``data`` (waiting for crops), ``model``, ``decode``,
            ``nms`` (rescoring + OKS-NMS), ``cocoeval``, ``total``.
        num_people: people (crops) evaluated before NMS; num_images: images in the evaluation.
        summary: the table pycocotools' ``summarize()`` prints.
    """

    stats: dict[str, float]
    results: list[dict]
    timing: dict[str, float]
    num_people: int
    num_images: int
    summary: str = field(repr=False, default="")

    def table(self, reported: Mapping[str, float] | None = None) -> str:
        """The stats in percent as an aligned text table, beside ``reported`` values (0..1) when given."""
        reported = dict(reported or {})
        header = f"{'metric':<6}  {'posekit':>7}" + (f"  {'reported':>8}" if reported else "")
        rows = [header]
        for name in STAT_NAMES:
            row = f"{name:<6}  {100 * self.stats[name]:7.1f}"
            if reported:
                row += f"  {100 * reported[name]:8.1f}" if name in reported else f"  {'-':>8}"
            rows.append(row)
        return "\n".join(rows)

    def save_results(self, path: str | os.PathLike) -> Path:
        """Write :attr:`results` as a COCO results JSON, atomically (temp file then rename)."""
        return write_json(path, self.results)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock stage times are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model_device(model: Callable) -> torch.device:
    """The device of a module's first parameter; CPU for parameter-less callables."""
    if isinstance(model, torch.nn.Module):
        parameter = next(model.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")


def _per_image_oks_nms(
    keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, image_ids: np.ndarray
) -> np.ndarray:
    """Indices kept by :func:`oks_nms` run separately on each image's people.

    Shape: keypoints (N, K, 3), scores (N,), areas (N,), image_ids (N,). Returns: (M,) int64.
    """
    order = np.argsort(image_ids, kind="stable")
    boundaries = np.flatnonzero(np.diff(image_ids[order])) + 1
    kept = [group[oks_nms(keypoints[group], scores[group], areas[group])] for group in np.split(order, boundaries)]
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)


def _coco_keypoint_stats(ann_file: Path, results: list[dict], image_ids: np.ndarray) -> tuple[dict[str, float], str]:
    """Run pycocotools' keypoint COCOeval on ``image_ids``; returns (stats, printed summary)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    printed = io.StringIO()
    # pycocotools reports progress with print(); keep it out of the user's terminal.
    with contextlib.redirect_stdout(printed):
        ground_truth = COCO()
        ground_truth.dataset = load_keypoint_annotations(ann_file)
        ground_truth.createIndex()
        if not results:
            return dict.fromkeys(STAT_NAMES, 0.0), "no people were predicted"
        detections = ground_truth.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(ground_truth, detections, "keypoints")
        evaluator.params.useSegm = None
        evaluator.params.imgIds = image_ids.tolist()
        evaluator.evaluate()
        evaluator.accumulate()
        summary_start = printed.tell()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, map(float, evaluator.stats))), printed.getvalue()[summary_start:]


def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor],
    dataset: CocoPersonDataset,
    flip_test: bool = True,
    decode: str = "quarter",
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> EvalResult:
    """COCO keypoint AP of ``model`` on ``dataset`` with the paper's test protocol.

    Args:
        model: any callable mapping crops (N, 3, H, W) to heatmaps (N, 17, H/4, W/4); an
            ``nn.Module`` is put in eval mode for the run (and moved to ``device`` if given).
        dataset: the people to evaluate; its annotation file is the ground truth.
        flip_test: also run the mirrored crops, flip the heatmaps back (with the official
            one-pixel shift) and average.
        decode: ``"quarter"`` (official), ``"dark"`` or ``"argmax"``; see
            :func:`posekit.heatmaps.decode`.
        batch_size, num_workers: of the DataLoader (crops are made in the workers).
        device: where the crops go; default: the model's device (CPU for plain callables).
        progress: show a tqdm progress bar.

    Returns:
        :class:`EvalResult` with COCOeval stats, the COCO-format results and stage timings.
    """
    from tqdm.auto import tqdm

    batch_size = validate.whole_number(batch_size, "batch_size", "crops per network call")
    num_workers = validate.whole_number(num_workers, "num_workers", "DataLoader worker processes", minimum=0)
    if len(dataset) == 0:
        raise PosekitError(f"{dataset.ann_file}: no person to evaluate with these boxes; expected at least one")
    if device is not None and isinstance(model, torch.nn.Module):
        model.to(device)
    device = torch.device(device) if device is not None else _model_device(model)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    timing = dict.fromkeys(("data", "model", "decode", "nms", "cocoeval"), 0.0)
    coordinates, keypoint_scores, metas = [], [], []
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    start = tick = time.perf_counter()
    try:
        with torch.inference_mode():
            for crops, meta in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
                crops = crops.to(device, non_blocking=True)
                now = time.perf_counter()
                timing["data"], tick = timing["data"] + now - tick, now
                batch = len(crops)
                # One forward pass for both views keeps the GPU busy with a single larger batch.
                inputs = torch.cat([crops, crops.flip(3)]) if flip_test else crops
                heatmaps = model(inputs)
                expected = (len(inputs), NUM_KEYPOINTS)
                if not isinstance(heatmaps, torch.Tensor) or heatmaps.ndim != 4 or heatmaps.shape[:2] != expected:
                    found = tuple(heatmaps.shape) if isinstance(heatmaps, torch.Tensor) else type(heatmaps).__name__
                    raise PosekitError(
                        f"the model returned {found} for crops {tuple(inputs.shape)}; expected heatmaps "
                        f"({len(inputs)}, {NUM_KEYPOINTS}, h, w)"
                    )
                if flip_test:
                    heatmaps = (heatmaps[:batch] + flip_back(heatmaps[batch:], FLIP_PAIRS, shift=True)) * 0.5
                _synchronize(device)
                now = time.perf_counter()
                timing["model"], tick = timing["model"] + now - tick, now
                coords, scores = decode_heatmaps(heatmaps, meta["center"].numpy(), meta["scale"].numpy(), method=decode)
                coordinates.append(coords.cpu().numpy())
                keypoint_scores.append(scores.cpu().numpy())
                metas.append({name: values.numpy() for name, values in meta.items()})
                now = time.perf_counter()
                timing["decode"], tick = timing["decode"] + now - tick, now
    finally:
        if was_training:
            model.train()

    joined = {name: np.concatenate([m[name] for m in metas]) for name in metas[0]}
    keypoints = np.concatenate(
        [np.concatenate(coordinates), np.concatenate(keypoint_scores)[..., None]], axis=-1
    ).astype(np.float64)
    person_scores = rescore(keypoints, joined["score"])
    kept = _per_image_oks_nms(keypoints, person_scores, joined["area"], joined["image_id"])
    results = [
        {
            "image_id": int(joined["image_id"][i]),
            "category_id": PERSON_CATEGORY_ID,
            "keypoints": keypoints[i].reshape(-1).tolist(),
            "score": float(person_scores[i]),
        }
        for i in kept
    ]
    now = time.perf_counter()
    timing["nms"], tick = now - tick, now
    stats, summary = _coco_keypoint_stats(dataset.ann_file, results, dataset.image_ids)
    now = time.perf_counter()
    timing["cocoeval"] = now - tick
    timing["total"] = now - start
    return EvalResult(stats, results, timing, len(dataset), len(dataset.image_ids), summary)


# --------------------------------------------------------------------------------------------
# Data on disk: layout, download, synthetic data
# --------------------------------------------------------------------------------------------

_ZIP_URLS = {
    "val2017": "http://images.cocodataset.org/zips/val2017.zip",
    "annotations": "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
}
# The authors' person detections (detector AP 56.4 on val2017), a file in their Google Drive
# folder 1fRUDNUDxe9fjqcRZ2bnF_TKMlO0nB_dk. The authors publish no checksum; this sha256 is the
# one other projects pin for it.
DETECTIONS_GDRIVE_ID = "1ygw57X-mh0QBfENB-U5DsuSauGIu-8RB"
DETECTIONS_SHA256 = "53ba0ad8d0fd461c5a000cd90797fa8c39cd8c38cd125125c0412626ff592d59"
COCO_PARTS: tuple[str, ...] = ("val2017", "annotations", "detections")


@dataclass(frozen=True)
class CocoPaths:
    """Where :func:`download_coco` puts COCO val2017 under ``root`` (mmpose's layout)."""

    root: Path

    @property
    def image_dir(self) -> Path:
        return self.root / "val2017"

    @property
    def ann_file(self) -> Path:
        return self.root / "annotations" / "person_keypoints_val2017.json"

    @property
    def detections_file(self) -> Path:
        return self.root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json"

    def path(self, part: str) -> Path:
        """The file or folder that holds ``part`` (one of :data:`COCO_PARTS`)."""
        return {"val2017": self.image_dir, "annotations": self.ann_file, "detections": self.detections_file}[part]

    def missing(self, parts: Sequence[str] = COCO_PARTS) -> list[str]:
        """The parts not yet on disk."""
        return [part for part in parts if not self.path(part).exists()]


def _extract(archive: Path, member_prefix: str, destination: Path) -> None:
    """Extract the members of ``archive`` under ``member_prefix`` to ``destination`` atomically.

    Everything lands in a temporary folder next to ``destination`` first and is renamed into
    place, so an interrupted extraction never looks like a finished one.
    """
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=destination.parent))
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [name for name in bundle.namelist() if name.startswith(member_prefix)]
            if not members:
                raise DownloadError(f"{archive}: has no {member_prefix}; delete it and run download_coco again")
            bundle.extractall(staging, members)
        os.replace(staging / member_prefix.rstrip("/"), destination)
    except zipfile.BadZipFile as error:
        archive.unlink()
        raise DownloadError(f"{archive}: corrupt download ({error}), now deleted; run download_coco again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_coco(
    root: str | os.PathLike, parts: Sequence[str] = COCO_PARTS, progress: bool = True
) -> CocoPaths:
    """Download and unpack COCO val2017 for keypoint evaluation; parts already there are skipped.

    ``"val2017"``: the 5000 images (~780 MB) -> ``root/val2017/``; ``"annotations"``: only
    ``person_keypoints_val2017.json`` out of annotations_trainval2017.zip (~240 MB) ->
    ``root/annotations/``; ``"detections"``: the authors' person detections ->
    ``root/person_detection_results/``. Downloads resume after an interruption; archives are
    kept in ``root/.downloads/`` until unpacked, then deleted.

    Raises:
        DownloadError: offline, HTTP error or corrupt archive, in one sentence saying what to do.
    """
    paths = CocoPaths(Path(root))
    unknown = [part for part in parts if part not in COCO_PARTS]
    if unknown:
        raise PosekitError(
            f"unknown COCO part(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(COCO_PARTS)}"
        )
    for part in paths.missing(parts):
        target = paths.path(part)
        target.parent.mkdir(parents=True, exist_ok=True)
        if part == "detections":
            hub.download_gdrive(DETECTIONS_GDRIVE_ID, target, sha256=DETECTIONS_SHA256, progress=progress)
            continue
        # Archives (and the download locks) stay out of sight until unpacked; an archive placed
        # there by hand, as the offline message suggests, is unpacked by the next call.
        archive = paths.root / ".downloads" / Path(_ZIP_URLS[part]).name
        hub.download_url(_ZIP_URLS[part], archive, progress=progress)
        member = "val2017/" if part == "val2017" else f"annotations/{target.name}"
        _extract(archive, member, target)
        archive.unlink()
    return paths


# A standing person seen from the front, (x, y) in units of body height from the top centre.
_TEMPLATE_POSE = np.array(
    [
        [0.00, 0.08], [0.03, 0.06], [-0.03, 0.06], [0.06, 0.07], [-0.06, 0.07],
        [0.13, 0.20], [-0.13, 0.20], [0.17, 0.36], [-0.17, 0.36], [0.19, 0.50], [-0.19, 0.50],
        [0.08, 0.53], [-0.08, 0.53], [0.09, 0.74], [-0.09, 0.74], [0.10, 0.95], [-0.10, 0.95],
    ]
)


def make_synthetic_coco(
    out_dir: str | os.PathLike,
    num_images: int = 8,
    people_per_image: int = 3,
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write a small COCO person-keypoints dataset of stick figures, for tests and demos.

    Each image (PNG, random background) holds ``people_per_image`` stick figures of random size
    and place, facing the camera or away (left/right joints swap sides). About 10% of joints are
    unlabelled (v=0) and 10% labelled-but-occluded (v=1); boxes enclose all joints plus a margin
    and ``area`` is the box area.

    Returns:
        (annotation file ``out_dir/annotations.json``, image folder ``out_dir/images``).
    """
    rng = np.random.default_rng(seed)
    width, height = image_size
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        heights = rng.uniform(0.35, 0.8, people_per_image) * height
        facing = np.where(rng.random(people_per_image) < 0.5, 1.0, -1.0)
        centres_x = rng.uniform(0.25 * heights, width - 0.25 * heights)
        tops = rng.uniform(0, height - heights)
        poses = _TEMPLATE_POSE * np.stack([facing, np.ones(people_per_image)], 1)[:, None] * heights[:, None, None]
        poses += np.stack([centres_x, tops], 1)[:, None] + rng.normal(0, 0.015, poses.shape) * heights[:, None, None]
        poses = np.clip(poses, 0, [width - 1, height - 1])
        visibility = rng.choice([0, 1, 2], size=poses.shape[:2], p=[0.1, 0.1, 0.8])
        margins = 0.08 * heights[:, None]
        top_left = np.maximum(poses.min(1) - margins, 0)
        bottom_right = np.minimum(poses.max(1) + margins, [width - 1, height - 1])
        boxes = np.concatenate([top_left, bottom_right - top_left], 1)
        labelled = np.concatenate([poses * (visibility[..., None] > 0), visibility[..., None]], -1)

        canvas = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(40, 200, 3)))
        draw = ImageDraw.Draw(canvas)
        for pose, size in zip(poses, heights):
            line_width = max(2, int(size / 40))
            for limb, (a, b) in enumerate(SKELETON):
                colour = (255, 60 + 10 * limb, 40) if limb % 2 else (40, 60 + 10 * limb, 255)
                draw.line([tuple(pose[a]), tuple(pose[b])], fill=colour, width=line_width)
            for x, y in pose:
                draw.ellipse([x - line_width, y - line_width, x + line_width, y + line_width], fill=(250, 250, 250))
        file_name = f"{image_id:012d}.png"
        with atomic_write(image_dir / file_name) as file:
            canvas.save(file, format="PNG")
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        annotations += [
            {
                "id": len(annotations) + person + 1,
                "image_id": image_id,
                "category_id": PERSON_CATEGORY_ID,
                "iscrowd": 0,
                "bbox": [round(float(v), 2) for v in box],
                "area": float(box[2] * box[3]),
                "keypoints": [round(float(v), 2) for v in keypoints.reshape(-1)],
                "num_keypoints": int((keypoints[:, 2] > 0).sum()),
            }
            for person, (box, keypoints) in enumerate(zip(boxes, labelled))
        ]
    categories = [
        {
            "id": PERSON_CATEGORY_ID,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(KEYPOINT_NAMES),
            "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
        }
    ]
    ann_file = out_dir / "annotations.json"
    with atomic_write(ann_file, "w") as file:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, file)
    return ann_file, image_dir
