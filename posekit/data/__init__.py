"""Data bundled with posekit: four COCO val2017 images, their keypoint annotations and detections;
a five-frame video clip with person boxes.

The files and their licences are described in ``coco_sample/ATTRIBUTION.md`` and ``video_sample/ATTRIBUTION.md``.
"""
from pathlib import Path

COCO_SAMPLE_DIR = Path(__file__).resolve().parent / "coco_sample"
# Ground-truth person keypoints of the 14 people in the four images (COCO format).
COCO_SAMPLE_ANNOTATIONS = COCO_SAMPLE_DIR / "test_coco.json"
# The paper's person detections (detector human AP 56.4) for the same images.
COCO_SAMPLE_DETECTIONS = COCO_SAMPLE_DIR / "test_coco_det_AP_H_56.json"

# Five frames of a PoseTrack video, the same five as an mp4, and hand-drawn person boxes per frame
# (``video_sample/ATTRIBUTION.md``).
VIDEO_SAMPLE_DIR = Path(__file__).resolve().parent / "video_sample"
VIDEO_SAMPLE_CLIP = VIDEO_SAMPLE_DIR / "000001_mpiinew_test.mp4"
VIDEO_SAMPLE_BOXES = VIDEO_SAMPLE_DIR / "boxes.json"
