"""The course's table of chapters, and the navigation and self-check cells generated from it.

One table (:data:`CHAPTERS`: number, file, title, minutes, what the chapter answers, what to read first) is the
only place where the chapters are listed. ``python -m tools.chapters`` (``make course``) writes, in every chapter:

* a first cell ``course-header``: "Chapter N of M · previous · next · contents", with the time and what to read first;
* three last cells: ``course-selfcheck-intro`` and ``course-selfcheck`` (the chapter's questions from
  :mod:`explainer.course.selfcheck`, answered in :class:`explainer.widgets.selfcheck.SelfCheck`; written once the chapter
  has questions) and ``course-footer`` (a link to the next chapter);
* in chapter 0, the list of chapters (between two HTML comments in the cell that holds it, or in a cell of its
  own, ``course-contents``, when chapter 0 has no list yet).

It never touches any other cell, and running it twice changes nothing. ``--check`` only reports the notebooks that
are out of step with the table (the tests run it). To add a chapter, add its row to :data:`TABLE` and its
questions to :mod:`explainer.course.selfcheck`, then run ``make course``. A row with ``when_present=True`` (chapter 12)
is used only once its notebook is in the folder: adding the file and running ``make course`` brings it into every
header, footer and chapter 0's list, with no edit here; its self-check cells follow once it has questions.

Links are relative (``03_anchors.ipynb``), so they work in JupyterLab and in Voila, which serves a notebook at
``/voila/render/notebooks/NAME.ipynb``; links to ``../docs/*.md`` open the file in JupyterLab and are served by
Voila from ``/voila/files/`` (``make present`` allows ``.md`` files).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tools.notebooks import NOTEBOOK_DIR, ROOT

__all__ = ["Chapter", "TABLE", "CHAPTERS", "present_chapters", "chapter", "apply", "sync", "markdown_links",
           "broken_links", "main"]


@dataclass(frozen=True)
class Chapter:
    number: int
    file: str
    title: str
    minutes: int
    answers: str
    prerequisites: Tuple[int, ...] = ()
    #: A chapter written elsewhere and not yet in the folder: in the course only once its file exists.
    when_present: bool = False

    @property
    def stem(self) -> str:
        return self.file[:-len(".ipynb")]


#: Every chapter, in order. Minutes: reading, moving every control once and answering the self-check.
TABLE: Tuple[Chapter, ...] = (
    Chapter(0, "00_start_here.ipynb", "Start here", 10,
            "What is the one idea behind every difference, and how do the figures work?"),
    Chapter(1, "01_pixels_and_coordinates.ipynb", "Pixels and coordinates", 25,
            "What is a pixel, what is a coordinate, and where does \"+1\" come from? Resizing, flipping, "
            "COCO's boxes and keypoints.", (0,)),
    Chapter(2, "02_boxes_iou_regression_nms.ipynb", "Boxes, IoU, box regression and NMS", 35,
            "How \"+1\" changes area, IoU, box regression, clipping and NMS, and for which boxes it matters.", (1,)),
    Chapter(3, "03_anchors.ipynb", "Anchors", 25,
            "Detectron's rounded anchors against Detectron2's exact ones, the half-stride offset and the row order.",
            (1, 2)),
    Chapter(4, "04_roialign.ipynb", "ROIAlign", 25,
            "Where every ROIAlign sample lands with aligned=False and aligned=True, and which FPN level a box "
            "is pooled from.", (1,)),
    Chapter(5, "05_class_label_order.ipynb", "Class-label order", 20,
            "Background first (Detectron) or last (Detectron2), in scores, weights and labels.", (0,)),
    Chapter(6, "06_mask_paste.ipynb", "Mask paste", 20,
            "How a 28 x 28 mask becomes image pixels, the two ways, and where they differ.", (1, 4)),
    Chapter(7, "07_training_differences.ipynb", "Training differences", 25,
            "Post-NMS top-k per batch or per image, smooth L1 against L1, and flip augmentation.", (1, 2)),
    Chapter(8, "08_deployment_caffe2_onnx_tensorflow.ipynb", "Deployment to Caffe2, ONNX and TensorFlow", 30,
            "What changes on the way to Caffe2, ONNX and TensorFlow: resize modes, crop_and_resize, SAME padding, "
            "the Caffe2 flags, Detectron2's export paths and what each ONNX exporter writes.", (1, 4)),
    Chapter(9, "09_checkpoint_audit.ipynb", "Checkpoint audit", 20,
            "Did the weights arrive? Load, convert and audit a checkpoint safely, RetinaNet's included.", (5,)),
    Chapter(10, "10_debug_a_converted_model.ipynb", "Debugging a converted model", 40,
            "Why do two sets of detections differ? A diagnosis from their fingerprints, and a miniature detector "
            "with every knob switchable.", (2, 3, 4, 5)),
    Chapter(11, "11_find_the_first_divergence.ipynb", "The first divergence", 35,
            "Where do PyTorch and ONNX Runtime first compute something different inside the model, and why?",
            (4, 8, 10)),
    Chapter(12, "12_how_much_each_difference_matters.ipynb", "How much each difference matters", 30,
            "One table: every difference, how much it changes a converted model, what its authors measured on "
            "trained models, the flag that sets it and what no flag sets.", (10,), when_present=True),
    Chapter(13, "13_torchvision_detectors.ipynb", "torchvision's detectors", 25,
            "torchvision as a third set of conventions: its anchors, ROIAlign, mask paste and input pipeline beside "
            "Detectron's and Detectron2's, and converting its weights.", (3, 4, 6), when_present=True),
)


def present_chapters(table: Sequence[Chapter] = TABLE, folder: Path = NOTEBOOK_DIR) -> Tuple[Chapter, ...]:
    """The rows of ``table`` that are in the course: all of them but a ``when_present`` row whose file is missing."""
    return tuple(c for c in table if not c.when_present or (folder / c.file).is_file())


#: The course as it is in the folder now (a ``when_present`` chapter joins when its notebook is added).
CHAPTERS: Tuple[Chapter, ...] = present_chapters()

HEADER, INTRO, SELFCHECK, FOOTER, CONTENTS = ("course-header", "course-selfcheck-intro", "course-selfcheck",
                                              "course-footer", "course-contents")
GENERATED = (HEADER, INTRO, SELFCHECK, FOOTER)
CONTENTS_BEGIN = "<!-- course contents: generated by `python -m tools.chapters` from its table; edit the table there -->"
CONTENTS_END = "<!-- end of course contents -->"
_LEGACY_HEADING = re.compile(r"^## The chapters\b.*$", re.M)
SEP = " \u00b7 "


def chapter(number: int, chapters: Sequence[Chapter] = CHAPTERS) -> Chapter:
    for ch in chapters:
        if ch.number == number:
            return ch
    raise ValueError(f"no chapter {number}; the chapters are {[c.number for c in chapters]}")


def _link(ch: Chapter) -> str:
    return f"[{ch.number} {ch.title}]({ch.file})"


def _read_first(ch: Chapter, chapters: Sequence[Chapter]) -> str:
    return ", ".join(f"[{p}]({chapter(p, chapters).file})" for p in ch.prerequisites) or "nothing"


# --------------------------------------------------------------------------------------------------
# the generated text
# --------------------------------------------------------------------------------------------------
def header_markdown(ch: Chapter, chapters: Sequence[Chapter] = CHAPTERS) -> str:
    last = chapters[-1].number
    i = list(chapters).index(ch)
    parts = [f"**Chapter {ch.number} of {last}**"]
    if i > 0:
        parts.append(f"[previous: {chapters[i - 1].title}]({chapters[i - 1].file})")
    if i + 1 < len(chapters):
        parts.append(f"[next: {chapters[i + 1].title}]({chapters[i + 1].file})")
    parts.append(f"[contents]({chapters[0].file})")
    line = SEP.join(parts)
    more = f"about {ch.minutes} minutes"
    if ch.prerequisites:
        more += "; read first: " + _read_first(ch, chapters)
    return f"{line}  \n<small>{more}; [glossary](../docs/glossary.md)</small>"


def intro_markdown(ch: Chapter) -> str:
    return ("## Check yourself\n\n"
            "A few questions on this chapter's idea. The package computes each answer now, with the same functions "
            "the chapter uses. Type a number or pick an answer and press **Check**: a wrong answer gets a hint; "
            "**Show the answer** gives the answer and why, with its numbers.")


def selfcheck_code(ch: Chapter) -> str:
    return f"from explainer.widgets.selfcheck import SelfCheck\n\nSelfCheck(chapter={ch.number})"


def footer_markdown(ch: Chapter, chapters: Sequence[Chapter] = CHAPTERS) -> str:
    i = list(chapters).index(ch)
    if i + 1 < len(chapters):
        nxt = chapters[i + 1]
        return (f"---\n**Next: {_link(nxt)}**, about {nxt.minutes} minutes. {nxt.answers}\n\n"
                f"[contents]({chapters[0].file}){SEP}[glossary](../docs/glossary.md)")
    return (f"---\n**This is the last chapter.** Back to the [contents]({chapters[0].file}); the "
            f"[glossary](../docs/glossary.md) has every term, and `make cheatsheet` prints the course on one page.")


def contents_markdown(chapters: Sequence[Chapter] = CHAPTERS) -> str:
    rows = ["| # | chapter | time | the question it answers | read first |", "|---|---|---|---|---|"]
    for ch in chapters[1:]:
        rows.append(f"| {ch.number} | [{ch.title}]({ch.file}) | {ch.minutes} min | {ch.answers} | "
                    f"{_read_first(ch, chapters)} |")
    total = sum(c.minutes for c in chapters)
    return "\n".join([CONTENTS_BEGIN, "", *rows, "",
                      f"About {total // 60} h {total % 60:02d} min in all, self-checks included. Every chapter ends "
                      "with a self-check whose answers the package computes. Alongside: the "
                      "[glossary](../docs/glossary.md) of every term, the [facilitator's guide](../docs/onboarding.md) "
                      "for a team session, `make cheatsheet` (the course on one page) and `make present` "
                      "(the chapters as slides, code hidden).", "", CONTENTS_END])


# --------------------------------------------------------------------------------------------------
# notebooks as JSON (the course's files keep nbformat's layout: indent 1, non-ASCII as is)
# --------------------------------------------------------------------------------------------------
def _lines(text: str) -> List[str]:
    return text.splitlines(keepends=True)


def _cell(cell_id: str, kind: str, text: str) -> Dict:
    cell = {"cell_type": kind, "id": cell_id, "metadata": {}, "source": _lines(text)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
        cell = {k: cell[k] for k in ("cell_type", "execution_count", "id", "metadata", "outputs", "source")}
    return cell


def _source(cell: Dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _contents_into(cells: List[Dict], text: str) -> List[Dict]:
    """Put the chapter list into chapter 0: between the markers, else in place of the table under
    '## The chapters ...', else as a cell of its own after the first markdown cell."""
    for cell in cells:
        src = _source(cell)
        if cell["cell_type"] == "markdown" and CONTENTS_BEGIN in src and CONTENTS_END in src:
            start, end = src.index(CONTENTS_BEGIN), src.index(CONTENTS_END) + len(CONTENTS_END)
            cell["source"] = _lines(src[:start] + text + src[end:])
            return cells
    for cell in cells:
        src = _source(cell)
        m = _LEGACY_HEADING.search(src) if cell["cell_type"] == "markdown" else None
        if m:
            table = re.compile(r"(?:^\|.*\n?)+", re.M).search(src, m.end())
            if table:
                cell["source"] = _lines(src[:table.start()] + text + "\n" + src[table.end():])
                return cells
    out = [c for c in cells if c.get("id") != CONTENTS]
    at = next((i + 1 for i, c in enumerate(out) if c["cell_type"] == "markdown" and c.get("id") != HEADER), 0)
    return out[:at] + [_cell(CONTENTS, "markdown", text)] + out[at:]


def has_selfcheck(ch: Chapter) -> bool:
    """Whether :mod:`explainer.course.selfcheck` has questions for the chapter (its cells are generated only then)."""
    from explainer.course.selfcheck import chapters as with_questions

    return ch.number in with_questions()


def apply(nb: Dict, ch: Chapter, chapters: Sequence[Chapter] = CHAPTERS, selfcheck: Optional[bool] = None) -> Dict:
    """The notebook with its generated cells (re)written from the table; every other cell unchanged.

    ``selfcheck``: whether to write the self-check cells (default: when the chapter has questions).
    """
    selfcheck = has_selfcheck(ch) if selfcheck is None else selfcheck
    nb = json.loads(json.dumps(nb))
    cells = [c for c in nb["cells"] if c.get("id") not in GENERATED]
    ids = [c.get("id") for c in cells]
    taken = sorted({i for i in ids if i in GENERATED or (i == CONTENTS and ch.number != chapters[0].number)})
    if taken:
        raise ValueError(f"{ch.file}: cell ids {taken} are reserved for generated cells")
    if ch.number == chapters[0].number:
        cells = _contents_into(cells, contents_markdown(chapters))
    check = [_cell(INTRO, "markdown", intro_markdown(ch)), _cell(SELFCHECK, "code", selfcheck_code(ch))] if selfcheck else []
    nb["cells"] = ([_cell(HEADER, "markdown", header_markdown(ch, chapters))] + cells + check
                   + [_cell(FOOTER, "markdown", footer_markdown(ch, chapters))])
    return nb


def dumps(nb: Dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def check_table(chapters: Sequence[Chapter] = CHAPTERS, folder: Path = NOTEBOOK_DIR) -> List[str]:
    """What is wrong between the table and the folder: missing files, chapters not in the table, bad rows."""
    problems = []
    numbers = [c.number for c in chapters]
    if numbers != list(range(len(chapters))):
        problems.append(f"chapters must be numbered 0, 1, 2, ... in order; the table has {numbers}")
    for c in chapters:
        if not c.file.startswith(f"{c.number:02d}_") or not c.file.endswith(".ipynb"):
            problems.append(f"chapter {c.number}: file {c.file!r} must be named {c.number:02d}_topic.ipynb")
        if not (folder / c.file).is_file():
            problems.append(f"chapter {c.number}: {c.file} does not exist in {folder}")
        if c.minutes <= 0 or not c.title or not c.answers:
            problems.append(f"chapter {c.number}: needs a title, a positive time and what it answers")
        bad = [p for p in c.prerequisites if p not in numbers or p >= c.number]
        if bad:
            problems.append(f"chapter {c.number}: prerequisites {bad} must be earlier chapters")
    listed = {c.file for c in chapters}
    for p in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        if p.name not in listed:
            problems.append(f"{p.name} is not in tools/chapters.py's table of chapters: add its row")
    return problems


def sync(check: bool = False, chapters: Sequence[Chapter] = CHAPTERS, folder: Path = NOTEBOOK_DIR) -> List[Path]:
    """Regenerate every chapter's cells; with ``check``, write nothing. Returns the notebooks out of step."""
    problems = check_table(chapters, folder)
    if problems:
        raise ValueError("the table of chapters does not match the notebooks:\n  " + "\n  ".join(problems))
    changed = []
    for ch in chapters:
        path = folder / ch.file
        text = path.read_text(encoding="utf-8")
        new = dumps(apply(json.loads(text), ch, chapters))
        if new != text:
            changed.append(path)
            if not check:
                tmp = path.with_suffix(".ipynb.tmp")
                tmp.write_text(new, encoding="utf-8")
                tmp.replace(path)
    return changed


# --------------------------------------------------------------------------------------------------
# links
# --------------------------------------------------------------------------------------------------
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def markdown_links(text: str) -> List[str]:
    """The targets of the Markdown links in ``text`` (inline code spans excluded)."""
    text = re.sub(r"`[^`]*`", "", text)
    return _LINK.findall(text)


def heading_anchor(heading: str) -> str:
    """The anchor JupyterLab (and Voila's renderer) gives a Markdown heading: spaces to '-', text kept."""
    return re.sub(r"\s+", "-", heading.strip())


def _anchors(path: Path) -> List[str]:
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        text = "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    heads = re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)
    gfm = [re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads]
    return [heading_anchor(h) for h in heads] + gfm


def documents(root: Path = ROOT) -> List[Path]:
    """Every file whose links the tests check: the notebooks, docs/*.md and README.md."""
    return sorted(NOTEBOOK_DIR.glob("*.ipynb")) + sorted((root / "docs").glob("*.md")) + [root / "README.md"]


def links_of(path: Path) -> List[str]:
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        return [t for c in nb["cells"] if c["cell_type"] == "markdown" for t in markdown_links(_source(c))]
    return markdown_links(path.read_text(encoding="utf-8"))


def broken_links(paths: Optional[Sequence[Path]] = None) -> List[str]:
    """Relative links (and their #anchors) that do not resolve, as 'file: target (why)'."""
    bad = []
    for path in paths or documents():
        for target in links_of(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("/"):
                continue  # absolute URLs and site paths are outside the course
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            if not dest.exists():
                bad.append(f"{where}: {target} (no such file)")
            elif anchor and dest.is_file() and anchor not in _anchors(dest):
                bad.append(f"{where}: {target} (no heading with that anchor)")
    return bad


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Write the chapters' navigation and self-check cells from the table.")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a notebook is out of step")
    args = ap.parse_args(argv)
    try:
        changed = sync(check=args.check)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    for p in changed:
        print(("out of step: " if args.check else "updated: ") + p.name)
    broken = broken_links()
    for b in broken:
        print("broken link:", b, file=sys.stderr)
    if args.check and changed:
        print("run `make course` to regenerate them", file=sys.stderr)
    return 1 if (args.check and changed) or broken else 0


if __name__ == "__main__":
    sys.exit(main())
