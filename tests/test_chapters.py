"""The chapters are in step with the table of tools/chapters.py: navigation, self-checks, chapter 0's list, and every
relative link of the course resolves."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tools import chapters as Ch
from tools.notebooks import NOTEBOOK_DIR, ROOT


def _nb(ch: Ch.Chapter) -> dict:
    return json.loads((NOTEBOOK_DIR / ch.file).read_text(encoding="utf-8"))


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def test_table_matches_the_notebook_folder():
    assert Ch.check_table() == []


def test_notebooks_are_in_step_with_the_table():
    stale = Ch.sync(check=True)
    assert not stale, f"run `make course`: {[p.name for p in stale]} are out of step with tools/chapters.py"


@pytest.mark.parametrize("ch", Ch.CHAPTERS, ids=lambda c: c.stem)
def test_chapter_opens_with_its_place_and_ends_with_the_next(ch):
    cells = _nb(ch)["cells"]
    last = Ch.CHAPTERS[-1].number
    head = _src(cells[0])
    assert cells[0]["id"] == "course-header"
    assert head.startswith(f"**Chapter {ch.number} of {last}**")
    links = Ch.markdown_links(head.splitlines()[0])
    i = ch.number
    expected = ([Ch.CHAPTERS[i - 1].file] if i > 0 else []) + ([Ch.CHAPTERS[i + 1].file] if i < last else []) + \
        [Ch.CHAPTERS[0].file]
    assert links == expected
    assert ("[previous: " in head) == (i > 0) and ("[next: " in head) == (i < last) and "[contents](" in head
    for p in ch.prerequisites:
        assert f"]({Ch.CHAPTERS[p].file})" in head
    foot = _src(cells[-1])
    assert cells[-1]["id"] == "course-footer"
    if i < last:
        assert f"**Next: [{i + 1} {Ch.CHAPTERS[i + 1].title}]({Ch.CHAPTERS[i + 1].file})**" in foot
    else:
        assert "last chapter" in foot and f"]({Ch.CHAPTERS[0].file})" in foot
    code = [c for c in cells if c["id"] == "course-selfcheck"]
    assert len(code) == 1 and _src(code[0]).endswith(f"SelfCheck(chapter={ch.number})")
    assert [c["id"] for c in cells[-3:]] == ["course-selfcheck-intro", "course-selfcheck", "course-footer"]


def test_chapter_zero_lists_every_chapter_with_time_answer_and_prerequisites():
    text = "\n".join(_src(c) for c in _nb(Ch.CHAPTERS[0])["cells"] if c["cell_type"] == "markdown")
    block = text[text.index(Ch.CONTENTS_BEGIN):text.index(Ch.CONTENTS_END)]
    rows = [r for r in block.splitlines() if re.match(r"^\| \d+ \|", r)]
    assert len(rows) == len(Ch.CHAPTERS) - 1
    for ch, row in zip(Ch.CHAPTERS[1:], rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == str(ch.number)
        assert cells[1] == f"[{ch.title}]({ch.file})"
        assert cells[2] == f"{ch.minutes} min"
        assert cells[3] == ch.answers
        assert Ch.markdown_links(cells[4]) == [Ch.CHAPTERS[p].file for p in ch.prerequisites]
    total = sum(c.minutes for c in Ch.CHAPTERS)
    assert f"About {total // 60} h {total % 60:02d} min" in block
    assert "](../docs/glossary.md)" in block and "](../docs/onboarding.md)" in block


def test_every_relative_link_resolves():
    assert Ch.broken_links() == []


def test_link_checker_finds_broken_files_and_anchors(tmp_path):
    shutil.copy(ROOT / "docs" / "glossary.md", tmp_path / "glossary.md")
    probe = tmp_path / "probe.md"
    probe.write_text("[a](../notebooks/99_missing.ipynb) [b](glossary.md#no-such-heading) [c](glossary.md#Glossary) "
                     "[d](https://example.org/x) `[e](not-a-link.md)` [f](#Local) [g](#elsewhere)\n\n# Local\n")
    bad = Ch.broken_links([probe])
    assert bad == [f"{probe}: ../notebooks/99_missing.ipynb (no such file)",
                   f"{probe}: glossary.md#no-such-heading (no heading with that anchor)",
                   f"{probe}: #elsewhere (no heading with that anchor)"]


def _copy_course(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return folder


def test_regenerating_is_idempotent_and_touches_no_other_cell(tmp_path):
    for ch in Ch.CHAPTERS:
        nb = _nb(ch)
        once = Ch.apply(nb, ch)
        assert Ch.dumps(Ch.apply(once, ch)) == Ch.dumps(once)
        mine = {"course-header", "course-selfcheck-intro", "course-selfcheck", "course-footer"}
        theirs = [c for c in nb["cells"] if c["id"] not in mine]
        kept = [c for c in once["cells"] if c["id"] not in mine]
        if ch.number == 0:  # only the generated block of the list may differ
            strip = lambda cells: [re.sub(re.escape(Ch.CONTENTS_BEGIN) + ".*?" + re.escape(Ch.CONTENTS_END), "",
                                          _src(c), flags=re.S) for c in cells]
            assert strip(kept) == strip(theirs)
        else:
            assert kept == theirs


def test_a_chapter_added_to_the_table_is_linked_everywhere(tmp_path):
    folder = _copy_course(tmp_path)
    last = Ch.CHAPTERS[-1]
    n = last.number + 1
    new = Ch.Chapter(n, f"{n:02d}_effect_sizes.ipynb", "Effect sizes", 20, "How much does each difference cost?",
                    (10, 11))
    nb = {"cells": [{"cell_type": "markdown", "id": "c00", "metadata": {}, "source": [f"# Chapter {n}\n"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (folder / new.file).write_text(Ch.dumps(nb))
    with pytest.raises(ValueError, match=f"{new.file} is not in tools/chapters.py's table"):
        Ch.sync(folder=folder)
    table = Ch.CHAPTERS + (new,)
    changed = Ch.sync(chapters=table, folder=folder)
    assert {p.name for p in changed} == {c.file for c in table}, f"every header now says 'of {n}'"
    added = json.loads((folder / new.file).read_text())
    assert _src(added["cells"][0]).startswith(f"**Chapter {n} of {n}** \u00b7 [previous: {last.title}]")
    assert "last chapter" in _src(added["cells"][-1])
    assert not [c for c in added["cells"] if c["id"] == "course-selfcheck"], "no questions yet: no self-check cell"
    before = json.loads((folder / last.file).read_text())
    assert f"[next: Effect sizes]({new.file})" in _src(before["cells"][0])
    assert f"**Next: [{n} Effect sizes]({new.file})**" in _src(before["cells"][-1])
    zero = "".join(_src(c) for c in json.loads((folder / Ch.CHAPTERS[0].file).read_text())["cells"])
    assert f"| {n} | [Effect sizes]({new.file}) | 20 min |" in zero
    assert Ch.sync(check=True, chapters=table, folder=folder) == []


def test_a_when_present_row_joins_the_course_when_its_notebook_arrives(tmp_path):
    waiting = [c for c in Ch.TABLE if c.when_present]
    assert waiting, "the table keeps a row for a chapter that is not in the folder yet"
    folder = _copy_course(tmp_path)
    for c in waiting:
        (folder / c.file).unlink(missing_ok=True)
    without = Ch.present_chapters(folder=folder)
    assert [c.number for c in without] == list(range(len(without))) and not any(c.when_present for c in without)
    assert Ch.check_table(without, folder) == []
    nb = {"cells": [{"cell_type": "markdown", "id": "c00", "metadata": {}, "source": ["# The new chapter\n"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    for c in waiting:
        (folder / c.file).write_text(Ch.dumps(nb))
    with_them = Ch.present_chapters(folder=folder)
    assert with_them == Ch.TABLE
    Ch.sync(chapters=with_them, folder=folder)
    last = with_them[-1]
    head = _src(json.loads((folder / with_them[1].file).read_text())["cells"][0])
    assert head.startswith(f"**Chapter 1 of {last.number}**")
    before = _src(json.loads((folder / with_them[-2].file).read_text())["cells"][-1])
    assert f"**Next: [{last.number} {last.title}]({last.file})**" in before
    zero = "".join(_src(c) for c in json.loads((folder / with_them[0].file).read_text())["cells"])
    assert f"| {last.number} | [{last.title}]({last.file}) | {last.minutes} min |" in zero
    assert Ch.sync(check=True, chapters=with_them, folder=folder) == []


def test_chapter_zero_list_is_found_under_its_heading_or_added(tmp_path):
    ch0 = Ch.CHAPTERS[0]
    legacy = {"cells": [
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# Start\n"]},
        {"cell_type": "markdown", "id": "b", "metadata": {},
         "source": ["## The chapters, in order\n", "\n", "| # | notebook |\n", "|---|---|\n", "| 1 | [x](x.ipynb) |\n",
                    "\n", "Chapters 1 and 2 are the foundation.\n"]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    out = Ch.apply(legacy, ch0, selfcheck=False)
    b = _src(out["cells"][2])
    assert b.startswith("## The chapters, in order\n\n" + Ch.CONTENTS_BEGIN)
    assert b.endswith(Ch.CONTENTS_END + "\n\nChapters 1 and 2 are the foundation.\n")
    assert "[x](x.ipynb)" not in b
    bare = {"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# Start\n"]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    out = Ch.apply(bare, ch0, selfcheck=False)
    assert [c["id"] for c in out["cells"]] == ["course-header", "a", "course-contents", "course-footer"]
    assert Ch.apply(out, ch0, selfcheck=False) == out


def test_reserved_cell_ids_are_refused():
    nb = {"cells": [{"cell_type": "markdown", "id": "course-contents", "metadata": {}, "source": ["x"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    with pytest.raises(ValueError, match="reserved for generated cells"):
        Ch.apply(nb, Ch.CHAPTERS[3])


def test_command_line_check_mode(tmp_path, capsys):
    assert Ch.main(["--check"]) == 0
