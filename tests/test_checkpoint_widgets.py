"""The audit dashboard: each injected mistake is found with its cause."""

from __future__ import annotations

from explainer.widgets.checkpoint import AuditDashboard


def test_each_mistake_is_reported_with_its_cause():
    d = AuditDashboard()
    d.update(mistake="none")
    assert d.result["res"]["ok"] and d.result["counts"][1:] == [0, 0, 0]
    expected = {"num_classes": "NUM_CLASSES counted differently", "renamed": "renamed between versions",
                "bg_rows": "background box rows not dropped", "agnostic": "class-agnostic head",
                "momentum": "optimizer state"}
    for mistake, cause in expected.items():
        text = d.update(mistake=mistake)
        assert not d.result["res"]["ok"], mistake
        assert cause in text, (mistake, text)
