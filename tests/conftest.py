"""Shared test set-up: a non-interactive backend, deterministic hypothesis, and a cache of executed notebooks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

settings.register_profile("ci", derandomize=True, max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def load_golden(name: str):
    """A golden file from tests/data (see tests/data/README.md for where each number comes from)."""
    import json

    with open(DATA / name) as f:
        return json.load(f)


_EXECUTED = {}


def executed_notebook(path: Path):
    """Every notebook is executed once per test session (in parallel kernels); later calls reuse the result."""
    from tools.notebooks import execute_all, notebook_paths

    if path not in _EXECUTED:
        todo = [p for p in notebook_paths() if p not in _EXECUTED] or [path]
        _EXECUTED.update(execute_all(todo))
    got = _EXECUTED[path]
    if isinstance(got, Exception):
        raise got
    return got


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
