"""PoseTrack metrics on cases small enough to count by hand."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from posekit.errors import AnnotationError
from posekit.eval.posetrack import (
    AnnotatedFrame,
    average_precision,
    evaluate_tracking,
    evaluate_videos,
    head_sizes,
    inside_regions,
    load_posetrack,
)

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
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0  # annotated joints, nothing predicted


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


# ------------------------------------------------------------------------------------------
# The PoseTrack protocol: ignore regions, slots never annotated, MOTP, pooling, differences
# ------------------------------------------------------------------------------------------

SQUARE = np.array([[40, 0], [60, 0], [60, 20], [40, 20]], np.float64)


def test_points_strictly_inside_a_polygon_are_in_an_ignore_region():
    points = np.array([[50, 10], [40, 10], [61, 10], [50, 20], [45, 5]])
    assert inside_regions(points, [SQUARE]).tolist() == [True, False, False, False, True]  # an edge is outside
    triangle = np.array([[0, 0], [10, 0], [0, 10]])
    assert inside_regions(np.array([[2, 2], [6, 6]]), [SQUARE, triangle]).tolist() == [True, False]
    assert not inside_regions(np.array([[5, 5]]), [np.array([[0, 0], [10, 10]])]).any()  # 2 corners: no area


def test_joints_in_ignore_regions_leave_both_sides_before_any_metric():
    # A (10, 10) outside; B (50, 10) and a bystander C (52, 15) inside; D (40, 10) on the edge, i.e. outside.
    plain = truth([1, 2], [[10, 10], [50, 10]])
    ignored = dataclasses.replace(plain, ignore_regions=(SQUARE,))
    guesses = [predicted([5, 6, 7, 8], [[10, 10], [50, 10], [52, 15], [40, 10]], [0.9, 0.8, 0.7, 0.6])]
    metrics = evaluate_tracking([ignored], guesses)
    # Left: A (matched by 5) and the prediction D, a false positive; B, 6 and 7 are gone.
    assert (metrics.objects[0], metrics.misses[0], metrics.false_positives[0]) == (1, 0, 1)
    assert (metrics.mota[0], metrics.precision[0], metrics.recall[0]) == (0.0, 50.0, 100.0)
    assert metrics.ap[0] == pytest.approx(100.0)  # the true positive ranks first
    without = evaluate_tracking([plain], guesses)
    assert (without.objects[0], without.false_positives[0], without.mota[0]) == (2, 2, 0.0)
    assert without.precision[0] == pytest.approx(50.0)


def test_slots_never_annotated_are_left_out_of_every_metric_and_count():
    # Three slots, the middle one never annotated (PoseTrack 2018's ears) but predicted far off.
    gt = [AnnotatedFrame(np.array([1]), np.array([[[0, 0, 1], [0, 0, 0], [50, 0, 1]]], np.float64), np.array([HEAD]))] * 2
    pr = [SimpleNamespace(track_ids=np.array([9]), keypoints=np.array([[[0, 0, 0.9], [300, 0, 0.9], [50, 0, 0.9]]]))] * 2
    metrics = evaluate_tracking(gt, pr, names=["a", "ear", "b"])
    assert metrics.scored.tolist() == [True, False, True]
    assert np.isnan([metrics.mota[1], metrics.motp[1], metrics.precision[1], metrics.recall[1], metrics.ap[1]]).all()
    assert (metrics.false_positives.sum(), metrics.objects.sum()) == (0, 4)
    assert metrics.total("precision") == 100.0 and metrics.total("motp") == 100.0  # not (100 + 0 + 100) / 3
    assert "2 of 3 joint slots scored; never annotated, left out: ear" in metrics.table()
    assert metrics.to_dict()["left_out"] == ["ear"] and "ear" not in metrics.to_dict()["joints"]


def test_motp_counts_each_matched_pair_once_through_an_id_switch():
    # Frame 0: 1-10 at 0.1, 2-20 at 0.2 head sizes; frame 1 the ids swap: 1-20 at 0.3, 2-10 at 0.4.
    gt = [truth([1, 2], [[0, 0], [100, 0]])] * 2
    pr = [predicted([10, 20], [[3, 0], [106, 0]]), predicted([20, 10], [[9, 0], [112, 0]])]
    metrics = evaluate_tracking(gt, pr)
    assert (metrics.switches[0], metrics.detections[0]) == (2, 4)
    # Four pairs: 1 - (0.1 + 0.2 + 0.3 + 0.4) / 4. motmetrics' TRANSFER rows repeat 0.3 and 0.4 (57.5 with them).
    assert metrics.motp[0] == pytest.approx(75.0)


def test_motp_with_a_transfer_to_a_new_id_and_a_miss():
    # Person 1 tracked as 10 (0.1), then as 11 (0.5: a transfer, one switch); person 2 missed in frame 1.
    gt = [truth([1, 2], [[0, 0], [100, 0]])] * 2
    pr = [predicted([10, 20], [[3, 0], [100, 0]]), predicted([11], [[15, 0]])]
    metrics = evaluate_tracking(gt, pr)
    assert (metrics.switches[0], metrics.misses[0], metrics.detections[0]) == (1, 1, 3)
    assert metrics.motp[0] == pytest.approx(100 * (1 - (0.1 + 0.0 + 0.5) / 3))


def test_videos_pool_into_one_accumulation_with_ids_apart():
    # Video A: 3 frames tracked perfectly as 10; video B: the same ids numbers, its one frame predicted elsewhere.
    a = ([truth([1], [[0, 0]])] * 3, [predicted([10], [[0, 0]])] * 3)
    b = ([truth([1], [[0, 0]])], [predicted([10], [[500, 0]])])
    pooled = evaluate_videos([a, b])
    assert (pooled.objects[0], pooled.misses[0], pooled.false_positives[0], pooled.switches[0]) == (4, 1, 1, 0)
    assert pooled.mota[0] == pytest.approx(50.0)  # 1 - 2 / 4; the mean of the videos' MOTA would be (100 - 100) / 2
    # B tracked under another id: no switch, since B's person 1 is not A's.
    other = evaluate_videos([a, ([truth([1], [[0, 0]])], [predicted([20], [[0, 0]])])])
    assert (other.switches[0], other.mota[0]) == (0, 100.0)


def test_a_frame_with_annotations_but_no_predictions_counts_every_annotated_joint_as_a_miss():
    # poseval enters one placeholder miss and one false positive per joint there instead.
    gt = [truth([1, 2], [[0, 0], [100, 0]])] * 2
    metrics = evaluate_tracking(gt, [predicted([10, 20], [[0, 0], [100, 0]]), None])
    assert (metrics.objects[0], metrics.misses[0], metrics.false_positives[0]) == (4, 2, 0)
    assert metrics.mota[0] == pytest.approx(50.0)  # poseval: 1 - (1 + 1) / 3 = 33.3


def test_the_last_frame_of_a_sequence_is_counted():
    # poseval drops each sequence's last annotated frame from tracking: here the switch would vanish (MOTA 100).
    gt = [truth([1], [[0, 0]])] * 3
    metrics = evaluate_tracking(gt, [predicted([10], [[0, 0]])] * 2 + [predicted([11], [[0, 0]])])
    assert (metrics.switches[0], metrics.objects[0]) == (1, 3)
    assert metrics.mota[0] == pytest.approx(100 * (1 - 1 / 3))


def test_tied_scores_are_one_step_whatever_their_order():
    # One true and one false positive at the same score, 1 annotated joint: precision 1/2 at recall 1.
    # poseval ranks ties as its sort happens to (here: the later one first): 50 one way round, 100 the other.
    assert average_precision(np.array([0.9, 0.9]), np.array([True, False]), 1) == pytest.approx(50.0)
    assert average_precision(np.array([0.9, 0.9]), np.array([False, True]), 1) == pytest.approx(50.0)
    assert average_precision(np.array([0.9, 0.8, 0.8]), np.array([True, False, True]), 2) == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
