"""Chapter 10's dashboards: injected mistakes are named, uploads are diagnosed or refused with a message,
the stage bars point at the first divergence, and the bisection finds the knob that was changed."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest

from explainer.conventions import DETECTRON, DETECTRON2
from explainer.course import cache as CC
from explainer.course import compare as CMP
from explainer.course import pipeline as P
from explainer.diagnosis import report as Dx
from explainer.diagnosis.injection import MISTAKES
from explainer.widgets import diagnose as WD

OFF = {**{f"knob_{k}": False for k in P.INFERENCE_KNOBS}, **{m: False for m in MISTAKES}}


@pytest.fixture(scope="module")
def inject_dash():
    d = WD.InjectDashboard()
    yield d
    d.close()


def test_nothing_injected_is_identical(inject_dash):
    inject_dash.update(**OFF)
    assert inject_dash.error is None, inject_dash.error
    assert inject_dash.result["diag"].top.name == "identical"
    assert "identical" in inject_dash.readout_text


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_post_processing_mistake_is_ranked_first(inject_dash, mistake):
    inject_dash.update(**{**OFF, mistake: True})
    assert inject_dash.error is None, inject_dash.error
    cause = MISTAKES[mistake][1]
    diag = inject_dash.result["diag"]
    if cause == "coco_category_ids":
        # the detector has 3 classes, all below COCO's first id gap: ids = labels + 1, indistinguishable
        # from an offset, and the diagnosis says so
        assert diag.top.name == "label_offset" and cause in diag.top.evidence["also_consistent_with"], diag.summary()
        assert "may equally be coco_category_ids" in inject_dash.readout_text
        return
    assert diag.top.name == cause, diag.summary()
    assert f"{cause} (injected)" in inject_dash.readout_text


def test_two_mistakes_are_both_reported(inject_dash):
    inject_dash.update(**{**OFF, "scale": True, "label_offset": True})
    names = inject_dash.result["diag"].names
    assert "scale" in names and "label_offset" in names, names


def test_unconverted_class_order_shows_as_a_label_cause(inject_dash):
    inject_dash.update(**{**OFF, "knob_background_first": True})
    top = inject_dash.result["diag"].top
    # pairs that are surely the same object carry labels shifted by one; the background column floods label 0
    assert top.name == "label_offset" and top.evidence["offset"] == 1, inject_dash.result["diag"].summary()
    assert top.evidence["extra_share_of_one_label"] >= 0.8
    assert "background row read as a class" in inject_dash.readout_text


def test_residual_panels_hold_one_point_per_matched_pair(inject_dash):
    inject_dash.update(**{**OFF, "plus_one": True})
    diag = inject_dash.result["diag"]
    # one point per matched pair and coordinate, in each scatter panel
    assert len(inject_dash.pts.get_offsets()) == len(inject_dash.lvl.get_offsets()) == 4 * diag.n_matched
    # the x2 points (third block) all sit at +1 px
    ys = inject_dash.pts.get_offsets()[:, 1].reshape(4, -1)
    assert np.allclose(ys[2], 1.0, atol=1e-4) and np.allclose(ys[0], 0.0, atol=1e-4)
    # a "+1" puts every x2/y2 difference in the bin that holds 1 px, and no x1/y1 difference there
    data = inject_dash.stairs["dx2"].get_data()
    values, edges = data.values, data.edges
    one = int(np.searchsorted(edges, 1.0, side="right")) - 1  # numpy's bins are [edge_i, edge_i+1)
    assert values[one] >= 0.9 * diag.n_matched
    assert inject_dash.stairs["dx1"].get_data().values[one] == 0


@pytest.fixture(scope="module")
def both_dash():
    d = WD.BothConventionsDashboard()
    yield d
    d.close()


def test_converted_detector_keeps_labels_unconverted_does_not(both_dash):
    both_dash.update(candidate="d2_converted", scene=0)
    conv = CMP.compare_detections(both_dash.result["ref"].detections, both_dash.result["cand"].detections, iou=0.5)
    both_dash.update(candidate="d2_raw")
    raw = CMP.compare_detections(both_dash.result["ref"].detections, both_dash.result["cand"].detections, iou=0.5)
    assert conv["agreement"] > raw["agreement"]
    assert both_dash.result["first"] is not None


@pytest.mark.parametrize("knob", P.INFERENCE_KNOBS)
def test_stage_bars_are_equal_before_the_first_divergence(both_dash, knob):
    both_dash.update(candidate=knob, scene=1)
    r = both_dash.result
    first = r["first"]["stage"] if r["first"] else None
    for d in r["diffs"]:
        if d["stage"] == first:
            assert d["max_diff"] > 1e-4
            break
        assert d["max_diff"] <= 1e-4, (knob, d)
    # the bars say the same: "equal" colour before the first divergence, its own colour at it
    from matplotlib.colors import to_hex

    from explainer.viz.style import STYLE
    colours = [to_hex(b.get_facecolor()) for b in both_dash.bars]
    k = P.STAGES.index(first)
    assert all(c == to_hex(STYLE["agree"]) for c in colours[:k]), (knob, colours)
    assert colours[k] == to_hex(STYLE["difference"])


def _upload_value(name: str, content: bytes):
    return ({"name": name, "type": "application/json", "size": len(content), "content": memoryview(content),
             "last_modified": datetime.datetime(2026, 1, 1)},)


@pytest.fixture()
def upload_dash():
    d = WD.UploadDashboard()
    yield d
    d.close()


def _coco(d):
    return json.dumps(Dx.to_coco_results(d)).encode()


def test_uploaded_files_are_diagnosed(upload_dash):
    ref = CC.detections_over_scenes(DETECTRON)
    cand = {i: {**v, "labels": v["labels"] + 1} for i, v in ref.items()}
    upload_dash.controls["reference"].value = _upload_value("mine.json", _coco(ref))
    upload_dash.controls["candidate"].value = _upload_value("theirs.json", _coco(cand))
    upload_dash.update(source=len(WD.EXAMPLES) - 1)
    assert upload_dash.error is None, upload_dash.error
    assert upload_dash.result["diag"].top.name == "label_offset"
    n = upload_dash.result["n_pairs"]
    assert n == sum(len(v["boxes"]) for v in ref.values())
    assert upload_dash.controls["pair"].max == n - 1


def test_missing_and_broken_uploads_are_explained(upload_dash):
    upload_dash.update(source=len(WD.EXAMPLES) - 1)
    assert upload_dash.error and "upload" in upload_dash.error
    upload_dash.controls["reference"].value = _upload_value("mine.json", b"[{\"image_id\": 0, ")
    upload_dash.controls["candidate"].value = _upload_value("theirs.json", b"[]")
    assert upload_dash.error and "mine.json" in upload_dash.error
    upload_dash.update(source=0)  # a built-in example clears the error
    assert upload_dash.error is None


def test_uploads_are_read_from_memory_without_temporary_files(upload_dash, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise AssertionError("an upload must not need a temporary file")

    for name in ("mkdtemp", "mkstemp", "NamedTemporaryFile", "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, refuse)
    ref = CC.detections_over_scenes(DETECTRON)
    upload_dash.controls["reference"].value = _upload_value("mine.json", _coco(ref))
    upload_dash.controls["candidate"].value = _upload_value("theirs.json", _coco(ref))
    upload_dash.update(source=len(WD.EXAMPLES) - 1)
    assert upload_dash.error is None, upload_dash.error
    assert upload_dash.result["diag"].names == ["identical"]
    # content is parsed, never taken for the path of a file (here: this test file's own path, as JSON)
    upload_dash.controls["candidate"].value = _upload_value("theirs.json", json.dumps(__file__).encode())
    assert upload_dash.error and "theirs.json" in upload_dash.error and "JSON string" in upload_dash.error


def test_pair_browser_draws_the_selected_pair(upload_dash):
    upload_dash.update(source=0, pair=3)
    r = upload_dash.result
    k = int(r["order"][3])
    x1, y1, x2, y2 = r["diag"].pairs["ref_boxes"][k].tolist()
    c1, d1, c2, d2 = r["diag"].pairs["cand_boxes"][k].tolist()
    # on the left, the pair in image pixels; on the right, in the reference box's frame (reference = unit square)
    ref_left = upload_dash.sel_all.get_segments()[0]
    assert ref_left[0].tolist() == pytest.approx([x1, y1]) and ref_left[2].tolist() == pytest.approx([x2, y2])
    unit = upload_dash.pair_ref.get_segments()[0]
    assert unit[0].tolist() == pytest.approx([0, 0]) and unit[2].tolist() == pytest.approx([1, 1])
    cand = upload_dash.pair_cand.get_segments()[0]
    w, h = x2 - x1, y2 - y1
    assert cand[0].tolist() == pytest.approx([(c1 - x1) / w, (d1 - y1) / h])
    assert cand[2].tolist() == pytest.approx([(c2 - x1) / w, (d2 - y1) / h])
    # pairs are browsed largest difference first
    diffs = (r["diag"].pairs["cand_boxes"] - r["diag"].pairs["ref_boxes"]).abs().amax(dim=1)[r["order"]]
    assert bool((diffs[:-1] >= diffs[1:]).all())


def test_bisection_finds_each_hidden_knob():
    d = WD.BisectDashboard()
    try:
        found_any = False
        for i, (label, hidden) in enumerate(WD.HIDDEN):
            d.update(hidden=i)
            assert d.error is None, d.error
            rep = d.result["report"]
            ref = CC.run_scene(0, CC.reference_convention(hidden), converted=True)
            plain = CC.run_scene(0, DETECTRON2, converted=True)
            if CMP.compare_detections(ref.detections, plain.detections)["agreement"] >= 1.0:
                assert "did not single out" in d.readout_text or rep.found is None
                continue  # this knob leaves the detections unchanged: nothing to find
            found_any = True
            assert rep.found is not None and set(rep.found) == set(hidden), (label, rep.summary())
            assert "found the changed knob" in d.readout_text
            pairs = [" + ".join(t["knobs"]) for t in rep.trials if len(t["knobs"]) > 1]
            # the last bar's label: a pair that was tried, or why none was
            if pairs:
                assert d.combo.get_text() in pairs
            else:
                assert len(rep.found) == 1 and d.combo.get_text() == "not needed: one knob is enough"
        assert found_any
    finally:
        d.close()


def test_pair_browser_shows_both_masks_and_their_evidence(upload_dash):
    # the built-in example of Detectron's mask paste against Detectron2's on the course detector: boxes equal,
    # masks differ along their contours; the selected pair's masks are drawn and their numbers are pycocotools'
    from pycocotools import mask as mask_util

    source = next(i for i, (_, kind) in enumerate(WD.EXAMPLES) if kind == "paste")
    upload_dash.update(source=source, pair=0)
    r = upload_dash.result
    assert upload_dash.error is None and r["diag"].top.name == "mask_paste", r["diag"].summary()
    k = int(r["order"][0])
    rle_r, rle_c = r["diag"].masks["ref"][k], r["diag"].masks["cand"][k]
    ev = r["mask"]
    assert ev["iou"] == pytest.approx(mask_util.iou([rle_c], [rle_r], [0])[0, 0], abs=1e-12)
    assert ev["area_difference"] == int(mask_util.area(rle_c)) - int(mask_util.area(rle_r))
    assert upload_dash.pair_masks.get_visible()
    rgba = upload_dash.pair_masks.get_array()
    a, b = ev["ref"].numpy(), ev["cand"].numpy()
    assert rgba.shape[:2] == a.shape and (np.asarray(rgba[..., 3]) > 0).sum() == (a | b).sum()
    text = upload_dash.mask_txt.get_text()
    assert f"mask IoU {ev['iou']:.3f}" in text and f"boundary F {ev['boundary_f']:.3f}" in text
    assert f"area {ev['area_difference']:+d} px" in text
    out = upload_dash.readout.value
    assert f"mask IoU {ev['iou']:.3f}" in out and f"{ev['area_difference']:+d} px" in out
    # browsing to another pair redraws its masks
    upload_dash.update(pair=1)
    k1 = int(r["order"][1])
    assert upload_dash.result["mask"]["iou"] == pytest.approx(
        mask_util.iou([r["diag"].masks["cand"][k1]], [r["diag"].masks["ref"][k1]], [0])[0, 0], abs=1e-12)
