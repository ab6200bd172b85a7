"""COCO val2017 on disk: where :func:`download_coco` puts it (:class:`CocoPaths`) and the download."""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from posekit.errors import DownloadError, PosekitError
from posekit.io import hub

_ZIP_URLS = {
    "val2017": "http://images.cocodataset.org/zips/val2017.zip",
    "annotations": "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
}
# The authors' person detections (detector AP 56.4 on val2017), a file in their Google Drive
# folder 1fRUDNUDxe9fjqcRZ2bnF_TKMlO0nB_dk. The authors publish no checksum; this sha256 is the
# one other projects pin for it.
DETECTIONS_GDRIVE_ID = "1ygw57X-mh0QBfENB-U5DsuSauGIu-8RB"
DETECTIONS_SHA256 = "53ba0ad8d0fd461c5a000cd90797fa8c39cd8c38cd125125c0412626ff592d59"
COCO_PARTS: tuple[str, ...] = ("val2017", "annotations", "detections")


@dataclass(frozen=True)
class CocoPaths:
    """Where :func:`download_coco` puts COCO val2017 under ``root`` (mmpose's layout)."""

    root: Path

    @property
    def image_dir(self) -> Path:
        return self.root / "val2017"

    @property
    def ann_file(self) -> Path:
        return self.root / "annotations" / "person_keypoints_val2017.json"

    @property
    def detections_file(self) -> Path:
        return self.root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json"

    def path(self, part: str) -> Path:
        """The file or folder that holds ``part`` (one of :data:`COCO_PARTS`)."""
        return {"val2017": self.image_dir, "annotations": self.ann_file, "detections": self.detections_file}[part]

    def missing(self, parts: Sequence[str] = COCO_PARTS) -> list[str]:
        """The parts not yet on disk."""
        return [part for part in parts if not self.path(part).exists()]


def _extract(archive: Path, member_prefix: str, destination: Path) -> None:
    """Extract the members of ``archive`` under ``member_prefix`` to ``destination`` atomically.

    Everything lands in a temporary folder next to ``destination`` first and is renamed into
    place, so an interrupted extraction never looks like a finished one.
    """
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=destination.parent))
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [name for name in bundle.namelist() if name.startswith(member_prefix)]
            if not members:
                raise DownloadError(f"{archive}: has no {member_prefix}; delete it and run download_coco again")
            bundle.extractall(staging, members)
        os.replace(staging / member_prefix.rstrip("/"), destination)
    except zipfile.BadZipFile as error:
        archive.unlink()
        raise DownloadError(f"{archive}: corrupt download ({error}), now deleted; run download_coco again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_coco(
    root: str | os.PathLike, parts: Sequence[str] = COCO_PARTS, progress: bool = True
) -> CocoPaths:
    """Download and unpack COCO val2017 for keypoint evaluation; parts already there are skipped.

    ``"val2017"``: the 5000 images (~780 MB) -> ``root/val2017/``; ``"annotations"``: only
    ``person_keypoints_val2017.json`` out of annotations_trainval2017.zip (~240 MB) ->
    ``root/annotations/``; ``"detections"``: the authors' person detections ->
    ``root/person_detection_results/``. Downloads resume after an interruption; archives are
    kept in ``root/.downloads/`` until unpacked, then deleted.

    Raises:
        DownloadError: offline, HTTP error or corrupt archive, in one sentence saying what to do.
    """
    paths = CocoPaths(Path(root))
    unknown = [part for part in parts if part not in COCO_PARTS]
    if unknown:
        raise PosekitError(
            f"unknown COCO part(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(COCO_PARTS)}"
        )
    for part in paths.missing(parts):
        target = paths.path(part)
        target.parent.mkdir(parents=True, exist_ok=True)
        if part == "detections":
            hub.download_gdrive(DETECTIONS_GDRIVE_ID, target, sha256=DETECTIONS_SHA256, progress=progress)
            continue
        # Archives (and the download locks) stay out of sight until unpacked; an archive placed
        # there by hand, as the offline message suggests, is unpacked by the next call.
        archive = paths.root / ".downloads" / Path(_ZIP_URLS[part]).name
        hub.download_url(_ZIP_URLS[part], archive, progress=progress)
        member = "val2017/" if part == "val2017" else f"annotations/{target.name}"
        _extract(archive, member, target)
        archive.unlink()
    return paths
