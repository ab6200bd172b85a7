"""Hostile video inputs, live sources and Python API arguments, each built for real.

Videos are made here with PyAV (not with posekit's writer), servers listen on 127.0.0.1 in a
thread, and every failure must be a :class:`PosekitError` with a message naming the input, or a
warning that counts what was lost: never a traceback, a hang, or a short video in silence.
"""
from __future__ import annotations

import socket
import threading
import time
import warnings
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from posekit.errors import ArgumentError, DownloadError, PosekitError
from posekit.io.video import VideoError, VideoSource, VideoWriter
from posekit.track import PoseTracker, track_video


def numbered_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames whose grey level tells their number (5 levels apart survive H.264), shape (count, H, W, 3)."""
    return np.repeat((np.arange(count) * 5 % 250 + 2).astype(np.uint8), height * width * 3).reshape(count, height, width, 3)


def make_video(path: Path, frames, fps: int = 25, codec: str = "libx264", pix_fmt: str = "yuv420p",
               times=None, rotation: int | None = None, options: dict | None = None, source_format: str = "rgb24") -> Path:
    """Encode ``frames`` with PyAV alone; ``times`` (seconds) give each frame its timestamp."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = np.asarray(frames[0]).shape[:2] if len(frames) else (48, 64)
        stream.pix_fmt = pix_fmt
        if codec == "libx264":
            stream.options = {"bframes": "0"}  # one packet per frame in order: cutting the file cuts frames
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for number, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=source_format)
            if times is not None:
                frame.pts, frame.time_base = round(times[number] * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


class WholeFramePoses:
    """The estimator contract without a network: one person, the whole frame, with no sure joint."""

    def detect(self, images):
        return [(np.array([[0, 0, 16, 16]], np.float32), np.ones(1, np.float32))]

    def keypoints(self, rgb, boxes):
        return np.zeros((len(boxes), 17, 3))


def frame_tracker() -> PoseTracker:
    return PoseTracker(WholeFramePoses(), propagation=None, similarity="iou")


# ------------------------------------------------------------------------------------------
# Video files
# ------------------------------------------------------------------------------------------


def test_zero_byte_and_non_video_files_named_mp4_are_video_errors_naming_them(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty.mp4: is empty \(0 bytes\); expected a video"):
        VideoSource(tmp_path / "empty.mp4")
    (tmp_path / "notes.mp4").write_text("meeting notes, not a video\n" * 50)
    with pytest.raises(VideoError, match="notes.mp4: FFmpeg cannot open it .*expected a video"):
        VideoSource(tmp_path / "notes.mp4")
    # An mp4 cut before its index (moov at the end, as written by default) cannot be opened at all.
    whole = make_video(tmp_path / "whole.mp4", numbered_frames(10))
    (tmp_path / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(VideoError, match="cut.mp4: FFmpeg cannot open it"):
        VideoSource(tmp_path / "cut.mp4")


def test_a_file_with_only_audio_is_a_video_error(tmp_path):
    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for _ in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 44100
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoError, match="voice.mp4: has no video stream; expected a video"):
        VideoSource(path)


def mjpeg_with_zeroed_packets(folder: Path, count: int, zeroed) -> Path:
    """A Motion JPEG mp4 (each packet one picture) whose packets ``zeroed`` are overwritten with zeros."""
    path = make_video(folder / "clip.mp4", numbered_frames(count), codec="mjpeg", pix_fmt="yuvj420p")
    data = bytearray(path.read_bytes())
    with av.open(str(path)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    for position, size in (packets[i] for i in zeroed):
        data[position : position + size] = bytes(size)  # no JPEG markers at all
    damaged = folder / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    path.unlink()
    return damaged


def test_zero_frames_fail_the_run_naming_the_video_and_write_no_mp4(tmp_path):
    empty = tmp_path / "empty.mkv"
    with av.open(str(empty), "w") as container:  # a video track, and not one frame in it
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoError, match="empty.mkv: FFmpeg cannot open it"):
        VideoSource(empty)
    # Every frame there, none decodable: the count is said, and tracking refuses to report success.
    damaged = mjpeg_with_zeroed_packets(tmp_path, 4, range(4))
    out = tmp_path / "out.mp4"
    with pytest.warns(UserWarning, match="4 packet"), pytest.raises(VideoError, match="damaged.mp4: no frame could be read"):
        track_video(frame_tracker(), damaged, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.mp4", "empty.mkv"]


def test_a_truncated_download_is_read_to_its_end_with_a_warning_counting_the_frames(tmp_path):
    # The index first (faststart, as streamed files are), so the header declares 30 frames; the
    # file is cut where the 10th frame's data begins: 9 frames are whole.
    whole = make_video(tmp_path / "whole.mp4", numbered_frames(30), options={"movflags": "faststart"})
    with av.open(str(whole)) as container:
        positions = [packet.pos for packet in container.demux(video=0) if packet.size]
    cut = tmp_path / "download.mp4"
    cut.write_bytes(whole.read_bytes()[: positions[9]])
    source = VideoSource(cut)
    assert source.num_frames == 30
    with pytest.warns(UserWarning, match=r"download.mp4: .*9 of the 30 frames its header declares were readable"):
        frames = list(source)
    assert [f.index for f in frames] == list(range(9))
    levels = [int(np.median(f.rgb)) for f in frames]
    assert levels == pytest.approx(list(numbered_frames(9)[:, 0, 0, 0]), abs=2)  # the first 9, in order


def test_corrupt_packets_mid_stream_are_skipped_with_a_warning_and_the_rest_is_read(tmp_path):
    damaged = mjpeg_with_zeroed_packets(tmp_path, 12, [5, 6])
    with pytest.warns(UserWarning, match=r"damaged.mp4: 2 packet\(s\) could not be decoded and were skipped"):
        frames = list(VideoSource(damaged))
    assert [f.index for f in frames] == list(range(10))
    levels = [int(np.median(f.rgb)) for f in frames]
    expected = np.delete(numbered_frames(12)[:, 0, 0, 0], [5, 6])
    assert levels == pytest.approx(list(expected), abs=3)


def test_a_rotated_phone_video_is_read_upright_like_a_photo_with_exif_orientation(tmp_path):
    from posekit.io.images import load_image

    picture = np.full((48, 64, 3), 20, np.uint8)
    picture[:12, :16] = 235  # a bright corner, top left as stored
    path = make_video(tmp_path / "phone.mp4", [picture] * 3, rotation=90)  # shown turned 90 degrees counterclockwise
    photo = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 8  # EXIF orientation 8: turn 90 degrees counterclockwise to view
    Image.fromarray(picture).save(photo, exif=exif, quality=95)
    with pytest.warns(UserWarning, match="phone.mp4: its display matrix rotates it by 90 degrees; the frames are turned upright"):
        frames = list(VideoSource(path))
    upright = load_image(photo)
    assert frames[0].rgb.shape == upright.shape == (64, 48, 3)
    assert np.abs(frames[0].rgb.astype(int) - upright).mean() < 3
    assert frames[0].rgb[-6, 6].min() > 200 and frames[0].rgb[6, 6].max() < 60  # the corner went bottom left


@pytest.mark.parametrize("codec, pix_fmt, suffix", [("libx264", "yuv420p10le", "mp4"), ("png", "rgba", "mov")])
def test_ten_bit_and_alpha_videos_give_8_bit_rgb_frames(tmp_path, codec, pix_fmt, suffix):
    frames = numbered_frames(4)
    source_format = "rgb24"
    if pix_fmt == "rgba":
        frames = np.concatenate([frames, np.full(frames.shape[:3] + (1,), 128, np.uint8)], axis=3)
        source_format = "rgba"
    path = make_video(tmp_path / f"deep.{suffix}", frames, codec=codec, pix_fmt=pix_fmt, source_format=source_format)
    back = list(VideoSource(path))
    assert len(back) == 4 and all(f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8 for f in back)
    assert [int(np.median(f.rgb)) for f in back] == pytest.approx(list(numbered_frames(4)[:, 0, 0, 0]), abs=2)


def test_tiny_and_odd_sizes_are_written_padded_with_a_warning_and_read_back(tmp_path):
    for height, width in ((1, 1), (3, 5), (2, 2)):
        path = tmp_path / f"tiny{height}x{width}.mp4"
        padded = (height + height % 2, width + width % 2)
        context = pytest.warns(UserWarning, match=f"frames of {width}x{height} are padded to {padded[1]}x{padded[0]}") \
            if padded != (height, width) else warnings.catch_warnings()
        with context, VideoWriter(path, fps=10) as writer:
            if padded == (height, width):
                warnings.simplefilter("error")  # even sizes: nothing to say
            for _ in range(3):
                writer.write(np.full((height, width, 3), 200, np.uint8))
        back = list(VideoSource(path))
        assert len(back) == 3 and back[0].rgb.shape == (*padded, 3)


def test_variable_frame_rate_timestamps_survive_tracking_into_the_output(tmp_path):
    times = [0.0, 0.04, 0.08, 0.5, 0.54, 1.7, 1.74, 3.0]  # a phone: bursts and pauses
    source = make_video(tmp_path / "phone.mp4", numbered_frames(len(times)), times=times)
    out = tmp_path / "tracked.mp4"
    run = track_video(frame_tracker(), source, out, progress=False)
    assert [f.time for f in run.frames] == pytest.approx(times, abs=1e-3)
    with av.open(str(out)) as container:
        written = [frame.time for frame in container.decode(video=0)]
    assert written == pytest.approx(times, abs=1e-3)  # not 8 frames at a constant rate


# ------------------------------------------------------------------------------------------
# Frame folders
# ------------------------------------------------------------------------------------------


def test_a_frame_folder_sorts_numbers_by_value_and_skips_hidden_and_other_files_with_one_warning(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    colours = {}
    for number in (1, 2, 10, 11, 100):
        colours[number] = number % 200 + 20
        Image.fromarray(np.full((24, 32, 3), colours[number], np.uint8)).save(folder / f"{number}.png")
    (folder / "._1.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # what macOS leaves on USB sticks
    (folder / ".hidden.png").write_bytes(b"not a frame")
    (folder / "notes.txt").write_text("shot on a phone")
    with pytest.warns(UserWarning) as caught:
        source = VideoSource(folder)
        frames = list(source)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 3 file(s)" in message and all(name in message for name in ("._1.png", ".hidden.png", "notes.txt"))
    assert source.file_names == ["1.png", "2.png", "10.png", "11.png", "100.png"]
    assert [int(f.rgb[0, 0, 0]) for f in frames] == [colours[n] for n in (1, 2, 10, 11, 100)]


def test_a_frame_folder_of_mixed_sizes_stops_at_the_odd_frame_naming_it(tmp_path):
    for number, size in enumerate([(32, 24), (32, 24), (40, 30)]):
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(tmp_path / f"{number:03d}.png")
    frames = iter(VideoSource(tmp_path))
    assert next(frames).rgb.shape == next(frames).rgb.shape == (24, 32, 3)
    with pytest.raises(VideoError, match=r"002.png: frame 2 is 40x30, the folder's first frame 32x24; expected .* one size"):
        next(frames)


# ------------------------------------------------------------------------------------------
# Live sources
# ------------------------------------------------------------------------------------------


@pytest.fixture()
def silent_server():
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for connection in held:
        connection.close()


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@pytest.fixture()
def no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_a_server_that_accepts_and_never_answers_is_given_up_after_the_timeout(silent_server, no_proxy, scheme):
    url = f"{scheme}://127.0.0.1:{silent_server}/live"
    began = time.monotonic()
    with pytest.raises(VideoError, match=f"{url}: no answer within 1 s; expected a server that streams video"):
        VideoSource(url, timeout=1)
    assert time.monotonic() - began < 10


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_a_stream_url_to_a_closed_port_is_one_clear_error(no_proxy, scheme):
    url = f"{scheme}://127.0.0.1:{closed_port()}/live"
    with pytest.raises(VideoError, match=f"{url}: cannot open the stream \\(Connection refused\\); check the URL"):
        VideoSource(url, timeout=5)


def test_a_webcam_index_that_does_not_exist_is_one_clear_error():
    with pytest.raises(VideoError, match="webcam 97: there is no /dev/video97; check that a camera is connected"):
        VideoSource(97)


def test_a_google_drive_download_through_a_silent_proxy_ends_at_the_timeout(silent_server, tmp_path, monkeypatch):
    from posekit.io import hub

    monkeypatch.setattr(hub, "TIMEOUT_SECONDS", 1)
    monkeypatch.setenv("HOME", str(tmp_path))  # gdown keeps cookies under ~/.cache
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{silent_server}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    began = time.monotonic()
    with pytest.raises(DownloadError, match="could not download Google Drive file abc123"):
        hub.download_gdrive("abc123", tmp_path / "weights.pth", progress=False)
    assert time.monotonic() - began < 20
    assert not (tmp_path / "weights.pth").exists()


# ------------------------------------------------------------------------------------------
# Python API arguments
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [float("inf"), float("nan"), "30", 0, -25, None, True])
def test_video_writer_fps_that_is_no_positive_number_is_an_argument_error(tmp_path, fps):
    with pytest.raises(ArgumentError, match=f"fps={fps!r}: expected a finite number above 0"):
        VideoWriter(tmp_path / "out.mp4", fps=fps)


@pytest.mark.parametrize("shape, message", [((0, 0, 3), "H, W >= 1"), ((2, 70000, 3), "cannot encode frames of 70000x2")])
def test_video_writer_frames_no_encoder_takes_are_posekit_errors_and_leave_nothing(tmp_path, shape, message):
    with pytest.raises(PosekitError, match=message):
        with VideoWriter(tmp_path / "out.mp4", fps=10) as writer:
            writer.write(np.zeros(shape, np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("folder_fps", [0, -30, float("inf"), "25"])
def test_video_source_folder_fps_that_is_no_positive_number_is_an_argument_error(folder_fps):
    from posekit.data import VIDEO_SAMPLE_DIR

    with pytest.raises(ArgumentError, match="folder_fps=.*expected a finite number above 0"):
        VideoSource(VIDEO_SAMPLE_DIR, folder_fps=folder_fps)


@pytest.mark.parametrize("argument, value", [("detector_every", "2"), ("detector_every", 1.5), ("detector_every", None),
                                             ("detector_every", True), ("max_age", "1"), ("max_age", [1])])
def test_pose_tracker_numbers_of_the_wrong_type_are_argument_errors(argument, value):
    with pytest.raises(ArgumentError, match=f"{argument}=.*expected a whole number"):
        PoseTracker(WholeFramePoses(), propagation="pose", similarity="iou", **{argument: value})


def test_pose_tracker_sigmas_and_frames_of_the_wrong_kind_are_argument_errors():
    with pytest.raises(ArgumentError, match="sigmas=.*expected one positive OKS falloff per joint"):
        PoseTracker(WholeFramePoses(), propagation=None, similarity="oks", sigmas="wide")
    tracker = PoseTracker(WholeFramePoses(), propagation=None, similarity="oks", sigmas=[0.05] * 5)
    with pytest.raises(ArgumentError, match="sigmas has 5 values, the poses 17 joints"):
        tracker.update(np.zeros((16, 16, 3), np.uint8))
    tracker = frame_tracker()
    for frame, described in [(np.zeros((16, 16), np.uint8), "uint8 array of shape \\(16, 16\\)"), (None, "NoneType"),
                             (np.zeros((16, 16, 3)), "float64 array")]:
        with pytest.raises(ArgumentError, match=f"a frame must be an \\(H, W, 3\\) uint8 RGB array, got a {described}"):
            tracker.update(frame)
    assert all(issubclass(error, PosekitError) for error in (ArgumentError, VideoError))


@pytest.mark.parametrize("max_frames", [0, -1, 2.5, "3"])
def test_track_video_max_frames_out_of_range_is_an_argument_error(max_frames):
    from posekit.data import VIDEO_SAMPLE_CLIP

    with pytest.raises(ArgumentError, match="max_frames="):
        track_video(frame_tracker(), VIDEO_SAMPLE_CLIP, max_frames=max_frames, progress=False)


def test_track_video_with_a_huge_max_frames_tracks_the_whole_video():
    from posekit.data import VIDEO_SAMPLE_CLIP

    run = track_video(frame_tracker(), VIDEO_SAMPLE_CLIP, max_frames=10**30, progress=False)
    assert len(run.frames) == 5


# ------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------


def test_frames_held_while_tracking_a_long_video_do_not_grow_with_its_length(tmp_path):
    """Every picture handed to the estimator is watched through a weak reference: at any moment
    only a few may be alive (the current one, the tracker's previous one, the decoder's, those
    queued for the writer thread), however many frames the video has."""
    from posekit.io.live import WRITE_BEHIND

    path = make_video(tmp_path / "long.mp4", numbered_frames(200, 16, 16))
    alive: list[weakref.ref] = []
    most = 0

    class WatchingPoses(WholeFramePoses):
        def keypoints(self, rgb, boxes):
            nonlocal most
            alive.append(weakref.ref(rgb))
            alive[:] = [ref for ref in alive if ref() is not None]
            most = max(most, len(alive))
            return super().keypoints(rgb, boxes)

    run = track_video(PoseTracker(WatchingPoses(), propagation=None, similarity="iou"), path, tmp_path / "out.mp4",
                      progress=False)
    assert len(run.frames) == 200
    assert most <= 3 + WRITE_BEHIND
