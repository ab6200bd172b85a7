"""Synthetic keypoint datasets in COCO format: people-like figures with exact joints, for tests and demos.

Each figure is a small articulated body: a torso polygon, thick arms and legs bent at random
angles, and a head. Figures facing the camera have a face (eyes and nose) and their left side
on the image's right; figures seen from behind have a plain head and their left side on the
left. That cue survives a horizontal flip with the joint swap, as a real body's does, so a
network can learn left from right. Backgrounds are textured (smooth noise or stripes) so the
figures must be found, not merely thresholded. A ResNet-18 at 64x48 input learns the joints in
minutes on a CPU (``tests/test_train.py`` holds the numbers).

The joints come out in any :class:`~posekit.core.keypoints.KeypointSet` whose names are among
:data:`BODY_POINTS` (COCO-17's names and a few more), e.g. :data:`HANDS_FEET` with five joints.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from posekit.core.coco17 import KEYPOINT_NAMES, PERSON_CATEGORY_ID
from posekit.core.keypoints import COCO17, KeypointSet
from posekit.errors import PosekitError
from posekit.io.files import atomic_write, write_json

# Body proportions in units of body height, x to the person's left: shoulder and hip half
# widths, limb lengths, and where the head sits above the shoulders.
SHOULDER_HALF_WIDTH = 0.13
HIP_HALF_WIDTH = 0.08
TORSO_LENGTH = 0.33
UPPER_ARM, FOREARM = 0.16, 0.14
THIGH, SHIN = 0.21, 0.21
NECK_TO_NOSE = 0.12
HEAD_RADIUS = 0.07
LIMB_WIDTH = 0.045

# Names a synthetic body can report beyond COCO-17's, each the mean of some COCO-17 joints.
_EXTRA_POINTS: dict[str, tuple[str, ...]] = {
    "head": ("nose",),
    "neck": ("left_shoulder", "right_shoulder"),
    "pelvis": ("left_hip", "right_hip"),
    "left_hand": ("left_wrist",),
    "right_hand": ("right_wrist",),
    "left_foot": ("left_ankle",),
    "right_foot": ("right_ankle",),
}
BODY_POINTS: tuple[str, ...] = KEYPOINT_NAMES + tuple(_EXTRA_POINTS)

HANDS_FEET = KeypointSet(
    names=("head", "left_hand", "right_hand", "left_foot", "right_foot"),
    skeleton=((0, 1), (0, 2), (0, 3), (0, 4)),
    flip_pairs=((1, 2), (3, 4)),
    sigmas=(0.026, 0.062, 0.062, 0.089, 0.089),  # COCO's nose, wrist and ankle sigmas
)


def body_joints(rng: np.random.Generator, count: int) -> np.ndarray:
    """Random COCO-17 poses of upright bodies 1 unit tall, feet near y = 1, centred on x = 0.

    x points to the person's left (the image's right for a figure facing the camera).
    Shape: -> (count, 17, 2) float64.
    """
    tilt = rng.normal(0, 0.1, count)  # torso lean, radians
    limbs = np.zeros((count, 2, 4))
    for side in range(2):  # the draws of one side together, in the order the bodies always used
        limbs[:, side, 0] = rng.uniform(-0.3, 2.4, count)
        limbs[:, side, 1] = limbs[:, side, 0] + rng.uniform(-0.3, 2.0, count)
        limbs[:, side, 2] = rng.uniform(-0.2, 0.6, count)
        limbs[:, side, 3] = limbs[:, side, 2] - rng.uniform(-0.1, 1.0, count)
    return posed_bodies(tilt, *np.moveaxis(limbs, 2, 0))


def posed_bodies(tilt: np.ndarray, arm: np.ndarray, forearm: np.ndarray, thigh: np.ndarray, shin: np.ndarray) -> np.ndarray:
    """COCO-17 joints of bodies 1 unit tall in given postures, as :func:`body_joints` (feet near y = 1).

    Every angle is in radians: ``tilt`` the torso lean, the others each limb segment's angle from
    hanging straight down, positive away from the body's midline (left side first).
    Shape: tilt (N,); arm, forearm, thigh, shin (N, 2) left, right -> (N, 17, 2) float64.
    """
    count = len(tilt)
    hips = np.zeros((count, 2)) + [0.0, 0.53]
    up = np.stack([np.sin(tilt), -np.cos(tilt)], 1)  # hips -> neck
    across = np.stack([np.cos(tilt), np.sin(tilt)], 1)  # toward the person's left
    neck = hips + TORSO_LENGTH * up
    joints = np.zeros((count, 17, 2))
    head = neck + NECK_TO_NOSE * up
    joints[:, 0] = head
    for index, (dx, dy) in zip(range(1, 5), ((0.03, -0.02), (-0.03, -0.02), (0.06, -0.01), (-0.06, -0.01))):
        joints[:, index] = head + dx * across - dy * up
    for side, sign in ((0, 1.0), (1, -1.0)):
        shoulder = neck + sign * SHOULDER_HALF_WIDTH * across
        hip = hips + sign * HIP_HALF_WIDTH * across
        elbow = shoulder + UPPER_ARM * _direction(arm[:, side], sign, tilt)
        wrist = elbow + FOREARM * _direction(forearm[:, side], sign, tilt)
        knee = hip + THIGH * _direction(thigh[:, side], sign, tilt * 0.3)
        ankle = knee + SHIN * _direction(shin[:, side], sign, tilt * 0.3)
        for name, point in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                            ("hip", hip), ("knee", knee), ("ankle", ankle)):
            joints[:, KEYPOINT_NAMES.index(f"{'left' if side == 0 else 'right'}_{name}")] = point
    return joints


def _direction(angle: np.ndarray, sign: float, tilt: np.ndarray) -> np.ndarray:
    """Unit vectors ``angle`` radians from hanging straight down, outward on side ``sign``. Shape: (N, 2)."""
    total = angle + sign * tilt
    return np.stack([sign * np.sin(total), np.cos(total)], 1)


def points_for(keypoint_set: KeypointSet, joints17: np.ndarray) -> np.ndarray:
    """The joints of ``keypoint_set`` from COCO-17 body joints.

    Shape: joints17 (N, 17, 2) -> (N, K, 2).
    Raises PosekitError for a name a synthetic body does not have (see :data:`BODY_POINTS`).
    """
    unknown = [name for name in keypoint_set.names if name not in BODY_POINTS]
    if unknown:
        raise PosekitError(
            f"synthetic bodies have no joint(s) {', '.join(unknown)}; expected names among {', '.join(BODY_POINTS)}"
        )
    # (K, 17) averaging matrix: a COCO-17 joint is itself, an extra point a mean of some.
    mixing = np.zeros((keypoint_set.num_keypoints, 17))
    for row, name in enumerate(keypoint_set.names):
        sources = _EXTRA_POINTS.get(name, (name,))
        mixing[row, [KEYPOINT_NAMES.index(s) for s in sources]] = 1 / len(sources)
    return np.einsum("kj,njc->nkc", mixing, joints17)


def textured_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Smooth colour noise or coloured stripes. Shape: size (width, height) -> (H, W, 3) uint8."""
    width, height = size
    if rng.random() < 0.5:
        coarse = rng.uniform(30, 220, (max(2, height // 24), max(2, width // 24), 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), dtype=np.float64)
        return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    angle, period = rng.uniform(0, np.pi), rng.uniform(8, 40)
    y, x = np.mgrid[0:height, 0:width]
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)
    colours = rng.uniform(30, 220, (2, 3))
    return (colours[0] + wave[..., None] * (colours[1] - colours[0])).astype(np.uint8)


def draw_figure(draw: ImageDraw.ImageDraw, joints17: np.ndarray, height: float, facing: float,
                rng: np.random.Generator) -> None:
    """Paint one body (joints17 (17, 2) in image px, ``height`` px tall) onto ``draw``."""
    clothes = tuple(int(c) for c in rng.integers(0, 256, 3))
    skin = tuple(int(c) for c in rng.integers(150, 256, 3))
    limb = max(2, int(LIMB_WIDTH * height))
    j = {name: tuple(joints17[i]) for i, name in enumerate(KEYPOINT_NAMES)}
    draw.polygon([j["left_shoulder"], j["right_shoulder"], j["right_hip"], j["left_hip"]], fill=clothes)
    for side in ("left", "right"):
        for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle")):
            draw.line([j[f"{side}_{a}"], j[f"{side}_{b}"]], fill=clothes, width=limb)
        # Round caps on every joint, so each labelled point is painted (polygon corners and
        # line ends alone can miss their exact pixel).
        for end in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
            x, y = j[f"{side}_{end}"]
            draw.ellipse([x - limb / 2, y - limb / 2, x + limb / 2, y + limb / 2], fill=skin if end == "wrist" else clothes)
    centre = (joints17[3] + joints17[4]) / 2
    radius = HEAD_RADIUS * height
    draw.ellipse([centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius],
                 fill=skin if facing > 0 else (60, 40, 20))
    if facing > 0:  # a face: the eyes and nose seen from the front
        dot = max(1.0, radius / 5)
        for x, y in joints17[:3]:
            draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=(20, 20, 20))


def make_synthetic_coco(
    out_dir: str | os.PathLike,
    num_images: int = 8,
    people_per_image: int = 3,
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
    keypoint_set: KeypointSet | None = None,
) -> tuple[Path, Path]:
    """Write a COCO keypoints dataset of synthetic people: ``out_dir/annotations.json`` and ``out_dir/images/``.

    Each image (PNG, ``image_size`` = (width, height)) holds ``people_per_image`` figures of
    random size, pose and facing, side by side (each in its own vertical strip, so they barely
    overlap). Keypoints are exact to 0.01 px (the points the figure is drawn from); a joint outside the
    image is unlabelled (v = 0, x = y = 0), every other joint is labelled visible (v = 2).
    Boxes enclose the labelled joints and the head, plus a margin; ``area`` is the box area.
    The result depends only on the arguments. Every file is written atomically.

    Args:
        keypoint_set: the joints to write; COCO-17 when None. Names must be among
            :data:`BODY_POINTS` (see :data:`HANDS_FEET`).

    Returns:
        (annotation file, image folder).
    """
    keypoint_set = keypoint_set or COCO17
    rng = np.random.default_rng(seed)
    width, height = image_size
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    images, annotations = [], []
    strip = width / people_per_image
    for image_id in range(1, num_images + 1):
        heights = rng.uniform(0.45, 0.9, people_per_image) * height
        heights = np.minimum(heights, 1.6 * strip)
        facing = np.where(rng.random(people_per_image) < 0.5, 1.0, -1.0)
        body = body_joints(rng, people_per_image) * np.stack([facing, np.ones(people_per_image)], 1)[:, None]
        centres_x = (np.arange(people_per_image) + 0.5 + rng.uniform(-0.15, 0.15, people_per_image)) * strip
        tops = rng.uniform(-0.05, 1.0, people_per_image) * (height - heights)
        joints17 = body * heights[:, None, None] + np.stack([centres_x, tops], 1)[:, None]
        canvas = Image.fromarray(textured_background(rng, image_size))
        draw = ImageDraw.Draw(canvas)
        for pose, size, face in zip(joints17, heights, facing):
            draw_figure(draw, pose, size, face, rng)
        file_name = f"{image_id:012d}.png"
        with atomic_write(image_dir / file_name) as file:
            canvas.save(file, format="PNG")
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})

        points = points_for(keypoint_set, joints17)
        inside = ((points >= 0) & (points <= [width - 1, height - 1])).all(2)
        labelled = np.where(inside[..., None], points, 0.0)
        # The head reaches above the eyes: include it in the box as a person detector would.
        head_top = joints17[:, 0] - [0, 2 * HEAD_RADIUS] * heights[:, None]
        extent = np.concatenate([np.where(inside[..., None], points, np.nan), head_top[:, None]], 1)
        margin = 0.05 * heights[:, None]
        top_left = np.clip(np.nanmin(extent, 1) - margin, 0, None)
        bottom_right = np.minimum(np.nanmax(extent, 1) + margin, [width - 1, height - 1])
        boxes = np.concatenate([top_left, bottom_right - top_left], 1)
        rows = np.concatenate([labelled, np.where(inside, 2.0, 0.0)[..., None]], 2)
        annotations += [
            {
                "id": len(annotations) + person + 1,
                "image_id": image_id,
                "category_id": PERSON_CATEGORY_ID,
                "iscrowd": 0,
                "bbox": [round(float(v), 2) for v in box],
                "area": round(float(box[2] * box[3]), 2),
                "keypoints": [round(float(v), 2) for v in row.reshape(-1)],
                "num_keypoints": int(inside[person].sum()),
            }
            for person, (box, row) in enumerate(zip(boxes, rows))
        ]
    ann_file = out_dir / "annotations.json"
    write_json(ann_file, {"images": images, "annotations": annotations, "categories": [keypoint_set.coco_category()]})
    return ann_file, image_dir
