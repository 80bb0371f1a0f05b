"""Dashboards stay readable on JupyterLab's dark theme: each figure paints its own opaque light background, so that
its texts and lines, drawn for white, keep their contrast whatever the theme around it.

The contrast of a dashboard's dark-theme screenshot, text by text, is not measured here yet.
"""

from __future__ import annotations

import pytest
from matplotlib.colors import to_rgba

from explainer.widgets import load_all

DASHBOARDS = load_all()
#: WCAG 2.1, 1.4.3 (contrast, minimum): 4.5:1 for text of normal size.
MIN_TEXT_CONTRAST = 4.5
#: The figure's face must be at least this light (relative luminance): black text on it then has more than 17:1, and
#: the palette's colours keep at least 80 % of the contrast with white that tests/test_palette.py measures.
MIN_FACE_LUMINANCE = 0.8


def relative_luminance(color) -> float:
    """WCAG 2.1's relative luminance of a matplotlib colour."""
    r, g, b, _ = to_rgba(color)
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a, b) -> float:
    ya, yb = sorted((relative_luminance(a), relative_luminance(b)))
    return (yb + 0.05) / (ya + 0.05)


def test_contrast_is_wcag_s():
    assert contrast("black", "white") == pytest.approx(21.0)
    assert contrast("#767676", "white") == pytest.approx(4.54, abs=0.01)   # WCAG's darkest grey that fails AA on white
    assert contrast("#777777", "white") < MIN_TEXT_CONTRAST


@pytest.fixture(params=sorted(DASHBOARDS), ids=str)
def dash(request):
    d = DASHBOARDS[request.param]()
    yield d
    d.close()


def test_figure_paints_its_own_light_background(dash):
    face = to_rgba(dash.fig.patch.get_facecolor())
    assert face[3] == 1.0, "a transparent figure would show the dark theme's background through it"
    assert relative_luminance(face) >= MIN_FACE_LUMINANCE
    assert contrast("black", face) > 17
