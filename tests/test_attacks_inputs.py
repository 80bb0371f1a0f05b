"""Hostile values at every public computation: each is refused with a ValueError or TypeError that names the
argument, or (where the value is still meaningful) answered without NaN or inf that the input did not have.

The table is tests/input_specs.py: one valid call per public function and the kind of each argument; every kind has
its hostile values (NaN, inf, strings, None, booleans, complex numbers, fractions where whole numbers are meant, ...).
The properties at the end (hypothesis) check that no computation turns bad or extreme numbers into a wrong finite
answer.
"""

from __future__ import annotations

import importlib
import inspect
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explainer import anchors as A
from explainer import boxes as B
from explainer import labels as L
from explainer import masks as Mk
from explainer import pixels, training
from explainer import roi_align as R
from explainer._validate import MAX_VALUES, WrongType
from tests import input_specs as specs

#: mutations whose value is of the wrong kind: refused with a TypeError (explainer's WrongType is also a ValueError)
WRONG_KIND = {"strings", "string", "string_item", "none", "bool", "bool_item", "complex", "tensor", "number", "bytes"}


def _cases():
    out = []
    for key, args in specs.specs().items():
        for arg, spec in args.items():
            for mutation, make in specs.MUTATIONS[spec.kind]:
                if mutation == "none" and spec.optional:
                    continue
                out.append(pytest.param(key, arg, mutation, make, id=f"{key}-{arg}-{mutation}"))
    return out


def test_every_public_computation_is_in_the_table():
    missing = []
    for mod_name in specs.MODULES:
        mod = importlib.import_module(f"explainer.{mod_name}")
        for name in mod.__all__:
            if inspect.isfunction(getattr(mod, name)):
                key = f"{mod_name}.{name}"
                if key not in specs.specs() and key not in specs.EXEMPT:
                    missing.append(key)
    assert not missing, f"public functions without an input spec: {missing}"


@pytest.mark.parametrize("key", sorted(specs.specs()))
def test_valid_call_of_the_table_succeeds(key):
    # the mutations below are meaningful only if the unmutated call is accepted
    specs.call(key)


@pytest.mark.parametrize("key, arg, mutation, make", _cases())
def test_hostile_value_is_refused_naming_the_argument(key, arg, mutation, make):
    valid = specs.resolve(specs.specs()[key][arg].value)
    bad = make(valid)
    expected = TypeError if mutation in WRONG_KIND else ValueError
    with pytest.raises((TypeError, ValueError)) as info:
        specs.call(key, **{arg: bad})
    e = info.value
    assert isinstance(e, expected), f"{key}({arg}={mutation}) raised {type(e).__name__}: {e}"
    assert arg in str(e), f"{key}({arg}={mutation}): the message does not name {arg!r}: {e}"
    assert "Traceback" not in str(e) and len(str(e)) < 2000


# ---------------------------------------------------------------- the cases found by hand, one by one
def test_strings_are_never_read_as_digits():
    with pytest.raises(TypeError, match="sizes"):
        A.detectron_cell_anchors(16, "32", [1])
    with pytest.raises(TypeError, match="aspect_ratios"):
        A.detectron_cell_anchors(16, [32], "1")


def test_fractional_labels_are_not_truncated():
    with pytest.raises(ValueError, match="ids"):
        L.coco_id_to_contiguous([1.7])
    with pytest.raises(ValueError, match="labels"):
        L.contiguous_to_coco_id([2.5])
    # whole numbers written as floats are accepted (COCO's json has them as ints; numpy may give floats)
    assert L.coco_id_to_contiguous([1.0, 90.0]).tolist() == [0, 79]


def test_complex_and_boolean_boxes_are_refused():
    with pytest.raises(TypeError, match="boxes"):
        B.area(torch.ones(1, 4, dtype=torch.complex64))
    with pytest.raises(TypeError, match="boxes"):
        B.area(np.ones((1, 4), dtype=bool))
    with pytest.raises(TypeError, match="boxes"):
        B.area([[True, True, True, True]])


def test_negative_radius_is_refused():
    with pytest.raises(ValueError, match="radius"):
        Mk.rasterize_disc((4.0, 4.0), -2.0, (9, 9))


def test_absurd_roi_align_sizes_are_refused_before_allocating_with_the_limit():
    feats = torch.zeros(1, 256, 50, 50)
    with pytest.raises(ValueError, match=f"boxes.*limit of {MAX_VALUES:,}"):
        R.roi_align(feats, torch.tensor([[0.0, 0.0, 0.0, 20000.0, 20000.0]]), (7, 7), 1.0, 0)
    with pytest.raises(ValueError, match=f"sampling_ratio.*limit of {MAX_VALUES:,}"):
        R.roi_align(feats, torch.tensor([[0.0, 0.0, 0.0, 5.0, 5.0]]), (7, 7), 1.0, 100000)
    # an ordinary box with the adaptive grid still works
    out = R.roi_align(feats[:, :2], torch.tensor([[0.0, 0.0, 0.0, 40.0, 30.0]]), (7, 7), 1.0, 0)
    assert out.shape == (1, 2, 7, 7)


def test_absurd_grid_sizes_are_refused_before_allocating():
    with pytest.raises(ValueError, match="feature_size"):
        A.grid_anchors([[-8.0, -8.0, 8.0, 8.0]], (100_000, 100_000), 16.0)
    with pytest.raises(ValueError, match="image_size_hw"):
        Mk.paste_masks(torch.ones(1, 4, 4), [[0.0, 0.0, 2.0, 2.0]], (10**6, 10**6))


@pytest.mark.parametrize("call, name", [
    (lambda: training.smooth_l1([math.nan], 0.5), "x"),
    (lambda: training.smooth_l1_grad([math.nan], 0.5), "x"),
    (lambda: training.smooth_l1([1.0], math.nan), "beta"),
    (lambda: Mk.paste_masks(torch.full((1, 4, 4), math.nan), [[0.0, 0.0, 4.0, 4.0]], (8, 8), soft=True), "masks"),
    (lambda: A.grid_anchors([[0.0, 0.0, math.nan, 1.0]], (2, 2), 16.0), "cell_anchors"),
    (lambda: A.grid_anchors([[0.0, 0.0, 1.0, 1.0]], (2, 2), 16.0, math.nan), "offset"),
    (lambda: pixels.pixel_centre([math.nan]), "index"),
    (lambda: R.assign_fpn_levels([[0.0, 0.0, 10.0, 10.0]], canonical_level=math.nan), "canonical_level"),
    (lambda: R.assign_fpn_levels([[0.0, 0.0, 10.0, 10.0]], canonical_box_size=math.inf), "canonical_box_size"),
    (lambda: A.grid_anchors([[0.0, 0.0, 1.0, 1.0]], (math.inf, 2), 16.0), "feature_size"),
])
def test_nan_is_refused_never_passed_through(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_torch_errors_never_pass_through_the_conversion():
    # a ragged list makes torch raise ValueError or RuntimeError; either way a ValueError naming the argument
    with pytest.raises(ValueError, match="boxes"):
        B.area([[1.0, 2.0, 3.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="boxes"):
        B.area([[1e400, 0.0, 1.0, 1.0]])   # beyond float64: OverflowError inside torch


def test_nms_keeps_one_of_two_identical_huge_boxes():
    b = [[0.0, 0.0, 1e20, 1e20], [0.0, 0.0, 1e20, 1e20]]
    for legacy in (False, True):
        kept = B.nms(b, [0.9, 0.8], 0.5, legacy_plus_one=legacy)
        assert kept.tolist() == [0], legacy
        assert B.pairwise_iou(b, b, legacy_plus_one=legacy).tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_float16_boxes_give_finite_iou():
    a = torch.tensor([[0.0, 0.0, 60000.0, 60000.0], [0.0, 0.0, 100.0, 100.0]], dtype=torch.float16)
    iou = B.pairwise_iou(a, a)
    assert iou.dtype == torch.float32 and torch.isfinite(iou).all()
    # independent: 100 x 100 inside 60000 x 60000
    assert iou[0, 1].item() == pytest.approx(1e4 / 3.6e9, rel=1e-6)
    assert torch.diagonal(iou).tolist() == [1.0, 1.0]


def test_exp_overflow_of_finite_deltas_is_refused():
    with pytest.raises(ValueError, match="overflow"):
        B.decode([[0.0, 0.0, 1e4, 0.0]], [[0.0, 0.0, 1e30, 1e30]], scale_clamp=1e6)


# ---------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=12), st.data())
def test_nan_in_is_a_clear_error_never_a_finite_answer(xs, data):
    bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    i = data.draw(st.integers(0, len(xs) - 1))
    xs = list(xs)
    xs[i] = bad
    for fn, name in ((lambda v: training.smooth_l1(v, 0.5), "x"), (lambda v: training.smooth_l1_grad(v, 0.5), "x"),
                     (pixels.pixel_centre, "index"), (pixels.pixel_index, "coordinate"),
                     (lambda v: pixels.flip_x(v, 10.0), "x")):
        with pytest.raises(ValueError, match=name):
            fn(xs)


@st.composite
def _box_rows(draw):
    n = draw(st.integers(1, 5))
    exp = draw(st.integers(-3, 120))   # magnitudes up to 1e120: beyond float32's range as coordinates and areas
    dtype = draw(st.sampled_from([torch.float16, torch.float32, torch.float64]))
    rows = []
    for _ in range(n):
        x1, y1 = draw(st.floats(-1, 1)), draw(st.floats(-1, 1))
        w, h = draw(st.floats(0.01, 1)), draw(st.floats(0.01, 1))
        rows.append([x1, y1, x1 + w, y1 + h])
    scale = 10.0 ** exp if dtype == torch.float64 else (10.0 ** min(exp, 30) if dtype == torch.float32 else 1000.0)
    return (torch.tensor(rows, dtype=torch.float64) * scale).to(dtype)


@settings(max_examples=80, deadline=None)
@given(_box_rows())
def test_iou_of_boxes_with_themselves_is_one_at_any_magnitude(b):
    b = b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]   # float16 may round a tiny side to nothing
    if not len(b):
        return
    iou = B.pairwise_iou(b, b)
    assert torch.isfinite(iou).all()
    torch.testing.assert_close(torch.diagonal(iou), torch.ones(len(b), dtype=iou.dtype))
    assert ((iou >= 0) & (iou <= 1)).all()
    twice = torch.cat([b[:1], b[:1]])
    assert B.nms(twice, [0.9, 0.8], 0.5).tolist() == [0]
    assert B.nms(twice, [0.9, 0.8], 0.5, legacy_plus_one=True).tolist() == [0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3e38, 3e38), min_size=1, max_size=8), st.floats(1e-3, 1e3))
def test_finite_input_gives_finite_output_or_a_clear_error(xs, beta):
    for fn in (lambda: training.smooth_l1(xs, beta), lambda: training.smooth_l1_grad(xs, beta),
               lambda: pixels.pixel_centre(xs), lambda: pixels.flip_x(xs, 10.0)):
        try:
            out = fn()
        except ValueError as e:
            assert "overflow" in str(e) or "must" in str(e)
            continue
        assert torch.isfinite(out).all()


def test_wrong_type_is_both_type_and_value_error():
    # dashboards and the command line catch ValueError; callers who expect TypeError for a wrong kind get it too
    assert issubclass(WrongType, TypeError) and issubclass(WrongType, ValueError)
