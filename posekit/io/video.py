"""Video in and out: frames from files, folders, webcams and streams; annotated H.264 mp4s.

Reading and writing go through PyAV (the ``av`` wheel bundles FFmpeg, so nothing is installed
system-wide). Frames come out as RGB uint8 arrays with their index and timestamp. An annotated
video is written to a hidden temporary file beside the target and renamed onto it only once
complete (:func:`posekit.io.files.atomic_write`), so a crash, Ctrl-C or SIGTERM never leaves a
truncated mp4 that a player would half-open.

Drawing is numpy: limbs and joints are rasterised as one batch of stamped discs per image; only
the id labels (text) go through PIL, one call per person.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import warnings
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from posekit.errors import ArgumentError, PosekitError
from posekit.io.files import atomic_write, signals_raise

if TYPE_CHECKING:
    import av

# Frames of a folder carry no timestamps; this rate gives them one (PoseTrack's videos are 25-30 fps).
FOLDER_FPS = 30.0
# Seconds a network stream or camera may stay silent (while opening, then between reads) before it is given up.
STREAM_TIMEOUT_SECONDS = 15.0
# Timestamps of written frames count in this unit: fine enough for any phone's variable rate, and
# within MPEG-4 Part 2's limit of 65535 for the denominator.
TIME_BASE = 60000
# The longest side libx264 encodes.
MAX_SIDE = 16384
# H.264 encoders in order of preference; MPEG-4 Part 2 is the last resort every FFmpeg build has.
H264_ENCODERS = ("libx264", "libopenh264")
# libx264's presets, fastest first.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
FALLBACK_ENCODER = "mpeg4"
_WEBCAM_FORMATS = {"linux": "v4l2", "darwin": "avfoundation"}


class VideoError(PosekitError, OSError):
    """A video, frame folder or camera cannot be opened or decoded."""


@dataclasses.dataclass
class Frame:
    """One decoded frame.

    Attributes:
        index: position in the video, from 0.
        time: presentation time in seconds from the start of the stream.
        rgb: the picture, shape (H, W, 3) uint8 RGB.
    """

    index: int
    time: float
    rgb: np.ndarray


class VideoSource:
    """Frames of a video file, a folder of images, a webcam or a network stream, read lazily.

    Args:
        source: a video file; a folder of images (sorted by name, timestamps at ``folder_fps``);
            a webcam index such as ``0`` or ``"0"`` (``/dev/video0`` with v4l2 on Linux,
            AVFoundation on macOS); or a URL (``rtsp://``, ``http://`` ...).
        folder_fps: frame rate given to the frames of a folder.
        timeout: seconds a stream or camera may stay silent, opening or between reads, before
            a :class:`VideoError` says so (a server that accepts and never answers).

    A video whose display matrix says it is rotated (phones filming upright) gives its frames
    upright, as still images honour their EXIF orientation, with a warning saying so. Frames
    that cannot be decoded are skipped, and a file that ends before the frames its header
    declares (a truncated download) is read up to its end; both are counted in a warning.

    Attributes:
        fps: frames per second (the stream's average rate, or ``folder_fps``).
        num_frames: number of frames when known in advance, else None (cameras, streams, some files).
        file_names: for a folder, the names of its frames in order; else None.

    Raises:
        VideoError: the source does not exist or FFmpeg cannot open it.

    Example:
        >>> for frame in VideoSource("clip.mp4"):
        ...     print(frame.index, frame.time, frame.rgb.shape)
    """

    def __init__(self, source: str | os.PathLike | int, folder_fps: float = FOLDER_FPS,
                 timeout: float = STREAM_TIMEOUT_SECONDS) -> None:
        if isinstance(source, bool) or not isinstance(source, (str, os.PathLike, int)):
            raise ArgumentError(f"source={source!r}: expected a video file, a folder of frames, a webcam index or a URL")
        self.name = str(source)
        self.timeout = _positive_seconds("timeout", timeout)
        self._images: list[Path] | None = None
        if Path(self.name).is_dir():
            from posekit.io.images import find_images

            self._images = find_images([self.name])
            self.fps, self.num_frames = _positive_seconds("folder_fps", folder_fps), len(self._images)
            self.file_names = [path.name for path in self._images]
            return
        self.file_names = None
        container = self._open()
        with container:
            stream = container.streams.video[0]
            self.fps = _stream_fps(self.name, stream)
            self.num_frames = stream.frames or None

    def _open(self) -> av.container.InputContainer:
        import av

        webcam = self.name.isdigit()
        if not webcam and "://" not in self.name and not Path(self.name).is_file():
            raise VideoError(f"{self.name}: no such video file or folder; expected a video, a folder of frames, "
                             "a webcam index such as 0, or a stream URL")
        if not webcam and "://" not in self.name and os.stat(self.name).st_size == 0:
            raise VideoError(f"{self.name}: is empty (0 bytes); expected a video")
        began = time.monotonic()
        try:
            if webcam:
                return _open_webcam(int(self.name), self.timeout)
            container = av.open(self.name, timeout=self.timeout)
        except av.FFmpegError as error:
            if "://" not in self.name:
                raise VideoError(f"{self.name}: FFmpeg cannot open it ({error.strerror}); expected a video FFmpeg "
                                 "can read") from None
            # The timeout ends a silent server's wait through FFmpeg's interrupt callback (ExitError),
            # or, for RTSP, as a reply that never came (invalid data) at the deadline.
            if isinstance(error, av.ExitError) or time.monotonic() - began >= self.timeout:
                raise VideoError(f"{self.name}: no answer within {self.timeout:g} s; expected a server that "
                                 "streams video (check the URL and that the stream is running)") from None
            raise VideoError(f"{self.name}: cannot open the stream ({error.strerror}); check the URL and that "
                             "the server is running") from None
        if not container.streams.video:
            container.close()
            raise VideoError(f"{self.name}: has no video stream; expected a video")
        return container

    def __iter__(self) -> Iterator[Frame]:
        if self._images is not None:
            yield from self._folder_frames()
            return
        import av

        with self._open() as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame-parallel decoding: decoding stays off the critical path
            index = skipped = 0
            stopped = None
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as error:  # the container itself is unreadable from here on
                    stopped = error
                    break
                try:
                    decoded_frames = packet.decode()
                except av.FFmpegError:  # one corrupt packet: its frame is lost, the next keyframe recovers
                    skipped += 1
                    continue
                for decoded in decoded_frames:
                    if index == 0 and decoded.rotation:
                        warnings.warn(f"{self.name}: its display matrix rotates it by {decoded.rotation} degrees; "
                                      "the frames are turned upright as shown by players", stacklevel=2)
                    time = decoded.time if decoded.time is not None and np.isfinite(decoded.time) else index / self.fps
                    yield Frame(index, float(time), _upright(decoded.to_ndarray(format="rgb24"), decoded.rotation))
                    index += 1
            self._report_losses(index, skipped, stopped)

    def _folder_frames(self) -> Iterator[Frame]:
        from posekit.io.images import load_image

        size = None
        for index, path in enumerate(self._images):
            rgb = load_image(path)
            if size is not None and rgb.shape[:2] != size:
                raise VideoError(f"{path}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, the folder's first frame "
                                 f"{size[1]}x{size[0]}; expected the frames of one video, all of one size")
            size = rgb.shape[:2]
            yield Frame(index, index / self.fps, rgb)

    def _report_losses(self, decoded: int, skipped: int, stopped: BaseException | None) -> None:
        """One warning for frames a damaged or truncated file did not give: never a short video in silence."""
        lost = []
        if skipped:
            lost.append(f"{skipped} packet(s) could not be decoded and were skipped")
        if stopped is not None:
            lost.append(f"reading stopped after frame {decoded} ({stopped})")
        if self.num_frames and decoded < self.num_frames:
            lost.append(f"{decoded} of the {self.num_frames} frames its header declares were readable (truncated?)")
        if lost:
            warnings.warn(f"{self.name}: {'; '.join(lost)}", stacklevel=3)


def _positive_seconds(name: str, value: object) -> float:
    """``value`` as a finite positive float (a rate or a duration), else an ArgumentError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0 < value < np.inf:
        raise ArgumentError(f"{name}={value!r}: expected a finite number above 0")
    return float(value)


def _stream_fps(name: str, stream: av.video.stream.VideoStream) -> float:
    """The stream's frame rate: its average, else FFmpeg's guess, else FOLDER_FPS with a warning
    (a header may declare 0, a negative or an infinite rate; only timestamps depend on it)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and 0 < float(rate) < np.inf:
            return float(rate)
    warnings.warn(f"{name}: declares no usable frame rate; {FOLDER_FPS:g} fps is assumed where a frame has no "
                  "timestamp", stacklevel=3)
    return FOLDER_FPS


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """A frame as players show it. ``rotation``: degrees counterclockwise from the display matrix.
    Shape: (H, W, 3) -> (H, W, 3), or (W, H, 3) for a quarter turn."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _open_webcam(index: int, timeout: float) -> av.container.InputContainer:
    import av

    if sys.platform not in _WEBCAM_FORMATS:
        raise VideoError(f"webcam {index}: cameras are read on Linux (v4l2) and macOS only; pass a video file instead")
    device = f"/dev/video{index}" if sys.platform == "linux" else str(index)
    if sys.platform == "linux" and not os.path.exists(device):
        raise VideoError(f"webcam {index}: there is no {device}; check that a camera is connected, or pass "
                         "a video file or stream URL")
    try:
        return av.open(device, format=_WEBCAM_FORMATS[sys.platform], timeout=timeout)
    except (av.FFmpegError, OSError) as error:
        raise VideoError(f"webcam {index} ({device}) cannot be opened ({error}); check that a camera is connected") from None


def video_encoder() -> str:
    """The FFmpeg encoder annotated videos use: the first H.264 encoder of this PyAV build, else MPEG-4 Part 2."""
    import av

    for name in (*H264_ENCODERS, FALLBACK_ENCODER):
        try:
            av.Codec(name, "w")
        except av.FFmpegError:
            continue
        return name
    raise VideoError(f"this PyAV build has none of the encoders {', '.join((*H264_ENCODERS, FALLBACK_ENCODER))}")


class VideoWriter:
    """Write RGB frames to an mp4, whole or not at all.

    H.264 (``yuv420p``, plays everywhere) when the bundled FFmpeg has an H.264 encoder, else
    MPEG-4 Part 2 with a warning. Odd frame sizes are padded by one black row/column, as 4:2:0
    chroma needs even sizes (a warning says so). Each frame keeps the timestamp it is given, so a
    variable-frame-rate source (phones) stays in sync; without one, frames follow at ``fps``. The frames go to a hidden temporary file renamed onto ``path`` when
    the ``with`` block ends without error; on an exception, Ctrl-C or (in the main thread) SIGTERM
    the temporary file is deleted and ``path`` is untouched.

    Args:
        path: the ``.mp4`` to write.
        fps: frame rate of frames written without a timestamp (and the rate players are told).
        crf: H.264 quality (lower is better and bigger; 23 is x264's default).
        preset: libx264's speed against file size at that quality, from :data:`X264_PRESETS`
            (``"medium"`` is x264's default; real-time runs take ``"veryfast"``, as live-streaming
            encoders do: about 0.6x the time for 1.5x the bytes).

    Example:
        >>> with VideoWriter("out.mp4", fps=30) as writer:
        ...     for frame in VideoSource("clip.mp4"):
        ...         writer.write(frame.rgb)
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 23, preset: str = "medium") -> None:
        if preset not in X264_PRESETS:
            raise ArgumentError(f"preset={preset!r}: expected one of libx264's {', '.join(X264_PRESETS)}")
        self.path, self.fps, self.crf, self.preset = Path(path), _positive_seconds("fps", fps), crf, preset
        self.encoder = video_encoder()
        self.frames_written = 0
        self._last_pts = -1
        self._stack = contextlib.ExitStack()
        self._container = self._stream = None

    def __enter__(self) -> VideoWriter:
        import av

        if self.encoder not in H264_ENCODERS:
            warnings.warn(f"{self.path}: this PyAV build has no H.264 encoder; writing MPEG-4 Part 2 instead", stacklevel=2)
        with self._stack:
            file = self._stack.enter_context(atomic_write(self.path))
            # SIGTERM exits with the shell's code for it, after the temporary file is gone.
            self._stack.enter_context(signals_raise(lambda signum: SystemExit(128 + signum)))
            self._container = av.open(file, "w", format="mp4")
            self._stack = self._stack.pop_all()
        return self

    def write(self, rgb: np.ndarray, time: float | None = None) -> None:
        """Append one frame shown at ``time`` seconds (default: ``frames_written / fps``).

        Shape: rgb (H, W, 3) uint8; every frame must have the first frame's size. A time not after
        the previous frame's is moved just after it (timestamps must increase).
        """
        import av

        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
            raise ArgumentError(f"{self.path}: frames must be (H, W, 3) uint8 RGB with H, W >= 1, "
                                f"got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[0] + rgb.shape[0] % 2, rgb.shape[1] + rgb.shape[1] % 2
        if self._stream is None:
            self._add_stream(width, height, rgb.shape[1], rgb.shape[0])
        elif (height, width) != (self._stream.height, self._stream.width):
            raise PosekitError(
                f"{self.path}: frame {self.frames_written} is {rgb.shape[1]}x{rgb.shape[0]}, the video "
                f"{self._stream.width}x{self._stream.height}; expected frames of one size"
            )
        if (height, width) != rgb.shape[:2]:
            rgb = np.pad(rgb, ((0, height - rgb.shape[0]), (0, width - rgb.shape[1]), (0, 0)))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        seconds = self.frames_written / self.fps if time is None else float(time)
        if not np.isfinite(seconds):
            raise ArgumentError(f"{self.path}: frame {self.frames_written} has time {time!r}; expected seconds")
        self._last_pts = frame.pts = max(round(seconds * TIME_BASE), self._last_pts + 1)
        frame.time_base = Fraction(1, TIME_BASE)
        try:
            self._container.mux(self._stream.encode(frame))
        except av.FFmpegError as error:
            raise VideoError(f"{self.path}: {self.encoder} failed on frame {self.frames_written} ({error})") from None
        self.frames_written += 1

    def _add_stream(self, width: int, height: int, source_width: int, source_height: int) -> None:
        """The video stream, sized by the first frame (even sides); an encoder refusing the size says so now."""
        import av

        if (width, height) != (source_width, source_height):
            warnings.warn(f"{self.path}: frames of {source_width}x{source_height} are padded to {width}x{height} with "
                          "black (H.264's 4:2:0 colour needs even sides)", stacklevel=3)
        self._stream = self._container.add_stream(self.encoder, rate=_fraction(self.fps))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.codec_context.time_base = Fraction(1, TIME_BASE)
        if self.encoder == "libx264":
            self._stream.options = {"crf": str(self.crf), "preset": self.preset}
        try:
            self._stream.codec_context.open()
        except av.FFmpegError as error:
            raise VideoError(f"{self.path}: {self.encoder} cannot encode frames of {width}x{height} ({error}); "
                             f"expected sides of at most {MAX_SIDE} pixels") from None

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                if self._stream is None:
                    raise PosekitError(f"{self.path}: no frames were written; expected at least one")
                self._container.mux(self._stream.encode(None))  # flush the frames the encoder holds back
            self._container.close()
        except BaseException as failure:
            # The temporary file goes, and this failure (not a rename) reaches the caller.
            if not self._stack.__exit__(type(failure), failure, failure.__traceback__):
                raise
        else:
            # Renames onto path when the block succeeded; deletes the temporary file otherwise.
            self._stack.__exit__(kind, error, traceback)


def _fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)
