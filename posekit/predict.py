"""Pose estimation for a set of images: ``posekit predict`` as a function.

    >>> estimator = posekit.PoseEstimator()
    >>> result = posekit.predict(["photos/"], estimator, out_dir="drawings")
    >>> result.json_path      # COCO keypoint results of every person; drawings/NAME_pose.jpg per image

The rules a folder of real files needs: an image id per image (from COCO-style file names, a
``boxes`` annotation file's image list, else the position), distinct output names, no input ever
overwritten, an unreadable image skipped with a warning, and which output errors end the run.
``plan_predict`` settles all of that before any network loads, so the command line fails fast.
"""
from __future__ import annotations

import errno
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from posekit.errors import PosekitError

if TYPE_CHECKING:
    import numpy as np

    from posekit.estimator import PoseEstimator
    from posekit.poses import Poses


@dataclass
class PredictPlan:
    """What :func:`plan_predict` settled: the images, their ids and drawing paths, the results file, and
    the boxes per image id (``None``: the estimator's detector finds them)."""

    paths: list[Path]
    image_ids: list[int]
    drawings: list[Path]
    json_path: Path
    out_dir: Path
    boxes: dict | None


@dataclass
class PredictResult:
    """What :func:`predict` did: images done and skipped, people found, where the outputs are."""

    images: int
    skipped: int
    people: int
    json_path: Path
    out_dir: Path
    seconds: float


def plan_predict(
    inputs: Sequence[str | Path],
    out_dir: str | Path = "posekit_output",
    json_path: str | Path | None = None,
    boxes: str | Path | None = None,
    weights: str | Path | None = None,
) -> PredictPlan:
    """Everything a prediction settles before loading a network: the images, the ``boxes`` file, an
    image id and a drawing path per image, and the results file (default ``out_dir/results.json``).
    No output may be one of the inputs (the images, ``boxes``, a ``weights`` file).

    Raises:
        PosekitError: no images, an output that is an input, a results path that cannot be written.
    """
    from posekit.io.files import check_writable, file_key
    from posekit.io.images import find_images
    from posekit.models.detect import read_boxes_file

    out_dir = Path(out_dir)
    boxes = Path(boxes) if boxes is not None else None
    paths = _without_earlier_drawings(find_images([str(item) for item in inputs]), inputs, out_dir)
    by_image, file_ids = read_boxes_file(boxes) if boxes is not None else (None, {})
    image_ids = _image_ids(paths, file_ids, boxes is not None)
    named = {file_key(path): path for path in [*paths, boxes, Path(weights) if weights else None] if path is not None}
    named.pop(None, None)  # weights given by name
    drawings = _drawing_paths(paths, out_dir, named)
    json_path = Path(json_path) if json_path is not None else out_dir / "results.json"
    if file_key(json_path) in named:
        raise PosekitError(f"--json {json_path} is the input {named[file_key(json_path)]}; expected a new file name")
    if os.path.realpath(json_path) in {os.path.realpath(drawing) for drawing in drawings}:
        raise PosekitError(f"--json {json_path} is where an annotated image goes; expected another file name")
    check_writable(json_path)  # a folder in the way fails now, not after the last image
    return PredictPlan(paths, image_ids, drawings, json_path, out_dir, by_image)


def run_predict(plan: PredictPlan, estimator: PoseEstimator) -> PredictResult:
    """Estimate, draw and record every image of ``plan``: ``NAME_pose.jpg`` drawings at the image's own
    resolution and one COCO keypoint results file, written when the last image is done (or, on Ctrl-C,
    with the images done so far, so no earlier run's results stay beside this run's drawings).

    Raises:
        ImageReadError: none of the images could be read.
        OutputError: a drawing could not be written for a reason every image would share (disk full).
    """
    import numpy as np
    from tqdm.auto import tqdm

    from posekit.errors import ImageReadError, OutputError
    from posekit.io.files import write_json
    from posekit.io.images import load_image

    start = time.perf_counter()
    no_boxes = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    results: list[dict] = []
    done = people = 0
    json_path = plan.json_path
    try:
        for path, image_id, drawing in zip(tqdm(plan.paths, desc="posekit predict", unit="image"), plan.image_ids,
                                           plan.drawings):
            try:
                image = load_image(path)
            except ImageReadError as error:
                warnings.warn(f"{error}; skipped")
                continue
            found = plan.boxes.get(image_id, no_boxes) if plan.boxes is not None else estimator.detect([image])[0]
            poses = estimator.estimate(image, *found, name=str(path))
            image_results = _coco_results(path, image_id, poses)
            try:
                _save_annotated(image, poses, drawing, draw_threshold(estimator), estimator.pretrained)
            except (OutputError, ValueError) as error:
                if isinstance(error, OutputError) and error.errno not in _ONE_FILE_ERRNOS:
                    raise  # disk full, read-only, no folder: every other image would fail the same way
                warnings.warn(f"{path}: annotated image not written ({error}); its keypoints are in {json_path}")
            results += image_results  # only now: an interrupted image is in neither the drawings nor the results
            done, people = done + 1, people + len(poses)
    except KeyboardInterrupt:
        # Replace an earlier run's results rather than leave them beside this run's drawings.
        if done:
            write_json(json_path, results)
            tqdm.write(f"posekit predict: {json_path} holds the results of the {done} images done", file=sys.stderr)
        raise
    if done == 0:
        raise ImageReadError(f"none of the {len(plan.paths)} images could be read (see the warnings above)")
    write_json(json_path, results)
    return PredictResult(done, len(plan.paths) - done, people, json_path, plan.out_dir, time.perf_counter() - start)


def predict(
    inputs: Sequence[str | Path],
    estimator: PoseEstimator,
    out_dir: str | Path = "posekit_output",
    json_path: str | Path | None = None,
    boxes: str | Path | None = None,
) -> PredictResult:
    """Keypoints of every person in image files, folders or glob patterns: a drawing per image in
    ``out_dir`` and COCO keypoint results in ``json_path`` (default ``out_dir/results.json``). With
    ``boxes`` (COCO detection results or a COCO annotation file) those boxes replace the detector.
    See :func:`plan_predict` and :func:`run_predict` for the rules."""
    return run_predict(plan_predict(inputs, out_dir, json_path, boxes), estimator)


# Output errors that concern one file name only (too long, a folder or a device in the way): that image's
# drawing is skipped with a warning and the run goes on. Others (disk full, read-only) end the run.
# None: an encoder failed (no system error number).
_ONE_FILE_ERRNOS = {errno.ENAMETOOLONG, errno.EFBIG, errno.EISDIR, errno.EINVAL, None}


# The comment every drawing of posekit predict carries: only a file with it is replaced by a later run.
DRAWING_MARK = b"posekit predict drawing"

# The largest width or height a JPEG file can have (libjpeg's limit).
_JPEG_MAX_SIDE = 65500


def _without_earlier_drawings(paths: list[Path], inputs: Sequence[str | Path], out_dir: Path) -> list[Path]:
    """Drop the NAME_pose.jpg drawings of an earlier run (they carry posekit's mark) that a folder or glob
    input found in the --out folder; files named one by one on the command line, and a user's own photo
    named like a drawing, stay inputs."""
    import warnings

    from posekit.io.files import file_key

    out, named = file_key(out_dir), {file_key(item) for item in inputs}
    earlier = {p for p in paths if p.name.endswith("_pose.jpg") and file_key(p.parent) == out and file_key(p) not in named
               and is_posekit_drawing(p)}
    if earlier:
        warnings.warn(
            f"{out_dir}: skipped {len(earlier)} drawing(s) of an earlier run (*_pose.jpg) in the output folder; "
            "name such a file on its own to use it as an input"
        )
    return [path for path in paths if path not in earlier]


def _image_ids(paths: list[Path], file_ids: dict[str, int], boxes_given: bool) -> list[int]:
    """A distinct COCO image id per path: its entry in the --boxes annotation file's image list, else the
    number of a COCO-style file name (000000000785.jpg, COCO_val2014_000000000785.jpg), else its position
    among the inputs (0-based). Numbering by position, and renumbering an id an earlier input already has
    (after the largest id), are announced in a warning.

    Raises:
        DetectionsFormatError: with --boxes, two images would share an id, so the file's boxes for that id
            could belong to either.
    """
    import re
    import warnings

    from posekit.errors import DetectionsFormatError

    named = []
    for path in paths:
        number = re.fullmatch(r"(?:.*_)?([0-9]+)", path.stem)
        # Beyond int64 no COCO tool can hold the id: such a name counts as having none.
        from_name = int(number.group(1)) if number and int(number.group(1)) < 2**63 else None
        named.append(file_ids.get(path.name, from_name))
    # An id belongs to the first input named with it; positions come second.
    owners: dict[int, Path] = {}
    for path, number in zip(paths, named):
        if number is not None:
            owners.setdefault(number, path)
    ids, by_position, renumbered = [], 0, []
    next_free = max([n for n in named if n is not None] + [len(paths) - 1]) + 1
    for index, (path, number) in enumerate(zip(paths, named)):
        wanted = index if number is None else number
        owner = owners.setdefault(wanted, path)
        if owner is not path:
            if boxes_given:
                raise DetectionsFormatError(
                    f"{owner} and {path} both get image id {wanted}, so the boxes that --boxes gives for that id "
                    "could belong to either; expected inputs with distinct ids (rename or leave out one)"
                )
            wanted, next_free = next_free, next_free + 1
            owners[wanted] = path
            renumbered.append(f"{path.name}={wanted}")
        elif number is None:
            by_position += 1
        ids.append(wanted)
    if by_position:
        warnings.warn(
            f"{by_position} image(s) have no image id in their file name or the --boxes image list: each is numbered "
            "by its position among the inputs (0 for the first, folders sorted by name), as results.json shows"
        )
    if renumbered:
        warnings.warn(
            f"{len(renumbered)} image(s) have the image id of an earlier input: numbered after the largest id "
            f"instead: {_few(renumbered)}"
        )
    return ids


def _few(items: list[str], shown: int = 5) -> str:
    """The first ``shown`` items, comma-separated, and how many more there are."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _drawing_paths(paths: list[Path], out: Path, inputs: dict) -> list[Path]:
    """OUT/NAME_pose.jpg per path (NAME from :func:`_output_stems`), NAME_2_pose.jpg ... where that file is
    itself an input or a file posekit did not draw (no mark: a user's photo), so that posekit replaces
    only its own earlier drawings."""
    import warnings

    from posekit.io.files import file_key

    drawings: dict[Path, None] = {}  # ordered, and a set for the membership test (100k images stay linear)
    for path, name in zip(paths, _output_stems(paths)):
        drawing, number, reason = out / f"{name}_pose.jpg", 2, None
        while True:
            if file_key(drawing) in inputs:
                reason = reason or "is an input"
            elif os.path.isfile(drawing) and not is_posekit_drawing(drawing):
                reason = reason or "is not a drawing of posekit (it lacks posekit's mark), so it is kept"
            elif drawing not in drawings:
                break
            drawing, number = out / f"{name}_{number}_pose.jpg", number + 1
        if reason:
            warnings.warn(f"{out / f'{name}_pose.jpg'} {reason}: the drawing of {path} goes to {drawing}")
        drawings[drawing] = None
    return list(drawings)


def _coco_results(path: Path, image_id: int, poses: Poses) -> list[dict]:
    """COCO keypoint results of one image's people; people with a NaN or infinite keypoint or score (a
    broken checkpoint, a NaN score in --boxes) are left out, with a warning."""
    import warnings

    import numpy as np

    finite = np.isfinite(poses.keypoints).all(axis=(1, 2)) & np.isfinite(poses.scores)
    if not finite.all():
        warnings.warn(f"{path}: left {int((~finite).sum())} person(s) with NaN or infinite keypoints or score out of the results")
    return [result for result, keep in zip(poses.to_coco(image_id), finite) if keep]


def _output_stems(paths: list[Path]) -> list[str]:
    """A distinct output name per input: its stem, or where stems repeat (a/img.jpg, b/img.jpg, b/img.png) its
    path below the common folder of those files, with the suffix, as one name (a_img_jpg, b_img_jpg, b_img_png)."""
    absolute = [Path(os.path.abspath(path)) for path in paths]
    folders: dict[str, list[Path]] = {}
    for path in absolute:
        folders.setdefault(path.stem, []).append(path.parent)
    # Where a stem repeats, the folder its files' names are taken relative to.
    bases = {stem: os.path.commonpath(group) for stem, group in folders.items() if len(group) > 1}
    names: list[str] = []
    taken: set[str] = set()
    for path in absolute:
        name = "_".join(path.relative_to(bases[path.stem]).parts).replace(".", "_") if path.stem in bases else path.stem
        unique, number = name, 2
        while unique in taken:  # flattening met another input's name (a_b/x.jpg, a/b/x.jpg): number the later one
            unique, number = f"{name}_{number}", number + 1
        taken.add(unique)
        names.append(unique)
    return names


def draw_threshold(estimator: PoseEstimator) -> float:
    """The box score under which a person is not drawn: the estimator's detector's threshold, else
    :data:`posekit.defaults.BOX_SCORE_THRESHOLD` (given boxes without scores count as 1)."""
    from posekit.defaults import BOX_SCORE_THRESHOLD

    return getattr(estimator.detector, "score_threshold", BOX_SCORE_THRESHOLD)


def _save_annotated(image: np.ndarray, poses: Poses, path: Path, threshold: float, pretrained: bool) -> None:
    """Write the image with the skeletons and boxes of the people whose box scores at least
    ``threshold``, at its own resolution (temporary file, then renamed); untrained, it says so."""
    from matplotlib.figure import Figure

    from posekit.io.files import atomic_write
    from posekit.viz import draw_skeleton, label_untrained

    height, width = image.shape[:2]
    if max(height, width) > _JPEG_MAX_SIDE:
        raise ValueError(f"{width}x{height} is larger than JPEG's limit of {_JPEG_MAX_SIDE} pixels per side")
    figure = Figure(figsize=(width / 100, height / 100))
    shown = poses.box_scores >= threshold
    ax = draw_skeleton(image, poses.keypoints[shown], ax=figure.add_axes((0, 0, 1, 1)), boxes=poses.boxes[shown])
    if not pretrained:
        label_untrained(ax)
    with atomic_write(path) as file:
        figure.savefig(file, format="jpeg", dpi=100, pil_kwargs={"comment": DRAWING_MARK})


def is_posekit_drawing(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a JPEG that posekit drew: its comment (COM segment) is :data:`DRAWING_MARK`.
    A file posekit cannot read as such (a user's photo, a PNG, a broken file) is not."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "JPEG" and image.info.get("comment") == DRAWING_MARK
    except (OSError, ValueError, Image.DecompressionBombError):
        return False

