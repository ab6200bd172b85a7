"""load_image, find_images and sanitize_boxes: every mode users feed, every bad file, every bad box."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from posekit.errors import BoxError, ImageReadError
from posekit.core.boxes import sanitize_boxes
from posekit.io.images import find_images, load_image

SAMPLE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample"


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


def test_png_file_equals_opencv_decode(tmp_path, rgb):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, cv2.imread(str(path))[..., ::-1])


def test_bundled_jpeg_matches_opencv_within_decoder_rounding():
    path = SAMPLE / "000000000785.jpg"
    out = load_image(str(path))
    reference = cv2.imread(str(path))[..., ::-1]
    assert out.shape == reference.shape == (425, 640, 3)
    assert np.abs(out.astype(int) - reference).mean() < 1.0


def test_exif_orientation_is_applied(tmp_path, rgb):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(rgb).save(path, exif=exif, quality=100, subsampling=0)
    out = load_image(path)
    assert out.shape == (30, 20, 3)
    raw = np.asarray(Image.open(path).convert("RGB")).astype(int)
    np.testing.assert_array_equal(out, np.rot90(raw, k=-1))  # k=-1: clockwise
    # The same on a PIL image handed in directly.
    np.testing.assert_array_equal(load_image(Image.open(path)), out)


def test_bgr_array_is_reversed_and_rgb_array_passes(rgb):
    np.testing.assert_array_equal(load_image(rgb), rgb)
    np.testing.assert_array_equal(load_image(np.ascontiguousarray(rgb[..., ::-1]), channels="bgr"), rgb)
    bgra = np.concatenate([rgb[..., ::-1], np.full((20, 30, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(bgra, channels="bgr"), rgb)


def test_gray_and_bilevel_become_three_equal_channels(rgb):
    gray = rgb[..., 0]
    out = load_image(Image.fromarray(gray, mode="L"))
    np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=2))
    bits = Image.fromarray(gray > 127).convert("1")
    np.testing.assert_array_equal(load_image(bits)[..., 1], np.where(gray > 127, 255, 0))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_black(rgb, mode):
    alpha = np.random.default_rng(1).integers(0, 256, size=(20, 30), dtype=np.uint8)
    colour = rgb if mode == "RGBA" else np.stack([rgb[..., 0]] * 3, axis=2)
    image = Image.fromarray(np.concatenate([rgb, alpha[..., None]], axis=2), "RGBA")
    if mode == "LA":
        image = Image.fromarray(np.stack([rgb[..., 0], alpha], axis=2), "LA")
    expected = colour.astype(float) * alpha[..., None] / 255
    assert np.abs(load_image(image) - expected).max() <= 1.0


def test_palette_transparency_becomes_black():
    image = Image.new("P", (4, 3), 1)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.info["transparency"] = 0
    out = load_image(image)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[1, 1], [0, 255, 0])


def test_cmyk_primaries():
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 255, 255, 0]]], np.uint8)
    out = load_image(Image.fromarray(cmyk, "CMYK"))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 0, 0]])


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 257 * 100, 32768, 65535]], np.uint16)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), values)
    out = load_image(path)
    np.testing.assert_array_equal(out[0, :, 0], np.round(values[0] / 257.0))
    assert out[0, 1, 0] == 4  # clipping would give 255
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_int32_and_float_modes():
    sixteen = np.array([[0, 65535]], np.int32)
    np.testing.assert_array_equal(load_image(Image.fromarray(sixteen, "I"))[0, :, 0], [0, 255])
    wide = np.array([[-100, 0, 100]], np.int32)  # not 16-bit: its range is stretched
    np.testing.assert_array_equal(load_image(Image.fromarray(wide, "I"))[0, :, 0], [0, 128, 255])
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(load_image(Image.fromarray(unit, "F"))[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(load_image(unit)[0, :, 0], [0, 128, 255])


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("not an image at all"), "not an image"),
        (lambda p: p.write_bytes((SAMPLE / "000000000785.jpg").read_bytes()[:3000]), "truncated"),
    ],
    ids=["missing", "zero-byte", "text", "truncated-jpeg"],
)
def test_bad_files_raise_image_read_error_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "photo.jpg"
    make(path)
    with pytest.raises(ImageReadError, match=expected) as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_truncated_png_and_folder(tmp_path, rgb):
    path = tmp_path / "cut.png"
    cv2.imwrite(str(path), rgb)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ImageReadError, match="cut.png"):
        load_image(path)
    with pytest.raises(ImageReadError, match="folder"):
        load_image(tmp_path)


def test_bad_arrays_and_channels(rgb):
    with pytest.raises(ImageReadError, match=r"\(5,\)"):
        load_image(np.zeros(5, np.uint8))
    with pytest.raises(ImageReadError, match="float"):
        load_image(rgb.astype(np.float64))
    with pytest.raises(ValueError, match="bgr"):
        load_image(Image.fromarray(rgb), channels="bgr")


def test_find_images_folders_globs_and_files(tmp_path, rgb):
    for name in ("b.png", "a.jpg", "c.JPEG"):
        Image.fromarray(rgb).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    with pytest.warns(UserWarning, match="notes.txt"):
        found = find_images([tmp_path])
    assert [p.name for p in found] == ["a.jpg", "b.png", "c.JPEG"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [p.name for p in find_images([str(tmp_path / "*.png"), tmp_path / "a.jpg", tmp_path / "b.png"])] == [
            "b.png",
            "a.jpg",
        ]
    with pytest.warns(UserWarning, match="nothing.jpg"):
        assert [p.name for p in find_images([tmp_path / "nothing.jpg", tmp_path / "a.jpg"])] == ["a.jpg"]


def test_find_images_nothing_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no images found"):
        find_images([tmp_path / "empty"])
    with pytest.raises(ImageReadError, match="no images found"), pytest.warns(UserWarning, match=r"\*.png"):
        find_images([str(tmp_path / "*.png")])


def test_sanitize_boxes_drops_and_clips_with_one_warning():
    boxes = np.array(
        [
            [10, 10, 20, 30],  # fine
            [np.nan, 0, 5, 5],
            [0, 0, np.inf, 5],
            [5, 5, 0, 10],  # zero width
            [5, 5, 10, -1],  # negative height
            [100, 10, 5, 5],  # right of a 100-wide image
            [-20, 10, 20, 5],  # ends exactly at x = 0
            [-10, -5, 30, 20],  # partly outside: clipped
            [90, 70, 30, 30],  # partly outside: clipped
        ],
        dtype=np.float64,
    )
    with pytest.warns(UserWarning) as record:
        kept, keep = sanitize_boxes(boxes, (100, 80), "street.jpg")
    assert len(record) == 1
    message = str(record[0].message)
    assert "street.jpg" in message and "6 person box" in message and "#1" in message and "#6" in message
    np.testing.assert_array_equal(keep, [True, False, False, False, False, False, False, True, True])
    np.testing.assert_allclose(kept, [[10, 10, 20, 30], [0, 0, 20, 15], [90, 70, 10, 10]])
    assert kept.dtype == np.float32


def test_sanitize_boxes_good_empty_and_malformed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept, keep = sanitize_boxes(np.array([[0, 0, 100, 80]]), (100, 80))
        np.testing.assert_array_equal(kept, [[0, 0, 100, 80]])
        assert keep.tolist() == [True]
        kept, keep = sanitize_boxes([], (100, 80))
        assert kept.shape == (0, 4) and keep.shape == (0,)
    with pytest.raises(BoxError, match=r"\(2, 3\)"):
        sanitize_boxes(np.zeros((2, 3)), (100, 80), "x.jpg")
    with pytest.raises(BoxError, match="numbers"):
        sanitize_boxes([["a", "b", "c", "d"]], (100, 80))
