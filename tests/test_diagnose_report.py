"""``python -m explainer diagnose ref.json cand.json --html report.html``: one self-contained page with the ranked
causes, their evidence and fixes, and its figures; written atomically; opened from file:// in Chromium without a
single request leaving the page."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from explainer.cli import main as cli
from explainer.diagnosis import report as Dx
from explainer.viz import report as VR
from tests.test_diagnose import case
from tests.test_diagnose_fields import coco, ellipse_side, grow
from tools.notebooks import ROOT


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two result files with masks: every mask grown by one pixel, boxes moved by half a pixel, labels + 1."""
    folder = tmp_path_factory.mktemp("report")
    side, masks = ellipse_side(11, n_images=3)
    moved = {k: {**d, "boxes": d["boxes"] + 0.5, "labels": d["labels"] + 1} for k, d in side.items()}
    (folder / "ref.json").write_text(json.dumps(coco(side, masks)))
    (folder / "cand.json").write_text(json.dumps(coco(moved, grow(masks, 1))))
    return folder


def _images(page_html: str):
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page_html)]


def test_cli_writes_a_self_contained_report(files, capsys):
    out = files / "report.html"
    assert cli(["diagnose", str(files / "ref.json"), str(files / "cand.json"), "--html", str(out)]) == 1
    text = capsys.readouterr().out
    page = out.read_text()
    d = Dx.diagnose(str(files / "ref.json"), str(files / "cand.json"))
    for c in d.causes:  # every cause, its explanation and its fix, in ranked order
        assert c.name in page and html.escape(c.fix) in page and html.escape(c.explanation) in page and c.name in text
    positions = [page.index(f"<b>{c.name}</b>") for c in d.causes]
    assert positions == sorted(positions)
    assert {"half_pixel_shift", "label_offset"} <= set(d.names)
    imgs = _images(page)
    assert len(imgs) == 3 and all(im.size[0] > 300 and im.size[1] > 100 for im in imgs)
    # nothing to fetch: no external URL, script, stylesheet link or font
    assert not re.search(r"(src|href)=\"(?!data:)", page) and "<script" not in page and "<link" not in page
    assert "http://" not in page and "https://" not in page


def test_the_report_draws_the_worst_pairs_with_their_masks(files, monkeypatch):
    d = Dx.diagnose(str(files / "ref.json"), str(files / "cand.json"))
    drawn = []
    real = VR._draw_masks
    monkeypatch.setattr(VR, "_draw_masks", lambda ax, diag, i, rb: (drawn.append(i), real(ax, diag, i, rb)))
    page = VR.report_html(d)
    assert drawn == d.pairs_by_difference()[:VR.WORST_PAIRS].tolist()
    assert "mask IoU" not in page  # the numbers are drawn into the figure, not written as text
    assert len(_images(page)) == 3


def test_a_failed_write_leaves_nothing_behind(files, monkeypatch):
    d = Dx.diagnose(case("plus_one", 1)[0], case("plus_one", 1)[1])
    target = files / "atomic.html"
    target.write_text("the previous report")
    os.chmod(target, 0o640)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full halfway")

    monkeypatch.setattr(VR, "_worst_pairs", broken)
    with pytest.raises(RuntimeError):
        VR.write_report(d, target)
    assert target.read_text() == "the previous report"
    assert not [p for p in files.iterdir() if p.name.startswith(".atomic.html")]
    monkeypatch.undo()
    VR.write_report(d, target)
    assert target.read_text().startswith("<!DOCTYPE html>") and (os.stat(target).st_mode & 0o777) == 0o640
    assert not [p for p in files.iterdir() if p.name.startswith(".atomic.html")]


def test_no_matplotlib_without_a_report(files):
    code = ("import sys; from explainer.cli import main; code = main(['diagnose', sys.argv[1], sys.argv[2]]); "
            "print('matplotlib' in sys.modules, code)")
    r = subprocess.run([sys.executable, "-c", code, str(files / "ref.json"), str(files / "cand.json")],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.stdout.strip().splitlines()[-1] == "False 1", r.stdout[-500:] + r.stderr[-2000:]


@pytest.mark.browser
def test_report_opens_in_chromium_from_file_without_any_request(files):
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _need_browser

    _need_browser()
    from playwright.sync_api import sync_playwright

    out = files / "browser.html"
    assert cli(["diagnose", str(files / "ref.json"), str(files / "cand.json"), "--html", str(out)]) == 1
    url = out.resolve().as_uri()
    errors, requests, outside = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))

            def route(r):
                if r.request.url == url or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(url)
            page.wait_for_load_state("load")
            shown = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight, e.getBoundingClientRect().width])")
            title = page.title()
            table = page.inner_text("table")
        finally:
            browser.close()
    assert len(shown) == 3 and all(c and w > 0 and h > 0 and box > 0 for c, w, h, box in shown), shown
    assert not errors, errors
    assert not outside and all(u == url or u.startswith("data:") for u in requests), requests
    assert title.startswith("Diagnosis") and "label_offset" in table and "half_pixel_shift" in table
    assert np.isfinite(len(table))
