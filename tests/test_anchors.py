"""Chapter 3: anchors. Detectron's side must match the original exactly, Detectron2's to 1e-5."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from explainer import anchors as A
from explainer.conventions import DETECTRON, DETECTRON2
from explainer.pixels import to_continuous
from tests.conftest import load_golden

DET = load_golden("anchors/detectron_generate_anchors.json")
D2 = load_golden("anchors/d2_cell_anchors.json")
SIZES, RATIOS = (32, 64, 128, 256, 512), (0.5, 1, 2)


def test_detectron_single_call_exact():
    got = A.detectron_cell_anchors(16, SIZES, RATIOS)
    assert torch.equal(got, torch.tensor(DET["single_call"]["anchors_xyxy"], dtype=torch.float64))


@pytest.mark.parametrize("i", range(5))
def test_detectron_fpn_levels_exact(i):
    lv = DET["fpn_levels"]["levels"][i]
    got = A.detectron_cell_anchors(lv["stride"], (lv["size"],), lv["aspect_ratios"])
    assert torch.equal(got, torch.tensor(lv["anchors_xyxy"], dtype=torch.float64))


def test_py_faster_rcnn_table_is_the_matlab_comment_minus_one():
    got = A.detectron_cell_anchors(16, (128, 256, 512), RATIOS)
    ref = DET["py_faster_rcnn_default"]
    assert torch.equal(got, torch.tensor(ref["anchors_xyxy"], dtype=torch.float64))
    assert got[0].tolist() == [-84.0, -40.0, 99.0, 55.0]
    assert torch.equal(got + 1, torch.tensor(ref["matlab_1based_values_from_file_comment"], dtype=torch.float64))


def test_detectron_grid_exact():
    g = DET["grid_3x4_stride16_size32"]
    cell = A.detectron_cell_anchors(16, (32,), RATIOS)
    assert torch.equal(cell, torch.tensor(g["cell_anchors"], dtype=torch.float64))
    got = A.grid_anchors(cell, g["feature_hw"], 16, offset=0.0)
    assert torch.equal(got, torch.tensor(g["all_anchors_xyxy"], dtype=torch.float64))


def test_d2_single_call_and_levels():
    torch.testing.assert_close(A.d2_cell_anchors(SIZES, RATIOS), torch.tensor(D2["single_call"]["anchors_xyxy"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(A.d2_cell_anchors(SIZES, RATIOS, dtype=torch.float64),
                               torch.tensor(D2["single_call"]["generate_cell_anchors_float64"], dtype=torch.float64))
    for lv in D2["fpn_levels"]["levels"]:
        torch.testing.assert_close(A.d2_cell_anchors((lv["size"],), RATIOS), torch.tensor(lv["anchors_xyxy"]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("offset", ["0.0", "0.5"])
def test_d2_grids(offset):
    g = D2["grid_3x4_stride16_size32"][f"offset_{offset}"]
    got = A.grid_anchors(A.d2_cell_anchors((32,), RATIOS), (3, 4), 16, offset=float(offset))
    torch.testing.assert_close(got, torch.tensor(g["all_anchors_xyxy"]), rtol=1e-5, atol=1e-5)


def test_detectron_is_d2_offset_half_plus_rounding():
    cmp = D2["grid_3x4_stride16_size32"]["comparison_with_detectron_grid"]
    det = to_continuous(A.grid_anchors(A.detectron_cell_anchors(16, (32,), RATIOS), (3, 4), 16))
    d2 = A.grid_anchors(A.d2_cell_anchors((32,), RATIOS, dtype=torch.float64), (3, 4), 16, offset=0.5)
    torch.testing.assert_close((det - d2).float(), torch.tensor(cmp["detectron_as_continuous_minus_d2_offset0.5"]), rtol=1e-5, atol=1e-5)
    # worked numbers of conventions.md section 2: ratio 1 identical, ratio 0.5 differs by [-0.37, -0.69, 0.37, 0.69]
    assert torch.equal(det[1], d2[1])
    assert [round(v, 2) for v in (det[0] - d2[0]).tolist()] == [-0.37, -0.69, 0.37, 0.69]


def test_d2_formulas_by_hand():
    a = A.d2_cell_anchors((32,), (0.5,), dtype=torch.float64)[0]
    w, h = (a[2] - a[0]).item(), (a[3] - a[1]).item()
    assert w == pytest.approx(math.sqrt(1024 / 0.5)) and h == pytest.approx(0.5 * w) and w * h == pytest.approx(1024)


def test_row_orders():
    det = A.detectron_cell_anchors(16, SIZES, RATIOS)
    sm = A.ratio_major_to_size_major(det, len(SIZES), len(RATIOS))
    # size-major: row = size_index * 3 + ratio_index; ratio-major: ratio_index * 5 + size_index
    for s in range(5):
        for r in range(3):
            assert torch.equal(sm[s * 3 + r], det[r * 5 + s])


def test_report_numbers_for_stride16_size32():
    rows = {(r["size"], r["ratio"]): r for r in A.anchor_report(16, (32,), RATIOS)}
    r = rows[(32.0, 0.5)]
    assert (r["detectron"]["w"], r["detectron"]["h"], r["detectron"]["area"]) == (46.0, 24.0, 1104.0)
    assert r["detectron"]["aspect"] == pytest.approx(24 / 46)
    assert r["detectron2"]["area"] == pytest.approx(1024.0)
    assert r["detectron"]["centre"] == (8.0, 8.0)  # index 7.5 is the continuous point 8 = offset 0.5 * 16
    assert rows[(32.0, 1.0)]["diff_vs_offset05"] == [0.0, 0.0, 0.0, 0.0]


def test_proposal_shift_per_level():
    got = A.proposal_shift()
    assert [r["numeric_centre_shift"][0] for r in got] == [1.5, 3.5, 7.5, 15.5, 31.5]
    assert [r["continuous_centre_shift"][0] for r in got] == [2.0, 4.0, 8.0, 16.0, 32.0]
    half = A.proposal_shift(offset=0.5)
    assert all(abs(r["continuous_centre_shift"][0]) < 1e-9 for r in half)


@given(st.integers(1, 7), st.sampled_from([1, 2, 4, 8, 16, 32]))
def test_ratio_one_anchors_agree_exactly_with_offset_half(level, mult):
    stride = 2.0 ** level
    size = stride * mult
    det = to_continuous(A.detectron_cell_anchors(stride, (size,), (1.0,)))
    d2 = A.d2_cell_anchors((size,), (1.0,), dtype=torch.float64) + 0.5 * stride
    assert torch.equal(det, d2)


@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([4.0, 8.0, 16.0]), st.floats(0, 0.99))
def test_grid_layout_is_location_major(h, w, stride, offset):
    cell = A.d2_cell_anchors((32,), RATIOS, dtype=torch.float64)
    g = A.grid_anchors(cell, (h, w), stride, offset).reshape(h, w, 3, 4)
    centres = (g[..., :2] + g[..., 2:]) / 2
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    torch.testing.assert_close(centres[..., 0], ((xs + offset) * stride)[..., None].expand(h, w, 3))
    torch.testing.assert_close(centres[..., 1], ((ys + offset) * stride)[..., None].expand(h, w, 3))


def test_all_level_anchors_count_for_800x1333():
    n = [len(a) for a in A.all_level_anchors((800, 1333))]
    expected = [math.ceil(800 / s) * math.ceil(1333 / s) * 3 for s in (4, 8, 16, 32, 64)]
    assert n == expected and sum(n) == 267069
    assert [len(a) for a in A.all_level_anchors((800, 1333), convention=DETECTRON)] == expected


ONE_LEVEL = [{"name": "P4", "level": 4, "stride": 16.0, "sizes": (32.0,), "aspect_ratios": RATIOS}]


def test_all_level_anchors_are_each_codebases_grid():
    # a 48 x 64 image at stride 16 is the goldens' 3 x 4 feature map
    det = A.all_level_anchors((48, 64), ONE_LEVEL, convention=DETECTRON)[0]
    assert det.dtype == torch.float32
    assert torch.equal(det, torch.tensor(DET["grid_3x4_stride16_size32"]["all_anchors_xyxy"], dtype=torch.float32))
    for offset, conv in (("0.0", DETECTRON2), ("0.5", DETECTRON2.replace(anchor_offset=0.5))):
        got = A.all_level_anchors((48, 64), ONE_LEVEL, convention=conv)[0]
        torch.testing.assert_close(got, torch.tensor(D2["grid_3x4_stride16_size32"][f"offset_{offset}"]["all_anchors_xyxy"]),
                                   rtol=1e-5, atol=1e-5)


def test_all_level_anchors_under_detectron_is_generate_anchors_shifted_by_arange_times_stride():
    # Detectron's ops/generate_proposals.py: shifts arange(W) * stride added to every cell anchor, location-major
    h, w = 100, 130
    for lv, got in zip(DET["fpn_levels"]["levels"], A.all_level_anchors((h, w), convention=DETECTRON)):
        s = lv["stride"]
        cell = torch.tensor(lv["anchors_xyxy"], dtype=torch.float64)
        ys, xs = torch.meshgrid(torch.arange(math.ceil(h / s)) * s, torch.arange(math.ceil(w / s)) * s, indexing="ij")
        shifts = torch.stack([xs.reshape(-1), ys.reshape(-1)] * 2, 1).double()
        assert torch.equal(got.double(), (shifts[:, None] + cell[None]).reshape(-1, 4)), lv["stride"]


def test_cell_anchors_follow_rounding_and_order():
    det = torch.tensor(DET["single_call"]["anchors_xyxy"], dtype=torch.float64)  # ratio-major, inclusive, centre 7.5
    exact = torch.tensor(D2["single_call"]["generate_cell_anchors_float64"], dtype=torch.float64)  # size-major
    got = A.cell_anchors(16, SIZES, RATIOS, DETECTRON, dtype=torch.float64)
    assert torch.equal(got, to_continuous(det) - 8.0)  # continuous, centred on 0
    n_s, n_r = len(SIZES), len(RATIOS)
    by_size = DETECTRON.replace(anchor_order="size_major")
    assert torch.equal(A.cell_anchors(16, SIZES, RATIOS, by_size, dtype=torch.float64),
                       got.reshape(n_r, n_s, 4).transpose(0, 1).reshape(-1, 4))
    assert torch.equal(A.cell_anchors(16, SIZES, RATIOS, DETECTRON2, dtype=torch.float64), exact)
    by_ratio = DETECTRON2.replace(anchor_order="ratio_major")
    assert torch.equal(A.cell_anchors(16, SIZES, RATIOS, by_ratio, dtype=torch.float64),
                       exact.reshape(n_s, n_r, 4).transpose(0, 1).reshape(-1, 4))


def test_a_side_is_a_convention_not_a_string():
    with pytest.raises(TypeError, match="convention must be an explainer.conventions.Convention"):
        A.all_level_anchors((800, 1333), convention="detectron")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="convention must be an explainer.conventions.Convention"):
        A.cell_anchors(16, (32,), (1.0,), "detectron2")  # type: ignore[arg-type]


@pytest.mark.parametrize("call, needle", [
    (lambda: A.detectron_cell_anchors(0, (32,), (1,)), "stride must be > 0"),
    (lambda: A.detectron_cell_anchors(16, (-32,), (1,)), "sizes must be a non-empty sequence of positive numbers"),
    (lambda: A.d2_cell_anchors((32,), (0,)), "aspect_ratios must be a non-empty sequence of positive numbers"),
    (lambda: A.grid_anchors(A.d2_cell_anchors((32,), (1,)), (0, 4), 16), "feature_size height must be a whole number >= 1"),
    (lambda: A.grid_anchors(A.d2_cell_anchors((32,), (1,)), (3, 4), 16, offset=1.0), "offset must be in [0, 1)"),
    (lambda: A.grid_anchors(A.d2_cell_anchors((32,), (1,)), (3, 4), -16), "stride must be > 0"),
])
def test_bad_input(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)


# ---------------------------------------------------------------- RPN predictor rows in the two anchor orders
def test_permute_anchor_rows_moves_blocks_of_four_deltas():
    n_s, n_r = 5, 3
    obj = torch.arange(15.0)
    deltas = torch.arange(60.0)  # row 4a + c
    moved = A.permute_anchor_rows(obj, n_s, n_r, "ratio_major", "size_major")
    # size-major row k = (s, r) = divmod(k, n_r) holds Detectron's ratio-major row r * n_s + s
    want = [r * n_s + s for s, r in (divmod(k, n_r) for k in range(15))]
    assert moved.tolist() == want
    dm = A.permute_anchor_rows(deltas, n_s, n_r, "ratio_major", "size_major", per_anchor=4)
    assert dm.tolist() == [4 * a + c for a in want for c in range(4)]
    back = A.permute_anchor_rows(dm, n_s, n_r, "size_major", "ratio_major", per_anchor=4)
    assert torch.equal(back, deltas)
    w = torch.randn(60, 7, 1, 1)  # a 1 x 1 conv weight: rows move with their input channels
    assert torch.equal(A.permute_anchor_rows(w, n_s, n_r, "ratio_major", "size_major", per_anchor=4)[4:8], w[4 * want[1]:4 * want[1] + 4])
    with pytest.raises(ValueError, match="rows must have n_sizes"):
        A.permute_anchor_rows(torch.zeros(14), n_s, n_r, "ratio_major", "size_major")


def test_rpn_outputs_per_anchor_read_in_each_order():
    stride, sizes, ratios = 16.0, (32.0, 64.0, 128.0), (0.5, 1.0, 2.0)
    rpn = A.object_answering_rpn(8, stride, sizes, ratios, object_size=(60.0, 30.0))
    det = A.rpn_outputs_per_anchor(rpn["objectness_weight"], rpn["objectness_bias"], rpn["deltas_weight"], rpn["deltas_bias"],
                                   rpn["feature"], stride, sizes, ratios, convention=DETECTRON)
    # Detectron's rows are ratio-major; each one decodes onto the object, centred on the anchors' centre stride / 2
    assert det["size"].tolist() == [32, 64, 128] * 3 and det["ratio"].tolist() == [0.5] * 3 + [1.0] * 3 + [2.0] * 3
    torch.testing.assert_close(det["proposals"], torch.tensor([[8 - 30.0, 8 - 15.0, 8 + 30.0, 8 + 15.0]] * 9, dtype=torch.float64),
                               atol=1e-4, rtol=0)
    # objectness 10 (IoU - 0.5): highest for the anchor most like a 60 x 30 box (ratio 0.5, size 32: 46 x 24 px, the
    # rounded anchor of the chapter, in continuous coordinates)
    assert (det["size"][det["logits"].argmax()].item(), det["ratio"][det["logits"].argmax()].item()) == (32.0, 0.5)
    d2 = A.rpn_outputs_per_anchor(rpn["objectness_weight"], rpn["objectness_bias"], rpn["deltas_weight"], rpn["deltas_bias"],
                                  rpn["feature"], stride, sizes, ratios, convention=DETECTRON2)
    assert d2["size"].tolist() == [32] * 3 + [64] * 3 + [128] * 3 and d2["ratio"].tolist() == [0.5, 1.0, 2.0] * 3
    assert torch.equal(d2["anchors"], A.d2_cell_anchors(sizes, ratios, dtype=torch.float64))  # OFFSET 0: centred on 0
    with pytest.raises(ValueError, match="need 9 objectness rows"):
        A.rpn_outputs_per_anchor(rpn["objectness_weight"][:8], rpn["objectness_bias"][:8], rpn["deltas_weight"],
                                 rpn["deltas_bias"], rpn["feature"], stride, sizes, ratios)
    with pytest.raises(ValueError, match="objectness must be a 1 x 1 convolution"):
        A.rpn_outputs_per_anchor(rpn["objectness_weight"], rpn["objectness_bias"], rpn["deltas_weight"], rpn["deltas_bias"],
                                 torch.zeros(5), stride, sizes, ratios)
