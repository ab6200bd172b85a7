"""COCO evaluation end to end: person selection, crops, flip test, OKS-NMS wiring and COCOeval.

The central check is an oracle: a stand-in network that recognises which person a crop shows
and answers with that person's ground-truth keypoints rendered as heatmaps. Run through
crop -> model -> flip -> decode -> back-transform -> rescoring -> OKS-NMS -> COCOeval it must
score AP ~1; with keypoints moved by a known distance, AP must fall to what OKS predicts.
Geometry references here are OpenCV and formulas written out in this file.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from spy_network import SpyNetwork

from posekit.core.coco17 import FLIP_INDEX
from posekit.core.crop import box_to_center_scale, crop_batch
from posekit.core.heatmaps import encode
from posekit.core.spec import InputSpec
from posekit.errors import AnnotationError, DetectionsFormatError, ImageReadError
from posekit.eval.coco import CocoPersonDataset, evaluate
from posekit.models.weights import get_weights
from posekit.train.synthetic import make_synthetic_coco

SAMPLE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample"
ANN_FILE = SAMPLE / "test_coco.json"
DET_FILE = SAMPLE / "test_coco_det_AP_H_56.json"
# COCOeval's per-joint sigmas, written out here rather than imported.
SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
) / 10
LEFT_RIGHT = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
BGR_MEAN_STD = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))


# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------


def official_center_scale(box, aspect_ratio=192 / 256):
    """The official _xywh2cs, one box at a time."""
    x, y, w, h = box
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center, np.array([w / 200, h / 200], dtype=np.float32) * 1.25


def official_affine(center, scale, size):
    """get_affine_transform (no rotation) via three point pairs and OpenCV."""
    src_w, (dst_w, dst_h) = scale[0] * 200, size
    src = np.array([center, center + [0, -src_w * 0.5]], dtype=np.float64)
    dst = np.array([[dst_w * 0.5, dst_h * 0.5], [dst_w * 0.5, dst_h * 0.5 - dst_w * 0.5]])

    def third(a, b):
        return b + [-(a - b)[1], (a - b)[0]]

    src = np.vstack([src, third(src[0], src[1])]).astype(np.float32)
    dst = np.vstack([dst, third(dst[0], dst[1])]).astype(np.float32)
    return cv2.getAffineTransform(src, dst)


def selected_ground_truth(ann_file):
    """The official GT rules, one annotation at a time: [(annotation, clean box)]."""
    data = json.loads(Path(ann_file).read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    chosen = []
    for ann in sorted(data["annotations"], key=lambda a: a["image_id"]):
        width, height = sizes[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        x1, y1 = max(0, x), max(0, y)
        x2, y2 = min(width - 1, x1 + max(0, w - 1)), min(height - 1, y1 + max(0, h - 1))
        if ann["iscrowd"] or ann["category_id"] != 1 or ann["area"] <= 0 or x2 < x1 or y2 < y1:
            continue
        if max(ann["keypoints"]) == 0:
            continue
        chosen.append((ann, [x1, y1, x2 - x1, y2 - y1]))
    return chosen


def coco_oks(prediction, truth, area):
    """COCOeval's OKS of one prediction (17, 2+) against one ground truth (17, 3)."""
    labelled = truth[:, 2] > 0
    d2 = ((prediction[:, :2] - truth[:, :2]) ** 2).sum(1)
    e = d2 / (2 * SIGMAS) ** 2 / (area + np.spacing(1)) / 2
    return float(np.exp(-e[labelled]).mean())


def ground_truth_of(dataset):
    """(N, 17, 3) keypoints of each GT person, looked up by its annotation id."""
    anns = {a["id"]: a for a in json.loads(Path(dataset.ann_file).read_text())["annotations"]}
    ids = dataset.annotation_ids.tolist()
    return np.array([anns[i]["keypoints"] for i in ids], dtype=np.float64).reshape(-1, 17, 3), anns, ids


def person_crops(dataset, spec):
    """Per person, in the dataset's order: center (N, 2), scale (N, 2) and the normalised crop
    (N, 3, H, W), cut one person at a time here."""
    centers, scales = box_to_center_scale(dataset.boxes, spec.aspect_ratio)
    images = {item["image_id"]: item["image"] for item in dataset}
    crops = torch.cat([
        spec.preprocess(crop_batch(images[int(i)], c[None], s[None], spec.input_size))
        for i, c, s in zip(dataset.person_image_ids, centers, scales)
    ])
    return centers, scales, crops


class OracleModel:
    """Recognises which person (and whether mirrored) each crop is and returns that person's
    keypoints rendered as training targets by posekit.core.heatmaps.encode, joint k's map scaled
    by ``confidence[k]`` (its peak, so the keypoint score)."""

    def __init__(self, dataset, keypoints, confidence=np.ones(17), spec=InputSpec()):
        self.input_spec = spec
        centers, scales, crops = person_crops(dataset, spec)
        self.known = self._grey_levels(torch.cat([crops, crops.flip(3)]))
        width, height = spec.input_size
        affines = [official_affine(center, scale, (width, height)) for center, scale in zip(centers, scales)]
        in_crop = np.stack([cv2.transform(kp[None, :, :2], affine)[0] for kp, affine in zip(keypoints, affines)])
        visible = (keypoints[..., 2] > 0).astype(np.float32)
        mirrored = in_crop[:, FLIP_INDEX] * [-1, 1] + [width - 1, 0]
        targets, _ = encode(
            np.concatenate([in_crop, mirrored]).astype(np.float32),
            np.concatenate([visible, visible[:, FLIP_INDEX]]),
            image_size=(width, height),
            heatmap_size=(width // 4, height // 4),
            sigma=2,
        )
        peaks = np.concatenate([confidence, np.asarray(confidence)[FLIP_INDEX]]).reshape(2, 1, 17, 1, 1)
        targets = np.asarray(targets).reshape(2, len(crops), 17, *targets.shape[2:]) * peaks
        self.heatmaps = torch.as_tensor(targets.reshape(2 * len(crops), 17, *targets.shape[3:]), dtype=torch.float32)

    def _grey_levels(self, crops):
        """Normalised crops (N, 3, H, W) back in grey levels, flattened: (N, 3 * H * W)."""
        mean, std = (torch.tensor(v, dtype=crops.dtype)[:, None, None] for v in (self.input_spec.mean, self.input_spec.std))
        return ((crops * std + mean) * 255).flatten(1)

    def __call__(self, crops):
        # The largest difference of one pixel value, in grey levels: a crop cut in a batch and the same
        # crop cut alone differ by at most 1 per pixel (crop_batch's documented bound), however many
        # pixels near .5 a torch or numpy version happens to round the other way, while the nearest
        # other person's (or mirrored) crop differs by tens of grey levels somewhere.
        distances = torch.cdist(self._grey_levels(crops), self.known, p=float("inf"))
        nearest, runner_up = distances.topk(2, dim=1, largest=False).values.T
        assert nearest.max() <= 1 + 1e-3 and runner_up.min() > 10, "the oracle was shown a crop it does not know"
        return self.heatmaps[distances.argmin(1)]


SMALL = InputSpec(input_size=(48, 64))


def pooled_model(crops):
    """A flip-equivariant stand-in: joint k is a 4x4 average of colour channel k % 3, scaled."""
    pooled = torch.nn.functional.avg_pool2d(crops, 4)
    weights = torch.arange(1, 18, dtype=crops.dtype) / 17
    return pooled[:, [k % 3 for k in range(17)]] * weights[:, None, None] + 3


def pooled_model_flip_averaged(crops):
    """pooled_model with the paper's flip test worked out by hand: the mirrored run equals the
    un-mirrored maps of the partner joint, shifted right by one column (column 0 kept)."""
    own = pooled_model(crops)
    partner = list(range(17))
    for left, right in LEFT_RIGHT:
        partner[left], partner[right] = right, left
    mirrored = own[:, partner]
    shifted = mirrored.clone()
    shifted[..., 1:] = mirrored[..., :-1]
    return (own + shifted) / 2


pooled_model.input_spec = pooled_model_flip_averaged.input_spec = SMALL  # how evaluate feeds a callable


def shift_for_oks(truth, area, target):
    """Distance (px) every joint must move for the COCO OKS against ``truth`` to equal ``target``."""
    low, high = 0.0, 10 * math.sqrt(area)
    for _ in range(100):
        middle = (low + high) / 2
        moved = truth.copy()
        moved[:, 0] += middle
        low, high = (middle, high) if coco_oks(moved, truth, area) > target else (low, middle)
    return low


def as_array(result):
    return np.array([r["keypoints"] for r in result.results])


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------
# People: which ones, and their crops
# ---------------------------------------------------------------------------------------------


def test_ground_truth_selection_and_boxes_follow_the_official_rules():
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE)
    chosen = selected_ground_truth(ANN_FILE)
    assert dataset.num_people == len(chosen) == 12  # 14 people, two without any labelled keypoint
    assert len(dataset) == 4  # one item per image
    assert dataset.annotation_ids.tolist() == [ann["id"] for ann, _ in chosen]
    centers, scales = box_to_center_scale(dataset.boxes, 192 / 256)
    for index, (ann, box) in enumerate(chosen):
        center, scale = official_center_scale(box)
        assert dataset.person_image_ids[index] == ann["image_id"]
        np.testing.assert_allclose(centers[index], center, rtol=1e-6)
        np.testing.assert_allclose(scales[index], scale, rtol=1e-6)
        assert dataset.box_scores[index] == 1.0
    items = list(dataset)
    assert [item["image_id"] for item in items] == [785, 40083, 196141, 197388]
    np.testing.assert_array_equal(np.concatenate([item["boxes"] for item in items]), dataset.boxes)


def test_ground_truth_edge_cases(tmp_path):
    data = json.loads(ANN_FILE.read_text())
    image = next(im for im in data["images"] if im["id"] == 785)  # 640 x 425
    template = next(a for a in data["annotations"] if a["image_id"] == 785)

    def person(ann_id, **changes):
        return {**template, "id": ann_id, **changes}

    annotations = [
        person(1),
        person(2, iscrowd=1),
        person(3, keypoints=[0] * 51, num_keypoints=0),
        person(4, bbox=[700, 10, 50, 50]),  # starts right of the image: x2 < x1
        person(5, area=0),
        person(6, category_id=2),
        person(7, bbox=[-10, -5, 100, 100]),  # clipped to [0, 0, 99, 99]
    ]
    ann_file = write_json(tmp_path / "a.json", {**data, "images": [image], "annotations": annotations})
    dataset = CocoPersonDataset(ann_file, SAMPLE)
    assert dataset.annotation_ids.tolist() == [1, 7]
    np.testing.assert_allclose(dataset.boxes[1], [0, 0, 99, 99])


def test_detections_follow_category_and_score_threshold(tmp_path):
    detections = json.loads(DET_FILE.read_text())
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE, boxes=DET_FILE)
    assert dataset.num_people == sum(d["category_id"] == 1 for d in detections)
    assert (dataset.annotation_ids == -1).all()
    confident = CocoPersonDataset(ANN_FILE, SAMPLE, boxes=DET_FILE, score_threshold=0.5)
    assert confident.num_people == sum(d["category_id"] == 1 and d["score"] >= 0.5 for d in detections)
    # Other categories are not people; items keep the file's order within an image.
    mixed = [{**detections[0], "category_id": 3}] + detections[1:3]
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE, boxes=write_json(tmp_path / "d.json", mixed))
    assert dataset.box_scores.tolist() == pytest.approx([d["score"] for d in detections[1:3]])
    np.testing.assert_allclose(dataset.boxes[0], detections[1]["bbox"])


@pytest.mark.parametrize(
    "weights, channels", [("pose_resnet_50_256x192", [2, 1, 0]), ("pose_resnet_50_256x192_mmpose", [0, 1, 2])]
)
def test_evaluate_feeds_opencv_crops_in_the_channel_order_of_the_weights(weights, channels):
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE)
    spy = SpyNetwork(get_weights(weights).spec)
    evaluate(spy, dataset, flip_test=False, progress=False)
    fed = torch.cat(spy.inputs)
    centers, scales = box_to_center_scale(dataset.boxes, 192 / 256)
    mean, std = BGR_MEAN_STD
    for index in (0, 5):
        path = SAMPLE / f"{dataset.person_image_ids[index]:012d}.jpg"
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        affine = official_affine(centers[index], scales[index], (192, 256))
        warped = cv2.warpAffine(bgr, affine, (192, 256), flags=cv2.INTER_LINEAR)
        rgb = warped[..., ::-1].astype(np.float64) / 255
        expected = (rgb[..., channels] - mean) / std
        crop = fed[index]
        assert crop.shape == (3, 256, 192) and crop.dtype == torch.float32
        difference = np.abs(crop.permute(1, 2, 0).numpy() - expected)
        assert difference.max() <= 1.01 / 255 / 0.224  # at most one grey level apart
        assert difference.mean() < 1e-3


def test_exif_orientation_is_ignored_like_opencv(tmp_path):
    from PIL import Image

    data = json.loads(ANN_FILE.read_text())
    original = Image.open(SAMPLE / "000000000785.jpg")
    plain, rotated = tmp_path / "plain", tmp_path / "rotated"
    plain.mkdir(), rotated.mkdir()
    original.save(plain / "000000000785.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    original.save(rotated / "000000000785.jpg", quality=95, exif=exif)
    ann_file = write_json(tmp_path / "a.json", {**data, "images": [im for im in data["images"] if im["id"] == 785]})
    image_plain = CocoPersonDataset(ann_file, plain)[0]["image"]
    image_rotated = CocoPersonDataset(ann_file, rotated)[0]["image"]
    np.testing.assert_array_equal(image_rotated, image_plain)
    read_by_opencv = cv2.imread(str(rotated / "000000000785.jpg"), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert read_by_opencv.shape[:2] == (425, 640)


def test_bad_inputs_get_clear_errors(tmp_path):
    data = json.loads(ANN_FILE.read_text())
    with pytest.raises(AnnotationError, match="no such file"):
        CocoPersonDataset(tmp_path / "missing.json", SAMPLE)
    (tmp_path / "broken.json").write_text("{\"images\": [")
    with pytest.raises(AnnotationError, match="broken.json: not readable JSON"):
        CocoPersonDataset(tmp_path / "broken.json", SAMPLE)
    no_keypoints = [{k: v for k, v in a.items() if k != "keypoints"} for a in data["annotations"]]
    with pytest.raises(AnnotationError, match=r"annotations\[0\]: missing field\(s\) keypoints"):
        CocoPersonDataset(write_json(tmp_path / "k.json", {**data, "annotations": no_keypoints}), SAMPLE)
    short = [{**a, "keypoints": a["keypoints"][:50]} for a in data["annotations"]]
    with pytest.raises(AnnotationError, match="expected 51 numbers"):
        CocoPersonDataset(write_json(tmp_path / "s.json", {**data, "annotations": short}), SAMPLE)
    with pytest.raises(AnnotationError, match="'images' and 'annotations'"):
        CocoPersonDataset(write_json(tmp_path / "l.json", [1, 2]), SAMPLE)

    with pytest.raises(DetectionsFormatError):
        CocoPersonDataset(ANN_FILE, SAMPLE, boxes=write_json(tmp_path / "d1.json", {"bbox": [1, 2, 3, 4]}))
    with pytest.raises(DetectionsFormatError, match="bbox"):
        CocoPersonDataset(ANN_FILE, SAMPLE, boxes=write_json(tmp_path / "d2.json", [{"image_id": 785, "score": 1}]))
    foreign = [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9}]
    with pytest.raises(DetectionsFormatError, match="none of its image ids"):
        CocoPersonDataset(ANN_FILE, SAMPLE, boxes=write_json(tmp_path / "d3.json", foreign))

    with pytest.raises(ImageReadError, match="000000000785.jpg"):
        CocoPersonDataset(ANN_FILE, tmp_path)[0]


def test_max_images_keeps_the_first_images_by_id():
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE, max_images=2)
    assert dataset.image_ids.tolist() == [785, 40083]
    assert set(dataset.person_image_ids.tolist()) == {785, 40083}


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flip_test", [False, True])
def test_oracle_scores_full_ap_with_ground_truth_boxes(flip_test):
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE)
    truth, _, _ = ground_truth_of(dataset)
    result = evaluate(OracleModel(dataset, truth), dataset, flip_test=flip_test, batch_size=5, progress=False)
    assert result.stats["AP"] >= 0.95
    assert result.stats["AR"] >= 0.95
    assert result.num_people == len(result.results) == 12
    stages = {"data", "crop", "normalise", "forward", "decode", "nms", "cocoeval", "total"}
    assert set(result.timing) == stages | ({"flip_back"} if flip_test else set())


@pytest.mark.parametrize("target_oks, expected_ap", [(0.775, 0.6), (0.625, 0.3)])
def test_shifted_oracle_loses_the_ap_that_oks_predicts(target_oks, expected_ap):
    # Each person's keypoints move right by the distance that makes its OKS exactly target_oks,
    # so it matches at the thresholds 0.50 .. target_oks and at none above: AP = their share.
    # encode() centres each Gaussian on a whole heatmap pixel; large crops (384 x 512) keep that
    # rounding's effect on OKS to about +-0.015, inside the 0.05 between two thresholds.
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE)
    truth, anns, ids = ground_truth_of(dataset)
    areas = [anns[i]["area"] for i in ids]
    moved = truth.copy()
    moved[..., 0] += np.array([shift_for_oks(t, a, target_oks) for t, a in zip(truth, areas)])[:, None]
    result = evaluate(OracleModel(dataset, moved, spec=InputSpec(input_size=(384, 512))), dataset, flip_test=True,
                      progress=False)
    assert expected_ap == pytest.approx(np.mean(np.linspace(0.5, 0.95, 10) <= target_oks))
    assert result.stats["AP"] == pytest.approx(expected_ap, abs=0.01)
    by_image = {}
    for person, t, a in zip(dataset.person_image_ids, truth, areas):
        by_image.setdefault(int(person), []).append((t, a))
    measured = [
        max(coco_oks(np.reshape(r["keypoints"], (17, 3)), t, a) for t, a in by_image[r["image_id"]])
        for r in result.results
    ]
    assert len(measured) == 12
    np.testing.assert_allclose(measured, target_oks, atol=0.024)


def test_flip_test_averages_the_mirrored_run_flipped_back_and_shifted():
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE)
    flipped = evaluate(pooled_model, dataset, flip_test=True, progress=False)
    by_hand = evaluate(pooled_model_flip_averaged, dataset, flip_test=False, progress=False)
    plain = evaluate(pooled_model, dataset, flip_test=False, progress=False)
    np.testing.assert_allclose(as_array(flipped), as_array(by_hand), rtol=1e-5, atol=1e-3)
    assert not np.allclose(as_array(flipped), as_array(plain), atol=1e-3)


def test_detection_boxes_duplicates_are_removed_by_oks_nms(tmp_path):
    ann_file, image_dir = make_synthetic_coco(tmp_path, num_images=4, people_per_image=3, image_size=(320, 240), seed=3)
    data = json.loads(ann_file.read_text())
    rng = np.random.default_rng(0)
    detections, sources = [], []
    # Person i gets a box scored 1 - 0.02 i and a near-copy scored just below: without NMS every
    # copy is a false positive that outranks the next person's true positive.
    for i, ann in enumerate(data["annotations"]):
        for rank in (0, 1):
            box = (np.asarray(ann["bbox"]) + rng.uniform(-0.5, 0.5, 4) * rank).tolist()
            score = 1 - 0.02 * i - 0.01 * rank
            detections.append({"image_id": ann["image_id"], "category_id": 1, "bbox": box, "score": score})
            sources.append(ann["keypoints"])
    det_file = write_json(tmp_path / "detections.json", detections)
    dataset = CocoPersonDataset(ann_file, image_dir, boxes=det_file)
    assert dataset.num_people == 2 * len(data["annotations"])
    # Items are sorted by image (stable), the detections were written image by image.
    truth = np.asarray(sources, dtype=np.float64).reshape(-1, 17, 3)
    confidence = np.linspace(0.05, 1, 17)  # some joints under the 0.2 that rescoring ignores
    oracle = OracleModel(dataset, truth, confidence, spec=InputSpec(input_size=(96, 128)))
    result = evaluate(oracle, dataset, flip_test=False, progress=False)
    assert len(result.results) == len(data["annotations"])
    assert result.stats["AP"] >= 0.9
    # The survivors are the higher-scored copies, rescored: box score x mean keypoint score > 0.2.
    for r in result.results:
        keypoints = np.reshape(r["keypoints"], (17, 3))
        person = max(
            (i for i, ann in enumerate(data["annotations"]) if ann["image_id"] == r["image_id"]),
            key=lambda i: coco_oks(keypoints, np.reshape(data["annotations"][i]["keypoints"], (17, 3)), 10000),
        )
        confident = keypoints[keypoints[:, 2] > 0.2, 2]
        assert r["score"] == pytest.approx((1 - 0.02 * person) * confident.mean(), rel=1e-6)


def test_bundled_detections_run_end_to_end_with_workers():
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE, boxes=DET_FILE)
    serial = evaluate(pooled_model, dataset, batch_size=16, progress=False)
    parallel = evaluate(pooled_model, dataset, batch_size=16, num_workers=2, progress=False)
    assert serial.results == parallel.results
    assert 0 < len(serial.results) <= dataset.num_people
    assert {r["image_id"] for r in serial.results} <= {785, 40083, 196141, 197388}
    assert all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in serial.results)
    assert all(-1 <= value <= 1 for value in serial.stats.values())


def test_results_file_is_written_whole(tmp_path):
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE, max_images=1)
    result = evaluate(pooled_model, dataset, flip_test=False, progress=False)
    path = result.save_results(tmp_path / "out" / "results.json")
    assert json.loads(path.read_text()) == result.results
    assert not list(path.parent.glob("*.part"))
    table = result.table({"AP": 0.704})
    assert "70.4" in table and f"{100 * result.stats['AP']:.1f}" in table


# ---------------------------------------------------------------------------------------------
# Download (a local HTTP server stands in for images.cocodataset.org) and the command line
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def file_server(tmp_path):
    """Serve ``tmp_path / "served"`` on 127.0.0.1; yields (folder, base URL)."""
    import functools
    import http.server
    import threading

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def serve_coco_zips(folder, base_url, monkeypatch):
    import zipfile

    from posekit.io import cocodata

    with zipfile.ZipFile(folder / "val2017.zip", "w") as bundle:
        for image in SAMPLE.glob("*.jpg"):
            bundle.write(image, f"val2017/{image.name}")
    with zipfile.ZipFile(folder / "annotations_trainval2017.zip", "w") as bundle:
        bundle.write(ANN_FILE, "annotations/person_keypoints_val2017.json")
        bundle.writestr("annotations/instances_val2017.json", "{}")
    urls = {"val2017": f"{base_url}/val2017.zip", "annotations": f"{base_url}/annotations_trainval2017.zip"}
    monkeypatch.setattr(cocodata, "_ZIP_URLS", urls)


def test_download_coco_lays_out_val2017(tmp_path, file_server, monkeypatch):
    from posekit.io import cocodata as coco
    from posekit.io import hub

    serve_coco_zips(*file_server, monkeypatch)
    calls = []

    def fake_gdrive(file_id, dest, sha256=None, progress=True):
        calls.append((file_id, sha256))
        shutil.copy(DET_FILE, dest)
        return Path(dest)

    monkeypatch.setattr(hub, "download_gdrive", fake_gdrive)
    paths = coco.download_coco(tmp_path / "coco", progress=False)
    assert calls == [(coco.DETECTIONS_GDRIVE_ID, coco.DETECTIONS_SHA256)]
    assert sorted(p.name for p in paths.image_dir.iterdir()) == sorted(p.name for p in SAMPLE.glob("*.jpg"))
    assert paths.ann_file.read_bytes() == ANN_FILE.read_bytes()
    laid_out = sorted(p.name for p in (tmp_path / "coco").iterdir())
    assert laid_out == [".downloads", "annotations", "person_detection_results", "val2017"]
    assert list((tmp_path / "coco" / ".downloads").iterdir()) == []  # archives and locks gone
    assert [p.name for p in paths.ann_file.parent.iterdir()] == [paths.ann_file.name]
    assert CocoPersonDataset(paths.ann_file, paths.image_dir, boxes=paths.detections_file).num_people > 0

    def no_network(*args, **kwargs):
        raise AssertionError("nothing is missing, nothing should be downloaded")

    monkeypatch.setattr(hub, "download_url", no_network)
    monkeypatch.setattr(hub, "download_gdrive", no_network)
    assert coco.download_coco(tmp_path / "coco", progress=False) == paths


def test_download_coco_offline_says_what_to_do(tmp_path, monkeypatch):
    from posekit.errors import DownloadError
    from posekit.io import cocodata as coco

    closed_port = "http://127.0.0.1:1"  # nothing listens there: the same failure as being offline
    urls = {"val2017": f"{closed_port}/val2017.zip", "annotations": f"{closed_port}/a.zip"}
    monkeypatch.setattr(coco, "_ZIP_URLS", urls)
    with pytest.raises(DownloadError) as error:
        coco.download_coco(tmp_path / "coco", parts=("val2017",), progress=False)
    message = str(error.value)
    # One sentence naming the URL and where a hand-downloaded archive goes (the next call unpacks it).
    archive = tmp_path / "coco" / ".downloads" / "val2017.zip"
    assert "\n" not in message and urls["val2017"] in message and f"put it at {archive}" in message
    assert not (tmp_path / "coco" / "val2017").exists()


def test_download_coco_rejects_a_corrupt_archive(tmp_path, file_server, monkeypatch):
    from posekit.errors import DownloadError, PosekitError
    from posekit.io import cocodata as coco

    folder, base_url = file_server
    (folder / "val2017.zip").write_bytes(b"<html>quota exceeded</html>")
    monkeypatch.setattr(coco, "_ZIP_URLS", {"val2017": f"{base_url}/val2017.zip", "annotations": f"{base_url}/a.zip"})
    with pytest.raises(DownloadError, match="corrupt"):
        coco.download_coco(tmp_path / "coco", parts=("val2017",), progress=False)
    assert [p.name for p in (tmp_path / "coco").iterdir()] == [".downloads"]
    assert list((tmp_path / "coco" / ".downloads").iterdir()) == []  # the bad archive and the lock are gone
    with pytest.raises(PosekitError, match="unknown COCO part"):
        coco.download_coco(tmp_path / "coco", parts=("train2017",))


def tiny_registered_weights(tmp_path, monkeypatch):
    """A depth-18, 64x96 registry entry and a random checkpoint file named like its release."""
    import dataclasses

    from posekit.models import weights
    from posekit.models.pose_resnet import pose_resnet

    entry = dataclasses.replace(
        weights.WEIGHTS[weights.DEFAULT_WEIGHTS], name="tiny", depth=18, input_size=(64, 96), filename="tiny.pth"
    )
    monkeypatch.setitem(weights.WEIGHTS, "tiny", entry)
    torch.manual_seed(0)
    torch.save(pose_resnet(18).state_dict(), tmp_path / "tiny.pth")
    return tmp_path / "tiny.pth"


def test_cli_eval_prints_stats_beside_the_reported_ap(tmp_path, monkeypatch, capsys):
    from posekit import cli

    root = tmp_path / "coco"
    shutil.copytree(SAMPLE, root / "val2017", ignore=shutil.ignore_patterns("*.json", "*.md"))
    (root / "annotations").mkdir()
    shutil.copy(ANN_FILE, root / "annotations" / "person_keypoints_val2017.json")
    checkpoint = tiny_registered_weights(tmp_path, monkeypatch)
    out = tmp_path / "results.json"
    argv = ["eval", "--coco-root", str(root), "--weights", str(checkpoint), "--limit", "2", "--workers", "0",
            "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    lines = {line.split()[0]: line.split() for line in printed.out.splitlines() if line.strip()}
    assert lines["metric"] == ["metric", "posekit", "reported"]
    assert lines["AP"][2] == "70.4" and lines["APm"][2] == "-"
    assert len(json.loads(out.read_text())) == CocoPersonDataset(ANN_FILE, SAMPLE, max_images=2).num_people
    assert "people in 2 images" in printed.err


def test_cli_eval_without_data_explains_the_download(tmp_path, capsys):
    from posekit import cli

    assert cli.main(["eval", "--coco-root", str(tmp_path), "--boxes", "detections"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "--download" in error and "person_keypoints_val2017.json" in error and "AP_H_56" in error


def test_a_model_with_the_wrong_output_gets_a_clear_error():
    from posekit.errors import PosekitError

    dataset = CocoPersonDataset(ANN_FILE, SAMPLE, max_images=1)
    with pytest.raises(PosekitError, match=r"expected heatmaps \(1, 17, h, w\)"):
        evaluate(lambda crops: torch.zeros(len(crops), 16, 16, 12), dataset, flip_test=False, progress=False)


def test_clean_boxes_equals_the_official_per_box_rule():
    """The official loader's loop, transcribed: clip to the image, keep if x2 >= x1 and y2 >= y1."""
    from posekit.core.boxes import clean_boxes

    rng = np.random.default_rng(7)
    sizes = rng.integers(20, 200, size=(300, 2)).astype(np.float64)
    boxes = np.concatenate([rng.uniform(-50, 250, (300, 2)), rng.uniform(-5, 120, (300, 2))], 1)
    boxes[:5, 2:] = [[0, 0], [0.5, 3], [1, 1], [300, 1], [-2, 10]]
    cleaned, usable = clean_boxes(boxes, sizes)
    for (x, y, w, h), (width, height), box, keep in zip(boxes, sizes, cleaned, usable):
        x1, y1 = max(0, x), max(0, y)
        x2, y2 = min(width - 1, x1 + max(0, w - 1)), min(height - 1, y1 + max(0, h - 1))
        assert keep == (x2 >= x1 and y2 >= y1)
        if keep:
            np.testing.assert_array_equal(box, [x1, y1, x2 - x1, y2 - y1])
    assert 0 < usable.sum() < len(boxes)  # the random draw covers both outcomes


def test_evaluate_gives_exactly_the_keypoints_of_the_estimator():
    """posekit eval and PoseEstimator run one top-down core: the same keypoints, bit for bit."""
    from posekit.estimator import PoseEstimator
    from posekit.io.images import load_image

    torch.manual_seed(0)
    estimator = PoseEstimator(None, depth=18, device="cpu")
    for module in estimator.model.deconv_layers:  # distinct, input-dependent peaks to decode
        if isinstance(module, torch.nn.ConvTranspose2d):
            torch.nn.init.kaiming_normal_(module.weight)
    torch.nn.init.kaiming_normal_(estimator.model.final_layer.weight)
    dataset = CocoPersonDataset(ANN_FILE, SAMPLE)
    result = evaluate(estimator.model, dataset, batch_size=estimator.max_batch, progress=False)
    assert len(result.results) == dataset.num_people  # distinct people: OKS-NMS keeps everyone
    for image_id in dataset.image_ids:
        image = load_image(SAMPLE / f"{image_id:012d}.jpg", upright=False)
        expected = estimator.keypoints(image, dataset.boxes[dataset.person_image_ids == image_id])
        found = np.array([r["keypoints"] for r in result.results if r["image_id"] == image_id]).reshape(-1, 17, 3)
        # OKS-NMS orders the kept people by score: compare as sets of rows.
        assert sorted(map(tuple, found.reshape(len(found), -1))) == sorted(
            map(tuple, expected.astype(np.float64).reshape(len(expected), -1)))


def test_cli_eval_takes_an_annotation_file_an_image_folder_and_a_detections_file(tmp_path, monkeypatch, capsys):
    from posekit import cli

    checkpoint = tiny_registered_weights(tmp_path, monkeypatch)
    out = tmp_path / "results.json"
    argv = ["eval", "--ann", str(ANN_FILE), "--images", str(SAMPLE), "--boxes", str(DET_FILE), "--weights",
            str(checkpoint), "--limit", "1", "--workers", "0", "--device", "cpu", "--no-flip", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert "people in 1 images" in printed.err and "AP" in printed.out
    expected = CocoPersonDataset(ANN_FILE, SAMPLE, boxes=DET_FILE, max_images=1)
    assert {r["image_id"] for r in json.loads(out.read_text())} == set(expected.image_ids)
    # A detections file that is not there, or not detections, is named in the one error line.
    for boxes, says in ((tmp_path / "missing.json", "no such file"), (ANN_FILE.parent / "ATTRIBUTION.md", "")):
        assert cli.main([*argv[:5], "--boxes", str(boxes), *argv[7:]]) == 1
        [line] = capsys.readouterr().err.strip().splitlines()[-1:]
        assert line.startswith("posekit eval: error: ") and str(boxes) in line and says in line
    assert cli.main(["eval", "--ann", str(ANN_FILE), "--weights", str(checkpoint)]) == 1
    assert "expected --coco-root DIR (the COCO layout), or --ann FILE and --images DIR" in capsys.readouterr().err
