"""Dashboards driven with values their controls cannot hold: a string or None for a slider, a checkbox or a dropdown,
NaN for a float slider. Each is refused with a message in the read-out naming the control and what it takes; no
exception escapes, the controls keep their values and the figure keeps the last drawing. Temporary folders a
dashboard makes are removed when it is closed, or when the process exits.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pytest

from explainer.widgets import load_all

DASHBOARDS = load_all()
ROOT = Path(__file__).resolve().parent.parent
NUMBER = (widgets.FloatSlider, widgets.IntSlider, widgets.FloatLogSlider, widgets.FloatText, widgets.IntText,
          widgets.BoundedFloatText, widgets.BoundedIntText)


def _pixels(dash) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(dash.png())).convert("RGB")).astype(np.int16)


def _bad_values(w):
    if isinstance(w, (widgets.Checkbox, widgets.ToggleButton)):
        return ["True", None, 1]
    if isinstance(w, (widgets.FloatSlider, widgets.FloatLogSlider, widgets.FloatText, widgets.BoundedFloatText)):
        return ["0.5", None, math.nan, math.inf]
    if isinstance(w, NUMBER):
        return ["1", None, math.nan, 0.5 + getattr(w, "min", 0)]
    if hasattr(w, "options"):
        return [None, "no such option", object()]
    return []


@pytest.fixture(params=sorted(DASHBOARDS), ids=str)
def dash(request):
    d = DASHBOARDS[request.param]()
    yield d
    d.close()


def test_values_a_control_cannot_hold_are_refused_in_the_readout(dash):
    before_values = {k: w.value for k, w in dash.controls.items()}
    before_pixels = _pixels(dash)
    tried = 0
    for name, w in dash.controls.items():
        if isinstance(w, widgets.FileUpload):
            continue
        for bad in _bad_values(w):
            dash.update(**{name: bad})     # never raises
            tried += 1
            assert dash.error and name in dash.error, (name, bad, dash.error)
            assert name in dash.readout_text and "last valid setting" in dash.readout_text
            assert "TraitError" not in dash.error and "TypeError" not in dash.error
            assert {k: c.value for k, c in dash.controls.items()} == before_values
    assert tried
    assert np.array_equal(_pixels(dash), before_pixels), "the figure must keep the last drawing"
    # a valid setting afterwards clears the message
    dash.update(**dash.bench_states()[-1])
    assert dash.error is None


@pytest.mark.parametrize("name, control", [("AnchorGridDashboard", "offset"), ("SmoothL1Dashboard", "residual"),
                                           ("SmoothL1Dashboard", "beta")])
def test_nan_in_a_float_control_is_named(name, control):
    d = DASHBOARDS[name]()
    try:
        text = d.readout_text
        d.update(**{control: math.nan})
        assert d.error is not None and control in d.error and "finite" in d.error
        assert d.controls[control].value == d.controls[control].value   # not NaN
        d.update(**{control: d.controls[control].value})
        assert d.error is None and d.readout_text == text
    finally:
        d.close()


def test_temporary_folders_are_removed_on_close():
    d = DASHBOARDS["SmoothL1Dashboard"]()
    folder = Path(d.temporary_folder())
    (folder / "upload.json").write_text("[]")
    assert folder.is_dir()
    d.close()
    assert not folder.exists()


def test_temporary_folders_are_removed_when_the_kernel_exits(tmp_path):
    script = textwrap.dedent("""
        from explainer.widgets import load_all
        d = load_all()["SmoothL1Dashboard"]()
        folder = d.temporary_folder()
        open(folder + "/upload.json", "w").write("[]")
        print(folder)
    """)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.strip().splitlines()[-1])
    assert folder.name.startswith("explainer-dashboard-") and not folder.exists()
