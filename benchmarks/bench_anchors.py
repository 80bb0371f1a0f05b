"""Generating every anchor of an 800 x 1333 image over P2..P6 (about 267,000 boxes), per codebase."""

from __future__ import annotations

from .common import Row, percentiles, time_calls


def run(quick: bool = False):
    from explainer.anchors import all_level_anchors

    rows = []
    for codebase in ("detectron", "detectron2"):
        n = sum(len(a) for a in all_level_anchors((800, 1333), codebase=codebase))
        p = percentiles(time_calls(lambda codebase=codebase: all_level_anchors((800, 1333), codebase=codebase), 10 if quick else 40, warmup=3))
        rows.append(Row("anchors", f"{codebase}: all anchors of 800x1333, P2-P6", p["p50"], "ms", "< 20 ms", p["p95"] < 20.0,
                        f"{n:,} boxes; p95 {p['p95']:.2f} ms over {p['n']} runs (cell anchors + grid shifts)"))
    return rows
