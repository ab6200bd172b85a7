"""posekit.motion on generated movement whose truth is known: time warps, a bent joint, a mirror, gaps."""
from __future__ import annotations

import json

import numpy as np
import pytest

from posekit.core.coco17 import FLIP_INDEX, KEYPOINT_NAMES
from posekit.core.keypoints import KeypointSet
from posekit.errors import ArgumentError
from posekit.motion import (
    angle_names,
    angular_velocities,
    compare_motion,
    dtw,
    joint_angles,
    normalize_poses,
    pose_distance_rows,
    synthetic_motion,
)

FPS = 30.0
J = {name: k for k, name in enumerate(KEYPOINT_NAMES)}


def brute_force_dtw(cost: np.ndarray, band: float | None = None) -> tuple[float, list[tuple[int, int]]]:
    """The full-matrix textbook recurrence, cell by cell; ties: diagonal, then up, then left."""
    rows, columns = cost.shape
    slope = (columns - 1) / max(rows - 1, 1)
    total = np.full((rows, columns), np.inf)
    step = {}
    for i in range(rows):
        for j in range(columns):
            if band is not None and abs(j - i * slope) > band:
                continue
            if i == j == 0:
                total[i, j] = cost[i, j]
                continue
            options = [((i - 1, j - 1), i > 0 and j > 0), ((i - 1, j), i > 0), ((i, j - 1), j > 0)]
            best = None
            for cell, allowed in options:
                if allowed and (best is None or total[cell] < total[best]):
                    best = cell
            total[i, j] = cost[i, j] + total[best]
            step[i, j] = best
    path = [(rows - 1, columns - 1)]
    while path[-1] != (0, 0):
        path.append(step[path[-1]])
    return float(total[-1, -1]), path[::-1]


@pytest.mark.parametrize("rows, columns, band", [(1, 1, None), (1, 7, None), (6, 1, None), (9, 9, None), (12, 7, None),
                                                 (7, 15, None), (20, 20, 3), (13, 25, 2), (30, 17, 4)])
def test_dtw_equals_brute_force_on_integer_costs_with_ties(rows, columns, band):
    # Small integers: every sum is exact in float64 and ties are everywhere, so the tie-breaking is tested too.
    rng = np.random.default_rng(rows * 100 + columns)
    for _ in range(5):
        cost = rng.integers(0, 3, (rows, columns)).astype(np.float64)
        total, path = dtw(lambda i, first, last: cost[i, first : last + 1], rows, columns, band)
        expected_total, expected_path = brute_force_dtw(cost, band)
        assert total == expected_total
        assert [tuple(p) for p in path.tolist()] == expected_path


def test_dtw_on_random_poses_equals_brute_force_on_the_full_distance_matrix():
    rng = np.random.default_rng(3)
    reference, attempt = rng.normal(size=(23, 17, 2)), rng.normal(size=(31, 17, 2))
    reference[rng.random((23, 17)) < 0.2] = np.nan  # masked joints
    attempt[rng.random((31, 17)) < 0.2] = np.nan
    distances = np.linalg.norm(reference[:, None] - attempt[None], axis=-1)  # (23, 31, 17)
    matrix = np.nanmean(distances, axis=-1)
    row = pose_distance_rows(reference, attempt)
    np.testing.assert_allclose(np.stack([row(i, 0, 30) for i in range(23)]), matrix, rtol=1e-12)
    for band in (None, 5):
        total, path = dtw(row, 23, 31, band)
        expected_total, expected_path = brute_force_dtw(matrix, band)
        assert total == pytest.approx(expected_total, rel=1e-12)
        assert [tuple(p) for p in path.tolist()] == expected_path


def test_a_band_too_narrow_to_connect_the_corners_is_refused():
    with pytest.raises(ArgumentError, match="band=1: too narrow for 10 against 40 frames; expected at least 3"):
        dtw(lambda i, first, last: np.zeros(last - first + 1), 10, 40, band=1)
    with pytest.raises(ArgumentError, match="expected at least one frame"):
        dtw(lambda i, first, last: np.zeros(last - first + 1), 0, 5)


def _warp(attempt_frames: int) -> np.ndarray:
    """Reference time (in reference frames, of 90) shown by each attempt frame: slow, a pause, a 1.8x rush."""
    u = np.arange(attempt_frames) / (attempt_frames - 1)
    return np.interp(u, [0, 0.3, 0.45, 0.7, 1], [0, 0.25, 0.25, 0.6, 1.0]) * 89


def test_a_time_warped_copy_aligns_within_one_frame_and_scores_near_100():
    reference = synthetic_motion(np.arange(90) / FPS)
    truth = _warp(130)
    result = compare_motion(reference, synthetic_motion(truth / FPS))
    reference_frames, attempt_frames = result.alignment.T
    assert np.abs(reference_frames - truth[attempt_frames]).max() <= 1.0
    assert result.alignment[0].tolist() == [0, 0] and result.alignment[-1].tolist() == [89, 129]
    assert np.all(np.diff(result.alignment, axis=0) >= 0)
    assert result.score > 99
    assert min(result.per_joint.values()) > 98 and min(result.per_angle.values()) > 98


def test_a_30_degree_elbow_offset_over_a_segment_ranks_that_joint_and_segment_worst():
    reference = synthetic_motion(np.arange(120) / FPS)
    attempt = reference.copy()
    segment = slice(64, 84)  # inside the third of four phases (60..89)
    turn = np.radians(30)
    rotation = np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])
    forearm = attempt[segment, J["left_wrist"], :2] - attempt[segment, J["left_elbow"], :2]
    attempt[segment, J["left_wrist"], :2] = attempt[segment, J["left_elbow"], :2] + forearm @ rotation
    result = compare_motion(reference, attempt)
    assert min(result.per_angle, key=result.per_angle.get) == "left_elbow"
    assert min(result.per_joint, key=result.per_joint.get) == "left_wrist"
    phase_scores = [phase["score"] for phase in result.per_phase]
    assert int(np.argmin(phase_scores)) == 2 and result.per_phase[2]["reference_frames"] == [60, 89]
    assert all(64 <= frame < 84 for frame in result.worst_frames["angles"]["left_elbow"])
    assert all(64 <= frame < 84 for frame in result.per_phase[2]["worst_frames"])
    # The angle really differs by 30 degrees where the forearm was turned, and nowhere else.
    column = result.angle_names.index("left_elbow")
    difference = np.abs(result.reference_angles[:, column] - result.attempt_angles[:, column])
    np.testing.assert_allclose(difference[segment], 30, atol=1e-6)
    assert np.abs(np.delete(difference, np.r_[segment])).max() < 1e-9


def test_a_mirrored_copy_scores_near_100_only_when_mirrored():
    reference = synthetic_motion(np.arange(90) / FPS)
    mirrored = reference.copy()
    mirrored[..., 0] = 640 - mirrored[..., 0]  # the picture flipped: the right arm's swing is now the left's
    mirrored = mirrored[:, FLIP_INDEX]
    assert compare_motion(reference, mirrored, mirror=True).score > 99.9
    assert compare_motion(reference, mirrored).score < 80


def test_missing_joints_are_left_out_and_do_not_lower_the_score():
    reference = synthetic_motion(np.arange(90) / FPS)
    attempt = synthetic_motion(_warp(110) / FPS)
    rng = np.random.default_rng(0)
    limbs = [J[name] for name in KEYPOINT_NAMES if "shoulder" not in name and "hip" not in name]
    hidden = rng.random((110, len(limbs))) < 0.3
    attempt[:, limbs, 2] = np.where(hidden, 0.05, 1.0)  # 30% of the limb joints under the threshold
    attempt[:, J["left_ankle"], 2] = 0.0  # one joint never seen
    full = compare_motion(reference, synthetic_motion(_warp(110) / FPS))
    result = compare_motion(reference, attempt)
    assert result.score > 99 and abs(result.score - full.score) < 0.3  # zeroed joints would cost tens of points
    assert np.isnan(result.per_joint["left_ankle"]) and np.isnan(result.per_angle["left_knee"])
    assert result.per_joint["right_ankle"] > 98
    assert result.worst_frames["joints"]["left_ankle"] == []
    document = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert document["per_joint"]["left_ankle"] is None


def test_absent_frames_take_no_part_and_do_not_lower_the_score():
    reference = synthetic_motion(np.arange(90) / FPS)
    truth = _warp(120)
    attempt = synthetic_motion(truth / FPS)
    attempt[40:55] = np.nan  # the person left the picture
    attempt[:5, :, 2] = 0.0  # and was not found at first
    result = compare_motion(reference, attempt)
    used = set(result.alignment[:, 1].tolist())
    assert used == set(range(5, 40)) | set(range(55, 120))
    reference_frames, attempt_frames = result.alignment.T
    # DTW matches the ends: the reference frames the attempt missed at first all go to its first frame seen.
    early = reference_frames < truth[5]
    assert set(attempt_frames[early].tolist()) == {5} and set(reference_frames[early].tolist()) == {0, 1, 2, 3}
    assert np.abs(reference_frames - truth[attempt_frames])[~early].max() <= 1.0
    assert result.score > 99


def test_a_sequence_without_the_person_is_refused():
    reference = synthetic_motion(np.arange(10) / FPS)
    with pytest.raises(ArgumentError, match="the attempt has no frame among its 4 where the person's hips and shoulders"):
        compare_motion(reference, np.full((4, 17, 3), np.nan))
    with pytest.raises(ArgumentError, match="the reference has no frame among its 0"):
        compare_motion(np.zeros((0, 17, 3)), reference)


def test_normalize_centres_on_the_hips_scales_by_the_torso_and_mirrors():
    pose = np.zeros((1, 17, 3))
    pose[..., 2] = 1.0
    pose[0, J["left_hip"], :2], pose[0, J["right_hip"], :2] = (120, 300), (80, 300)
    pose[0, J["left_shoulder"], :2], pose[0, J["right_shoulder"], :2] = (130, 250), (70, 250)  # torso 50 px
    pose[0, J["left_wrist"]] = (160, 260, 0.9)
    pose[0, J["right_wrist"]] = (0, 0, 0.1)  # under the threshold
    normalized = normalize_poses(pose)
    np.testing.assert_allclose(normalized[0, J["left_hip"]], [0.4, 0.0])
    np.testing.assert_allclose(normalized[0, J["left_wrist"]], [1.2, -0.8])
    assert np.isnan(normalized[0, J["right_wrist"]]).all()
    mirrored = normalize_poses(pose, mirror=True)
    np.testing.assert_allclose(mirrored[0, J["right_wrist"]], [-1.2, -0.8])  # the left wrist, on the other side
    assert np.isnan(mirrored[0, J["left_wrist"]]).all()
    pose[0, J["left_hip"], 2] = 0.0
    assert np.isnan(normalize_poses(pose)).all()  # no hip centre: the frame is absent


def test_joint_angles_on_a_drawn_pose():
    pose = np.full((1, 17, 2), np.nan)
    for name, xy in (("left_shoulder", (10, 0)), ("left_elbow", (10, 10)), ("left_wrist", (20, 10)),
                     ("right_shoulder", (-10, 0)), ("left_hip", (10 + 20 * np.tan(np.radians(30)), 20)),
                     ("right_hip", (-10 + 20 * np.tan(np.radians(30)), 20))):
        pose[0, J[name]] = xy
    angles = dict(zip(angle_names(), joint_angles(pose)[0]))
    assert angles["left_elbow"] == pytest.approx(90)
    assert angles["left_shoulder"] == pytest.approx(30)  # elbow straight below, hip 30 degrees out
    assert angles["trunk_lean"] == pytest.approx(-30)  # shoulders to the left of the hips
    assert angles["shoulder_line"] == pytest.approx(0) and angles["hip_line"] == pytest.approx(0)
    assert np.isnan(angles["right_elbow"]) and np.isnan(angles["left_knee"])
    pose[0, J["left_shoulder"]] = (10, -5)  # the shoulder line turns: the left end higher (counter-clockwise)
    assert dict(zip(angle_names(), joint_angles(pose)[0]))["shoulder_line"] == pytest.approx(np.degrees(np.arctan2(5, 20)))


def test_angles_of_another_keypoint_set_come_from_its_names():
    arm = KeypointSet(names=("left_shoulder", "left_elbow", "left_wrist", "right_shoulder"), skeleton=((0, 1), (1, 2)),
                      flip_pairs=(), sigmas=(0.08,) * 4)
    assert angle_names(arm) == ["left_elbow", "shoulder_line"]
    angles = joint_angles(np.array([[[0, 0], [0, 10], [10, 20], [-5, 0]]], np.float64), arm)
    np.testing.assert_allclose(angles, [[135, 0]])
    with pytest.raises(ArgumentError, match="names no left_shoulder, right_shoulder, left_hip, right_hip"):
        normalize_poses(np.zeros((2, 4, 3)), arm)


def test_angular_velocities_wrap_and_follow_the_frame_rate():
    angles = np.array([[170.0, 0], [-170, 10], [-150, np.nan], [-130, 30]])  # 20 degrees a frame through 180
    velocities = angular_velocities(angles, fps=30)
    np.testing.assert_allclose(velocities[:, 0], [600, 600, 600, 600])
    assert velocities[0, 1] == 300 and np.isnan(velocities[1:, 1]).all()
    assert angular_velocities(angles[:1], 30).tolist() == [[0.0, 0.0]]
