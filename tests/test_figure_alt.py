"""Every dashboard's figure has a text alternative: an accessible name, and a description of what it shows now.

The description is the read-out as plain text; it is rewritten on every change of a control, and stays as it was
when a setting is refused (the figure keeps its last valid drawing too). The static image in the notebook's output
carries the same text as its ``alt``.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest

from explainer.widgets import load_all

DASHBOARDS = load_all()


class _Elements(HTMLParser):
    """The elements of an HTML fragment: their attributes and the text inside each."""

    def __init__(self):
        super().__init__()
        self.elements: list = []
        self._open: list = []

    def handle_starttag(self, tag, attrs):
        if tag == "br":
            for e in self._open:
                e["text"] += "\n"
            return
        e = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(e)
        self._open.append(e)

    def handle_endtag(self, tag):
        if self._open and self._open[-1]["tag"] == tag:
            self._open.pop()

    def handle_data(self, data):
        for e in self._open:
            e["text"] += data


def _alt(dash) -> tuple:
    """(accessible name, description) of the dashboard's figure, as a screen reader computes them from the HTML."""
    parser = _Elements()
    parser.feed(dash.figure_alt.value)
    images = [e for e in parser.elements if e["attrs"].get("role") == "img"]
    assert len(images) == 1, dash.figure_alt.value
    img = images[0]["attrs"]
    described = [e for e in parser.elements if e["attrs"].get("id") == img.get("aria-describedby")]
    assert len(described) == 1, f"aria-describedby={img.get('aria-describedby')!r} names no element"
    assert described[0]["attrs"].get("aria-live") == "polite", "a change must be announced"
    return html.unescape(img.get("aria-label", "")), html.unescape(described[0]["text"]).strip()


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(params=sorted(DASHBOARDS), ids=str)
def dash(request):
    d = DASHBOARDS[request.param]()
    yield d
    d.close()


def test_the_figure_has_a_name_and_describes_what_it_shows(dash):
    name, description = _alt(dash)
    assert name == f"Figure: {dash.title}" and dash.title
    assert _words(description) == _words(dash.readout_text) and description
    # it sits just before the figure, inside the dashboard
    children = list(dash.widget.children)
    assert children[children.index(dash.figure_alt) + 1] in (dash.fig.canvas, dash._static_image)


def test_the_description_follows_every_change_and_survives_a_refused_setting(dash):
    states = dash.bench_states()
    seen = set()
    for s in states[:4]:
        dash.update(**s)
        name, description = _alt(dash)
        assert _words(description) == _words(dash.readout_text), s
        assert _words(description) in dash.alt_text
        seen.add(description)
    assert len(seen) >= 2, "the description did not change with the figure"
    before = _alt(dash)
    dash.update(**{dash.primary: None})     # a value no control takes: refused, the figure stays
    assert dash.error is not None
    assert _alt(dash) == before


def test_two_dashboards_on_one_page_refer_to_their_own_descriptions():
    names = sorted(DASHBOARDS)[:2]
    a, b = (DASHBOARDS[n]() for n in names)
    try:
        ids = {re.search(r"aria-describedby='([^']+)'", d.figure_alt.value).group(1) for d in (a, b)}
        assert len(ids) == 2
    finally:
        a.close()
        b.close()


def test_a_static_figure_is_displayed_once_with_its_description_as_alt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from explainer.viz.effects import described_effects_figure

    points = [{"key": "legacy_plus_one", "published": 0.0, "boxes_changed": 0.9, "masks_changed": 0.95},
              {"key": "roi_aligned", "published": 0.8, "boxes_changed": 0.2, "masks_changed": 0.6},
              {"key": "pixel_mean_order", "published": None, "boxes_changed": 1.0, "masks_changed": 1.0}]
    shown = described_effects_figure(points, num="test-described")
    data, metadata = shown._repr_mimebundle_()
    alt = metadata["image/png"]["alt"]
    assert data["image/png"] and data["text/plain"] == alt
    # the HTML form, which JupyterLab, Voila and nbconvert prefer, is the same image with the description as alt
    assert data["text/html"] == f'<img src="data:image/png;base64,{data["image/png"]}" alt="{html.escape(alt)}">'
    # every point is in the words, with its numbers, in the figure's column order
    assert alt.index("published change 0 AP: legacy_plus_one (boxes 90 %, masks 95 %)") \
        < alt.index("published change 0.8 AP: roi_aligned (boxes 20 %, masks 60 %)") \
        < alt.index("no published figure: pixel_mean_order (boxes 100 %, masks 100 %)")
    assert "Scatter of 3 differences" in alt
    # pyplot no longer holds it: a backend that shows open figures at the end of a cell does not show it again
    assert "test-described" not in plt.get_figlabels()


def test_a_static_figure_without_a_description_is_refused():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from explainer.viz.draw import DescribedFigure

    fig = plt.figure()
    try:
        with pytest.raises(ValueError, match="description"):
            DescribedFigure(fig, "  ")
    finally:
        plt.close(fig)


def test_a_table_scrolls_in_a_region_the_keyboard_reaches_and_a_screen_reader_names():
    from explainer.viz.tables import table

    shown = table([[1, 2.5, "x"]], ["operator", "default", "check", "more"], caption="")._repr_html_()
    region = re.match(r'<div role="region" aria-label="([^"]+)" tabindex="0" style="overflow-x:auto[^"]*">', shown)
    assert region and region.group(1) == "table: operator, default, check", shown
    assert shown.endswith("</table></div>")
    assert 'aria-label="table: a &amp; b"' in table([[1]], ["a & b"], caption="Each knob")._repr_html_()
