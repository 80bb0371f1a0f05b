"""Wall time to execute the course: each notebook in a fresh kernel, and the whole course as `make html` runs it."""

from __future__ import annotations

import time

from .common import Row


def run(quick: bool = False):
    from tools.notebooks import default_workers, execute, execute_all, notebook_paths

    paths = notebook_paths()
    rows, total = [], 0.0
    for path in paths:
        _, seconds = execute(path)
        total += seconds
        rows.append(Row("notebook execution", path.stem, seconds, "s", "", None, "one fresh kernel, nothing else running"))
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
