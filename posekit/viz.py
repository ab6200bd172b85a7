"""Pictures of poses: skeletons on images, heatmaps over crops, crop grids and timing charts.

The figures are matplotlib: every function returns its figure or axes and never calls
``plt.show()``, so the same code draws inline in a notebook, into a widget, or into a file on a
headless machine. :func:`draw_tracks` draws into a video frame itself and returns the image array.

What a skeleton shows is decided once, by :func:`skeleton_parts`: which joints and limbs are
visible, their colours (one table, the body side of each joint: left, right, centre) and their
opacity. Two renderers draw those parts: :func:`draw_skeleton` as matplotlib artists (vector, so a
figure stays sharp when zoomed or saved as a PDF) and :func:`draw_tracks` as pixels of the frame
(what a video encoder needs, at the cost of one numpy pass per frame).
"""
from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, NamedTuple, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import hsv_to_rgb, to_rgba_array
from matplotlib.figure import Figure

from posekit.core.coco17 import KEYPOINT_NAMES, NUM_KEYPOINTS, SKELETON, joint_side
from posekit.core.keypoints import KeypointSet
from posekit.defaults import UNTRAINED_TITLE
from posekit.errors import PosekitError
from posekit.io.files import atomic_write

SIDE_COLORS: Mapping[str, str] = MappingProxyType({"left": "tab:blue", "right": "tab:orange", "center": "tab:green"})

REFERENCE_LABEL = "reference (another machine)"

# Joints are never fully transparent: a barely-kept joint must still be visible.
MIN_ALPHA = 0.25


def _side_rgb(sides: Sequence[str]) -> np.ndarray:
    rgb = to_rgba_array([SIDE_COLORS[side] for side in sides])[:, :3]
    rgb.setflags(write=False)
    return rgb


_LIMBS = np.array(SKELETON)  # (L, 2) joint indices
_JOINT_RGB = _side_rgb([joint_side(k) for k in range(NUM_KEYPOINTS)])  # (17, 3)
# A limb between two joints of one side takes that side's colour; a limb across the body is "center".
_LIMB_RGB = _side_rgb([joint_side(a) if joint_side(a) == joint_side(b) else "center" for a, b in SKELETON])


def _set_style(keypoint_set: KeypointSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Limbs (L, 2), joint colours (K, 3) and limb colours (L, 3) of a keypoint set: the first joint
    of each flip pair is its left one, joints in no pair are "center"."""
    sides = ["center"] * keypoint_set.num_keypoints
    for left, right in keypoint_set.flip_pairs:
        sides[left], sides[right] = "left", "right"
    limbs = np.array(keypoint_set.skeleton, dtype=np.int64).reshape(-1, 2)
    limb_sides = [sides[a] if sides[a] == sides[b] else "center" for a, b in limbs]
    return limbs, _side_rgb(sides), _side_rgb(limb_sides).reshape(-1, 3)


def _as_numpy(array: object) -> np.ndarray:
    """A numpy view of ``array``; torch tensors (any device, with grad) are detached and copied to the CPU."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_image(image: object, name: str, batched: bool = False) -> np.ndarray:
    image = _as_numpy(image)
    ndim = 4 if batched else 3
    if image.ndim != ndim or image.shape[-1] != 3 or image.dtype != np.uint8:
        expected = "(N, H, W, 3)" if batched else "(H, W, 3)"
        raise PosekitError(f"{name} must be a uint8 RGB array of shape {expected}, got {image.dtype} {image.shape}")
    return image


def _check_keypoints(keypoints: object, name: str = "keypoints", num_keypoints: int = NUM_KEYPOINTS) -> np.ndarray:
    keypoints = _as_numpy(keypoints).astype(np.float64)
    if keypoints.ndim == 2:
        keypoints = keypoints[None]
    if keypoints.ndim != 3 or keypoints.shape[1:] != (num_keypoints, 3):
        raise PosekitError(
            f"{name} must have shape ({num_keypoints}, 3) or (N, {num_keypoints}, 3) as x, y, score, "
            f"got {keypoints.shape}"
        )
    return keypoints


def _box_outlines(boxes_xywh: np.ndarray) -> np.ndarray:
    """Closed outlines of COCO xywh boxes. Shape: boxes (N, 4) -> (N, 5, 2)."""
    x0, y0, w, h = boxes_xywh.T
    x1, y1 = x0 + w, y0 + h
    return np.stack([np.stack([x0, x1, x1, x0, x0], -1), np.stack([y0, y0, y1, y1, y0], -1)], -1)


def _visible_joints(keypoints: np.ndarray, score_threshold: float) -> np.ndarray:
    """Joints a drawing shows: scored at or over the threshold (NaN compares False) at a finite
    position. Shape: (N, K, 3) -> (N, K) bool."""
    return (keypoints[..., 2] >= score_threshold) & np.isfinite(keypoints[..., :2]).all(-1)


class SkeletonParts(NamedTuple):
    """What a skeleton drawing shows, for N people of K joints and a skeleton of L limbs."""

    visible: np.ndarray  # (N, K) bool: score at or over the threshold and a finite position
    joint_rgb: np.ndarray  # (K, 3) float in [0, 1]: the body side of each joint
    alpha: np.ndarray  # (N, K) opacity, clip(score, MIN_ALPHA, 1)
    limbs: np.ndarray  # (L, 2) joint indices
    limb_visible: np.ndarray  # (N, L) bool: both joints visible
    limb_rgb: np.ndarray  # (L, 3): the side of its joints, "center" across the body
    limb_alpha: np.ndarray  # (N, L): the weaker joint's opacity


def skeleton_parts(
    keypoints: np.ndarray, score_threshold: float = 0.3, keypoint_set: KeypointSet | None = None
) -> SkeletonParts:
    """Which joints and limbs of each person a drawing shows, in which colour and opacity.

    Shape: keypoints (N, K, 3) x, y, score; K = 17 (COCO) or ``keypoint_set.num_keypoints``.
    A joint scoring under ``score_threshold`` (or NaN), or at a non-finite position, is hidden;
    a limb is shown only when both its joints are.
    """
    limbs, joint_rgb, limb_rgb = (_LIMBS, _JOINT_RGB, _LIMB_RGB) if keypoint_set is None else _set_style(keypoint_set)
    visible = _visible_joints(keypoints, score_threshold)
    alpha = np.clip(keypoints[..., 2], MIN_ALPHA, 1.0)
    start, end = limbs[:, 0], limbs[:, 1]
    return SkeletonParts(visible, joint_rgb, alpha, limbs, visible[:, start] & visible[:, end], limb_rgb,
                         np.minimum(alpha[:, start], alpha[:, end]))


def draw_skeleton(
    image: np.ndarray,
    keypoints: np.ndarray,
    score_threshold: float = 0.3,
    ax: Axes | None = None,
    boxes: np.ndarray | None = None,
    keypoint_set: KeypointSet | None = None,
) -> Axes:
    """Draw skeletons over an image: COCO-17, or the joints and limbs of ``keypoint_set``.

    The parts shown are :func:`skeleton_parts`'s: joints scoring below ``score_threshold`` are not
    drawn, a limb only when both its joints are; opacity follows the score, colour the body side
    (:data:`SIDE_COLORS`). All joints of all people are one scatter artist labelled ``"joints"``,
    all limbs one ``LineCollection`` labelled ``"limbs"``, boxes one labelled ``"boxes"``; the view
    stays on the image even when a joint lies outside it.

    Shape: image (H, W, 3) uint8 RGB; keypoints (17, 3) or (N, 17, 3) as x, y, score in image
    pixels (K, 3) / (N, K, 3) for a ``keypoint_set`` of K joints; boxes (N, 4) COCO xywh or None.

    Args:
        ax: axes to draw into; a new figure sized to the image when None.

    Returns:
        The axes drawn into.
    """
    image = _check_image(image, "image")
    num_keypoints = NUM_KEYPOINTS if keypoint_set is None else keypoint_set.num_keypoints
    keypoints = _check_keypoints(keypoints, num_keypoints=num_keypoints)
    if ax is None:
        height, width = image.shape[:2]
        _, ax = plt.subplots(figsize=(8.0, 8.0 * height / width), layout="constrained")

    parts = skeleton_parts(keypoints, score_threshold, keypoint_set)
    xy, visible, shown = keypoints[..., :2], parts.visible, parts.limb_visible
    joint_rgba = np.column_stack([np.broadcast_to(parts.joint_rgb, (*visible.shape, 3))[visible], parts.alpha[visible]])
    start, end = parts.limbs[:, 0], parts.limbs[:, 1]
    segments = np.stack([xy[:, start], xy[:, end]], axis=2)[shown]  # (S, 2, 2)
    limb_rgba = np.column_stack([np.broadcast_to(parts.limb_rgb, (*shown.shape, 3))[shown], parts.limb_alpha[shown]])

    ax.imshow(image)
    ax.add_collection(LineCollection(segments, colors=limb_rgba, linewidths=2.5, capstyle="round", label="limbs",
                                     zorder=2))
    ax.scatter(*xy[visible].T, s=24, c=joint_rgba, edgecolors="none", label="joints", zorder=3)
    if boxes is not None:
        outlines = _box_outlines(_as_numpy(boxes).astype(np.float64).reshape(-1, 4))
        ax.add_collection(LineCollection(outlines, colors="white", linewidths=1.0, label="boxes", zorder=1))
    height, width = image.shape[:2]
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_axis_off()
    return ax


def label_untrained(ax: Axes) -> None:
    """Write :data:`~posekit.defaults.UNTRAINED_TITLE` at the top left of ``ax``, white on a filled
    red box (legible over any picture), wrapped at the picture's edge so a narrow one shows all of it."""
    ax.text(0.01, 0.99, UNTRAINED_TITLE, transform=ax.transAxes, va="top", fontsize=9, color="white",
            bbox={"facecolor": "#c00", "edgecolor": "none"}, wrap=True)


def _panel_grid(count: int, ncols: int, panel_width: float, aspect: float) -> tuple[Figure, list[Axes]]:
    """A figure with ``count`` axes on a grid ``ncols`` wide; the unused cells of the last row are removed."""
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    fig, grid = plt.subplots(
        nrows, ncols, figsize=(panel_width * ncols, panel_width * aspect * nrows + 0.3 * nrows),
        squeeze=False, layout="constrained",
    )
    cells = list(grid.flat)
    for unused in cells[count:]:
        unused.remove()
    for ax in cells[:count]:
        ax.set_axis_off()
    return fig, cells[:count]


def show_heatmaps(
    crop: np.ndarray, heatmaps: np.ndarray, ncols: int = 6, cmap: str = "inferno", alpha: float = 0.6
) -> Figure:
    """Overlay each joint's heatmap on the person crop, one panel per joint titled with its name.

    All panels share one colour scale (0 to the largest value over all joints), so a weak joint
    looks weak. Heatmap pixel ``i`` is centred on crop pixel ``i * stride`` (the convention the
    official encoder and decoder use), which is where the overlay places it.

    Shape: crop (H, W, 3) uint8 RGB; heatmaps (17, h, w), e.g. (256, 192, 3) and (17, 64, 48).
    """
    crop = _check_image(crop, "crop")
    heatmaps = _as_numpy(heatmaps).astype(np.float32)
    if heatmaps.ndim != 3 or heatmaps.shape[0] != NUM_KEYPOINTS:
        raise PosekitError(f"heatmaps must have shape ({NUM_KEYPOINTS}, h, w), got {heatmaps.shape}")
    height, width = crop.shape[:2]
    stride_y, stride_x = height / heatmaps.shape[1], width / heatmaps.shape[2]
    extent = (-0.5 * stride_x, (heatmaps.shape[2] - 0.5) * stride_x,
              (heatmaps.shape[1] - 0.5) * stride_y, -0.5 * stride_y)
    vmax = max(float(heatmaps.max()), np.finfo(np.float32).eps)

    fig, axes = _panel_grid(NUM_KEYPOINTS, ncols, panel_width=1.8, aspect=height / width)
    for ax, heatmap, name in zip(axes, heatmaps, KEYPOINT_NAMES):  # one panel per joint: layout, not maths
        ax.imshow(crop)
        ax.imshow(heatmap, cmap=cmap, alpha=alpha, extent=extent, vmin=0.0, vmax=vmax, interpolation="bilinear")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_title(name, fontsize=8)
    return fig


def show_crops(
    crops: np.ndarray,
    keypoints_in_crop: np.ndarray | None = None,
    score_threshold: float = 0.3,
    ncols: int = 4,
) -> Figure:
    """Show person crops on a grid, titled ``person i``, each with its skeleton when keypoints are given.

    Shape: crops (N, H, W, 3) uint8 RGB; keypoints_in_crop (N, 17, 3) as x, y, score in crop pixels.
    """
    crops = _check_image(crops, "crops", batched=True)
    if len(crops) == 0:
        raise PosekitError("crops is empty: expected at least one crop of shape (H, W, 3)")
    if keypoints_in_crop is None:
        keypoints_in_crop = np.zeros((len(crops), NUM_KEYPOINTS, 3))  # score 0: nothing drawn
    keypoints_in_crop = _check_keypoints(keypoints_in_crop, "keypoints_in_crop")
    if len(keypoints_in_crop) != len(crops):
        raise PosekitError(
            f"keypoints_in_crop has {len(keypoints_in_crop)} people but crops has {len(crops)}: expected one each"
        )
    height, width = crops.shape[1:3]
    fig, axes = _panel_grid(len(crops), ncols, panel_width=2.2, aspect=height / width)
    for index, (ax, crop, keypoints) in enumerate(zip(axes, crops, keypoints_in_crop)):  # one panel per crop
        draw_skeleton(crop, keypoints, score_threshold, ax=ax)
        ax.set_title(f"person {index}", fontsize=9)
    return fig


def plot_timing(
    timings: Mapping[str, float],
    reference: Mapping[str, float] | None = None,
    title: str = "Time per stage",
    unit: str = "s",
) -> Figure:
    """Horizontal bar chart of measured times per stage, followed by the reference bars.

    The reference (e.g. the seed's Colab K80 mini-batch times, ``posekit.bench.K80_SECONDS``) was
    measured on another machine; its bars are hatched grey and labelled so in the legend. Each bar
    is annotated with its value.

    Args:
        timings: stage name -> time measured on this run, in display order (top first).
        reference: label -> time from elsewhere, or None for none.
        unit: what the times are in: ``"s"`` (seconds, the default) or ``"ms/person"`` (to compare
            batches of different sizes).
    """
    units = {"s": ("%.3f s", "seconds"), "ms/person": ("%.1f ms", "milliseconds per person")}
    if unit not in units:
        raise PosekitError(f"unit {unit!r} is unknown; expected one of {', '.join(units)}")
    value_format, axis_label = units[unit]
    reference = {} if reference is None else dict(reference)
    values = np.array([*timings.values(), *reference.values()], dtype=np.float64)
    if not timings or not np.all(np.isfinite(values) & (values >= 0)):
        raise PosekitError(f"timings must map at least one stage to finite times >= 0, got {dict(timings)}")
    measured, n_measured = values[: len(timings)], len(timings)

    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(values) + 1.2), layout="constrained")
    own = ax.barh(np.arange(n_measured), measured, color="tab:blue", label="this run")
    ax.bar_label(own, fmt=value_format, padding=3, fontsize=8)
    if reference:
        ref = ax.barh(np.arange(n_measured, len(values)), values[n_measured:],
                      color="0.8", edgecolor="0.4", hatch="//", label=REFERENCE_LABEL)
        ax.bar_label(ref, fmt=value_format, padding=3, fontsize=8)
    ax.set_yticks(np.arange(len(values)), [*timings, *reference])
    ax.invert_yaxis()
    ax.set_xlabel(axis_label)
    ax.set_xlim(0, values.max() * 1.25 or 1.0)  # room for the value labels
    ax.set_title(title)
    ax.legend(loc="lower right")
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: float = 100) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, PNG when none) without ever leaving half a file.

    The figure is written to a temporary file in the same folder and renamed over ``path``, so a
    reader sees either the old file or the complete new one. Missing parent folders are created.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise PosekitError(f"cannot save a figure as {path}: expected one of the suffixes {', '.join(sorted(supported))}")
    with atomic_write(path) as file:
        fig.savefig(file, format=fmt, dpi=dpi)
    return path


# ------------------------------------------------------------------------------------------
# Drawing tracked poses into the frame itself (video)
# ------------------------------------------------------------------------------------------

# The colour table of skeleton_parts, in 8-bit RGB.
_SIDE_RGB = np.round(_JOINT_RGB * 255).astype(np.uint8)
# A caption (untrained weights) is white on a filled red box: legible over any scene.
CAPTION_RGB, CAPTION_BOX_RGB = (255, 255, 255), (192, 0, 0)


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
        caption: a line written at the top left, white on a filled red box (e.g. that the weights
            are untrained).
    """
    from PIL import Image, ImageDraw, ImageFont

    image = np.array(rgb, dtype=np.uint8, copy=True)
    track_ids = np.asarray(track_ids, np.int64).reshape(-1)
    font = ImageFont.load_default(size=max(10, image.shape[0] // 40))
    if caption:
        canvas = Image.fromarray(image)
        big = ImageFont.load_default(size=max(12, image.shape[0] // 24))
        draw = ImageDraw.Draw(canvas)
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=big)
        pad = max(3, image.shape[0] // 120)
        draw.rectangle((0, 0, right - left + 2 * pad + 8, bottom - top + 2 * pad + 8), fill=CAPTION_BOX_RGB)
        draw.text((8 + pad - left, 8 + pad - top), caption, fill=CAPTION_RGB, font=big)
        image = np.array(canvas)
    if len(track_ids) == 0:
        return image
    keypoints = np.asarray(keypoints, np.float64).reshape(len(track_ids), -1, 3)
    colors = track_colors(track_ids)  # (N, 3)
    radius = max(1, image.shape[0] // 360)
    coco = keypoints.shape[1] == NUM_KEYPOINTS
    xy = keypoints[..., :2]
    if coco:
        parts = skeleton_parts(keypoints, score_threshold)
        visible, shown, limbs = parts.visible, parts.limb_visible, parts.limbs  # (N, K), (N, L), (L, 2)
        person = np.broadcast_to(np.arange(len(track_ids))[:, None], shown.shape)[shown]
        points, segment = _segment_points(xy[:, limbs[:, 0]][shown], xy[:, limbs[:, 1]][shown])
        _stamp(image, points, colors[person][segment], radius)
    else:
        visible = _visible_joints(keypoints, score_threshold)
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
