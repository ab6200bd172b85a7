"""OKS, OKS-NMS and rescoring against slow implementations written here from the paper code's rules."""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posekit.core.oks import oks_iou, oks_nms, rescore

SIGMAS = [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]


def slow_oks(person_a, person_b, area_a, area_b):
    """OKS of two people, one joint at a time: mean of exp(-d^2 / (2 * mean area * (2 sigma)^2))."""
    total = 0.0
    for joint, sigma in enumerate(SIGMAS):
        k = 2 * sigma / 10
        d2 = (person_a[joint][0] - person_b[joint][0]) ** 2 + (person_a[joint][1] - person_b[joint][1]) ** 2
        total += math.exp(-d2 / (k * k) / ((area_a + area_b) / 2 + np.spacing(1)) / 2)
    return total / len(SIGMAS)


def slow_oks_nms(keypoints, scores, areas, threshold):
    """Greedy suppression with a shrinking candidate list, as the official code is written."""
    assert len(set(scores)) == len(scores), "random scores are distinct, so the order is unambiguous"
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    while order:
        best, rest = order[0], order[1:]
        kept.append(best)
        order = [j for j in rest if slow_oks(keypoints[best], keypoints[j], areas[best], areas[j]) <= threshold]
    return kept


def clustered_people(rng, num_people, num_clusters):
    """People around a few poses, so that some pairs overlap strongly and NMS has work to do."""
    centres = rng.uniform(0, 400, size=(num_clusters, 17, 2))
    members = rng.integers(0, num_clusters, num_people)
    spread = rng.choice([0.5, 3.0, 20.0], num_people)[:, None, None]
    xy = centres[members] + rng.normal(size=(num_people, 17, 2)) * spread
    keypoints = np.concatenate([xy, rng.uniform(0, 1, (num_people, 17, 1))], -1)
    return keypoints, rng.uniform(0, 1, num_people), rng.uniform(500, 20000, num_people)


@pytest.mark.parametrize("seed", range(6))
def test_oks_iou_matches_slow_loop(seed):
    rng = np.random.default_rng(seed)
    keypoints, _, areas = clustered_people(rng, 7, 3)
    others, _, other_areas = clustered_people(rng, 5, 2)
    fast = oks_iou(keypoints, others, areas, other_areas)
    assert fast.shape == (7, 5)
    for i in range(7):
        for j in range(5):
            assert fast[i, j] == pytest.approx(slow_oks(keypoints[i], others[j], areas[i], other_areas[j]), rel=1e-12)


def test_oks_iou_equals_pycocotools_for_equal_areas():
    # COCOeval scales by the ground-truth area alone; with equal areas the two definitions agree.
    rng = np.random.default_rng(1)
    truth, _, _ = clustered_people(rng, 3, 2)
    predictions, scores, _ = clustered_people(rng, 4, 2)
    area = 5000.0
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": 1, "width": 500, "height": 500}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": area, "num_keypoints": 17,
             "bbox": [0, 0, 10, 10], "keypoints": np.concatenate([p[:, :2], np.full((17, 1), 2)], 1).ravel().tolist()}
            for i, p in enumerate(truth)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
        detections = ground_truth.loadRes(
            [{"image_id": 1, "category_id": 1, "keypoints": p.ravel().tolist(), "score": float(s)}
             for p, s in zip(predictions, scores)]
        )
        evaluator = COCOeval(ground_truth, detections, "keypoints")
        evaluator.evaluate()
    by_score = np.argsort(-scores, kind="stable")  # COCOeval sorts detections by score
    expected = evaluator.ious[(1, 1)]  # (detections, ground truths)
    ours = oks_iou(predictions[by_score], truth, np.full(4, area), np.full(3, area))
    np.testing.assert_allclose(ours, expected, rtol=1e-9)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_oks_nms_matches_slow_greedy(seed, threshold):
    rng = np.random.default_rng(seed)
    keypoints, scores, areas = clustered_people(rng, int(rng.integers(2, 25)), int(rng.integers(1, 5)))
    kept = oks_nms(keypoints, scores, areas, threshold)
    expected = slow_oks_nms(keypoints, scores, areas, threshold)
    assert kept.tolist() == expected
    assert 1 <= len(kept) <= len(scores)


def test_oks_nms_suppresses_a_near_duplicate_and_keeps_a_stranger():
    rng = np.random.default_rng(3)
    person = np.concatenate([rng.uniform(100, 200, (17, 2)), np.ones((17, 1))], 1)
    duplicate = person + [0.5, -0.5, 0]
    stranger = person + [150, 0, 0]
    kept = oks_nms(np.stack([duplicate, person, stranger]), np.array([0.7, 0.9, 0.8]), np.full(3, 10000.0))
    assert kept.tolist() == [1, 2]


def test_oks_nms_of_nobody_is_empty():
    assert oks_nms(np.zeros((0, 17, 3)), np.zeros(0), np.zeros(0)).tolist() == []


@pytest.mark.parametrize("seed", range(5))
def test_rescore_matches_slow_loop(seed):
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(0, 1, (12, 17, 3))
    keypoints[0, :, 2] = rng.uniform(0, 0.2, 17)  # nobody above the threshold -> score 0
    keypoints[1, :, 2] = 0.2  # exactly at the threshold does not count
    box_scores = rng.uniform(0, 1, 12)
    expected = []
    for person, box_score in zip(keypoints, box_scores):
        confident = [s for s in person[:, 2] if s > 0.2]
        expected.append(box_score * (sum(confident) / len(confident) if confident else 0.0))
    np.testing.assert_allclose(rescore(keypoints, box_scores), expected, rtol=1e-12)
    assert rescore(keypoints, box_scores)[:2].tolist() == [0.0, 0.0]


def test_rescore_threshold_is_a_parameter():
    keypoints = np.zeros((1, 17, 3))
    keypoints[0, :, 2] = np.linspace(0, 0.8, 17)
    expected = keypoints[0, keypoints[0, :, 2] > 0.5, 2].mean() * 0.5
    assert rescore(keypoints, np.array([0.5]), threshold=0.5)[0] == pytest.approx(expected)
