"""COCO keypoint evaluation with the paper's protocol: person boxes, top-down core, OKS-NMS, COCOeval.

The numbers SimpleBaseline reports on COCO val2017 come from one fixed recipe, which this module
reproduces step for step:

1. People: ground-truth boxes (``iscrowd`` 0, category person, at least one labelled keypoint,
   box clipped to the image) or a person-detections file (category 1, score >= 0.0).
2. Each image's people go through the top-down core (:func:`posekit.core.topdown.keypoints`, the code
   :class:`~posekit.estimator.PoseEstimator` runs): center/scale crops (aspect of the network
   input, 1.25 padding), the model on the crops and, with flip test, their mirror images,
   mirrored heatmaps flipped back, shifted one pixel and averaged in, decoding to image pixels.
3. Each person is rescored: box score x mean of its keypoint scores above 0.2.
4. Per image, OKS-based non-maximum suppression at 0.9 drops duplicates.
5. pycocotools' ``COCOeval`` in ``"keypoints"`` mode gives AP / AR.

OKS, NMS and rescoring live in :mod:`posekit.core.oks`; the val2017 download in :mod:`posekit.io.cocodata`.

Kept as one module (about 460 lines): the annotation reader and its checks serve both evaluation and
training (:mod:`posekit.train.data`), and the recipe above is easiest to audit in one file.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, runtime_checkable

import numpy as np
import torch

from posekit.core import topdown, validate
from posekit.core.boxes import clean_boxes
from posekit.core.coco17 import NUM_KEYPOINTS, PERSON_CATEGORY_ID
from posekit.core.crop import PIXEL_STD
from posekit.core.keypoints import COCO17, KeypointSet
from posekit.core.oks import per_image_oks_nms, rescore
from posekit.core.spec import InputSpec
from posekit.errors import AnnotationError, DetectionsFormatError, ImageReadError, PosekitError
from posekit.io.files import read_json, write_json
from posekit.io.images import load_image
from posekit.models.detect import load_detections

DETECTION_SCORE_THRESHOLD = 0.0

# COCOeval.stats in its own order.
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


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
# What training reads of each record; the other fields above are checked when present.
_TRAINING_IMAGE_FIELDS = ("id", "file_name")
_TRAINING_ANNOTATION_FIELDS = ("image_id", "bbox", "keypoints")


def load_keypoint_annotations(ann_file: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> dict:
    """Read a COCO keypoint annotation file and check the fields its reader relies on.

    Without ``image_dir`` (evaluation): COCO-17 person keypoints with every field COCOeval
    reads. With ``image_dir`` (training): the keypoint set of the first category that lists
    ``keypoints`` (:func:`keypoint_set_of`), annotations need only ``image_id``, ``bbox`` and
    ``keypoints`` and images ``id`` and ``file_name`` (the other fields are checked when
    present), and an image without ``width``/``height`` (many converters leave them out) gets
    them from its file in ``image_dir``, read as stored (no EXIF rotation, as the annotations are).

    Returns the parsed JSON (``images``, ``annotations``, ``categories``).

    Raises:
        AnnotationError: missing file, bad JSON, or a missing or wrongly typed field, naming it;
            a keypoint category whose names or skeleton do not fit (training).
        ImageReadError: an image without a size whose file is missing or unreadable.
    """
    path = Path(ann_file)
    dataset = read_json(path, AnnotationError, "a COCO person_keypoints_*.json annotation file")
    if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), list) for k in ("images", "annotations")):
        raise AnnotationError(f"{path}: expected a COCO annotation object with 'images' and 'annotations' lists")
    if image_dir is None:
        validate.check_records(dataset["images"], _IMAGE_FIELDS, f"{path}: images", AnnotationError)
        validate.check_records(dataset["annotations"], _ANNOTATION_FIELDS, f"{path}: annotations", AnnotationError)
        dataset.setdefault("categories", [{"id": PERSON_CATEGORY_ID, "name": "person"}])
        validate.check_records(dataset["categories"], {"id": validate.INTEGER}, f"{path}: categories", AnnotationError)
        return dataset
    validate.check_records(dataset.get("categories"), {}, f"{path}: categories", AnnotationError)
    width = 3 * keypoint_set_of(dataset, path).num_keypoints
    fields = {**_ANNOTATION_FIELDS, "keypoints": validate.numbers(width, " (x, y, v per joint)")}
    _check_present(dataset["images"], _IMAGE_FIELDS, _TRAINING_IMAGE_FIELDS, f"{path}: images")
    _check_present(dataset["annotations"], fields, _TRAINING_ANNOTATION_FIELDS, f"{path}: annotations")
    for image in dataset["images"]:
        if "width" not in image or "height" not in image:
            height, width, _ = load_image(Path(image_dir) / image["file_name"], upright=False).shape
            image.update(width=width, height=height)
    return dataset


def _check_present(records: list, fields: dict, required: tuple[str, ...], where: str) -> None:
    """check_records with ``required`` fields, and the others of ``fields`` where a record has them."""
    validate.check_records(records, {name: fields[name] for name in required}, where, AnnotationError)
    optional = {name: (lambda value, accepts=accepts: value is _ABSENT or accepts(value), expected)
                for name, (accepts, expected) in fields.items() if name not in required}
    # One projected record per record keeps check_records' indices and wording.
    projected = [{name: record.get(name, _ABSENT) for name in optional} for record in records]
    validate.check_records(projected, optional, where, AnnotationError)


_ABSENT = object()


def keypoint_set_of(dataset: dict, path: str | os.PathLike) -> KeypointSet:
    """The :class:`~posekit.core.keypoints.KeypointSet` of the first category of ``dataset`` (read
    from ``path``) that lists ``keypoints``: :data:`~posekit.core.keypoints.COCO17` when it lists
    COCO's 17 names in order.

    Raises:
        AnnotationError: no such category, or names (none, repeated) or a skeleton that do not fit,
            naming ``path``.
    """
    categories = [c for c in dataset.get("categories") or () if isinstance(c, dict) and "keypoints" in c]
    if not categories:
        raise AnnotationError(f"{path}: no category lists 'keypoints'; expected a COCO keypoint category")
    if categories[0]["keypoints"] == list(COCO17.names):
        return COCO17
    try:
        return KeypointSet.from_coco(categories[0])
    except AnnotationError as error:
        raise AnnotationError(f"{path}: categories[{dataset['categories'].index(categories[0])}]: {error}") from None


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
    """One item per image of a COCO keypoint split: the decoded image and its people's boxes.

    Args:
        ann_file: COCO ``person_keypoints_*.json``; it names the images and is the ground truth.
        image_dir: folder holding the images' ``file_name``s.
        boxes: ``"gt"`` for the annotated boxes (official GT rules), or the path of a COCO
            detection-results JSON (``[{image_id, category_id, bbox, score}, ...]``).
        score_threshold: detections with a lower score are dropped (the paper: 0.0).
        max_images: evaluate only the first ``max_images`` images by id (quick runs).

    The people, sorted by image (stable): ``person_image_ids`` (N,), ``boxes`` (N, 4) xywh,
    ``box_scores`` (N,) (1 for GT), ``annotation_ids`` (N,) (-1 for detections). Items are dicts
    with ``image_id``, ``image`` (H, W, 3) uint8 RGB, and that image's slice of ``boxes``,
    ``box_scores`` and ``annotation_ids``; only images with people are items. Images are decoded
    with PIL, ignoring EXIF orientation as the official OpenCV loader does. How crops are cut and
    normalised is the model's business (its ``input_spec``), not the dataset's.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        boxes: str | os.PathLike = "gt",
        score_threshold: float = DETECTION_SCORE_THRESHOLD,
        max_images: int | None = None,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        annotations = load_keypoint_annotations(self.ann_file)
        all_image_ids = np.unique(np.asarray([image["id"] for image in annotations["images"]], dtype=np.int64))
        self.image_ids = all_image_ids[:max_images]
        if str(boxes) == "gt":
            people = _ground_truth_people(annotations, self.image_ids)
        else:
            people = _detected_people(Path(boxes), self.image_ids, set(all_image_ids.tolist()), score_threshold)
        order = np.argsort(people.image_ids, kind="stable")
        self.person_image_ids = people.image_ids[order]
        # A cleaned box may be 0 px wide or high; the official code then takes the size from the
        # other side. A tiny positive size gives the same float32 center and scale.
        self.boxes = np.concatenate([people.boxes[order, :2], np.maximum(people.boxes[order, 2:], 1e-6)], 1)
        self.box_scores = people.scores[order]
        self.annotation_ids = people.annotation_ids[order]
        self._item_image_ids, starts = np.unique(self.person_image_ids, return_index=True)
        self._slices = [slice(a, b) for a, b in zip(starts, [*starts[1:], len(self.person_image_ids)])]
        self._files = {image["id"]: self.image_dir / image["file_name"] for image in annotations["images"]}
        # Checked here, in one line, rather than by a DataLoader worker's traceback halfway through.
        missing = [self._files[i].name for i in self._item_image_ids.tolist() if not self._files[i].is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise ImageReadError(
                f"{self.image_dir}: {len(missing)} image(s) that {self.ann_file} lists are missing ({shown}); "
                "expected the images of that annotation file in that folder"
            )

    @property
    def num_people(self) -> int:
        return len(self.person_image_ids)

    def __len__(self) -> int:
        return len(self._slices)

    def __getitem__(self, index: int) -> dict:
        image_id, people = int(self._item_image_ids[index]), self._slices[index]
        return {
            "image_id": image_id,
            "image": load_image(self._files[image_id], upright=False),
            "boxes": self.boxes[people],
            "box_scores": self.box_scores[people],
            "annotation_ids": self.annotation_ids[people],
        }


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
        timing: seconds per stage: ``data`` (waiting for decoded images), the top-down stages
            (:data:`posekit.core.topdown.STAGES`: ``crop``, ``normalise``, ``forward``, ``flip_back``,
            ``decode``), ``nms`` (rescoring + OKS-NMS), ``cocoeval``, ``total``.
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


@runtime_checkable
class PoseEstimatorLike(Protocol):
    """What :func:`evaluate` uses of a :class:`~posekit.estimator.PoseEstimator` (an application,
    a layer above this one): its input spec, its cached forward, its device and its options."""

    spec: InputSpec
    device: torch.device
    flip_test: bool
    decode: str
    max_batch: int

    def forward(self, inputs: torch.Tensor) -> torch.Tensor: ...


def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor] | PoseEstimatorLike,
    dataset: CocoPersonDataset,
    flip_test: bool | None = None,
    decode: str | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    backend: str = "auto",
    precision: str = "auto",
) -> EvalResult:
    """COCO keypoint AP of ``model`` on ``dataset`` with the paper's test protocol.

    Every image's people go through :func:`posekit.core.topdown.keypoints`, fed as
    ``model.input_spec`` says (a plain callable without one gets the default
    :class:`~posekit.core.spec.InputSpec`: 192x256, BGR, COCO-17).

    Args:
        model: a :class:`~posekit.estimator.PoseEstimator` (its cached forward, backend,
            precision, device and input spec run as built; ``device``, ``backend`` and
            ``precision`` must then be left out), a pose network (``nn.Module``, run through
            :func:`~posekit.models.runtime.inference_forward` with ``backend`` and ``precision``; moved to
            ``device`` if given), or any callable mapping normalised crops (B, 3, H, W) to
            heatmaps (B, K, H/4, W/4), called as is.
        dataset: the people to evaluate; its annotation file is the ground truth.
        flip_test: also run the mirrored crops, flip the heatmaps back (with the official
            one-pixel shift) and average. Default: the estimator's ``flip_test``, else True.
        decode: ``"quarter"`` (official), ``"dark"`` or ``"argmax"``; see
            :func:`posekit.core.heatmaps.decode`. Default: the estimator's, else ``"quarter"``.
        batch_size: people per network call (``max_batch`` of the top-down core). Default:
            the estimator's ``max_batch``, else 32.
        num_workers: DataLoader processes that read and decode the images.
        device: where crops are made and the network runs; default: the model's device (CPU
            for plain callables).
        progress: show a tqdm progress bar.
        backend, precision: see :func:`posekit.models.runtime.inference_forward` (modules only).

    Returns:
        :class:`EvalResult` with COCOeval stats, the COCO-format results and stage timings.
    """
    from tqdm.auto import tqdm

    from posekit.models.runtime import inference_forward

    estimator = model if isinstance(model, PoseEstimatorLike) else None
    if estimator is not None:
        if (device, backend, precision) != (None, "auto", "auto"):
            raise PosekitError("evaluate(estimator, ...) runs the estimator's device, backend and precision; "
                               "pass them to PoseEstimator instead")
        flip_test = estimator.flip_test if flip_test is None else flip_test
        decode = estimator.decode if decode is None else decode
        batch_size = estimator.max_batch if batch_size is None else batch_size
    flip_test = True if flip_test is None else flip_test
    decode = "quarter" if decode is None else decode
    batch_size = validate.whole_number(32 if batch_size is None else batch_size, "batch_size", "people per network call")
    num_workers = validate.whole_number(num_workers, "num_workers", "DataLoader worker processes", minimum=0)
    if dataset.num_people == 0:
        raise PosekitError(f"{dataset.ann_file}: no person to evaluate with these boxes; expected at least one")
    spec = getattr(model, "input_spec", None) or InputSpec()
    if estimator is not None:
        spec, device, model = estimator.spec, estimator.device, estimator.forward
    elif isinstance(model, torch.nn.Module):
        if device is not None:
            model.to(device)
        device = next(model.parameters()).device
        model = inference_forward(model, backend, precision)
    device = torch.device(device or "cpu")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_unchanged
    )
    timer = topdown.StageTimer(device)
    found: list[tuple[dict, np.ndarray, np.ndarray]] = []
    start = tick = time.perf_counter()
    for item in tqdm(loader, desc="evaluate", unit="image", disable=not progress):
        timer.add("data", time.perf_counter() - tick)
        keypoints, _, scales = topdown.keypoints(
            model, spec, item["image"], item["boxes"], flip_test, decode, batch_size, device, timer
        )
        found.append((item, keypoints, scales))
        tick = time.perf_counter()

    keypoints = np.concatenate([points for _, points, _ in found]).astype(np.float64)
    image_ids = np.concatenate([np.full(len(points), item["image_id"]) for item, points, _ in found])
    areas = np.concatenate([np.prod(scales * PIXEL_STD, axis=1) for _, _, scales in found])
    person_scores = rescore(keypoints, np.concatenate([item["box_scores"] for item, _, _ in found]))
    kept = per_image_oks_nms(keypoints, person_scores, areas, image_ids)
    results = [
        {
            "image_id": int(image_ids[i]),
            "category_id": PERSON_CATEGORY_ID,
            "keypoints": keypoints[i].reshape(-1).tolist(),
            "score": float(person_scores[i]),
        }
        for i in kept
    ]
    timing = dict(timer.seconds)
    now = time.perf_counter()
    timing["nms"], tick = now - tick, now
    stats, summary = _coco_keypoint_stats(dataset.ann_file, results, dataset.image_ids)
    now = time.perf_counter()
    timing["cocoeval"] = now - tick
    timing["total"] = now - start
    return EvalResult(stats, results, timing, dataset.num_people, len(dataset.image_ids), summary)


def _unchanged(item: dict) -> dict:
    """The DataLoader's collate step for one image: keep the numpy arrays as they are."""
    return item
