"""The diagnosis on cases made by the package's own generator, :func:`explainer.diagnosis.inject`, applied to random
detections shaped like a converted model's results file: COCO's 80 categories, each at most once per image (down
to one image with one detection per category), labels written as COCO category ids; geometric and label mistakes
together under the float noise two frameworks leave; masks grown or shrunk by one pixel in COCO RLE.

COCO's ids (``tests.test_diagnose.COCO_IDS``) are typed there from the COCO 2017 annotation files, apart from the
package's copy.
"""

from __future__ import annotations

import numpy as np
import pytest

from explainer.diagnosis import report as Dx
from explainer.diagnosis.label_causes import LABEL_FLOOR
from tests.test_diagnose import COCO_IDS, random_side
from tests.test_diagnose_fields import coco, ellipse_side

INDEX_SPACE = "contiguous index through COCO category ids"


def sparse(seed: int, n_images=None, coco_ids=True):
    return random_side(np.random.default_rng(seed), n_images=n_images, sparse=True, coco_ids=coco_ids)


def float_noise(side, seed: int):
    """What two frameworks' float arithmetic leaves: N(0, 0.003 px) on the boxes, N(0, 1e-6) on the scores."""
    return Dx.inject(side, "numerical_noise", sigma=0.003, score_sigma=1e-6, seed=seed)


def test_coco_index_offset_moves_each_id_to_the_next_category_not_id_plus_one():
    side = {0: {"boxes": np.array([[0.0, 0, 5, 5]] * 4), "scores": np.ones(4), "labels": np.array([11, 13, 25, 90])}}
    up = Dx.inject(side, "label_offset", offset=1, space="coco_index").images[0]
    assert up.labels.tolist() == [13, 14, 27]            # 11 -> 13 and 25 -> 27 across COCO's gaps; 90 is the last
    down = Dx.inject(side, "label_offset", offset=-1, space="coco_index").images[0]
    assert down.labels.tolist() == [10, 11, 24, 89]
    with pytest.raises(ValueError, match="needs COCO category ids; image 0 has 12"):
        Dx.inject({0: {**side[0], "labels": np.array([12, 1, 1, 1])}}, "label_offset", space="coco_index")
    with pytest.raises(ValueError, match="space must be 'labels' or 'coco_index'"):
        Dx.inject(side, "label_offset", space="ids")


@pytest.mark.parametrize("n_images", [1, None], ids=["one detection per category", "sparse, several images"])
@pytest.mark.parametrize("offset", [1, -1])
def test_class_order_off_by_one_through_coco_ids_is_label_offset_with_its_direction(offset, n_images):
    for seed in range(10):
        ref = sparse(seed, n_images)
        cand = float_noise(Dx.inject(ref, "label_offset", offset=offset, space="coco_index"), seed)
        d = Dx.diagnose(ref, cand)
        assert d.top.name == "label_offset", (seed, d.summary())
        ev = d.top.evidence
        assert ev["offset"] == offset and ev["space"] == INDEX_SPACE and ev["pairs_consistent"] >= 0.9
        first, last = ("background-first", "background-last") if offset == 1 else ("background-last", "background-first")
        assert first.split("-")[0] in ev["direction"] and "Detectron" in ev["direction"], ev["direction"]
        assert ev["direction"].index(first.split("-")[1]) < ev["direction"].index(last.split("-")[1])
        assert "numerical_noise" not in d.names[:1] and d.top.strength >= LABEL_FLOOR


@pytest.mark.parametrize("label", ["coco_index", "permutation", "raw"])
def test_a_label_cause_always_outranks_numerical_noise(label):
    for seed in range(10):
        ref = sparse(seed, coco_ids=label != "raw")
        cand = Dx.inject(ref, "numerical_noise", sigma=0.2, score_sigma=1e-3, seed=seed)
        cand = (Dx.inject(cand, "label_offset", offset=1, space="coco_index") if label == "coco_index"
                else Dx.inject(cand, "label_permutation", seed=seed) if label == "permutation"
                else Dx.inject(cand, "label_offset", offset=-1))
        names = Dx.diagnose(ref, cand).names
        want = "label_permutation" if label == "permutation" else "label_offset"
        assert want in names and "numerical_noise" in names, (seed, names)
        assert names.index(want) < names.index("numerical_noise"), (seed, names)


def test_every_label_below_cocos_first_gap_leaves_the_causes_open():
    # ids 1..11 (COCO's first gap is 12): the next category's id is the id + 1, and contiguous labels 0..10 read
    # as COCO ids are the labels + 1 as well; the diagnosis names one and lists the others it cannot exclude
    rng = np.random.default_rng(0)
    n = 11
    x = rng.uniform(0, 400, n)
    ref = {0: {"boxes": np.stack([x, x, x + 40, x + 30], 1), "scores": rng.uniform(0.1, 1, n),
               "labels": np.arange(1, 12) - 1}}
    cand = Dx.inject(ref, "label_offset", offset=1)
    d = Dx.diagnose(ref, cand)
    assert d.top.name == "label_offset", d.summary()
    open_ = d.top.evidence["also_consistent_with"]
    assert "coco_category_ids" in open_, open_
    assert "may equally be" in d.top.explanation and "coco_category_ids" in d.top.explanation
    # the same labels read as COCO ids on both sides with the class order off by one: again ambiguous
    ids = {0: {**ref[0], "labels": np.arange(1, 12)}}
    d = Dx.diagnose(ids, Dx.inject(ids, "label_offset", offset=1, space="coco_index"))
    assert d.top.name == "label_offset" and d.top.evidence.get("also_consistent_with"), d.summary()
    # past the gap the readings part: 11 -> 13 is the next category, not id + 1, and nothing is left open
    wide = {0: {**ref[0], "labels": np.array(COCO_IDS[5:16])}}
    d = Dx.diagnose(wide, Dx.inject(wide, "label_offset", offset=1, space="coco_index"))
    assert d.top.evidence["space"] == INDEX_SPACE and "also_consistent_with" not in d.top.evidence, d.summary()


@pytest.mark.parametrize("n_images", [1, None], ids=["one detection per category", "sparse, several images"])
def test_a_permutation_seen_once_per_label_is_label_permutation(n_images):
    for seed in range(10):
        ref = sparse(seed, n_images)
        cand = float_noise(Dx.inject(ref, "label_permutation", seed=seed), seed)
        d = Dx.diagnose(ref, cand)
        assert d.top.name == "label_permutation", (seed, d.summary())
        ev = d.top.evidence
        assert ev["one_to_one"] and ev["labels_changed"] > 0.8


GEOMETRIC = [("half_pixel_shift", {}), ("plus_one", {}), ("scale", {"factor": 0.8}), ("translation", {}),
             ("anisotropic_scale", {}), ("xywh_as_xyxy", {})]
LABELS = [("label_offset", {"offset": 1, "space": "coco_index"}, True), ("label_offset", {"offset": -1}, False),
          ("label_permutation", {}, True), ("coco_category_ids", {}, False)]
MIXED = [(g, lab) for g in range(len(GEOMETRIC)) for lab in range(len(LABELS))]


@pytest.mark.parametrize("g,lab", MIXED, ids=[f"{GEOMETRIC[g][0]}+{LABELS[lab][0]}{'-' + str(LABELS[lab][1]) if LABELS[lab][1] else ''}"
                                              for g, lab in MIXED])
def test_geometric_and_label_mistakes_together_under_float_noise_are_both_in_the_top_3(g, lab):
    geo, gkw = GEOMETRIC[g]
    label, lkw, coco_ids = LABELS[lab]
    missed = []
    for seed in range(8):
        ref = sparse(100 + seed, coco_ids=coco_ids)
        cand = Dx.inject(Dx.inject(ref, geo, **gkw), label, **({**lkw, "seed": seed} if label == "label_permutation" else lkw))
        names = Dx.diagnose(ref, float_noise(cand, seed)).names
        if not {geo, label} <= set(names[:3]):
            missed.append((seed, names[:4]))
    assert not missed, missed


@pytest.mark.parametrize("grow", [1, -1])
def test_masks_dilated_or_eroded_by_one_pixel_in_a_results_file_are_mask_paste(grow):
    for seed in range(8):
        side, masks = ellipse_side(seed)
        ref = coco(side, masks)
        d = Dx.diagnose(ref, Dx.to_coco_results(Dx.inject(ref, "mask_paste", grow=grow)))
        assert d.top.name == "mask_paste", (seed, d.summary())
        assert (d.top.evidence["median_relative_area_difference"] > 0) == (grow > 0)
        # the areas differ, the contours by no more than the boundary F-score's 1 px tolerance
        assert d.top.evidence["mean_mask_iou"] < 0.95 and d.top.evidence["mean_boundary_f"] > 0.9


def test_the_dashboards_mistakes_are_injections_applied_in_turn():
    from explainer.diagnosis.injection import INJECTIONS, MISTAKES, inject_mistakes

    assert all(cause in INJECTIONS for _, cause, _, _ in MISTAKES.values())
    ref = sparse(3)
    got, causes = inject_mistakes(ref, ["plus_one", "label_offset"])
    want = Dx.inject(Dx.inject(ref, "plus_one"), "label_offset", offset=1)
    assert causes == ["plus_one", "label_offset"]
    assert Dx.to_coco_results(got) == Dx.to_coco_results(want)
    assert inject_mistakes(ref, [])[1] == []
    with pytest.raises(ValueError, match="mistakes must be names of MISTAKES"):
        inject_mistakes(ref, ["plus_two"])
