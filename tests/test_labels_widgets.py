"""Chapter 5 dashboards: the read-outs state what the package computes."""

from __future__ import annotations

from explainer.widgets.labels import (
    BoxRegressorRowsDashboard,
    LoadedHeadDashboard,
    LogitsOrderDashboard,
    PredictorRowsDashboard,
)


def test_predictor_rows_follow_a_class():
    d = PredictorRowsDashboard()
    text = d.update(param="bbox_pred", cls=79)
    row = next(line for line in text.splitlines() if line.startswith("rows of 'toothbrush'"))
    assert row.split()[-2:] == ["320..323", "316..319"]
    assert "identical after the move" in text
    assert d.result["n_b"] == 324 and d.result["n_a"] == 320


def test_logits_read_in_the_wrong_convention():
    d = LogitsOrderDashboard()
    text = d.update(true_class=2, confidence=4)  # car
    assert "car  car" in text and "motorcycle  bicycle" in text
    assert "rolled by one: yes" in text


def test_loaded_head_three_ways():
    d = LoadedHeadDashboard()
    d.update(mode="converted")
    assert d.result["acc"] > 0.95
    d.update(mode="naive")
    assert d.result["acc"] < 0.05 and d.result["neighbour"] > 0.95 and d.result["bg_as_class0"] > 0.95
    d.update(mode="num_classes_off_by_one")
    assert d.result["n_out"] == 7 and d.result["acc"] < 0.5


def test_box_regressor_uses_the_neighbours_rows():
    d = BoxRegressorRowsDashboard()
    d.update(cls=0)
    assert "person' decoded with the rows of 'background" in d.note.get_text()
    d.update(cls=3)
    assert d.result["used"] == "car" and d.result["iou"] < 0.99
