"""Writes the PoseTrack 2018 inputs of tests/data/poseval: ground truth and three prediction folders.

Run from the repository root: python tests/data/poseval/make_inputs.py (numpy only; the files are
committed, this says how they were made). README.md next to it says how poseval was run on them.

Three videos of 8 frames, 2-3 people each, every joint's error and score drawn from one seed:
- gt/: 15 annotated joints per person (the ear slots are never annotated), about 1 in 12 joints
  not annotated, a head box per person; video 000101 has an ignore region over a bystander (who
  is predicted but not annotated) and over one annotated person's right arm in frames 2-5.
- pred/: ground truth plus jitter (2.5 px), 1 in 15 joints 25 px off (a miss and a false
  positive), ears predicted near the head; 000101: the bystander predicted; 000202: the two
  people's ids swapped from frame 4, one person missed in frames 2-3, a false person in frame 5;
  000303: a person re-identified under a new id from frame 5. Scores distinct (no ties).
- pred_empty/: pred/ with frames 3 and 6 of 000202 holding no person.
- pred_tied/: pred/ with every score rounded to one decimal (ties everywhere).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
NAMES = ["nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
         "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
         "right_ankle"]
EARS = (3, 4)
# A standing person about 200 px tall, (x, y) per slot relative to the hip centre; ears unused.
BODY = np.array([[0, -150], [0, -130], [0, -185], [0, 0], [0, 0], [25, -120], [-25, -120], [35, -80], [-35, -80],
                 [40, -40], [-40, -40], [15, 0], [-15, 0], [18, 50], [-18, 50], [20, 100], [-20, 100]], np.float64)
VIDEOS = {"000101_mpii_test": 3, "000202_bonn_test": 2, "000303_mpiinew_test": 2}  # name: people
FRAMES = 8


def main() -> None:
    rng = np.random.default_rng(2026)
    truth, predictions = {}, {}
    for v, (sequence, people) in enumerate(VIDEOS.items()):
        starts = np.array([[150 + 220 * p, 300 + 20 * p] for p in range(people)], np.float64)
        speeds = rng.uniform(-6, 6, (people, 2))
        images, gt, pred = [], [], []
        for f in range(FRAMES):
            image_id = 10_000 * (v + 1) + f
            image = {"id": image_id, "file_name": f"images/val/{sequence}/{f:06d}.jpg", "is_labeled": True}
            if sequence.startswith("000101") and 2 <= f <= 5:  # over the bystander and person 0's right arm
                image["ignore_regions_x"] = [[760, 900, 900, 760], [60, 135, 135, 60]]
                image["ignore_regions_y"] = [[120, 120, 420, 420], [190, 190, 290, 290]]
            images.append(image)
            for p in range(people):
                joints = starts[p] + speeds[p] * f + BODY
                annotated = rng.random(17) > 1 / 12
                annotated[list(EARS)] = False
                head = joints[2]
                gt.append({"image_id": image_id, "track_id": p, "id": image_id * 10 + p,
                           "bbox_head": [round(head[0] - 18, 2), round(head[1] - 10, 2), 36.0, 48.0],
                           "keypoints": _triples(joints, annotated, np.ones(17))})
                if sequence.startswith("000202") and p == 1 and f in (2, 3):
                    continue  # missed
                guess = joints + rng.normal(0, 2.5, (17, 2))
                guess[rng.random(17) < 1 / 15] += 25.0
                guess[list(EARS)] = head + rng.normal(0, 8, (2, 2))
                track = p
                if sequence.startswith("000202") and f >= 4:
                    track = 1 - p  # swapped
                if sequence.startswith("000303") and p == 0 and f >= 5:
                    track = 7  # re-identified
                pred.append(_prediction(image_id, track, guess, rng))
            if sequence.startswith("000101"):  # the bystander, inside the ignore region in frames 2-5
                pred.append(_prediction(image_id, 9, np.array([830.0, 380]) + BODY * 0.8 + rng.normal(0, 2, (17, 2)), rng))
            if sequence.startswith("000202") and f == 5:
                pred.append(_prediction(image_id, 5, np.array([600.0, 250]) + BODY, rng))
        category = [{"id": 1, "name": "person", "keypoints": NAMES}]
        truth[sequence] = {"images": images, "annotations": gt, "categories": category}
        predictions[sequence] = {"images": images, "annotations": pred, "categories": category}
    empty = copy.deepcopy(predictions)
    dropped = {10_000 * 2 + 3, 10_000 * 2 + 6}
    empty["000202_bonn_test"]["annotations"] = [a for a in empty["000202_bonn_test"]["annotations"]
                                               if a["image_id"] not in dropped]
    tied = copy.deepcopy(predictions)
    for document in tied.values():
        for entry in document["annotations"]:
            entry["scores"] = [round(s, 1) for s in entry["scores"]]
    for folder, documents in (("gt", truth), ("pred", predictions), ("pred_empty", empty), ("pred_tied", tied)):
        (HERE / folder).mkdir(exist_ok=True)
        for sequence, document in documents.items():
            (HERE / folder / f"{sequence}.json").write_text(json.dumps(document, separators=(",", ":")) + "\n")


def _triples(joints: np.ndarray, present: np.ndarray, visible: np.ndarray) -> list[float]:
    """Flat [x, y, v] * 17, absent joints (0, 0, 0) as PoseTrack writes them."""
    points = np.column_stack([joints.round(2), visible])
    points[~present] = 0.0
    return points.ravel().tolist()


def _prediction(image_id: int, track: int, joints: np.ndarray, rng: np.random.Generator) -> dict:
    scores = rng.uniform(0.05, 1.0, 17).round(6)
    return {"image_id": image_id, "track_id": track, "id": image_id * 10 + track, "scores": scores.tolist(),
            "keypoints": _triples(joints, np.ones(17, bool), np.ones(17))}


if __name__ == "__main__":
    main()
