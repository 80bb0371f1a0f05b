"""Every registered dashboard follows the pattern: built once, updated in place, errors in the read-out.

Dashboards are driven through ``update()`` without a browser (ipywidgets runs observers synchronously).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from explainer.widgets import load_all

DASHBOARDS = load_all()


def _pixels(dash) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(dash.png())).convert("RGB")).astype(np.int16)


def _n_artists(fig) -> int:
    return sum(len(ax.get_children()) for ax in fig.axes) + len(fig.axes)


@pytest.fixture(params=sorted(DASHBOARDS), ids=str)
def dash(request):
    d = DASHBOARDS[request.param]()
    yield d
    d.close()


def test_builds_with_a_readout_and_no_error(dash):
    assert dash.error is None, dash.error
    assert dash.readout_text.strip()
    assert dash.primary in dash.controls


def test_primary_control_changes_figure_and_readout(dash):
    states = dash.bench_states()
    assert len(states) >= 2
    dash.update(**states[0])
    text0, img0 = dash.readout_text, _pixels(dash)
    changed_text = changed_img = False
    for s in states[1:]:
        dash.update(**s)
        assert dash.error is None, f"{s}: {dash.error}"
        changed_text |= dash.readout_text != text0
        changed_img |= bool(np.abs(_pixels(dash) - img0).max() > 0)
    assert changed_text and changed_img


def test_updates_mutate_the_same_figure_and_create_no_artists(dash):
    import matplotlib.pyplot as plt

    fig = dash.fig
    states = dash.bench_states()
    dash.update(**states[-1])
    dash.png()
    n_figs, n_art = len(plt.get_fignums()), _n_artists(fig)
    for s in states * 2:
        dash.update(**s)
        dash.png()
    assert dash.fig is fig
    assert len(plt.get_fignums()) == n_figs
    assert _n_artists(fig) == n_art, "render() must mutate artists, not add new ones"


def test_fast_redraw_gives_the_same_pixels_as_a_full_redraw(dash):
    """The cached static layer never shows stale content."""
    states = dash.bench_states()
    for s in states[: min(len(states), 4)]:
        dash.update(**s)
        fast = _pixels(dash)
        dash.fast_draw._background = None  # force a full redraw
        full = _pixels(dash)
        # anti-aliased text may move by a fraction of a pixel between layout passes; stale content would
        # leave whole shapes behind, i.e. pixels that differ by far more than anti-aliasing does
        stale = int((np.abs(fast - full).max(axis=2) > 48).sum())
        assert stale == 0, f"cached redraw differs from a full redraw at {s} in {stale} pixels"


def test_unknown_control_is_a_value_error(dash):
    with pytest.raises(ValueError, match="unknown control"):
        dash.update(no_such_control=1)


def test_every_control_is_described(dash):
    for name, w in dash.controls.items():
        assert w.description and w.tooltip, name


def test_display_carries_live_widget_and_static_image(dash):
    bundle, metadata = dash._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"] and bundle["text/plain"]
    assert metadata["image/png"]["alt"] == dash.alt_text


def test_no_text_is_cut_off(dash):
    """Titles, axis labels, tick labels and legends lie inside the figure: nothing a reader needs is clipped."""
    from matplotlib.text import Text

    dash.png()  # lays the figure out and draws it
    fig = dash.fig
    renderer = fig.canvas.get_renderer()
    bbox = fig.bbox
    clipped = []
    for ax in fig.axes:
        items = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks():  # only ticks inside the view are drawn
                if lo - 1e-9 <= tick.get_loc() <= hi + 1e-9 and tick.label1.get_visible() and tick.label1.get_text():
                    items.append(tick.label1)
        if ax.legend_ is not None:
            items.append(ax.legend_)
        for item in items:
            if isinstance(item, Text) and not item.get_text():
                continue
            if not item.get_visible():
                continue
            ext = item.get_window_extent(renderer)
            if ext.x0 < bbox.x0 - 1 or ext.y0 < bbox.y0 - 1 or ext.x1 > bbox.x1 + 1 or ext.y1 > bbox.y1 + 1:
                clipped.append(item.get_text() if isinstance(item, Text) else type(item).__name__)
    for leg in fig.legends:
        ext = leg.get_window_extent(renderer)
        if ext.x0 < bbox.x0 - 1 or ext.y0 < bbox.y0 - 1 or ext.x1 > bbox.x1 + 1 or ext.y1 > bbox.y1 + 1:
            clipped.append("figure legend")
    assert not clipped, f"cut off at the figure's edge: {clipped}"
