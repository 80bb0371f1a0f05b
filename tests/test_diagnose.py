"""The diagnosis names the cause it is shown, on generated cases, at least 95% of the time.

The generator below is independent of :func:`explainer.diagnosis.inject`: it draws random detections and
applies each cause with its own formula, with random magnitudes and mild noise on top (box coordinates
jittered by 0.02 px, scores by 1e-4), then asks :func:`diagnose` to name it. ``make test`` measures the
rate over 200 seeds per cause; ``make test-fast`` over the first 50 (the 200-seed test is marked ``slow``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explainer.cli import main as cli
from explainer.diagnosis import report as Dx

SEEDS = range(200)
H, W = 480, 640
# COCO's 80 category ids, typed from the COCO 2017 annotation files' "categories" list (ids 1..90 without
# 12, 26, 29, 30, 45, 66, 68, 69, 71, 83); kept here separately from the package's copy on purpose.
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


# ---------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------
def random_side(rng: np.random.Generator, n_images=None, keypoints=False, masks=False, classes=None,
                size=(H, W), sparse=False, coco_ids=False):
    """Random detections: {image_id: {"boxes", "scores", "labels", ...}}; boxes of 8..300 px inside the image.

    ``sparse``: COCO's 80 classes, each at most once per image (one image: one detection per category), as in a
    real results file with a few dozen detections per image. ``coco_ids``: labels written as COCO category ids
    (``COCO_IDS[i]`` for contiguous label i), as results files are."""
    h, w = size
    n_images = n_images or int(rng.integers(2, 6))
    classes = 80 if sparse else classes or int(rng.integers(5, 31))
    out = {}
    for k in range(n_images):
        n = int(rng.integers(15, 41))
        bw = np.exp(rng.uniform(np.log(8), np.log(min(300, w / 2)), n))
        bh = np.clip(bw * np.exp(rng.uniform(-0.7, 0.7, n)), 4, h / 2)
        x1 = rng.uniform(0, w - bw)
        y1 = rng.uniform(0, h - bh)
        labels = rng.permutation(classes)[:n] if sparse else rng.integers(0, classes, n)
        d = {"boxes": np.stack([x1, y1, x1 + bw, y1 + bh], 1), "scores": rng.uniform(0.05, 1.0, n),
             "labels": np.array(COCO_IDS)[labels] if coco_ids else labels}
        if keypoints:
            K = 17
            u = rng.uniform(0, 1, (n, K, 2))
            kp = np.zeros((n, K, 3))
            kp[..., 0] = x1[:, None] + u[..., 0] * bw[:, None]
            kp[..., 1] = y1[:, None] + u[..., 1] * bh[:, None]
            kp[..., 2] = np.where(rng.uniform(0, 1, (n, K)) < 0.8, 2, 0)
            d["keypoints"] = kp
        if masks:
            yy, xx = np.mgrid[0:h, 0:w] + 0.5
            cx, cy = (x1 + bw / 2), (y1 + bh / 2)
            d["masks"] = (((xx[None] - cx[:, None, None]) / (bw[:, None, None] / 2)) ** 2
                          + ((yy[None] - cy[:, None, None]) / (bh[:, None, None] / 2)) ** 2) <= 1.0
            d["ellipse"] = np.stack([cx, cy, bw / 2, bh / 2], 1)
        out[k] = d
    return out


def copy_side(side):
    return {k: {f: np.array(v, copy=True) for f, v in d.items()} for k, d in side.items()}


def mild_noise(side, rng, box_sigma=0.02, score_sigma=1e-4):
    for d in side.values():
        d["boxes"] = d["boxes"] + rng.normal(0, box_sigma, d["boxes"].shape)
        d["boxes"][:, 2:] = np.maximum(d["boxes"][:, 2:], d["boxes"][:, :2])
        d["scores"] = d["scores"] + rng.normal(0, score_sigma, d["scores"].shape)
    return side


def away_from(rng, lo, hi, avoid, margin):
    while True:
        v = rng.uniform(lo, hi)
        if all(abs(v - a) > margin for a in avoid):
            return v


def _plus_one(side, rng):
    for d in side.values():
        d["boxes"][:, 2:] += 1.0


def _half_pixel_shift(side, rng):
    for d in side.values():
        d["boxes"] += 0.5


def _translation(side, rng):
    dx = away_from(rng, -40, 40, (0.0, 0.5, -0.5), 1.0)
    dy = away_from(rng, -40, 40, (0.0, 0.5, -0.5), 1.0)
    for d in side.values():
        d["boxes"][:, [0, 2]] += dx
        d["boxes"][:, [1, 3]] += dy
        if "keypoints" in d:
            d["keypoints"][..., 0] += dx
            d["keypoints"][..., 1] += dy


def _scale(side, rng):
    s = away_from(rng, 0.4, 2.5, (1.0,), 0.05)
    for d in side.values():
        d["boxes"] *= s
        if "keypoints" in d:
            d["keypoints"][..., :2] *= s


def _anisotropic_scale(side, rng):
    sx = rng.uniform(0.5, 2.0)
    sy = away_from(rng, 0.5, 2.0, (sx,), 0.08)
    for d in side.values():
        d["boxes"][:, [0, 2]] *= sx
        d["boxes"][:, [1, 3]] *= sy
        if "keypoints" in d:
            d["keypoints"][..., 0] *= sx
            d["keypoints"][..., 1] *= sy


def _xywh_as_xyxy(side, rng):
    for d in side.values():
        b = d["boxes"]
        d["boxes"] = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)  # (x1, y1, x2, y2) read as (x, y, w, h)


def _label_offset(side, rng):
    off = int(rng.choice([-1, 1, 2]))
    for d in side.values():
        d["labels"] = d["labels"] + off


def _label_permutation(side, rng):
    n = int(max(d["labels"].max() for d in side.values())) + 1
    perm = rng.permutation(n)
    while (perm == np.arange(n)).mean() > 0.5 or np.all(np.diff(perm) % n == (perm[1] - perm[0]) % n):
        perm = rng.permutation(n)
    for d in side.values():
        d["labels"] = perm[d["labels"]]


def _coco_category_ids(side, rng):
    for d in side.values():
        d["labels"] = np.array(COCO_IDS)[d["labels"]]


def _coco_index_offset(side, rng):
    """COCO ids written from a class order off by one: COCO_IDS[i + k] for COCO_IDS[i] (k = +1 or -1), the
    detections whose class falls off the end of the list dropped (as the background row would take them)."""
    k = int(rng.choice([-1, 1]))
    index = {c: i for i, c in enumerate(COCO_IDS)}
    for key, d in list(side.items()):
        j = np.array([index[int(c)] for c in d["labels"]]) + k
        keep = (j >= 0) & (j < len(COCO_IDS))
        side[key] = {f: v[keep] for f, v in d.items()}
        side[key]["labels"] = np.array(COCO_IDS)[j[keep]]


def _sparse_permutation(side, rng):
    """Every one of COCO's categories moved to another (a random derangement of the 80 ids)."""
    while True:
        perm = rng.permutation(len(COCO_IDS))
        if not (perm == np.arange(len(COCO_IDS))).any():
            break
    to = {c: COCO_IDS[perm[i]] for i, c in enumerate(COCO_IDS)}
    for d in side.values():
        d["labels"] = np.array([to[int(c)] for c in d["labels"]])


def _keypoint_half_pixel(side, rng):
    for d in side.values():
        d["keypoints"][..., :2] += 0.5


def _flip_off_by_one(side, rng):
    sign = float(rng.choice([-1.0, 1.0]))
    for d in side.values():
        d["keypoints"][..., 0] += sign


def _mask_paste(side, rng):
    # the same ellipse rasterised with a contour 0.4..0.9 px further out: only pixels near the contour change
    grow = rng.uniform(0.4, 0.9)
    for d in side.values():
        h, w = d["masks"].shape[1:]
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        cx, cy, ax, ay = (d["ellipse"][:, i, None, None] for i in range(4))
        d["masks"] = ((xx[None] - cx) / (ax + grow)) ** 2 + ((yy[None] - cy) / (ay + grow)) ** 2 <= 1.0


def _threshold_or_topk(side, rng):
    if rng.uniform() < 0.5:
        t = rng.uniform(0.2, 0.6)
        keeps = {k: d["scores"] > t for k, d in side.items()}
    else:
        cap = int(rng.integers(8, 15))
        keeps = {k: np.argsort(-d["scores"], kind="stable")[:cap] for k, d in side.items()}
    for k, keep in keeps.items():
        side[k] = {f: v[keep] for f, v in side[k].items()}


def _numerical_noise(side, rng):
    sig = rng.uniform(0.01, 0.2)
    for d in side.values():
        d["boxes"] = d["boxes"] + rng.normal(0, sig, d["boxes"].shape)
        d["boxes"][:, 2:] = np.maximum(d["boxes"][:, 2:], d["boxes"][:, :2])
        d["scores"] = d["scores"] + rng.normal(0, 1e-3, d["scores"].shape)


#: Each cause's own formula, with its random magnitude drawn from the generator it is given.
FORMULAS = {"plus_one": _plus_one, "half_pixel_shift": _half_pixel_shift, "translation": _translation,
            "scale": _scale, "anisotropic_scale": _anisotropic_scale, "xywh_as_xyxy": _xywh_as_xyxy,
            "label_offset": _label_offset, "label_permutation": _label_permutation,
            "coco_category_ids": _coco_category_ids, "keypoint_half_pixel": _keypoint_half_pixel,
            "flip_off_by_one": _flip_off_by_one, "mask_paste": _mask_paste, "threshold_or_topk": _threshold_or_topk,
            "numerical_noise": _numerical_noise}


#: Label mistakes on files shaped like a converted model's output: name -> (the cause to find, its formula, the
#: generator's options). Sparse: COCO's 80 classes, each at most once per image; "one per category": one image,
#: every category once.
LABEL_VARIANTS = {
    "label_offset_coco_index": ("label_offset", _coco_index_offset, dict(sparse=True, coco_ids=True)),
    "label_offset_one_per_category": ("label_offset", _coco_index_offset, dict(sparse=True, coco_ids=True, n_images=1)),
    "label_offset_sparse": ("label_offset", _label_offset, dict(sparse=True)),
    "label_permutation_sparse": ("label_permutation", _sparse_permutation, dict(sparse=True, coco_ids=True)),
    "label_permutation_one_per_category": ("label_permutation", _sparse_permutation,
                                           dict(sparse=True, coco_ids=True, n_images=1)),
    "coco_category_ids_sparse": ("coco_category_ids", _coco_category_ids, dict(sparse=True)),
    "coco_category_ids_one_per_category": ("coco_category_ids", _coco_category_ids, dict(sparse=True, n_images=1)),
}


def _flip_and_map_back(d, width, flip_minus_one, back_minus_one):
    """One image's boxes (and keypoints) flipped by one rule and mapped back by the other, written out corner by
    corner: x -> W - x (continuous coordinates) or x -> W - 1 - x (pixel indices). A flipped box's x1 is the
    flipped x2 and its x2 the flipped x1; COCO's keypoints swap left and right (1 <-> 2, 3 <-> 4, ..., 15 <-> 16)
    on each flip, so two flips bring every keypoint back to its own index."""
    def fx(x, minus_one):
        return width - x - (1.0 if minus_one else 0.0)

    b = d["boxes"]
    once = np.stack([fx(b[:, 2], flip_minus_one), b[:, 1], fx(b[:, 0], flip_minus_one), b[:, 3]], 1)
    d["boxes"] = np.stack([fx(once[:, 2], back_minus_one), once[:, 1], fx(once[:, 0], back_minus_one), once[:, 3]], 1)
    if "keypoints" in d:
        swap = [0] + [i + 1 if i % 2 else i - 1 for i in range(1, 17)]
        kp = d["keypoints"].copy()
        kp[..., 0] = fx(kp[..., 0], flip_minus_one)
        kp = kp[:, swap]
        kp[..., 0] = fx(kp[..., 0], back_minus_one)
        d["keypoints"] = kp[:, swap]


def _flip_boxes(side, rng, images=None):
    """Boxes (and keypoints) flipped with W - x and mapped back with W - 1 - x (x - 1), or the other way (x + 1),
    on ``images`` (default: all)."""
    flip_minus_one = bool(rng.uniform() < 0.5)
    for k, d in side.items():
        if images is None or k in images:
            _flip_and_map_back(d, W, flip_minus_one, not flip_minus_one)


def _flip_some_images(side, rng):
    """Test-time flip: a random proper subset of the images was flipped (and mapped back by the wrong rule)."""
    keys = list(side)
    n = int(rng.integers(1, len(keys)))
    _flip_boxes(side, rng, set(rng.permutation(keys)[:n].tolist()))


def _translation_one_px_in_x_and_some_y(side, rng):
    dx = float(rng.choice([-1.0, 1.0]))
    dy = float(rng.choice([-1.0, 1.0])) * rng.uniform(0.6, 30)
    for d in side.values():
        d["boxes"][:, [0, 2]] += dx
        d["boxes"][:, [1, 3]] += dy


def _translation_in_x_only(side, rng):
    dx = away_from(rng, -40, 40, (0.0, 0.5, -0.5, 1.0, -1.0), 0.5)
    for d in side.values():
        d["boxes"][:, [0, 2]] += dx


#: Box flips mapped back by the wrong rule, and translations close to them: name -> (the cause to find, its
#: formula, the generator's options).
FLIP_VARIANTS = {
    "flip_off_by_one_boxes": ("flip_off_by_one", _flip_boxes, {}),
    "flip_off_by_one_boxes_and_keypoints": ("flip_off_by_one", _flip_boxes, dict(keypoints=True)),
    "flip_off_by_one_flipped_images_only": ("flip_off_by_one", _flip_some_images, dict(n_images=4)),
    "translation_one_px_in_x_and_some_y": ("translation", _translation_one_px_in_x_and_some_y, {}),
    "translation_in_x_only": ("translation", _translation_in_x_only, {}),
}
VARIANTS = {**LABEL_VARIANTS, **FLIP_VARIANTS}


def apply(cause, side, rng):
    """Apply ``cause`` (or a variant) to ``side`` in place with a random magnitude; its own formulas, not
    the package's. A rescale or an offset moves keypoints with the boxes, as a missing post-processing step would."""
    (VARIANTS[cause][1] if cause in VARIANTS else FORMULAS[cause])(side, rng)
    return side


def expected(cause):
    """The cause a case (or a variant) must be diagnosed as."""
    return VARIANTS[cause][0] if cause in VARIANTS else cause


def strip(side):
    return {k: {f: v for f, v in d.items() if f != "ellipse"} for k, d in side.items()}


NEEDS = {"keypoint_half_pixel": dict(keypoints=True), "flip_off_by_one": dict(keypoints=True),
         "mask_paste": dict(masks=True, n_images=2, size=(96, 128)), "coco_category_ids": dict(classes=80)}


def case(cause, seed, extra=(), box_sigma=0.02, score_sigma=1e-4):
    """A reference and a candidate with ``cause`` (and the ``extra`` causes) applied, then noise of ``box_sigma``
    px on the boxes and ``score_sigma`` on the scores (none added on top of numerical_noise)."""
    rng = np.random.default_rng(seed)
    opts = {}
    for c in (cause,) + tuple(extra):
        opts.update(VARIANTS[c][2] if c in VARIANTS else NEEDS.get(c, {}))
    ref = random_side(rng, **opts)
    cand = copy_side(ref)
    for c in (cause,) + tuple(extra):
        cand = apply(c, cand, rng)
    if cause != "numerical_noise":
        cand = mild_noise(cand, rng, box_sigma, score_sigma)
    return strip(ref), strip(cand)


STRUCTURED = ["plus_one", "half_pixel_shift", "scale", "anisotropic_scale", "translation", "xywh_as_xyxy",
              "label_offset", "label_permutation", "coco_category_ids", "keypoint_half_pixel", "flip_off_by_one",
              "mask_paste", "threshold_or_topk", "numerical_noise"]


def test_vocabulary_is_documented():
    required = {"identical", "plus_one", "half_pixel_shift", "scale", "anisotropic_scale", "translation",
                "xywh_as_xyxy", "label_offset", "label_permutation", "coco_category_ids", "keypoint_half_pixel",
                "flip_off_by_one", "mask_paste", "threshold_or_topk", "numerical_noise"}
    assert required <= set(Dx.CAUSES)
    for name, info in Dx.CAUSES.items():
        assert info.meaning and info.fingerprint and info.fix, name


_MISSES: dict = {}


def _misses(cause: str, seeds: range) -> list:
    """The seeds (with the top three names) where ``cause`` is not ranked first; each seed diagnosed once a run."""
    out = []
    for seed in seeds:
        if (cause, seed) not in _MISSES:
            ref, cand = case(cause, seed)
            d = Dx.diagnose(ref, cand)
            _MISSES[cause, seed] = None if d.top.name == cause else d.names[:3]
        if _MISSES[cause, seed] is not None:
            out.append((seed, _MISSES[cause, seed]))
    return out


@pytest.mark.parametrize("cause", STRUCTURED)
def test_each_cause_ranked_first_in_95_percent_of_the_first_50_seeds(cause):
    # make test-fast's share of the measurement below
    seeds = SEEDS[:50]
    wrong = _misses(cause, seeds)
    rate = 1 - len(wrong) / len(seeds)
    assert rate >= 0.95, f"{cause}: ranked first in {rate:.1%} of {len(seeds)} seeds; misses: {wrong[:5]}"


@pytest.mark.slow
@pytest.mark.parametrize("cause", STRUCTURED)
def test_each_cause_ranked_first_in_95_percent_of_200_seeds(cause):
    wrong = _misses(cause, SEEDS)
    rate = 1 - len(wrong) / len(SEEDS)
    assert rate >= 0.95, f"{cause}: ranked first in {rate:.1%} of {len(SEEDS)} seeds; misses: {wrong[:5]}"


@pytest.mark.parametrize("variant", sorted(LABEL_VARIANTS))
def test_label_causes_hold_when_categories_are_sparse(variant):
    # 80 classes with a few dozen detections per image, down to one detection per category: the label cause is
    # still ranked first, never numerical_noise
    seeds = range(100)
    wrong = []
    for seed in seeds:
        ref, cand = case(variant, seed)
        d = Dx.diagnose(ref, cand)
        if d.top.name != expected(variant):
            wrong.append((seed, d.names[:3]))
    rate = 1 - len(wrong) / len(seeds)
    assert rate >= 0.95, f"{variant}: ranked first in {rate:.1%} of {len(seeds)} seeds; misses: {wrong[:5]}"


@pytest.mark.parametrize("variant", sorted(FLIP_VARIANTS))
def test_flip_off_by_one_on_boxes_is_ranked_first_and_translation_stays_first(variant):
    # a flip mapped back by the other rule (x1 and x2 moved by exactly 1 px, y not at all, on every image or only
    # on the flipped ones) is flip_off_by_one, ranked before translation; a translation of 1 px in x with some y,
    # or of any other amount in x alone, stays translation
    # (a translation of a few px can push a tiny box below the matching IoU; when that box is the lowest scored
    # one, threshold_or_topk comes first: 1 seed in 100 here, so translations are held to 97%, flips to all)
    seeds = range(100)
    want = expected(variant)
    wrong = []
    for seed in seeds:
        ref, cand = case(variant, 7000 + seed)
        d = Dx.diagnose(ref, cand)
        if d.top.name != want:
            wrong.append((seed, d.names[:3]))
        if want == "translation":
            assert d.top.name != "flip_off_by_one", (seed, d.summary())
    allowed = 0 if want == "flip_off_by_one" else 3
    assert len(wrong) <= allowed, f"{variant}: {len(wrong)} of {len(seeds)} seeds not ranked {want} first: {wrong[:5]}"


def test_flip_off_by_one_evidence_tells_it_from_a_translation():
    ref, cand = case("flip_off_by_one_boxes", 3)
    d = Dx.diagnose(ref, cand)
    # replay the generator: the direction it drew decides the sign (W - x then W - 1 - x: -1; the other way: +1)
    rng = np.random.default_rng(3)
    random_side(rng)
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    flip = d.causes[0]
    assert flip.name == "flip_off_by_one" and "translation" in d.names[1:3], d.names
    assert flip.evidence["dx"] == pytest.approx(sign, abs=0.02) and abs(flip.evidence["dy"]) < 0.02
    assert flip.evidence["images_shifted"] == flip.evidence["images"] == len(ref)
    assert "arbitrary (dx, dy)" in flip.evidence["tells_apart_from_translation"]
    assert "left and right keypoints" in flip.evidence["tells_apart_from_translation"]
    translation = d.causes[d.names.index("translation")]
    assert translation.evidence["flip_off_by_one_fits"] is True
    assert translation.evidence["tells_apart_from_flip_off_by_one"] == flip.evidence["tells_apart_from_translation"]
    assert "inference_difference" not in d.names  # (numerical_noise stays: the generator's 0.02 px jitter)


def test_flip_off_by_one_on_some_images_names_them():
    ref, cand = case("flip_off_by_one_flipped_images_only", 11)
    d = Dx.diagnose(ref, cand)
    moved = sorted(k for k in ref if abs(float(np.median(cand[k]["boxes"][:, 0] - ref[k]["boxes"][:, 0]))) > 0.5)
    assert 0 < len(moved) < len(ref)
    assert d.top.name == "flip_off_by_one" and d.top.evidence["images_shifted"] == len(moved), d.summary()
    assert f"{len(moved)} of {len(ref)} images" in d.top.explanation
    # the other images unchanged: no translation, and only the generator's 0.02 px jitter left over
    assert d.names in (["flip_off_by_one"], ["flip_off_by_one", "numerical_noise"]), d.names
    assert d.causes[-1].evidence.get("max_box_residual_px", 0.0) < 0.2


@pytest.mark.parametrize("field", ["boxes", "keypoints"])
@pytest.mark.parametrize("shift", [-1.0, 1.0])
def test_injected_flip_off_by_one_is_ranked_first_over_seeds(field, shift):
    wrong = []
    for seed in range(50):
        rng = np.random.default_rng(9000 + seed)
        ref = strip(random_side(rng, keypoints=True))
        images = None if seed % 2 else sorted(ref)[: max(1, len(ref) // 2)]
        cand = Dx.inject(ref, "flip_off_by_one", shift=shift, field=field, images=images)
        cand = Dx.inject(cand, "numerical_noise", sigma=0.02, score_sigma=1e-4, seed=seed)
        d = Dx.diagnose(ref, cand)
        if d.top.name != "flip_off_by_one":
            wrong.append((seed, d.names[:3]))
    assert not wrong, f"{field}, shift {shift}: {len(wrong)} of 50 seeds missed: {wrong[:5]}"


def test_injected_flip_off_by_one_refuses_unknown_fields():
    ref = strip(random_side(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="flip_off_by_one: field must be 'keypoints' or 'boxes'; got 'masks'"):
        Dx.inject(ref, "flip_off_by_one", field="masks")
    with pytest.raises(ValueError, match="flip_off_by_one: images must be a list of image ids, got 3"):
        Dx.inject(ref, "flip_off_by_one", field="boxes", images=3)
    with pytest.raises(ValueError, match="flip_off_by_one needs keypoints; image 0 has none"):
        Dx.inject(ref, "flip_off_by_one")


GEOMETRIC = ["scale", "anisotropic_scale", "translation", "half_pixel_shift", "plus_one", "xywh_as_xyxy"]
LABELS = ["label_offset", "label_permutation", "coco_category_ids", "label_offset_coco_index",
          "label_permutation_sparse", "coco_category_ids_sparse"]
MIXED = [(g, lab) for g in GEOMETRIC for lab in LABELS]


@pytest.mark.parametrize("pair", MIXED, ids=["+".join(p) for p in MIXED])
def test_geometric_and_label_causes_together_under_float_noise(pair):
    # each geometric cause with each label cause, candidate boxes jittered by N(0, 0.003 px) and scores by 1e-6
    # (what two frameworks' float arithmetic leaves): both named among the top 3
    seeds = range(40)
    missed = []
    want = {pair[0], expected(pair[1])}
    for seed in seeds:
        ref, cand = case(pair[0], 5000 + seed, extra=(pair[1],), box_sigma=0.003, score_sigma=1e-6)
        names = Dx.diagnose(ref, cand).names
        if not want <= set(names[:3]):
            missed.append((seed, names[:4]))
    assert len(missed) <= 0.05 * len(seeds), f"{pair}: {len(missed)} of {len(seeds)} missed, e.g. {missed[:3]}"


PAIRS = [("scale", "label_offset"), ("plus_one", "threshold_or_topk"), ("half_pixel_shift", "coco_category_ids"),
         ("translation", "label_permutation"), ("anisotropic_scale", "keypoint_half_pixel"),
         ("plus_one", "half_pixel_shift"), ("xywh_as_xyxy", "label_offset"), ("scale", "translation"),
         ("mask_paste", "label_offset"), ("flip_off_by_one", "threshold_or_topk")]


@pytest.mark.parametrize("pair", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_two_causes_together_are_both_found(pair):
    seeds = range(50)
    missed = []
    for seed in seeds:
        ref, cand = case(pair[0], seed, extra=pair[1:])
        names = Dx.diagnose(ref, cand).names
        if not set(pair) <= set(names):
            missed.append((seed, names))
    assert len(missed) <= 0.05 * len(seeds), f"{pair}: {len(missed)} of {len(seeds)} missed, e.g. {missed[:3]}"


def test_identical_inputs_are_identical():
    for seed in range(20):
        ref, _ = case("plus_one", seed)
        d = Dx.diagnose(ref, copy_side(ref))
        assert d.names == ["identical"]
        assert d.n_matched == d.n_reference == d.n_candidate


def test_unrelated_sets_are_called_unrelated_not_explained():
    for seed in range(50):
        rng = np.random.default_rng(10_000 + seed)
        ref = random_side(rng, n_images=3)
        cand = random_side(rng, n_images=3)
        d = Dx.diagnose(ref, cand)
        assert d.names == ["unrelated"], (seed, d.names)


def test_fix_and_evidence_carry_the_numbers():
    ref, cand = case("scale", 3)
    d = Dx.diagnose(ref, cand)
    rng = np.random.default_rng(3)
    random_side(rng)  # replay the generator to recover the factor it drew
    s = away_from(rng, 0.4, 2.5, (1.0,), 0.05)
    assert d.top.evidence["factor"] == pytest.approx(s, rel=1e-3)
    assert "rescale" in d.top.fix
    ref, cand = case("label_offset", 5)
    top = Dx.diagnose(ref, cand).top
    diffs = {int(c - r) for r, c in zip(ref[0]["labels"], cand[0]["labels"])}
    assert diffs == {top.evidence["offset"]}


def test_residuals_are_candidate_minus_reference():
    ref, cand = case("plus_one", 1)
    d = Dx.diagnose(ref, cand)
    assert d.n_matched == d.n_reference
    torch.testing.assert_close(d.residuals["dx2"], d.pairs["cand_boxes"][:, 2] - d.pairs["ref_boxes"][:, 2])
    assert float(d.residuals["dx2"].median()) == pytest.approx(1.0, abs=0.05)
    assert float(d.residuals["dx1"].abs().median()) < 0.05
    assert set(d.residuals["level"].unique().tolist()) <= {2.0, 3.0, 4.0, 5.0}


def test_coco_files_and_tensor_forms_give_the_same_diagnosis(tmp_path):
    ref, cand = case("plus_one", 7, extra=("label_offset",))

    def coco(side):
        return [{"image_id": int(k), "category_id": int(l), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                 "score": float(s)} for k, d in side.items()
                for b, s, l in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist())]

    (tmp_path / "r.json").write_text(json.dumps(coco(ref)))
    (tmp_path / "c.json").write_text(json.dumps(coco(cand)))
    a = Dx.diagnose(str(tmp_path / "r.json"), str(tmp_path / "c.json"))
    b = Dx.diagnose(ref, cand)
    assert set(a.names) == set(b.names) >= {"plus_one", "label_offset"}
    assert a.n_matched == b.n_matched


def test_inject_agrees_with_the_independent_generator():
    rng = np.random.default_rng(0)
    ref = random_side(rng, keypoints=True, classes=80)
    for cause, kw in [("plus_one", {}), ("scale", {"factor": 0.8}), ("xywh_as_xyxy", {}),
                      ("coco_category_ids", {}), ("keypoint_half_pixel", {})]:
        injected = Dx.inject(strip(ref), cause, **kw)
        assert Dx.diagnose(strip(ref), injected).top.name == cause


def test_a_side_with_no_detections_is_described():
    ref, _ = case("plus_one", 0)
    empty = {k: {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)} for k in ref}
    d = Dx.diagnose(ref, empty)
    assert d.names == ["no_detections"] and d.n_candidate == 0 and "candidate" in d.top.explanation.lower()
    d = Dx.diagnose([], [])
    assert d.names == ["no_detections"] and "both" in d.top.explanation.lower()


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
GOOD = {"image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40], "score": 0.9}


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_malformed_json_names_the_file_and_position(tmp_path):
    p = write(tmp_path, "bad.json", '[{"image_id": 1, "bbox": [1, 2, 3, 4],')
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON \(line 1"):
        Dx.diagnose(p, [GOOD])


@pytest.mark.parametrize("entry,match", [
    ({k: v for k, v in GOOD.items() if k != "bbox"}, r"entry 1: missing field 'bbox'"),
    ({**GOOD, "bbox": [10, 20, -5, 40]}, r"entry 1 \(image_id 1\): field 'bbox' has a negative width"),
    ({**GOOD, "bbox": [10, 20, 5]}, r"entry 1 \(image_id 1\): field 'bbox' must be \[x, y, width, height\]"),
    ({**GOOD, "score": "high"}, r"entry 1 \(image_id 1\): field 'score' must be a number, got 'high'"),
    ({**GOOD, "category_id": 2.5}, r"entry 1 \(image_id 1\): field 'category_id' must be an integer"),
])
def test_bad_entries_name_file_entry_and_field(tmp_path, entry, match):
    p = write(tmp_path, "cand.json", json.dumps([GOOD, entry]))
    with pytest.raises(ValueError, match=r"cand\.json: " + match):
        Dx.diagnose([GOOD], p)


def test_mismatched_image_ids_are_refused_with_both_sets():
    other = {**GOOD, "image_id": 2}
    with pytest.raises(ValueError, match=r"share no image id: reference has 1, candidate has 2"):
        Dx.diagnose([GOOD], [other])


def test_tensor_boxes_with_negative_width_are_refused():
    with pytest.raises(ValueError, match=r"candidate: image 0: field 'boxes' row 0 has a negative width"):
        Dx.diagnose({"boxes": [[0, 0, 5, 5]]}, {"boxes": [[5, 0, 0, 5]]})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.json: no such file \(the reference; expected a COCO results"):
        Dx.diagnose(str(tmp_path / "nope.json"), [GOOD])


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def test_cli_diagnoses_two_files(tmp_path, capsys):
    ref, cand = case("scale", 11, extra=("label_offset",))

    def coco(side):
        return [{"image_id": int(k), "category_id": int(l), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                 "score": float(s)} for k, d in side.items()
                for b, s, l in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist())]

    r = write(tmp_path, "ref.json", json.dumps(coco(ref)))
    c = write(tmp_path, "cand.json", json.dumps(coco(cand)))
    assert cli(["diagnose", r, c]) == 1
    text = capsys.readouterr().out
    assert "scale" in text and "label_offset" in text and "fix:" in text
    assert cli(["diagnose", r, c, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert {x["name"] for x in out["causes"]} >= {"scale", "label_offset"}
    assert cli(["diagnose", r, r]) == 0
    assert "identical" in capsys.readouterr().out
    bad = write(tmp_path, "bad.json", "{")
    assert cli(["diagnose", r, bad]) == 2
    err = capsys.readouterr().err
    assert "bad.json: not valid JSON" in err


def test_an_image_missing_on_one_side_is_noted_not_refused():
    ref, cand = case("label_offset", 2)
    last = max(cand)
    del cand[last]
    d = Dx.diagnose(ref, cand)
    assert d.top.name == "label_offset"
    assert any("reference detections only" in n and str(last) in n for n in d.notes), d.notes
    assert d.unmatched["reference"]["count"] == len(ref[last]["boxes"])


def test_coco_results_round_trip_and_detectron_widths():
    ref, _ = case("keypoint_half_pixel", 4)
    results = Dx.to_coco_results(ref)
    assert len(results) == sum(len(d["boxes"]) for d in ref.values())
    back = Dx.load_detections(json.loads(json.dumps(results)))
    for k, d in ref.items():
        torch.testing.assert_close(back.images[k].boxes, torch.as_tensor(d["boxes"], dtype=torch.float64))
        torch.testing.assert_close(back.images[k].keypoints, torch.as_tensor(d["keypoints"], dtype=torch.float64))
    # Detectron's export adds 1 to w and h; read back as continuous boxes that is exactly the plus_one fingerprint
    legacy = Dx.to_coco_results(ref, legacy_plus_one=True)
    first = ref[0]["boxes"][0]
    assert legacy[0]["bbox"][2] == pytest.approx(first[2] - first[0] + 1)
    assert Dx.diagnose(results, legacy).top.name == "plus_one"
