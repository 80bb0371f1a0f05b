"""Chapter 2: box area, IoU, regression, clipping and NMS under Detectron's +1 and without it.

Golden values come from the original code (tests/data/boxes/README.md); NMS is checked against
torchvision (the operator Detectron2 calls) and against ``reference_cython_nms`` below, a simple
loop written from the semantics of Detectron's ``cython_nms.pyx``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from explainer import boxes as B
from tests.conftest import load_golden

G = load_golden("boxes/boxes_legacy_vs_d2.json")
SRC = torch.tensor(G["inputs"]["src_boxes"])
TGT = torch.tensor(G["inputs"]["tgt_boxes"])
DELTAS = torch.tensor(G["inputs"]["fixed_deltas"])
LEG, D2 = G["legacy"], G["d2"]
WEIGHTS = ["10_10_5_5", "1_1_1_1"]


def close(actual, expected, atol=1e-5, rtol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                               atol=atol, rtol=rtol)


# ---------------------------------------------------------------- the legacy NMS, written independently
def reference_cython_nms(dets, scores, thresh):
    """Detectron's ``cython_nms.nms``, one pair at a time, with the .pyx's types. Returns the kept set and the order.

    Written from ``detectron/utils/cython_nms.pyx`` (Detectron @04155a0): ``dets`` is an ``np.float32_t`` buffer
    (the scores are its column 4), ``thresh`` is declared ``np.float32_t`` (the Python float is rounded to the
    nearest float32 when it is passed in), and every temporary (``xx1 .. yy2``, ``w``, ``h``, ``inter``, ``ovr``)
    is ``np.float32_t``. The test is ``ovr >= thresh``, float32 against float32. Every operation below is done on
    numpy float32 scalars, which round like C floats.
    """
    d = np.asarray(dets, dtype=np.float32).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    thresh32 = np.float32(thresh)
    one, zero = np.float32(1), np.float32(0)
    x1, y1, x2, y2 = d[:, 0], d[:, 1], d[:, 2], d[:, 3]
    areas = (x2 - x1 + one) * (y2 - y1 + one)  # float32 arrays
    assert areas.dtype == np.float32
    order = np.argsort(s, kind="stable")[::-1]
    suppressed = np.zeros(len(d), dtype=bool)
    for _i in range(len(d)):
        i = order[_i]
        if suppressed[i]:
            continue
        for _j in range(_i + 1, len(d)):
            j = order[_j]
            if suppressed[j]:
                continue
            xx1, yy1 = max(x1[i], x1[j]), max(y1[i], y1[j])
            xx2, yy2 = min(x2[i], x2[j]), min(y2[i], y2[j])
            w = max(zero, np.float32(np.float32(xx2 - xx1) + one))
            h = max(zero, np.float32(np.float32(yy2 - yy1) + one))
            inter = np.float32(w * h)
            with np.errstate(invalid="ignore"):  # two empty boxes: 0 / 0 is NaN, and NaN >= thresh is false, as in C
                ovr = np.float32(inter / np.float32(np.float32(areas[i] + areas[j]) - inter))
            assert type(ovr) is np.float32 and type(thresh32) is np.float32
            if ovr >= thresh32:
                suppressed[j] = True
    return set(np.where(~suppressed)[0].tolist()), order


# ---------------------------------------------------------------- goldens from the original code
def test_area_matches_both_codebases():
    close(B.area(SRC, legacy_plus_one=True), LEG["area_src"])
    close(B.area(TGT, legacy_plus_one=True), LEG["area_tgt"])
    close(B.area(SRC), D2["area_src"])
    close(B.area(TGT), D2["area_tgt"])


def test_iou_matches_both_codebases():
    close(B.pairwise_iou(SRC, TGT, legacy_plus_one=True), LEG["iou_matrix_src_x_tgt"])
    close(B.pairwise_iou(SRC, TGT), D2["iou_matrix_src_x_tgt"])
    close(B.pairwise_iou(SRC, TGT, legacy_plus_one=True).diagonal(), LEG["iou_pairs"])
    close(B.pairwise_iou(SRC, TGT).diagonal(), D2["iou_pairs"])


@pytest.mark.parametrize("key", WEIGHTS)
def test_encode_matches_both_codebases(key):
    w = LEG["transforms"][key]["weights"]
    close(B.encode(SRC, TGT, w, legacy_plus_one=True), LEG["transforms"][key]["encode_deltas_src_to_tgt"])
    idx = D2["encode_valid_pair_indices"]
    expected = [D2["transforms"][key]["get_deltas_src_to_tgt"][i] for i in idx]
    close(B.encode(SRC[idx], TGT[idx], w), expected)


@pytest.mark.parametrize("key", WEIGHTS)
def test_decode_matches_both_codebases(key):
    w = LEG["transforms"][key]["weights"]
    close(B.decode(DELTAS, SRC, w, legacy_plus_one=True), LEG["transforms"][key]["decode_fixed_deltas"])
    close(B.decode(DELTAS, SRC, w), D2["transforms"][key]["apply_deltas_fixed_deltas"])
    # round trips: decode(encode(src -> tgt)) gives tgt back
    legacy_rt = B.decode(B.encode(SRC, TGT, w, legacy_plus_one=True), SRC, w, legacy_plus_one=True)
    close(legacy_rt, LEG["transforms"][key]["decode_roundtrip"])
    idx = D2["encode_valid_pair_indices"]
    d2_rt = B.decode(B.encode(SRC[idx], TGT[idx], w), SRC[idx], w)
    close(d2_rt, [D2["transforms"][key]["apply_deltas_roundtrip"][i] for i in idx])


@pytest.mark.parametrize("key", WEIGHTS)
def test_legacy_deltas_through_detectron2_decoder_match_original(key):
    w = LEG["transforms"][key]["weights"]
    got = B.regression_drift(SRC, TGT, w)
    close(got["detectron2"], D2["transforms"][key]["apply_deltas_on_LEGACY_encoded_deltas"])
    # the legacy decoder gives the targets back, so the drift is Detectron2's output minus the targets
    # (a difference of two float32 pixel coordinates: absolute tolerance 2e-4)
    close(got["drift"], (torch.tensor(D2["transforms"][key]["apply_deltas_on_LEGACY_encoded_deltas"]) - TGT).tolist(),
          atol=2e-4)


def test_scale_clamp_is_log_1000_over_16_in_both():
    assert B.DEFAULT_SCALE_CLAMP == pytest.approx(LEG["BBOX_XFORM_CLIP"], abs=1e-12)
    assert B.DEFAULT_SCALE_CLAMP == pytest.approx(D2["transforms"]["10_10_5_5"]["scale_clamp"], abs=1e-12)


def test_clip_matches_both_codebases():
    c = LEG["clip"]
    close(B.clip(c["boxes"], c["image_hw"], legacy_plus_one=True), c["clip_tiled_boxes"])
    close(B.clip(c["boxes"], c["image_hw"], legacy_plus_one=True), c["clip_boxes_to_image"])
    c = D2["clip"]
    close(B.clip(c["boxes"], c["image_hw"]), c["Boxes.clip"])


@pytest.mark.parametrize("size", ["0.0", "1.0", "2.0"])
def test_small_box_filters_match_both_codebases(size):
    f = LEG["filter_small_boxes"]
    assert B.nonempty(f["boxes"], float(size), legacy_plus_one=True).tolist() == f["keep_by_min_size"][size]
    n = D2["nonempty"]
    assert B.nonempty(n["boxes"], float(size)).tolist() == n["keep_by_threshold"][size]


# ---------------------------------------------------------------- worked numbers derived by hand
def test_worked_examples_from_the_reference():
    a, b = torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[1.0, 1, 11, 11]])
    assert B.area(a, legacy_plus_one=True).item() == 121 and B.area(a).item() == 100
    # legacy: inter 10*10, union 121 + 121 - 100 = 142; D2: 81 / (100 + 100 - 81) = 81/119
    assert B.pairwise_iou(a, b, legacy_plus_one=True).item() == pytest.approx(100 / 142, rel=1e-6)
    assert B.pairwise_iou(a, b).item() == pytest.approx(81 / 119, rel=1e-6)
    # encode with (10, 10, 5, 5): legacy dx = 10 * 1 / 11, D2 dx = 10 * 1 / 10
    torch.testing.assert_close(B.encode(a, b, (10, 10, 5, 5), legacy_plus_one=True), torch.tensor([[10 / 11, 10 / 11, 0, 0]]))
    torch.testing.assert_close(B.encode(a, b, (10, 10, 5, 5)), torch.tensor([[1.0, 1.0, 0, 0]]))
    # decode [0.5, -0.3, 0.2, -0.1]: legacy x1 = 6.05 - 0.5 * 11 e^0.04
    d = torch.tensor([[0.5, -0.3, 0.2, -0.1]])
    x1 = B.decode(d, a, (10, 10, 5, 5), legacy_plus_one=True)[0, 0].item()
    assert x1 == pytest.approx(6.05 - 0.5 * 11 * math.exp(0.04), abs=1e-5)
    x2 = B.decode(d, a, (10, 10, 5, 5), legacy_plus_one=True)[0, 2].item()
    assert x2 == pytest.approx(6.05 + 0.5 * 11 * math.exp(0.04) - 1, abs=1e-5)


def test_touching_boxes_have_iou_one_over_21_only_in_detectron():
    a, b = torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[10.0, 0, 20, 10]])
    # they share pixel column 10: 11 pixels out of 121 + 121 - 11 = 231
    assert B.pairwise_iou(a, b, legacy_plus_one=True).item() == pytest.approx(1 / 21, rel=1e-6)
    assert B.pairwise_iou(a, b).item() == 0.0


def test_clip_at_the_border_by_hand():
    # conventions.md: [100, 90, 130, 110] in H=100, W=120
    b = [[100.0, 90, 130, 110], [125.0, 5, 130, 10], [-9.0, 5, -2, 10]]
    assert B.clip(b, (100, 120), legacy_plus_one=True).tolist() == [[100, 90, 119, 99], [119, 5, 119, 10], [0, 5, 0, 10]]
    assert B.clip(b, (100, 120)).tolist() == [[100, 90, 120, 100], [120, 5, 120, 10], [0, 5, 0, 10]]


def test_iou_by_size_shrinks_with_size():
    got = B.iou_by_size([1.0, 10.0, 100.0, 1000.0], shift=1.0)
    # 1 px box shifted by 1: legacy 1/3 (two pixels wide, one shared column), D2 0 (touching)
    assert got["detectron"][0].item() == pytest.approx(1 / 3)
    assert got["detectron2"][0].item() == 0.0 and math.isinf(got["relative_difference"][0].item())
    # s = 10: legacy 10/12, D2 9/11
    assert got["detectron"][1].item() == pytest.approx(10 / 12) and got["detectron2"][1].item() == pytest.approx(9 / 11)
    rel = got["relative_difference"][1:]
    assert (rel[:-1] > rel[1:]).all() and rel[-1].item() < 1e-5


# ---------------------------------------------------------------- NMS
SEED62_PAIR = torch.tensor([[10.0, 20.0, 18.0, 24.0], [12.0, 18.0, 18.0, 25.0]])


def test_seed62_pair_is_suppressed_only_under_detectron():
    scores = torch.tensor([0.6, 0.9])  # the first box has the lower score
    assert B.pairwise_iou(SEED62_PAIR[:1], SEED62_PAIR[1:], legacy_plus_one=True).item() == pytest.approx(35 / 66, rel=1e-6)
    assert B.pairwise_iou(SEED62_PAIR[:1], SEED62_PAIR[1:]).item() == pytest.approx(24 / 50, rel=1e-6)
    assert B.nms(SEED62_PAIR, scores, 0.5, legacy_plus_one=True).tolist() == [1]
    assert B.nms(SEED62_PAIR, scores, 0.5).tolist() == [1, 0]
    assert torchvision.ops.nms(SEED62_PAIR, scores, 0.5).tolist() == [1, 0]
    kept, _ = reference_cython_nms(SEED62_PAIR, scores, 0.5)
    assert kept == {1}


def test_exact_tie_is_suppressed_by_detectron_and_kept_by_torchvision():
    legacy_pair = torch.tensor([[0.0, 0, 9, 9], [0.0, 0, 9, 4]])  # +1 areas 100 and 50, inter 50: IoU 0.5
    scores = torch.tensor([0.9, 0.8])
    assert B.pairwise_iou(legacy_pair[:1], legacy_pair[1:], legacy_plus_one=True).item() == 0.5
    assert B.nms(legacy_pair, scores, 0.5, legacy_plus_one=True).tolist() == [0]
    assert reference_cython_nms(legacy_pair, scores, 0.5)[0] == {0}
    d2_pair = B.to_continuous(legacy_pair)  # [0, 0, 10, 10] and [0, 0, 10, 5]: IoU 50 / 100
    assert B.pairwise_iou(d2_pair[:1], d2_pair[1:]).item() == 0.5
    assert B.nms(d2_pair, scores, 0.5).tolist() == [0, 1]
    assert torchvision.ops.nms(d2_pair, scores, 0.5).tolist() == [0, 1]


# Found by a random search in numpy float32: the legacy IoU and the IoU of the same boxes with x2 + 1
# computed first lie on opposite sides of 0.5 (values in the data README).
ROUNDING_PAIRS = [
    ([0.47175440192222595, 0.0, 2.356314182281494, 2.2429542541503906],
     [1.433274269104004, 0.0, 3.31783390045166, 2.2429542541503906]),
    ([0.23200882971286774, 0.0, 1.8270928859710693, 2.676361560821533],
     [1.0970368385314941, 0.0, 2.6921207904815674, 2.676361560821533]),
    ([1.789113998413086, 0.0, 3.8410861492156982, 0.5117780566215515],
     [2.8064379692077637, 0.0, 4.858410358428955, 0.5117780566215515]),
    ([0.736622154712677, 0.0, 4.711735725402832, 0.5199840068817139],
     [2.3949930667877197, 0.0, 6.3701066970825195, 0.5199840068817139]),
]


@pytest.mark.parametrize("pair", ROUNDING_PAIRS)
def test_legacy_nms_is_exact_where_shifted_torchvision_rounds_differently(pair):
    b = torch.tensor(pair, dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8])
    expected, _ = reference_cython_nms(b, scores, 0.5)
    shifted = b + torch.tensor([0.0, 0, 1, 1])
    naive = set(torchvision.ops.nms(shifted, scores, B.nms_threshold_as_strict(0.5)).tolist())
    assert naive != expected  # the shortcut alone is wrong here ...
    assert set(B.nms(b, scores, 0.5, legacy_plus_one=True).tolist()) == expected  # ... the package is not


def test_strict_threshold_reproduces_greater_or_equal_for_every_nearby_float32():
    # cython_nms.pyx: ovr >= thresh with both np.float32_t; torchvision: float ovr > double iou_threshold
    for t in [0.0, 0.3, 0.5, 0.7, 1 / 3, 0.1 + 0.2, 1.0, 2.0 ** -30, 0.9999999999, 0.1, 0.9]:
        tp = B.nms_threshold_as_strict(t)
        c = np.float32(t)
        lo, hi = np.nextafter(c, np.float32(-1)), c
        xs = [hi]
        for _ in range(300):  # 300 float32 values each side of the threshold
            hi = np.nextafter(hi, np.float32(2))
            lo = np.nextafter(lo, np.float32(-1))
            xs += [hi, lo]
        xs = np.array(xs + [np.float32(0), -np.float32(0), np.float32(1)], dtype=np.float32)
        ge = xs >= np.float32(t)                      # float32 against float32, as the .pyx
        gt = xs.astype(np.float64) > tp               # float32 promoted to double, as torchvision's kernel
        assert (ge == gt).all(), t


def test_threshold_is_rounded_to_nearest_float32_not_up():
    # 0.7 rounds down: float32(0.7) = 0.699999988 < 0.7, and a float32 IoU equal to it is suppressed by Detectron
    c = np.float32(0.7)
    assert float(c) < 0.7
    tp = B.nms_threshold_as_strict(0.7)
    assert float(c) > tp  # the rounded-down threshold itself counts as ">="
    assert np.nextafter(c, np.float32(-1)) == np.float32(tp)


@given(st.floats(0, 1, allow_nan=False))
def test_strict_threshold_property(t):
    tp = B.nms_threshold_as_strict(t)
    assert tp < t  # strictly below the threshold
    c = np.float32(t)
    for x in [np.nextafter(c, np.float32(-1)), c, np.nextafter(c, np.float32(2))]:
        assert (x >= c) == (float(x) > tp)


# Detectron's own arithmetic on this pair: +1 areas 9 x 10 = 90 and 7 x 9 = 63, intersection 7 x 9 = 63, IoU
# 63/90 = 0.7 exactly; float32 division gives 0.699999988 = float32(0.7), and cython_nms compares it with
# thresh, declared np.float32_t, so ovr >= thresh holds: the lower-scoring box 0 is suppressed.
FLOAT32_TIE = [[474.0, 276.0, 482.0, 285.0], [475.0, 276.0, 481.0, 284.0]]
FLOAT32_TIE_SCORES = [0.388, 0.761]


def test_float32_tie_at_0_7_is_suppressed_as_in_cython_nms():
    ovr = np.float32(np.float32(63) / np.float32(90))
    assert ovr == np.float32(0.7) and float(ovr) < 0.7
    assert B.pairwise_iou(FLOAT32_TIE[:1], FLOAT32_TIE[1:], legacy_plus_one=True).item() == float(np.float32(0.7))
    assert reference_cython_nms(FLOAT32_TIE, FLOAT32_TIE_SCORES, 0.7)[0] == {1}
    assert B.nms(FLOAT32_TIE, FLOAT32_TIE_SCORES, 0.7, legacy_plus_one=True).tolist() == [1]
    # every path of the legacy NMS: the literal loop and the exactness check of the fast path
    b = torch.tensor(FLOAT32_TIE)
    order = torch.argsort(torch.tensor(FLOAT32_TIE_SCORES), stable=True).flip(0)   # [1, 0]
    assert order.tolist() == [1, 0]
    assert order[B._legacy_nms_greedy(b[order], 0.7)].tolist() == [1]
    assert B._legacy_keep_holds(b[order], torch.tensor([0]), 0.7)
    assert not B._legacy_keep_holds(b[order], torch.tensor([0, 1]), 0.7)
    # the fast path's torchvision call on the shifted boxes, with the strict threshold
    assert torchvision.ops.nms(B.to_continuous(b[order]), torch.tensor([2.0, 1.0]),
                               B.nms_threshold_as_strict(0.7)).tolist() == [0]
    # Detectron2 / torchvision: IoU 48/72 without +1, both kept; and torchvision on the +1 boxes keeps both too
    # (a float32 IoU of 0.699999988 against the double 0.7, with ">")
    assert B.nms(FLOAT32_TIE, FLOAT32_TIE_SCORES, 0.7).tolist() == [1, 0]
    assert torchvision.ops.nms(B.to_continuous(b), torch.tensor(FLOAT32_TIE_SCORES), 0.7).tolist() == [1, 0]


def test_float32_tie_off_the_exact_grid_goes_through_the_check():
    # the pair moved by 0.1 px: float32(474.1) and the other corners are multiples of 2^-15 (all in [256, 512)),
    # not on the grid that _on_exact_grid accepts, so the fast path's result is checked against the literal
    # float32 formulas; widths and heights stay exact (same binade), so the IoU is still float32(0.7)
    b = (torch.tensor(FLOAT32_TIE, dtype=torch.float64) + 0.1).to(torch.float32)
    assert not B._on_exact_grid(b)
    assert B.pairwise_iou(b[:1], b[1:], legacy_plus_one=True).item() == float(np.float32(0.7))
    assert reference_cython_nms(b, FLOAT32_TIE_SCORES, 0.7)[0] == {1}
    assert B.nms(b, FLOAT32_TIE_SCORES, 0.7, legacy_plus_one=True).tolist() == [1]


@st.composite
def nms_case(draw, integer=True, distinct=False):
    n = draw(st.integers(0, 14))
    rows = []
    for _ in range(n):
        if integer:
            x1, y1 = draw(st.integers(0, 12)), draw(st.integers(0, 12))
            w, h = draw(st.integers(-1, 8)), draw(st.integers(-1, 8))
        else:
            x1, y1 = draw(st.floats(0, 20, width=32)), draw(st.floats(0, 20, width=32))
            w, h = draw(st.floats(0, 10, width=32)), draw(st.floats(0, 10, width=32))
        rows.append([x1, y1, x1 + w, y1 + h])
    # few distinct scores: many ties
    if distinct:
        scores = [0.05 * v for v in draw(st.permutations(range(n)))]
    else:
        scores = [draw(st.sampled_from([0.1, 0.5, 0.5, 0.9, 0.3])) for _ in range(n)]
    t = draw(st.sampled_from([0.0, 0.3, 1 / 3, 0.5, 0.7, 1.0]) | st.floats(0, 1))
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores, dtype=torch.float32), t


@settings(max_examples=80)
@given(nms_case(integer=True))
def test_legacy_nms_equals_reference_loop_on_pixel_boxes(case):
    b, s, t = case
    got = B.nms(b, s, t, legacy_plus_one=True)
    expected, order = reference_cython_nms(b, s, t)
    assert set(got.tolist()) == expected
    # returned in processing order: descending score, equal scores higher index first
    assert got.tolist() == [int(i) for i in order if int(i) in expected]


@settings(max_examples=60)
@given(nms_case(integer=False))
def test_legacy_nms_equals_reference_loop_on_fractional_boxes(case):
    b, s, t = case
    got = B.nms(b, s, t, legacy_plus_one=True)
    expected, _ = reference_cython_nms(b, s, t)
    assert set(got.tolist()) == expected


@settings(max_examples=60)
@given(nms_case(integer=True, distinct=True))
def test_nms_agrees_on_mapped_boxes_except_at_exact_ties(case):
    """On whole-pixel boxes, Detectron's NMS is torchvision's on [x1, y1, x2 + 1, y2 + 1] ...

    ... unless some float32 IoU equals the float32 threshold (>= against >) or scores tie (order)."""
    b, s, t = case
    iou = B.pairwise_iou(b, b, legacy_plus_one=True)  # float32, Detectron's arithmetic on whole pixels
    # Detectron's ovr >= float32(t) and torchvision's ovr > t differ only where ovr == float32(t)
    assume(not (iou == torch.tensor(np.float32(t))).any())
    legacy = B.nms(b, s, t, legacy_plus_one=True)
    assert legacy.tolist() == torchvision.ops.nms(B.to_continuous(b), s, t).tolist()
    assert legacy.tolist() == B.nms(B.to_continuous(b), s, t).tolist()


def test_equal_scores_go_higher_index_first_in_detectron_lower_in_torchvision():
    b = torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 11, 11]])
    s = torch.tensor([0.5, 0.5])
    # Detectron's order is scores.argsort()[::-1]: for equal scores numpy's (insertion) sort keeps 0, 1, reversed 1, 0
    assert np.argsort(np.array([0.5, 0.5], dtype=np.float32))[::-1].tolist() == [1, 0]
    assert B.nms(b, s, 0.5, legacy_plus_one=True).tolist() == [1]
    assert B.nms(b, s, 0.5).tolist() == torchvision.ops.nms(b, s, 0.5).tolist() == [0]


@settings(max_examples=40)
@given(nms_case(integer=False))
def test_detectron2_nms_is_torchvision_ops_nms_including_score_ties(case):
    b, s, t = case
    assert B.nms(b, s, t).tolist() == torchvision.ops.nms(b, s, t).tolist()


def test_legacy_nms_on_many_boxes_equals_vectorised_literal_loop():
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(600, 2, generator=g) * 200
    b = torch.cat([xy, xy + torch.rand(600, 2, generator=g) * 40], 1)
    s = torch.rand(600, generator=g)
    for t in (0.3, 0.5, 0.7):
        got = B.nms(b, s, t, legacy_plus_one=True)
        order = torch.argsort(s, stable=True).flip(0)
        ref = order[B._legacy_nms_greedy(b[order], t)]
        assert got.tolist() == ref.tolist()
    # the exactness check rejects a wrong candidate
    order = torch.argsort(s, stable=True).flip(0)
    kept = B._legacy_nms_greedy(b[order], 0.5)
    assert B._legacy_keep_holds(b[order], kept, 0.5)
    assert not B._legacy_keep_holds(b[order], kept[:-1], 0.5)
    dropped = sorted(set(range(600)) - set(kept.tolist()))[0]
    assert not B._legacy_keep_holds(b[order], torch.cat([kept, torch.tensor([dropped])]), 0.5)


def test_nms_disagreement_fades_with_box_size():
    got = B.nms_disagreement_by_size([4, 8, 512, 1024], n_boxes=300, seed=0)
    assert got["differ"][0] > 10 and got["differ"][1] > 10
    assert got["differ"][2] <= 2 and got["differ"][3] <= 2
    # +1 makes IoUs larger, so on small boxes Detectron suppresses more
    assert got["detectron_kept"][0] < got["detectron2_kept"][0]
    # mapped with to_continuous, whole-pixel boxes differ only through exact ties, and fractional ones not at all
    assert 0 < max(got["differ_mapped"]) < max(got["differ"])
    assert got["differ_mapped_fractional"] == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="sizes must be positive"):
        B.nms_disagreement_by_size([0])


def test_reference_loop_itself_on_a_hand_case():
    # three boxes in a row, scores 3 > 2 > 1: A overlaps B (IoU 0.6), B overlaps C, A does not meet C
    b = [[0, 0, 9, 9], [2, 0, 11, 9], [12, 0, 21, 9]]
    # legacy: A 100 px, B 100 px, inter 8*10 = 80 -> 80/120 = 0.667 >= 0.5: B suppressed; C touches nothing kept
    assert reference_cython_nms(b, [3, 2, 1], 0.5)[0] == {0, 2}
    assert set(B.nms(torch.tensor(b, dtype=torch.float32), torch.tensor([3.0, 2, 1]), 0.5, legacy_plus_one=True).tolist()) == {0, 2}


# ---------------------------------------------------------------- where the +1 mapping holds, and where not
coord = st.floats(-300, 300, allow_nan=False, width=32)


@st.composite
def box_batch(draw, n_min=0, n_max=6, positive=False):
    n = draw(st.integers(n_min, n_max))
    rows = []
    for _ in range(n):
        x1, y1 = draw(coord), draw(coord)
        lo = 0.5 if positive else 0.0
        w, h = draw(st.floats(lo, 200, width=32)), draw(st.floats(lo, 200, width=32))
        rows.append([x1, y1, x1 + w, y1 + h])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


@given(box_batch(), box_batch())
def test_legacy_area_and_iou_are_detectron2_on_mapped_boxes(a, b):
    torch.testing.assert_close(B.area(a, legacy_plus_one=True), B.area(B.to_continuous(a)))
    torch.testing.assert_close(B.pairwise_iou(a, b, legacy_plus_one=True),
                               B.pairwise_iou(B.to_continuous(a), B.to_continuous(b)), atol=1e-12, rtol=1e-9)


@given(box_batch(n_min=1, positive=True), st.data())
def test_legacy_encode_decode_are_detectron2_on_mapped_boxes(src, data):
    n = src.shape[0]
    tgt = data.draw(box_batch(n_min=n, n_max=n, positive=True))
    w = data.draw(st.sampled_from([(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0), (2.0, 3.0, 4.0, 0.5)]))
    legacy = B.encode(src, tgt, w, legacy_plus_one=True)
    mapped = B.encode(B.to_continuous(src), B.to_continuous(tgt), w)
    torch.testing.assert_close(legacy, mapped, atol=1e-9, rtol=1e-9)
    deltas = torch.tensor(data.draw(st.lists(st.floats(-6, 6), min_size=4 * n, max_size=4 * n)), dtype=torch.float64).reshape(n, 4)
    dec_legacy = B.decode(deltas, src, w, legacy_plus_one=True)
    dec_mapped = B.to_inclusive(B.decode(deltas, B.to_continuous(src), w))  # minus 1 on x2 / y2
    torch.testing.assert_close(dec_legacy, dec_mapped, atol=1e-7, rtol=1e-9)


@given(box_batch(), st.integers(1, 400), st.integers(1, 400))
def test_clip_differs_exactly_where_detectron_keeps_one_pixel(b, h, w):
    legacy = B.to_continuous(B.clip(b, (h, w), legacy_plus_one=True))
    d2 = B.clip(B.to_continuous(b), (h, w))
    diff = (legacy != d2)
    # Detectron clamps x1 to W - 1 (Detectron2 to W), and x2 + 1 to at least 1 (Detectron2 to 0):
    # a box beyond the right border or left of the left border stays one pixel wide in Detectron only
    c = B.to_continuous(b)
    expect = torch.stack([c[:, 0] > w - 1, c[:, 1] > h - 1, c[:, 2] < 1, c[:, 3] < 1], 1)
    assert torch.equal(diff, expect)
    assert (legacy[diff] - d2[diff]).abs().le(1).all()


# ---------------------------------------------------------------- bad input and empty input
@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: B.area([[5, 0, 1, 1]]), "boxes must satisfy x2 >= x1"),
        (lambda: B.area([[0, 0, 1]]), "boxes must have shape (N, 4)"),
        (lambda: B.pairwise_iou([[0, 0, 1, 1]], [[0, 0, float("inf"), 1]]), "b must be finite"),
        (lambda: B.encode([[0, 0, 1, 1]], [[0, 0, 1, 1], [0, 0, 2, 2]]), "targets must have one row per box"),
        (lambda: B.encode([[0, 0, 0, 1]], [[0, 0, 1, 1]]), "boxes must have positive widths"),
        (lambda: B.encode([[0, 0, 1, 1]], [[0, 0, 1, 1]], (1, 1, 1)), "weights must be four positive numbers"),
        (lambda: B.decode([[0, 0, 0]], [[0, 0, 1, 1]]), "deltas must have shape (N, 4k)"),
        (lambda: B.decode([[0, 0, 0, 0]], [[0, 0, 1, 1], [0, 0, 1, 1]]), "deltas must have one row per box"),
        (lambda: B.decode([[0, 0, float("nan"), 0]], [[0, 0, 1, 1]]), "deltas must be finite"),
        (lambda: B.clip([[0, 0, 1, 1]], (-3, 4)), "image_size_hw must be (height, width)"),
        (lambda: B.clip([[0, 0, 1, 1]], 5), "image_size_hw must be (height, width)"),
        (lambda: B.nms([[0, 0, 1, 1]], [0.5, 0.2], 0.5), "scores must have one value per box"),
        (lambda: B.nms([[0, 0, 1, 1]], [0.5], 1.5), "iou_threshold must be in [0, 1]"),
        (lambda: B.nms([[0, 0, 1, 1]], [0.5], -0.1, legacy_plus_one=True), "iou_threshold must be in [0, 1]"),
        (lambda: B.nms([[0, 0, 1, 1]], [float("nan")], 0.5), "scores must be finite"),
        (lambda: B.nms([[0, 0, 1, 1]], [[0.5, 0.2]], 0.5), "scores must have shape (N,)"),
        (lambda: B.nms([[3, 0, 1, 1]], [0.5], 0.5, legacy_plus_one=True), "boxes must satisfy x2 >= x1 - 1"),
    ],
)
def test_bad_input_names_the_argument(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)


def test_empty_inputs_give_empty_results():
    e = torch.zeros(0, 4)
    assert B.area(e).shape == (0,)
    assert B.pairwise_iou(e, torch.ones(3, 4)).shape == (0, 3)
    assert B.encode(e, e, legacy_plus_one=True).shape == (0, 4)
    assert B.decode(e, e, legacy_plus_one=True).shape == (0, 4)
    assert B.clip(e, (10, 10)).shape == (0, 4)
    for plus in (True, False):
        assert B.nms(e, torch.zeros(0), 0.5, legacy_plus_one=plus).tolist() == []
        assert B.nms([], [], 0.5, legacy_plus_one=plus).dtype == torch.int64


def test_empty_box_under_legacy_is_valid_and_has_zero_area():
    # x2 = x1 - 1 is Detectron's empty box (no pixel)
    assert B.area([[5.0, 5.0, 4.0, 4.0]], legacy_plus_one=True).item() == 0.0


def test_op_checks_cover_every_operator_with_the_flag():
    from explainer.export_ops import CAFFE2_LEGACY_PLUS_ONE_OPS

    rows = B.legacy_plus_one_op_checks()
    assert [r["op"] for r in rows] == [d["op"] for d in CAFFE2_LEGACY_PLUS_ONE_OPS]
    assert all(r["differs"] for r in rows)
    by_op = {r["op"]: r for r in rows}
    assert by_op["BoxWithNMSLimit"]["detectron"].startswith("[1]")
    assert by_op["BoxWithNMSLimit"]["detectron2"].startswith("[0, 1]")
    assert by_op["DistributeFpnProposals"]["detectron"] == "112" and by_op["DistributeFpnProposals"]["detectron2"] == "111"


def _greedy_reference(m, thr):
    """The definition, written plainly: take the largest remaining entry (first in row-major order on ties)."""
    m = m.clone()
    out = []
    while m.numel():
        v = float(m.max())
        if v < thr or v <= 0:
            break
        i, j = divmod(int(m.argmax()), m.shape[1])
        out.append((i, j))
        m[i, :] = -1
        m[:, j] = -1
    return sorted(out)


def test_greedy_match_equals_taking_the_best_remaining_pair():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n, k = int(torch.randint(0, 12, (1,), generator=g)), int(torch.randint(0, 12, (1,), generator=g))
        m = torch.rand(n, k, generator=g)
        if trial % 3 == 0:
            m = (m * 4).round() / 4  # many ties
        i, j, v = B.greedy_match(m, 0.3)
        assert sorted(zip(i.tolist(), j.tolist())) == _greedy_reference(m, 0.3)
        assert bool((v >= 0.3).all())
    batch = torch.rand(5, 7, 6, generator=g)
    b, i, j, _ = B.greedy_match(batch, 0.5)
    for k in range(5):
        sel = b == k
        assert sorted(zip(i[sel].tolist(), j[sel].tolist())) == _greedy_reference(batch[k], 0.5)
    with pytest.raises(ValueError, match="iou must be an N x M or B x N x M tensor"):
        B.greedy_match(torch.rand(3), 0.5)
