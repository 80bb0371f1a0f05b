"""Dashboards that compute with one torch thread (``Dashboard.torch_threads = 1``) show the same numbers as with two.

The setting is a speed choice (small operations then skip the wait for a second thread); it must not change a
number. For every state the dashboard is benchmarked with, the result computed with one thread and with two is
compared array by array, and the read-out text character by character.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainer.widgets import load_all

SINGLE = sorted(name for name, cls in load_all().items() if cls.torch_threads == 1)


def _flat(x, out: list) -> list:
    if isinstance(x, dict):
        for k in sorted(x, key=str):
            _flat(x[k], out)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _flat(v, out)
    elif isinstance(x, torch.Tensor):
        out.append(x.detach().numpy())
    else:
        out.append(np.asarray(x) if isinstance(x, np.ndarray) else x)
    return out


def test_some_dashboards_compute_single_threaded():
    assert {"CropAndResizeDashboard", "PredictorRowsDashboard", "TopKDashboard"} <= set(SINGLE)


@pytest.mark.parametrize("name", SINGLE)
def test_one_thread_gives_the_same_numbers_as_two(name):
    dash = load_all()[name]()
    before = torch.get_num_threads()
    try:
        for state in dash.bench_states():
            dash.update(**state)
            assert dash.error is None, dash.error
            assert torch.get_num_threads() == before  # the setting is restored after each compute
            one_text = dash.readout_text
            one = _flat(dash.result, [])
            torch.set_num_threads(2)
            two_result = dash.compute(**dash.params)
            torch.set_num_threads(before)
            two = _flat(two_result, [])
            assert len(one) == len(two)
            for a, b in zip(one, two):
                if isinstance(a, np.ndarray):
                    assert a.dtype == b.dtype and a.shape == b.shape
                    assert np.array_equal(a, b, equal_nan=True), f"{name} {state}: arrays differ"
                else:
                    assert a == b or (a != a and b != b), f"{name} {state}: {a!r} != {b!r}"
            assert dash.describe(two_result) == dash.describe(dash.result)
            assert one_text
    finally:
        torch.set_num_threads(before)
        dash.close()
