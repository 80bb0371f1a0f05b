"""Update latency of every registered dashboard against re-creating its figure."""

from __future__ import annotations

from .common import bench_dashboard


def run(quick: bool = False):
    from explainer.widgets import load_all

    rows = []
    for _name, cls in sorted(load_all().items()):
        rows += bench_dashboard(cls, n_updates=20 if quick else 60, n_naive=4 if quick else 12)
    return rows
