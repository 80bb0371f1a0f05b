"""The glossary, the facilitator's guide and the README point at things that exist (links are checked in
tests/test_course.py)."""

from __future__ import annotations

import json
import re

import pytest

from explainer.course import selfcheck as S
from explainer.widgets import load_all
from tools.chapters import CHAPTERS, markdown_links
from tools.notebooks import NOTEBOOK_DIR, ROOT

DOCS = ROOT / "docs"
#: Terms the chapters use that a reader must be able to look up.
REQUIRED_TERMS = ["pixel index", "continuous coordinate", "inclusive box", "legacy_plus_one", "aligned", "OFFSET",
                  "sampling ratio", "background-first", "paste", "IoU", "NMS", "anchor", "ROIAlign", "fingerprint",
                  "first divergence", "SAME padding", "smooth L1"]


def _entries():
    text = (DOCS / "glossary.md").read_text(encoding="utf-8")
    return [p.strip() for p in re.split(r"^(?=- \*\*)", text, flags=re.M) if p.startswith("- **")]


def _notebook_text(name: str) -> str:
    nb = json.loads((NOTEBOOK_DIR / name).read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"]).lower()


def test_glossary_defines_the_course_terms_in_order():
    terms = [re.match(r"- \*\*(.+?)\*\*", e).group(1) for e in _entries()]
    assert terms == sorted(terms, key=str.lower), "alphabetical order"
    joined = " | ".join(terms).lower()
    missing = [t for t in REQUIRED_TERMS if t.lower() not in joined]
    assert not missing, f"glossary lacks {missing}"


@pytest.mark.parametrize("entry", _entries(), ids=lambda e: re.match(r"- \*\*(.+?)\*\*", e).group(1))
def test_each_term_links_to_a_chapter_that_uses_it(entry):
    links = [t for t in markdown_links(entry) if t.startswith("../notebooks/")]
    assert links, "every entry names the chapter that shows it"
    term = re.match(r"- \*\*(.+?)\*\*", entry).group(1)
    names = [n.strip().lower() for n in re.split(r",| \(|\)", term) if n.strip()]
    code = [c.lower() for c in re.findall(r"`([^`]+)`", entry.split(":", 1)[0])]
    for link in links:
        text = _notebook_text(link.split("/")[-1])
        words = [w for n in names + code for w in [n, n.rstrip("s"), n.replace("-", " ")]]
        assert any(w in text for w in words), f"{link} never mentions {names + code}"


def test_glossary_and_guide_are_reachable_from_chapter_zero():
    text = _notebook_text(CHAPTERS[0].file)
    assert "](../docs/glossary.md)" in text and "](../docs/onboarding.md)" in text


def test_onboarding_guide_names_real_dashboards_and_self_checks():
    guide = (DOCS / "onboarding.md").read_text(encoding="utf-8")
    for plan in ("## The 60-minute plan", "## The 90-minute plan", "## What participants do on their own machines",
                 "## Closing self-checks"):
        assert plan in guide
    registry = load_all()
    shown = re.findall(r"`(\w+Dashboard)`\s+\(chapter (\d+)\)", guide)
    assert len(shown) >= 10
    for name, chapter in shown:
        assert name in registry, f"{name} is not a dashboard"
        assert f"{name.lower()}(" in _notebook_text(CHAPTERS[int(chapter)].file), f"{name} is not in chapter {chapter}"
    keys = re.findall(r"`(ch\d\d\.\w+)`\s+\(chapter (\d+)\)", guide)
    assert len(keys) >= 8
    for key, chapter in keys:
        assert S.question(key).chapter == int(chapter)
    for link in markdown_links(guide):
        if "../notebooks/" in link:
            assert (DOCS / link).resolve().is_file()


def test_readme_shows_present_and_cheatsheet_beside_the_two_main_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Two commands\n\n```bash\n(.*?)```", readme, re.S).group(1)
    for cmd in ("make lab", "make test", "make present", "make cheatsheet"):
        assert re.search(rf"^{cmd}\b", block, re.M), f"{cmd} missing from the commands block"
    makefile = (ROOT / "Makefile").read_text()
    for target in ("present", "cheatsheet", "course"):
        assert re.search(rf"^{target}: ", makefile, re.M)
