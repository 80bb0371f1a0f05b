"""`make cheatsheet`: the course on one page, generated from the package's own tables so that it cannot drift.

Sources, each read at run time:

* ``explainer.effects.DIFFERENCES`` (when the module exists): every difference with its title, each codebase's
  behaviour, the flag that switches it, its fingerprint, the effect its authors measured (with the source),
  whether any setting reproduces it, and its chapter;
* ``explainer.conventions``: every knob (``KNOB_DOCS``) with the values of the presets ``DETECTRON``,
  ``DETECTRON2`` and ``TORCHVISION``;
* ``explainer.diagnosis.causes.CAUSES``: every cause the diagnosis names, its fingerprint and its fix.

Writes ``build/cheatsheet.html`` (prints on one landscape page) and ``build/cheatsheet.pdf`` (one A4 landscape page,
A3 when A4 would need type below 5 pt; drawn with matplotlib's PDF backend: no other tool needed). Each file is written to a temporary name and renamed, so a failed
run leaves no partial file.
"""

from __future__ import annotations

import argparse
import html
import importlib
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from tools.notebooks import ROOT

__all__ = ["Section", "sections", "effects_rows", "render_html", "draw", "render_pdf", "build", "main", "EFFECT_FIELDS"]

#: The fields each row of ``explainer.effects.DIFFERENCES`` must have.
EFFECT_FIELDS = ("key", "title", "detectron", "detectron2", "flag", "fingerprint", "official_effect", "source",
                 "unfixable", "chapter")
TITLE = "Detectron vs Detectron2 (and torchvision): the course on one page"


@dataclass
class Section:
    """One table of the sheet: a heading, column headers, relative column widths and rows of text."""

    heading: str
    header: Tuple[str, ...]
    widths: Tuple[float, ...]
    rows: List[Tuple[str, ...]]
    note: str = ""
    mono_first: bool = True     # the first column holds identifiers (knob and cause names)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _brief(text: str, limit: int, cut: str = "; ") -> str:
    """The first clause of ``text`` (up to ``cut``), shortened at a word to at most ``limit`` characters."""
    head = text.split(cut, 1)[0] if cut in text and len(text.split(cut, 1)[0]) >= 20 else text
    if len(head) <= limit:
        return head
    return head[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " \u2026"


def _cited(source: Any) -> str:
    """A citation as the sheet prints it: the file's name and line (the full reference is in chapter 12)."""
    where = getattr(source, "file", None) or (source.get("file") if isinstance(source, dict) else str(source))
    line = getattr(source, "line", None) or (source.get("line") if isinstance(source, dict) else None)
    name = str(where).rsplit("/", 1)[-1]
    return f"{name} l. {line}" if line else name


def _field(row: Any, name: str) -> Any:
    if isinstance(row, dict):
        if name not in row:
            raise ValueError(f"explainer.effects.DIFFERENCES: a row lacks the field {name!r}; rows need {EFFECT_FIELDS}")
        return row[name]
    if not hasattr(row, name):
        raise ValueError(f"explainer.effects.DIFFERENCES: a row lacks the field {name!r}; rows need {EFFECT_FIELDS}")
    return getattr(row, name)


def effects_rows() -> Optional[List[Any]]:
    """The rows of ``explainer.effects.DIFFERENCES``, or None when the package has no ``explainer.effects``."""
    try:
        effects = importlib.import_module("explainer.effects")
    except ModuleNotFoundError as e:
        if e.name in ("explainer.effects",):
            return None
        raise
    rows = getattr(effects, "DIFFERENCES", None)
    if rows is None:
        raise ValueError("explainer.effects has no DIFFERENCES table")
    rows = list(rows.values()) if isinstance(rows, dict) else list(rows)
    for r in rows:
        for f in EFFECT_FIELDS:
            _field(r, f)
    return rows


def sections() -> List[Section]:
    """The sheet's tables, from the package's tables (the differences first, when ``explainer.effects`` exists)."""
    from explainer.conventions import DETECTRON, DETECTRON2, KNOB_DOCS, TORCHVISION
    from explainer.diagnosis.causes import CAUSES

    out = []
    effects = effects_rows()
    if effects is not None:
        rows = []
        for r in effects:
            effect = _brief(str(_field(r, "official_effect")), 130, cut="\n")
            cited = "; ".join(_cited(src) for src in _field(r, "source"))
            flag = _brief(str(_field(r, "flag")), 70, cut=" (") or "none"
            rows.append((str(_field(r, "title")), _brief(str(_field(r, "detectron")), 90),
                         _brief(str(_field(r, "detectron2")), 80), _brief(str(getattr(r, "torchvision", "")), 80),
                         flag, str(_field(r, "fingerprint")),
                         f"{effect} ({cited})" if cited else effect, str(_field(r, "chapter"))[:2]))
        out.append(Section("The differences", ("difference", "Detectron", "Detectron2", "torchvision", "flag",
                                               "fingerprint", "published effect (source)", "ch."),
                           (1.3, 1.3, 1.3, 1.3, 1.1, 1.2, 1.5, 0.25), rows,
                           "From explainer.effects.DIFFERENCES (each row in full, with its sources, in chapter 12).", mono_first=False))
    knobs = [(k, _value(getattr(DETECTRON, k)), _value(getattr(DETECTRON2, k)), _value(getattr(TORCHVISION, k)),
              KNOB_DOCS[k]) for k in DETECTRON.knobs()]
    out.append(Section("The knobs", ("knob", "Detectron", "Detectron2", "torchvision", "what it changes"),
                       (1.2, 0.7, 0.75, 0.75, 2.1),
                       knobs, "explainer.conventions: DETECTRON2.replace(knob=value) changes one."))
    causes = [(name, c.fingerprint, c.fix) for name, c in CAUSES.items()]
    out.append(Section("Fingerprints on detections", ("cause", "fingerprint", "fix"), (1.1, 1.55, 2.1), causes,
                       "explainer.diagnosis.causes.CAUSES: what `python -m explainer diagnose` names."))
    return out


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------
_CSS = """
@page { size: A4 landscape; margin: 8mm; }
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 8.5px; line-height: 1.25; margin: 8px; color: #111; }
h1 { font-size: 14px; margin: 0 0 4px 0; }
h2 { font-size: 11px; margin: 6px 0 2px 0; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
.wide { grid-column: 1 / span 2; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { text-align: left; vertical-align: top; padding: 1px 4px 1px 0; border-bottom: 0.5px solid #ccc;
         overflow-wrap: anywhere; }
th { border-bottom: 1px solid #555; }
td:first-child { font-family: "DejaVu Sans Mono", monospace; }
.note { color: #555; margin: 1px 0 0 0; }
@media screen { body { font-size: 13px; max-width: 1400px; } h1 { font-size: 22px; } h2 { font-size: 16px; } }
"""


def _html_section(s: Section, wide: bool) -> str:
    total = sum(s.widths)
    cols = "".join(f"<col style='width:{100 * w / total:.1f}%'>" for w in s.widths)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in s.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in s.rows)
    return (f"<section class='{'wide' if wide else ''}'><h2>{html.escape(s.heading)}</h2>"
            f"<table><colgroup>{cols}</colgroup><tr>{head}</tr>{body}</table>"
            f"<p class='note'>{html.escape(s.note)}</p></section>")


def render_html(secs: Sequence[Section]) -> str:
    wide = len(secs) == 3
    parts = [_html_section(s, wide and i == 0) for i, s in enumerate(secs)]
    return ("<!doctype html><html lang='en'><meta charset='utf-8'>"
            f"<title>{html.escape(TITLE)}</title><style>{_CSS}</style><body><main><h1>{html.escape(TITLE)}</h1>"
            "<p class='note'>Detectron: inclusive pixel indices (width x2 - x1 + 1). Detectron2: continuous "
            "coordinates (pixel i covers [i, i + 1)). Generated by <code>make cheatsheet</code> from the package's "
            f"tables.</p><div class='grid'>{''.join(parts)}</div></main></body></html>")


# --------------------------------------------------------------------------------------------------
# PDF: one A4 landscape page, drawn with matplotlib; the font shrinks until everything fits
# --------------------------------------------------------------------------------------------------
PAGES = ((11.69, 8.27), (16.54, 11.69))   # A4 landscape, then A3 landscape when A4 would need type below 5 pt
MARGIN = 0.3
CHAR_EM = 0.58              # a generous average advance of DejaVu Sans, in ems: wrapped lines never overrun
MONO_EM = 0.61              # DejaVu Sans Mono's advance (0.602 em), for the first column


def _wrap(text: str, width_in: float, size_pt: float, em: float = CHAR_EM) -> List[str]:
    chars = max(4, int(width_in * 72 / (em * size_pt)))
    return textwrap.wrap(text, chars, break_long_words=True, break_on_hyphens=False) or [""]


def _layout(s: Section, width_in: float, size: float) -> Tuple[List[List[List[str]]], float]:
    """Wrapped cells (header row first) and the height in inches at font ``size``."""
    total = sum(s.widths)
    col_w = [width_in * w / total for w in s.widths]
    rows = [list(s.header)] + [list(r) for r in s.rows]
    wrapped = [[_wrap(c, w - 0.08, size, MONO_EM if j == 0 and i > 0 and s.mono_first else CHAR_EM)
                for j, (c, w) in enumerate(zip(r, col_w))] for i, r in enumerate(rows)]
    line = size * 1.22 / 72
    height = (size + 2.5) * 1.6 / 72 + sum(max(len(c) for c in r) * line + 0.03 for r in wrapped) + line
    return wrapped, height


def _placement(secs: Sequence[Section], size: float, page: Tuple[float, float]
               ) -> Optional[List[Tuple[Section, float, float, float]]]:
    """(section, x, y from the top, width) for every section at font ``size``, or None when it does not fit."""
    usable_w, usable_h = page[0] - 2 * MARGIN, page[1] - 2 * MARGIN - 0.45
    gap = 0.2
    half = (usable_w - gap) / 2
    placed, top = [], 0.0
    if len(secs) == 3:
        _, h = _layout(secs[0], usable_w, size)
        placed.append((secs[0], 0.0, top, usable_w))
        top += h + 0.1
        rest = secs[1:]
    else:
        rest = secs
    heights = [_layout(s, half, size)[1] for s in rest]
    if top + max(heights) > usable_h:
        return None
    placed += [(s, i * (half + gap), top, half) for i, s in enumerate(rest)]
    return placed


def draw(secs: Sequence[Section]) -> Tuple[Any, float]:
    """The sheet as a matplotlib Figure of one page, and the font size used (points)."""
    import matplotlib.lines
    from matplotlib.figure import Figure

    placed, size, page = None, 0.0, PAGES[0]
    for page, smallest in zip(PAGES, (5.0, 4.0)):
        size = 7.5
        while size >= smallest and not placed:
            placed = _placement(secs, size, page)
            size -= 0.0 if placed else 0.25
        if placed:
            break
    if not placed:
        raise ValueError("the cheat sheet does not fit one A3 page even at 4 pt; shorten the tables")
    fig = Figure(figsize=page)
    W, H = page
    fig.text(MARGIN / W, 1 - MARGIN / H, TITLE, fontsize=13, fontweight="bold", va="top")
    fig.text(MARGIN / W, 1 - (MARGIN + 0.27) / H, "Detectron: inclusive pixel indices (width x2 - x1 + 1). "
             "Detectron2: continuous coordinates (pixel i covers [i, i + 1)). Generated by make cheatsheet from the "
             "package's tables.", fontsize=7, color="#444", va="top")
    line = size * 1.22 / 72
    for s, x0, y0, width in placed:
        x, y = MARGIN + x0, MARGIN + 0.45 + y0
        fig.text(x / W, 1 - y / H, s.heading, fontsize=size + 2.5, fontweight="bold", va="top")
        y += (size + 2.5) * 1.6 / 72
        total = sum(s.widths)
        col_x = [x + width * sum(s.widths[:i]) / total for i in range(len(s.widths))]
        wrapped, _ = _layout(s, width, size)
        for r, cells in enumerate(wrapped):
            for c, lines in enumerate(cells):
                family = "DejaVu Sans Mono" if c == 0 and r > 0 and s.mono_first else "DejaVu Sans"
                fig.text(col_x[c] / W, 1 - y / H, "\n".join(lines), fontsize=size, va="top", linespacing=1.22,
                         fontweight="bold" if r == 0 else "normal", family=family)
            y += max(len(c) for c in cells) * line + 0.03
            fig.add_artist(matplotlib.lines.Line2D([x / W, (x + width) / W], [1 - (y - 0.015) / H] * 2,
                                                   lw=0.8 if r == 0 else 0.3, color="#555" if r == 0 else "#bbb"))
        fig.text(x / W, 1 - y / H, s.note, fontsize=size - 0.5, color="#555", va="top")
    return fig, size


def render_pdf(secs: Sequence[Section], path: Path) -> float:
    """Write the sheet to ``path`` as a one-page PDF; returns the font size used (points)."""
    from matplotlib.backends.backend_pdf import PdfPages

    fig, size = draw(secs)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with PdfPages(tmp, metadata={"Title": TITLE, "CreationDate": None}) as pdf:
            pdf.savefig(fig)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def build(out_dir: Path) -> Tuple[Path, Path]:
    """Write cheatsheet.html and cheatsheet.pdf into ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    secs = sections()
    html_path, pdf_path = out_dir / "cheatsheet.html", out_dir / "cheatsheet.pdf"
    tmp = html_path.with_name(html_path.name + ".tmp")
    try:
        tmp.write_text(render_html(secs), encoding="utf-8")
        tmp.replace(html_path)
    finally:
        tmp.unlink(missing_ok=True)
    render_pdf(secs, pdf_path)
    return html_path, pdf_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "build"), help="folder for cheatsheet.html and cheatsheet.pdf")
    args = ap.parse_args(argv)
    try:
        paths = build(Path(args.out))
    except (ValueError, OSError) as e:
        print(f"cheatsheet: {e}", file=sys.stderr)
        return 2
    used = "with" if effects_rows() is not None else "without"
    print(f"wrote {paths[0]} and {paths[1]} ({used} explainer.effects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
