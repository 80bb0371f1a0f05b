"""`make html` writes a static course whose figures are visible without a kernel."""

from __future__ import annotations

import re

import pytest

from tests.conftest import executed_notebook
from tools import build_html
from tools.notebooks import notebook_paths


@pytest.mark.notebook
def test_static_html_build(tmp_path):
    executed = {p: executed_notebook(p)[0] for p in notebook_paths()}
    pages = build_html.build(tmp_path, executed=executed)
    # the build works on copies: the executed notebooks keep their metadata for the other tests
    assert all("temp_files_left" in nb.metadata for nb in executed.values())
    assert [p.stem for p in pages] == [p.stem for p in notebook_paths()]
    index = (tmp_path / "index.html").read_text()
    for p in pages:
        assert p.name in index
        html = p.read_text()
        assert "Traceback" not in html and "temp_files_left" not in html
        if "Dashboard(" in notebook_paths()[[q.stem for q in notebook_paths()].index(p.stem)].read_text():
            # each dashboard's figure is embedded as an image, and no dead widget placeholder remains
            assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", html)) >= 1, p.name
            assert "application/vnd.jupyter.widget-view+json" not in html, p.name
