"""Find and execute the course's notebooks in a fresh kernel (used by the tests, `make html` and `make bench`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"


def notebook_paths() -> List[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def error_outputs(nb) -> List[str]:
    """Every error output of an executed notebook, as 'cell N: Name: message'."""
    out = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}")
            elif o.get("output_type") == "stream" and o.get("name") == "stderr" and "Traceback" in o.get("text", ""):
                out.append(f"cell {i}: traceback on stderr: {o['text'][-500:]}")
    return out


def execute(path: Path, timeout: int = 300) -> Tuple[object, float]:
    """Execute a notebook top to bottom in a fresh kernel; returns (executed notebook, seconds).

    Raises nbclient's CellExecutionError when a cell raises. The kernel runs in the notebook's
    folder, as it does in JupyterLab, with a temporary folder of its own (``TMPDIR``): whatever the kernel left
    there when it exited is listed in the notebook's metadata under ``temp_files_left`` (a test requires it empty),
    then removed.
    """
    import shutil
    import tempfile

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}   # the notebook chooses its backend
    tmp = tempfile.mkdtemp(prefix=f"kernel-{path.stem[:2]}-")
    env["TMPDIR"] = tmp
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        t0 = time.perf_counter()
        client.execute(env=env)
        seconds = time.perf_counter() - t0
        nb.metadata["temp_files_left"] = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*"))
        return nb, seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _execute_or_error(path: Path):
    try:
        return execute(path)
    except Exception as e:  # report, do not lose the other notebooks' results
        return RuntimeError(f"{path.name}: {type(e).__name__}: {e}")


def default_workers() -> int:
    """Kernels at a time: one more than the cores (at most 4), since a starting kernel mostly waits on imports.

    On 2 cores the whole course ran in a median 42 s with 3 kernels against 44 s with 2 (3 runs each, taken in
    turn), its fitted detector read from the cache after the first chapter that needs it.
    """
    return max(1, min(4, (os.cpu_count() or 1) + 1))


def execute_all(paths: List[Path], workers: int = 0) -> Dict[Path, object]:
    """Execute notebooks, each in its own fresh kernel, ``workers`` at a time (default: :func:`default_workers`).

    Returns {path: (notebook, seconds)} or {path: exception}. Kernels start in parallel because most of
    a chapter's run time is its kernel starting and importing torch, which does not use a second core.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = workers or default_workers()
    if workers == 1 or len(paths) < 2:
        return {p: _execute_or_error(p) for p in paths}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        results = list(pool.map(_execute_or_error, paths))
    return dict(zip(paths, results))


def strip_widget_views(nb) -> None:
    """Drop live-widget views from outputs that also carry a static image (for HTML without a kernel)."""
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data")
            if data and "application/vnd.jupyter.widget-view+json" in data and (
                "image/png" in data or "text/html" in data
            ):
                del data["application/vnd.jupyter.widget-view+json"]
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("temp_files_left", None)


def dirty_cells(nb: dict) -> List[int]:
    """Indices of code cells that carry outputs or an execution count (a notebook is committed without them)."""
    return [i for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]


def clear_outputs(path: Path) -> bool:
    """Remove every output and execution count from a notebook file, in place; True if it changed."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    if not dirty_cells(nb):
        return False
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, str(path))
    return True


def main(argv: List[str] | None = None) -> int:
    """`python -m tools.notebooks --check-clean` (exit 1 naming dirty notebooks) or `--clear` (clear them)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m tools.notebooks",
                                     description="Keep the course's notebooks committed without outputs.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check-clean", action="store_true", help="fail, naming each notebook that carries outputs")
    group.add_argument("--clear", action="store_true", help="remove outputs and execution counts in place")
    args = parser.parse_args(argv)
    if args.clear:
        for path in notebook_paths():
            if clear_outputs(path):
                print(f"cleared {path.name}")
        return 0
    dirty = {p.name: dirty_cells(json.loads(p.read_text(encoding="utf-8"))) for p in notebook_paths()}
    dirty = {name: cells for name, cells in dirty.items() if cells}
    for name, cells in dirty.items():
        print(f"{name}: code cells {cells} carry outputs; run `python -m tools.notebooks --clear`")
    return 1 if dirty else 0


if __name__ == "__main__":
    raise SystemExit(main())
