"""Chapter 2 dashboards driven through update(): read-outs state the package's numbers; bad input gives a message."""

from __future__ import annotations

import re

import pytest
import torch

from explainer import boxes as B
from explainer.widgets.boxes import BoxPairDashboard, IoUBySizeDashboard, NMSDashboard, RegressionDashboard


def numbers(text: str):
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


def test_box_pair_default_is_the_touching_case():
    d = BoxPairDashboard()
    assert d.error is None
    text = d.readout_text
    # touching 11 x 11-pixel boxes: 11 / 231 = 1/21 under Detectron, 0 under Detectron2
    iou_line = [line for line in text.splitlines() if line.startswith("IoU")][0]
    assert numbers(iou_line) == [pytest.approx(1 / 21, abs=1e-5), 0.0]
    assert "touch" in text
    d.close()


def test_box_pair_follows_the_package_when_the_primary_control_moves():
    d = BoxPairDashboard()
    before = d.readout_text
    text = d.update(b_x1=6.0, b_y1=2.0, size=8.0)
    assert text != before
    a, b = torch.tensor([[1.0, 1, 9, 9]]), torch.tensor([[6.0, 2, 14, 10]])
    iou_line = [line for line in text.splitlines() if line.startswith("IoU")][0]
    got = numbers(iou_line)
    assert got[0] == pytest.approx(B.pairwise_iou(a, b, legacy_plus_one=True).item(), abs=1e-5)
    assert got[1] == pytest.approx(B.pairwise_iou(a, b).item(), abs=1e-5)
    # the intersection patch of Detectron2 spans x 6..9, y 2..9
    assert d.i2.get_x() == 6.0 and d.i2.get_width() == 3.0
    d.close()


def test_iou_by_size_readout_matches_package():
    d = IoUBySizeDashboard()
    text = d.update(shift=2.0)
    got = B.iou_by_size([16.0], 2.0)
    row = [line for line in text.splitlines() if line.startswith("16 ")][0]
    vals = numbers(row)
    assert vals[1] == pytest.approx(got["detectron"][0].item(), abs=1e-5)
    assert vals[2] == pytest.approx(got["detectron2"][0].item(), abs=1e-5)
    assert "2 px right" in text
    d.close()


def test_regression_drift_vanishes_when_the_proposal_is_mapped():
    d = RegressionDashboard()
    text = d.update(handover="mapped", dx=2.0, dw=1.5)
    # Detectron2 on [x1, y1, x2 + 1, y2 + 1]: its numbers are Detectron's plus (0, 0, 1, 1), the covered area identical
    rows = {line.split()[0]: numbers(line) for line in text.splitlines() if line[:2] in ("x1", "y1", "x2", "y2")}
    assert rows["x1"][3] == pytest.approx(0.0, abs=1e-4) and rows["x2"][3] == pytest.approx(1.0, abs=1e-4)
    assert rows["x2"][4] == pytest.approx(0.0, abs=1e-4) and rows["y2"][4] == pytest.approx(0.0, abs=1e-4)
    text = d.update(handover="same")
    rows = {line.split()[0]: numbers(line) for line in text.splitlines() if line[:2] in ("x1", "y1", "x2", "y2")}
    prop = torch.tensor([d.result["prop"].tolist()], dtype=torch.float64)
    deltas = torch.tensor([[2.0, -0.5, 1.5, 0.5]], dtype=torch.float64)
    want = B.decode(deltas, prop, (10, 10, 5, 5)) - B.decode(deltas, prop, (10, 10, 5, 5), legacy_plus_one=True)
    for i, n in enumerate(("x1", "y1", "x2", "y2")):
        assert rows[n][3] == pytest.approx(want[0, i].item(), abs=1e-4)
    d.close()


def test_nms_readout_lists_the_kept_sets_of_the_package():
    d = NMSDashboard()
    for t in (0.5, 0.56, 0.7):
        text = d.update(threshold=t)
        k1 = sorted(B.nms(d.BOXES, d.SCORES, t, legacy_plus_one=True).tolist())
        k2 = sorted(B.nms(d.BOXES, d.SCORES, t).tolist())
        assert f"Detectron keeps {len(k1)} boxes {k1}" in text
        assert f"Detectron2 keeps {len(k2)} {k2}" in text
    # at 0.5 the exact tie (box 1) and the 0.53 / 0.48 pair (box 2) differ
    text = d.update(threshold=0.5)
    assert "Detectron keeps 4 boxes [0, 3, 4, 6]" in text and "Detectron2 keeps 6 [0, 1, 2, 3, 4, 6]" in text
    assert d.rects["detectron"][1].get_linestyle() == ":" and d.rects["detectron2"][1].get_linestyle() == "-"
    d.close()


def test_invalid_input_gives_a_readout_message_not_an_exception(monkeypatch):
    d = RegressionDashboard()
    last = d.readout_text
    monkeypatch.setattr(d, "WEIGHTS", (10.0, 10.0, 5.0, -5.0))
    d.update(dx=0.5)
    assert d.error and "weights must be four positive numbers" in d.error
    assert "weights must be four positive numbers" in d.readout_text
    assert d.result is not None and last  # the last good drawing stays
    d.close()


def test_nms_invalid_threshold_reports_in_readout(monkeypatch):
    d = NMSDashboard()
    monkeypatch.setattr(d, "BOXES", torch.tensor([[5.0, 0, 1, 1]]))
    monkeypatch.setattr(d, "SCORES", torch.tensor([0.5]))
    d.update(threshold=0.6)
    assert d.error and "boxes must satisfy" in d.error
    d.close()
