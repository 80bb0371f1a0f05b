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


def test_mistakes_that_load_or_need_a_look():
    d = AuditDashboard()
    text = d.update(mistake="mask0")
    assert not d.result["res"]["ok"] and "0 channels" in text and "stays random" in text
    text = d.update(mistake="c4_rows")
    # the shapes match, so everything loads; only the warning says that the rows may be in the other order
    assert d.result["res"]["ok"] and d.result["counts"][1:] == [0, 0, 0]
    assert "warning (loads)" in text and "12 of 15" in text and "0 of 15 moved" in text
