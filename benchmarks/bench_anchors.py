"""Generating every anchor of an 800 x 1333 image over P2..P6 (about 267,000 boxes), per codebase."""

from __future__ import annotations

from .common import Row, percentiles, time_calls


def run(quick: bool = False):
    from explainer.anchors import all_level_anchors
    from explainer.conventions import DETECTRON, DETECTRON2

    rows = []
    for conv in (DETECTRON, DETECTRON2):
        n = sum(len(a) for a in all_level_anchors((800, 1333), convention=conv))
        p = percentiles(time_calls(lambda conv=conv: all_level_anchors((800, 1333), convention=conv), 10 if quick else 40, warmup=3))
        rows.append(Row("anchors", f"{conv.name}: all anchors of 800x1333, P2-P6", p["p50"], "ms", "< 20 ms", p["p95"] < 20.0,
                        f"{n:,} boxes; p95 {p['p95']:.2f} ms over {p['n']} runs (cell anchors + grid shifts)"))
    return rows
