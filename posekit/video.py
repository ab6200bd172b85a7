"""Video in and out: frames from files, folders, webcams and streams; annotated H.264 mp4s.

Reading and writing go through PyAV (the ``av`` wheel bundles FFmpeg, so nothing is installed
system-wide). Frames come out as RGB uint8 arrays with their index and timestamp. An annotated
video is written to a hidden temporary file beside the target and renamed onto it only once
complete (:func:`posekit.files.atomic_write`), so a crash, Ctrl-C or SIGTERM never leaves a
truncated mp4 that a player would half-open.

Drawing is numpy: limbs and joints are rasterised as one batch of stamped discs per image; only
the id labels (text) go through PIL, one call per person.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from matplotlib.colors import hsv_to_rgb, to_rgba_array

from posekit.coco17 import NUM_KEYPOINTS, SKELETON, joint_side
from posekit.errors import PosekitError
from posekit.files import atomic_write
from posekit.viz import SIDE_COLORS

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
            from posekit.images import find_images

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
            from posekit.images import load_image

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
            self._stack.enter_context(_sigterm_raises())
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


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While active, SIGTERM raises SystemExit in the main thread, so cleanup blocks run (the
    default action kills the process on the spot and would leave the temporary file behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------------
# Drawing tracked poses
# ------------------------------------------------------------------------------------------

_LIMBS = np.array(SKELETON)
_SIDE_RGB = np.round(
    to_rgba_array([SIDE_COLORS[joint_side(k)] for k in range(NUM_KEYPOINTS)])[:, :3] * 255
).astype(np.uint8)


def track_colors(track_ids: np.ndarray) -> np.ndarray:
    """A stable, well-spread colour per track id: hues stepped by the golden ratio.

    Shape: track_ids (N,) int -> (N, 3) uint8 RGB. The same id always gets the same colour.
    """
    hues = (np.asarray(track_ids, np.float64) * 0.618033988749895) % 1.0
    hsv = np.stack([hues, np.full_like(hues, 0.85), np.full_like(hues, 0.95)], axis=-1)
    return np.round(hsv_to_rgb(hsv) * 255).astype(np.uint8).reshape(-1, 3)


def _disc(radius: int) -> np.ndarray:
    """Integer offsets of a filled disc. Shape: (D, 2) as dx, dy."""
    grid = np.mgrid[-radius : radius + 1, -radius : radius + 1].reshape(2, -1).T
    return grid[(grid**2).sum(1) <= radius * radius + radius]


def _stamp(image: np.ndarray, points: np.ndarray, colors: np.ndarray, radius: int) -> None:
    """Paint a disc of ``radius`` at every point, in place. Shape: points (P, 2) x, y; colors (P, 3) uint8."""
    pixels = np.round(points).astype(np.int64)[:, None, :] + _disc(radius)[None]  # (P, D, 2)
    rgb = np.broadcast_to(colors[:, None, :], (*pixels.shape[:2], 3))
    inside = (pixels[..., 0] >= 0) & (pixels[..., 0] < image.shape[1]) & (pixels[..., 1] >= 0) & (pixels[..., 1] < image.shape[0])
    image[pixels[..., 1][inside], pixels[..., 0][inside]] = rgb[inside]


def _segment_points(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points one pixel apart along each segment, and the segment each came from.

    Shape: starts, ends (S, 2) -> points (P, 2), segment index (P,).
    """
    steps = np.ceil(np.linalg.norm(ends - starts, axis=1)).astype(np.int64) + 1  # (S,)
    fractions = np.arange(steps.max(initial=1))[None, :] / np.maximum(steps - 1, 1)[:, None]  # (S, n)
    used = np.arange(fractions.shape[1])[None, :] < steps[:, None]
    points = starts[:, None, :] + fractions[..., None] * (ends - starts)[:, None, :]
    return points[used], np.broadcast_to(np.arange(len(starts))[:, None], used.shape)[used]


def draw_tracks(
    rgb: np.ndarray,
    keypoints: np.ndarray,
    track_ids: np.ndarray,
    boxes: np.ndarray | None = None,
    score_threshold: float = 0.3,
    caption: str | None = None,
) -> np.ndarray:
    """Draw tracked skeletons on a frame: limbs and box in the track's colour, joints coloured by
    body side (as in :mod:`posekit.viz`), and the id as a label.

    Joints scoring under ``score_threshold`` are not drawn, nor limbs touching them. Line width
    and label size follow the frame height. For K != 17 joints only joints are drawn, in the
    track's colour.

    Shape: rgb (H, W, 3) uint8; keypoints (N, K, 3) x, y, score; track_ids (N,); boxes (N, 4)
    xywh or None (the label then sits above the highest joint). Returns a new (H, W, 3) uint8.

    Args:
        caption: a line written in red at the top left (e.g. that the weights are untrained).
    """
    from PIL import Image, ImageDraw, ImageFont

    image = np.array(rgb, dtype=np.uint8, copy=True)
    track_ids = np.asarray(track_ids, np.int64).reshape(-1)
    font = ImageFont.load_default(size=max(10, image.shape[0] // 40))
    if caption:
        canvas = Image.fromarray(image)
        big = ImageFont.load_default(size=max(12, image.shape[0] // 24))
        ImageDraw.Draw(canvas).text((8, 8), caption, fill=(255, 0, 0), font=big, stroke_width=2, stroke_fill=(0, 0, 0))
        image = np.array(canvas)
    if len(track_ids) == 0:
        return image
    keypoints = np.asarray(keypoints, np.float64).reshape(len(track_ids), -1, 3)
    colors = track_colors(track_ids)  # (N, 3)
    radius = max(1, image.shape[0] // 360)
    xy, visible = keypoints[..., :2], keypoints[..., 2] >= score_threshold
    visible &= np.isfinite(xy).all(-1)
    coco = keypoints.shape[1] == NUM_KEYPOINTS
    if coco:
        shown = visible[:, _LIMBS[:, 0]] & visible[:, _LIMBS[:, 1]]  # (N, L)
        person = np.broadcast_to(np.arange(len(track_ids))[:, None], shown.shape)[shown]
        points, segment = _segment_points(xy[:, _LIMBS[:, 0]][shown], xy[:, _LIMBS[:, 1]][shown])
        _stamp(image, points, colors[person][segment], radius)
    joint_colors = np.broadcast_to(_SIDE_RGB if coco else colors[:, None, :], (*visible.shape, 3))
    _stamp(image, xy[visible], joint_colors[visible], radius + 1)
    if boxes is not None:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        corners = np.stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] * [1, 0], boxes[:, :2] + boxes[:, 2:],
                            boxes[:, :2] + boxes[:, 2:] * [0, 1]], axis=1)  # (N, 4, 2) clockwise
        points, segment = _segment_points(corners.reshape(-1, 2), np.roll(corners, -1, axis=1).reshape(-1, 2))
        _stamp(image, points, colors[segment // 4], max(1, radius // 2))
        anchors = boxes[:, :2]
    else:
        masked = np.where(visible[..., None], xy, np.inf)
        anchors = np.stack([masked[..., 0].min(1), masked[..., 1].min(1)], axis=1)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for (x, y), track_id, color in zip(anchors, track_ids, colors):  # text: one PIL call per label
        if not np.isfinite([x, y]).all():
            continue
        label = f"{track_id}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        y = max(0.0, y - (bottom - top) - 6 - 2 * radius)  # clear of the joint or box edge below
        draw.rectangle((x, y, x + right - left + 6, y + bottom - top + 4), fill=tuple(int(c) for c in color))
        draw.text((x + 3 - left, y + 2 - top), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
