"""Accessibility of every page the project writes, checked by axe-core in Chromium.

axe-core comes bundled in ``axe-playwright-python`` (nothing is fetched at run time). The pages: every chapter of the
static HTML build (``make html``) and its index, every chapter in Voila as ``make present`` serves it (its dashboards
live), the cheat sheet (``make cheatsheet``) and the diagnosis report
(``python -m explainer diagnose ref.json cand.json --html``). Each must have no violation of impact "serious" or
"critical" (axe's two highest of four) in the project's own content. Whatever is excluded from the check is listed in
:data:`EXCLUDED` with its reason; nothing is today. The built pages are also parsed: every image has alt text.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tests import test_browser as TB
from tests.conftest import executed_notebook
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _need_browser
from tools import build_html, cheatsheet
from tools.notebooks import notebook_paths

pytestmark = [pytest.mark.browser]

#: Impacts that fail the test (axe-core's scale: minor, moderate, serious, critical).
FAILING_IMPACTS = ("serious", "critical")
#: Parts of a page left out of the check, as (CSS selector, why). Only chrome that is not the project's own content
#: may be listed (the front end's, nbconvert's). Empty: the pages pass whole.
EXCLUDED: List[Tuple[str, str]] = []


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: List[Dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append({k: v or "" for k, v in attrs})


def images(page_html: str) -> List[Dict[str, str]]:
    """The attributes of every ``<img>`` of a page."""
    parser = _Images()
    parser.feed(page_html)
    return parser.images


def axe_problems(browser, path: Path) -> List[str]:
    """axe-core's serious and critical violations on the page at ``path`` (opened from file://, every request to
    another place refused), one line each: rule, impact, the elements and axe's help text."""
    from axe_playwright_python.sync_playwright import Axe

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
        page.goto(path.resolve().as_uri(), wait_until="load")
        context = {"exclude": [[sel] for sel, _ in EXCLUDED]} if EXCLUDED else None
        results = Axe().run(page, context=context, options={"resultTypes": ["violations"]})
    finally:
        page.close()
    return [f"{v['id']} ({v['impact']}) on {[n['target'] for n in v['nodes'][:5]]}: {v['help']}"
            for v in results.response["violations"] if v["impact"] in FAILING_IMPACTS]


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The static HTML build, from the notebooks executed once per test session (shared with the other tests)."""
    out = tmp_path_factory.mktemp("html")
    build_html.build(out, executed={p: executed_notebook(p)[0] for p in notebook_paths()})
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A diagnosis report with every section: two result files whose boxes moved by half a pixel, labels by one."""
    from explainer.cli import main as cli
    from tests.test_diagnose_fields import coco, ellipse_side, grow

    folder = tmp_path_factory.mktemp("a11y-report")
    side, masks = ellipse_side(11, n_images=3)
    moved = {k: {**d, "boxes": d["boxes"] + 0.5, "labels": d["labels"] + 1} for k, d in side.items()}
    (folder / "ref.json").write_text(json.dumps(coco(side, masks)))
    (folder / "cand.json").write_text(json.dumps(coco(moved, grow(masks, 1))))
    out = folder / "report.html"
    assert cli(["diagnose", str(folder / "ref.json"), str(folder / "cand.json"), "--html", str(out)]) == 1
    assert len(images(out.read_text())) == 3
    return out


def test_the_check_finds_what_it_must(browser, tmp_path):
    # an image without alt text, a control without a name and grey text on white: each one a serious or critical
    # violation, so a page with them cannot pass
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html lang='en'><title>bad</title><main><h1>bad</h1>"
                   "<img src='data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=='>"
                   "<input type='text'><p style='color:#bbb;background:#fff'>faint text</p></main></html>")
    found = " ".join(axe_problems(browser, bad))
    for rule in ("image-alt", "label", "color-contrast"):
        assert rule in found, found


@pytest.mark.notebook
@pytest.mark.parametrize("stem", [p.stem for p in notebook_paths()] + ["index"])
def test_static_html_pages_pass_axe(browser, site, stem):
    assert axe_problems(browser, site / f"{stem}.html") == []


@pytest.mark.notebook
def test_every_image_of_the_static_html_has_alt_text(site):
    for path in sorted(site.glob("[0-9][0-9]_*.html")):
        found = images(path.read_text(encoding="utf-8"))
        for img in found:
            assert img.get("alt", "").strip(), f"{path.name}: an image without alt text"
            assert not img["alt"].startswith("<"), f"{path.name}: alt text is a default representation: {img['alt']}"
        # a dashboard's image is described by its name and what it shows now
        n_dashboards = sum("Dashboard(" in "".join(c.source) for c in executed_notebook(
            next(p for p in notebook_paths() if p.stem == path.stem))[0].cells if c.cell_type == "code")
        dashboards = [i for i in found if i["alt"].startswith("Figure: ") and ". Shows now: " in i["alt"]]
        assert len(dashboards) >= n_dashboards, f"{path.name}: {len(dashboards)} described dashboards of {n_dashboards}"


def test_cheat_sheet_passes_axe(browser, tmp_path):
    html_path, _ = cheatsheet.build(tmp_path)
    assert axe_problems(browser, html_path) == []


def test_diagnosis_report_passes_axe(browser, report):
    assert axe_problems(browser, report) == []
    assert all(img.get("alt", "").strip() for img in images(report.read_text()))


# --------------------------------------------------------------------------------------------------
# Voila: every chapter as `make present` serves it, its dashboards live
# --------------------------------------------------------------------------------------------------
#: the Voila server of the browser test (tests/test_browser.py), serving a scratch copy of the course
voila_server = TB.voila


@pytest.mark.parametrize("path", TB.NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_in_voila_passes_axe(voila_server, browser, path):
    from axe_playwright_python.sync_playwright import Axe

    page = browser.new_page(viewport=TB.VIEWPORT)
    try:
        TB._open_in_voila(page, voila_server, path)
        # the check covers the dashboards' controls as drawn: every slider is there
        assert page.locator(".explainer-dashboard").count() == TB._n_dashboards(path)
        handles = page.locator(".explainer-dashboard .noUi-handle")
        names = [handles.nth(i).get_attribute("aria-label") for i in range(handles.count())]
        assert all(names), f"{path.name}: a slider without a name: {names}"
        context = {"exclude": [[sel] for sel, _ in EXCLUDED]} if EXCLUDED else None
        results = Axe().run(page, context=context, options={"resultTypes": ["violations"]})
    finally:
        page.close()
    problems = [f"{v['id']} ({v['impact']}) on {[n['target'] for n in v['nodes'][:5]]}: {v['help']}"
                for v in results.response["violations"] if v["impact"] in FAILING_IMPACTS]
    assert problems == [], path.name
