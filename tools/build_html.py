"""`make html`: execute every notebook and write a static HTML course to build/html/.

Figures are embedded as PNG images, so the pages work without a kernel (a dashboard shows the
figure of its default setting and its read-out).
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

from tools.notebooks import ROOT, error_outputs, execute_all, notebook_paths, strip_widget_views


def export(nb, dest: Path) -> Path:
    """Write ``nb`` as one HTML page at ``dest``; the caller's notebook is left as it was."""
    import copy

    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    strip_widget_views(nb)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    tmp = dest.with_suffix(".html.tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(dest)
    return dest


def write_index(out: Path, pages) -> Path:
    items = "\n".join(f'<li><a href="{html.escape(p.name)}">{html.escape(p.stem.replace("_", " "))}</a></li>' for p in pages)
    index = out / "index.html"
    index.write_text(f"<!doctype html><meta charset='utf-8'><title>Detectron vs Detectron2</title>"
                     f"<h1>Detectron vs Detectron2: the course</h1><ol>{items}</ol>", encoding="utf-8")
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
