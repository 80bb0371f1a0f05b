"""Numbers in tables and read-outs are formatted for a person: no float32 tail, no -0, arrays element by element."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from explainer.viz.tables import Table, format_number, html_table, readable
from tests.conftest import executed_notebook
from tools.notebooks import notebook_paths

#: A decimal with 10 or more digits after the point: Python's repr of a float32 value nobody formatted.
RAW = re.compile(r"(?<![\w.])-?\d+\.\d{10,}")


@pytest.mark.parametrize("value, shown", [
    (float(np.float32(-0.333)), "-0.333"),            # the float32 value, not -0.33300000429153442
    (-0.33300018310546875, "-0.333"),
    (float(np.float32(192.81)), "192.81"),
    (-0.0, "0"), (-1e-9, "-1e-09"), (3.0, "3"), (2.5e6, "2.5e+06"), (float("nan"), "nan"), (float("-inf"), "-inf"),
])
def test_format_number(value, shown):
    assert format_number(value) == shown


def test_cells_of_every_kind():
    t = torch.tensor([192.81, 224.8, 74.73], dtype=torch.float32)
    row = [t, t[0], np.float32(0.1), [0.1 + 0.2, (1, 2.5)], True, "plain text", 7]
    out = html_table([row])
    cells = re.findall(r"<td[^>]*>(.*?)</td>", out)
    assert cells == ["[192.81, 224.8, 74.73]", "192.81", "0.1", "[0.3, (1, 2.5)]", "yes", "plain text", "7"]
    assert not RAW.search(out)


def test_strings_with_raw_reprs_are_rounded_but_deliberate_digits_kept():
    coco = torch.tensor([192.81, 224.8, 74.73, 33.43])
    assert readable(str(coco.tolist())) == "[192.81, 224.8, 74.73, 33.43]"
    deliberate = f"IoU {float(np.float32(0.5) + np.float32(6e-8)):.9g} at t' = 0.49999997"
    assert readable(deliberate) == deliberate
    assert readable("version 1.2.3, box x1.5, 1e-05") == "version 1.2.3, box x1.5, 1e-05"


def test_text_form_and_caption():
    t = Table([[float(np.float32(0.7042254))]], ["IoU"], caption="t' = 0.4999999701976776 (as computed)")
    assert repr(t).splitlines() == ["t' = 0.4999999701976776 (as computed)", "IoU", "0.70423"], \
        "the caption is the author's sentence and stays as written"


@pytest.mark.notebook
@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_no_raw_float_in_any_table_or_read_out(path):
    """Every table and every dashboard's read-out (the text/plain of its output) in an executed chapter; what a
    chapter print()s itself is its author's choice and is not checked here."""
    nb, _ = executed_notebook(path)
    found = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            html = "".join(data.get("text/html", ""))
            shown = []
            if "<table" in html:                                      # a table of the package
                shown.append(re.sub(r"<caption.*?</caption>", "", html, flags=re.S))
            if "application/vnd.jupyter.widget-view+json" in data:   # a dashboard: its read-out as text
                shown.append("".join(data.get("text/plain", "")))
            found += [f"cell {i}: {m}" for text in shown for m in RAW.findall(text)]
    assert not found, f"{path.name}: unformatted numbers {found[:8]}"

