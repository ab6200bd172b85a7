"""A :class:`~posekit.track.PoseTracker` over a whole video: :func:`track_video` and its :class:`TrackingRun`.

Decoding runs in a reader thread and drawing + encoding in a writer thread, beside the tracker
(:mod:`posekit.io.live`), so the end-to-end rate approaches the tracker's own.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import sys
from time import perf_counter
from typing import TYPE_CHECKING

import numpy as np

from posekit.errors import ArgumentError
from posekit.track import PoseTracker, TrackedFrame, _whole_number

if TYPE_CHECKING:
    from posekit.io.video import VideoSource


@dataclasses.dataclass
class TrackingRun:
    """The result of :func:`track_video`.

    Attributes:
        frames: the tracked frames, in order.
        file_names: a name per frame (the image file of a folder, else ``NNNNNN.jpg``).
        fps: frames per second, the source's.
        seconds: wall-clock seconds in the tracker (detector, flow, pose network, matching) and in total
            (also decoding, drawing and encoding, which overlap the tracker); per stage: ``decode``,
            ``draw``, ``encode`` (in their threads) and ``tracker/<stage>`` (:attr:`PoseTracker.stage_seconds`).
        interrupted: whether Ctrl-C ended the run (the frames before it are kept, the video written).
        dropped: frames of a live source skipped because the tracker was busy with a newer one (0 for files).
    """

    frames: list[TrackedFrame]
    file_names: list[str]
    fps: float
    seconds: dict[str, float]
    interrupted: bool = False
    dropped: int = 0

    @property
    def tracking_fps(self) -> float:
        """Frames per second of the tracker alone."""
        return len(self.frames) / max(self.seconds["tracking"], 1e-9)

    @property
    def total_fps(self) -> float:
        """Frames per second end to end: decode, track, draw, encode."""
        return len(self.frames) / max(self.seconds["total"], 1e-9)


def track_video(
    tracker: PoseTracker,
    source: str | os.PathLike | int | VideoSource,
    out: str | os.PathLike | None = None,
    caption: str | None = None,
    score_threshold: float = 0.3,
    max_frames: int | None = None,
    progress: bool = True,
) -> TrackingRun:
    """Track everyone through a video and optionally write it annotated.

    Decoding runs in a reader thread and drawing + encoding in a writer thread, beside the tracker
    (:mod:`posekit.io.live`). A file is tracked frame by frame; a live source (webcam index,
    stream URL) always gives the tracker its newest frame, dropping the ones it had no time
    for (counted in the progress line and in :attr:`TrackingRun.dropped`).

    Args:
        tracker: a :class:`PoseTracker` (reset first: ids start at 1).
        source: a :class:`~posekit.io.video.VideoSource` or what it reads: a video, a folder of frames, a webcam, a URL.
        out: an ``.mp4`` to write the annotated video to (whole or not at all), or None.
        caption: a line written on every annotated frame (say here that weights are untrained).
        score_threshold: joints drawn from this score.
        max_frames: stop after this many frames; Ctrl-C also stops, keeping what was tracked (a webcam
            never ends by itself).
        progress: show a tqdm bar with the frame rate.
    """
    from tqdm.auto import tqdm

    from posekit.io.live import BackgroundWriter, FrameReader, is_live
    from posekit.io.video import VideoError, VideoSource, VideoWriter
    from posekit.models.runtime import torch_on_one_thread
    from posekit.viz import draw_tracks

    if max_frames is not None:
        max_frames = _whole_number("max_frames", max_frames)
        if max_frames < 1:
            raise ArgumentError(f"max_frames={max_frames}: expected 1 or more, or None for every frame")
        max_frames = min(max_frames, sys.maxsize)  # islice's limit; no video is longer
    video = source if isinstance(source, VideoSource) else VideoSource(source)
    live = is_live(video)
    tracker.reset()
    frames: list[TrackedFrame] = []
    tracking = drawing = 0.0
    start = perf_counter()
    total = None if live else min(filter(None, (video.num_frames, max_frames)), default=None)
    reader = FrameReader(video, live=live)
    output = VideoWriter(out, video.fps, preset=tracker.encoder_preset) if out is not None else contextlib.nullcontext()
    threads = torch_on_one_thread() if tracker.torch_on_one_thread else contextlib.nullcontext()
    with output as writer, threads:

        def draw_and_encode(rgb: np.ndarray, tracked: TrackedFrame) -> None:
            nonlocal drawing
            began = perf_counter()
            picture = draw_tracks(rgb, tracked.keypoints, tracked.track_ids, tracked.boxes, score_threshold, caption)
            drawing += perf_counter() - began
            writer.write(picture, tracked.time)  # the source's timestamps: a variable rate stays in sync

        background = BackgroundWriter(draw_and_encode) if writer is not None else None
        bar = tqdm(itertools.islice(reader, max_frames), total=total, desc="posekit track", unit="frame", disable=not progress)
        try:
            for frame in bar:
                began = perf_counter()
                tracked = tracker.update(frame.rgb, frame.index, frame.time)
                tracking += perf_counter() - began
                if background is not None:  # queued frames are all written, Ctrl-C or not (close() waits)
                    background.put(frame.rgb, tracked)
                frames.append(tracked)  # only now: a frame Ctrl-C interrupts is in neither the video nor the tracks
                status = {"fps": f"{len(frames) / tracking:.1f}", "people": len(tracked.track_ids)}
                bar.set_postfix(status | ({"dropped": reader.dropped} if live else {}))
        except KeyboardInterrupt:
            # Ctrl-C is how a webcam or stream is stopped: keep (and write) what was tracked so far.
            interrupted = True
        else:
            interrupted = False
        finally:
            bar.close()
            reader.close()
            if background is not None:
                background.close()
        if not frames and not interrupted:  # raised in the block: an mp4 without frames is not left behind
            raise VideoError(f"{video.name}: no frame could be read; expected a video with at least one frame")
    seconds = {"tracking": tracking, "total": perf_counter() - start, "decode": reader.seconds,
               "draw": drawing, "encode": (background.seconds - drawing) if background is not None else 0.0}
    seconds |= {f"tracker/{stage}": value for stage, value in tracker.stage_seconds.items()}
    names = video.file_names or [f"{f.index:06d}.jpg" for f in frames]
    return TrackingRun(frames, names, video.fps, seconds, interrupted, reader.dropped)
