"""The layers of the package: computations import neither matplotlib nor ipywidgets, and their public functions are typed.

The computation modules are found at run time (every module of ``explainer`` outside ``widgets/`` and ``viz/``), so a
module added later is checked without editing this file.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import pytest

import explainer

ROOT = Path(__file__).resolve().parents[1]
DRAWING_PACKAGES = ("explainer.widgets", "explainer.viz")
FORBIDDEN = ("matplotlib", "ipywidgets")


def _computation_modules() -> List[str]:
    """``explainer`` and every module below it except the drawing and dashboard packages, found without importing them."""
    names = ["explainer"]
    todo = [(list(explainer.__path__), "explainer.")]
    while todo:
        path, prefix = todo.pop()
        for info in pkgutil.iter_modules(path):
            name = prefix + info.name
            if name in DRAWING_PACKAGES:
                continue
            names.append(name)
            if info.ispkg:
                todo.append(([os.path.join(path[0], info.name)], name + "."))
    return sorted(names)


MODULES = _computation_modules()

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})))
""".format(forbidden=set(FORBIDDEN))


def _loaded_by_import(module: str) -> List[str]:
    """The matplotlib and ipywidgets modules in ``sys.modules`` after importing ``module`` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, module], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"importing {module} failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def loaded() -> Dict[str, List[str]]:
    """Every computation module imported in its own fresh interpreter, a few at a time."""
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        return dict(zip(MODULES, pool.map(_loaded_by_import, MODULES)))


def test_the_computation_modules_are_found():
    # the modules every chapter builds on must be among those checked
    for name in ("explainer.conventions", "explainer.pixels", "explainer.boxes", "explainer.anchors",
                 "explainer.roi_align", "explainer.labels", "explainer.masks", "explainer.training",
                 "explainer.deployment"):
        assert name in MODULES
    assert not any(m.startswith(DRAWING_PACKAGES) for m in MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_importing_a_computation_loads_no_drawing_library(module, loaded):
    assert loaded[module] == [], f"importing {module} loads {loaded[module][:5]}"


def test_the_probe_sees_a_drawing_import():
    # the same probe on a dashboard module does find matplotlib and ipywidgets: the check above can fail
    found = _loaded_by_import("explainer.widgets.pixels")
    assert "matplotlib" in found and "ipywidgets" in found


def _public_functions(mod) -> Dict[str, object]:
    names = getattr(mod, "__all__", None)
    if names is None:  # no __all__: the functions the module defines under a public name
        names = [n for n, v in vars(mod).items() if not n.startswith("_") and getattr(v, "__module__", None) == mod.__name__]
    return {n: getattr(mod, n) for n in names if inspect.isfunction(getattr(mod, n, None))}


def _missing_annotations(fn) -> List[str]:
    sig = inspect.signature(fn)
    missing = [p.name for p in sig.parameters.values() if p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("module", MODULES)
def test_public_functions_are_fully_annotated(module):
    mod = importlib.import_module(module)
    gaps = {name: m for name, fn in _public_functions(mod).items() if (m := _missing_annotations(fn))}
    assert not gaps, f"{module}: public functions without annotations (parameter names, 'return'): {gaps}"


def test_the_annotation_check_sees_a_gap():
    def untyped(x, y: int):
        return x

    def typed(x: int, *args: int, **kw: str) -> int:
        return x

    assert _missing_annotations(untyped) == ["x", "return"]
    assert _missing_annotations(typed) == []
