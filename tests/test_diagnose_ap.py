"""What each cause costs in AP: ``diagnose(..., gt=...)`` and ``python -m explainer diagnose --gt``.

Ground truth, a reference and candidates are built here: the ground truth is random boxes of every COCO size
(small, medium and large objects) over several images; the reference is that ground truth found with a little
box noise, some misses and some false detections; each candidate is the reference with causes injected by
:func:`explainer.diagnosis.inject` at known severities. Every AP is checked against pycocotools' ``COCOeval``,
called directly here on COCO result lists written by the test (the golden values' origin: pycocotools 2.0).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from explainer.cli import main as cli
from explainer.diagnosis import cost as DCost
from explainer.diagnosis import report as Dx

H, W = 240, 320
CATS = [1, 2, 3, 4, 5]
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: Undoing every injected cause gives back the reference's AP within this (0.5 AP points, as a fraction).
RECOVERED = 0.005


def scene(seed: int = 0, n_images: int = 24, masks: bool = False):
    """Ground truth (a COCO annotations dict) and a reference ({image id: {"boxes", "scores", "labels"[, "masks"]}}).

    Objects are 6..160 px wide (COCO's small, medium and large all present); the reference finds 90% of them with
    N(0, 0.04 x size) box noise and adds one false detection per image."""
    rng = np.random.default_rng(seed)
    images, anns, ref = [], [], {}
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    for k in range(n_images):
        n = int(rng.integers(6, 12))
        bw = np.exp(rng.uniform(np.log(6), np.log(160), n))
        bh = np.clip(bw * np.exp(rng.uniform(-0.4, 0.4, n)), 5, H - 2)
        x1, y1 = rng.uniform(0, W - bw), rng.uniform(0, H - bh)
        lab = rng.choice(CATS, n)
        gt = np.stack([x1, y1, x1 + bw, y1 + bh], 1)
        images.append({"id": k + 1, "height": H, "width": W, "file_name": f"{k + 1:04d}.png"})
        for i in range(n):
            a = {"image_id": k + 1, "category_id": int(lab[i]), "bbox": [x1[i], y1[i], bw[i], bh[i]],
                 "area": float(bw[i] * bh[i]), "iscrowd": 0, "id": len(anns) + 1}
            if masks:
                m = ellipse(gt[i], xx, yy)
                rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
                a["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
                a["area"] = float(m.sum())
            anns.append(a)
        found = rng.uniform(0, 1, n) < 0.9
        size = np.sqrt(bw * bh)[:, None]
        boxes = gt + rng.normal(0, 1, gt.shape) * 0.04 * size
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 2)
        fx, fy = rng.uniform(0, W - 40), rng.uniform(0, H - 40)
        boxes = np.concatenate([boxes[found], [[fx, fy, fx + 30, fy + 30]]])
        d = {"boxes": boxes, "scores": np.concatenate([rng.uniform(0.3, 1.0, int(found.sum())), [0.35]]),
             "labels": np.concatenate([lab[found], [rng.choice(CATS)]])}
        if masks:
            d["masks"] = np.stack([ellipse(b, xx, yy) for b in boxes])
        ref[k + 1] = d
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"class {c}"} for c in CATS]}, ref


def ellipse(b, xx, yy):
    cx, cy, rx, ry = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) / 2, (b[3] - b[1]) / 2
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def results(side, masks=False):
    """A COCO result list written here, independently of the package's writer."""
    out = []
    for k, d in side.items():
        boxes = d.boxes.tolist() if hasattr(d, "boxes") else np.asarray(d["boxes"]).tolist()
        scores = d.scores.tolist() if hasattr(d, "scores") else np.asarray(d["scores"]).tolist()
        labels = d.labels.tolist() if hasattr(d, "labels") else np.asarray(d["labels"]).tolist()
        ms = (d.masks if hasattr(d, "masks") else d.get("masks")) if masks else None
        for i, (b, s, l) in enumerate(zip(boxes, scores, labels)):
            r = {"image_id": int(k), "category_id": int(l), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                 "score": float(s)}
            if ms is not None:
                rle = mask_util.encode(np.asfortranarray(np.asarray(ms[i]).astype(np.uint8)))
                r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            out.append(r)
    return out


def cocoeval_stats(gt, res, task="bbox"):
    """pycocotools called directly: COCOeval's summarize() stats 0..5 (AP, AP50, AP75, small, medium, large)."""
    g = COCO()
    g.dataset = json.loads(json.dumps(gt))
    g.createIndex()
    E = COCOeval(g, g.loadRes(res), task)
    E.evaluate()
    E.accumulate()
    E.summarize()
    return dict(zip(METRICS, E.stats[:6].tolist()))


def assert_metrics_equal(ours, theirs):
    for m in METRICS:
        assert ours[m] is not None and math.isclose(ours[m], theirs[m], abs_tol=1e-12), (m, ours[m], theirs[m])


@pytest.fixture(scope="module")
def truth():
    return scene(0)


# ---------------------------------------------------------------------------------------------------------------
# the numbers are COCOeval's
# ---------------------------------------------------------------------------------------------------------------
def test_reference_candidate_and_fixed_ap_equal_cocoeval_called_directly(truth):
    gt, ref = truth
    cand = Dx.inject(Dx.inject(ref, "half_pixel_shift", shift=0.5), "label_offset", offset=1)
    d = Dx.diagnose(ref, cand, gt=gt)
    assert {"half_pixel_shift", "label_offset"} <= set(d.names)
    tc = d.ap.tasks["bbox"]
    assert_metrics_equal(tc.metrics("reference"), cocoeval_stats(gt, results(ref)))
    assert_metrics_equal(tc.metrics("candidate"), cocoeval_stats(gt, results(cand.images)))
    # each cause undone by hand from what was injected, evaluated by pycocotools
    labels_back = {k: {"boxes": v.boxes.numpy(), "scores": v.scores.numpy(), "labels": v.labels.numpy() - 1}
                   for k, v in cand.images.items()}
    assert_metrics_equal(tc.metrics("label_offset"), cocoeval_stats(gt, results(labels_back)))
    shift_back = {k: {"boxes": v.boxes.numpy() - 0.5, "scores": v.scores.numpy(), "labels": v.labels.numpy()}
                  for k, v in cand.images.items()}
    theirs = cocoeval_stats(gt, results(shift_back))
    for m in METRICS:
        assert math.isclose(tc.metrics("half_pixel_shift")[m], theirs[m], abs_tol=1e-9), m
    # a candidate whose every label is off evaluates to 0; undoing the label gives back all but the half pixel
    assert tc.metrics("candidate")["AP"] < 0.01
    assert tc.dap()["label_offset"] > 0.5 and abs(tc.dap()["half_pixel_shift"]) < 0.001
    assert abs(tc.metrics("all_fixed")["AP"] - tc.metrics("reference")["AP"]) <= RECOVERED


def test_masks_are_measured_as_segm_and_equal_cocoeval():
    gt, ref = scene(3, n_images=8, masks=True)
    cand = Dx.inject(ref, "mask_paste", grow=1)
    d = Dx.diagnose(ref, cand, gt=gt)
    assert "mask_paste" in d.names, d.summary()
    assert set(d.ap.tasks) == {"bbox", "segm"}
    seg = d.ap.tasks["segm"]
    assert_metrics_equal(seg.metrics("reference"), cocoeval_stats(gt, results(ref, masks=True), "segm"))
    assert_metrics_equal(seg.metrics("candidate"), cocoeval_stats(gt, results(cand.images, masks=True), "segm"))
    # a one-pixel dilation costs segm AP and not box AP; the one-pixel erosion that undoes it gives it back
    assert seg.dap()["mask_paste"] > 0.02
    assert abs(seg.metrics("all_fixed")["AP"] - seg.metrics("reference")["AP"]) <= RECOVERED
    box = d.ap.tasks["bbox"]
    assert box.metrics("candidate") == box.metrics("reference") and box.dap()["mask_paste"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# undoing every injected cause gives the reference's AP back
# ---------------------------------------------------------------------------------------------------------------
INJECTED = {
    "plus_one and a rescale": [("scale", {"factor": 0.8}), ("plus_one", {})],
    "translation": [("translation", {"dx": 6.0, "dy": -4.0})],
    "anisotropic scale": [("anisotropic_scale", {"sx": 0.75, "sy": 4 / 3})],
    "xyxy as xywh": [("xywh_as_xyxy", {})],
    "half pixel and labels + 1": [("half_pixel_shift", {"shift": -0.5}), ("label_offset", {"offset": 1})],
    "class order permuted": [("label_permutation", {"mapping": {1: 3, 3: 5, 5: 1}})],
    "flip off by one on some images": [("flip_off_by_one", {"field": "boxes", "images": [1, 2, 3, 4, 5, 6]})],
}


@pytest.mark.parametrize("case", list(INJECTED))
def test_undoing_every_found_cause_recovers_the_reference_ap(truth, case):
    gt, ref = truth
    cand = ref
    for cause, params in INJECTED[case]:
        cand = Dx.inject(cand, cause, **params)
    d = Dx.diagnose(ref, cand, gt=gt)
    injected = {c for c, _ in INJECTED[case]}
    assert injected <= set(d.names), d.summary()
    tc = d.ap.tasks["bbox"]
    assert tc.metrics("reference")["AP"] - tc.metrics("candidate")["AP"] > 0.02, "the injection must cost AP"
    assert abs(tc.metrics("all_fixed")["AP"] - tc.metrics("reference")["AP"]) <= RECOVERED, d.summary()


def test_coco_category_ids_written_for_contiguous_labels_are_mapped_back():
    gt, ref = scene(5)
    ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14]   # COCO's first category ids (from the 2017 annotations)
    for d in ref.values():
        d["labels"] = d["labels"] + 7          # contiguous labels 8..12 in the reference and the ground truth
    for a in gt["annotations"]:
        a["category_id"] += 7
    gt["categories"] = [{"id": c + 7, "name": f"class {c + 7}"} for c in CATS]
    cand = Dx.inject(ref, "coco_category_ids")   # across COCO's first gap (12): ids 9, 10, 11, 13, 14
    assert sorted({int(v) for d in cand.images.values() for v in d.labels}) == ids[8:13]
    d = Dx.diagnose(ref, cand, gt=gt)
    tc = d.ap.tasks["bbox"]
    assert tc.metrics("candidate")["AP"] < 0.1
    assert abs(tc.metrics("all_fixed")["AP"] - tc.metrics("reference")["AP"]) <= RECOVERED, d.summary()


# ---------------------------------------------------------------------------------------------------------------
# dAP follows the injected severity
# ---------------------------------------------------------------------------------------------------------------
def test_dap_grows_with_the_injected_shift(truth):
    gt, ref = truth
    daps = []
    for dx in (1.5, 4.0, 10.0):
        d = Dx.diagnose(ref, Dx.inject(ref, "translation", dx=dx, dy=dx), gt=gt)
        daps.append(d.ap.tasks["bbox"].dap()["translation"])
    assert 0 < daps[0] < daps[1] < daps[2], daps


def test_causes_found_together_are_ranked_by_the_ap_they_cost(truth):
    gt, ref = truth
    # two of five classes swapped (about 40% of the objects) and a 1 px shift of every box
    cand = Dx.inject(Dx.inject(ref, "label_permutation", mapping={2: 4, 4: 2}), "translation", dx=1.0, dy=1.0)
    d = Dx.diagnose(ref, cand, gt=gt)
    dap = d.ap.tasks["bbox"].dap()
    assert list(dap) == ["label_permutation", "translation"], (dap, d.summary())
    assert dap["label_permutation"] > dap["translation"] > 0


def test_one_pixel_costs_small_objects_more_than_large_ones(truth):
    gt, ref = truth
    d = Dx.diagnose(ref, Dx.inject(ref, "plus_one", amount=1.0), gt=gt)
    size = d.ap.tasks["bbox"].by_size()["plus_one"]
    assert size["small"] > size["medium"] > size["large"] >= 0, size


# ---------------------------------------------------------------------------------------------------------------
# breakdowns
# ---------------------------------------------------------------------------------------------------------------
def test_categories_that_lose_the_most_come_first(truth):
    gt, ref = truth
    d = Dx.diagnose(ref, Dx.inject(ref, "label_permutation", mapping={2: 4, 4: 2}), gt=gt)
    rows = d.ap.tasks["bbox"].by_category()
    assert {r["category_id"] for r in rows[:2]} == {2, 4}, rows
    assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    for r in rows:
        if r["category_id"] in (2, 4):
            assert r["candidate"] == 0.0 and r["dAP"]["label_permutation"] == pytest.approx(r["reference"])
        else:
            assert r["loss"] == 0.0 and r["dAP"]["label_permutation"] == 0.0


def test_share_explained_and_the_unexplained_rest(truth):
    gt, ref = truth
    cand = Dx.inject(ref, "translation", dx=8.0, dy=8.0).images
    rng = np.random.default_rng(1)
    dropped = {}
    for k, v in cand.items():   # a third of the detections lost, whatever their score: no cause explains that
        dropped[k] = v.take(torch.from_numpy(rng.uniform(0, 1, len(v)) > 0.33))
    d = Dx.diagnose(ref, Dx.Detections(dropped), gt=gt)
    tc = d.ap.tasks["bbox"]
    e = tc.explained()
    ap = {v: tc.metrics(v)["AP"] for v in ("reference", "candidate", "all_fixed")}
    assert e["gap"] == pytest.approx(ap["reference"] - ap["candidate"])
    assert e["recovered"] == pytest.approx(ap["all_fixed"] - ap["candidate"])
    assert 0.2 < e["share"] < 0.95 and e["unexplained"] > 0.02, (e, d.summary())
    assert e["unexplained"] == pytest.approx(e["gap"] - e["recovered"])


def test_a_cause_that_cannot_be_undone_says_why(truth):
    gt, ref = truth
    d = Dx.diagnose(ref, Dx.inject(ref, "threshold_or_topk", score_threshold=0.7), gt=gt)
    assert "threshold_or_topk" in d.names
    tc = d.ap.tasks["bbox"]
    assert "threshold_or_topk" not in tc.dap() and "never written" in tc.cannot_undo["threshold_or_topk"]
    assert tc.metrics("all_fixed") == tc.metrics("candidate")
    assert "threshold_or_topk cannot be undone" in d.summary()


# ---------------------------------------------------------------------------------------------------------------
# the command line and its fixed JSON layout
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory, truth):
    gt, ref = truth
    folder = tmp_path_factory.mktemp("ap")
    cand = Dx.inject(Dx.inject(ref, "scale", factor=0.9), "label_offset", offset=1)
    (folder / "gt.json").write_text(json.dumps(gt))
    (folder / "ref.json").write_text(json.dumps(results(ref)))
    (folder / "cand.json").write_text(json.dumps(results(cand.images)))
    return folder


def test_cli_json_layout(files, truth, capsys):
    gt, _ = truth
    f = files
    assert cli(["diagnose", str(f / "ref.json"), str(f / "cand.json"), "--gt", str(f / "gt.json"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    ap = report["ap"]
    assert list(ap) == ["bbox"]
    b = ap["bbox"]
    for v in ("reference", "candidate", "all_fixed"):
        assert set(b[v]) == set(METRICS) and all(0.0 <= x <= 1.0 for x in b[v].values()), b[v]
    assert set(b["fixed"]) == {"scale", "label_offset"} == set(b["dAP"])
    for cause, m in b["fixed"].items():
        assert set(m) == set(METRICS)
        assert b["dAP"][cause] == m["AP"] - b["candidate"]["AP"]
    g = json.loads((f / "gt.json").read_text())
    ref_res = json.loads((f / "ref.json").read_text())
    assert b["reference"]["AP"] == pytest.approx(cocoeval_stats(g, ref_res)["AP"], abs=1e-12)
    assert b["measure"].startswith("AP against") and "agreement" not in b["measure"]
    assert abs(b["all_fixed"]["AP"] - b["reference"]["AP"]) <= RECOVERED


def test_cli_agreement_ap_is_labelled_as_such(files, capsys):
    f = files
    assert cli(["diagnose", str(f / "ref.json"), str(f / "cand.json"), "--agreement", "0.5", "--json"]) == 1
    b = json.loads(capsys.readouterr().out)["ap"]["bbox"]
    assert b["measure"].startswith("agreement AP against the reference's detections scored >= 0.5")
    # the reference reproduces itself: its detections at or above the threshold are the ground truth, the others
    # rank below them
    assert b["reference"]["AP"] == 1.0 and b["candidate"]["AP"] < 0.2
    assert cli(["diagnose", str(f / "ref.json"), str(f / "cand.json"), "--agreement"]) == 1
    text = capsys.readouterr().out
    assert "bbox agreement AP (against the reference's detections scored >= 0.5)" in text


def test_agreement_from_the_api_takes_its_threshold(truth):
    _, ref = truth
    cand = Dx.inject(ref, "half_pixel_shift")
    hi = Dx.diagnose(ref, cand, agreement_score=0.9).ap
    lo = Dx.diagnose(ref, cand, agreement_score=0.0).ap
    n_hi, n_lo = len(hi.gt.dataset["annotations"]), len(lo.gt.dataset["annotations"])
    n_all = sum(len(d["scores"]) for d in ref.values())
    assert n_lo == n_all and n_hi == sum(int((d["scores"] >= 0.9).sum()) for d in ref.values())
    assert hi.agreement and hi.label == "agreement AP"


BAD_GT = {
    "a results list": (lambda gt, res: res, "not COCO annotations: got a list"),
    "no annotations": (lambda gt, res: {"images": gt["images"], "categories": gt["categories"]},
                       "no list 'annotations'"),
    "images that do not cover the results": (
        lambda gt, res: {**gt, "images": gt["images"][:3],
                         "annotations": [a for a in gt["annotations"] if a["image_id"] <= 3]},
        "does not cover the results: image ids 4, 5, 6, 7, 8, ..."),
    "a box that is not xywh": (
        lambda gt, res: {**gt, "annotations": [{**gt["annotations"][0], "bbox": [1, 2, -3, 4]}]},
        "annotations[0]: 'bbox' must be four finite numbers"),
    "not JSON": (None, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_GT))
def test_bad_ground_truth_is_one_line_and_exit_2(files, case, capsys):
    make, message = BAD_GT[case]
    gt = json.loads((files / "gt.json").read_text())
    res = json.loads((files / "ref.json").read_text())
    bad = files / f"bad {case}.json"
    bad.write_text("{not json" if make is None else json.dumps(make(gt, res)))
    code = cli(["diagnose", str(files / "ref.json"), str(files / "cand.json"), "--gt", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {bad}:"), err
    assert message in err, err
    if make is not None:   # the API names the argument
        with pytest.raises(ValueError, match=r"^gt: "):
            Dx.diagnose(str(files / "ref.json"), str(files / "cand.json"), gt=make(gt, res))


def test_gt_and_agreement_together_are_refused(files, capsys):
    f = files
    assert cli(["diagnose", str(f / "ref.json"), str(f / "cand.json"), "--gt", str(f / "gt.json"),
                "--agreement"]) == 2
    assert "give one" in capsys.readouterr().err
    with pytest.raises(ValueError, match="give one"):
        Dx.diagnose(str(f / "ref.json"), str(f / "cand.json"), gt=str(f / "gt.json"), agreement_score=0.5)


def test_undo_names_what_it_cannot_do():
    c = Dx.Cause("numerical_noise", 0.5, {}, "", "")
    fixed, why = DCost.undo(Dx.load_detections({"boxes": [[0.0, 0, 1, 1]]}), c)
    assert fixed is None and why == DCost.CANNOT_UNDO["numerical_noise"]


# ---------------------------------------------------------------------------------------------------------------
# result files parsed fast, with the standard library's answers
# ---------------------------------------------------------------------------------------------------------------
PARSED_ALIKE = {
    "ordinary results": b'[{"image_id": 1, "category_id": 3, "bbox": [1.25, 2, 3.5, 4], "score": 0.123456789012345}]',
    "a byte-order mark": b'\xef\xbb\xbf[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}]',
    "NaN and Infinity": b'[{"image_id": 1, "category_id": 3, "bbox": [1, 2, NaN, 4], "score": Infinity}]',
    "a float beyond float64": b'[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 1e400}]',
    "an id of 19 digits": b'[{"image_id": 9223372036854775807, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 1}]',
    "text image ids": b'[{"image_id": "a.jpg", "category_id": 3, "bbox": [1, 2, 3, 4], "score": 1}]',
}
REFUSED_ALIKE = {
    "a category id of 30 digits": (b'[{"image_id": 1, "category_id": 100000000000000000000000000000, "bbox": '
                                   b'[1, 2, 3, 4], "score": 1}]', "beyond a 64-bit integer"),
    "a trailing comma": (b'[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 1},]', "not valid JSON"),
    "nested deeply": (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
}


@pytest.mark.parametrize("case", list(PARSED_ALIKE))
def test_result_files_parse_as_the_standard_library_does(case):
    content = PARSED_ALIKE[case]
    fast = Dx.detections_from_json(content, name="results").flat()
    slow = Dx.load_detections(json.loads(content.decode("utf-8-sig")), name="results").flat()
    assert fast.image_ids == slow.image_ids
    for f in ("boxes", "scores", "labels"):
        assert torch.equal(getattr(fast, f).nan_to_num(7.0), getattr(slow, f).nan_to_num(7.0)), f


@pytest.mark.parametrize("case", list(REFUSED_ALIKE))
def test_malformed_result_files_get_the_standard_library_message(case):
    content, message = REFUSED_ALIKE[case]
    with pytest.raises(ValueError, match=message):
        Dx.detections_from_json(content, name="results")


# ---------------------------------------------------------------------------------------------------------------
# the page a team attaches to a bug report
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.browser
def test_html_report_with_ap_opens_in_chromium_with_its_charts_and_gallery(files, tmp_path):
    from PIL import Image

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _need_browser

    _need_browser()
    from playwright.sync_api import sync_playwright

    images = tmp_path / "images"     # the file of image 1 is given, the others are not: drawn on a blank canvas
    images.mkdir()
    Image.new("RGB", (W, H), (40, 90, 160)).save(images / "0001.png")
    out = tmp_path / "report.html"
    assert cli(["diagnose", str(files / "ref.json"), str(files / "cand.json"), "--gt", str(files / "gt.json"),
                "--html", str(out), "--images", str(images)]) == 1
    url = out.resolve().as_uri()
    errors, outside = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))

            def route(r):
                if r.request.url == url or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(url)
            page.wait_for_load_state("load")
            shown = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0 && e.getBoundingClientRect().width > 0])")
            per_class = page.inner_text("table.per-class")
            ap_table = page.inner_text("table.ap")
        finally:
            browser.close()
    alts = [a for a, ok in shown if ok]
    assert len(alts) == len(shown), shown
    for alt in ("dAP of each cause, a bar chart", "precision-recall curves", "gallery of the images that lose the most"):
        assert any(alt in a for a in alts), (alt, alts)
    assert not errors and not outside, (errors, outside)
    assert all(f"class {c}" in per_class for c in CATS)
    assert "label offset" in ap_table.replace("_", " ") and "all fixed" in ap_table


def test_the_gallery_draws_the_given_image_under_the_boxes(files, tmp_path):
    from PIL import Image

    from explainer.viz import report as VR

    d = Dx.diagnose(str(files / "ref.json"), str(files / "cand.json"), gt=str(files / "gt.json"))
    rows = d.ap.gallery()
    assert rows and rows[0]["lost"] >= rows[-1]["lost"] > 0
    first = rows[0]
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (W, H), (200, 30, 30)).save(images / first["file_name"])
    with_file, blank = VR.report_html(d, images=images), VR.report_html(d)
    assert with_file != blank          # the red image is drawn in the gallery; everything else is the same
    assert with_file.count("data:image/png;base64,") == blank.count("data:image/png;base64,")


# ---------------------------------------------------------------------------------------------------------------
# in the course: the scenes' ground truth and the live bar chart
# ---------------------------------------------------------------------------------------------------------------
def test_scene_ground_truth_holds_every_object_of_the_test_scenes():
    from explainer.course import cache as CC

    gt = CC.scene_ground_truth()
    test = CC.course_detector().test
    assert [im["id"] for im in gt["images"]] == list(range(len(test)))
    for i, s in enumerate(test):
        anns = [a for a in gt["annotations"] if a["image_id"] == i]
        assert [a["category_id"] for a in anns] == s.labels.tolist()
        assert [a["area"] for a in anns] == [float(m.sum()) for m in s.masks]
        decoded = mask_util.decode([{**a["segmentation"], "counts": a["segmentation"]["counts"].encode()}
                                    for a in anns])
        assert np.array_equal(np.moveaxis(decoded, 2, 0).astype(bool), s.masks.numpy())


def test_cost_dashboard_shows_the_dap_of_the_ticked_mistakes():
    import matplotlib

    matplotlib.use("Agg")
    from explainer.diagnosis.injection import MISTAKES
    from explainer.widgets.cost import CostDashboard, cost_of

    d = CostDashboard()
    off = {n: False for n in MISTAKES}
    text = d.update(**{**off, "translation": True})
    tc = cost_of(("translation",))["task"]
    bar = d.bars[list(MISTAKES).index("translation")]
    assert bar.get_width() == pytest.approx(100 * tc.dap()["translation"]) and bar.get_width() > 1
    assert f"{100 * tc.dap()['translation']:+.1f}" in text and "all causes undone" in text
    assert all(b.get_width() == 0 for n, b in zip(MISTAKES, d.bars) if n != "translation")
    text = d.update(translation=False, threshold_or_topk=True)
    assert "threshold_or_topk" in text and "cannot be undone" in text
    assert all(b.get_width() == 0 for b in d.bars)


@pytest.mark.parametrize("score", [float("nan"), "high", None])
def test_an_agreement_score_that_is_not_a_number_is_named(truth, score):
    _, ref = truth
    with pytest.raises(ValueError, match="agreement_score must be a finite number"):
        DCost.agreement_truth(Dx.load_detections(ref), agreement_score=score)


def test_keypoints_are_measured_with_cocoeval_oks():
    gt, ref = scene(9, n_images=10)
    rng = np.random.default_rng(9)
    by_image = {}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        kp = np.stack([x + rng.uniform(0, 1, 17) * w, y + rng.uniform(0, 1, 17) * h, np.full(17, 2.0)], 1)
        a["keypoints"], a["num_keypoints"] = kp.reshape(-1).tolist(), 17
        by_image.setdefault(a["image_id"], []).append((np.array([x, y, x + w, y + h]), kp))
    for k, d in ref.items():   # each detection carries the keypoints of the object its box lies closest to
        objs = by_image[k]
        d["keypoints"] = np.stack([min(objs, key=lambda o: np.abs(o[0] - b).sum())[1] + np.r_[0.3, -0.3, 0.0]
                                   for b in d["boxes"]])
    cand = Dx.inject(ref, "keypoint_half_pixel", shift=0.5)
    d = Dx.diagnose(ref, cand, gt=gt)
    assert "keypoint_half_pixel" in d.names and set(d.ap.tasks) == {"bbox", "keypoints"}, d.summary()
    kp = d.ap.tasks["keypoints"]

    def with_keypoints(side):
        res = results(side)
        flat = [v for img in side.values() for v in np.asarray(img["keypoints"] if isinstance(img, dict)
                                                                else img.keypoints)]
        for r, k in zip(res, flat):
            r["keypoints"] = np.asarray(k).reshape(-1).tolist()
        return res

    g = COCO()
    g.dataset = json.loads(json.dumps(gt))
    g.createIndex()
    for variant, side in (("reference", ref), ("candidate", cand.images)):
        E = COCOeval(g, g.loadRes(with_keypoints(side)), "keypoints")
        E.evaluate()
        E.accumulate()
        E.summarize()   # keypoints: AP, AP50, AP75, medium, large (no small objects in OKS)
        ours = kp.metrics(variant)
        assert [ours[m] for m in ("AP", "AP50", "AP75", "APm", "APl")] == pytest.approx(E.stats[:5].tolist(), abs=1e-12)
        assert ours["APs"] is None
    assert kp.dap()["keypoint_half_pixel"] > 0.01
    assert abs(kp.metrics("all_fixed")["AP"] - kp.metrics("reference")["AP"]) <= RECOVERED
