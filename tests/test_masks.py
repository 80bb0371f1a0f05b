"""Chapter 6: pasting masks. Detectron's paste against Detectron's own segm_results (float32, tests/data/masks), its
resize against OpenCV's output; the rest by properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from explainer import masks as Mk
from explainer.deployment import cv2_resize
from explainer.pixels import pixel_coverage
from tests.conftest import load_golden

CV = load_golden("masks/cv2_resize.json")
_i, _j = np.mgrid[0:28, 0:28].astype(np.float32)
MASK = torch.from_numpy(1.0 / (1.0 + np.exp(-(10.0 - np.hypot(_i - 13.2, _j - 14.7)) / 1.5)))


@pytest.mark.parametrize("case", range(5))
def test_resize_equals_opencv(case):
    c = CV["cases"][case]
    padded = torch.zeros(30, 30)
    padded[1:-1, 1:-1] = MASK
    got = cv2_resize(padded, (c["h"], c["w"])).numpy()
    np.testing.assert_allclose(got, np.array(c["resized"]), atol=1e-6)
    assert ((got > 0.5) == np.array(c["binary_gt_0.5"], dtype=bool)).all()


def test_worked_example_steps():
    st_ = Mk.detectron_paste_steps(MASK, [5.3, 4.7, 30.8, 25.2], (40, 50))
    assert [round(v, 2) for v in st_["expanded_box"].tolist()] == [4.39, 3.97, 31.71, 25.93]
    assert st_["int_box"].tolist() == [4, 3, 31, 25]
    assert tuple(st_["resized"].shape) == (23, 28)
    ys, xs = torch.nonzero(st_["pasted"], as_tuple=True)
    assert xs.min() >= 4 and xs.max() <= 31 and ys.min() >= 3 and ys.max() <= 25


def test_truncation_towards_zero_for_negative_coordinates():
    st_ = Mk.detectron_paste_steps(MASK, [-3.6, 20.2, 8.9, 28.4], (40, 50))
    x1 = st_["expanded_box"][0].item()
    assert x1 < -4 and st_["int_box"][0].item() == int(x1)  # -4.05 -> -4, not -5
    assert st_["pasted"].shape == (40, 50) and st_["pasted"][:, 0].any()


def test_d2_reproduces_the_mask_when_pixels_are_cells():
    soft = Mk.paste_masks(MASK[None], [[10.0, 5.0, 38.0, 33.0]], (40, 50), soft=True)[0]
    torch.testing.assert_close(soft[5:33, 10:38], MASK, atol=1e-6, rtol=0)


@given(st.floats(0, 30), st.floats(0, 20), st.floats(1, 40), st.floats(1, 30), st.integers(4, 28))
def test_all_ones_mask_pastes_to_the_box_pixels(x1, y1, w, h, m):
    box = [x1, y1, x1 + w, y1 + h]
    ones = torch.ones(1, m, m)
    d2 = Mk.paste_masks(ones, [box], (60, 80))[0]
    # Detectron2 (continuous model): only pixels whose centres lie in the box, and all of them except where the
    # zero padding of grid_sample reaches in from two sides at once (a corner, within half a mask cell of both edges:
    # there each axis contributes a factor between 0.5 and 1)
    # the box as the package reads a list: float32 (y1 + h = 3.4999999999999964 is 3.5 there)
    bx = torch.tensor(box, dtype=torch.float32).double().tolist()
    xs, ys = (torch.arange(80) + 0.5).double(), (torch.arange(60) + 0.5).double()
    in_x, in_y = (xs >= bx[0]) & (xs <= bx[2]), (ys >= bx[1]) & (ys <= bx[3])
    near_x = torch.minimum(xs - bx[0], bx[2] - xs) < (bx[2] - bx[0]) / m / 2
    near_y = torch.minimum(ys - bx[1], bx[3] - ys) < (bx[3] - bx[1]) / m / 2
    centre_in = in_y[:, None] & in_x[None]
    assert (d2 <= centre_in).all()
    assert ((centre_in & ~(near_y[:, None] & near_x[None])) <= d2).all()
    # Detectron, with its mask sizes (14, 28): the inclusive box's pixels x1..x2 (on whole-pixel boxes), up to one pixel at
    # each edge (int truncation, and expand_boxes' half-widths without +1)
    inc = [float(int(x1)), float(int(y1)), float(int(x1 + w)), float(int(y1 + h))]
    d1 = Mk.paste_masks(torch.ones(1, 28 if m > 14 else 14, 28 if m > 14 else 14), [inc], (60, 80), mask_paste="segm_results")[0]
    cover = pixel_coverage(inc, (60, 80), inclusive=True) > 0
    grown = torch.nn.functional.max_pool2d(cover[None, None].float(), 3, 1, 1)[0, 0] > 0
    outside = torch.nn.functional.pad((~cover)[None, None].float(), (1, 1, 1, 1), value=1.0)  # beyond the image is outside
    shrunk = ~(torch.nn.functional.max_pool2d(outside, 3, 1, 0)[0, 0] > 0)
    assert (d1 <= grown).all() and (shrunk <= d1).all()


@given(st.floats(0.05, 0.95), st.floats(0.05, 0.95), st.sampled_from(["segm_results", "paste_masks_in_image"]), st.integers(0, 1000))
def test_monotone_in_threshold(t1, t2, method, seed):
    lo, hi = min(t1, t2), max(t1, t2)
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(2, 14, 14, generator=g)
    boxes = [[3.2, 4.1, 30.7, 22.9], [-5.0, 10.0, 12.0, 50.0]]
    a = Mk.paste_masks(m, boxes, (40, 50), threshold=lo, mask_paste=method)
    b = Mk.paste_masks(m, boxes, (40, 50), threshold=hi, mask_paste=method)
    assert (b <= a).all()


def test_thresholds_are_strict_or_not():
    half = torch.full((1, 4, 4), 0.5)
    assert Mk.paste_masks(half, [[0.0, 0.0, 4.0, 4.0]], (4, 4))[0].all()                                  # >= 0.5
    assert not Mk.paste_masks(half, [[0.0, 0.0, 3.0, 3.0]], (4, 4), mask_paste="segm_results")[0].any()          # > 0.5


def test_boxes_outside_the_image_are_valid():
    out = Mk.paste_masks(MASK[None].repeat(2, 1, 1), [[100.0, 100.0, 130.0, 120.0], [-50.0, -40.0, -10.0, -5.0]], (40, 50))
    assert not out.any()
    out = Mk.paste_masks(MASK[None].repeat(2, 1, 1), [[100.0, 100.0, 130.0, 120.0], [-50.0, -40.0, -10.0, -5.0]], (40, 50), mask_paste="segm_results")
    assert not out.any()


def test_iou_and_boundary_error():
    a = torch.zeros(20, 20, dtype=torch.bool)
    a[5:15, 5:15] = True
    b = a.clone()
    b[5:15, 14] = False  # one column off at the edge
    assert Mk.mask_iou(a, b).item() == pytest.approx(90 / 100)
    e = Mk.boundary_error(a, b)
    assert e == {"differ": 10, "within_1px": 10, "within_2px": 10}
    c = a.clone()
    c[9, 9] = False  # a hole in the middle: far from the contour
    e = Mk.boundary_error(a, c)
    assert e["differ"] == 1 and e["within_2px"] == 0
    assert Mk.mask_iou(torch.zeros(3, 3), torch.zeros(3, 3)).item() == 1.0


def test_detectron2_paste_is_better_on_small_objects():
    rows = Mk.synthetic_paste_experiment(sizes=(8, 64), n=12)
    small, large = rows
    assert small["detectron2"] > small["detectron"] + 0.05
    assert large["detectron2"] >= large["detectron"]
    assert small["detectron2"] - small["detectron"] > large["detectron2"] - large["detectron"]


@pytest.mark.parametrize("call, needle", [
    (lambda: Mk.paste_masks(torch.ones(2, 28, 28), [[0.0, 0, 5, 5]], (10, 10)), "masks has 2 masks but boxes has 1"),
    (lambda: Mk.paste_masks(torch.ones(1, 28, 14), [[0.0, 0, 5, 5]], (10, 10)), "square"),
    (lambda: Mk.paste_masks(torch.ones(1, 0, 0), [[0.0, 0, 5, 5]], (10, 10)), "M >= 1"),
    (lambda: Mk.paste_masks(torch.ones(1, 4, 4), [[0.0, 0, float("inf"), 5]], (10, 10)), "finite"),
    (lambda: Mk.paste_masks(torch.ones(1, 4, 4), [[0.0, 0, 5, 5]], (10, 10), threshold=1.5), "threshold must be in [0, 1]"),
    (lambda: Mk.paste_masks(torch.ones(1, 4, 4), [[0.0, 0, 5, 5]], (10, 10), mask_paste="pil"), "mask_paste must be one of"),
    (lambda: Mk.paste_masks(torch.ones(1, 4, 4), [[0.0, 0, 5, 5]], (10, 10), mask_paste="detectron"), "mask_paste must be one of"),
])
def test_bad_input(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)


def test_both_methods_equal_the_original_code():
    ref = load_golden("masks/paste_reference.json")
    n = len(ref["d2_boxes"])
    ms = MASK[None].repeat(n, 1, 1)
    det = Mk.paste_masks(ms, ref["detectron_boxes"], ref["image_size"], mask_paste="segm_results").reshape(n, -1)
    d2 = Mk.paste_masks(ms, ref["d2_boxes"], ref["image_size"], mask_paste="paste_masks_in_image").reshape(n, -1)
    for k in range(n):
        assert torch.nonzero(det[k]).flatten().tolist() == ref["detectron_on"][k], f"Detectron, box {k}"
        assert torch.nonzero(d2[k]).flatten().tolist() == ref["d2_on"][k], f"Detectron2, box {k}"


SEGM = load_golden("masks/segm_results_float32.json")


def _golden_mask(kind: str, M: int) -> np.ndarray:
    """The masks of segm_results_float32.json, built with the same numpy float32 operations as its _origin says."""
    if kind == "ones":
        return np.ones((M, M), np.float32)
    i, j = np.mgrid[0:M, 0:M].astype(np.float32)
    c = np.float32(M / 2.0)
    return (1.0 / (1.0 + np.exp(-(np.float32(0.36 * M) - np.hypot(i - c + 0.3, j - c - 0.4)) / np.float32(1.5)))).astype(np.float32)


@pytest.mark.parametrize("case", SEGM["cases"], ids=lambda c: c["name"][:48])
def test_detectron_paste_equals_segm_results_in_float32(case):
    # golden: Detectron's own expand_boxes and segm_results on float32 boxes (see tests/data/masks/README.md)
    M, (H, W) = case["M"], case["image_size"]
    mask = torch.from_numpy(_golden_mask(case["mask"], M))
    boxes = torch.tensor(case["boxes"], dtype=torch.float32)
    exp32 = Mk.expand_boxes(boxes, (M + 2.0) / M)
    assert exp32.tolist() == case["expanded_float32"]
    assert torch.trunc(exp32).long().tolist() == case["int_boxes_float32"]
    assert torch.trunc(Mk.expand_boxes(boxes.double(), (M + 2.0) / M, torch.float64)).long().tolist() == case["int_boxes_float64"]
    pasted = Mk.paste_masks(mask[None].repeat(len(boxes), 1, 1), boxes, (H, W), case["threshold"], mask_paste="segm_results")
    for k in range(len(boxes)):
        assert torch.nonzero(pasted[k].flatten()).flatten().tolist() == case["on_float32"][k], f"box {k}"
        st = Mk.detectron_paste_steps(mask, boxes[k], (H, W), case["threshold"], expand_dtype=torch.float64)
        assert torch.nonzero(st["pasted"].flatten()).flatten().tolist() == case["on_float64_boxes"][k], f"box {k}, float64"


def test_pinned_float32_box_expansion():
    # Detectron (float32): h_half = 21, 21 * float32(8/7) = 24.0000019 (float32), 27 - 24.0000019 = 2.999998 -> 2
    st = Mk.detectron_paste_steps(torch.ones(14, 14), [5, 6, 33, 48], (64, 64))
    assert st["int_box"].tolist() == [3, 2, 35, 51]
    assert st["expanded_box"][1].item() == np.float32(27.0) - np.float32(21.0) * np.float32(8.0 / 7.0)
    assert st["expanded_box"][1].item() < 3.0
    st64 = Mk.detectron_paste_steps(torch.ones(14, 14), [5, 6, 33, 48], (64, 64), expand_dtype=torch.float64)
    assert st64["int_box"].tolist() == [3, 3, 35, 51]
    # all-ones mask, threshold 0.5 (MRCNN.THRESH_BINARIZE): the extra row is on in float32 -> 29 differing pixels
    # (the golden's counts: 1272 on against 1243)
    assert int((st["pasted"] ^ st64["pasted"]).sum()) == 29
    # M = 28 has no such box in 0..63
    assert Mk.expanded_box_differences(28)["boxes_differing"] == 0


def test_expanded_box_differences_by_enumeration():
    # independent count: every integer pair 0 <= x1 < x2 <= 63, numpy float32 against Python floats
    scale = 16.0 / 14.0
    diff = 0
    for x1 in range(64):
        for x2 in range(x1 + 1, 64):
            a, b = np.float32(x1), np.float32(x2)
            half, c = (b - a) * np.float32(0.5), (b + a) * np.float32(0.5)
            half = half * np.float32(scale)
            f32 = (int(c - half), int(c + half))
            h64, c64 = (x2 - x1) * 0.5 * scale, (x2 + x1) * 0.5
            diff += f32 != (int(c64 - h64), int(c64 + h64))
    got = Mk.expanded_box_differences(14, 63)
    assert got["pairs"] == 2016 and got["pairs_differing"] == diff == 18 and got["x2_differs"] == 0
    assert got["boxes_differing"] == 2016 ** 2 - (2016 - 18) ** 2 == 72252


def test_threshold_compares_in_float32():
    # an interpolated value of exactly float32(0.3) is not > 0.3 when the threshold is rounded to float32 too, as
    # numpy does for a float32 array against a Python float; in double it would be (0.30000001 > 0.3)
    ones = torch.ones(14, 14)
    st = Mk.detectron_paste_steps(ones, [0.0, 0.0, 0.0, 9.0], (20, 20), threshold=0.3)
    # int box [0, 0, 0, 9]: 1 x 10 output, row 0 samples y = 0.5 * 16 / 10 - 0.5 = 0.3: value 0.3 exactly in float32
    assert st["int_box"].tolist() == [0, 0, 0, 9]
    assert st["resized"][0, 0].item() == np.float32(0.3)
    assert not st["binary"][0, 0] and st["resized"][0, 0].item() > 0.3


def test_expand_boxes_refuses_what_overflows_float32_instead_of_returning_inf():
    # 1e30 * 1e10 is beyond float32's largest value (3.4e38): Detectron's float32 arithmetic would give inf
    with pytest.raises(ValueError, match="expand_boxes"):
        Mk.expand_boxes([[0.0, 0.0, 1e30, 1e30]], scale=1e10)
    assert torch.isfinite(Mk.expand_boxes([[0.0, 0.0, 1e30, 1e30]], scale=1e10, dtype=torch.float64)).all()
    with pytest.raises(ValueError, match="dtype"):
        Mk.expand_boxes([[0.0, 0.0, 4.0, 4.0]], scale=1.2, dtype=torch.float16)
