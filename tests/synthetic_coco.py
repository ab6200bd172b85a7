"""A small synthetic COCO person-keypoints dataset of stick figures, for tests (not part of the package)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from posekit.coco17 import KEYPOINT_NAMES, PERSON_CATEGORY_ID, SKELETON
from posekit.files import atomic_write

# A standing person seen from the front, (x, y) in units of body height from the top centre.
_TEMPLATE_POSE = np.array(
    [
        [0.00, 0.08], [0.03, 0.06], [-0.03, 0.06], [0.06, 0.07], [-0.06, 0.07],
        [0.13, 0.20], [-0.13, 0.20], [0.17, 0.36], [-0.17, 0.36], [0.19, 0.50], [-0.19, 0.50],
        [0.08, 0.53], [-0.08, 0.53], [0.09, 0.74], [-0.09, 0.74], [0.10, 0.95], [-0.10, 0.95],
    ]
)


def make_synthetic_coco(
    out_dir: str | os.PathLike,
    num_images: int = 8,
    people_per_image: int = 3,
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write a small COCO person-keypoints dataset of stick figures, for tests and demos.

    Each image (PNG, random background) holds ``people_per_image`` stick figures of random size
    and place, facing the camera or away (left/right joints swap sides). About 10% of joints are
    unlabelled (v=0) and 10% labelled-but-occluded (v=1); boxes enclose all joints plus a margin
    and ``area`` is the box area.

    Returns:
        (annotation file ``out_dir/annotations.json``, image folder ``out_dir/images``).
    """
    rng = np.random.default_rng(seed)
    width, height = image_size
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        heights = rng.uniform(0.35, 0.8, people_per_image) * height
        facing = np.where(rng.random(people_per_image) < 0.5, 1.0, -1.0)
        centres_x = rng.uniform(0.25 * heights, width - 0.25 * heights)
        tops = rng.uniform(0, height - heights)
        poses = _TEMPLATE_POSE * np.stack([facing, np.ones(people_per_image)], 1)[:, None] * heights[:, None, None]
        poses += np.stack([centres_x, tops], 1)[:, None] + rng.normal(0, 0.015, poses.shape) * heights[:, None, None]
        poses = np.clip(poses, 0, [width - 1, height - 1])
        visibility = rng.choice([0, 1, 2], size=poses.shape[:2], p=[0.1, 0.1, 0.8])
        margins = 0.08 * heights[:, None]
        top_left = np.maximum(poses.min(1) - margins, 0)
        bottom_right = np.minimum(poses.max(1) + margins, [width - 1, height - 1])
        boxes = np.concatenate([top_left, bottom_right - top_left], 1)
        labelled = np.concatenate([poses * (visibility[..., None] > 0), visibility[..., None]], -1)

        canvas = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(40, 200, 3)))
        draw = ImageDraw.Draw(canvas)
        for pose, size in zip(poses, heights):
            line_width = max(2, int(size / 40))
            for limb, (a, b) in enumerate(SKELETON):
                colour = (255, 60 + 10 * limb, 40) if limb % 2 else (40, 60 + 10 * limb, 255)
                draw.line([tuple(pose[a]), tuple(pose[b])], fill=colour, width=line_width)
            for x, y in pose:
                draw.ellipse([x - line_width, y - line_width, x + line_width, y + line_width], fill=(250, 250, 250))
        file_name = f"{image_id:012d}.png"
        with atomic_write(image_dir / file_name) as file:
            canvas.save(file, format="PNG")
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        annotations += [
            {
                "id": len(annotations) + person + 1,
                "image_id": image_id,
                "category_id": PERSON_CATEGORY_ID,
                "iscrowd": 0,
                "bbox": [round(float(v), 2) for v in box],
                "area": float(box[2] * box[3]),
                "keypoints": [round(float(v), 2) for v in keypoints.reshape(-1)],
                "num_keypoints": int((keypoints[:, 2] > 0).sum()),
            }
            for person, (box, keypoints) in enumerate(zip(boxes, labelled))
        ]
    categories = [
        {
            "id": PERSON_CATEGORY_ID,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(KEYPOINT_NAMES),
            "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
        }
    ]
    ann_file = out_dir / "annotations.json"
    with atomic_write(ann_file, "w") as file:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, file)
    return ann_file, image_dir
