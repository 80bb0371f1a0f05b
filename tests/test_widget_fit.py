"""Dashboards fit a laptop's notebook column: a figure wider than MAX_FIGURE_PX is drawn at a lower dpi."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt

from explainer.widgets.base import MAX_FIGURE_PX, Dashboard


class _Wide(Dashboard):
    figsize = (12.0, 3.0)
    primary = "k"

    def make_controls(self):
        return {"k": widgets.IntSlider(value=1, min=0, max=3, description="k", tooltip="a control")}

    def build(self, fig):
        self.line = fig.subplots().plot([0, 1], [0, 1])[0]

    def compute(self, k):
        return k

    def render(self, result):
        self.line.set_ydata([0, result])

    def describe(self, result):
        return f"k = {result}"


def test_a_wide_figure_is_drawn_at_a_lower_dpi_to_fit():
    d = _Wide()
    try:
        width_px = d.fig.get_size_inches()[0] * d.fig.dpi
        assert abs(width_px - MAX_FIGURE_PX) < 1e-6
        assert d.fig.dpi < plt.rcParams["figure.dpi"]
        import io

        from PIL import Image

        assert Image.open(io.BytesIO(d.png())).size[0] <= MAX_FIGURE_PX, "the static image fits too"
    finally:
        d.close()


def test_a_figure_that_fits_keeps_the_course_dpi():
    _Wide.figsize = (8.0, 3.0)
    try:
        d = _Wide()
        assert d.fig.dpi == plt.rcParams["figure.dpi"]
        d.close()
    finally:
        _Wide.figsize = (12.0, 3.0)
