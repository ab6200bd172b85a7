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
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from posekit.errors import PosekitError
from posekit.io.files import atomic_write, signals_raise

if TYPE_CHECKING:
    import av

# Frames of a folder carry no timestamps; this rate gives them one (PoseTrack's videos are 25-30 fps).
FOLDER_FPS = 30.0
# H.264 encoders in order of preference; MPEG-4 Part 2 is the last resort every FFmpeg build has.
H264_ENCODERS = ("libx264", "libopenh264")
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

    def __init__(self, source: str | os.PathLike | int, folder_fps: float = FOLDER_FPS) -> None:
        self.name = str(source)
        self._images: list[Path] | None = None
        if Path(self.name).is_dir():
            from posekit.io.images import find_images

            self._images = find_images([self.name])
            self.fps, self.num_frames = float(folder_fps), len(self._images)
            self.file_names = [path.name for path in self._images]
            return
        self.file_names = None
        container = self._open()
        with container:
            stream = container.streams.video[0]
            self.fps = float(stream.average_rate or stream.guessed_rate or FOLDER_FPS)
            self.num_frames = stream.frames or None

    def _open(self) -> av.container.InputContainer:
        import av

        webcam = self.name.isdigit()
        if not webcam and "://" not in self.name and not Path(self.name).is_file():
            raise VideoError(f"{self.name}: no such video file or folder; expected a video, a folder of frames, "
                             "a webcam index such as 0, or a stream URL")
        try:
            if webcam:
                return _open_webcam(int(self.name))
            container = av.open(self.name)
        except av.FFmpegError as error:
            raise VideoError(f"{self.name}: FFmpeg cannot open it ({error}); expected a video FFmpeg can read") from None
        if not container.streams.video:
            container.close()
            raise VideoError(f"{self.name}: has no video stream; expected a video")
        return container

    def __iter__(self) -> Iterator[Frame]:
        if self._images is not None:
            from posekit.io.images import load_image

            for index, path in enumerate(self._images):
                yield Frame(index, index / self.fps, load_image(path))
            return
        import av

        with self._open() as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame-parallel decoding: decoding stays off the critical path
            try:
                for index, decoded in enumerate(container.decode(stream)):
                    time = decoded.time if decoded.time is not None else index / self.fps
                    yield Frame(index, float(time), decoded.to_ndarray(format="rgb24"))
            except av.FFmpegError as error:
                raise VideoError(f"{self.name}: decoding failed ({error}); the file may be truncated") from None


def _open_webcam(index: int) -> av.container.InputContainer:
    import av

    if sys.platform not in _WEBCAM_FORMATS:
        raise VideoError(f"webcam {index}: cameras are read on Linux (v4l2) and macOS only; pass a video file instead")
    device = f"/dev/video{index}" if sys.platform == "linux" else str(index)
    try:
        return av.open(device, format=_WEBCAM_FORMATS[sys.platform])
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
    chroma needs even sizes. The frames go to a hidden temporary file renamed onto ``path`` when
    the ``with`` block ends without error; on an exception, Ctrl-C or (in the main thread) SIGTERM
    the temporary file is deleted and ``path`` is untouched.

    Args:
        path: the ``.mp4`` to write.
        fps: frame rate.
        crf: H.264 quality (lower is better and bigger; 23 is x264's default).

    Example:
        >>> with VideoWriter("out.mp4", fps=30) as writer:
        ...     for frame in VideoSource("clip.mp4"):
        ...         writer.write(frame.rgb)
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 23) -> None:
        if not fps > 0:
            raise PosekitError(f"{path}: fps must be positive, got {fps}")
        self.path, self.fps, self.crf = Path(path), fps, crf
        self.encoder = video_encoder()
        self.frames_written = 0
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

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame. Shape: rgb (H, W, 3) uint8; every frame must have the first frame's size."""
        import av

        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise PosekitError(f"{self.path}: frames must be (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[0] + rgb.shape[0] % 2, rgb.shape[1] + rgb.shape[1] % 2
        if self._stream is None:
            self._stream = self._container.add_stream(self.encoder, rate=_fraction(self.fps))
            self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
            if self.encoder == "libx264":
                self._stream.options = {"crf": str(self.crf)}
        elif (height, width) != (self._stream.height, self._stream.width):
            raise PosekitError(
                f"{self.path}: frame {self.frames_written} is {rgb.shape[1]}x{rgb.shape[0]}, the video "
                f"{self._stream.width}x{self._stream.height}; expected frames of one size"
            )
        if (height, width) != rgb.shape[:2]:
            rgb = np.pad(rgb, ((0, height - rgb.shape[0]), (0, width - rgb.shape[1]), (0, 0)))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

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


def _fraction(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
