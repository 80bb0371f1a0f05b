"""`make cheatsheet`: one page, generated from the package's tables (and from explainer.effects when it exists)."""

from __future__ import annotations

import html
import importlib.util
import re
import sys
import types

import pytest

from explainer.conventions import DETECTRON, DETECTRON2, KNOB_DOCS, TORCHVISION
from explainer.diagnosis.causes import CAUSES
from tools import cheatsheet


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", pdf))


def _has_effects() -> bool:
    return importlib.util.find_spec("explainer.effects") is not None


def test_builds_one_page_from_the_package_tables(tmp_path):
    html_path, pdf_path = cheatsheet.build(tmp_path)
    page = html_path.read_text(encoding="utf-8")
    for knob, doc in KNOB_DOCS.items():
        row = re.search(rf"<tr><td>{re.escape(knob)}</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>",
                        page)
        assert row, f"knob {knob} missing"
        assert row.groups() == (html.escape(cheatsheet._value(getattr(DETECTRON, knob))),
                                html.escape(cheatsheet._value(getattr(DETECTRON2, knob))),
                                html.escape(cheatsheet._value(getattr(TORCHVISION, knob))), html.escape(doc))
    for name, info in CAUSES.items():
        assert f"<tr><td>{html.escape(name)}</td><td>{html.escape(info.fingerprint)}</td>" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cheatsheet.html", "cheatsheet.pdf"], "no temporary files"
    pdf = pdf_path.read_bytes()
    assert pdf.startswith(b"%PDF") and _pages(pdf) == 1
    if not _has_effects():
        assert re.search(rb"/MediaBox \[ ?0 0 841\.68 595\.44 ?\]", pdf), "A4 landscape"
    if _has_effects():  # the differences are the sheet's first table once explainer.effects exists
        from explainer.effects import DIFFERENCES

        rows = list(DIFFERENCES.values()) if isinstance(DIFFERENCES, dict) else list(DIFFERENCES)
        assert "<h2>The differences</h2>" in page and rows
        for r in rows:   # each row, shortened to a clause where long, with every source as file and line
            assert f"<td>{html.escape(r.title)}</td>" in page, r.key
            for text in (r.detectron, r.detectron2, r.torchvision, r.official_effect):
                assert html.escape(text[:30]) in page, (r.key, text)
            assert f"<td>{html.escape(r.fingerprint)}</td>" in page, r.key
            for src in r.source:
                assert f"{src.file.rsplit('/', 1)[-1]} l. {src.line}" in page, (r.key, src)
    else:
        assert "The differences" not in page


def _Difference(key, title, detectron, detectron2, flag, fingerprint, official_effect, source, unfixable, chapter):
    """A row of the package's own type, with made-up text."""
    from explainer.effects import Difference

    return Difference(key=key, title=title, detectron=detectron, detectron2=detectron2, flag=flag,
                      fingerprint=fingerprint, official_effect=official_effect, source=source, unfixable=unfixable,
                      chapter=chapter, when="inference")


def _Source(file, line):
    from explainer.effects import Source

    return Source(repository="owner/name @ 0000000", file=file, line=line, quote="a quote")


def _fake_effects(monkeypatch, rows):
    mod = types.ModuleType("explainer.effects")
    mod.DIFFERENCES = rows
    monkeypatch.setitem(sys.modules, "explainer.effects", mod)


def test_uses_the_effects_table_when_there_is_one(tmp_path, monkeypatch):
    rows = [_Difference(f"d{i}", f"difference {i}", "x2 - x1 + 1 in every box formula", "x2 - x1",
                        "" if i == 3 else "legacy_plus_one", "x2, y2 differ by exactly 1 px", f"+{i / 10:.1f} AP",
                        (_Source("docs/README.md", 10 + i),), "nothing", f"{i % 12:02d}_chapter.ipynb")
            for i in range(16)]
    _fake_effects(monkeypatch, rows)
    html_path, pdf_path = cheatsheet.build(tmp_path)
    page = html_path.read_text(encoding="utf-8")
    assert page.index("The differences") < page.index("The knobs") < page.index("Fingerprints on detections")
    for r in rows:
        assert f"<td>{r.title}</td>" in page and f"{r.official_effect} (README.md l. {r.source[0].line})" in page
    assert page.count("<td>none</td>") == 1   # the one row without a flag
    assert _pages(pdf_path.read_bytes()) == 1


def test_effects_rows_may_be_dicts_and_must_have_every_field(tmp_path, monkeypatch):
    row = {f: f"value of {f}" for f in cheatsheet.EFFECT_FIELDS}
    row["source"] = ({"file": "configs/README.md", "line": 7},)
    _fake_effects(monkeypatch, {"a": row})
    assert "value of official_effect (README.md l. 7)" in cheatsheet.render_html(cheatsheet.sections())
    del row["source"]
    with pytest.raises(ValueError, match="lacks the field 'source'"):
        cheatsheet.sections()
    assert cheatsheet.main(["--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x" / "cheatsheet.pdf").exists()


def test_a_long_table_moves_to_a_larger_page_but_stays_one_page(tmp_path, monkeypatch):
    long = "a difference described at length, " * 6
    _fake_effects(monkeypatch, [_Difference(f"d{i}", long, long, long, "flag", long, long, (_Source("a.md", 1),),
                                            "nothing", "01")
                                for i in range(16)])
    pdf = tmp_path / "sheet.pdf"
    size = cheatsheet.render_pdf(cheatsheet.sections(), pdf)
    assert 4.0 <= size and _pages(pdf.read_bytes()) == 1
    assert re.search(rb"/MediaBox \[ ?0 0 1190\.88 841\.68 ?\]", pdf.read_bytes()), "A3 landscape (16.54 x 11.69 in)"
