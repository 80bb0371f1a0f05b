"""Timing helpers shared by every benchmark module.

A benchmark module is ``benchmarks/bench_<topic>.py`` with ``run(quick=False) -> list[Row]``;
``python -m benchmarks.run`` discovers them, prints one table and writes ``BENCHMARKS.md``.
Targets are checked here and reported in the table, never asserted in the tests.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional


@dataclass
class Row:
    section: str
    name: str
    value: float
    unit: str
    target: str = ""
    ok: Optional[bool] = None
    detail: str = ""

    def cells(self) -> List[str]:
        v = f"{self.value:.3g}" if abs(self.value) < 1000 else f"{self.value:,.0f}"
        status = "" if self.ok is None else ("yes" if self.ok else "**NO**")
        return [self.section, self.name, f"{v} {self.unit}", self.target, status, self.detail]


def percentiles(samples_s: List[float]) -> Dict[str, float]:
    """p50 and p95 (in milliseconds) of a list of durations in seconds."""
    ms = sorted(s * 1000 for s in samples_s)
    def pct(p):
        k = (len(ms) - 1) * p
        lo, hi = int(k), min(int(k) + 1, len(ms) - 1)
        return ms[lo] + (ms[hi] - ms[lo]) * (k - lo)
    return {"p50": pct(0.5), "p95": pct(0.95), "mean": statistics.fmean(ms), "n": len(ms)}


def time_calls(fn: Callable[[], Any], n: int, warmup: int = 3) -> List[float]:
    """Durations (s) of ``n`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    gc.collect()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def best_of(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> float:
    """The fastest of ``repeat`` runs, in seconds (robust against a busy machine)."""
    return min(time_calls(fn, repeat, warmup))


def bench_dashboard(cls, n_updates: int = 60, n_naive: int = 12) -> List[Row]:
    """Update latency of a dashboard (control change to finished Agg draw) against re-creating it.

    The in-place pattern: ``dash.update(**state)`` then an Agg draw of the figure's canvas.
    The naive pattern: construct a new dashboard with that state (a new figure), draw it, close it.
    Run under ipympl's backend, as in JupyterLab; the PNG that ipympl then encodes and sends to the
    browser is measured separately (``png_ms``) because it depends on the figure's pixel size only.
    """
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    def agg_draw(fig):
        FigureCanvasAgg.draw(fig.canvas)

    dash = cls()
    states = dash.bench_states()
    if len(states) < 2:
        raise ValueError(f"{cls.__name__}.bench_states() must give at least two settings")
    i = [0]

    def one_update():
        s = states[i[0] % len(states)]
        i[0] += 1
        dash.update(**s)
        agg_draw(dash.fig)

    samples = time_calls(one_update, n_updates, warmup=len(states))
    errors = dash.error
    png = percentiles(time_calls(dash.png, 5, warmup=1))
    dash.close()

    j = [0]

    def one_naive():
        s = states[j[0] % len(states)]
        j[0] += 1
        d = cls(**s)
        agg_draw(d.fig)
        d.close()

    naive = time_calls(one_naive, n_naive, warmup=1)
    plt.close("all")
    p, q = percentiles(samples), percentiles(naive)
    speedup = q["p50"] / p["p50"] if p["p50"] > 0 else float("inf")
    name = cls.__name__
    detail = (f"p50 {p['p50']:.1f} ms over {p['n']} updates; naive re-create p50 {q['p50']:.1f} ms, "
              f"p95 {q['p95']:.1f} ms; PNG encoding of the whole figure {png['p50']:.1f} ms")
    if errors:
        detail += f"; last state gave a read-out message: {errors}"
    return [
        Row("dashboard update", f"{name}: p95 update", p["p95"], "ms", "<= 50 ms", p["p95"] <= 50.0, detail),
        Row("dashboard update", f"{name}: speed-up vs re-creating the figure", speedup, "x", ">= 5x", speedup >= 5.0,
            "ratio of p50 latencies"),
    ]
