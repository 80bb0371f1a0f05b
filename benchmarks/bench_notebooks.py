"""Wall time to execute the course: each notebook in a fresh kernel, and the whole course as `make html` runs it.

Each notebook gets three rows: the whole run, then that run split in two, so that a chapter's import cost is
visible: (a) the kernel starting plus the first code cell (the chapter's imports and ``setup_notebook``), and
(b) every later cell. The kernel's shutdown belongs to neither part; it is in the whole run.

Four chapters use the course detector, whose fitted weights are kept on disk between kernels
(:mod:`explainer.course.cache`). Each measurement gets its own empty cache folder, as on a machine that never ran the
course: the first chapter that needs the detector fits it, later ones read it. The whole course is then run a
second time on the filled cache, as every later run on that machine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Tuple

from .common import Row


def _execute_timed(path: Path, timeout: int = 300) -> Tuple[float, float, float]:
    """Run a notebook in a fresh kernel: (whole run, kernel start + first code cell, the later cells), in seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    finished: List[float] = []   # when each code cell finished

    def cell_done(cell, **_) -> None:
        finished.append(time.perf_counter())

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", on_cell_executed=cell_done,
                            resources={"metadata": {"path": str(path.parent)}})
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}   # the notebook chooses its backend
    t0 = time.perf_counter()
    client.execute(env=env)
    whole = time.perf_counter() - t0
    if not finished:
        return whole, whole, 0.0
    return whole, finished[0] - t0, finished[-1] - finished[0]


def run(quick: bool = False):
    import tempfile

    old = os.environ.get("EXPLAINER_CACHE")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as each, \
                tempfile.TemporaryDirectory(prefix="bench-cache-") as course:
            return _run(Path(each), Path(course))
    finally:
        if old is None:
            os.environ.pop("EXPLAINER_CACHE", None)
        else:
            os.environ["EXPLAINER_CACHE"] = old


def _run(each_cache: Path, course_cache: Path):
    """Rows for each notebook (their detector cache: ``each_cache``), then the whole course (``course_cache``)."""
    from tools.notebooks import default_workers, execute_all, notebook_paths

    paths = notebook_paths()
    rows, total = [], 0.0
    os.environ["EXPLAINER_CACHE"] = str(each_cache)
    for path in paths:
        whole, start, rest = _execute_timed(path)
        total += whole
        rows += [
            Row("notebook execution", path.stem, whole, "s", "", None, "one fresh kernel, nothing else running"),
            Row("notebook execution", f"{path.stem}: (a) kernel start + import cell", start, "s", "", None,
                "from starting the kernel to the end of the first code cell"),
            Row("notebook execution", f"{path.stem}: (b) the other cells", rest, "s", "", None,
                "from the end of the first code cell to the end of the last"),
        ]
    rows.append(Row("notebook execution", "whole course, one kernel after another", total, "s", "", None,
                    f"sum over {len(paths)} notebooks; empty cache at the start (the first chapter that needs the "
                    f"course detector fits it)"))
    workers = default_workers()
    os.environ["EXPLAINER_CACHE"] = str(course_cache)
    for cache in ("empty cache: a machine's first run", "cache filled: every later run"):
        t0 = time.perf_counter()
        results = execute_all(paths)
        wall = time.perf_counter() - t0
        failed = [p.name for p, r in results.items() if isinstance(r, Exception)]
        rows.append(Row("notebook execution", f"whole course, {workers} kernels at a time (make html, make test), "
                        f"{cache.split(':')[0]}", wall, "s", "< 60 s", wall < 60.0 and not failed,
                        f"{cache}; " + ("failed: " + ", ".join(failed) if failed else "every notebook ran without error")))
    return rows
