"""Chapter 1 dashboards: the read-out states what the package computes; bad settings keep the last drawing."""

from __future__ import annotations

import io

import numpy as np

from explainer import pixels
from explainer.widgets.pixels import FlipDashboard, PixelBoxDashboard, ResizeDashboard


def _pixels(dash):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(dash.png())))


def test_pixel_box_readout_states_both_areas():
    d = PixelBoxDashboard()
    text = d.update(x1=2, y1=2, x2=6, y2=5)
    both = pixels.compare_box([2, 2, 6, 5])
    assert both["detectron"]["area"] == 20 and both["detectron2"]["area"] == 12
    area_line = next(line for line in text.splitlines() if line.startswith("area"))
    assert area_line.split()[2:5] == ["20", "12", "8"]
    assert "Detectron covers 20 whole pixels" in text


def test_inverted_box_goes_to_the_readout_and_keeps_the_drawing():
    d = PixelBoxDashboard()
    d.update(x1=2, x2=6)
    img = _pixels(d)
    result = d.result
    d.update(x1=8)  # x1 > x2
    assert d.error and "x2 >= x1" in d.error
    assert "x2 >= x1" in d.readout_text and "last valid" in d.readout_text
    assert d.result is result
    assert np.array_equal(_pixels(d), img)
    d.update(x1=1)
    assert d.error is None


def test_resize_readout_far_edge_error_is_one_minus_scale():
    d = ResizeDashboard()
    text = d.update(in_size=4, out_size=8, box_x1=1, box_x2=2, mode="half_pixel")
    line = next(line for line in text.splitlines() if line.startswith("far-edge error"))
    assert line.split()[-1] == "-1"  # s = 2: Detectron's far edge is 1 - s = -1 px short
    text = d.update(mode="asymmetric")
    line = next(line for line in text.splitlines() if line.startswith("content shift"))
    assert "-0.5" in line  # i s against (i + 0.5) s - 0.5 at s = 2: shift -0.5 output px


def test_resize_rejects_a_box_outside_the_row():
    d = ResizeDashboard()
    d.update(in_size=4, box_x1=0, box_x2=3)
    d.update(box_x2=6)
    assert d.error and "inside the input row" in d.error


def test_flip_readout_polygon_is_one_pixel_off_keypoint_agrees():
    d = FlipDashboard()
    text = d.update(width=12, box_x1=1, box_x2=3, kp_x=2)
    rows = {line.split()[0]: line for line in text.splitlines()}
    assert rows["polygon"].split()[-1] == "-1"
    assert rows["keypoint"].split()[-3:] == ["9", "9", "+0"]
    assert rows["box"].split()[-1] == "+0"
