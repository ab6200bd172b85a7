"""PoseTrack metrics on cases small enough to count by hand."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from posekit.errors import AnnotationError
from posekit.eval.posetrack import AnnotatedFrame, average_precision, evaluate_tracking, head_sizes, load_posetrack

HEAD = [0.0, 0.0, 30.0, 40.0]  # diagonal 50: head size 0.6 * 50 = 30, match within 15 px


def truth(ids, points) -> AnnotatedFrame:
    """One joint per person (K = 1), annotated."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return AnnotatedFrame(np.array(ids), np.column_stack([points, np.full(len(points), 2.0)])[:, None, :],
                          np.array([HEAD] * len(points)).reshape(-1, 4))


def predicted(ids, points, scores=None) -> SimpleNamespace:
    points = np.asarray(points, np.float64).reshape(-1, 2)
    scores = np.full(len(points), 0.9) if scores is None else np.asarray(scores, np.float64)
    return SimpleNamespace(track_ids=np.array(ids), keypoints=np.column_stack([points, scores])[:, None, :])


def test_head_size_is_point_six_of_the_head_box_diagonal():
    np.testing.assert_allclose(head_sizes(np.array([HEAD, [5, 5, 6, 8]])), [30.0, 6.0])


def test_a_swap_of_two_ids_is_two_switches():
    gt = [truth([1, 2], [[0, 0], [100, 0]])] * 2
    pr = [predicted([10, 20], [[0, 0], [100, 0]]), predicted([20, 10], [[0, 0], [100, 0]])]
    metrics = evaluate_tracking(gt, pr)
    assert (metrics.switches[0], metrics.misses[0], metrics.false_positives[0], metrics.objects[0]) == (2, 0, 0, 4)
    assert metrics.mota[0] == pytest.approx(50.0)  # 100 * (1 - 2 / 4)
    assert metrics.motp[0] == pytest.approx(100.0)  # every match at distance 0


def test_match_radius_is_half_the_head_size():
    gt = [truth([1], [[0, 0]])]
    near = evaluate_tracking(gt, [predicted([5], [[15, 0]])])  # exactly 0.5 head sizes: a match
    far = evaluate_tracking(gt, [predicted([5], [[15.01, 0]])])  # just beyond: a miss and a false positive
    assert (near.misses[0], near.false_positives[0], near.mota[0]) == (0, 0, 100.0)
    assert near.motp[0] == pytest.approx(50.0)  # 100 * (1 - 0.5)
    assert (far.misses[0], far.false_positives[0], far.mota[0]) == (1, 1, -100.0)
    assert (far.precision[0], far.recall[0]) == (0.0, 0.0)


def test_unsure_joints_are_not_predictions_and_empty_frames_are_left_out():
    gt = [truth([1], [[0, 0]]), truth([], []), truth([1], [[0, 0]])]
    pr = [predicted([7], [[0, 0]], [0.3]), predicted([7], [[500, 500]]), predicted([7], [[1, 0]])]
    metrics = evaluate_tracking(gt, pr)
    # Frame 0: the only prediction scores 0.3 < 0.4, so one miss; frame 1 has nobody annotated: not counted.
    assert (metrics.misses[0], metrics.false_positives[0], metrics.switches[0], metrics.objects[0]) == (1, 0, 0, 2)


def test_a_track_resumed_under_another_id_after_a_gap_is_one_switch():
    gt = [truth([1], [[0, 0]])] * 4
    pr = [predicted([3], [[0, 0]]), predicted([], []), predicted([4], [[0, 0]]), predicted([4], [[0, 0]])]
    metrics = evaluate_tracking(gt, pr)
    assert (metrics.switches[0], metrics.misses[0], metrics.false_positives[0]) == (1, 1, 0)
    assert metrics.mota[0] == pytest.approx(50.0)


def test_ap_ranks_joints_by_score_with_the_voc_envelope():
    # Ranked: TP (0.9), FP (0.8), TP (0.7); 2 annotated joints.
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> envelope 1, 2/3, 2/3 -> AP = 1/2 * 1 + 1/2 * 2/3.
    assert average_precision(np.array([0.7, 0.9, 0.8]), np.array([True, True, False]), 2) == pytest.approx(100 * (0.5 + 1 / 3))
    assert average_precision(np.array([0.9]), np.array([True]), 4) == pytest.approx(25.0)
    assert np.isnan(average_precision(np.zeros(0), np.zeros(0, bool), 0))


def test_ap_through_the_pose_assignment():
    gt = [truth([1, 2], [[0, 0], [100, 0]])]
    pr = [predicted([5, 6, 7], [[1, 0], [300, 0], [101, 0]], [0.9, 0.8, 0.7])]
    metrics = evaluate_tracking(gt, pr)
    assert metrics.ap[0] == pytest.approx(100 * (0.5 + 1 / 3))
    # Two predictions on one person, both within the radius (PCKh 1 each): as in poseval the first
    # listed takes it, the other is a false positive. Ranked TP (0.8), FP (0.9) -> FP first.
    twice = evaluate_tracking(gt, [predicted([5, 6], [[10, 0], [1, 0]], [0.8, 0.9])])
    # precision 0, 1/2 at recall 0, 1/2 -> envelope 1/2 over recall 0..1/2: AP = 25.
    assert twice.ap[0] == pytest.approx(25.0)


def test_per_joint_metrics_are_separate_problems():
    # Two joints; the second is predicted far off in every frame.
    gt = [AnnotatedFrame(np.array([1]), np.array([[[0, 0, 2], [50, 0, 2]]], np.float64), np.array([HEAD]))] * 3
    pr = [SimpleNamespace(track_ids=np.array([9]), keypoints=np.array([[[0, 0, 0.9], [200, 0, 0.9]]]))] * 3
    metrics = evaluate_tracking(gt, pr)
    np.testing.assert_allclose(metrics.mota, [100.0, -100.0])
    assert metrics.total("mota") == pytest.approx(0.0)


def test_load_posetrack_reads_frames_in_order_and_unlabeled_frames_as_none(tmp_path):
    content = {
        "images": [{"id": 11, "file_name": "a.jpg"}, {"id": 12, "file_name": "b.jpg", "is_labeled": False},
                   {"id": 13, "file_name": "c.jpg"}],
        "annotations": [
            {"image_id": 13, "track_id": 4, "keypoints": [1, 2, 1, 3, 4, 0], "bbox_head": [0, 0, 3, 4]},
            {"image_id": 13, "track_id": 7, "keypoints": [0, 0, 0, 3, 4, 2], "bbox_head": [0, 0, 3, 4]},
            {"image_id": 11, "track_id": 5, "keypoints": [5, 6, 1, 7, 8, 1], "bbox_head": [0, 0, 6, 8]},
            {"image_id": 11, "track_id": 6, "keypoints": [5, 6, 1, 7, 8, 1]},  # no head box: cannot be scored
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(content))
    with pytest.warns(UserWarning, match="1 people without a head box left out"):
        frames = load_posetrack(path)
    assert frames[1] is None
    assert frames[0].track_ids.tolist() == [5] and frames[2].track_ids.tolist() == [4, 7]
    # As poseval: only (0, 0, 0) is "not annotated"; (3, 4, 0) is an annotated joint (its v says "occluded").
    np.testing.assert_array_equal(frames[2].keypoints, [[[1, 2, 1], [3, 4, 1]], [[0, 0, 0], [3, 4, 1]]])
    np.testing.assert_array_equal(frames[0].head_boxes, [[0, 0, 6, 8]])


def test_bad_posetrack_files_get_clear_errors(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 2, "keypoints": [1], "bbox_head": [1]}]}))
    with pytest.raises(AnnotationError, match=r"gt.json: annotations\[\].keypoints: expected the same number of \[x, y, v\] triples"):
        load_posetrack(path)
    with pytest.raises(AnnotationError, match="no such file"):
        load_posetrack(tmp_path / "missing.json")
    with pytest.raises(AnnotationError, match="2 annotated frames but 1"):
        evaluate_tracking([None, None], [predicted([], [])])
