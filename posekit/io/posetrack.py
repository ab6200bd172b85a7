"""PoseTrack files: ground truth and tracks in the 2018 (COCO-like) and 2017 (``annolist``) layouts.

Everything is read into one layout, PoseTrack 2018's: 17 keypoint slots in COCO order
(:data:`POSETRACK18_KEYPOINTS`, the ear slots never annotated). A 2017 file's 15 joint ids and a
2018 file that names PoseTrack joints in another order are put in those slots by name; a file with
other names (posekit's own COCO names) is taken slot by slot.

Rules of the official evaluation (``poseval``) that reading follows: a joint written as
``(0, 0, 0)`` is absent (any other triple, even with ``v = 0``, is an annotated joint or a
prediction); ``ignore_regions_x`` / ``ignore_regions_y`` (2018) or ``ignore_regions`` (2017) are
per-frame polygons. Annotations are matched to frames by ``image_id``, never by list position.

Every malformed field is one :class:`~posekit.errors.AnnotationError` naming the file, the field
and what was expected; values that cannot be scored (a NaN joint, a missing or NaN head box) are
left out with a warning that counts them.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from pathlib import PurePosixPath

import numpy as np

from posekit.errors import AnnotationError
from posekit.io.files import read_json

# PoseTrack's 15 joints in the order of the official evaluation (the ids of the 2017 layout).
POSETRACK_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist", "right_elbow",
    "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "head_bottom", "nose", "head_top",
)
# The 17 slots of a PoseTrack 2018 file: COCO's order, head_bottom and head_top in the eye slots, ears unused.
POSETRACK18_KEYPOINTS = (
    "nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
# A sequence folder the official evaluation understands: its video id, then mpii / bonn / mpiinew.
SEQUENCE_NAME = re.compile(r"^\d+_(mpii|bonn|mpiinew)(_.*)?$")
_SCHEMA = (
    "a PoseTrack JSON: 2018 layout ('images' with id and file_name, 'annotations' with image_id, track_id, "
    "keypoints [x, y, v] * K and, for ground truth, bbox_head [x, y, w, h]) or 2017 layout ('annolist')"
)


@dataclasses.dataclass
class AnnotatedFrame:
    """The annotated people of one frame.

    Attributes:
        track_ids: (G,) int. keypoints: (G, K, 3) x, y, v (v > 0: annotated). head_boxes: (G, 4) x, y, w, h.
        ignore_regions: polygons, each (V, 2) x, y: joints inside are not scored (PoseTrack's crowds).
        image_name: the frame's file name as written in the file ('' when built in code).
    """

    track_ids: np.ndarray
    keypoints: np.ndarray
    head_boxes: np.ndarray
    ignore_regions: tuple[np.ndarray, ...] = ()
    image_name: str = ""


@dataclasses.dataclass
class PredictedFrame:
    """The tracked people of one frame as read from a file.

    Attributes:
        track_ids: (P,) int. keypoints: (P, K, 3) x, y, score (NaN score: joint absent). image_name: as written.
    """

    track_ids: np.ndarray
    keypoints: np.ndarray
    image_name: str


@dataclasses.dataclass
class _Image:
    name: str
    labeled: bool
    regions: tuple[np.ndarray, ...]
    people: list[dict]


def load_posetrack(path: str | os.PathLike) -> list[AnnotatedFrame | None]:
    """Ground-truth frames of a PoseTrack JSON (either layout), in the order of its images.

    A frame marked ``is_labeled: false`` is None. People without a head box (or with a NaN one)
    and NaN joints cannot be scored: they are left out, with a warning.

    Raises:
        AnnotationError: the file is missing, not JSON, or a field is missing or of the wrong kind.
    """
    images, num_slots = _images(read_json(path, AnnotationError, _SCHEMA), str(path))
    frames: list[AnnotatedFrame | None] = []
    left_out = {"people without a head box": 0, "people with a NaN or empty head box": 0, "NaN joints": 0}
    for image in images:
        if not image.labeled:
            frames.append(None)
            continue
        people = []
        for person in image.people:
            box = person["head_box"]
            if box is None:
                left_out["people without a head box"] += 1
            elif not (np.isfinite(box).all() and box[2] ** 2 + box[3] ** 2 > 0):
                left_out["people with a NaN or empty head box"] += 1
            else:
                people.append(person)
        keypoints = np.array([p["keypoints"] for p in people], np.float64).reshape(len(people), num_slots, 3)
        finite = np.isfinite(keypoints).all(-1)
        left_out["NaN joints"] += int((~finite).sum())
        annotated = finite & (keypoints != 0).any(-1)  # poseval: (0, 0, 0) is "not annotated"
        keypoints = np.where(finite[..., None], keypoints, 0.0)
        keypoints[..., 2] = annotated
        frames.append(AnnotatedFrame(
            np.array([p["track_id"] for p in people], np.int64), keypoints,
            np.array([p["head_box"] for p in people], np.float64).reshape(-1, 4), image.regions, image.name,
        ))
    problems = [f"{count} {what}" for what, count in left_out.items() if count]
    if problems:
        warnings.warn(f"{path}: {', '.join(problems)} left out of the ground truth: they cannot be scored", stacklevel=2)
    return frames


def load_tracks(source: str | os.PathLike | dict, name: str | None = None) -> list[PredictedFrame]:
    """Predicted tracks of a PoseTrack JSON (either layout; a file or a document already parsed), in image order.

    Joints written as ``(0, 0, 0)`` or with a NaN get a NaN score (absent); the score of a joint
    is its entry in ``scores`` where there is one, else the third number.

    Raises:
        AnnotationError: the file is missing, not JSON, or a field is missing or of the wrong kind.
    """
    if isinstance(source, dict):
        content, name = source, name or "tracks"
    else:
        content, name = read_json(source, AnnotationError, _SCHEMA), str(source)
    frames = []
    images, num_slots = _images(content, name)
    for image in images:
        keypoints = np.array([p["keypoints"] for p in image.people], np.float64).reshape(len(image.people), num_slots, 3)
        absent = ~np.isfinite(keypoints).all(-1) | (keypoints == 0).all(-1)  # poseval: (0, 0, 0) is no prediction
        for person, points in zip(image.people, keypoints):
            if person["scores"] is not None:
                points[:, 2] = person["scores"]
        keypoints[..., 2] = np.where(absent, np.nan, keypoints[..., 2])
        ids = np.array([p["track_id"] for p in image.people], np.int64)
        if len(np.unique(ids)) < len(ids):
            raise AnnotationError(f"{name}: image {image.name!r} has the same track_id twice; expected one person per id and frame")
        frames.append(PredictedFrame(ids, keypoints, image.name))
    return frames


def official_posetrack(document: dict, sequence: str, joint_threshold: float) -> dict:
    """A tracks document (posekit's :func:`~posekit.track.to_posetrack`) as the official evaluation reads it.

    Keypoint names are PoseTrack 2018's (slot by slot: a COCO network's eyes go to head_bottom and
    head_top, its ears to the unused slots), each ``file_name`` is ``SEQUENCE/frame`` (the official
    code takes the video from the folder), and joints scoring under ``joint_threshold`` are written
    absent, ``(0, 0, 0)``: the official evaluation counts every joint it is given, so the file
    holds exactly the joints posekit's evaluation counts.

    Args:
        sequence: the PoseTrack sequence folder, e.g. ``images/val/000342_mpii_test`` (its last part
            must read ``NNNNNN_mpii...``, ``_bonn`` or ``_mpiinew``; :func:`sequence_folder` finds it).

    Raises:
        AnnotationError: the sequence name or a frame name (a number, as ``000042.jpg``) does not fit.
    """
    folder = PurePosixPath(sequence)
    if not SEQUENCE_NAME.match(folder.name):
        raise AnnotationError(f"{sequence!r}: expected a PoseTrack sequence folder name such as 000342_mpii_test "
                              "(digits, then mpii, bonn or mpiinew): the official evaluation reads the video from it")
    images = []
    for image in document["images"]:
        stem = PurePosixPath(image["file_name"]).stem
        if not stem.isdigit() or int(stem) >= 10_000:
            raise AnnotationError(f"frame {image['file_name']!r}: expected a frame number under 10000 as its name "
                                  "(000042.jpg), which the official evaluation reads")
        images.append({**image, "file_name": str(folder / PurePosixPath(image["file_name"]).name)})
    annotations = []
    for entry in document["annotations"]:
        points = np.array(entry["keypoints"], np.float64).reshape(-1, 3)
        scores = np.asarray(entry.get("scores") or points[:, 2], np.float64)
        kept = scores >= joint_threshold
        points = np.where(kept[:, None], points, 0.0)
        annotations.append({**entry, "keypoints": points.ravel().tolist(), "scores": np.where(kept, scores, 0.0).tolist()})
    categories = [{**document["categories"][0], "keypoints": list(POSETRACK18_KEYPOINTS)}]
    return {"images": images, "annotations": annotations, "categories": categories}


# ------------------------------------------------------------------------------------------
# Reading either layout into frames of people
# ------------------------------------------------------------------------------------------


def _images(content: object, name: str) -> tuple[list[_Image], int]:
    """The images of either layout with their people, and the number of keypoint slots they have."""
    if isinstance(content, dict) and "annolist" in content:
        return _images_2017(content["annolist"], name), len(POSETRACK18_KEYPOINTS)
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise AnnotationError(f"{name}: expected {_SCHEMA}")
    entries = content.get("annotations")
    if entries is None:  # a video in which nobody was tracked
        entries = []
    _expect(isinstance(entries, list), name, "annotations", "a list")
    num_slots, slots = _layout(content.get("categories"), entries, name)
    images: list[_Image] = []
    index: dict[object, int] = {}
    for i, image in enumerate(content["images"]):
        where = f"images[{i}]"
        _expect(isinstance(image, dict), name, where, "an object")
        _expect("id" in image and _hashable(image["id"]), name, f"{where}.id", "a number or string")
        _expect(image["id"] not in index, name, f"{where}.id", f"an id of one image only ({image['id']!r} is repeated)")
        file_name = image.get("file_name", "")
        _expect(isinstance(file_name, str), name, f"{where}.file_name", "a string")
        index[image["id"]] = i
        images.append(_Image(file_name, image.get("is_labeled", True) is not False, _regions_2018(image, name, where), []))
    for i, entry in enumerate(entries):
        where = f"annotations[{i}]"
        _expect(isinstance(entry, dict), name, where, "an object")
        image_id = entry.get("image_id")
        _expect(_hashable(image_id) and image_id in index, name, f"{where}.image_id",
                f"the id of an image listed in 'images' (got {image_id!r})")
        keypoints = entry.get("keypoints")
        if keypoints is None or keypoints == []:  # a box without a pose: nothing to score
            continue
        points = _numbers(keypoints, name, f"{where}.keypoints", 3 * num_slots)
        scores = entry.get("scores")
        if scores is not None and scores != []:
            scores = _numbers(scores, name, f"{where}.scores", num_slots)
        else:
            scores = None
        box = entry.get("bbox_head")
        images[index[image_id]].people.append({
            "track_id": _track_id(entry.get("track_id"), name, f"{where}.track_id"),
            "keypoints": _to_slots(points.reshape(-1, 3), slots),
            "scores": None if scores is None else _to_slots(scores[:, None], slots)[:, 0],
            "head_box": None if box is None else _numbers(box, name, f"{where}.bbox_head", 4),
        })
    return images, (num_slots if slots is None else len(POSETRACK18_KEYPOINTS))


def _layout(categories: object, entries: list, name: str) -> tuple[int, np.ndarray | None]:
    """The file's number of keypoint slots, and where each goes among the 17 PoseTrack 2018 slots
    (None: slot by slot, for keypoint names that are not PoseTrack's)."""
    names = None
    if isinstance(categories, list) and categories and isinstance(categories[0], dict):
        names = categories[0].get("keypoints")
        _expect(names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names)), name,
                "categories[0].keypoints", "a list of joint names")
    if names:
        if set(names) <= set(POSETRACK18_KEYPOINTS) and len(set(names)) == len(names):
            return len(names), np.array([POSETRACK18_KEYPOINTS.index(n) for n in names])
        return len(names), None
    lengths = {len(e["keypoints"]) for e in entries if isinstance(e, dict) and isinstance(e.get("keypoints"), list) and e["keypoints"]}
    _expect(len(lengths) <= 1 and all(n % 3 == 0 for n in lengths), name, "annotations[].keypoints",
            "the same number of [x, y, v] triples in every annotation")
    return (lengths.pop() // 3 if lengths else 0), None


def _to_slots(values: np.ndarray, slots: np.ndarray | None) -> np.ndarray:
    """(N, C) values of the file's slots -> the same in the common layout (absent slots all zeros)."""
    if slots is None:
        return values
    out = np.zeros((len(POSETRACK18_KEYPOINTS), values.shape[1]))
    out[slots] = values
    return out


def _regions_2018(image: dict, name: str, where: str) -> tuple[np.ndarray, ...]:
    xs, ys = image.get("ignore_regions_x"), image.get("ignore_regions_y")
    if xs is None and ys is None:
        return ()
    _expect(isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys), name,
            f"{where}.ignore_regions_x/_y", "two lists with one list of coordinates per region each")
    regions = []
    for r, (x, y) in enumerate(zip(xs, ys)):
        _expect(isinstance(x, list) and isinstance(y, list) and len(x) == len(y), name,
                f"{where}.ignore_regions_x/_y[{r}]", "as many x as y coordinates")
        regions.append(np.column_stack([_numbers(x, name, f"{where}.ignore_regions_x[{r}]", len(x)),
                                        _numbers(y, name, f"{where}.ignore_regions_y[{r}]", len(y))]).reshape(-1, 2))
    return tuple(regions)


def _images_2017(annolist: object, name: str) -> list[_Image]:
    _expect(isinstance(annolist, list), name, "annolist", "a list of frames")
    images = []
    for i, frame in enumerate(annolist):
        where = f"annolist[{i}]"
        _expect(isinstance(frame, dict), name, where, "an object")
        image = frame.get("image")
        _expect(isinstance(image, list) and image and isinstance(image[0], dict) and isinstance(image[0].get("name"), str),
                name, f"{where}.image", "[{'name': file name}]")
        regions = []
        for r, region in enumerate(frame.get("ignore_regions") or []):
            points = region.get("point") if isinstance(region, dict) else None
            _expect(isinstance(points, list), name, f"{where}.ignore_regions[{r}].point", "a list of points")
            regions.append(np.array([[_single(p, "x", name, f"{where}.ignore_regions[{r}]"),
                                      _single(p, "y", name, f"{where}.ignore_regions[{r}]")] for p in points]).reshape(-1, 2))
        people = []
        rects = frame.get("annorect") or []
        _expect(isinstance(rects, list), name, f"{where}.annorect", "a list of people")
        for j, rect in enumerate(rects):
            at = f"{where}.annorect[{j}]"
            _expect(isinstance(rect, dict), name, at, "an object")
            annopoints = rect.get("annopoints")
            points = annopoints[0].get("point") if isinstance(annopoints, list) and annopoints and isinstance(annopoints[0], dict) else None
            if not points:
                continue
            _expect(isinstance(points, list), name, f"{at}.annopoints[0].point", "a list of points")
            keypoints = np.zeros((len(POSETRACK18_KEYPOINTS), 3))
            scores = np.zeros(len(POSETRACK18_KEYPOINTS)) if any(isinstance(p, dict) and "score" in p for p in points) else None
            for k, point in enumerate(points):
                joint = _single(point, "id", name, f"{at}.annopoints[0].point[{k}]")
                _expect(joint in range(len(POSETRACK_JOINTS)), name, f"{at}.annopoints[0].point[{k}].id", "a joint id 0..14")
                slot = POSETRACK18_KEYPOINTS.index(POSETRACK_JOINTS[int(joint)])
                keypoints[slot] = (_single(point, "x", name, at), _single(point, "y", name, at), 1.0)
                if scores is not None and "score" in point:
                    scores[slot] = _single(point, "score", name, at)
            has_box = all(key in rect for key in ("x1", "y1", "x2", "y2"))
            corners = [_single(rect, key, name, at) for key in ("x1", "y1", "x2", "y2")] if has_box else None
            people.append({
                "track_id": _track_id(rect.get("track_id"), name, f"{at}.track_id"), "keypoints": keypoints, "scores": scores,
                "head_box": None if corners is None else np.array([corners[0], corners[1], corners[2] - corners[0], corners[3] - corners[1]]),
            })
        labeled = frame.get("is_labeled", [1])
        images.append(_Image(image[0]["name"], labeled not in ([0], 0, False), tuple(regions), people))
    return images


# ------------------------------------------------------------------------------------------
# Field checks: each failure names the file, the field and what was expected
# ------------------------------------------------------------------------------------------


def _expect(ok: bool, name: str, field: str, expected: str) -> None:
    if not ok:
        raise AnnotationError(f"{name}: {field}: expected {expected}")


def _hashable(value: object) -> bool:
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _numbers(values: object, name: str, field: str, length: int) -> np.ndarray:
    """A list of ``length`` numbers (null read as NaN) as a float array."""
    ok = isinstance(values, list) and len(values) == length and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
    _expect(ok, name, field, f"a list of {length} numbers" + (f" (got {len(values)})" if isinstance(values, list) else ""))
    return np.array([math.nan if v is None else v for v in values], np.float64)


def _single(entry: object, key: str, name: str, field: str) -> float:
    """A 2017-layout value: a number or a list of one number."""
    value = entry.get(key) if isinstance(entry, dict) else None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    _expect(isinstance(value, (int, float)) and not isinstance(value, bool), name, f"{field}.{key}", "a number (or a list of one)")
    return float(value)


def _track_id(value: object, name: str, field: str) -> int:
    """A track id: an integer, a string of digits, or a list of one of those (the 2017 layout)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    _expect(isinstance(value, int) and not isinstance(value, bool) and value >= 0, name, field,
            f"a whole number >= 0 (got {value!r})")
    return value


def sequence_folder(source: str | os.PathLike) -> str:
    """The PoseTrack sequence folder a video or folder of frames stands for, as the official format
    names frames: a folder's last three parts (``images/val/000342_mpii_test``), a video's name
    without its suffix (``000342_mpii_test.mp4`` -> ``000342_mpii_test``).

    Raises:
        AnnotationError: the name is not a PoseTrack sequence's (digits, then mpii, bonn or mpiinew).
    """
    path = PurePosixPath(str(source).replace("\\", "/"))
    folder = str(PurePosixPath(*path.parts[-3:])) if os.path.isdir(source) else path.stem
    if not SEQUENCE_NAME.match(PurePosixPath(folder).name):
        raise AnnotationError(f"{source}: expected a PoseTrack sequence such as 000342_mpii_test (digits, then mpii, "
                              "bonn or mpiinew) as the name of the folder or video: the official evaluation reads the "
                              "video from it")
    return folder
