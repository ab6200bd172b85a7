"""Video in and out with PyAV, and drawing tracked poses."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import av
import numpy as np
import pytest

from posekit.data import VIDEO_SAMPLE_CLIP, VIDEO_SAMPLE_DIR
from posekit.errors import PosekitError
from posekit.io.video import VideoError, VideoSource, VideoWriter
from posekit.viz import draw_tracks, track_colors


def _count_frames(path) -> tuple[int, str]:
    """Frames decoded from a file and its codec, read back independently of posekit."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), stream.codec_context.name


def test_bundled_clip_gives_five_rgb_frames_with_timestamps():
    source = VideoSource(VIDEO_SAMPLE_CLIP)
    frames = list(source)
    assert (source.fps, source.num_frames) == (30.0, 5)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([f.time for f in frames], np.arange(5) / 30)
    assert all(f.rgb.shape == (720, 1280, 3) and f.rgb.dtype == np.uint8 for f in frames)


def test_a_folder_of_frames_reads_like_the_video(recwarn):
    from posekit.io.images import load_image

    frames = list(VideoSource(VIDEO_SAMPLE_DIR, folder_fps=25))
    assert len(frames) == 5 and frames[4].time == pytest.approx(4 / 25)
    np.testing.assert_array_equal(frames[2].rgb, load_image(VIDEO_SAMPLE_DIR / "000002.jpg"))
    # The mp4 and the jpgs are two encodings of the same frames: close, not equal.
    video = list(VideoSource(VIDEO_SAMPLE_CLIP))
    assert np.abs(video[2].rgb.astype(int) - frames[2].rgb).mean() < 12


def test_missing_and_unreadable_sources_are_clear_errors(tmp_path):
    with pytest.raises(VideoError, match="nope.mp4: no such video file or folder"):
        VideoSource(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match="junk.mp4: FFmpeg cannot open it"):
        VideoSource(junk)


def test_writer_round_trip_is_h264_with_every_frame(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (7, 61, 83, 3), dtype=np.uint8)  # odd sizes: padded to even
    path = tmp_path / "out" / "clip.mp4"
    with VideoWriter(path, fps=12) as writer:
        for frame in frames:
            writer.write(frame)
    assert _count_frames(path) == (7, "h264")
    back = list(VideoSource(path))
    assert back[0].rgb.shape == (62, 84, 3) and VideoSource(path).fps == 12
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.mp4"]  # no temporary file left


def test_writer_leaves_nothing_when_the_block_fails(tmp_path):
    path = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, fps=10) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PosekitError, match="frame 1 is 16x32.*one size"):
        with VideoWriter(path, fps=10) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            writer.write(np.zeros((32, 16, 3), np.uint8))
    with pytest.raises(PosekitError, match="no frames were written"):
        with VideoWriter(path, fps=10):
            pass
    assert list(tmp_path.iterdir()) == []


def test_writer_leaves_nothing_when_killed_with_sigterm(tmp_path):
    path = tmp_path / "clip.mp4"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from posekit.io.video import VideoWriter
        with VideoWriter({str(path)!r}, fps=10) as writer:
            for i in range(100000):
                writer.write(np.full((64, 64, 3), i % 255, np.uint8))
                if i == 3:
                    print("writing", flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    assert any(tmp_path.iterdir())  # the temporary file exists while writing
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []


def test_track_colors_are_stable_and_distinct():
    colors = track_colors(np.arange(1, 21))
    np.testing.assert_array_equal(track_colors(np.array([7, 3])), colors[[6, 2]])
    assert len({tuple(c) for c in colors}) == 20
    # Neighbouring ids differ clearly: at least 60 apart in some channel.
    assert np.abs(colors[1:].astype(int) - colors[:-1]).max(1).min() >= 60


def test_draw_tracks_paints_joints_limbs_and_labels_in_place():
    image = np.zeros((200, 300, 3), np.uint8)
    keypoints = np.zeros((1, 17, 3))
    keypoints[0, :, :2] = [150, 100]
    keypoints[0, 5] = [100, 50, 0.9]  # left shoulder
    keypoints[0, 7] = [100, 150, 0.9]  # left elbow: limb 5-7 is a vertical line x = 100
    keypoints[0, 9] = [250, 150, 0.1]  # left wrist, unsure: not drawn, nor limb 7-9
    out = draw_tracks(image, keypoints, np.array([4]), boxes=None)
    assert image.max() == 0  # the input is untouched
    color = track_colors(np.array([4]))[0]
    np.testing.assert_array_equal(out[100, 100], color)  # the limb's middle
    left_blue = np.array([31, 119, 180])  # tab:blue, posekit.viz's colour for left joints
    np.testing.assert_array_equal(out[50, 100], left_blue)
    assert out[150, 250].max() == 0 and out[150, 175].max() == 0  # unsure wrist and its limb
    # The label "4" sits above the highest drawn joint, on a patch of the track colour.
    patch = out[:50, 95:130].reshape(-1, 3)
    assert (patch == color).all(1).sum() > 50


def test_draw_tracks_with_boxes_and_no_people():
    image = np.zeros((100, 100, 3), np.uint8)
    empty = draw_tracks(image, np.zeros((0, 17, 3)), np.zeros(0, np.int64))
    np.testing.assert_array_equal(empty, image)
    out = draw_tracks(image, np.zeros((1, 17, 3)), np.array([2]), boxes=np.array([[10, 20, 50, 60]]))
    np.testing.assert_array_equal(out[50, 10], track_colors(np.array([2]))[0])  # left edge of the box
    np.testing.assert_array_equal(out[50, 35], [0, 0, 0])  # inside stays clear


def test_a_stream_url_is_read_like_a_file(monkeypatch):
    """An HTTP stream served from 127.0.0.1: FFmpeg's own network reading, no internet needed."""
    import http.server
    import io
    import re
    import threading

    data = VIDEO_SAMPLE_CLIP.read_bytes()

    class RangeServer(http.server.SimpleHTTPRequestHandler):
        """Serves the clip with HTTP range requests, which FFmpeg needs to seek in an mp4."""

        def send_head(self):
            wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            start = int(wanted[1]) if wanted else 0
            end = int(wanted[2]) if wanted and wanted[2] else len(data) - 1
            self.send_response(206 if wanted else 200)
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            return io.BytesIO(data[start : end + 1])

        def log_message(self, *args) -> None:
            pass

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)  # FFmpeg honours http_proxy; the server is local
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{VIDEO_SAMPLE_CLIP.name}"
        frames = list(VideoSource(url))
    finally:
        server.shutdown()
        server.server_close()
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(frames[3].rgb, list(VideoSource(VIDEO_SAMPLE_CLIP))[3].rgb)


def test_ctrl_c_stops_tracking_and_keeps_what_was_tracked(tmp_path):
    from posekit.track import PoseTracker, track_video

    class InterruptedCamera(VideoSource):
        """The bundled clip, with Ctrl-C pressed while the third frame is read."""

        def __iter__(self):
            for frame in super().__iter__():
                if frame.index == 2:
                    raise KeyboardInterrupt
                yield frame

    class WholeFramePoses:  # the estimator contract, answered without a network
        def detect(self, images):
            return [(np.array([[0, 0, 100, 100]], np.float32), np.ones(1, np.float32))]

        def keypoints(self, rgb, boxes):
            return np.zeros((len(boxes), 17, 3))

    out = tmp_path / "camera.mp4"
    tracker = PoseTracker(WholeFramePoses(), propagation=None, similarity="iou")
    run = track_video(tracker, InterruptedCamera(VIDEO_SAMPLE_CLIP), out, progress=False)
    assert run.interrupted and len(run.frames) == 2
    assert _count_frames(out) == (2, "h264")


def _x264_settings(path) -> dict[str, str]:
    """The encoder settings libx264 writes into its stream (an SEI text: 'options: ref=3 subme=7 ...')."""
    import re

    options = re.search(rb"x264 - core .*? options: ([^\x00]*)", path.read_bytes()).group(1).decode()
    return dict(item.split("=", 1) for item in options.split() if "=" in item)


def test_the_writer_passes_its_preset_to_x264_and_refuses_one_it_does_not_have(tmp_path):
    if "libx264" not in av.codecs_available:
        pytest.skip("SKIPPED LOUDLY: this PyAV build has no libx264")
    settings = {}
    for preset in ("medium", "veryfast"):
        with VideoWriter(tmp_path / f"{preset}.mp4", 25, preset=preset) as writer:
            for shade in (0, 80, 160):
                writer.write(np.full((48, 64, 3), shade, np.uint8))
        settings[preset] = _x264_settings(tmp_path / f"{preset}.mp4")
        assert VideoSource(tmp_path / f"{preset}.mp4").num_frames == 3
    # x264's documented presets: medium searches 3 reference frames at subpel quality 7, veryfast 1 at 2.
    assert (settings["medium"]["ref"], settings["medium"]["subme"]) == ("3", "7")
    assert (settings["veryfast"]["ref"], settings["veryfast"]["subme"]) == ("1", "2")
    from posekit.errors import ArgumentError

    with pytest.raises(ArgumentError, match="preset='quick': expected one of libx264's ultrafast, superfast"):
        VideoWriter(tmp_path / "x.mp4", 25, preset="quick")
    assert not (tmp_path / "x.mp4").exists()
