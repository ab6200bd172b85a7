"""`posekit compare` as a user runs it: on tracks JSON files of generated motion, on two short videos offline
(untrained weights, said on screen), and on bad inputs (one line, nothing written)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from posekit.cli import main
from posekit.core.coco17 import FLIP_INDEX, KEYPOINT_NAMES
from posekit.data import VIDEO_SAMPLE_CLIP
from posekit.io.video import VideoSource, VideoWriter
from posekit.motion import angle_names, synthetic_motion
from posekit.track import TrackedFrame, to_posetrack

FPS = 25.0


def write_tracks(path, people: dict[int, np.ndarray], fps: float = FPS):
    """A tracks JSON as `posekit track --json` writes it; people: track id -> (T, 17, 3), NaN where absent."""
    frames = []
    for t in range(max(len(poses) for poses in people.values())):
        here = {i: poses[t] for i, poses in people.items() if t < len(poses) and np.isfinite(poses[t]).all()}
        keypoints = np.array(list(here.values())).reshape(-1, 17, 3)
        boxes = np.array([[p[:, 0].min(), p[:, 1].min(), np.ptp(p[:, 0]), np.ptp(p[:, 1])] for p in keypoints]).reshape(-1, 4)
        frames.append(TrackedFrame(t, t / fps, np.array(list(here), np.int64), boxes, np.ones(len(here)), keypoints, True))
    path.write_text(json.dumps(to_posetrack(frames)))
    return path


def _warp(frames: int) -> np.ndarray:
    """Reference frame (of 60) shown by each attempt frame: a pause, then faster."""
    u = np.arange(frames) / (frames - 1)
    return np.interp(u, [0, 0.2, 0.35, 1], [0, 0.2, 0.2, 1.0]) * 59


def test_compare_two_tracks_files_writes_the_report_the_plot_and_a_playable_video(tmp_path, capsys):
    truth = _warp(75)
    reference = write_tracks(tmp_path / "coach.json", {
        1: synthetic_motion(np.arange(20) / FPS, duration=2.4, origin=(500, 60)),  # a bystander, seen briefly
        3: synthetic_motion(np.arange(60) / FPS, duration=2.4),
    })
    attempt = write_tracks(tmp_path / "me.json", {7: synthetic_motion(truth / FPS, duration=2.4, height=200)})
    out = tmp_path / "out"
    code = main(["compare", str(reference), str(attempt), "--json", str(out / "report.json"),
                 "--plot", str(out / "angles.png"), "--out", str(out / "side_by_side.mp4")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"{reference}: track 3, the longest of 2 (pass --track-id to choose)" in printed.out
    assert "UNTRAINED" not in printed.out
    report = json.loads((out / "report.json").read_text())
    alignment = np.array(report["alignment"])
    assert np.abs(alignment[:, 0] - truth[alignment[:, 1]]).max() <= 1.0  # in the inputs' frame indices
    assert report["score"] > 99 and set(report["per_joint"]) == set(KEYPOINT_NAMES)
    assert set(report["per_angle"]) == set(angle_names()) and len(report["per_phase"]) == 4
    assert len(report["angles"]["reference"]) == 60 and len(report["angles"]["attempt"]) == 75
    assert f"score {report['score']:.1f}/100" in printed.out
    with Image.open(out / "angles.png") as picture:
        assert picture.format == "PNG" and picture.width > 600
    video = VideoSource(out / "side_by_side.mp4")
    assert sum(1 for _ in video) == len(alignment) and video.fps == pytest.approx(FPS)
    assert sorted(p.name for p in out.iterdir()) == ["angles.png", "report.json", "side_by_side.mp4"]


def test_a_mirrored_take_scores_near_100_only_with_mirror(tmp_path, capsys):
    motion = synthetic_motion(np.arange(50) / FPS, duration=2.0)
    mirrored = motion.copy()
    mirrored[..., 0] = 640 - mirrored[..., 0]
    reference, attempt = write_tracks(tmp_path / "a.json", {1: motion}), write_tracks(tmp_path / "b.json", {1: mirrored[:, FLIP_INDEX]})
    scores = {}
    for flags in ([], ["--mirror"]):
        assert main(["compare", str(reference), str(attempt), "--json", str(tmp_path / "r.json"), *flags]) == 0
        scores[bool(flags)] = json.loads((tmp_path / "r.json").read_text())["score"]
    assert scores[True] > 99.9 and scores[False] < 80
    assert "(attempt mirrored)" in capsys.readouterr().out


def test_compare_two_short_videos_offline_says_the_weights_are_untrained(offline, tmp_path, capsys):
    frames = [frame.rgb[::4, ::4] for frame in VideoSource(VIDEO_SAMPLE_CLIP)]  # 320 x 180
    attempt = tmp_path / "attempt.mp4"
    with VideoWriter(attempt, 25) as writer:
        for index in (0, 0, 1, 3, 4, 4):
            writer.write(frames[index])
    reference = tmp_path / "reference.mp4"
    with VideoWriter(reference, 25) as writer:
        for rgb in frames:
            writer.write(rgb)
    out = tmp_path / "out"
    code = main(["compare", str(reference), str(attempt), "--detector", "none", "--no-flip", "--device", "cpu", "--backend", "torch",
                 "--json", str(out / "report.json"), "--plot", str(out / "angles.png"), "--out", str(out / "both.mp4")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "WARNING: UNTRAINED random weights" in printed.out
    report = json.loads((out / "report.json").read_text())
    assert report["untrained"] is True and 0 <= report["score"] <= 100
    alignment = np.array(report["alignment"])
    assert alignment[0].tolist() == [0, 0] and alignment[-1].tolist() == [4, 5]
    assert len(report["angles"]["reference"]) == 5 and len(report["angles"]["attempt"]) == 6
    video = VideoSource(out / "both.mp4")
    decoded = list(video)
    assert len(decoded) == len(alignment) and decoded[0].rgb.shape[:2] == (180, 640)  # two 320 x 180 panels
    assert (out / "angles.png").stat().st_size > 0


def _bad(tmp_path, document) -> str:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("not tracks", "bad.json: expected a tracks JSON as `posekit track --json` writes"),
    ("detections", "bad.json: expected a tracks JSON"),
    ("keypoints of another length", "bad.json: ValueError"),
    ("nobody", "bad.json: no person is tracked in its 3 frames; expected one"),
    ("zero frames", "bad.json: has no frames; expected a video or tracks of at least one frame"),
    ("missing track", "good.json: has no track 9; its tracks are 1"),
    ("no torso", "bad.json: track 1 has no frame where both hips and both shoulders score >= 0.3"),
    ("three ids", "--track-id 1 2 3: expected one id for both inputs or one each"),
    ("output is an input", "good.json: is one of the inputs; expected a new file name for the output"),
    ("missing file", "missing.json: no such file; expected a tracks JSON"),
    ("missing video", "missing.mp4: no such video file or folder"),
])
def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, capsys, case, message):
    good = write_tracks(tmp_path / "good.json", {1: synthetic_motion(np.arange(10) / FPS)})
    dim = synthetic_motion(np.arange(3) / FPS)
    dim[..., 2] = 0.1
    attempt, extra = str(good), []
    if case == "not tracks":
        attempt = _bad(tmp_path, {"info": "a COCO keypoint file without images"})
    elif case == "detections":
        attempt = _bad(tmp_path, [{"image_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9, "category_id": 1}])
    elif case == "keypoints of another length":
        attempt = _bad(tmp_path, {"images": [{"id": 0}], "annotations": [{"image_id": 0, "track_id": 1, "keypoints": [1, 2, 3]}]})
    elif case == "nobody":
        attempt = _bad(tmp_path, {"images": [{"id": i} for i in range(3)], "annotations": []})
    elif case == "zero frames":
        attempt = _bad(tmp_path, {"images": [], "annotations": []})
    elif case == "missing track":
        extra = ["--track-id", "9"]
    elif case == "no torso":
        attempt = str(write_tracks(tmp_path / "bad.json", {1: dim}))
    elif case == "three ids":
        extra = ["--track-id", "1", "2", "3"]
    elif case == "output is an input":
        extra = ["--plot", str(good)]
    elif case == "missing file":
        attempt = str(tmp_path / "missing.json")
    elif case == "missing video":
        attempt = str(tmp_path / "missing.mp4")
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["compare", str(good), attempt, "--json", str(tmp_path / "report.json"), "--out",
                 str(tmp_path / "video.mp4"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("posekit compare: error: ") and message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, not even in part
    assert good.read_text().startswith("{")
