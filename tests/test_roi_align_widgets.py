"""Chapter 4 dashboards: the read-outs state the package's numbers."""

from __future__ import annotations

import torch

from explainer import roi_align as R
from explainer.widgets.roi_align import FEATURE, ROIAlignErrorDashboard, ROIAlignSamplingDashboard, ROIPoolDashboard


def test_sampling_readout_is_the_worked_example():
    d = ROIAlignSamplingDashboard()
    text = d.update(x1=1, y1=1, x2=3, y2=3, out=2, sr=2, stride=1)
    assert "[[16.5, 17.5], [26.5, 27.5]]  [[11, 12], [21, 22]]" in text   # whole numbers printed without ".0"
    assert "[0.5, 0.5, 2.5, 2.5]" in text  # the -0.5 shift of aligned=True


def test_sampling_follows_the_stride():
    d = ROIAlignSamplingDashboard()
    d.update(x1=1, y1=1, x2=4, y2=3, out=2, sr=0, stride=16)
    got = d.result["detectron2"][1]
    ref = R.roi_align(FEATURE, torch.tensor([[0.0, 16, 16, 64, 48]]), 2, 1 / 16, 0, True)[0, 0].numpy()
    assert (abs(got - ref) < 1e-6).all()


def test_tiny_box_clamps_only_without_alignment():
    d = ROIAlignSamplingDashboard()
    d.update(x1=3, y1=3, x2=3, y2=3, out=2, sr=0, stride=1)
    sp_false, _, _ = d.result["detectron"]
    sp_true, pooled_true, note = d.result["detectron2"]
    assert float(sp_false["roi"][2] - sp_false["roi"][0]) == 1.0 and sp_true["grid"] == (0, 0)
    assert abs(pooled_true).max() == 0 and note["empty"]


def test_readout_says_when_a_tiny_box_is_zero_and_when_it_interpolates():
    d = ROIAlignSamplingDashboard()
    # zero size, sampling_ratio 0: an empty grid, exactly 0
    text = d.update(x1=3, y1=3, x2=3, y2=3, out=2, sr=0, stride=1)
    assert "an empty grid, so the output is exactly 0" in text
    # the same box with sampling_ratio 2: its single point, interpolated (value 10 y + x at (2.5, 2.5))
    text = d.update(sr=2)
    assert "samples its single point" in text and (d.result["detectron2"][1] == 27.5).all()
    # a quarter-cell-wide box with sampling_ratio 0: one sample per bin, not 0
    text = d.update(x2=3.25, y2=5, sr=0)
    assert "= 1 x 1 (h x w) samples per bin" in text and abs(d.result["detectron2"][1]).min() > 0
    assert "widens it to at least 1 x 1 cell" in text  # aligned=False's side


def test_inverted_box_goes_to_the_readout():
    d = ROIAlignSamplingDashboard()
    d.update(x1=5, x2=2)
    assert d.error and "x2 >= x1" in d.error


def test_error_dashboard_shift_is_half_the_stride():
    d = ROIAlignErrorDashboard()
    for side, level in ((48, 2), (150, 3), (300, 4), (600, 5)):
        d.update(box=side, levels="fpn")
        assert d.result["level"] == level and d.result["shift"] == 2 ** level / 2
        assert abs(d.result["measured"] - d.result["shift"]) < 1e-6


def test_roipool_readout_matches_roi_pool():
    d = ROIPoolDashboard()
    d.update(x1=1.3, y1=1.6, x2=5.4, y2=4.7, out=2)
    ref = R.roi_pool(FEATURE, torch.tensor([[0.0, 1.3, 1.6, 5.4, 4.7]]), 2)[0, 0].numpy()
    assert (d.result["pooled"] == ref).all()
    assert d.result["rounded"] == (1, 2, 5, 5)
