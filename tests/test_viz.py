"""posekit.viz: markers where the keypoints are, hidden low scores, limb counts, grids, charts, atomic saves."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from PIL import Image  # noqa: E402

from posekit.core.coco17 import KEYPOINT_NAMES, SKELETON  # noqa: E402
from posekit.errors import PosekitError  # noqa: E402
from posekit.viz import draw_skeleton, plot_timing, save_figure, show_crops, show_heatmaps  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample"
COCO = json.loads((SAMPLE / "test_coco.json").read_text())


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _image(file_name: str) -> np.ndarray:
    return np.asarray(Image.open(SAMPLE / file_name).convert("RGB"))


def _people(image_id: int) -> np.ndarray:
    rows = [a["keypoints"] for a in COCO["annotations"] if a["image_id"] == image_id]
    return np.array(rows, dtype=np.float64).reshape(-1, 17, 3)


def _artist(ax, label: str):
    (found,) = [c for c in ax.collections if c.get_label() == label]
    return found


def _joint_alpha_by_score(ax, keypoints: np.ndarray, threshold: float) -> dict[float, float]:
    joints = _artist(ax, "joints")
    shown = [score for person in keypoints for (_, _, score) in person if score >= threshold]
    return dict(zip(shown, joints.get_facecolors()[:, 3]))


@pytest.mark.parametrize("image_info", COCO["images"], ids=lambda info: info["file_name"])
def test_joint_markers_sit_on_the_annotated_keypoints(image_info):
    people = _people(image_info["id"])
    ax = draw_skeleton(_image(image_info["file_name"]), people)

    joints = _artist(ax, "joints")
    assert isinstance(joints, PathCollection)
    assert joints.get_offset_transform() is ax.transData  # offsets are image pixels
    expected = sorted((x, y) for person in people for (x, y, v) in person if v > 0)  # v=0: not labelled
    assert sorted(map(tuple, joints.get_offsets().tolist())) == expected

    visible_limbs = sum(1 for person in people for a, b in SKELETON if person[a, 2] > 0 and person[b, 2] > 0)
    limbs = _artist(ax, "limbs")
    assert isinstance(limbs, LineCollection)
    assert len(limbs.get_segments()) == visible_limbs


def test_low_scores_are_hidden_and_limbs_need_both_ends():
    rng = np.random.default_rng(0)
    people = np.concatenate([rng.uniform(0, 300, (3, 17, 2)), rng.uniform(0, 1, (3, 17, 1))], axis=2)
    image = np.zeros((320, 320, 3), np.uint8)
    ax = draw_skeleton(image, people, score_threshold=0.5)

    kept = [(x, y) for person in people for (x, y, s) in person if s >= 0.5]
    assert 0 < len(kept) < people.shape[0] * 17
    assert sorted(map(tuple, _artist(ax, "joints").get_offsets().tolist())) == sorted(kept)
    expected_segments = sorted(
        ((person[a, 0], person[a, 1]), (person[b, 0], person[b, 1]))
        for person in people for a, b in SKELETON if person[a, 2] >= 0.5 and person[b, 2] >= 0.5
    )
    drawn = sorted(tuple(map(tuple, segment.tolist())) for segment in _artist(ax, "limbs").get_segments())
    assert drawn == expected_segments


def test_opacity_grows_with_score_and_limbs_are_no_more_opaque_than_their_joints():
    person = np.zeros((17, 3))
    person[:, 0] = np.arange(17) * 10
    person[:, 1] = 50
    person[:, 2] = 2.0  # a COCO "visible" flag counts as full confidence
    person[5, 2], person[6, 2], person[7, 2] = 0.4, 0.9, 0.6  # l_shoulder, r_shoulder, l_elbow
    ax = draw_skeleton(np.zeros((100, 200, 3), np.uint8), person)
    alpha = _joint_alpha_by_score(ax, person[None], 0.3)
    assert alpha[0.4] < alpha[0.6] < alpha[0.9] < alpha[2.0] == 1.0
    assert alpha[0.4] > 0  # kept joints stay visible

    limbs = _artist(ax, "limbs")
    shoulders = [i for i, seg in enumerate(limbs.get_segments()) if sorted(seg[:, 0]) == [50, 60]]
    assert len(shoulders) == 1
    assert limbs.get_colors()[shoulders[0], 3] <= alpha[0.4] + 1e-9


def test_colours_code_the_body_side():
    person = np.column_stack([np.arange(17) * 10.0, np.full(17, 40.0), np.ones(17)])
    ax = draw_skeleton(np.zeros((80, 200, 3), np.uint8), person)
    colours = [tuple(c[:3]) for c in _artist(ax, "joints").get_facecolors()]
    left = {colours[k] for k, name in enumerate(KEYPOINT_NAMES) if name.startswith("left_")}
    right = {colours[k] for k, name in enumerate(KEYPOINT_NAMES) if name.startswith("right_")}
    assert len(left) == 1 and len(right) == 1
    assert left != right and colours[0] not in left | right  # the nose is a centre joint

    limbs = _artist(ax, "limbs")
    by_ends = {tuple(sorted(seg[:, 0] // 10)): tuple(c[:3]) for seg, c in zip(limbs.get_segments(), limbs.get_colors())}
    assert by_ends[(13, 15)] in left  # left knee - left ankle
    assert by_ends[(14, 16)] in right
    assert by_ends[(5, 6)] not in left | right  # shoulder to shoulder crosses the body


def test_rendered_marker_lands_on_the_keypoint_pixel():
    height, width, x, y = 120, 160, 40.0, 90.0
    person = np.zeros((17, 3))
    person[0] = x, y, 1.0  # only the nose: no limbs, one marker
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    draw_skeleton(np.zeros((height, width, 3), np.uint8), person, ax=ax)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)

    box = ax.get_window_extent()  # the axes in display pixels, origin bottom-left
    col = box.x0 + (x + 0.5) / width * box.width
    row = fig.canvas.get_width_height()[1] - (box.y1 - (y + 0.5) / height * box.height)
    rows, cols = np.nonzero(pixels.max(-1) - pixels.min(-1) > 60)  # saturated: neither the black image nor white
    assert len(rows) > 5
    assert abs(rows.mean() - row) < 1.5 and abs(cols.mean() - col) < 1.5


def test_view_stays_on_the_image_and_boxes_are_outlined():
    person = np.zeros((17, 3))
    person[0] = -60, -40, 1.0  # outside the image
    boxes = np.array([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 5.0, 5.0]])
    ax = draw_skeleton(np.zeros((50, 80, 3), np.uint8), person, boxes=boxes)
    assert ax.get_xlim() == (-0.5, 79.5) and ax.get_ylim() == (49.5, -0.5)
    outlines = _artist(ax, "boxes").get_segments()
    corners = [{(x, y), (x + w, y), (x + w, y + h), (x, y + h)} for x, y, w, h in boxes]
    assert [set(map(tuple, o.tolist())) for o in outlines] == corners
    assert all(np.array_equal(o[0], o[-1]) for o in outlines)  # closed


def test_no_people_draws_the_image_only():
    ax = draw_skeleton(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 17, 3)))
    assert len(_artist(ax, "joints").get_offsets()) == 0
    assert len(_artist(ax, "limbs").get_segments()) == 0
    assert len(ax.images) == 1


@pytest.mark.parametrize(
    ("image", "keypoints", "named"),
    [
        (np.zeros((10, 10), np.uint8), np.zeros((17, 3)), "image"),
        (np.zeros((10, 10, 3), np.float32), np.zeros((17, 3)), "image"),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((17, 2)), "keypoints"),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((2, 14, 3)), "keypoints"),
    ],
)
def test_bad_inputs_are_named(image, keypoints, named):
    with pytest.raises(PosekitError, match=rf"^{named} must"):
        draw_skeleton(image, keypoints)


def test_heatmaps_one_panel_per_joint_centred_on_the_stride_grid():
    crop = _image("000000000785.jpg")[40:296, 300:492]  # (256, 192)
    heatmaps = np.zeros((17, 64, 48), np.float32)
    heatmaps[np.arange(17), np.arange(17) * 3, np.arange(17) * 2] = 1.0
    fig = show_heatmaps(crop, heatmaps)

    assert [ax.get_title() for ax in fig.axes] == list(KEYPOINT_NAMES)
    for k, ax in enumerate(fig.axes):
        crop_layer, heat_layer = ax.images
        assert crop_layer.get_array().shape == (256, 192, 3)
        np.testing.assert_array_equal(heat_layer.get_array(), heatmaps[k])
        left, right, bottom, top = heat_layer.get_extent()
        # heatmap pixel i is centred on crop pixel 4 i (the official encoder/decoder convention)
        hx, hy = 2 * k, 3 * k
        assert left + (hx + 0.5) * (right - left) / 48 == pytest.approx(4 * hx)
        assert top + (hy + 0.5) * (bottom - top) / 64 == pytest.approx(4 * hy)


def test_heatmaps_accept_torch_tensors_and_reject_wrong_joint_counts():
    torch = pytest.importorskip("torch")
    crop = np.zeros((64, 48, 3), np.uint8)
    fig = show_heatmaps(crop, torch.rand(17, 16, 12, requires_grad=True))
    assert len(fig.axes) == 17
    with pytest.raises(PosekitError, match=r"heatmaps must have shape \(17, h, w\)"):
        show_heatmaps(crop, np.zeros((16, 16, 12)))


def test_crop_grid_has_one_titled_panel_per_crop_with_its_skeleton():
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 255, (5, 64, 48, 3), dtype=np.uint8)
    keypoints = np.concatenate([rng.uniform(0, 48, (5, 17, 2)), rng.uniform(0, 1, (5, 17, 1))], axis=2)
    fig = show_crops(crops, keypoints, score_threshold=0.4, ncols=4)

    assert [ax.get_title() for ax in fig.axes] == [f"person {i}" for i in range(5)]
    for ax, crop, person in zip(fig.axes, crops, keypoints):
        np.testing.assert_array_equal(ax.images[0].get_array(), crop)
        expected = sorted((x, y) for x, y, s in person if s >= 0.4)
        assert sorted(map(tuple, _artist(ax, "joints").get_offsets().tolist())) == expected
    assert fig.axes[4].get_subplotspec().rowspan.start == 1  # 4 per row, the fifth wraps

    bare = show_crops(crops[:2])
    assert all(len(_artist(ax, "joints").get_offsets()) == 0 for ax in bare.axes)
    with pytest.raises(PosekitError, match="keypoints_in_crop has 3 people but crops has 5"):
        show_crops(crops, keypoints[:3])


def test_timing_chart_has_a_bar_per_stage_then_the_reference():
    timings = {"detect": 1.25, "crop": 0.05, "model": 0.5, "decode": 0.02}
    fig = plot_timing(timings, reference={"K80 batch 200": 3.856, "K80 batch 100": 0.611})
    (ax,) = fig.axes
    own, reference = ax.containers
    assert [bar.get_width() for bar in own] == [1.25, 0.05, 0.5, 0.02]
    assert [bar.get_width() for bar in reference] == [3.856, 0.611]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["detect", "crop", "model", "decode", "K80 batch 200", "K80 batch 100"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 2 and "another machine" in legend[1]
    values = [t.get_text() for t in ax.texts]
    assert "3.856 s" in values and "1.250 s" in values

    (only,) = plot_timing({"total": 2.0}).axes[0].containers
    assert len(only) == 1
    with pytest.raises(PosekitError, match="finite times"):
        plot_timing({"model": -1.0})
    with pytest.raises(PosekitError, match="at least one stage"):
        plot_timing({})


def test_timing_chart_in_milliseconds_per_person():
    ax = plot_timing({"total, batch of 8": 71.25}, reference={"K80 batch of 200": 19.28}, unit="ms/person").axes[0]
    assert [t.get_text() for t in ax.texts] == ["71.2 ms", "19.3 ms"]
    assert ax.get_xlabel() == "milliseconds per person"


def test_save_figure_writes_a_complete_png_and_no_temp_file(tmp_path):
    fig = plot_timing({"model": 0.5})
    target = tmp_path / "out" / "timing.png"
    assert save_figure(fig, target, dpi=50) == target
    with Image.open(target) as written:
        written.verify()
    with Image.open(target) as written:
        assert written.format == "PNG"
        assert written.size == (round(fig.get_figwidth() * 50), round(fig.get_figheight() * 50))
    assert sorted(p.name for p in target.parent.iterdir()) == ["timing.png"]


def test_save_figure_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "figure.png"
    target.write_bytes(b"old")
    fig = plot_timing({"model": 0.5})

    def fail_half_way(file, **kwargs):
        file.write(b"\x89PNG half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", fail_half_way)
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(fig, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]

    with pytest.raises(PosekitError, match=r"cannot save a figure as .*figure\.xyz: expected one of"):
        save_figure(fig, tmp_path / "figure.xyz")
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]


def test_pictures_and_video_frames_show_the_same_joints_in_the_same_side_colours():
    """draw_skeleton (matplotlib) and draw_tracks (pixels) render one decision of what is shown."""
    from posekit.viz import draw_tracks

    rng = np.random.default_rng(3)
    people = np.column_stack([rng.uniform(20, 380, (34, 2)), rng.uniform(0, 1, 34)]).reshape(2, 17, 3)
    people[0, 4, 0] = np.nan  # a sure joint at no position is hidden by both
    people[0, 4, 2] = 0.9
    threshold = 0.4
    ax = draw_skeleton(np.zeros((400, 400, 3), np.uint8), people, threshold)
    joints = _artist(ax, "joints")
    drawn_xy = joints.get_offsets()
    frame = draw_tracks(np.zeros((400, 400, 3), np.uint8), people, np.array([1, 2]), score_threshold=threshold)
    expected = (people[..., 2] >= threshold) & np.isfinite(people[..., :2]).all(-1)
    np.testing.assert_allclose(drawn_xy, people[..., :2][expected])
    colours = np.round(joints.get_facecolors()[:, :3] * 255)
    # Each joint's centre pixel in the frame has the colour of its marker in the figure (joints are painted
    # over limbs; a later joint may overpaint a nearby one: compare those clear of every other joint).
    xy = people[..., :2][expected]
    clear = np.array([(np.hypot(*(xy - p).T) > 6).sum() == len(xy) - 1 for p in xy])
    pixels = frame[np.round(xy[clear, 1]).astype(int), np.round(xy[clear, 0]).astype(int)]
    assert clear.sum() >= 5
    np.testing.assert_array_equal(pixels, colours[clear])
