"""Every field is compared: keypoints, masks (COCO segmentations read with pycocotools), non-finite values and
fields present on one side only are findings of their own; ``identical`` only when everything agrees.

Masks are written the way Detectron2's ``instances_to_coco_json`` writes them (pycocotools' ``mask.encode`` of
an H x W x 1 Fortran-ordered uint8 array, counts decoded to text), and also as uncompressed RLE and polygons.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_util

from explainer.diagnosis import report as Dx
from explainer.diagnosis import result_masks as RM
from explainer.diagnosis.detections import load_detections
from tests.test_diagnose import case, copy_side, random_side, strip

H, W = 96, 128


def coco(side, masks=None, keypoints=True):
    """COCO results of a generated side; ``masks``: {image: N x H x W bool} written as compressed RLE."""
    out = []
    for k, d in side.items():
        for i, (b, s, l) in enumerate(zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist())):
            e = {"image_id": int(k), "category_id": int(l), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
            if keypoints and "keypoints" in d:
                e["keypoints"] = d["keypoints"][i].reshape(-1).tolist()
            if masks is not None:
                rle = mask_util.encode(np.array(masks[k][i][:, :, None], order="F", dtype="uint8"))[0]
                e["segmentation"] = {"size": [int(x) for x in rle["size"]], "counts": rle["counts"].decode("utf-8")}
            out.append(e)
    return out


def ellipse_side(seed, n_images=2):
    rng = np.random.default_rng(seed)
    side = random_side(rng, n_images=n_images, masks=True, size=(H, W), keypoints=True)
    masks = {k: d.pop("masks") for k, d in side.items()}
    for d in side.values():
        d.pop("ellipse")
    return side, masks


def grow(masks, g):
    out = {}
    for k, m in masks.items():
        t = torch.from_numpy(m).float()[:, None]
        out[k] = ((torch.nn.functional.max_pool2d(t, 3, 1, 1) if g > 0 else -torch.nn.functional.max_pool2d(-t, 3, 1, 1))
                  [:, 0] > 0).numpy()
    return out


# ---------------------------------------------------------------------------------------------
# masks from files
# ---------------------------------------------------------------------------------------------
def test_compressed_uncompressed_and_polygon_masks_read_alike():
    # a square of 20 x 10 pixels, columns 30..49, rows 40..49, in the three forms of COCO's segmentation
    m = np.zeros((H, W), dtype=np.uint8)
    m[40:50, 30:50] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    counts = []  # uncompressed RLE: run lengths in column-major order, starting with a run of zeros
    flat, v, run = m.flatten(order="F"), 0, 0
    for x in flat:
        if x != v:
            counts.append(run)
            v, run = x, 0
        run += 1
    counts.append(run)
    forms = {"compressed": {"size": [H, W], "counts": rle["counts"].decode()},
             "uncompressed": {"size": [H, W], "counts": counts},
             "polygon": [[30.0, 40.0, 50.0, 40.0, 50.0, 50.0, 30.0, 50.0]]}
    base = {"image_id": 1, "category_id": 1, "bbox": [30, 40, 20, 10], "score": 0.9}
    for name, seg in forms.items():
        side = load_detections(json.loads(json.dumps([{**base, "segmentation": seg}])))
        rles, _, problems = RM.pair_rles(side.flat().masks, [None], [0], torch.tensor([[30.0, 40, 50, 50]] * 2))
        assert not problems, (name, problems)
        got = mask_util.decode(rles[0])
        if name == "polygon":
            # no mask of the image states a size: the canvas reaches just past the polygon and the box (50, 50);
            # the polygon is pycocotools' own rasterisation on it
            assert got.shape == (51, 51)
            want = mask_util.decode(mask_util.merge(mask_util.frPyObjects(seg, 51, 51)))
            assert np.array_equal(got, want) and got[40:50, 30:50].all()
        else:
            assert got.shape == (H, W) and np.array_equal(got, m), name
    # the three forms compared with each other: identical
    a = [{**base, "segmentation": forms["compressed"]}]
    b = [{**base, "segmentation": forms["uncompressed"]}]
    assert Dx.diagnose(a, b).names == ["identical"]


@pytest.mark.parametrize("g", [1, -1])
def test_one_pixel_dilation_or_erosion_of_every_mask_is_mask_paste(g):
    hits = 0
    for seed in range(20):
        side, masks = ellipse_side(seed)
        d = Dx.diagnose(coco(side, masks), coco(side, grow(masks, g)))
        hits += d.top.name == "mask_paste"
        if d.top.name == "mask_paste":
            ev = d.top.evidence
            assert ev["differing_pixels_within_2px_of_contour"] >= 0.9 and ev["mean_mask_iou"] < 1
            assert (ev["median_relative_area_difference"] > 0) == (g > 0)
    assert hits == 20


def test_detectron_paste_against_detectron2_paste_on_the_course_detector():
    from explainer.conventions import DETECTRON
    from explainer.course import cache as CC

    ref = CC.detections_over_scenes(DETECTRON)
    cand = CC.detections_over_scenes(DETECTRON.replace(mask_paste="paste_masks_in_image"))
    for a, b in ((ref, cand), (Dx.to_coco_results(ref), Dx.to_coco_results(cand))):   # tensors, then files' RLE
        d = Dx.diagnose(a, b)
        assert d.names == ["mask_paste"], d.summary()
        assert d.masks is not None and np.nanmin(d.masks["compare"]["iou"]) < 1


def test_mask_iou_agrees_with_pycocotools_and_boundary_f_with_a_hand_count():
    side, masks = ellipse_side(3)
    moved = {k: np.roll(m, 3, axis=2) for k, m in masks.items()}
    d = Dx.diagnose(coco(side, masks), coco(side, moved))
    cmp = d.masks["compare"]
    for i in np.flatnonzero(np.isfinite(cmp["iou"]))[:10]:
        want = mask_util.iou([d.masks["cand"][i]], [d.masks["ref"][i]], [0])[0, 0]
        assert cmp["iou"][i] == pytest.approx(want, abs=1e-12)
    # two 10 x 10 squares, one shifted right by 2 px: contours 36 px each; within 1 px of the other contour lie
    # the 2 x 8 inner columns of each square's vertical sides that face each other... counted by hand: 20 of 36
    a = torch.zeros(20, 20, dtype=torch.bool)
    a[5:15, 3:13] = True
    b = torch.roll(a, 2, 1)
    p = r = 20 / 36
    assert RM.boundary_f_score(a, b) == pytest.approx(2 * p * r / (p + r))
    assert RM.boundary_f_score(a, a) == 1.0 and RM.boundary_f_score(a, torch.zeros_like(a)) == 0.0


def test_segmentations_that_differ_are_never_identical():
    side, masks = ellipse_side(4)
    moved = {k: m.copy() for k, m in masks.items()}
    moved[0][0] = np.roll(moved[0][0], 9, axis=1)
    d = Dx.diagnose(coco(side, masks), coco(side, moved))
    assert "identical" not in d.names and d.top.name == "inference_difference", d.summary()


def test_empty_candidate_masks_are_a_missing_field():
    side, masks = ellipse_side(5)
    empty = {k: np.zeros_like(m) for k, m in masks.items()}
    d = Dx.diagnose(coco(side, masks), coco(side, empty))
    assert d.top.name == "missing_field" and d.top.evidence["fields"] == ["masks"], d.summary()
    assert "empty" in d.top.explanation and "inference_difference" not in d.names


def test_masks_on_one_side_only_and_partly_missing():
    side, masks = ellipse_side(6)
    with_masks = coco(side, masks)
    d = Dx.diagnose(with_masks, coco(side))
    assert d.top.name == "missing_field" and "candidate has no masks at all" in d.top.explanation
    some = [dict(e) for e in with_masks]
    for e in some[::3]:
        del e["segmentation"]
    d = Dx.diagnose(with_masks, some)   # the boxes are still diagnosed: identical boxes, a third without a mask
    assert d.n_matched == len(with_masks) and d.names == ["missing_field"], d.summary()


def test_unreadable_segmentations_are_evidence_not_a_crash():
    side, masks = ellipse_side(7)
    ref = coco(side, masks)
    bad = json.loads(json.dumps(ref))
    bad[0]["segmentation"]["counts"] = "!!not-rle"                  # outside pycocotools' alphabet
    bad[1]["segmentation"]["size"] = [H + 1, W]                      # disagrees with its image's masks
    bad[2]["segmentation"]["counts"] = "0o"                          # ends inside a number
    bad[3]["segmentation"] = {"size": [H, W], "counts": [5, 3]}      # uncompressed, 8 pixels of H x W
    bad[4]["segmentation"] = [[1.0, 2.0, 3.0]]                       # a polygon of one and a half points
    bad[5]["segmentation"]["counts"] = mask_util.encode(np.asfortranarray(np.ones((H, W // 2), np.uint8)))["counts"].decode()
    d = Dx.diagnose(ref, bad)
    assert d.top.name == "missing_field", d.summary()
    text = " ".join(d.top.evidence["masks"])
    for what in ("outside pycocotools' code", "differs from the", "add up to", "needs x, y pairs", "do not add up"):
        assert what in text, (what, text)
    assert d.n_matched == len(ref)


# ---------------------------------------------------------------------------------------------
# keypoints, non-finite values, identical
# ---------------------------------------------------------------------------------------------
def test_keypoints_moved_37_px_are_not_identical():
    ref, _ = case("keypoint_half_pixel", 1)
    cand = copy_side(ref)
    for d in cand.values():
        d["keypoints"][:, 3, 0] += 37.0
    d = Dx.diagnose(ref, cand)
    assert d.top.name == "inference_difference" and d.top.evidence["max_keypoint_difference_px"] == pytest.approx(37.0)
    f = coco(ref)
    g = coco(cand)
    assert Dx.diagnose(f, g).top.name == "inference_difference"


@pytest.mark.parametrize("field,where", [("keypoints", (0, 2, 1)), ("boxes", (0, 2)), ("scores", (0,))])
def test_a_nan_anywhere_is_non_finite_never_identical(field, where):
    ref, _ = case("keypoint_half_pixel", 2)
    cand = copy_side(ref)
    cand[0][field][where] = np.nan
    d = Dx.diagnose(ref, cand)
    assert "non_finite" in d.names and "identical" not in d.names, d.summary()
    nf = d.causes[d.names.index("non_finite")]
    assert nf.evidence["candidate"] == {field: 1}
    assert "image 0 detection 0" in nf.evidence["examples"][0]
    # the same through a file: NaN written as JSON's NaN literal
    d = Dx.diagnose(coco(ref), coco(cand))
    assert "non_finite" in d.names


def test_self_comparison_with_huge_boxes_is_identical():
    ref, _ = case("plus_one", 3)
    for scale in (1e20, 1e200, 1e300):
        big = {k: {**d, "boxes": d["boxes"] * scale} for k, d in ref.items()}
        d = Dx.diagnose(big, copy_side(big))
        assert d.names == ["identical"], (scale, d.summary())
    huge = json.loads(json.dumps(coco({k: {**d, "boxes": d["boxes"] * 1e20} for k, d in ref.items()})))
    assert Dx.diagnose(huge, huge).names == ["identical"]


def test_json_content_is_never_a_path(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps(coco(case("plus_one", 0)[0])))
    c = tmp_path / "c.json"
    c.write_text(json.dumps(str(other)))
    with pytest.raises(ValueError, match=r"c\.json: holds a JSON string, not detections"):
        Dx.diagnose(str(other), str(c))
    c.write_text(json.dumps(str(c)))  # a file naming itself: an error, not a recursion
    with pytest.raises(ValueError, match=r"holds a JSON string"):
        Dx.diagnose(str(c), str(c))


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------
coordinate = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False)


@st.composite
def boxes(draw, n_max=12):
    n = draw(st.integers(1, n_max))
    out = []
    for _ in range(n):
        x1, y1 = draw(coordinate), draw(coordinate)
        w = draw(st.floats(min_value=0, max_value=1e300, allow_nan=False))
        h = draw(st.floats(min_value=0, max_value=1e300, allow_nan=False))
        out.append([x1, y1, x1 + w if np.isfinite(x1 + w) else x1, y1 + h if np.isfinite(y1 + h) else y1])
    return np.array(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=boxes(), seed=st.integers(0, 2 ** 16), labels=st.integers(1, 5))
def test_property_self_comparison_is_identical_for_any_finite_boxes(b, seed, labels):
    rng = np.random.default_rng(seed)
    side = {0: {"boxes": b, "scores": rng.uniform(0, 1, len(b)), "labels": rng.integers(0, labels, len(b))}}
    d = Dx.diagnose(side, copy_side(side))
    assert d.names == ["identical"], d.summary()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 16), field=st.sampled_from(["boxes", "scores", "keypoints"]),
       value=st.sampled_from([np.nan, np.inf, -np.inf]), cause=st.sampled_from(["plus_one", "identical", "scale"]))
def test_property_a_non_finite_value_is_a_clear_finding_never_a_finite_verdict(seed, field, value, cause):
    ref, cand = case("keypoint_half_pixel", seed % 50)
    if cause == "identical":
        cand = copy_side(ref)
    elif cause == "plus_one":
        for d in cand.values():
            d["boxes"][:, 2:] += 1.0
    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, len(cand)))
    i = int(rng.integers(0, len(cand[k]["boxes"])))
    arr = cand[k][field]
    where = (i,) if field == "scores" else (i, int(rng.integers(0, 4))) if field == "boxes" else (i, 0, 0)
    arr[where] = value
    try:
        d = Dx.diagnose(ref, cand)
    except ValueError as e:       # a clear error names the field
        assert field in str(e)
        return
    assert "non_finite" in d.names and "identical" not in d.names, d.summary()


def test_inject_non_finite_and_missing_field_round_trip():
    ref, _ = case("keypoint_half_pixel", 9)
    bad = Dx.inject(strip(ref), "non_finite", field="scores", fraction=0.2, seed=1)
    assert "non_finite" in Dx.diagnose(strip(ref), bad).names
    gone = Dx.inject(strip(ref), "missing_field", field="keypoints")
    d = Dx.diagnose(strip(ref), gone)
    assert d.top.name == "missing_field" and d.top.evidence["fields"] == ["keypoints"]
