"""Real time on the CPU (issue 20): the sub-pixel head, int8 against fp32 on a trained network, the
real-time preset's detector schedule, live sources dropping stale frames, and the threads around
the tracker.
"""
from __future__ import annotations

import json
import re
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from posekit.data import VIDEO_SAMPLE_CLIP
from posekit.io.live import BackgroundWriter, FrameReader, is_live
from posekit.models.int8 import subpixel_network
from posekit.models.pose_resnet import pose_resnet, subpixel_conv
from posekit.realtime import MAX_HEATMAP_DISTANCE, MAX_PCK_DROP, check_int8, realtime_tracker
from posekit.track_run import track_video

# ---------------------------------------------------------------------------------------------
# The sub-pixel head
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_channels, out_channels, height, width, bias", [
    (8, 5, 6, 4, True), (16, 16, 1, 1, False), (3, 7, 9, 12, True), (32, 8, 2, 7, False),
])
def test_subpixel_conv_equals_the_transposed_convolution(in_channels, out_channels, height, width, bias):
    torch.manual_seed(in_channels * height)
    deconv = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=bias).double()
    images = torch.randn(2, in_channels, height, width, dtype=torch.float64)
    expected = deconv(images)
    found = subpixel_conv(deconv)(images)
    assert found.shape == expected.shape == (2, out_channels, 2 * height, 2 * width)
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-12)


def test_subpixel_conv_refuses_other_transposed_convolutions():
    with pytest.raises(ValueError, match="4x4 stride-2 padding-1"):
        subpixel_conv(nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1))


@pytest.mark.parametrize("depth, size", [(18, (64, 96)), (50, (32, 64))])
def test_the_rewritten_network_equals_the_original_in_float(depth, size):
    torch.manual_seed(depth)
    model = pose_resnet(depth).eval()
    for module in model.modules():  # heatmaps of ordinary size and BatchNorm statistics that are not the identity
        if isinstance(module, nn.ConvTranspose2d):
            nn.init.normal_(module.weight, std=0.05)
        elif isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    nn.init.normal_(model.final_layer.weight, std=0.1)
    images = torch.randn(2, 3, size[1], size[0])
    rewritten = subpixel_network(model)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in rewritten.modules())
    with torch.no_grad():
        expected, found = model(images), rewritten(images)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


# ---------------------------------------------------------------------------------------------
# int8 against fp32 on a trained network
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def trained_synthetic(tmp_path_factory):
    """A ResNet-18 at 96x64 trained on synthetic people as tests/test_train.py does (about 40 s on 2
    cores): (model, its checkpoint, held-out people (ann, images), crops of training people)."""
    from PIL import Image

    from posekit.train.synthetic import make_synthetic_coco
    from posekit.train.trainer import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("synthetic")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    train = make_synthetic_coco(root / "train", num_images=40, people_per_image=3, image_size=(192, 144), seed=1)
    held_out = make_synthetic_coco(root / "val", num_images=8, people_per_image=3, image_size=(192, 144), seed=2)
    config = TrainConfig(ann_file=train[0], image_dir=train[1], out=root / "out", depth=18, input_size=(64, 96),
                         init="none", workers=0, device="cpu", progress=False, batch_size=16, val_every=100, epochs=12)
    trainer = Trainer(config)
    trainer.run()
    torch.set_num_threads(before)
    # The application's own calibration pictures: one training person each, cut out around their box.
    document = json.loads(Path(train[0]).read_text())
    names = {image["id"]: image["file_name"] for image in document["images"]}
    crops = []
    for person in document["annotations"][:16]:
        x, y, w, h = person["bbox"]
        picture = Image.open(Path(train[1]) / names[person["image_id"]])
        crops.append(root / f"person{person['id']}.png")
        picture.crop((int(x - 0.15 * w), int(y - 0.15 * h), int(x + 1.15 * w), int(y + 1.15 * h))).save(crops[-1])
    return trainer.model.eval(), root / "out" / "last.pth", held_out, crops


def test_int8_agrees_with_fp32_on_held_out_synthetic_people(trained_synthetic):
    model, _, held_out, crops = trained_synthetic
    check = check_int8(model, *held_out, calibration_images=crops)
    print(check.table())
    assert check.people == 24
    assert check.pck_fp32 > 0.3  # a network that has learnt something, so agreement means something
    assert check.pck_fp32 - check.pck_int8 <= MAX_PCK_DROP
    assert check.mean_distance <= MAX_HEATMAP_DISTANCE
    assert check.passed and "PASS" in check.table()


def test_int8_agrees_with_fp32_on_the_real_bundled_coco_people(trained_synthetic):
    """The default int8 build (calibrated on the bundled COCO people) on those real people. No real
    weights are reachable offline, so the network is the synthetic-trained one: its joints on real
    people are poor (PCK about 0.17), but int8 must still put them where fp32 does."""
    model = trained_synthetic[0]
    check = check_int8(model)
    print(check.table())
    assert check.people == 12  # the bundled people with labelled joints
    assert check.mean_distance <= MAX_HEATMAP_DISTANCE
    assert abs(check.pck_fp32 - check.pck_int8) <= 0.03  # 6 of 204 joints


def test_check_int8_command_passes_a_users_checkpoint_and_says_how_fast_int8_is(trained_synthetic, capsys):
    from posekit.cli import main

    _, checkpoint, (ann, images), crops = trained_synthetic
    code = main(["check-int8", "--weights", str(checkpoint), "--ann", str(ann), "--images", str(images),
                 "--calibration-images", *map(str, crops)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "int8 on this CPU: " in out and "int8 vs fp32 on 24 people" in out and out.rstrip().endswith("PASS")
    assert main(["check-int8", "--ann", str(ann)]) == 1  # --images missing: one error line
    error = capsys.readouterr().err
    assert error.startswith("posekit check-int8: error: ") and "expected --ann FILE and --images DIR together" in error


def test_int8_instructions_are_read_from_the_cpu_flags():
    from posekit.realtime import int8_instructions, int8_outlook

    intel = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16\nprocessor\t: 1\n"
    assert int8_instructions(intel) == ("avx512_vnni",)
    assert int8_instructions("flags\t\t: fpu sse avx2\n") == ()
    assert int8_instructions("Features\t: fp asimd asimddp\n") == ("asimddp",)  # Arm's dot product
    assert int8_outlook(("avx512_vnni",)).startswith("fast: avx512_vnni")
    assert int8_outlook(()).startswith("slow:") and "--precision fp32" in int8_outlook(())
    assert int8_outlook(None).startswith("unknown")


def test_posekit_info_says_whether_int8_is_fast_here(capsys):
    from posekit.cli import main
    from posekit.realtime import int8_instructions, int8_outlook

    assert main(["info"]) == 0
    rows = dict(line.split("  ", 1) for line in capsys.readouterr().out.splitlines())
    assert rows["int8 speed"].strip() == int8_outlook(int8_instructions())


def test_the_int8_model_is_cached_by_weights_identity(trained_synthetic, monkeypatch):
    from posekit.io import hub
    from posekit.models import int8

    model = trained_synthetic[0]
    before = set((hub.cache_dir() / "onnx").glob("*-int8.onnx"))
    monkeypatch.setattr(int8, "_SESSIONS", {})
    int8.cached_int8_forward(model)
    built = set((hub.cache_dir() / "onnx").glob("*-int8.onnx")) - before
    assert len(built) <= 1  # the default calibration may have been built by an earlier test
    calls = []
    monkeypatch.setattr(int8, "_SESSIONS", {})
    monkeypatch.setattr(int8, "quantize_int8", lambda *a, **k: calls.append(a))
    int8.cached_int8_forward(model)  # a new process: read from the cache, not quantized again
    assert calls == []
    changed = pose_resnet(18)
    changed.load_state_dict(model.state_dict())
    changed.input_spec = model.input_spec
    with torch.no_grad():
        changed.final_layer.bias.add_(1.0)
    with pytest.raises(TypeError):  # other weights: quantized anew (the stub returns None)
        int8.cached_int8_forward(changed)
    assert len(calls) == 1


def test_int8_precision_is_for_the_cpu_and_onnxruntime():
    from posekit.errors import PosekitError
    from posekit.models.runtime import resolve_backend, resolve_precision

    assert resolve_precision("int8") == "int8" and resolve_backend("auto", "cpu", "int8") == "onnxruntime"
    with pytest.raises(PosekitError, match="CPU only"):
        resolve_precision("int8", "cuda")
    with pytest.raises(PosekitError, match="onnxruntime"):
        resolve_backend("torch", "cpu", "int8")


# ---------------------------------------------------------------------------------------------
# The real-time preset's detector schedule
# ---------------------------------------------------------------------------------------------


class WalkingPeople:
    """People walking right, 2 px a frame; the fake pose network puts a confident pose into each box.

    ``leaves`` {frame: person}: from that frame the person is gone (the pose in their box is unsure);
    ``unsure`` {frame: person}: on that frame only, that person's pose scores ``UNSURE``.
    """

    UNSURE = 0.55

    def __init__(self, people: int = 2, leaves: dict | None = None, unsure: dict | None = None) -> None:
        self.people, self.leaves, self.unsure = people, leaves or {}, unsure or {}
        self.detector_calls: list[int] = []
        self.frame = 0

    def present(self, frame: int) -> list[int]:
        return [p for p in range(self.people) if not any(f <= frame and q == p for f, q in self.leaves.items())]

    def box(self, person: int, frame: int) -> np.ndarray:
        return np.array([20 + 150 * person + 2 * frame, 30, 60, 150], np.float64)

    def detect(self, rgb: np.ndarray, index: int):
        self.detector_calls.append(index)
        boxes = np.array([self.box(p, index) for p in self.present(index)]).reshape(-1, 4)
        return boxes, np.full(len(boxes), 0.9)

    def keypoints(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Per box the pose of the present person it overlaps best (scores 0.9), or an unsure pose (0.1)."""
        from posekit.track import box_iou

        present = self.present(self.frame)
        truth = np.array([self.box(p, self.frame) for p in present]).reshape(-1, 4)
        overlap = box_iou(np.asarray(boxes, np.float64).reshape(-1, 4), truth)
        poses = np.zeros((len(overlap), 17, 3))
        for row, ious in enumerate(overlap):
            person = int(np.argmax(ious)) if len(ious) and ious.max() > 0.3 else None
            box = truth[person] if person is not None else np.asarray(boxes[row], np.float64)
            poses[row, :, :2] = box[:2] + JOINTS_IN_BOX * box[2:]
            score = 0.1 if person is None else self.UNSURE if self.unsure.get(self.frame) == present[person] else 0.9
            poses[row, :, 2] = score
        return poses

    def run(self, frames: int, **options) -> list:
        tracker = realtime_tracker(self, detector_every=5, detect=self.detect, **options)
        tracked = []
        for self.frame in range(frames):
            tracked.append(tracker.update(np.zeros((240, 640, 3), np.uint8), self.frame))
        return tracked


# 17 joints spread over a box (fractions of its width and height).
JOINTS_IN_BOX = np.stack([0.5 + 0.4 * np.cos(np.arange(17)), np.linspace(0.05, 0.95, 17)], axis=1)


def test_realtime_detector_runs_on_the_first_frame_and_every_k_frames_only():
    scene = WalkingPeople()
    tracked = scene.run(12)
    assert scene.detector_calls == [0, 5, 10]
    assert [f.index for f in tracked if f.detected] == [0, 5, 10]
    assert all(sorted(f.track_ids) == [1, 2] for f in tracked)  # propagation kept both people and their ids


def test_realtime_detector_also_runs_after_a_lost_track():
    scene = WalkingPeople(leaves={7: 1})
    tracked = scene.run(12)
    assert scene.detector_calls == [0, 5, 8, 10]
    assert [len(f.track_ids) for f in tracked] == [2] * 7 + [1] * 5


def test_realtime_detector_also_runs_after_a_pose_grows_unsure():
    scene = WalkingPeople(unsure={3: 0})
    scene.run(12)
    assert scene.detector_calls == [0, 4, 5, 10]
    scene = WalkingPeople(unsure={3: 0})
    scene.run(12, redetect_below=None)  # the check can be turned off
    assert scene.detector_calls == [0, 5, 10]


def test_realtime_preset_says_what_it_chose():
    tracker = realtime_tracker(WalkingPeople(), detect=WalkingPeople().detect)
    assert tracker.propagation == "pose" and tracker.similarity == "oks" and tracker.detector_every == 10
    assert "every 10 frames" in tracker.preset and "OKS matching" in tracker.preset


def test_torch_runs_on_one_thread_while_onnxruntime_keeps_the_threads_it_had(tmp_path):
    from posekit.models.runtime import OnnxRuntimeForward, export_onnx, onnxruntime_threads, torch_on_one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        path = export_onnx(torch.nn.Conv2d(3, 17, 3, padding=1).eval(), tmp_path / "tiny.onnx", (8, 8))
        with torch_on_one_thread():
            assert torch.get_num_threads() == 1 and onnxruntime_threads() == 2
            with torch_on_one_thread():  # nested: still the outer count for ONNX Runtime
                assert onnxruntime_threads() == 2
            assert torch.get_num_threads() == 1 and onnxruntime_threads() == 2
            session = OnnxRuntimeForward(path).session  # built meanwhile, with the threads torch had
            assert session.get_session_options().intra_op_num_threads == 2
        assert torch.get_num_threads() == 2 and onnxruntime_threads() == 2
    finally:
        torch.set_num_threads(before)


class ThreadsSeen(WalkingPeople):
    """WalkingPeople that records torch's thread count whenever the pose network is asked."""

    backend = "onnxruntime"

    def keypoints(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self.threads = torch.get_num_threads()
        return super().keypoints(rgb, boxes)


@pytest.mark.parametrize("backend, one_thread", [("onnxruntime", True), ("torch", False)])
def test_track_video_runs_torch_on_one_thread_when_the_preset_networks_are_all_onnxruntime(backend, one_thread):
    from posekit.io.video import VideoSource

    scene = ThreadsSeen()
    scene.backend = backend
    tracker = realtime_tracker(scene, detect=scene.detect)
    assert tracker.torch_on_one_thread is one_thread
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        track_video(tracker, VideoSource(VIDEO_SAMPLE_CLIP), max_frames=2, progress=False)
        assert scene.threads == (1 if one_thread else 2)
        assert torch.get_num_threads() == 2  # given back after the run
    finally:
        torch.set_num_threads(before)
    # A detector that runs in torch needs torch's threads (detect=None, as the command line passes it: the detector's).
    scene.backend, scene.detector = "onnxruntime", types.SimpleNamespace(name="fasterrcnn", backend="torch")
    tracker = realtime_tracker(scene, detect=None)
    assert tracker.torch_on_one_thread is False and "detector fasterrcnn on the first frame" in tracker.preset


# ---------------------------------------------------------------------------------------------
# Live sources drop stale frames, files none; the threads around the tracker
# ---------------------------------------------------------------------------------------------


def camera(frames: int, interval: float):
    """A fake camera: ``frames`` numbered frames, one every ``interval`` seconds."""
    for index in range(frames):
        time.sleep(interval)
        yield index


def test_a_live_source_with_a_slow_consumer_drops_stale_frames_and_counts_them():
    reader = FrameReader(camera(40, 0.005), live=True)
    seen = []
    for item in reader:
        seen.append(item)
        time.sleep(0.03)  # a consumer about 6x slower than the camera
    assert reader.dropped > 0 and len(seen) + reader.dropped == 40
    assert seen == sorted(seen) and seen[-1] == 39  # always the newest, ending with the last frame


def test_a_file_with_a_slow_consumer_drops_nothing():
    reader = FrameReader(iter(range(20)), live=False)
    seen = []
    for item in reader:
        seen.append(item)
        time.sleep(0.005)
    assert seen == list(range(20)) and reader.dropped == 0


def test_reader_errors_reach_the_consumer_after_the_frames_before_them():
    def broken():
        yield 1
        yield 2
        raise OSError("decoding failed")

    seen = []
    with pytest.raises(OSError, match="decoding failed"):
        for item in FrameReader(broken()):
            seen.append(item)
    assert seen == [1, 2]


def test_the_writer_keeps_order_runs_beside_the_caller_and_raises_its_errors():
    written, threads = [], set()

    def write(item):
        threads.add(threading.get_ident())
        written.append(item)

    writer = BackgroundWriter(write)
    for item in range(10):
        writer.put(item)
    writer.close()
    assert written == list(range(10)) and threading.get_ident() not in threads

    def fail(item):
        raise ValueError("disk full")

    writer = BackgroundWriter(fail)
    writer.put(1)
    with pytest.raises(ValueError, match="disk full"):
        writer.close()


def test_live_sources_are_webcams_and_urls():
    assert is_live(0) and is_live("1") and is_live("rtsp://host/stream")
    assert not is_live("clip.mp4") and not is_live("frames/")


def test_track_video_on_a_live_source_drops_frames_and_says_so(monkeypatch, capsys):
    """A fake webcam faster than a slow tracker: the run reports the dropped frames, a file drops none."""
    from posekit.io.video import Frame, VideoSource
    from posekit.track import PoseTracker, track_video

    class FakeCamera(VideoSource):
        def __init__(self, name: str, frames: int, interval: float) -> None:
            self.name, self.fps, self.num_frames, self.file_names = name, 30.0, None, None
            self._frames, self._interval = frames, interval

        def __iter__(self):
            for index in camera(self._frames, self._interval):
                yield Frame(index, index / 30, np.zeros((48, 64, 3), np.uint8))

    class SlowEstimator:
        def detect(self, images):
            return [(np.zeros((0, 4)), np.zeros(0)) for _ in images]

        def keypoints(self, rgb, boxes):
            time.sleep(0.03)
            return np.zeros((len(boxes), 17, 3))

    tracker = PoseTracker(SlowEstimator(), propagation="pose", similarity="oks")
    live = track_video(tracker, FakeCamera("0", 30, 0.005), progress=False)
    assert live.dropped > 0 and len(live.frames) + live.dropped == 30
    from_file = track_video(tracker, FakeCamera("clip.mp4", 30, 0.005), progress=False)
    assert from_file.dropped == 0 and [f.index for f in from_file.frames] == list(range(30))


# ---------------------------------------------------------------------------------------------
# Videos shared out over torchrun ranks
# ---------------------------------------------------------------------------------------------


def test_torchrun_shards_videos_over_ranks_with_the_one_process_json(tmp_path):
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from posekit.data import VIDEO_SAMPLE_BOXES, VIDEO_SAMPLE_CLIP, VIDEO_SAMPLE_DIR

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(VIDEO_SAMPLE_CLIP, videos / "clip.mp4")
    shutil.copytree(VIDEO_SAMPLE_DIR, videos / "frames", ignore=shutil.ignore_patterns("*.mp4", "*.md", "*.json"))
    torch.manual_seed(0)
    weights = tmp_path / "random_res18.pth"
    torch.save(pose_resnet(18).state_dict(), weights)
    args = ["-m", "posekit", "track", str(videos / "clip.mp4"), str(videos / "frames"), "--boxes", str(VIDEO_SAMPLE_BOXES),
            "--propagation", "pose", "--similarity", "oks", "--no-flip", "--weights", str(weights), "--device", "cpu"]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "POSEKIT_HOME": str(tmp_path / "cache"), "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, *args, "--json", str(tmp_path / "one")], capture_output=True, text=True,
                            env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29519",
                            *args, "--json", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["clip.json", "frames.json"]
    for name in ("clip.json", "frames.json"):
        one, two = (json.loads((tmp_path / run / name).read_text()) for run in ("one", "two"))
        assert one == two and len(one["annotations"]) == 17  # the bundled boxes: 3 + 3 + 3 + 4 + 4 people
    assert multi.stdout.count("posekit track: 5 frames") == 2  # each rank tracked one video


def test_track_realtime_on_the_command_line_says_its_preset_once_and_options_override_it(tmp_path, monkeypatch, capsys):
    """Offline, with the clip's boxes: the preset line once, no flip test, pose propagation; --precision
    fp32 overrides the preset's int8 (which other tests build) and --detector-every its K."""
    from posekit.cli import main
    from posekit.data import VIDEO_SAMPLE_BOXES, VIDEO_SAMPLE_CLIP

    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "cache"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    torch.manual_seed(0)
    weights = tmp_path / "random_res18.pth"
    torch.save(pose_resnet(18).state_dict(), weights)
    tracks, video = tmp_path / "tracks.json", tmp_path / "tracked.mp4"
    code = main(["track", str(VIDEO_SAMPLE_CLIP), "--realtime", "--boxes", str(VIDEO_SAMPLE_BOXES), "--weights",
                 str(weights), "--device", "cpu", "--precision", "fp32", "--detector-every", "3", "--json", str(tracks),
                 "--out", str(video)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    presets = [line for line in printed.err.splitlines() if "realtime preset" in line]
    assert len(presets) == 1
    assert "detector the given boxes" in presets[0] and "at least every 3 frames" in presets[0]
    assert "pose propagation" in presets[0] and "OKS matching" in presets[0]
    assert "fp32 pose network" in presets[0] and "no flip test" in presets[0]
    assert "RAFT" not in printed.err  # the preset needs no flow, so no download is tried
    assert "posekit track: 5 frames" in printed.out and len(json.loads(tracks.read_text())["images"]) == 5
    # The annotated video is encoded with x264's veryfast preset (1 reference frame, subpel quality 2).
    options = re.search(rb"x264 - core .*? options: ([^\x00]*)", video.read_bytes()).group(1).decode().split()
    assert {"ref=1", "subme=2"} <= set(options)
