"""PoseTrack files: both layouts, ground-truth robustness, the official format, `posekit track-eval`."""
from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest

from posekit.cli import main
from posekit.errors import AnnotationError
from posekit.eval.posetrack import evaluate_files
from posekit.io.posetrack import (
    POSETRACK18_KEYPOINTS,
    load_posetrack,
    load_tracks,
    official_posetrack,
    sequence_folder,
)

SEQUENCE = "images/val/000342_mpii_test"
POSE = [[10.0 * k, 5.0 * k] for k in range(17)]


def keypoints(shift: float = 0.0, ears: bool = False) -> list[float]:
    """A PoseTrack 2018 pose: 17 slots, the ears (slots 3 and 4) not annotated unless asked."""
    points = [[x + shift, y, 1] for x, y in POSE]
    if not ears:
        points[3] = points[4] = [0, 0, 0]
    return [v for p in points for v in p]


def ground_truth(frames: int = 3, **image_extra) -> dict:
    images = [{"id": 10_003_420_000 + t, "file_name": f"{SEQUENCE}/{t:06d}.jpg", "is_labeled": True, **image_extra}
              for t in range(frames)]
    annotations = [{"image_id": image["id"], "track_id": 1, "keypoints": keypoints(), "bbox_head": [0, 0, 30, 40]}
                   for image in images]
    return {"images": images, "annotations": annotations,
            "categories": [{"name": "person", "keypoints": list(POSETRACK18_KEYPOINTS)}]}


def tracks(frames: int = 3, shift: float = 0.0, score: float = 0.9) -> dict:
    """What posekit.track.to_posetrack writes: COCO names, every joint predicted (the ears too)."""
    images = [{"id": t, "file_name": f"{t:06d}.jpg", "frame_id": t} for t in range(frames)]
    annotations = [{"id": t * 1000, "image_id": t, "track_id": 7, "category_id": 1, "keypoints": keypoints(shift, ears=True),
                    "scores": [score] * 17, "bbox": [0, 0, 200, 100], "score": score} for t in range(frames)]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person", "keypoints": ["nose"] * 17}]}


def write(path, content) -> str:
    path.write_text(json.dumps(content))
    return str(path)


def test_a_2018_file_scores_its_15_joints_the_ears_left_out(tmp_path):
    metrics = evaluate_files([(write(tmp_path / "gt.json", ground_truth()), tracks())])
    assert int(metrics.scored.sum()) == 15 and not metrics.scored[[3, 4]].any()
    assert metrics.total("precision") == 100.0 and metrics.total("mota") == 100.0  # ear predictions count nowhere
    assert (metrics.false_positives.sum(), metrics.objects.sum()) == (0, 45)
    assert metrics.names[1:3] == ("head_bottom", "head_top")


def test_a_2017_file_is_read_into_the_same_slots(tmp_path):
    names = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist", "right_elbow",
             "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "head_bottom", "nose", "head_top"]
    coco = {name: slot for slot, name in enumerate(POSETRACK18_KEYPOINTS)}
    annolist = [{"image": [{"name": f"{SEQUENCE}/{t:06d}.jpg"}], "is_labeled": [1],
                 "annorect": [{"track_id": [1], "x1": [0], "y1": [0], "x2": [30], "y2": [40],
                               "annopoints": [{"point": [{"id": [i], "x": [POSE[coco[n]][0]], "y": [POSE[coco[n]][1]]}
                                                         for i, n in enumerate(names)]}]}]} for t in range(3)]
    frames = load_posetrack(write(tmp_path / "gt17.json", {"annolist": annolist}))
    reference = load_posetrack(write(tmp_path / "gt18.json", ground_truth()))
    np.testing.assert_array_equal(frames[1].keypoints, reference[1].keypoints)
    np.testing.assert_array_equal(frames[1].head_boxes, [[0, 0, 30, 40]])
    assert int(evaluate_files([(tmp_path / "gt17.json", tracks())]).scored.sum()) == 15


def test_annotations_are_matched_to_frames_by_image_id_and_tracks_by_file_name(tmp_path):
    truth = ground_truth()
    truth["annotations"].reverse()  # ground truth listed for other frames first
    truth["annotations"][0]["keypoints"] = keypoints(shift=100)  # the last frame's person is elsewhere
    frames = load_posetrack(write(tmp_path / "gt.json", truth))
    assert frames[2].keypoints[0, 0, 0] == 100 and frames[0].keypoints[0, 0, 0] == 0
    predicted = tracks()
    predicted["images"].reverse()  # tracks are found by file name, not position
    metrics = evaluate_files([(tmp_path / "gt.json", predicted)])
    assert (metrics.misses.sum(), metrics.false_positives.sum()) == (15, 15)  # only the last frame is off


def test_ignore_regions_are_read_from_the_file(tmp_path):
    # A region around everything of frame 1: that frame's joints leave both sides.
    region = {"ignore_regions_x": [[-50, 500, 500, -50]], "ignore_regions_y": [[-50, -50, 500, 500]]}
    truth = ground_truth()
    truth["images"][1].update(region)
    frames = load_posetrack(write(tmp_path / "gt.json", truth))
    np.testing.assert_array_equal(frames[1].ignore_regions[0], [[-50, -50], [500, -50], [500, 500], [-50, 500]])
    assert frames[0].ignore_regions == ()
    metrics = evaluate_files([(tmp_path / "gt.json", tracks(shift=300))])  # predictions off everywhere
    assert (metrics.objects.sum(), metrics.misses.sum(), metrics.false_positives.sum()) == (30, 30, 30)


def test_string_and_list_track_ids_and_null_annotations_are_read(tmp_path):
    truth = ground_truth()
    truth["annotations"][0]["track_id"] = "4"
    truth["annotations"][1]["track_id"] = [4]
    truth["annotations"][2]["track_id"] = 4.0
    frames = load_posetrack(write(tmp_path / "gt.json", truth))
    assert [f.track_ids.tolist() for f in frames] == [[4], [4], [4]]
    empty = load_tracks({"images": [{"id": 0, "file_name": "000000.jpg"}], "annotations": None})
    assert len(empty) == 1 and empty[0].track_ids.size == 0


def test_nan_joints_and_head_boxes_are_left_out_with_a_warning(tmp_path):
    truth = ground_truth()
    truth["annotations"][0]["keypoints"][0] = float("nan")
    truth["annotations"][1]["bbox_head"] = [0, float("nan"), 30, 40]
    del truth["annotations"][2]["bbox_head"]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(truth))  # Python's json writes NaN, as some tools do
    with pytest.warns(UserWarning, match="1 people without a head box, 1 people with a NaN or empty head box, 1 NaN joints"):
        frames = load_posetrack(path)
    assert frames[0].keypoints[0, 0, 2] == 0 and frames[0].keypoints[0, 5, 2] == 1
    assert frames[1].track_ids.size == 0 and frames[2].track_ids.size == 0


def _broken(change) -> dict:
    content = ground_truth()
    change(content)
    return content


@pytest.mark.parametrize("change, field, expected", [
    (lambda c: c.pop("images"), "", "a PoseTrack JSON"),
    (lambda c: c.update(annotations={"a": 1}), "annotations", "a list"),
    (lambda c: c["images"][0].pop("id"), r"images\[0\].id", "a number or string"),
    (lambda c: c["images"].append(dict(c["images"][0])), r"images\[3\].id", "an id of one image only"),
    (lambda c: c["annotations"][1].update(image_id=5), r"annotations\[1\].image_id", "the id of an image listed"),
    (lambda c: c["annotations"][0].update(keypoints=[1, 2, 3]), r"annotations\[0\].keypoints", "a list of 51 numbers"),
    (lambda c: c["annotations"][0].update(keypoints="none"), r"annotations\[0\].keypoints", "a list of 51 numbers"),
    (lambda c: c["annotations"][0].update(bbox_head=[0, 0, "30", 40]), r"annotations\[0\].bbox_head", "a list of 4 numbers"),
    (lambda c: c["annotations"][2].pop("track_id"), r"annotations\[2\].track_id", "a whole number >= 0"),
    (lambda c: c["annotations"][2].update(track_id="left"), r"annotations\[2\].track_id", "a whole number >= 0"),
    (lambda c: c["annotations"].__setitem__(1, None), r"annotations\[1\]", "an object"),
    (lambda c: c["images"][0].update(ignore_regions_x=[[1, 2, 3]]), r"images\[0\].ignore_regions_x/_y", "two lists"),
    (lambda c: c["images"][0].update(ignore_regions_x=[[1, 2]], ignore_regions_y=[[1, 2, 3]]),
     r"images\[0\].ignore_regions_x/_y\[0\]",
     "as many x as y"),
])
def test_malformed_ground_truth_is_one_error_naming_file_field_and_expectation(tmp_path, change, field, expected):
    path = write(tmp_path / "gt.json", _broken(change))
    with pytest.raises(AnnotationError, match=rf"gt.json: {field}.*expected {expected}"):
        load_posetrack(path)


def test_loading_takes_linear_time_in_the_number_of_annotations(tmp_path):
    # Python-level calls made while loading 300 and 3000 annotations: ten times the work, not a hundred.
    def calls(people: int) -> int:
        content = ground_truth(frames=people // 10)
        content["annotations"] = [dict(a, track_id=i) for a in content["annotations"] for i in range(10)]
        path = write(tmp_path / f"gt{people}.json", content)
        count = 0

        def profile(frame, event, arg):
            nonlocal count
            count += 1

        sys.setprofile(profile)
        try:
            load_posetrack(path)
        finally:
            sys.setprofile(None)
        return count

    small, large = calls(300), calls(3000)
    assert large < 12 * small, (small, large)


def test_the_official_format_round_trips_through_the_loader():
    document = tracks()
    document["annotations"][0]["scores"][6] = 0.3  # under the joint threshold: written absent
    official = official_posetrack(document, SEQUENCE, 0.4)
    assert official["categories"][0]["keypoints"] == list(POSETRACK18_KEYPOINTS)
    assert official["images"][2]["file_name"] == f"{SEQUENCE}/000002.jpg"
    assert official["annotations"][0]["keypoints"][18:21] == [0, 0, 0]
    back, mine = load_tracks(copy.deepcopy(official)), load_tracks(document)
    for a, b in zip(back, mine):
        assert a.track_ids.tolist() == b.track_ids.tolist() == [7]
        kept = a.keypoints[..., 2] >= 0.4
        np.testing.assert_array_equal(a.keypoints[kept], b.keypoints[kept])
    assert np.isnan(back[0].keypoints[0, 6, 2]) and kept.sum() == 17
    with pytest.raises(AnnotationError, match="000342_mpii_test"):
        official_posetrack(document, "clip", 0.4)


def test_the_sequence_of_a_video_or_folder(tmp_path):
    folder = tmp_path / "images" / "val" / "000342_mpii_test"
    folder.mkdir(parents=True)
    assert sequence_folder(folder) == SEQUENCE
    assert sequence_folder(tmp_path / "000001_mpiinew_test.mp4") == "000001_mpiinew_test"
    with pytest.raises(AnnotationError, match="holiday.mp4: expected a PoseTrack sequence such as 000342_mpii_test"):
        sequence_folder(tmp_path / "holiday.mp4")


def test_track_eval_pools_a_folder_of_videos_and_writes_json(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    write(gt / "000001_mpii_test.json", ground_truth())
    write(gt / "000002_mpii_test.json", ground_truth(frames=1))
    write(pred / "000001_mpii_test.json", tracks())
    write(pred / "000002_mpii_test.json", {"images": [], "annotations": []})  # nothing tracked: 15 misses
    out = tmp_path / "metrics.json"
    assert main(["track-eval", str(gt), str(pred), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 videos pooled" in printed and "left out: left_ear, right_ear" in printed
    assert "id switches 0, misses 15, false positives 0 of 60 annotated joints" in printed
    metrics = json.loads(out.read_text())
    assert metrics["total"]["mota"] == 75.0 and metrics["joints"]["nose"]["objects"] == 4
    assert metrics["left_out"] == ["left_ear", "right_ear"]


def test_track_eval_errors_are_one_line(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    write(gt / "000001_mpii_test.json", ground_truth())
    assert main(["track-eval", str(gt), str(pred)]) == 1
    assert capsys.readouterr().err.strip() == (f"posekit track-eval: error: {pred}: no tracks for 000001_mpii_test.json; "
                                               "expected a tracks file under the name of each ground-truth file")
    write(pred / "000001_mpii_test.json", {"images": [{"id": 0, "file_name": "other.jpg"}], "annotations": []})
    assert main(["track-eval", str(gt), str(pred)]) == 1
    assert "no frame of the tracks has the file name of an annotated frame" in capsys.readouterr().err


def test_track_official_format_needs_a_sequence_name_before_any_work(tmp_path, capsys):
    (tmp_path / "frames").mkdir()
    assert main(["track", str(tmp_path / "frames"), "--json", str(tmp_path / "t.json"), "--posetrack-format", "official"]) == 1
    assert capsys.readouterr().err.startswith(f"posekit track: error: {tmp_path / 'frames'}: expected a PoseTrack sequence such as")
    assert not (tmp_path / "t.json").exists()
