"""Chapter 11's dashboard, driven through ``update()``: each mismatch shows its own first divergence and cause.

The expected stages and causes are where each mistake was made (see ``explainer.course.network.MISMATCHES``); the
generic dashboard checks (figure reused, read-out, no clipped text) are in ``tests/test_dashboards.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from explainer.course import network as N
from explainer.widgets import trace as WT

EXPECTED = {
    "none": (None, None),
    "opset11": ("box_pooler", "shift"),
    "rgb_input": ("input", "channel_permutation"),
    "pixel_mean": ("preprocess", "channel_affine"),
    "background_row": ("box_predictor.cls_score", "channel_permutation"),
    "anchor_order": ("rpn_head.objectness_logits", "channel_permutation"),
    "resize_mode": ("upsample", "shift"),
}


@pytest.fixture(scope="module")
def dash():
    d = WT.TraceDashboard()
    yield d
    d.close()


def test_default_is_the_opset_11_export(dash):
    assert dash.error is None, dash.error
    assert dash.params == {"mismatch": "opset11", "stage": WT.FIRST}
    assert "First divergence: box_pooler" in dash.readout_text and "shift" in dash.readout_text
    assert "aligned=True is only supported in opset >= 16" in dash.readout_text


@pytest.mark.parametrize("mismatch", list(EXPECTED))
def test_each_mismatch_names_its_stage_and_cause(dash, mismatch):
    text = dash.update(mismatch=mismatch, stage=WT.FIRST)
    assert dash.error is None, dash.error
    stage, cause = EXPECTED[mismatch]
    r = dash.result
    if stage is None:
        assert "No divergence" in text and r["name"] == "box_pooler"
        return
    assert f"First divergence: {stage}, cause {cause}" in text
    assert r["name"] == stage
    k = list(N.STAGES).index(stage)
    # the first divergence's bar crosses the tolerance and is drawn as such; the stages before it pass
    assert dash.bars[k].get_width() + WT.FLOOR > 1.0
    assert dash.bars[k].get_facecolor()[:3] == pytest.approx(_rgb(WT.KINDS["first"][0]))
    assert all(dash.bars[i].get_width() + WT.FLOOR <= 1.0 for i in range(k))
    assert dash.labels[k].get_text() == cause


def _rgb(hex_colour):
    from matplotlib.colors import to_rgb

    return to_rgb(hex_colour)


def test_the_fitted_cause_leaves_almost_nothing(dash):
    """For an explained divergence the right-hand residual holds under 1 % of the difference's energy."""
    for mismatch in ("opset11", "resize_mode", "rgb_input", "background_row"):
        dash.update(mismatch=mismatch, stage=WT.FIRST)
        r = dash.result
        assert r["resid"] is not None
        ok = np.isfinite(r["resid"])
        diff = (r["cv"] - r["rv"])[ok]
        assert ok.mean() > 0.8
        assert (r["resid"][ok] ** 2).sum() <= 1e-2 * (diff ** 2).sum(), mismatch


def test_choosing_a_stage_shows_it(dash):
    dash.update(mismatch="opset11", stage="box_head")
    r = dash.result
    assert r["name"] == "box_head" and r["stage"].cause.name == "inherited"
    assert "box_head" in dash.readout_text and "no model of the candidate" in dash.readout_text
    assert dash.shown_row.get_y() == pytest.approx(list(N.STAGES).index("box_head") - 0.5)
    dash.update(stage="backbone")
    assert dash.result["stage"].passed and dash.result["resid"] is None


def test_updates_after_the_first_computation_reuse_it(dash):
    dash.update(mismatch="pixel_mean", stage=WT.FIRST)
    first = dash.result
    dash.update(mismatch="none")
    dash.update(mismatch="pixel_mean")
    assert dash.result is first                      # cached per setting: only redrawn
