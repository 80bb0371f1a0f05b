"""The miniature detector: it detects, each knob enters where the module says, conversion is exact, and the
bisection finds the knobs a reference was produced with.

Expected stages come from where each knob is used (the module's table), not from running the code.
"""

from __future__ import annotations

import pytest
import torch

from explainer.conventions import DETECTRON, DETECTRON2
from explainer.course import compare as CMP
from explainer.course import pipeline as P

#: Where each knob first acts (module docstring): anchors are built first, then ROIAlign, then the head, masks.
FIRST_STAGE = {
    # compared in continuous coordinates, the anchors and proposals are the same region; ROIAlign then pools
    # Detectron's inclusive box as if it were continuous, one pixel narrower (explainer.roi_align.roi_input_box)
    "legacy_plus_one": "pooled",
    "anchor_offset": "anchors",
    "anchor_rounding": "anchors",
    "anchor_order": "anchors",
    "roi_aligned": "pooled",
    "sampling_ratio": "pooled",
    "background_first": "head",       # the class columns are read in the other order
    "mask_paste": "masks",
}


@pytest.fixture(scope="module")
def fitted():
    det = P.fit_detector(P.synthetic_scenes(8, seed=0), DETECTRON, seed=0)
    return det, P.synthetic_scenes(4, seed=1000)


def test_scenes_are_deterministic_and_consistent():
    a, b = P.synthetic_scenes(3, seed=5), P.synthetic_scenes(3, seed=5)
    for s, t in zip(a, b):
        assert torch.equal(s.image, t.image) and torch.equal(s.boxes, t.boxes)
        assert s.image.shape[0] == 3 and 0 <= float(s.image.min()) and float(s.image.max()) <= 1
        for box, mask in zip(s.boxes, s.masks):  # the box is the mask's tight box in continuous coordinates
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]
        assert not (s.masks.sum(0) > 1).any(), "objects overlap"
    assert not torch.equal(P.synthetic_scenes(1, seed=6)[0].image, a[0].image)


def test_detector_finds_the_shapes(fitted):
    det, scenes = fitted
    found = total = correct = n_det = 0
    for s in scenes:
        d = det.run(s, DETECTRON).detections
        gt = {"boxes": s.boxes - torch.tensor([0.0, 0.0, 1.0, 1.0]), "labels": s.labels, "scores": torch.ones(len(s.labels))}
        c = CMP.compare_detections(gt, d, iou=0.5)
        found += c["matched"]
        total += len(s.labels)
        correct += CMP.compare_detections(d, gt, iou=0.5)["matched"]
        n_det += len(d["boxes"])
    assert found / total >= 0.7, f"recall {found}/{total}"
    assert correct / max(n_det, 1) >= 0.6, f"precision {correct}/{n_det}"


@pytest.mark.parametrize("knob", P.INFERENCE_KNOBS)
def test_each_knob_first_changes_its_own_stage(fitted, knob):
    det, scenes = fitted
    ref = det.run(scenes[0], DETECTRON)
    other = det.run(scenes[0], DETECTRON.replace(**{knob: getattr(DETECTRON2, knob)}))
    first = CMP.first_divergence(ref, other)
    assert first is not None and first["stage"] == FIRST_STAGE[knob], first


def test_same_convention_gives_identical_runs(fitted):
    det, scenes = fitted
    assert CMP.first_divergence(det.run(scenes[1], DETECTRON), det.run(scenes[1], DETECTRON)) is None


def test_conversion_keeps_labels_and_moves_boxes_only_slightly(fitted):
    det, scenes = fitted
    conv = det.converted(DETECTRON2)
    agree_conv = agree_raw = 0.0
    for s in scenes:
        ref = det.run(s, DETECTRON)
        agree_conv += CMP.compare_detections(ref, conv.run(s, DETECTRON2), iou=0.5)["agreement"]
        agree_raw += CMP.compare_detections(ref, det.run(s, DETECTRON2), iou=0.5)["agreement"]
    assert agree_conv / len(scenes) >= 0.7     # the numerical conventions move boxes by a few pixels
    assert agree_raw / len(scenes) <= 0.3      # unconverted weights: background read as a class, anchors misassigned


def test_unconverted_class_order_shifts_labels_by_one(fitted):
    det, scenes = fitted
    s = scenes[0]
    ref = det.run(s, DETECTRON)
    raw = det.run(s, DETECTRON.replace(background_first=False))
    # the same proposals and class probabilities; the columns are read one to the left
    p_ref, p_raw = ref.stages["head"]["class_probs"], raw.stages["head"]["class_probs"]
    assert torch.allclose(p_raw[:, 1:], p_ref[:, :-1])


def test_conversion_round_trip_is_exact(fitted):
    det, scenes = fitted
    back = det.converted(DETECTRON2).converted(DETECTRON)
    assert CMP.first_divergence(det.run(scenes[2], DETECTRON), back.run(scenes[2], DETECTRON)) is None
    assert torch.equal(back.rpn_w, det.rpn_w) and torch.equal(back.cls_w, det.cls_w)


def test_converted_anchor_rows_follow_the_anchors(fitted):
    """After conversion, weight row a still belongs to the anchor shape it was fitted for."""
    det, _ = fitted
    conv = det.converted(DETECTRON2)
    a_det = P.rpn_cell_anchors(DETECTRON.replace(anchor_rounding=False))   # exact shapes, ratio-major
    a_d2 = P.rpn_cell_anchors(DETECTRON2)                                   # exact shapes, size-major
    for i in range(len(a_det)):
        j = int(((a_d2 - a_det[i]).abs().sum(1)).argmin())
        assert torch.equal(conv.rpn_w[j], det.rpn_w[i])


@pytest.fixture(scope="module")
def converted_runs(fitted):
    det, scenes = fitted
    conv = det.converted(DETECTRON2)
    cache = {}

    def run(c):
        if c not in cache:
            cache[c] = conv.run(scenes[0], c)
        return cache[c]

    return conv, scenes, run


@pytest.mark.parametrize("hidden", [(k,) for k in P.INFERENCE_KNOBS] + [("anchor_offset", "roi_aligned")])
def test_bisection_finds_the_knobs_the_reference_used(converted_runs, hidden):
    conv, scenes, run = converted_runs
    reference = conv.run(scenes[0], DETECTRON2.replace(**{k: getattr(DETECTRON, k) for k in hidden}))
    rep = CMP.bisect_conventions(run, reference, start=DETECTRON2, towards=DETECTRON)
    assert rep.baseline < 1.0
    assert rep.found is not None and set(rep.found) == set(hidden), rep.summary()
    assert "found: " + " + ".join(rep.found) in rep.summary()


def test_bisection_reports_knobs_without_effect(converted_runs):
    conv, scenes, run = converted_runs
    reference = conv.run(scenes[0], DETECTRON2.replace(roi_aligned=False))
    rep = CMP.bisect_conventions(lambda c: run(c.replace(mask_paste="paste_masks_in_image")), reference,
                               start=DETECTRON2, towards=DETECTRON)
    assert "mask_paste" in rep.no_effect and rep.found == ("roi_aligned",)


def test_compare_detections_counts_masks():
    box = torch.tensor([[2.0, 2.0, 8.0, 8.0]])
    m1 = torch.zeros(1, 10, 10, dtype=torch.bool)
    m1[0, 2:8, 2:8] = True
    m2 = m1.clone()
    m2[0, 2:8, 7] = False
    a = {"boxes": box, "labels": torch.tensor([1]), "scores": torch.tensor([0.9]), "masks": m1}
    b = {**a, "masks": m2}
    assert CMP.compare_detections(a, a)["agreement"] == 1.0
    c = CMP.compare_detections(a, b)
    assert c["agreement"] == 0.0 and c["min_mask_iou"] == pytest.approx(30 / 36)
    assert CMP.compare_detections(a, {**a, "labels": torch.tensor([2])})["agreement"] == 0.0


def test_bad_input_is_explained(fitted):
    det, scenes = fitted
    with pytest.raises(ValueError, match="convention must be"):
        det.run(scenes[0], "detectron")
    with pytest.raises(ValueError, match="3 x H x W"):
        det.run(torch.zeros(4, 64, 64), DETECTRON)
    with pytest.raises(ValueError, match="scenes must be a non-empty list"):
        P.fit_detector([], DETECTRON)
    with pytest.raises(ValueError, match="knobs must be among"):
        CMP.bisect_conventions(lambda c: det.run(scenes[0], c), det.run(scenes[0], DETECTRON), knobs=("box_smooth_l1_beta",))
    with pytest.raises(ValueError, match="run must be a callable"):
        CMP.bisect_conventions(None, det.run(scenes[0], DETECTRON))
    with pytest.raises(ValueError, match="image_size must be at least"):
        P.synthetic_scenes(1, image_size=(20, 20))


def test_quality_scores_both_conventions_alike(fitted):
    det, scenes = fitted
    conv = det.converted(DETECTRON2)
    q1 = CMP.quality([det.run(s, DETECTRON) for s in scenes], scenes)
    q2 = CMP.quality([conv.run(s, DETECTRON2) for s in scenes], scenes)
    assert q1["objects"] == q2["objects"] == sum(len(s.boxes) for s in scenes)
    assert q1["recall"] >= 0.6 and q2["recall"] >= 0.6, (q1, q2)
    # the ground truth itself, as a run, is perfect; a run of nothing finds nothing
    gt = [{"boxes": s.boxes, "scores": torch.ones(len(s.boxes)), "labels": s.labels} for s in scenes]
    assert CMP.quality(gt, scenes) == {"recall": 1.0, "precision": 1.0, "objects": q1["objects"],
                                     "detections": q1["objects"], "found": q1["objects"]}
    with pytest.raises(ValueError, match="runs and scenes must pair up"):
        CMP.quality(gt[:1], scenes)


# ---------------------------------------------------------------------------------------------
# the pieces the detector is built from
# ---------------------------------------------------------------------------------------------
def test_anchor_order_permutation_maps_detectron_rows_onto_detectron2_rows():
    """Detectron's generate_anchors rows (ratio-major) and Detectron2's cell anchors (size-major), both from the
    original code (tests/data/anchors): after the permutation, row i of each is the same (size, ratio)."""
    from explainer import anchors as A
    from tests.conftest import load_golden

    det = load_golden("anchors/detectron_generate_anchors.json")["single_call"]
    d2 = load_golden("anchors/d2_cell_anchors.json")["single_call"]
    n_sizes, n_ratios = 5, 3
    p = A.anchor_order_permutation(n_sizes, n_ratios, "ratio_major", "size_major")
    det_sqrt = torch.tensor(det["derived_sqrt_area_plus1"])[p]
    det_aspect = torch.tensor(det["derived_aspect_h_over_w"])[p]
    # Detectron rounds widths and heights: its sqrt(area) is within 5% of the size, its aspect within 10%
    torch.testing.assert_close(det_sqrt, torch.tensor(d2["derived_sqrt_area"]), rtol=0.05, atol=0)
    torch.testing.assert_close(det_aspect, torch.tensor(d2["derived_aspect_h_over_w"]), rtol=0.1, atol=0)
    back = A.anchor_order_permutation(n_sizes, n_ratios, "size_major", "ratio_major")
    assert torch.equal(p[back], torch.arange(15)) and torch.equal(back[p], torch.arange(15))
    assert torch.equal(A.anchor_order_permutation(n_sizes, n_ratios, "size_major", "size_major"), torch.arange(15))
    rows = torch.tensor(det["anchors_xyxy"])
    assert torch.equal(A.ratio_major_to_size_major(rows, n_sizes, n_ratios), rows[p])
    with pytest.raises(ValueError, match="dst must be 'ratio_major' or 'size_major'"):
        A.anchor_order_permutation(5, 3, "ratio_major", "sizes_first")


def test_roi_align_is_torchvisions_compiled_op_bit_for_bit():
    torchvision = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(1, 4, 48, 64, generator=g)
    xy = torch.rand(40, 2, generator=g) * 100
    wh = 1 + torch.rand(40, 2, generator=g) * 60
    rois = torch.cat([torch.zeros(40, 1), xy, xy + wh], 1)
    for aligned in (False, True):
        for sr in (-1, 2):
            expected = torchvision.ops.roi_align(feats, rois, 7, spatial_scale=0.5, sampling_ratio=sr, aligned=aligned)
            assert torch.equal(P._roi_align(feats, rois, 7, 0.5, sr, aligned), expected)


def test_the_detector_runs_without_importing_torchvision():
    """``import torchvision`` costs seconds per kernel; the detector loads only its compiled operators."""
    import subprocess
    import sys

    code = ("import sys\nfrom explainer.course import cache as CC, compare as CMP, pipeline as P\n"
            "from explainer.conventions import DETECTRON\n"
            "det = P.fit_detector(P.synthetic_scenes(2, seed=0), DETECTRON)\n"
            "det.run(P.synthetic_scenes(1, seed=3)[0], DETECTRON)\n"
            "print('torchvision' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_stage_differences_and_first_divergence_read_the_same_comparison(fitted):
    det, scenes = fitted
    ref = det.run(scenes[0], DETECTRON)
    other = det.run(scenes[0], DETECTRON.replace(roi_aligned=True))
    diffs = CMP.stage_differences(ref, other)
    assert [d["stage"] for d in diffs] == list(P.STAGES)
    first = CMP.first_divergence(ref, other)
    differing = [d for d in diffs if d["max_diff"] > 1e-4]
    assert differing[0]["stage"] == first["stage"] == "pooled"
    # each entry's largest difference is the largest over its tensors, computed by hand here
    for d in diffs:
        a, b = ref.stages[d["stage"]], other.stages[d["stage"]]
        by_hand = [float((a[k].double() - b[k].double()).abs().max()) if a[k].shape == b[k].shape and a[k].numel()
                   else (0.0 if a[k].shape == b[k].shape else float("inf")) for k in a]
        assert d["max_diff"] == max(by_hand)
    # a tensor of another shape is an infinite difference, and says so
    cut = P.Run(ref.convention, {**ref.stages, "detections": {**ref.stages["detections"],
                                                              "boxes": ref.stages["detections"]["boxes"][:1]}},
                ref.image_size)
    first = CMP.first_divergence(ref, cut)
    assert first["stage"] == "detections" and first["tensor"] == "boxes" and first["max_abs_diff"] == float("inf")
    assert "shape" in first["detail"]


def test_the_overlap_test_on_the_shapes_box_is_the_dilation_of_the_whole_image():
    """Scenes place an object only where its shape grown by 4 px meets no other; computed on the shape's box, the
    answer must be that of the 9 x 9 max-pool over the whole image."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(11)
    H, W = 70, 90
    for _ in range(300):
        kind = int(torch.randint(0, 3, (1,), generator=g))
        r = float(2 + 20 * torch.rand(1, generator=g))
        cx, cy = float(-5 + 100 * torch.rand(1, generator=g)), float(-5 + 80 * torch.rand(1, generator=g))
        m = P._shape_mask(kind, cx, cy, r, H, W)
        ys, xs = torch.nonzero(m, as_tuple=True)
        if not len(ys):
            continue
        occupied = torch.rand(H, W, generator=g) > 0.997
        grown = F.max_pool2d(m[None, None].float(), 9, stride=1, padding=4)[0, 0] > 0
        assert P._touches(m, occupied, ys, xs) == bool((grown & occupied).any())


def test_the_plus_one_alone_first_changes_the_pooled_features_not_the_anchors():
    # the course's converted detector under Detectron2's conventions, with only legacy_plus_one switched: anchors and
    # proposals are the same regions in continuous coordinates (a notation, not a difference), and the first real
    # difference is ROIAlign's input box, one pixel narrower under Detectron's inclusive notation
    from explainer.course.cache import N_TEST, run_scene

    for i in range(N_TEST):
        a = run_scene(i, DETECTRON2, converted=True)
        b = run_scene(i, DETECTRON2.replace(legacy_plus_one=True), converted=True)
        by_stage = {d["stage"]: d["max_diff"] for d in CMP.stage_differences(a, b)}
        assert by_stage["anchors"] == by_stage["proposals"] == by_stage["proposals_nms"] == 0.0
        # the raw tensors do differ, by exactly the notation's 1 on x2 and y2
        raw = b.stages["anchors"]["anchors"] - a.stages["anchors"]["anchors"]
        assert raw[:, :2].abs().max() == 0 and torch.equal(raw[:, 2:], -torch.ones_like(raw[:, 2:]))
        first = CMP.first_divergence(a, b)
        assert first["stage"] == "pooled" and first["tensor"] == "features" and 0.1 < first["max_abs_diff"] < 0.5
