"""Wall time to execute the course: each notebook in a fresh kernel, and the whole course as `make html` runs it.

Each notebook gets three rows: the whole run, then that run split in two, so that a chapter's import cost is
visible: (a) the kernel starting plus the first code cell (the chapter's imports and ``setup_notebook``), and
(b) every later cell. The kernel's shutdown belongs to neither part; it is in the whole run.
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
    from tools.notebooks import default_workers, execute_all, notebook_paths

    paths = notebook_paths()
    rows, total = [], 0.0
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
                    f"sum over {len(paths)} notebooks"))
    t0 = time.perf_counter()
    results = execute_all(paths)
    wall = time.perf_counter() - t0
    failed = [p.name for p, r in results.items() if isinstance(r, Exception)]
    workers = default_workers()
    rows.append(Row("notebook execution", f"whole course, {workers} kernels at a time (make html, make test)", wall, "s",
                    "< 60 s", wall < 60.0 and not failed,
                    "failed: " + ", ".join(failed) if failed else "every notebook ran without error"))
    return rows
