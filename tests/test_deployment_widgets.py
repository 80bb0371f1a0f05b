"""Chapter 8 dashboards: read-outs state the package's numbers."""

from __future__ import annotations

from explainer import deployment as Dep
from explainer.widgets.deployment import (
    BackboneOffsetsDashboard,
    CropAndResizeDashboard,
    ResizeModesDashboard,
    SamePaddingDashboard,
)


def test_resize_modes_readout_shift():
    d = ResizeModesDashboard()
    text = d.update(mode="asymmetric", out=40)
    assert "+0.500 at the left .. +0.500 at the right" in text  # 0.5 s - 0.5 output px at s = 2
    text = d.update(mode="half_pixel")
    assert "+0.000 at the left .. +0.000 at the right" in text


def test_crop_and_resize_readout():
    d = CropAndResizeDashboard()
    d.update(x1=1, y1=1, x2=5, y2=4, res=2)
    assert abs(d.result["tp"] - d.result["ref"]).max() < 1e-5
    assert abs(d.result["naive"] - d.result["ref"]).max() > 1.0
    d.update(x2=0.5)
    assert d.error and "x2 > x1" in d.error


def test_same_padding_readout():
    d = SamePaddingDashboard()
    text = d.update(size=8, kernel=3, stride=2)
    assert "shift of TF's grid (input px)  +1" in text
    text = d.update(size=9)
    assert "+0" in text.splitlines()[-1]


def test_backbone_offsets_readout():
    d = BackboneOffsetsDashboard()
    text = d.update(size=1024, padding="tf_same")
    lines = text.splitlines()
    # stride, feature size, main (3x3), its shortcut, main (1x1): as explainer.deployment.backbone_offsets says
    assert lines[-1].split() == ["32", "32", "31", "3", "3"]
    text = d.update(size=1333)
    want = Dep.backbone_offsets(1333)
    assert text.splitlines()[-1].split()[:3] == ["32", str(want[-1]["size"]), f"{want[-1]['main']:g}"]
    text = d.update(padding="symmetric")
    assert all(line.split()[2:] == ["0", "0", "0"] for line in text.splitlines()[1:])
