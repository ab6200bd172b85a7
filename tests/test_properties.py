"""Property-based tests (hypothesis) of the geometry: crops, flips, heatmap encode/decode.

Each property is checked on random boxes, rotations and sizes against a relation derived by
hand, never against values produced by the code under test; each tolerance is derived in the
test's docstring. Float32 rounding enters in two places, and the slack allowed for it is:

- the official crop matrix is solved from three float32 points; the one half a crop width above
  the center is rounded at its magnitude |center| + width, so the matrix is exact to a few
  float32 ulps of (|center| + crop width in image px): SLACK * (|center| + width) with
  SLACK = 16 * 2^-24 ~ 1e-6;
- float32 outputs (decode's coordinates) add one ulp of their own magnitude.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from posekit.core.coco17 import FLIP_INDEX, FLIP_PAIRS, KEYPOINT_NAMES, NUM_KEYPOINTS
from posekit.core.crop import affine_matrices, box_to_center_scale, crop_batch, transform_preds
from posekit.core.heatmaps import decode, encode, flip_back

SLACK = 16 * 2.0**-24
# Modest example counts keep the file at a few seconds; database=None leaves no .hypothesis folder behind.
PROPERTY = settings(max_examples=60, deadline=None, database=None)

seeds = st.integers(0, 2**32 - 1)
rotations = st.floats(-180, 180)
# Boxes as users' detectors give them: anywhere near a photo, from a few pixels to its size.
boxes = st.tuples(st.floats(-500, 3000), st.floats(-500, 3000), st.floats(2, 2000), st.floats(2, 2000))
crop_sizes = st.tuples(st.integers(4, 96), st.integers(4, 96))


def apply(matrices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Affine maps applied in float64. Shape: (N, 2, 3), (N, K, 2) -> (N, K, 2)."""
    return np.einsum("nij,nkj->nki", matrices[:, :, :2], points) + matrices[:, None, :, 2]


def center_scale(box, output_size) -> tuple[np.ndarray, np.ndarray]:
    return box_to_center_scale(np.array([box]), aspect_ratio=output_size[0] / output_size[1])


# ------------------------------------------------------------------------------------ crops


@PROPERTY
@given(box=boxes, rotation=rotations, output_size=crop_sizes, seed=seeds)
def test_crop_matrix_is_the_similarity_that_centres_rotates_and_zooms(box, rotation, output_size, seed):
    """The crop sends the box center to the crop's middle, turns the image by -rotation degrees and
    zooms by crop width / (scale width * 200) on both axes (the official map is a similarity fixed by
    the width). Points inside the padded box, tolerance SLACK * (|center| + width) in image px,
    times the zoom in crop px."""
    centers, scales = center_scale(box, output_size)
    forward = affine_matrices(centers, scales, output_size, np.array([rotation]))
    width_px = scales[0, 0] * 200
    zoom = output_size[0] / width_px
    turn = np.deg2rad(rotation)
    # Image y points down; the crop's "up" is the image's "up" turned by +rotation.
    linear = zoom * np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])
    points = centers[:, None] + np.random.default_rng(seed).uniform(-0.5, 0.5, (1, 20, 2)) * scales[:, None] * 200
    expected = (points - centers[:, None]) @ linear.T + np.array(output_size) / 2
    tolerance = SLACK * (np.abs(centers).max() + width_px) * zoom
    np.testing.assert_allclose(apply(forward, points), expected, rtol=0, atol=tolerance)


@PROPERTY
@given(box=boxes, rotation=rotations, output_size=crop_sizes, seed=seeds)
def test_inverse_crop_matrix_undoes_the_crop_matrix(box, rotation, output_size, seed):
    """inverse=True solves the same three float32 point pairs the other way round, so both maps are
    exact inverses up to float64 rounding: image -> crop -> image returns every point to within
    1e-9 of its magnitude (a similarity has condition number 1; float64 ulps are 2e-16)."""
    centers, scales = center_scale(box, output_size)
    angle = np.array([rotation])
    forward = affine_matrices(centers, scales, output_size, angle)
    backward = affine_matrices(centers, scales, output_size, angle, inverse=True)
    points = centers[:, None] + np.random.default_rng(seed).uniform(-3, 3, (1, 20, 2)) * scales[:, None] * 200
    magnitude = np.abs(points).max() + np.abs(centers).max()
    np.testing.assert_allclose(apply(backward, apply(forward, points)), points, rtol=0, atol=1e-9 * magnitude)


@PROPERTY
@given(box=boxes, heatmap_size=crop_sizes, seed=seeds)
def test_transform_preds_returns_heatmap_points_to_the_image(box, heatmap_size, seed):
    """transform_preds is the inverse of the (unrotated) crop to the heatmap grid: image points sent
    to heatmap px by the forward matrix come back to within float64 rounding (1e-9 of their
    magnitude), for any box and heatmap size."""
    centers, scales = center_scale(box, heatmap_size)
    points = centers[:, None] + np.random.default_rng(seed).uniform(-1, 1, (1, 17, 2)) * scales[:, None] * 200
    on_heatmap = apply(affine_matrices(centers, scales, heatmap_size), points)
    back = transform_preds(on_heatmap, centers, scales, heatmap_size)
    assert back.dtype == np.float64
    magnitude = np.abs(points).max() + np.abs(centers).max()
    np.testing.assert_allclose(back, points, rtol=0, atol=1e-9 * magnitude)


@PROPERTY
@given(
    image_size=st.tuples(st.integers(8, 300), st.integers(8, 300)),
    box_fractions=st.tuples(st.floats(-0.3, 0.9), st.floats(-0.3, 0.9), st.floats(0.05, 1.2), st.floats(0.05, 1.2)),
    rotation=rotations,
    output_size=crop_sizes,
)
def test_crop_pixels_read_the_image_where_the_inverse_matrix_says(image_size, box_fractions, rotation, output_size):
    """Crop the image whose pixel (x, y) holds the values (x, y, 0): bilinear sampling reproduces a
    linear function exactly, so each crop pixel (u, v) that samples inside the image holds the
    image point it came from, which must be inverse_matrix @ (u, v, 1); the forward matrix then maps
    that value back to (u, v). crop_batch states its sampling positions are off by at most
    2e-7 * (max(H, W) + crop diagonal) px (float32 grid); the float32 ramp adds one ulp of max(H, W)."""
    width, height = image_size
    ramp = np.zeros((height, width, 3), np.float32)
    ramp[..., 0], ramp[..., 1] = np.meshgrid(np.arange(width), np.arange(height))
    fx, fy, fw, fh = box_fractions
    box = (fx * width, fy * height, fw * width, fh * height)
    centers, scales = center_scale(box, output_size)
    angle = np.array([rotation])
    crop = crop_batch(ramp, centers, scales, output_size, angle)[0].numpy()  # (3, out_h, out_w)
    out_w, out_h = output_size
    grid = np.stack(np.meshgrid(np.arange(out_w), np.arange(out_h)), axis=2).reshape(1, -1, 2).astype(np.float64)
    source = apply(affine_matrices(centers, scales, output_size, angle, inverse=True), grid)[0]
    # Only samples whose four bilinear neighbours all lie in the image (the zero border blends in otherwise).
    inside = (source >= 1e-3).all(1) & (source[:, 0] <= width - 1 - 1e-3) & (source[:, 1] <= height - 1 - 1e-3)
    read = crop[:2].reshape(2, -1).T[inside]
    diagonal = np.hypot(out_w, out_h) / (output_size[0] / (scales[0, 0] * 200))  # the crop's diagonal in image px
    tolerance = 2e-7 * (max(width, height) + diagonal) + 2.0**-23 * max(width, height)
    np.testing.assert_allclose(read, source[inside], rtol=0, atol=tolerance)
    forward = affine_matrices(centers, scales, output_size, angle)
    zoom = output_size[0] / (scales[0, 0] * 200)
    np.testing.assert_allclose(apply(forward, read[None])[0], grid[0][inside], rtol=0, atol=tolerance * zoom + 1e-9)


# ------------------------------------------------------------------------------------ flips


def test_flip_index_swaps_each_left_joint_with_the_right_one_of_the_same_name():
    """FLIP_INDEX, derived here from the joint names alone: left_X <-> right_X, the nose stays."""
    swapped = [name.replace("left", "@").replace("right", "left").replace("@", "right") for name in KEYPOINT_NAMES]
    assert [KEYPOINT_NAMES[i] for i in FLIP_INDEX] == swapped
    assert {tuple(sorted(pair)) for pair in FLIP_PAIRS} == {(i, int(j)) for i, j in enumerate(FLIP_INDEX) if i < j}


@PROPERTY
@given(width=st.integers(1, 400), seed=seeds)
def test_flipping_keypoints_twice_is_the_identity(width, seed):
    """Mirror in a crop of ``width`` px (x -> width - 1 - x) and swap the joints with FLIP_INDEX;
    twice gives the keypoints back: exactly for the joint order (FLIP_INDEX is an involution),
    to float64 rounding (1e-12 * width) for x."""
    keypoints = np.random.default_rng(seed).uniform(-50, width + 50, (3, NUM_KEYPOINTS, 3))

    def mirrored(points: np.ndarray) -> np.ndarray:
        out = points[:, FLIP_INDEX].copy()
        out[..., 0] = width - 1 - out[..., 0]
        return out

    np.testing.assert_array_equal(FLIP_INDEX[FLIP_INDEX], np.arange(NUM_KEYPOINTS))
    np.testing.assert_allclose(mirrored(mirrored(keypoints)), keypoints, rtol=0, atol=1e-12 * (width + 50))


@PROPERTY
@given(shape=st.tuples(st.integers(1, 3), st.integers(2, 48), st.integers(2, 48)), seed=seeds)
def test_flip_back_without_shift_twice_is_the_identity(shape, seed):
    """Mirroring the width and swapping left/right maps are both involutions that commute, so
    flip_back(flip_back(h, shift=False), shift=False) == h bit for bit."""
    people, height, width = shape
    maps = np.random.default_rng(seed).normal(size=(people, NUM_KEYPOINTS, height, width)).astype(np.float32)
    np.testing.assert_array_equal(flip_back(flip_back(maps, shift=False), shift=False), maps)


@PROPERTY
@given(heatmap_size=st.tuples(st.integers(8, 64), st.integers(8, 64)), seed=seeds)
def test_drawing_mirrored_keypoints_equals_mirroring_the_drawn_heatmaps(heatmap_size, seed):
    """At stride 1 with whole-pixel keypoints, mirroring the keypoints (x -> w - 1 - x, joints
    swapped by FLIP_INDEX) and then encoding gives exactly flip_back(encode(k), shift=False): the
    Gaussian is symmetric, so the two orders of operations agree bit for bit. This ties coco17's
    FLIP_INDEX to the FLIP_PAIRS flip_back swaps, as the flip test relies on."""
    width, height = heatmap_size
    rng = np.random.default_rng(seed)
    keypoints = np.stack([rng.integers(0, width, (2, NUM_KEYPOINTS)), rng.integers(0, height, (2, NUM_KEYPOINTS))], 2)
    visible = rng.integers(0, 2, (2, NUM_KEYPOINTS)).astype(np.float32)
    mirrored = keypoints[:, FLIP_INDEX].astype(np.float64)
    mirrored[..., 0] = width - 1 - mirrored[..., 0]
    drawn_mirrored, weights_mirrored = encode(mirrored, visible[:, FLIP_INDEX], heatmap_size, heatmap_size)
    drawn, weights = encode(keypoints.astype(np.float64), visible, heatmap_size, heatmap_size)
    np.testing.assert_array_equal(drawn_mirrored, flip_back(drawn, shift=False))
    np.testing.assert_array_equal(weights_mirrored, weights[:, FLIP_INDEX])


# ------------------------------------------------------------------------------------ encode / decode

strides = st.sampled_from([(1, 1), (4, 4), (2, 4), (4, 2), (3, 3)])
heatmap_sizes = st.tuples(st.integers(16, 72), st.integers(16, 96))
image_boxes = st.tuples(st.floats(-200, 2000), st.floats(-200, 2000), st.floats(10, 1500), st.floats(10, 1500))


def heatmap_to_image(points: np.ndarray, centers: np.ndarray, scales: np.ndarray, heatmap_size) -> np.ndarray:
    """Heatmap px -> image px of an unrotated crop, by hand: the heatmap's middle is the center and
    one heatmap px is scale width * 200 / heatmap width image px on both axes."""
    zoom = scales[:, 0, None, None] * 200 / heatmap_size[0]
    return centers[:, None] + (points - np.array(heatmap_size) / 2) * zoom


def float_slack(centers: np.ndarray, scales: np.ndarray) -> float:
    return SLACK * (np.abs(centers).max() + scales.max() * 200)


@PROPERTY
@given(heatmap_size=heatmap_sizes, stride=strides, box=image_boxes, seed=seeds)
def test_decode_of_encode_recovers_keypoints_to_half_a_heatmap_pixel(heatmap_size, stride, box, seed):
    """encode draws each joint's Gaussian around the whole heatmap pixel mu = int(x / stride + 0.5),
    so no decoder can do better than |x / stride - mu| <= 0.5 heatmap px per axis from encode's
    targets, and each of them reaches mu:

    - argmax: the peak value exp(0) = 1 is the unique maximum, at mu exactly;
    - quarter: mu's two neighbours on each axis are equal (a symmetric Gaussian), so no step: mu;
    - dark: blurring a symmetric map keeps it symmetric around mu, so the gradient and the Newton
      step vanish (to float rounding, 1e-4 px) where the map's edge cannot cut the symmetry: the
      13-px Gaussian square and the samples mu +- 2 inside the map, i.e. mu at least 7 px from each
      edge; within 1 px of an edge dark takes no step at all (its rule), so it returns mu there
      too. In between, the edge-clipped Gaussian pulls the Newton step: nothing is claimed there
      (up to 0.71 px from the keypoint was seen).

    Keypoints are drawn where mu is on the map, x / stride < w - 0.5: in the crop's last half
    heatmap px (right and bottom edges) encode puts the peak at mu = w, off the map (the official
    rule), and only the map's last column shows the Gaussian's flank.

    In image px the heatmap px scale by scale width * 200 / heatmap width, plus float slack."""
    width, height = heatmap_size
    image_size = (width * stride[0], height * stride[1])
    centers, scales = center_scale(box, image_size)
    rng = np.random.default_rng(seed)
    crop_points = rng.uniform(0, 1, (1, NUM_KEYPOINTS, 2)) * (np.array(heatmap_size) - 0.5) * np.array(stride)
    targets, _ = encode(crop_points, np.ones((1, NUM_KEYPOINTS)), image_size, heatmap_size)
    true_heatmap = crop_points / np.array(stride)
    mu = np.floor(true_heatmap + 0.5)  # x >= 0, so int(x + 0.5) == floor(x + 0.5)
    zoom = scales[0, 0] * 200 / width
    slack = float_slack(centers, scales)
    for method in ("argmax", "quarter", "dark"):
        coords, _ = decode(targets, centers, scales, method)
        truth = heatmap_to_image(true_heatmap, centers, scales, heatmap_size)
        at_mu = np.abs(coords - heatmap_to_image(mu, centers, scales, heatmap_size))
        claimed, at_mu_tolerance = np.ones(NUM_KEYPOINTS, bool)[None], slack
        if method == "dark":
            size = np.array(heatmap_size)
            unrefined = ((mu <= 1) | (mu >= size - 2)).any(axis=2)
            far = ((mu >= 7) & (mu <= size - 8)).all(axis=2)
            claimed, at_mu_tolerance = unrefined | far, 1e-4 * zoom + slack
        assert (np.abs(coords - truth)[claimed] <= 0.5 * zoom + slack).all(), method
        assert (at_mu[claimed] <= at_mu_tolerance).all(), method


@PROPERTY
@given(heatmap_size=heatmap_sizes, box=image_boxes, seed=seeds)
def test_decode_finds_the_centre_of_a_subpixel_gaussian_within_each_methods_error(heatmap_size, box, seed):
    """A Gaussian (sigma 2, encode's) sampled at an exact sub-pixel centre c, offset d = c - round(c)
    with |d| <= 0.5 from its brightest pixel, per axis:

    - argmax returns round(c): error |d| <= 0.5 heatmap px;
    - quarter steps 0.25 toward the brighter neighbour, which is on d's side (the Gaussian falls
      off with distance): error ||d| - 0.25| <= 0.25 px (no step when both are equal: |d| ~ 0);
      the step is skipped within 1 px of the edges, so c stays >= 2.5 px inside;
    - dark: its Newton step is exact on a log-quadratic (Gaussian) map, and central differences of
      a quadratic are exact; what remains is the blur's deviation from a Gaussian (an 11-tap
      kernel cut at 2.5 sigma on a sampled map), measured at <= 4e-4 px when c is >= 8 px from
      the edges (the blur's reach, 5 px, plus the samples' +- 2, plus 1): bound 2e-3 px.

    Image px as in the test above."""
    width, height = heatmap_size
    centers, scales = center_scale(box, heatmap_size)
    rng = np.random.default_rng(seed)
    margin = {"argmax": 0.0, "quarter": 2.5, "dark": 8.0}
    bound = {"argmax": 0.5, "quarter": 0.25, "dark": 2e-3}
    rows, cols = np.mgrid[0:height, 0:width]
    zoom = scales[0, 0] * 200 / width
    slack = float_slack(centers, scales)
    for method in ("argmax", "quarter", "dark"):
        low = margin[method]
        if width - 1 - 2 * low <= 0 or height - 1 - 2 * low <= 0:
            continue  # a map too small to hold a peak that far from its edges
        centre = np.stack([rng.uniform(low, width - 1 - low, NUM_KEYPOINTS),
                           rng.uniform(low, height - 1 - low, NUM_KEYPOINTS)], 1)[None]
        squared = (cols - centre[..., 0, None, None]) ** 2 + (rows - centre[..., 1, None, None]) ** 2
        maps = np.exp(-squared / (2 * 2.0**2)).astype(np.float32)
        coords, _ = decode(maps, centers, scales, method)
        error = np.abs(coords - heatmap_to_image(centre, centers, scales, heatmap_size))
        assert (error <= bound[method] * zoom + slack).all(), (method, error.max() / zoom)
