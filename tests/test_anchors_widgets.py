"""Chapter 3 dashboards: read-outs state the package's numbers."""

from __future__ import annotations

from explainer import anchors as A
from explainer.widgets.anchors import AnchorGridDashboard, QuantizationDashboard


def test_grid_readout_per_level_matches_the_report():
    d = AnchorGridDashboard()
    text = d.update(level=2, size=0.0, ratios=0, offset=0.0)
    row = next(line for line in text.splitlines() if line.startswith("32 @ 0.5"))
    assert "48 x 24" in row and "+12.50 %" in row  # Detectron's P2 ratio-0.5 anchor (golden: [-22, -10, 25, 13])
    assert "lie +2 px" in text
    text = d.update(offset=0.5)
    assert "(the same point)" in text


def test_grid_anchors_drawn_follow_the_offset():
    d = AnchorGridDashboard()
    d.update(level=4, offset=0.0)
    g0 = d.result["g2"].copy()
    d.update(offset=0.5)
    assert abs((d.result["g2"] - g0).mean() - 8.0) < 1e-9  # half a stride of 16


def test_quantization_rows_cover_every_anchor():
    d = QuantizationDashboard()
    d.update(metric="area")
    rows = d.result["rows"]
    assert len(rows) == 30  # 15 FPN (P2-P6 x 3 ratios) + 15 C4 (5 sizes x 3 ratios)
    ref = {(r["size"], r["ratio"]): r for r in A.anchor_report(16, (32, 64, 128, 256, 512), (0.5, 1, 2))}
    name, err, det_area, intended = rows[15]
    assert name == "C4 32@0.5" and abs(err - 100 * (1104 / 1024 - 1)) < 1e-9
    assert det_area == ref[(32.0, 0.5)]["detectron"]["area"]
    d.update(metric="aspect")
    assert abs(d.result["rows"][15][1] - 100 * ((24 / 46) / 0.5 - 1)) < 1e-9
