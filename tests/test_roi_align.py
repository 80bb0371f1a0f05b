"""Chapter 4: the transparent ROIAlign equals torchvision's compiled kernel; worked cases by hand; FPN levels."""

from __future__ import annotations

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from explainer.course import measured
from explainer.roi_align import (
    assign_fpn_levels,
    ramp,
    roi_align,
    roi_input_box,
    roi_pool,
    roi_pool_bins,
    sampling_grid_note,
    sampling_points,
)
from tests.conftest import load_golden

RAMP = (torch.arange(10).view(10, 1) * 10 + torch.arange(10).view(1, 10)).float()[None, None]  # value 10 y + x


@st.composite
def roi_case(draw):
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    k = draw(st.integers(0, 6))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, draw(st.integers(1, 3)), h, w, generator=g)
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 0.125, 2.0]))
    span = torch.tensor([w / scale, h / scale])
    xy = (torch.rand(k, 2, generator=g) * 1.6 - 0.3) * span          # some start outside the map
    kind = torch.rand(k, 1, generator=g)
    wh = torch.rand(k, 2, generator=g) * span * 0.8
    wh = torch.where(kind < 0.15, torch.zeros_like(wh), wh)             # zero-size boxes
    wh = torch.where((kind >= 0.15) & (kind < 0.3), wh * 0.05, wh)      # tiny boxes
    boxes = torch.cat([xy, xy + wh], 1)
    idx = torch.randint(0, n, (k, 1), generator=g).float()
    out = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return x, torch.cat([idx, boxes], 1), out, scale, draw(st.sampled_from([-1, 0, 1, 2, 3])), draw(st.booleans())


@settings(max_examples=150)
@given(roi_case())
def test_equals_torchvision_kernel(case):
    x, rois, out, scale, sr, aligned = case
    ref = torchvision.ops.roi_align(x, rois, out, scale, sr, aligned)
    got = roi_align(x, rois, out, scale, sr, aligned)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_list_of_boxes_and_benchmark_scale_case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 50, 76, generator=g)
    boxes = [torch.tensor([[10.0, 20.0, 120.0, 90.0], [-20.0, -5.0, 30.0, 40.0]]), torch.tensor([[200.0, 150.0, 310.0, 230.0]])]
    for aligned in (False, True):
        ref = torchvision.ops.roi_align(x, boxes, 7, 0.25, 2, aligned)
        torch.testing.assert_close(roi_align(x, boxes, 7, 0.25, 2, aligned), ref, rtol=1e-5, atol=1e-5)


def test_worked_case_pixels_1_to_2():
    # RoI [1, 1, 3, 3], 2 x 2 bins of 1 cell, sampling ratio 2: samples at start + 0.25 and + 0.75 in each bin.
    # aligned=False: start 1 -> samples 1.25, 1.75 | 2.25, 2.75; value 10y + x is linear, so the bin averages are
    # at 1.5 and 2.5: [[16.5, 17.5], [26.5, 27.5]].
    # aligned=True: start 0.5 -> bin averages at 1.0 and 2.0 = exactly pixels 1 and 2: [[11, 12], [21, 22]].
    r = torch.tensor([[0.0, 1, 1, 3, 3]])
    assert roi_align(RAMP, r, 2, 1.0, 2, aligned=False).flatten().tolist() == [16.5, 17.5, 26.5, 27.5]
    assert roi_align(RAMP, r, 2, 1.0, 2, aligned=True).flatten().tolist() == [11.0, 12.0, 21.0, 22.0]


def test_degenerate_box_clamped_to_one_cell_only_without_alignment():
    # [3, 3, 3, 3]: aligned=False forces width 1: bins of 0.5, samples at 3.125, 3.375 | 3.625, 3.875 -> averages 3.25, 3.75:
    # 10*3.25 + 3.25 = 35.75 ... ; aligned=True: size 0, adaptive grid ceil(0) = 0 samples -> 0.
    r = torch.tensor([[0.0, 3, 3, 3, 3]])
    assert roi_align(RAMP, r, 2, 1.0, 2, aligned=False).flatten().tolist() == [35.75, 36.25, 40.75, 41.25]
    assert roi_align(RAMP, r, 2, 1.0, 0, aligned=True).abs().sum().item() == 0.0


def test_detectron2_unit_test_case():
    # a 5 x 5 arange, RoI [1, 1, 3, 3], output 4 x 4 (bins of 0.5): aligned=False samples start at 1.25 in x -> 7.5 first,
    # aligned=True at 0.75 -> 4.5 first (value 5 y + x at (0.75, 0.75)).
    x = torch.arange(25.0).view(1, 1, 5, 5)
    r = torch.tensor([[0.0, 1, 1, 3, 3]])
    assert roi_align(x, r, 4, 1.0, 0, aligned=False)[0, 0, 0, :2].tolist() == [7.5, 8.0]
    assert roi_align(x, r, 4, 1.0, 0, aligned=True)[0, 0, 0, :2].tolist() == [4.5, 5.0]


def test_samples_beyond_minus_one_contribute_zero():
    # the whole RoI lies left of x = -1: every sample is invalid, output 0 (clamping would give the edge value)
    r = torch.tensor([[0.0, -8, 2, -4, 6]])
    assert roi_align(RAMP, r, 2, 1.0, 2, aligned=False).abs().sum().item() == 0.0
    assert torchvision.ops.roi_align(RAMP, r, 2, 1.0, 2, False).abs().sum().item() == 0.0


def test_sampling_points_reproduce_the_output():
    box, size = [1.3, 0.7, 6.2, 5.9], (10, 10)
    for aligned in (False, True):
        sp = sampling_points(box, (2, 3), size, 1.0, 2, aligned)
        vals = RAMP[0, 0]
        per_sample = (sp["weights"] * vals[sp["neighbours"][..., 1], sp["neighbours"][..., 0]]).sum(1)
        out = torch.zeros(2, 3, dtype=torch.float64)
        out.index_put_((sp["bin_of"][:, 1], sp["bin_of"][:, 0]), per_sample.double(), accumulate=True)
        ref = roi_align(RAMP, torch.tensor([[0.0, *box]]), (2, 3), 1.0, 2, aligned)[0, 0]
        torch.testing.assert_close(out.float() / sp["count"], ref, rtol=1e-5, atol=1e-5)
        shift = sp["roi"][0] - box[0]
        assert float(shift) == pytest.approx(-0.5 if aligned else 0.0)


@given(roi_case())
def test_roi_pool_equals_torchvision(case):
    x, rois, out, scale, _, _ = case
    torch.testing.assert_close(roi_pool(x, rois, out, scale), torchvision.ops.roi_pool(x, rois, out, scale))


@given(roi_case())
def test_roi_pool_bins_are_the_bins_torchvision_takes_the_maximum_over(case):
    x, rois, out, scale, _, _ = case
    ref = torchvision.ops.roi_pool(x, rois, out, scale)
    oh, ow = (out, out) if isinstance(out, int) else out
    for k, (b, *box) in enumerate(rois.tolist()):
        bins = roi_pool_bins(box, out, x.shape[-2:], scale)["bins"]
        assert len(bins) == oh * ow
        for i, (ws, hs, we, he) in enumerate(bins):
            cell = x[int(b), :, hs:he, ws:we]
            want = cell.amax(dim=(1, 2)) if cell.numel() else torch.zeros(x.shape[1], dtype=x.dtype)
            torch.testing.assert_close(ref[k, :, i // ow, i % ow], want)


def test_roi_pool_bins_by_hand():
    # box [1.3, 1.6, 5.4, 4.7]: corners round to (1, 2, 5, 5), +1 sizes 5 x 4, 2 x 2 bins: x [1, 4) [3, 6), y [2, 4) [4, 6)
    got = roi_pool_bins([1.3, 1.6, 5.4, 4.7], 2, (8, 8))
    assert got["rounded"] == (1, 2, 5, 5)
    assert got["bins"] == [(1, 2, 4, 4), (3, 2, 6, 4), (1, 4, 4, 6), (3, 4, 6, 6)]


def test_fpn_levels_match_both_codebases():
    g = load_golden("roi_align/fpn_levels.json")
    assert assign_fpn_levels(g["legacy"]["boxes"], legacy_plus_one=True).tolist() == [int(v) for v in g["legacy"]["levels"]]
    assert assign_fpn_levels(g["d2"]["boxes"]).tolist() == g["d2"]["levels"]
    # the 111 x 111 box of the chapter: level 3 in Detectron, level 2 in Detectron2
    b = [[0.0, 0.0, 111.0, 111.0]]
    assert assign_fpn_levels(b, legacy_plus_one=True).item() == 3 and assign_fpn_levels(b).item() == 2


@pytest.mark.parametrize("call, needle", [
    (lambda: roi_align(RAMP, torch.zeros(1, 4), 2), "K x 5"),
    (lambda: roi_align(RAMP, torch.tensor([[1.0, 0, 0, 1, 1]]), 2), "batch index"),
    (lambda: roi_align(RAMP, torch.tensor([[0.0, 0, float("nan"), 1, 1]]), 2), "finite"),
    (lambda: roi_align(RAMP, torch.tensor([[0.0, 0, 0, 1, 1]]), 0), "output_size height must be a whole number >= 1"),
    (lambda: roi_align(RAMP, torch.tensor([[0.0, 0, 0, 1, 1]]), 2, spatial_scale=0), "spatial_scale must be > 0"),
    (lambda: roi_align(RAMP[0], torch.tensor([[0.0, 0, 0, 1, 1]]), 2), "N x C x H x W"),
])
def test_bad_input(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)


def test_tiny_zero_and_outside_boxes_are_valid():
    r = torch.tensor([[0.0, 2, 2, 2, 2], [0.0, 50, 50, 60, 60], [0.0, 4, 4, 4.01, 4.02]])
    for aligned in (False, True):
        torch.testing.assert_close(roi_align(RAMP, r, 3, 1.0, -1, aligned), torchvision.ops.roi_align(RAMP, r, 3, 1.0, -1, aligned))


# torchvision 0.29.1 on a 10 x 10 map of 10 y + x, output 2 x 2, spatial_scale 1 (values also recomputed below with
# torchvision's compiled kernel): when aligned=True pools to exactly 0, and when it interpolates
TINY = [  # box, sampling_ratio, torchvision's output (aligned=True), empty grid
    ([3.0, 3, 3, 3], 0, [0.0, 0, 0, 0], True),
    ([3.0, 3, 3, 3], 2, [27.5, 27.5, 27.5, 27.5], False),          # the single point (2.5, 2.5), interpolated
    ([3.0, 3, 3.2, 5], 0, [32.55, 32.65, 42.55, 42.65], False),     # 0.2 px wide: one sample per bin, not 0
    ([3.0, 3, 3, 5], 0, [0.0, 0, 0, 0], True),                      # zero width, positive height
    ([3.0, 3, 3, 5], 2, [32.5, 32.5, 42.5, 42.5], False),
    ([5.0, 5, 4.9, 5.5], 0, [0.0, 0, 0, 0], True),                  # slightly negative width
]


@pytest.mark.parametrize("box, sr, expected, empty", TINY)
def test_when_aligned_true_gives_zero_and_when_it_interpolates(box, sr, expected, empty):
    rois = torch.tensor([[0.0, *box]])
    tv = torchvision.ops.roi_align(RAMP, rois, 2, 1.0, sr, True)[0, 0].reshape(-1)
    ours = roi_align(RAMP, rois, 2, 1.0, sr, True)[0, 0].reshape(-1)
    torch.testing.assert_close(tv, torch.tensor(expected), atol=1e-4, rtol=0)
    torch.testing.assert_close(ours, tv, atol=1e-5, rtol=0)
    note = sampling_grid_note(box, 2, 1.0, sr, True)
    assert note["empty"] is empty and ("exactly 0" in note["why"]) is empty
    # aligned=False widens every box to one cell: never empty
    assert not sampling_grid_note(box, 2, 1.0, sr, False)["empty"]
    assert roi_align(RAMP, rois, 2, 1.0, sr, False).abs().min() > 0


@pytest.mark.slow
def test_aligned_effect_on_the_course_detector_is_measured_not_assumed():
    r = measured.aligned_effect_on_course_detector()
    assert r["matched"] > 10 and 0 < r["box_iou_min"] <= r["box_iou_mean"] < 1.0  # the boxes move
    assert r["box_shift_max"] > 0.5 and 0 < r["mask_iou_mean"] < 1.0
    assert all(0 < r[k][a] <= 1 for k in ("recall", "precision") for a in (False, True))
    dx, dy = r["mask_offset_change_abs"]
    assert 0 < dx < 2 and 0 < dy < 2


def test_detectron_pools_its_inclusive_box_one_pixel_narrower_than_detectron2():
    # The object covers pixels 1..3 in x and y: Detectron stores [1, 1, 3, 3] and RoIAlign reads it as continuous;
    # Detectron2 stores and pools [1, 1, 4, 4].
    obj = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    assert roi_input_box(obj, legacy_plus_one=True).tolist() == [[1.0, 1.0, 3.0, 3.0]]
    assert roi_input_box(obj, legacy_plus_one=False).tolist() == [[1.0, 1.0, 4.0, 4.0]]
    # By hand, on the map 10 y + x (output 2 x 2, sampling ratio 2, aligned=False): bilinear samples of a linear map
    # are exact, so a bin is 10 * (mean sample y) + (mean sample x). [1, 3]: bins [1, 2] and [2, 3], samples 1.25 and
    # 1.75 -> 1.5, 2.25 and 2.75 -> 2.5; [1, 4]: bins [1, 2.5] and [2.5, 4], samples 1.375 and 2.125 -> 1.75,
    # 2.875 and 3.625 -> 3.25.
    features = ramp(10)
    d1 = roi_align(features, [roi_input_box(obj, legacy_plus_one=True)], 2, 1.0, 2, False)[0, 0]
    d2 = roi_align(features, [roi_input_box(obj, legacy_plus_one=False)], 2, 1.0, 2, False)[0, 0]
    assert d1.flatten().tolist() == pytest.approx([16.5, 17.5, 26.5, 27.5])
    assert d2.flatten().tolist() == pytest.approx([19.25, 20.75, 34.25, 35.75])
    with pytest.raises(ValueError, match="legacy_plus_one"):
        roi_input_box(obj, legacy_plus_one="yes")
