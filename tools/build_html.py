"""`make html`: execute every notebook and write a static HTML course to build/html/.

Figures are embedded as PNG images, so the pages work without a kernel (a dashboard shows the
figure of its default setting and its read-out). Every image has a text alternative: the ``alt`` that the
kernel put in the output's metadata (dashboards, ``explainer.viz.draw.DescribedFigure``), or else the output's
own plain text when it is more than Python's default representation; the page's title is the chapter's.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

from tools.notebooks import ROOT, error_outputs, execute_all, notebook_paths, strip_widget_views

#: The course's page template: JupyterLab's, with every image's text alternative written out.
TEMPLATE = Path(__file__).resolve().parent / "templates" / "course.html.j2"
#: Python's default representation of an object ("<Figure size 640x480 with 1 Axes>"): says nothing of an image.
DEFAULT_REPR = re.compile(r"^<.*>$", re.S)


def add_alt_text(nb) -> list:
    """Give every PNG output of ``nb`` an ``alt`` in its metadata where the kernel gave none: the output's plain text,
    unless that is a default representation. Returns the cells (index) whose images are still without one."""
    missing = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            data = o.get("data") or {}
            if "image/png" not in data:
                continue
            meta = o.setdefault("metadata", {}).setdefault("image/png", {})
            text = " ".join(str(data.get("text/plain", "")).split())
            if not str(meta.get("alt", "")).strip() and text and not DEFAULT_REPR.match(text):
                meta["alt"] = text
            if not str(meta.get("alt", "")).strip():
                missing.append(i)
    return missing


def chapter_title(nb, fallback: str) -> str:
    """The first heading of the notebook, as plain text (the page's title)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return re.sub(r"[*_`]|\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#").strip())
    return fallback


def export(nb, dest: Path) -> Path:
    """Write ``nb`` as one HTML page at ``dest``; the caller's notebook is left as it was."""
    import copy

    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    strip_widget_views(nb)
    add_alt_text(nb)
    exporter = HTMLExporter(template_name="lab", template_file=str(TEMPLATE))
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": chapter_title(nb, dest.stem)}})
    tmp = dest.with_suffix(".html.tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(dest)
    return dest


def write_index(out: Path, pages) -> Path:
    items = "\n".join(f'<li><a href="{html.escape(p.name)}">{html.escape(p.stem.replace("_", " "))}</a></li>' for p in pages)
    index = out / "index.html"
    index.write_text(f"<!doctype html><html lang='en'><meta charset='utf-8'><title>Detectron vs Detectron2</title>"
                     f"<main><h1>Detectron vs Detectron2: the course</h1><ol>{items}</ol></main></html>", encoding="utf-8")
    return index


def build(out: Path, executed=None) -> list:
    """Write one HTML page per notebook plus index.html; ``executed`` maps paths to executed notebooks."""
    out.mkdir(parents=True, exist_ok=True)
    executed = dict(executed or {})
    missing = [p for p in notebook_paths() if p not in executed]
    for path, got in execute_all(missing).items():
        if isinstance(got, Exception):
            raise got
        executed[path] = got[0]
    pages = []
    for path in notebook_paths():
        nb = executed[path]
        errs = error_outputs(nb)
        if errs:
            raise RuntimeError(f"{path.name} has errors: {errs}")
        pages.append(export(nb, out / (path.stem + ".html")))
    write_index(out, pages)
    return pages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "build" / "html"))
    args = ap.parse_args(argv)
    pages = build(Path(args.out))
    print(f"wrote {len(pages)} pages and index.html to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
