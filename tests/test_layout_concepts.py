"""One implementation of each concept: boxes and NMS, OKS, the signal guard, the untrained network, the
untrained banner, and command-line flags that say the same across commands."""
from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.cli import build_parser, main
from posekit.core.boxes import box_nms, clip_boxes, greedy_nms, sanitize_boxes
from posekit.core.coco17 import OKS_SIGMAS
from posekit.core.oks import oks_iou, oks_nms, pose_similarity
from posekit.defaults import RANDOM, UNTRAINED_TITLE
from posekit.errors import DownloadError
from posekit.io.files import Terminated, signals_raise

SAMPLE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample"


# --------------------------------------------------------------------------------------------
# Boxes, NMS, OKS
# --------------------------------------------------------------------------------------------


def test_box_nms_and_oks_nms_share_one_loop_with_their_own_tie_rules():
    # Three identical items with equal scores: one survives. Box NMS (the tracker's) visits the
    # earlier index first, OKS-NMS the later one, as the official argsort()[::-1] does.
    boxes = np.tile([[10.0, 10.0, 50.0, 80.0]], (3, 1))
    keypoints = np.tile(np.random.default_rng(0).uniform(0, 100, (1, 17, 3)), (3, 1, 1))
    scores = np.ones(3)
    assert box_nms(boxes, scores, 0.5).tolist() == [0]
    assert oks_nms(keypoints, scores, np.full(3, 4000.0)).tolist() == [2]
    # The loop itself follows the order it is given.
    similarity = np.array([[1, 0.8, 0.1], [0.8, 1, 0.1], [0.1, 0.1, 1]])
    assert greedy_nms(similarity, np.array([1, 0, 2]), 0.5).tolist() == [1, 2]
    assert greedy_nms(similarity, np.array([1, 0, 2]), 0.9).tolist() == [1, 0, 2]


def test_pose_similarity_is_oks_over_the_joints_confident_in_both():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 200, (2, 17, 3)), rng.uniform(0, 200, (3, 17, 3))
    a[..., 2] = b[..., 2] = 1.0  # every joint confident: the plain OKS with the joints' extents as areas
    extent = lambda p: np.ptp(p[..., 0], 1) * np.ptp(p[..., 1], 1)  # noqa: E731
    np.testing.assert_allclose(pose_similarity(a, b, OKS_SIGMAS), oks_iou(a, b, extent(a), extent(b)), rtol=1e-12)
    b[0, :8, 2] = 0.0  # joints 0-7 of b[0] unsure: only 8-16 count, and b[0]'s area is their extent
    kept = slice(8, 17)
    expected = oks_iou(a[:, kept], b[:1, kept], extent(a), extent(b[:1, kept]), OKS_SIGMAS[kept])
    np.testing.assert_allclose(pose_similarity(a, b[:1], OKS_SIGMAS), expected, rtol=1e-12)


def test_user_boxes_and_tracker_boxes_clip_alike_but_for_the_smallest_side():
    boxes = np.array([[-5, -5, 20, 20], [95, 10, 0.5, 30], [10, 10, np.inf, 5], [200, 0, 5, 5]], np.float64)
    clipped, keep = clip_boxes(boxes, (100, 80), min_side=1)
    assert keep.tolist() == [True, False, False, False]
    np.testing.assert_array_equal(clipped, [[0, 0, 15, 15]])
    with pytest.warns(UserWarning, match="skipped 2 person box"):
        sanitized, kept = sanitize_boxes(boxes, (100, 80), "frame.jpg")
    assert kept.tolist() == [True, True, False, False]  # half a pixel is enough for a crop
    np.testing.assert_array_equal(sanitized[0], clipped[0])


# --------------------------------------------------------------------------------------------
# The signal guard
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_guard_raises_and_restores_the_previous_handler(signum):
    before = signal.getsignal(signum)
    with pytest.raises(Terminated) as raised, signals_raise():
        os.kill(os.getpid(), signum)
    assert raised.value.signum == signum and signal.getsignal(signum) == before
    with pytest.raises(SystemExit) as exited, signals_raise(lambda number: SystemExit(128 + number)):
        os.kill(os.getpid(), signum)
    assert exited.value.code == 128 + signum and signal.getsignal(signum) == before


# --------------------------------------------------------------------------------------------
# The untrained network: seeded, one ONNX export, the fallback in one place
# --------------------------------------------------------------------------------------------


def test_untrained_network_is_the_same_every_time_and_leaves_the_random_state_alone():
    from posekit.models.weights import untrained_model

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = untrained_model(18)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's generator did not move
    torch.manual_seed(7)
    second = untrained_model(18)
    assert all(torch.equal(x, y) for x, y in zip(first.state_dict().values(), second.state_dict().values()))


def test_two_untrained_runs_leave_one_onnx_export_in_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from posekit.estimator import PoseEstimator
    from posekit.models import runtime

    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    crops = torch.zeros(1, 3, 256, 192)
    counts = []
    for _ in range(2):  # each "run" starts with no export in memory, as a new process does
        monkeypatch.setattr(runtime, "_SESSIONS", {})
        estimator = PoseEstimator(RANDOM, depth=18, device="cpu", backend="onnxruntime")
        assert not estimator.pretrained and "untrained" in estimator.weights_source
        estimator.forward(crops)
        counts.append(len(list((tmp_path / "onnx").iterdir())))
    assert counts == [1, 1]


def test_allow_untrained_falls_back_for_registered_weights_only(monkeypatch, tmp_path):
    from posekit.estimator import PoseEstimator
    from posekit.models import weights

    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    entry = weights.get_weights("pose_resnet_101_256x192")
    closed = dataclasses.replace(entry, url="http://127.0.0.1:9/" + entry.filename, gdrive_folder=None, gdrive_path=None)
    monkeypatch.setitem(weights.WEIGHTS, entry.name, closed)
    estimator = PoseEstimator(entry.name, device="cpu", allow_untrained=True)
    assert not estimator.pretrained and isinstance(estimator.untrained_because, DownloadError)
    assert estimator.weights_source.startswith("random pose_resnet_101")  # the depth asked for
    with pytest.raises(DownloadError):  # a URL is not a registered release: its failure is the caller's
        PoseEstimator("http://127.0.0.1:9/mine.pth", device="cpu", allow_untrained=True)


# --------------------------------------------------------------------------------------------
# Untrained pictures say so legibly
# --------------------------------------------------------------------------------------------


def test_untrained_banner_on_video_frames_is_white_on_a_filled_box():
    from posekit.viz import CAPTION_BOX_RGB, CAPTION_RGB, draw_tracks

    scene = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    drawn = draw_tracks(scene, np.zeros((0, 17, 3)), np.zeros(0, np.int64), caption=UNTRAINED_TITLE)
    changed = (drawn != scene).any(-1)
    rows, columns = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    banner = drawn[: rows.max() + 1, : columns.max() + 1].reshape(-1, 3).astype(np.int64)
    # Every pixel of the banner is the box colour, the text colour or a blend of the two: no scene shows through.
    t = (banner[:, 1] - CAPTION_BOX_RGB[1]) / (CAPTION_RGB[1] - CAPTION_BOX_RGB[1])
    blend = np.asarray(CAPTION_BOX_RGB) + t[:, None] * (np.asarray(CAPTION_RGB) - CAPTION_BOX_RGB)
    assert np.abs(banner - blend).max() <= 2
    box, text = (t < 0.05).mean(), (t > 0.95).mean()
    assert box > 0.5 and text > 0.03  # mostly box, with text on it
    assert (drawn[rows.max() + 1 :] == scene[rows.max() + 1 :]).all()  # below the banner, the scene is untouched


def test_predict_draws_only_people_above_the_box_threshold_and_says_untrained(tmp_path, monkeypatch):
    from posekit import predict, viz
    from posekit.poses import Poses

    seen = {}

    def spy(image, keypoints, ax=None, boxes=None, **kwargs):
        seen["boxes"] = np.asarray(boxes)
        return real(image, keypoints, ax=ax, boxes=boxes, **kwargs)

    real = viz.draw_skeleton
    monkeypatch.setattr(viz, "draw_skeleton", spy)
    image = np.zeros((60, 80, 3), np.uint8)
    poses = Poses(np.array([[1, 1, 20, 30], [40, 10, 20, 30]], np.float32), np.array([0.9, 0.2], np.float32),
                  np.zeros((2, 17, 3), np.float32))
    labelled = []
    monkeypatch.setattr(viz, "label_untrained", lambda ax: labelled.append(ax))
    predict._save_annotated(image, poses, tmp_path / "a_pose.jpg", 0.5, pretrained=False)
    np.testing.assert_array_equal(seen["boxes"], poses.boxes[:1])
    assert len(labelled) == 1 and (tmp_path / "a_pose.jpg").is_file()


# --------------------------------------------------------------------------------------------
# Command-line flags that mean the same say the same
# --------------------------------------------------------------------------------------------


def _parse(*argv: str):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", [["predict", "x.jpg"], ["eval", "--coco-root", "c"], ["track", "v.mp4"], ["bench"]])
def test_flip_is_one_boolean_flag_everywhere(command):
    assert _parse(*command).flip is True
    assert _parse(*command, "--no-flip").flip is False
    assert _parse(*command, "--flip").flip is True


def test_people_per_call_is_max_batch_and_bench_defaults_to_auto():
    assert _parse("eval", "--coco-root", "c", "--max-batch", "7").max_batch == 7
    assert _parse("bench", "--max-batch", "5").max_batch == 5
    bench = _parse("bench")
    assert (bench.device, bench.precision) == ("auto", "auto")
    with pytest.raises(SystemExit):
        _parse("eval", "--coco-root", "c", "--batch-size", "7")


@pytest.mark.parametrize("command", [["predict", "x.jpg"], ["eval", "--coco-root", "c"], ["track", "v.mp4"], ["demo"],
                                     ["export", "--out", "m.onnx"]])
def test_weights_random_is_accepted_and_shown_in_help(command, capsys):
    assert _parse(*command, "--weights", RANDOM).weights == RANDOM
    with pytest.raises(SystemExit):
        _parse(command[0], "--help")
    assert f"{RANDOM}: an untrained" in " ".join(capsys.readouterr().out.split()) or command[0] == "export"


def test_predict_with_random_weights_runs_offline_and_says_so(tmp_path, capsys):
    image = next(SAMPLE.glob("*.jpg"))
    code = main(["predict", str(image), "--weights", RANDOM, "--detector", "none", "--backend", "torch", "--no-flip",
                 "--device", "cpu", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert f"WARNING: {UNTRAINED_TITLE} (--weights {RANDOM})" in out
    assert "box scores >= 0.5" in out and "untrained, seed 0" in out


# --------------------------------------------------------------------------------------------
# evaluate() takes the estimator as built
# --------------------------------------------------------------------------------------------


def test_evaluate_runs_the_estimator_as_built():
    from posekit.errors import PosekitError
    from posekit.estimator import PoseEstimator
    from posekit.eval.coco import CocoPersonDataset, evaluate

    estimator = PoseEstimator(RANDOM, depth=18, device="cpu", backend="torch", flip_test=False, max_batch=3)
    dataset = CocoPersonDataset(SAMPLE / "test_coco.json", SAMPLE, max_images=2)
    through_estimator = evaluate(estimator, dataset, progress=False)
    by_hand = evaluate(estimator.model, dataset, flip_test=False, batch_size=3, backend="torch", progress=False)
    assert through_estimator.results == by_hand.results and len(by_hand.results) > 0
    with pytest.raises(PosekitError, match="pass them to PoseEstimator"):
        evaluate(estimator, dataset, backend="onnxruntime", progress=False)
