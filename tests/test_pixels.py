"""Chapter 1: pixel indices against continuous coordinates.

Golden values come from the original code (tests/data/pixels/README.md); the rest are properties
derived by hand from the two pixel models.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from explainer import boxes as B
from explainer import pixels
from tests.conftest import load_golden

G = load_golden("pixels/pixels_goldens.json")

# no subnormals: x1 = 1e-45 and w = -1 would round to x2 = -1.0, an inverted inclusive box
coord = st.floats(-500, 500, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)


@st.composite
def boxes_st(draw, n_max=8, inclusive=False):
    n = draw(st.integers(0, n_max))
    rows = []
    for _ in range(n):
        x1, y1 = draw(coord), draw(coord)
        w = draw(st.floats(0 if not inclusive else -1, 300, allow_nan=False, width=32))
        h = draw(st.floats(0 if not inclusive else -1, 300, allow_nan=False, width=32))
        rows.append([x1, y1, x1 + w, y1 + h])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


# ---------------------------------------------------------------- goldens from the original code
def test_flip_boxes_match_detectron_and_detectron2():
    width = G["legacy_flip"]["image_width"]
    legacy = pixels.hflip_boxes(G["legacy_flip"]["boxes"], width, minus_one=True)
    torch.testing.assert_close(legacy, torch.tensor(G["legacy_flip"]["flip_boxes"]), rtol=1e-5, atol=1e-4)
    d2 = pixels.hflip_boxes(G["d2_flip"]["boxes"], width)
    torch.testing.assert_close(d2, torch.tensor(G["d2_flip"]["HFlipTransform.apply_box"]), rtol=1e-5, atol=1e-4)


def test_keypoint_pipeline_of_detectron2_equals_detectron_flip():
    k = G["d2_keypoint_flip"]
    width = k["image_width"]
    kps = torch.tensor(k["input_coco_xyv"])
    loaded = pixels.coco_keypoints_to_continuous(kps)
    torch.testing.assert_close(loaded, torch.tensor(k["after_load_plus_0.5"]))
    flipped = pixels.hflip_points(loaded, width)[k["hflip_indices"]]
    torch.testing.assert_close(flipped, torch.tensor(k["after_HFlipTransform.apply_coords_and_swap"]))
    exported = pixels.continuous_keypoints_to_coco(flipped)
    torch.testing.assert_close(exported, torch.tensor(k["after_export_minus_0.5_in_coco_pixel_index_space"]))
    # Detectron: x -> W - 1 - x on the pixel index, names swapped
    legacy = G["legacy_keypoint_flip"]
    ours = pixels.hflip_points(torch.tensor(legacy["input_xyv_per_keypoint"]), width, minus_one=True)[[0, 2, 1]]
    torch.testing.assert_close(ours, torch.tensor(legacy["flipped_xyv_per_keypoint"]))
    torch.testing.assert_close(ours, exported)


def test_coco_xywh_conversions_match_both_codebases():
    legacy = G["legacy_coco_xywh"]
    xyxy = pixels.xywh_to_xyxy(legacy["coco_xywh"], legacy_plus_one=True)
    torch.testing.assert_close(xyxy, torch.tensor(legacy["xywh_to_xyxy"]), rtol=1e-6, atol=1e-4)
    back = pixels.xyxy_to_xywh(xyxy, legacy_plus_one=True)
    torch.testing.assert_close(back, torch.tensor(legacy["xyxy_to_xywh_of_that"]), rtol=1e-6, atol=1e-4)
    d2 = G["d2_coco_xywh"]
    torch.testing.assert_close(pixels.xywh_to_xyxy(d2["coco_xywh"]), torch.tensor(d2["BoxMode.convert(XYWH_ABS->XYXY_ABS)"]),
                               rtol=1e-6, atol=1e-4)


def test_areas_match_both_codebases():
    src = torch.tensor(G["src_boxes"])
    torch.testing.assert_close(B.area(src, legacy_plus_one=True), torch.tensor(G["legacy_area_src"]), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(B.area(src), torch.tensor(G["d2_area_src"]), rtol=1e-5, atol=1e-4)
    for plus in (True, False):  # one width formula: the area is the product of box_size's width and height
        w, h = pixels.box_size(src, legacy_plus_one=plus)
        assert torch.equal(B.area(src, legacy_plus_one=plus), w * h)


# ---------------------------------------------------------------- worked numbers derived by hand
def test_worked_box_0_0_10_10():
    # conventions.md section 1: [0, 0, 10, 10] has area 121 (legacy) vs 100 (D2)
    both = pixels.compare_box([0, 0, 10, 10])
    assert both["detectron"]["area"] == 121 and both["detectron2"]["area"] == 100
    assert both["detectron"]["continuous_extent"] == (0, 0, 11, 11)
    assert both["detectron"]["centre"] == (5.5, 5.5) and both["detectron2"]["centre"] == (5.0, 5.0)


def test_pixel_centre_and_index_are_heckbert():
    assert pixels.pixel_centre([0, 3]).tolist() == [0.5, 3.5]
    assert pixels.pixel_index([0.0, 0.99, 1.0, -0.01]).tolist() == [0, 0, 1, -1]


def test_polygon_flip_of_detectron_is_one_pixel_off():
    # a triangle touching the left border [0, ...] must touch the right border W after a flip
    poly = [0.0, 0.0, 4.0, 0.0, 0.0, 3.0]
    d2 = pixels.hflip_polygon(poly, 10)
    legacy = pixels.hflip_polygon(poly, 10, minus_one=True)
    assert d2.reshape(-1, 2)[:, 0].max() == 10.0
    assert legacy.reshape(-1, 2)[:, 0].max() == 9.0
    torch.testing.assert_close(d2 - legacy, torch.tensor([1.0, 0.0] * 3))


def test_resize_modes_by_hand():
    # 4 -> 8 pixels: half-pixel maps centre 0.5 -> 1.0, i.e. index 0 -> 0.5
    assert pixels.resize_index([0, 3], 4, 8).tolist() == [0.5, 6.5]
    assert pixels.resize_index([0, 3], 4, 8, mode="align_corners").tolist() == [0.0, 7.0]
    assert pixels.resize_index([0, 3], 4, 8, mode="asymmetric").tolist() == [0.0, 6.0]


def test_detectron_box_scaling_error_at_far_edge():
    # pixels 2..5 (inclusive) scaled by 2 should cover [4, 12); scaling indices gives [4, 10] -> [4, 11)
    inc = torch.tensor([[2.0, 2.0, 5.0, 5.0]])
    legacy = pixels.to_continuous(pixels.scale_boxes(inc, 2.0, legacy_plus_one=True))
    exact = pixels.scale_boxes(pixels.to_continuous(inc), 2.0)
    assert legacy.tolist() == [[4.0, 4.0, 11.0, 11.0]]
    assert exact.tolist() == [[4.0, 4.0, 12.0, 12.0]]


def test_pixel_coverage_counts_pixels():
    cov = pixels.pixel_coverage([1, 1, 3, 2], (4, 5))
    assert cov.sum().item() == pytest.approx(2.0)
    inc = pixels.pixel_coverage([1, 1, 3, 2], (4, 5), inclusive=True)
    assert inc.sum().item() == 6.0  # pixels 1..3 x 1..2
    half = pixels.pixel_coverage([0.5, 0, 1.5, 1], (1, 3))
    assert half.tolist() == [[0.5, 0.5, 0.0]]


# ---------------------------------------------------------------- properties
@given(boxes_st(inclusive=True))
def test_continuous_inclusive_round_trip(b):
    torch.testing.assert_close(pixels.to_inclusive(pixels.to_continuous(b)), b)


@given(boxes_st())
def test_legacy_size_is_d2_size_of_mapped_box(b):
    w1, h1 = pixels.box_size(b, legacy_plus_one=True)
    w2, h2 = pixels.box_size(pixels.to_continuous(b))
    torch.testing.assert_close(w1, w2)
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(pixels.box_centre(b, legacy_plus_one=True), pixels.box_centre(pixels.to_continuous(b)))


@given(boxes_st(), st.integers(1, 2000), st.booleans())
def test_flip_twice_is_identity(b, width, minus_one):
    torch.testing.assert_close(pixels.hflip_boxes(pixels.hflip_boxes(b, width, minus_one=minus_one), width, minus_one=minus_one), b)


@given(boxes_st(), st.integers(1, 2000))
def test_detectron_flip_of_indices_equals_d2_flip_of_coordinates(b, width):
    """On boxes, each codebase's flip is right in its own pixel model."""
    legacy = pixels.to_continuous(pixels.hflip_boxes(b, width, minus_one=True))
    d2 = pixels.hflip_boxes(pixels.to_continuous(b), width)
    torch.testing.assert_close(legacy, d2)


@given(st.integers(1, 64), st.integers(1, 64))
def test_half_pixel_resize_is_a_pure_scale_of_continuous_coordinates(n_in, n_out):
    i = torch.arange(n_in, dtype=torch.float64)
    lands = pixels.resize_index(i, n_in, n_out)
    torch.testing.assert_close(pixels.pixel_centre(lands), pixels.pixel_centre(i) * (n_out / n_in))
    # the whole image maps onto the whole image
    assert lands[0] + 0.5 == pytest.approx(0.5 * n_out / n_in)


@given(st.integers(2, 64), st.integers(2, 64))
def test_align_corners_pins_corner_pixels(n_in, n_out):
    lands = pixels.resize_index(torch.tensor([0.0, n_in - 1.0]), n_in, n_out, mode="align_corners")
    assert lands.tolist() == pytest.approx([0.0, n_out - 1.0])


@given(boxes_st(), st.floats(0.1, 8, allow_nan=False))
def test_scaling_agrees_only_when_scale_is_one(b, s):
    legacy = pixels.to_continuous(pixels.scale_boxes(b, s, legacy_plus_one=True))
    exact = pixels.scale_boxes(pixels.to_continuous(b), s)
    err = legacy - exact
    torch.testing.assert_close(err[:, :2], torch.zeros_like(err[:, :2]))
    torch.testing.assert_close(err[:, 2:], torch.full_like(err[:, 2:], 1.0 - s), atol=1e-9, rtol=0)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: pixels.to_continuous([[0, 0, 1]]), "boxes must have shape (N, 4)"),
        (lambda: pixels.to_continuous([[0, 0, float("nan"), 1]]), "boxes must be finite"),
        (lambda: pixels.box_size([[5, 0, 1, 1]]), "x2 >= x1"),
        (lambda: pixels.hflip_boxes([[0, 0, 1, 1]], -3), "width must be > 0"),
        (lambda: pixels.resize_index([0], 4, 0), "out_size must be a whole number >= 1"),
        (lambda: pixels.resize_index([0], 4, 8, mode="bicubic"), "mode must be one of"),
        (lambda: pixels.pixel_coverage([0, 0, 1, 1], (0, 4)), "image_size_hw must be (height, width)"),
        (lambda: pixels.hflip_polygon([1, 2, 3], 10), "even number"),
        (lambda: pixels.scale_boxes([[0, 0, 1, 1]], math.inf), "scale must be a finite number"),
        (lambda: pixels.xywh_to_xyxy([[0, 0, -1, 1]]), "w >= 0"),
    ],
)
def test_bad_input_names_the_argument(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)


def test_empty_inputs_are_valid():
    assert pixels.to_continuous(torch.zeros(0, 4)).shape == (0, 4)
    assert pixels.hflip_boxes([], 10).shape == (0, 4)


# --------------------------------------------------------------------------------------------------
# keypoints through the keypoint head
# --------------------------------------------------------------------------------------------------
def test_the_same_heatmap_gives_exported_keypoints_half_a_pixel_apart():
    # Both heatmaps_to_keypoints decode cell d as d + 0.5 (Detectron utils/keypoints.py l. 150, Detectron2
    # structures/keypoints.py); Detectron's COCO writer writes that value, Detectron2's subtracts 0.5
    # (evaluation/coco_evaluation.py l. 448). Box from x = 10, 56 px wide, resized to 56 cells: cell 5 -> 15.5.
    x = pixels.heatmap_cell_to_keypoint([5.0], 10.0, 56.0, 56)
    assert x.tolist() == [15.5]
    kp = torch.tensor([[15.5, 15.5, 1.0]])
    d1 = pixels.exported_keypoints(kp, keypoint_half_pixel=False)
    d2 = pixels.exported_keypoints(kp, keypoint_half_pixel=True)
    assert d1[:, :2].tolist() == [[15.5, 15.5]] and d2[:, :2].tolist() == [[15.0, 15.0]]
    assert d1[0, 2] == d2[0, 2] == 1.0


def test_a_keypoint_round_trip_through_each_codebase():
    # COCO keypoint at pixel index 15, box from 10 to 66 (56 px), heatmap 56 x 56 (one cell per pixel):
    # Detectron trains cell floor(15 - 10) = 5 and writes 5 + 0.5 + 10 = 15.5; Detectron2 loads 15.5, trains
    # floor(5.5) = 5, decodes 15.5 and writes 15.0, the annotation it started from.
    index = torch.tensor([15.0])
    d1_cell = pixels.keypoint_heatmap_cell(index, 10.0, 56.0, 56)
    d2_cell = pixels.keypoint_heatmap_cell(index + 0.5, 10.0, 56.0, 56)
    assert d1_cell.tolist() == d2_cell.tolist() == [5.0]
    out = pixels.heatmap_cell_to_keypoint(d1_cell, 10.0, 56.0, 56)
    row = torch.stack([out, out], 1)
    assert pixels.exported_keypoints(row, keypoint_half_pixel=False)[0, 0] == 15.5
    assert pixels.exported_keypoints(row, keypoint_half_pixel=True)[0, 0] == 15.0


def test_detectrons_fixed_deconvolution_equals_interpolate_inside_and_not_at_the_border():
    # the FCN kernel for up_scale 2: size 4, factor 2, centre 1.5 -> 1 - |i - 1.5| / 2 = [0.25, 0.75, 0.75, 0.25]
    w = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64)
    assert torch.equal(pixels.bilinear_deconv_kernel(2), w[:, None] * w[None, :])
    maps = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(1, 1, 3, 3)
    d1 = pixels.upsample_heatmaps(maps, 2, fixed_deconv=True)[0, 0]
    d2 = pixels.upsample_heatmaps(maps, 2, fixed_deconv=False)[0, 0]
    assert d1.shape == d2.shape == (6, 6)
    assert torch.allclose(d1[1:-1, 1:-1], d2[1:-1, 1:-1])
    # the corner by hand: the transposed convolution has only the weight 0.75 * 0.75 on the first value (the
    # others fall outside the map); interpolate's sample at -0.25 is clamped to the edge value itself
    assert d1[0, 0].item() == pytest.approx(0.5625 * 1.0) and d2[0, 0].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="up_scale"):
        pixels.upsample_heatmaps(maps, 3, fixed_deconv=True)
