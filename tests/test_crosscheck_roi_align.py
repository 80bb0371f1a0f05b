"""``explainer.roi_align.roi_align`` against an independent implementation: ONNX Runtime's ``RoiAlign``.

The graph is one ``RoiAlign`` node built with ``onnx.helper`` at opset 16, where the operator has
``coordinate_transformation_mode``: ``half_pixel`` shifts the scaled box by -0.5 (``aligned=True``) and
``output_half_pixel`` does not (``aligned=False``), per the ONNX operator's documentation. ONNX Runtime computes in
float32 here (the graph's tensors are float32), so the inputs are float32 on both sides. The package is part of the
``crosscheck`` extra; without it the checks say why and are skipped, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from explainer.roi_align import ramp, roi_align
from tests.crosscheck import require
from tests.test_roi_align import roi_case

TOL = 1e-5  # float32 on both sides; values of order 1 (the ramp cases are scaled to match)


@pytest.fixture(scope="module")
def ort_roi_align():
    onnx = require("onnx")
    ort = require("onnxruntime")
    from onnx import TensorProto, helper

    @lru_cache(maxsize=None)
    def session(ph: int, pw: int, sampling_ratio: int, spatial_scale: float, mode: str):
        node = helper.make_node("RoiAlign", ["X", "rois", "batch_indices"], ["Y"], mode="avg", output_height=ph,
                                output_width=pw, sampling_ratio=sampling_ratio, spatial_scale=spatial_scale,
                                coordinate_transformation_mode=mode)
        graph = helper.make_graph(
            [node], "roi_align",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "C", "H", "W"]),
             helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["K", 4]),
             helper.make_tensor_value_info("batch_indices", TensorProto.INT64, ["K"])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["K", "C", ph, pw])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
        onnx.checker.check_model(model)
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor, rois: torch.Tensor, out, spatial_scale: float, sampling_ratio: int, aligned: bool) -> np.ndarray:
        ph, pw = (out, out) if isinstance(out, int) else out
        s = session(ph, pw, max(sampling_ratio, 0), float(spatial_scale), "half_pixel" if aligned else "output_half_pixel")
        feeds = {"X": x.float().numpy(), "rois": rois[:, 1:].float().numpy(), "batch_indices": rois[:, 0].long().numpy()}
        return s.run(None, feeds)[0]

    return run


def _ours(x, rois, out, spatial_scale, sampling_ratio, aligned) -> np.ndarray:
    return roi_align(x.float(), rois.float(), out, spatial_scale, sampling_ratio, aligned).numpy()


# ---------------------------------------------------------------- chosen cases
# (x1, y1, x2, y2) in image pixels: inside, crossing the top-left and the bottom-right borders, wholly outside,
# zero-size, a fifth of a pixel wide, slightly inverted, larger than the map
BOXES = [[1.0, 1, 3, 3], [-5.0, -3, 6, 4], [7.5, 6.0, 14.0, 13.0], [20.0, 20, 30, 30], [3.0, 3, 3, 3],
         [3.0, 3, 3.2, 5], [5.0, 5, 4.9, 5.5], [-2.0, -2, 40, 50], [2.3, 4.1, 7.7, 9.9]]


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 2.0])
def test_equals_onnx_runtime_on_borders_and_tiny_boxes(ort_roi_align, aligned, sampling_ratio, spatial_scale):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, 10, generator=g)
    rois = torch.tensor([[i % 2, *b] for i, b in enumerate(BOXES)], dtype=torch.float32)
    for out in (2, (3, 2), 7):
        want = ort_roi_align(x, rois, out, spatial_scale, sampling_ratio, aligned)
        got = _ours(x, rois, out, spatial_scale, sampling_ratio, aligned)
        np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL, err_msg=f"out {out}")


@pytest.mark.parametrize("aligned, expected", [(True, [[11.0, 12.0], [21.0, 22.0]]), (False, [[16.5, 17.5], [26.5, 27.5]])])
def test_the_worked_case_in_onnx_runtime(ort_roi_align, aligned, expected):
    # chapter 4's worked case: box [1, 1, 3, 3] on a map of 10 y + x reads cells 1..2 only with the half-pixel shift
    rois = torch.tensor([[0.0, 1, 1, 3, 3]])
    want = ort_roi_align(ramp(10), rois, 2, 1.0, 2, aligned)
    np.testing.assert_allclose(want[0, 0], expected, atol=1e-5)
    np.testing.assert_allclose(_ours(ramp(10), rois, 2, 1.0, 2, aligned), want, atol=1e-4)


def test_the_two_modes_differ_in_onnx_runtime(ort_roi_align):
    # the comparison can fail: half_pixel against aligned=False (and the other way round) is far apart
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 12, 12, generator=g)
    rois = torch.tensor([[0.0, 2.3, 4.1, 7.7, 9.9]])
    half = ort_roi_align(x, rois, 3, 1.0, 2, True)
    legacy = ort_roi_align(x, rois, 3, 1.0, 2, False)
    assert np.abs(half - legacy).max() > 0.05
    assert np.abs(_ours(x, rois, 3, 1.0, 2, False) - half).max() > 0.05


def test_zero_size_box_with_adaptive_sampling_is_zero_in_onnx_runtime_too(ort_roi_align):
    rois = torch.tensor([[0.0, 3, 3, 3, 3], [0.0, 3, 3, 3.2, 5]])
    want = ort_roi_align(ramp(10), rois, 2, 1.0, 0, True)
    assert np.all(want[0] == 0) and np.all(want[1] != 0)
    np.testing.assert_allclose(_ours(ramp(10), rois, 2, 1.0, 0, True), want, atol=1e-4)


# ---------------------------------------------------------------- random cases (the strategy of the torchvision check)
@settings(max_examples=120, deadline=None)
@given(roi_case())
def test_equals_onnx_runtime_on_random_maps_and_boxes(ort_roi_align, case):
    x, rois, out, scale, sr, aligned = case  # sampling_ratio -1 is adaptive, RoiAlign's 0
    want = ort_roi_align(x, rois, out, scale, sr, aligned)
    np.testing.assert_allclose(_ours(x, rois, out, scale, sr, aligned), want, atol=TOL, rtol=TOL)
