"""Run every benchmark, print one table and write BENCHMARKS.md.

    python -m benchmarks.run            # everything
    python -m benchmarks.run --only boxes,dashboards
    python -m benchmarks.run --quick    # fewer repetitions, for a smoke test (does not write BENCHMARKS.md)
    python -m benchmarks.run --only browser --merge   # re-measure some, keep the other rows of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import platform
import re
import sys
import time
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent


def discover() -> List[str]:
    import benchmarks

    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))


def machine() -> str:
    import torch

    return (f"{platform.platform()}; Python {platform.python_version()}; torch {torch.__version__}; "
            f"{os.cpu_count()} CPU cores; torch threads {torch.get_num_threads()}")


def render(rows, header_note: str) -> str:
    head = ["section", "measure", "value", "target", "met", "detail"]
    lines = ["# Benchmarks", "", header_note, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r.cells()) + " |")
    return "\n".join(lines) + "\n"


def merge(old_text: str, rows, header_note: str, partial_sections=()) -> str:
    """The table of ``rows`` after the rows of ``old_text`` (a BENCHMARKS.md) whose section none of ``rows`` has.

    A section in ``partial_sections`` was measured only in part (the browser benchmark restricted to some chapters):
    of its old rows, only those that ``rows`` measure again are replaced."""
    sections = {r.section for r in rows}
    measured = {(r.section, r.name) for r in rows}
    lines = old_text.splitlines()
    kept = [ln for ln in lines[lines.index("|---|---|---|---|---|---|") + 1:] if ln.startswith("| ")] \
        if "|---|---|---|---|---|---|" in lines else []

    def stays(line: str) -> bool:
        section, name = (line[2:].split(" | ") + [""])[:2]
        if section in partial_sections:
            return (section, name.replace("\\|", "|")) not in measured
        return section not in sections

    kept = [ln for ln in kept if stays(ln)]
    new = render(rows, header_note).rstrip("\n").splitlines()
    head, body = new[:new.index("|---|---|---|---|---|---|") + 1], new[new.index("|---|---|---|---|---|---|") + 1:]
    return "\n".join(head + kept + body) + "\n"


def merged_note(old_text: str, names, today: str, machine_text: str, seconds: float) -> str:
    """The first line of a merged BENCHMARKS.md: when the whole table was measured, and every section measured
    again today (those of earlier merges the same day, then ``names``)."""
    when = re.search(r"^Measured by .*? on (\d{4}-\d{2}-\d{2})", old_text, re.M)
    before = re.search(r"^Measured by .*?; the rows of (.+?) re-measured on (\d{4}-\d{2}-\d{2})", old_text, re.M)
    same_day = before.group(1).split(", ") if before and before.group(2) == today else []
    again = same_day + [n for n in names if n not in same_day]
    return (f"Measured by `make bench` on {when.group(1) if when else 'an earlier date'}; the rows of "
            f"{', '.join(again)} re-measured on {today} ({machine_text}), the last {', '.join(names)} in "
            f"{seconds:.0f} s with `python -m benchmarks.run --only {','.join(names)} --merge`.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated benchmark names: " + ", ".join(discover()))
    ap.add_argument("--quick", action="store_true", help="fewer repetitions; prints but does not write BENCHMARKS.md")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of the other benchmarks from the existing file; replace only those run now")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("module://ipympl.backend_nbagg")  # the backend JupyterLab uses
    names = [n for n in args.only.split(",") if n] or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {discover()}")
    rows = []
    t0 = time.time()
    for n in names:
        mod = importlib.import_module(f"benchmarks.bench_{n}")
        t = time.time()
        got = mod.run(quick=args.quick)
        print(f"[{n}] {len(got)} rows in {time.time() - t:.1f} s", file=sys.stderr, flush=True)
        rows.extend(got)
    about = ("Dashboard latency is a control change to a finished draw on the Agg canvas (what ipympl renders before "
             "it sends a PNG); the naive pattern builds a new figure per change. Browser latency is a reader's input "
             "event in Chromium to the new figure painted on the page, in Voila (kernel, ipympl and widget messages "
             "included).")
    note = f"Measured by `make bench` on {time.strftime('%Y-%m-%d')} ({machine()}), in {time.time() - t0:.0f} s. {about}"
    out = Path(args.out)
    if args.merge and out.is_file():
        old = out.read_text()
        note = merged_note(old, names, time.strftime('%Y-%m-%d'), machine(), time.time() - t0) + f" {about}"
        partial = {r.section for n in names for r in rows
                   if getattr(importlib.import_module(f"benchmarks.bench_{n}"), "partial", lambda: False)()}
        table = merge(old, rows, note, partial_sections=partial)
    else:
        table = render(rows, note)
    print(table)
    missed = [r for r in rows if r.ok is False]
    if not args.quick:
        tmp = Path(args.out).with_suffix(".md.tmp")
        tmp.write_text(table)
        tmp.replace(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    if missed:
        print(f"{len(missed)} target(s) missed: " + "; ".join(r.name for r in missed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
