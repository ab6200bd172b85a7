"""Two takes of a movement compared: tracks from a video or a tracks JSON, the angle plot, the side-by-side video.

The engine of ``posekit compare``; the numbers come from :func:`posekit.motion.compare_motion`.
A :class:`Take` holds every tracked person of one input; :meth:`Take.person` picks one.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from posekit.core.keypoints import COCO17, KeypointSet
from posekit.errors import AnnotationError, PosekitError
from posekit.io.files import read_json
from posekit.motion import ANGLE_TEMPERATURE, POSITION_TEMPERATURE, MotionComparison, torso_frames

DEFAULT_FPS = 30.0  # a tracks JSON without frame times
_TRACKS_SCHEMA = ("a tracks JSON as `posekit track --json` writes (PoseTrack 2018): 'images' in frame order and "
                  "'annotations' with image_id, track_id and keypoints [x, y, score] * K")
PANEL_HEIGHT = 480  # pixels: each half of the side-by-side video (smaller inputs keep their height)
HIGHLIGHTED = 3  # joints ringed per frame of the side-by-side video, the worst beyond POSITION_TEMPERATURE


@dataclasses.dataclass
class Take:
    """Everyone tracked in one input.

    Attributes:
        name: the input, as given.
        tracks: track id -> poses (T, K, 3) x, y, score over all T frames, NaN where the person is absent.
        num_frames: T. fps: frames per second.
        keypoint_set: the joints of the poses.
        video: the video (or folder of frames) the poses were tracked in, to draw on; None for a tracks JSON.
    """

    name: str
    tracks: dict[int, np.ndarray]
    num_frames: int
    fps: float
    keypoint_set: KeypointSet = COCO17
    video: str | None = None

    def person(self, track_id: int | None = None) -> tuple[int, np.ndarray]:
        """(track id, poses (T, K, 3)) of ``track_id``, or of the longest track (most frames; lowest id among equals).

        Raises:
            PosekitError: no frame, nobody tracked, or no track ``track_id``.
        """
        if self.num_frames == 0:
            raise PosekitError(f"{self.name}: has no frames; expected a video or tracks of at least one frame")
        if not self.tracks:
            raise PosekitError(f"{self.name}: no person is tracked in its {self.num_frames} frames; expected one")
        if track_id is None:
            lengths = {i: int(np.isfinite(poses[..., 0]).any(1).sum()) for i, poses in self.tracks.items()}
            track_id = max(sorted(lengths), key=lengths.get)
        if track_id not in self.tracks:
            raise PosekitError(f"{self.name}: has no track {track_id}; its tracks are {', '.join(map(str, sorted(self.tracks)))}")
        return track_id, self.tracks[track_id]


def take_from_frames(frames: Iterable, name: str, fps: float, keypoint_set: KeypointSet = COCO17,
                     video: str | None = None) -> Take:
    """A :class:`Take` from tracked frames (:class:`posekit.track.TrackedFrame`, in order)."""
    frames = list(frames)
    tracks: dict[int, np.ndarray] = {}
    for position, frame in enumerate(frames):
        for track_id, points in zip(np.asarray(frame.track_ids).tolist(), np.asarray(frame.keypoints, np.float64)):
            tracks.setdefault(int(track_id), np.full((len(frames), keypoint_set.num_keypoints, 3), np.nan))[position] = points
    return Take(name, tracks, len(frames), fps, keypoint_set, video)


def read_tracks(path: str | os.PathLike) -> Take:
    """A tracks JSON (``posekit track --json``, PoseTrack 2018 style) as a :class:`Take`.

    Frames are the ``images`` in their order (frame index = position in that list); the joints are
    those named by ``categories[0].keypoints`` (COCO-17 when there is none); the frame rate comes
    from the images' ``time`` (:data:`DEFAULT_FPS` without).

    Raises:
        AnnotationError: the file is missing, not JSON, or not such a tracks file.
    """
    content = read_json(path, AnnotationError, _TRACKS_SCHEMA)
    if not isinstance(content, dict) or not isinstance(content.get("images"), list) or not isinstance(content.get("annotations"), list):
        raise AnnotationError(f"{path}: expected {_TRACKS_SCHEMA}")
    try:
        categories = content.get("categories") or []
        keypoint_set = KeypointSet.from_coco(categories[0]) if categories and categories[0].get("keypoints") else COCO17
        position = {image["id"]: i for i, image in enumerate(content["images"])}
        shape = (len(position), keypoint_set.num_keypoints, 3)
        tracks: dict[int, np.ndarray] = {}
        for entry in content["annotations"]:
            points = np.asarray(entry["keypoints"], np.float64).reshape(keypoint_set.num_keypoints, 3)
            track_id = entry["track_id"]
            if not isinstance(track_id, int) or isinstance(track_id, bool):
                raise TypeError(f"track_id {track_id!r} is not a whole number")
            tracks.setdefault(track_id, np.full(shape, np.nan))[position[entry["image_id"]]] = points
        times = np.array([image.get("time", np.nan) for image in content["images"]], np.float64)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise AnnotationError(f"{path}: {type(error).__name__} {error}; expected {_TRACKS_SCHEMA}") from None
    steps = np.diff(times)
    fps = 1.0 / float(np.median(steps)) if len(steps) and np.isfinite(steps).all() and (steps > 0).all() else DEFAULT_FPS
    return Take(str(path), tracks, len(position), fps, keypoint_set)


def plot_angles(comparison: MotionComparison):
    """The angle curves of both takes along the warping path, differences over ``ANGLE_TEMPERATURE`` shaded.

    Returns a matplotlib Figure with one panel per angle.
    """
    import matplotlib.pyplot as plt

    names = comparison.angle_names
    columns = 3
    rows = max(1, -(-len(names) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(12, 2.4 * rows), sharex=True, layout="constrained", squeeze=False)
    step = np.arange(len(comparison.alignment))
    reference = comparison.reference_angles[comparison.alignment[:, 0]]
    attempt = comparison.attempt_angles[comparison.alignment[:, 1]]
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.set_axis_off()
            continue
        ax.plot(step, reference[:, k], color="tab:blue", label="reference")
        ax.plot(step, attempt[:, k], color="tab:orange", label="attempt")
        with np.errstate(invalid="ignore"):
            off = np.abs((reference[:, k] - attempt[:, k] + 180) % 360 - 180) > ANGLE_TEMPERATURE
        ax.fill_between(step, reference[:, k], attempt[:, k], where=off, color="tab:red", alpha=0.3,
                        label=f"over {ANGLE_TEMPERATURE:g} degrees apart")
        ax.set_title(f"{names[k]}: {comparison.per_angle[names[k]]:.0f}/100", fontsize=10)
        ax.set_ylabel("degrees")
    for ax in axes[-1]:
        ax.set_xlabel("step along the alignment")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Joint angles after alignment: score {comparison.score:.1f}/100"
                 f"{' (attempt mirrored)' if comparison.mirror else ''}")
    return fig


def write_side_by_side(
    path: str | os.PathLike,
    comparison: MotionComparison,
    reference: tuple[Take, np.ndarray],
    attempt: tuple[Take, np.ndarray],
    threshold: float,
    caption: str | None = None,
) -> int:
    """Write the two takes side by side, one frame per step of the alignment, at the reference's rate.

    Left the reference with its skeleton; right the attempt with its own and the reference's
    skeleton (moved onto the attempt's hips and scaled to its torso), the joints of that pair over
    ``POSITION_TEMPERATURE`` off ringed in red (the worst :data:`HIGHLIGHTED`). A take without a
    video (a tracks JSON) is drawn on a grey canvas that holds its joints. Returns the frames written.

    Shape: reference and attempt: a take and the person's poses (T, K, 3).
    """
    from PIL import Image, ImageDraw

    from posekit.io.video import VideoWriter
    from posekit.viz import draw_tracks

    (ref_take, ref_poses), (att_take, att_poses) = reference, attempt
    keypoint_set = ref_take.keypoint_set
    centres, torsos = torso_frames(ref_poses, keypoint_set, threshold)
    att_centres, att_torsos = torso_frames(att_poses, keypoint_set, threshold)
    steps = comparison.alignment
    with VideoWriter(path, ref_take.fps) as writer:
        ref_frames = _frames_at(ref_take, ref_poses, steps[:, 0])
        att_frames = _frames_at(att_take, att_poses, steps[:, 1])
        for (i, j), ref_rgb, att_rgb, deviations in zip(steps, ref_frames, att_frames, comparison.joint_deviations):
            # The reference pose in the attempt's picture: its normalised joints on the attempt's torso.
            offsets = (ref_poses[i, :, :2] - centres[i]) / torsos[i]
            if comparison.mirror:
                offsets = offsets[keypoint_set.flip_index] * [-1.0, 1.0]
            overlay = np.concatenate([offsets * att_torsos[j] + att_centres[j], ref_poses[i, :, 2:]], axis=1)
            panels = []
            for rgb, people, ids, label in ((ref_rgb, ref_poses[i][None], [1], f"reference {i}"),
                                            (att_rgb, np.stack([overlay, att_poses[j]]), [1, 2], f"attempt {j}")):
                scale = min(1.0, PANEL_HEIGHT / rgb.shape[0])
                people = people * [scale, scale, 1.0]
                image = Image.fromarray(rgb).resize((round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)))
                drawn = draw_tracks(np.asarray(image), people, np.asarray(ids), score_threshold=threshold,
                                    caption=caption)
                panels.append((Image.fromarray(drawn), people, label))
            canvas = Image.new("RGB", (sum(p[0].width for p in panels), max(p[0].height for p in panels)))
            draw = ImageDraw.Draw(canvas)
            canvas.paste(panels[0][0], (0, 0))
            canvas.paste(panels[1][0], (panels[0][0].width, 0))
            worst = np.argsort(-np.nan_to_num(deviations, nan=-1.0), kind="stable")[:HIGHLIGHTED]
            radius = max(4, canvas.height // 50)
            for k in worst[deviations[worst] > POSITION_TEMPERATURE]:
                x, y = panels[1][1][1, k, :2] + [panels[0][0].width, 0]
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=(255, 0, 0), width=3)
            for offset, (_, _, label) in zip((0, panels[0][0].width), panels):
                draw.text((offset + 8, canvas.height - 20), label, fill=(255, 255, 255))
            writer.write(np.asarray(canvas))
        return writer.frames_written


def _frames_at(take: Take, poses: np.ndarray, indices: np.ndarray) -> Iterator[np.ndarray]:
    """The RGB frame at each of ``indices`` (non-decreasing), decoding the video once from the start.

    A take without a video gets a grey canvas holding all its joints (320 x 240 to 4096 x 4096)."""
    if take.video is None:
        points = poses[..., :2].reshape(-1, 2)
        points = points[np.isfinite(points).all(1)]
        extent = np.ceil(points.max(0) * 1.05) if len(points) else (0, 0)
        width, height = (int(np.clip(value, minimum, 4096)) for value, minimum in zip(extent, (320, 240)))
        canvas = np.full((height, width, 3), 64, np.uint8)
        yield from itertools.repeat(canvas, len(indices))
        return
    from posekit.io.video import VideoSource

    frames = iter(VideoSource(take.video))
    current = next(frames, None)
    for index in indices:
        while current is not None and current.index < index:
            current = next(frames, None)
        if current is None:
            raise PosekitError(f"{take.video}: ended before frame {index}; expected the frames it was tracked on")
        yield current.rgb

