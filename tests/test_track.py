"""PoseTracker on synthetic scenes of known identities, scored with the PoseTrack metrics.

A fake estimator stands in for the networks: its detector returns the boxes of the visible people
(minus the misses a test asks for), and its pose "network" returns, for each box, the true pose of
the visible person the box covers best, plus a deterministic jitter of at most 1 pixel that
depends on the box, so different boxes give slightly different poses. Frames are blank images
whose first pixel encodes the frame index. Expected counts come from the scene itself.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posekit.core.coco17 import OKS_SIGMAS
from posekit.core.smoothing import OneEuro
from posekit.errors import PosekitError
from posekit.eval.posetrack import AnnotatedFrame, evaluate_tracking
from posekit.models.flow import RaftFlow, warp_keypoints
from posekit.core.boxes import box_iou, box_nms, joint_boxes
from posekit.core.oks import pose_similarity
from posekit.track import PoseTracker, greedy_match

# A standing person, about 100 px tall: x, y of the 17 COCO joints relative to the top of the head.
TEMPLATE = np.array([
    [0, 10], [-3, 7], [3, 7], [-6, 9], [6, 9], [-12, 25], [12, 25], [-16, 45], [16, 45],
    [-18, 62], [18, 62], [-8, 60], [8, 60], [-9, 80], [9, 80], [-10, 100], [10, 100],
], np.float64)
HEIGHT, WIDTH = 240, 640
JITTER = 1.0


def pose_at(offset) -> np.ndarray:
    """The (17, 3) pose of a person whose head top is at ``offset``, visibility 2."""
    return np.column_stack([TEMPLATE + np.asarray(offset, np.float64), np.full(17, 2.0)])


def true_box(offset) -> np.ndarray:
    low, high = TEMPLATE.min(0) + offset - 5, TEMPLATE.max(0) + offset + 5
    return np.concatenate([low, high - low])


class Scene:
    """People (id -> head-top offset per frame), who of them the camera cannot see, detector misses."""

    def __init__(self, truth: list[dict[int, tuple[float, float]]], hidden=(), missed=(), ghost=None) -> None:
        self.truth, self.hidden, self.missed, self.ghost = truth, set(hidden), set(missed), ghost

    def visible(self, t: int) -> dict[int, np.ndarray]:
        return {i: np.asarray(o, np.float64) for i, o in self.truth[t].items() if (t, i) not in self.hidden}

    def frames(self) -> list[np.ndarray]:
        frames = []
        for t in range(len(self.truth)):
            rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            rgb[0, 0, :2] = t % 256, t // 256
            frames.append(rgb)
        return frames

    def annotations(self) -> list[AnnotatedFrame]:
        return [
            AnnotatedFrame(np.array(list(people), np.int64), np.array([pose_at(o) for o in people.values()]).reshape(-1, 17, 3),
                           np.array([[o[0] - 8, o[1], 16, 16] for o in people.values()], np.float64).reshape(-1, 4))
            for people in self.truth
        ]

    def flow(self, prev_rgb: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """Each visible person's box region moves with them; the rest stands still."""
        t = _frame_index(rgb)
        field = np.zeros((HEIGHT, WIDTH, 2))
        before, now = self.visible(t - 1), self.visible(t)
        for i in before.keys() & now.keys():
            x, y, w, h = np.round(true_box(before[i])).astype(int)
            field[max(y, 0) : y + h, max(x, 0) : x + w] = now[i] - before[i]
        return field


def _frame_index(rgb: np.ndarray) -> int:
    return int(rgb[0, 0, 0]) + 256 * int(rgb[0, 0, 1])


class FakeEstimator:
    """The estimator contract (``keypoints``, ``detect``) answered from a :class:`Scene`."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.keypoint_calls: list[tuple[int, int]] = []
        self.detect_calls: list[int] = []

    def detect(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        t = _frame_index(images[0])
        self.detect_calls.append(t)
        people = [o for i, o in self.scene.visible(t).items() if (t, i) not in self.scene.missed]
        boxes = [true_box(o) for o in people]
        scores = [0.9] * len(people)
        if self.scene.ghost is not None:
            offset, score = self.scene.ghost
            boxes.append(true_box(offset))
            scores.append(score)
        return [(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32))]

    def keypoints(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        t = _frame_index(rgb)
        self.keypoint_calls.append((t, len(boxes)))
        offsets = list(self.scene.visible(t).values())
        if self.scene.ghost is not None:
            offsets.append(np.asarray(self.scene.ghost[0], np.float64))
        out = np.zeros((len(boxes), 17, 3))
        for row, box in enumerate(np.asarray(boxes, np.float64)):
            overlaps = box_iou(box[None], np.array([true_box(o) for o in offsets]).reshape(-1, 4))[0]
            rng = np.random.default_rng([t, *np.round(box).astype(np.int64).clip(0)])
            if len(offsets) and overlaps.max() > 0.3:
                out[row] = pose_at(offsets[int(overlaps.argmax())])
                out[row, :, :2] += rng.uniform(-JITTER, JITTER, (17, 2))
                out[row, :, 2] = 0.9
            else:  # nobody there: joints anywhere in the box, scored low
                out[row, :, :2] = box[:2] + rng.uniform(0, 1, (17, 2)) * box[2:]
                out[row, :, 2] = 0.05
        return out


def run(scene: Scene, **options) -> tuple[list, FakeEstimator]:
    estimator = FakeEstimator(scene)
    options.setdefault("flow", scene.flow)
    tracker = PoseTracker(estimator, **options)
    return [tracker.update(rgb, t) for t, rgb in enumerate(scene.frames())], estimator


def totals(scene: Scene, tracked: list) -> tuple[int, int, int]:
    """(id switches, misses, false positives) per joint; every joint type has the same counts here."""
    metrics = evaluate_tracking(scene.annotations(), tracked)
    for counts in (metrics.switches, metrics.misses, metrics.false_positives):
        assert np.all(counts == counts[0])
    return int(metrics.switches[0]), int(metrics.misses[0]), int(metrics.false_positives[0])


def ids_of(tracked: list, scene: Scene, person: int) -> list[int]:
    """The track id of a true person in each frame where a tracked nose lies within 3 px of theirs."""
    ids = []
    for t, frame in enumerate(tracked):
        if person in scene.truth[t] and len(frame.track_ids):
            distances = np.linalg.norm(frame.keypoints[:, 0, :2] - pose_at(scene.truth[t][person])[0, :2], axis=1)
            if distances.min() <= 3:
                ids.append(int(frame.track_ids[distances.argmin()]))
    return ids


# --- scenes -----------------------------------------------------------------------------------


def crossing(frames: int = 25) -> Scene:
    """A walks right, B walks left, 40 px lower, 6 px per frame: they pass each other mid-video."""
    return Scene([{1: (230 + 6 * t, 60), 2: (370 - 6 * t, 100)} for t in range(frames)])


def occlusion(hidden_frames=(8, 9, 10)) -> Scene:
    """A walks slowly and is hidden for a few frames (still annotated); B stands."""
    return Scene([{1: (100 + t, 60), 2: (400, 60)} for t in range(20)], hidden={(t, 1) for t in hidden_frames})


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("similarity", ["flow-oks", "oks", "iou"])
def test_people_crossing_keep_their_ids(similarity):
    scene = crossing()
    tracked, _ = run(scene, similarity=similarity)
    assert ids_of(tracked, scene, 1) == [1] * 25 and ids_of(tracked, scene, 2) == [2] * 25
    assert totals(scene, tracked) == (0, 0, 0)


@pytest.mark.parametrize("max_age, switches", [(3, 0), (2, 1), (0, 1)])
def test_occluded_person_gets_the_id_back_within_max_age(max_age, switches):
    scene = occlusion()  # hidden 3 frames: 3 misses per joint whatever the tracker does
    tracked, _ = run(scene, max_age=max_age)
    assert totals(scene, tracked) == (switches, 3, 0)
    after = ids_of(tracked, scene, 1)[8:]  # the frames after the occlusion
    assert set(after) == ({1} if switches == 0 else {3})
    assert ids_of(tracked, scene, 2) == [2] * 20


def test_leaving_and_entering_people_get_new_ids_not_old_ones():
    # A walks out on the right after frame 7; C walks in on the left from frame 12; B stands.
    truth = [{**({1: (480 + 20 * t, 60)} if t < 8 else {}), 2: (300, 100), **({3: (20 + 5 * t, 60)} if t >= 12 else {})}
             for t in range(20)]
    scene = Scene(truth)
    tracked, _ = run(scene, max_age=10)
    assert ids_of(tracked, scene, 1) == [1] * 8 and ids_of(tracked, scene, 3) == [3] * 8
    assert ids_of(tracked, scene, 2) == [2] * 20
    assert totals(scene, tracked) == (0, 0, 0)


@pytest.mark.parametrize("propagation", ["flow", "pose"])
def test_missed_detections_are_bridged_by_propagation(propagation):
    scene = Scene(crossing().truth, missed={(5, 1), (6, 1)})
    tracked, _ = run(scene, propagation=propagation)
    assert totals(scene, tracked) == (0, 0, 0)
    assert ids_of(tracked, scene, 1) == [1] * 25


def test_without_propagation_missed_detections_are_misses_and_break_the_track():
    scene = Scene(crossing().truth, missed={(5, 1), (6, 1)})
    tracked, _ = run(scene, propagation=None)
    # Two frames without A (2 misses per joint), then A comes back under a new id (1 switch).
    assert totals(scene, tracked) == (1, 2, 0)
    assert ids_of(tracked, scene, 1) == [1] * 5 + [3] * 18


@pytest.mark.parametrize("box_threshold, ghost_frames", [(0.5, 0), (0.2, 25)])
def test_low_scoring_detections_are_dropped(box_threshold, ghost_frames):
    # A person-like thing the detector scores 0.3, which the pose network would happily estimate.
    scene = Scene(crossing().truth, ghost=((300, 5), 0.3))
    tracked, _ = run(scene, box_threshold=box_threshold, propagation=None)
    assert totals(scene, tracked) == (0, 0, ghost_frames)


def test_flow_similarity_keeps_ids_where_plain_oks_and_iou_swap_them():
    # Two people 50 px apart panning 40 px per frame: each new pose lies nearer the other's old one.
    truth = [{1: (40 + 40 * t, 60), 2: (90 + 40 * t, 60)} for t in range(10)]
    scene = Scene(truth)
    pan = lambda prev, rgb: np.broadcast_to(np.array([40.0, 0.0]), (HEIGHT, WIDTH, 2))  # noqa: E731
    good, _ = run(scene, similarity="flow-oks", propagation=None, flow=pan)
    assert totals(scene, good) == (0, 0, 0)
    for similarity in ("oks", "iou"):
        bad, _ = run(scene, similarity=similarity, propagation=None, flow=pan)
        assert totals(scene, bad)[0] > 0


@pytest.mark.parametrize("propagation", ["flow", "pose"])
def test_detector_every_k_runs_the_detector_every_k_frames_and_keeps_the_poses(propagation):
    scene = crossing(frames=21)
    every, estimator = run(scene, propagation=propagation, detector_every=5)
    reference, _ = run(scene, propagation=propagation)
    assert estimator.detect_calls == [0, 5, 10, 15, 20]
    assert [t for t, _ in estimator.keypoint_calls] == list(range(21))  # one batched pose call per frame
    assert [f.detected for f in every] == [t % 5 == 0 for t in range(21)]
    for ours, theirs in zip(every, reference):
        assert sorted(ours.track_ids) == sorted(theirs.track_ids) == [1, 2]
        a = ours.keypoints[np.argsort(ours.track_ids)]
        b = theirs.keypoints[np.argsort(theirs.track_ids)]
        # Each pose is the truth within 1 px per axis, whatever box it came from: within 2*sqrt(2) px.
        assert np.linalg.norm(a[..., :2] - b[..., :2], axis=-1).max() <= 2 * np.sqrt(2)
    assert totals(scene, every) == (0, 0, 0)


def test_detector_also_runs_right_after_a_track_is_lost():
    scene = Scene(crossing(frames=16).truth, hidden={(7, 1)})
    _, estimator = run(scene, propagation="pose", detector_every=5, max_age=1)
    assert estimator.detect_calls == [0, 5, 8, 10, 15]


def test_every_frame_has_one_batched_pose_call_with_detected_and_propagated_boxes_merged():
    scene = crossing(frames=6)
    tracked, estimator = run(scene, propagation="pose")
    # Detected and propagated boxes of the same two people collapse to two boxes per frame.
    assert estimator.keypoint_calls == [(t, 2) for t in range(6)]
    assert all(len(f.track_ids) == 2 for f in tracked)


def test_options_are_checked():
    estimator = FakeEstimator(crossing(2))
    with pytest.raises(PosekitError, match="propagation"):
        PoseTracker(estimator, propagation="optical")
    with pytest.raises(PosekitError, match="similarity"):
        PoseTracker(estimator, similarity="euclid")
    with pytest.raises(PosekitError, match="detector_every=3"):
        PoseTracker(estimator, propagation=None, detector_every=3)
    with pytest.raises(PosekitError, match="max_age"):
        PoseTracker(estimator, max_age=-1)


# --- building blocks against independent computations ----------------------------------------


def test_joint_boxes_are_the_confident_extent_enlarged_by_15_percent():
    pose = np.zeros((1, 17, 3))
    pose[0, :, :2] = [[10 + k, 20 + 2 * k] for k in range(17)]
    pose[0, :, 2] = 0.9
    pose[0, 16] = [500, 500, 0.1]  # unsure: ignored
    # Confident extent x 10..25 (15 wide), y 20..50 (30 high); centre (17.5, 35).
    expected = [17.5 - 15 * 1.15 / 2, 35 - 30 * 1.15 / 2, 15 * 1.15, 30 * 1.15]
    np.testing.assert_allclose(joint_boxes(pose)[0], expected)
    pose[0, 1:, 2] = 0.0
    assert np.isnan(joint_boxes(pose)).all()  # one confident joint has no extent


def test_box_iou_and_nms_on_hand_cases():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]], np.float64)
    np.testing.assert_allclose(box_iou(boxes, boxes)[0], [1, 50 / 150, 0])
    assert box_nms(boxes, np.array([0.5, 0.9, 0.1]), threshold=0.4).tolist() == [1, 0, 2]
    assert box_nms(boxes, np.array([0.5, 0.9, 0.1]), threshold=0.3).tolist() == [1, 2]  # IoU 1/3 > 0.3


def test_greedy_match_takes_the_best_pair_first_not_the_best_total():
    similarity = np.array([[0.9, 0.8], [0.85, 0.1]])
    rows, columns = greedy_match(similarity, min_similarity=0.0)
    # Greedy: (0, 0) first, leaving (1, 1); the optimal assignment would be (0, 1), (1, 0).
    assert rows.tolist() == [0, 1] and columns.tolist() == [0, 1]
    rows, columns = greedy_match(similarity, min_similarity=0.3)
    assert rows.tolist() == [0] and columns.tolist() == [0]


def test_pose_similarity_is_oks_over_joints_confident_in_both():
    a, b = pose_at((100, 50))[None], pose_at((103, 54))[None]
    a[0, :, 2], b[0, :, 2] = 0.9, 0.9
    b[0, 3:, 2] = 0.1  # only joints 0..2 count
    area_a, area_b = 36 * 93, 6 * 3  # confident-joint extents: a all joints, b joints 0-2 (x -3..3, y 7..10)
    scale = (area_a + area_b) / 2
    expected = np.mean([np.exp(-25 / (2 * scale * (2 * OKS_SIGMAS[k]) ** 2)) for k in range(3)])
    np.testing.assert_allclose(pose_similarity(a, b, OKS_SIGMAS), [[expected]])
    b[0, :, 2] = 0.1
    assert pose_similarity(a, b, OKS_SIGMAS)[0, 0] == 0.0


def test_warp_keypoints_samples_the_flow_bilinearly():
    flow = np.zeros((4, 4, 2))
    flow[1, 1], flow[1, 2] = [2, 0], [4, 0]
    points = np.array([[[1.5, 1.0, 0.7], [1.0, 1.0, 0.5]]])
    moved = warp_keypoints(points, flow)
    np.testing.assert_allclose(moved, [[[1.5 + 3, 1.0, 0.7], [3.0, 1.0, 0.5]]])


def _one_euro_reference(values: np.ndarray, dt: float, min_cutoff: float, beta: float, d_cutoff: float) -> np.ndarray:
    """The filter as Casiez et al. write it, one scalar at a time."""
    def alpha(cutoff: float) -> float:
        return 1.0 / (1.0 + 1.0 / (2 * np.pi * cutoff) / dt)

    out, previous, speed = [values[0]], values[0], 0.0
    for x in values[1:]:
        speed = alpha(d_cutoff) * (x - previous) / dt + (1 - alpha(d_cutoff)) * speed
        previous = alpha(min_cutoff + beta * abs(speed)) * x + (1 - alpha(min_cutoff + beta * abs(speed))) * previous
        out.append(previous)
    return np.array(out)


def test_one_euro_matches_the_scalar_definition():
    rng = np.random.default_rng(0)
    signal = np.cumsum(rng.normal(0, 3, 50)) + rng.normal(0, 1, 50)
    filt = OneEuro(min_cutoff=1.5, beta=0.05, d_cutoff=1.0)
    x, speed, out = np.full((1, 1, 2), signal[0]), np.zeros((1, 1, 2)), [signal[0]]
    for value in signal[1:]:
        x, speed = filt(np.full((1, 1, 2), value), x, speed, np.array([1 / 30]))
        out.append(x[0, 0, 0])
    # Only x is compared: the reference tracks a 1-d signal, ours a 2-d point whose speed is a norm.
    expected = _one_euro_reference(signal, 1 / 30, 1.5, 0.05 * np.sqrt(2), 1.0)
    np.testing.assert_allclose(out, expected, rtol=1e-10)


def test_smoothing_reduces_jitter_of_a_standing_person():
    scene = Scene([{1: (300, 60)} for _ in range(30)])
    raw, _ = run(scene)
    smooth, _ = run(scene, smoothing=OneEuro())
    spread = [np.std([f.keypoints[0, :, :2] for f in frames[5:]], axis=0).mean() for frames in (raw, smooth)]
    assert spread[1] < 0.5 * spread[0]
    assert [f.track_ids.tolist() for f in smooth] == [[1]] * 30


def test_raft_flow_plumbing_with_random_weights():
    """Shapes, scaling and device handling only: random weights say nothing about the flow itself."""
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    flow = RaftFlow(raft_small(), max_side=128)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (60, 100, 3), dtype=np.uint8)
    field = flow(a, a)
    assert field.shape == (60, 100, 2) and field.dtype == np.float32 and np.isfinite(field).all()


def test_raft_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    from posekit.errors import DownloadError

    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    with pytest.raises(DownloadError) as error:
        RaftFlow()
    message = str(error.value)
    assert str(tmp_path / "checkpoints" / "raft_small_C_T_V2-01064c6d.pth") in message
    assert "--propagation pose" in message


def test_other_numbers_of_joints_track_given_their_sigmas():
    scene = crossing(frames=8)
    five = FakeEstimator(scene)
    full = five.keypoints
    joints = [0, 5, 6, 15, 16]  # a 5-joint keypoint set: nose, shoulders, ankles
    five.keypoints = lambda rgb, boxes: full(rgb, boxes)[:, joints]
    tracker = PoseTracker(five, propagation="pose", similarity="oks", sigmas=OKS_SIGMAS[joints])
    tracked = [tracker.update(rgb, t) for t, rgb in enumerate(scene.frames())]
    assert [f.track_ids.tolist() for f in tracked] == [[1, 2]] * 8
    with pytest.raises(PosekitError, match="5 joints: pass sigmas"):
        PoseTracker(five, propagation="pose", similarity="oks").update(scene.frames()[0], 0)


def test_raft_flow_is_scaled_back_to_frame_pixels():
    """A stand-in RAFT answering a constant flow at its working size: the frame-sized flow is that
    displacement times the frame/working size ratio, per axis."""
    seen = []

    class ConstantFlow(torch.nn.Module):
        def forward(self, first, second):
            seen.append((tuple(first.shape), float(first.min()), float(first.max())))
            flow = torch.ones(1, 2, *first.shape[2:])
            return [flow * 0, flow * torch.tensor([3.0, -2.0])[None, :, None, None]]

    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:8, :8] = 255
    field = RaftFlow(ConstantFlow(), max_side=512)(frame, frame)
    # 1280x720 -> long side 512: 512 x 288, both multiples of 8.
    (shape, low, high), = seen
    assert shape == (1, 3, 288, 512) and low == -1.0 and 0.0 < high <= 1.0 + 1e-5  # RAFT input range [-1, 1]
    np.testing.assert_allclose(field[..., 0], 3.0 * 1280 / 512)
    np.testing.assert_allclose(field[..., 1], -2.0 * 720 / 288)
