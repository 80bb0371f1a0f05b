"""Why do two sets of detections for the same images differ?  Name the convention mistake from its fingerprint.

``diagnose(reference, candidate)`` matches detections one to one per image (by box IoU, ignoring labels;
:mod:`explainer.diagnosis.matching`, which aligns the sides first when a large mistake keeps them apart), fits every
hypothesis of :data:`CAUSES` (:mod:`explainer.diagnosis.causes`) to the matched pairs, looks at what the unmatched
detections have in common, and returns a :class:`Diagnosis`: the causes ranked, each with its evidence in
numbers and the fix. The causes are fitted on the matched pairs in their original coordinates.

Each side is detections for one or more images, in any form :func:`load_detections` reads
(:mod:`explainer.diagnosis.detections`): a COCO result list or JSON file, dicts of tensors per image, an N x 4..6 tensor.
Every field is compared: boxes, scores, labels (:mod:`explainer.diagnosis.label_causes`), keypoints and masks
(:mod:`explainer.diagnosis.field_causes`); ``identical`` means that all of them agree, every value is finite and every
detection has a partner. Both sides are held as stacks of every detection, so the cost follows the number of
detections and not of images. :func:`inject` (:mod:`explainer.diagnosis.injection`) applies a cause to detections, for
experiments and the course.

This module also hands on those modules' public names, so that ``from explainer import diagnose as D`` reaches
everything a reader needs. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from explainer._json import jsonable
from explainer._text import printable
from explainer._threads import single_thread
from explainer._validate import image_size as _image_size
from explainer.diagnosis.causes import (
    BOX_ATOL,
    CAUSES,
    FLIP_VS_TRANSLATION,
    RTOL,
    SCORE_ATOL,
    UNRELATED_BELOW,
    Cause,
    CauseInfo,
    make_cause,
)
from explainer.diagnosis.cost import AGREEMENT_SCORE, APCost, ap_cost
from explainer.diagnosis.detections import (
    Detections,
    FlatDetections,
    ImageDetections,
    detections_from_json,
    load_detections,
    to_coco_results,
)
from explainer.diagnosis.field_causes import Fields, keypoint_causes, mask_causes, non_finite, non_finite_rows
from explainer.diagnosis.injection import INJECTIONS, inject
from explainer.diagnosis.label_causes import label_causes
from explainer.diagnosis.matching import (
    MATCH_IOU,
    Match,
    align_and_match,
    matched_pairs,
    residuals,
    unmatched,
    xyxy_read_as_xywh,
)

__all__ = [
    "CAUSES",
    "CauseInfo",
    "Cause",
    "Diagnosis",
    "Detections",
    "ImageDetections",
    "load_detections",
    "detections_from_json",
    "to_coco_results",
    "diagnose",
    "inject",
    "INJECTIONS",
    "MATCH_IOU",
    "UNRELATED_BELOW",
    "BOX_ATOL",
    "SCORE_ATOL",
    "APCost",
    "AGREEMENT_SCORE",
]

#: The matched pairs (:func:`explainer.diagnosis.matching.matched_pairs`) and the unmatched detections per side.
Pairs = Dict[str, torch.Tensor]
Unmatched = Dict[str, Dict[str, Any]]


# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------
@dataclass
class Diagnosis:
    """What :func:`diagnose` found.

    ``causes``: ranked :class:`Cause` list (strongest first). ``pairs``: the matched pairs as tensors
    (``image`` index into ``image_ids``, ``ref_index``/``cand_index`` within the image as read, ``iou`` after
    alignment, ``ref_boxes``, ``cand_boxes``, ``ref_labels``, ``cand_labels``, ``ref_scores``, ``cand_scores``).
    ``residuals``: per matched pair, candidate - reference for ``dx1, dy1, dx2, dy2`` (px), the reference box's
    ``size`` (sqrt of its area, px) and its FPN ``level`` (2..5 by Detectron2's rule, canonical 224 at level 4).
    ``unmatched``: per side, the count and scores of the detections without a partner.
    ``alignment``: how the pairs were found (``identity``, ``affine``, ``xyxy-as-xywh``; ``no`` without pairs).
    ``masks``: when either side has masks, the pairs' masks as RLEs (``ref``, ``cand``) and their comparison
    (``compare``: per pair ``iou``, ``boundary_f``, ``area_ref``, ``area_cand``; see
    :func:`explainer.diagnosis.result_masks.compare_masks`).
    """

    causes: List[Cause]
    pairs: Dict[str, torch.Tensor]
    residuals: Dict[str, torch.Tensor]
    unmatched: Dict[str, Dict[str, Any]]
    n_reference: int
    n_candidate: int
    n_matched: int
    n_images: int
    image_ids: List[Any]
    alignment: str
    notes: List[str] = field(default_factory=list)
    masks: Optional[Dict[str, Any]] = None
    ap: Optional[APCost] = None

    @property
    def top(self) -> Cause:
        return self.causes[0]

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.causes]

    def pairs_by_difference(self) -> torch.Tensor:
        """Indices of the matched pairs, the largest coordinate difference |candidate - reference| first
        (ties: the lowest mask IoU first, then pair order)."""
        worst = (self.pairs["cand_boxes"] - self.pairs["ref_boxes"]).abs().amax(dim=1)
        order = torch.arange(len(worst))
        if self.masks is not None:
            iou = torch.from_numpy(self.masks["compare"]["iou"]).nan_to_num(1.0)
            order = torch.argsort(iou, stable=True)
        return order[torch.argsort(worst[order], descending=True, stable=True)]

    def summary(self) -> str:
        """The diagnosis in words: the counts, then each cause with its evidence and fix, then the notes."""
        lines = [f"{self.n_reference} reference and {self.n_candidate} candidate detections over {self.n_images} "
                 f"image(s); {self.n_matched} matched one to one (IoU >= {MATCH_IOU} after {self.alignment} alignment)."]
        for k, c in enumerate(self.causes, 1):
            ev = "; ".join(f"{key} = {_fmt(v)}" for key, v in c.evidence.items())
            lines.append(f"{k}. {c.name} (strength {c.strength:.2f}): {c.explanation}")
            if ev:
                lines.append(f"   evidence: {ev}")
            lines.append(f"   fix: {c.fix}")
        lines += [f"note: {n}" for n in self.notes]
        if self.ap is not None:
            lines += self.ap.summary()
        return "\n".join(printable(line) for line in lines)   # an image id cannot start a line of its own

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> Dict[str, Any]:
        """The diagnosis as JSON-ready values (what ``explainer diagnose --json`` prints)."""
        return {"causes": [c.to_dict() for c in self.causes], "n_reference": self.n_reference,
                "n_candidate": self.n_candidate, "n_matched": self.n_matched, "n_images": self.n_images,
                "alignment": self.alignment, "notes": list(self.notes),
                "unmatched": {k: {"count": v["count"]} for k, v in self.unmatched.items()},
                **({"ap": jsonable(self.ap.to_dict())} if self.ap is not None else {})}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _mad_sigma(x: torch.Tensor) -> float:
    if x.numel() == 0:
        return 0.0
    return float(1.4826 * (x - x.median()).abs().median())


def _fit_axis(r1: torch.Tensor, r2: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor,
              iters: int = 4) -> Tuple[float, float, float, torch.Tensor, torch.Tensor]:
    """Robust fit of q1 = a r1 + t, q2 = a r2 + t + p (one axis): returns a, t, p and per-pair residuals.

    Least squares by the 3 x 3 normal equations on reference coordinates centred on their mean (well
    conditioned at any magnitude), refitted on the pairs within 4 robust sigmas, ``iters`` times."""
    n = r1.numel()
    m = float(torch.cat([r1, r2]).mean())
    X = torch.zeros(2 * n, 3, dtype=torch.float64)
    X[:n, 0], X[n:, 0] = r1 - m, r2 - m
    X[:, 1] = 1.0
    X[n:, 2] = 1.0
    y = torch.cat([q1, q2])
    w = torch.ones(2 * n, dtype=torch.bool)
    sol = torch.tensor([1.0, m, 0.0], dtype=torch.float64)
    for _ in range(iters):
        if w.sum() < 3:
            break
        Xw = X * w[:, None]
        A, b = Xw.T @ X, Xw.T @ y
        try:
            sol = torch.linalg.solve(A, b)
        except RuntimeError:  # singular (every reference coordinate equal): least squares instead
            sol = torch.linalg.lstsq(X[w], y[w, None]).solution[:, 0]
        res = y - X @ sol
        s = _mad_sigma(res[w])
        w = res.abs() <= max(4.0 * s, 1e-6) + 1e-9
    res = y - X @ sol
    return float(sol[0]), float(sol[1] - sol[0] * m), float(sol[2]), res[:n], res[n:]


def _near(v: float, targets: Sequence[float], tol: float) -> Optional[float]:
    for t in targets:
        if abs(v - t) <= tol:
            return t
    return None



# --------------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------------
# the diagnosis
# --------------------------------------------------------------------------------------------------
@dataclass
class _Sides:
    """The two sides as stacks over one image list (``image_ids``: the reference's, then the candidate's own),
    their detections with a finite box and score (``ref``, ``cand``), and the cause that non-finite values give."""

    image_ids: List[Any]
    ref: FlatDetections
    cand: FlatDetections
    notes: List[str]
    non_finite: Optional[Cause]


def _side_by_side(ref: Detections, cand: Detections) -> _Sides:
    fr, fc = ref.flat(), cand.flat()
    ids_r, ids_c = fr.image_ids, fc.image_ids
    pos = {k: i for i, k in enumerate(ids_r)}
    if ids_r and ids_c and not any(k in pos for k in ids_c):
        raise ValueError(f"the two sides share no image id: {ref.source} has {_few(ids_r)}, {cand.source} has "
                         f"{_few(ids_c)}; compare results of the same images (is one side numbered from 0 "
                         f"and the other from 1, or by file name?)")
    in_c = set(ids_c)
    only_c = [k for k in ids_c if k not in pos]
    only_r = [k for k in ids_r if k not in in_c]
    notes = []
    if only_r:
        notes.append(f"{len(only_r)} image(s) have reference detections only: {_few(only_r)}")
    if only_c:
        notes.append(f"{len(only_c)} image(s) have candidate detections only: {_few(only_c)}")
    for k in only_c:
        pos[k] = len(pos)
    image_ids = ids_r + only_c
    cause = non_finite({"reference": fr, "candidate": fc})
    # the candidate's images renumbered into the shared list (its rows regrouped), non-finite rows set aside
    to_shared = torch.tensor([pos[k] for k in ids_c], dtype=torch.long)
    img_c = to_shared[fc.image] if len(fc) else fc.image
    sides = []
    for f, img in ((fr, fr.image), (fc, img_c)):
        ok = torch.ones(len(f), dtype=torch.bool)
        if cause is not None:
            bad = non_finite_rows(f)
            ok = ~(bad["boxes"] | bad["scores"])
        rows = ok.nonzero()[:, 0]
        rows = rows[torch.argsort(img[rows], stable=True)]
        sides.append(f.rows(rows, img[rows], image_ids))
    return _Sides(image_ids, sides[0], sides[1], notes, cause)


def diagnose(reference: Any, candidate: Any, image_size: Optional[Sequence[int]] = None, seed: int = 0,
             gt: Any = None, agreement_score: Optional[float] = None) -> Diagnosis:
    """Diagnose why ``candidate`` differs from ``reference`` (see the module docstring).

    Image ids: the two sides must share at least one (otherwise a ``ValueError`` lists both sides' ids); an
    image present on one side only has no detections on the other, and ``Diagnosis.notes`` says which.
    ``image_size`` (height, width), optional: with it the evidence says whether a scale matches the image's
    aspect ratio (height and width swapped). ``seed`` fixes the random pairs of the robust alignment.

    ``gt``: COCO annotations (a path, the parsed dict or a pycocotools ``COCO``): ``Diagnosis.ap`` then holds
    what each cause costs in AP (:func:`explainer.diagnosis.cost.ap_cost`). ``agreement_score`` without ``gt``: the
    same measured against the reference's detections scored at or above it, as *agreement AP*.
    """
    ref = load_detections(reference, name="reference")
    cand = load_detections(candidate, name="candidate")
    size = _image_size(image_size) if image_size is not None else None
    if gt is not None and agreement_score is not None:
        raise ValueError("gt and agreement_score: give one (AP against ground truth, or agreement AP), not both")
    with single_thread():  # many small array operations: on busy cores a second thread mostly waits
        d = _diagnose(ref, cand, size, seed)
    if gt is not None or agreement_score is not None:
        d.ap = ap_cost(ref, cand, d, gt=gt, agreement_score=AGREEMENT_SCORE if agreement_score is None
                       else agreement_score, gt_name="gt")
    return d


def _diagnose(ref: Detections, cand: Detections, size: Optional[Tuple[int, int]], seed: int) -> Diagnosis:
    s = _side_by_side(ref, cand)
    extra = [s.non_finite] if s.non_finite is not None else []
    if len(s.ref) == 0 or len(s.cand) == 0:
        return _diagnosis(s, [_no_detections(len(s.ref), len(s.cand))] + extra, Match.none(), "no")
    alignment, match = align_and_match(s.ref, s.cand, seed=seed)
    pairs, left = matched_pairs(s.ref, s.cand, match), unmatched(s.ref, s.cand, match)
    need = min(len(s.ref), len(s.cand))
    masks = None
    if match.n < UNRELATED_BELOW * need:
        ev = {"matched": match.n, "reference": len(s.ref), "candidate": len(s.cand),
              "matched_fraction": match.n / max(need, 1)}
        expl = (f"Only {match.n} of {need} possible pairs match at IoU >= {MATCH_IOU}, even after trying a scale, "
                f"translation and xywh alignment: the two sides are not the same detections.")
        causes = [make_cause("unrelated", 1.0 - match.n / max(need, 1), ev, expl)]
    else:
        causes, masks = _fingerprints(s, pairs, left, size)
    return _diagnosis(s, causes + extra, match, alignment, pairs, left, masks)


def _diagnosis(s: _Sides, causes: List[Cause], match: Match, alignment: str, pairs: Optional[Pairs] = None,
               left: Optional[Unmatched] = None, masks: Optional[Dict[str, Any]] = None) -> Diagnosis:
    pairs = matched_pairs(s.ref, s.cand, match) if pairs is None else pairs
    left = unmatched(s.ref, s.cand, match) if left is None else left
    pairs["ref_index"] = s.ref.within_image()[pairs["ref_row"]]
    pairs["cand_index"] = s.cand.within_image()[pairs["cand_row"]]
    causes.sort(key=lambda c: -c.strength)
    return Diagnosis(causes, pairs, residuals(pairs), left, len(s.ref), len(s.cand), match.n, len(s.image_ids),
                     s.image_ids, alignment, s.notes, masks)


def _no_detections(n_r: int, n_c: int) -> Cause:
    ev = {"reference": n_r, "candidate": n_c}
    if n_r == n_c:
        return make_cause("no_detections", 1.0, ev, "Both sides have no detections: nothing to compare.")
    which, other = ("the reference", n_c) if n_r == 0 else ("the candidate", n_r)
    return make_cause("no_detections", 1.0, ev, f"{which.capitalize()} has no detections while the other side has {other}.")


def _fingerprints(s: _Sides, pairs: Pairs, left: Unmatched, image_size: Optional[Tuple[int, int]]
                  ) -> Tuple[List[Cause], Optional[Dict[str, Any]]]:
    """Every cause whose fingerprint the matched pairs and the unmatched detections show; "identical" if none."""
    geo = _geometry_causes(pairs, image_size)
    causes: List[Cause] = list(geo["causes"])
    labels, changed = label_causes(pairs)
    causes += labels
    _flood_evidence(causes, left, len(s.cand))
    causes += _set_causes(s.ref, s.cand, pairs, left)
    fields = Fields()
    causes += keypoint_causes(s.ref, s.cand, pairs, geo, fields)
    found, masks = mask_causes(s.ref, s.cand, pairs, geo["agree"], fields)
    causes += found
    missing = fields.cause()
    if missing is not None:
        causes.append(missing)
    causes += _noise_causes(pairs, geo, causes, changed, left)
    if not causes and s.non_finite is None:
        n_m = len(pairs["image"])
        fields_seen = ["boxes", "scores", "labels"] + [f for f, side in (("keypoints", s.ref.keypoints),
                                                                           ("masks", s.ref.masks)) if side is not None]
        causes = [make_cause("identical", 1.0, {"matched": n_m, "max_box_diff_px": geo["max_abs"],
                                                "fields_compared": fields_seen},
                             f"All {n_m} detections match with the same labels, boxes within {BOX_ATOL:g} px and "
                             f"scores within {SCORE_ATOL:g} (plus {RTOL:g} of their magnitude); compared: "
                             f"{', '.join(fields_seen)}.")]
    return causes, masks


def _few(ids: Sequence[Any], k: int = 5) -> str:
    s = ", ".join(str(i)[:40] for i in list(ids)[:k])
    return s + (f", ... ({len(ids)} in all)" if len(ids) > k else "")


def _close(d: torch.Tensor, a: torch.Tensor, b: torch.Tensor, atol: float) -> torch.Tensor:
    """Where |d| is within ``atol`` plus RTOL times the larger of |a| and |b|."""
    return d.abs() <= atol + RTOL * torch.maximum(a.abs(), b.abs())


#: A flip mapped back with W - 1 - x against W - x: per pair the x shift must be within this of +-1 (and y of 0).
FLIP_TOL_PX = 0.15
#: ... on at least this share of the pairs (the others unchanged), each image either wholly shifted or not at all.
FLIP_EXPLAINED = 0.9


def _flip_shift(d: torch.Tensor, image: torch.Tensor) -> Optional[Dict[str, Any]]:
    """The fingerprint of a flip mapped back by the other rule, or None.

    Flipping a box with x1' = W - x2, x2' = W - x1 (continuous coordinates) and mapping it back with
    x -> W - 1 - x (pixel indices) gives W - 1 - (W - x1) = x1 - 1 and x2 - 1: both x corners move by -1, y is
    unchanged; the rules the other way round move both by +1. ``d``: candidate - reference, Tensor[N, 4];
    ``image``: each pair's image. Returns the per-pair shift (Tensor[N], 0 or the sign), the sign, the share of
    pairs explained and the images shifted, when every image is either shifted or unchanged."""
    n = d.shape[0]
    if n == 0:
        return None
    best: Optional[Dict[str, Any]] = None
    for sign in (-1.0, 1.0):
        moved = ((d[:, [0, 2]] - sign).abs() <= FLIP_TOL_PX).all(1) & (d[:, [1, 3]].abs() <= FLIP_TOL_PX).all(1)
        still = (d.abs() <= FLIP_TOL_PX).all(1)
        if not moved.any():
            continue
        # each image's pairs are shifted or unchanged as a whole (a flip is per image)
        imgs = torch.unique(image)
        share_moved = torch.zeros(int(image.max()) + 1, dtype=torch.float64)
        share_moved.index_add_(0, image, moved.double())
        count = torch.bincount(image, minlength=len(share_moved)).double().clamp(min=1)
        flipped_image = (share_moved / count) >= 0.5
        per_pair = torch.where(flipped_image[image], moved, still)
        explained = float(per_pair.double().mean())
        if explained < FLIP_EXPLAINED:
            continue
        shift = torch.where(flipped_image[image], torch.full((n,), sign, dtype=d.dtype), torch.zeros(n, dtype=d.dtype))
        cand = {"sign": sign, "shift": shift, "explained": explained, "images_shifted": int(flipped_image[imgs].sum()),
                "images": len(imgs), "pairs_shifted": int((shift != 0).sum()), "moved": moved}
        if best is None or explained > best["explained"]:
            best = cand
    return best


def _flip_cause(flip: Dict[str, Any], d: torch.Tensor) -> Cause:
    sign, moved = flip["sign"], flip["moved"] & (flip["shift"] != 0)
    dd = d[moved]
    dx, dy = float(dd[:, [0, 2]].median()), float(dd[:, [1, 3]].median())
    which = ("every image" if flip["images_shifted"] == flip["images"]
             else f"{flip['images_shifted']} of {flip['images']} images (the flipped ones), the others unchanged")
    rule = ("the candidate maps back with W - 1 - x where the reference uses W - x" if sign < 0
            else "the candidate maps back with W - x where the reference uses W - 1 - x")
    ev = {"dx": dx, "dy": dy, "images_shifted": flip["images_shifted"], "images": flip["images"],
          "pairs_shifted": flip["pairs_shifted"], "pairs_explained": flip["explained"],
          "tells_apart_from_translation": FLIP_VS_TRANSLATION}
    return make_cause("flip_off_by_one", flip["explained"] * 0.99, ev,
                      f"On {which}, x1 and x2 move by exactly {sign:+.0f} px (median {dx:+.3g}) and y not at all "
                      f"(median {dy:+.3g}): a horizontal flip mapped back by the other rule ({rule}).")


def _add_flip(out: Dict[str, Any], d: torch.Tensor, image: torch.Tensor, rescaled: bool) -> None:
    """``flip_off_by_one`` added to the geometry's causes when its fingerprint fits (``d``: candidate - reference,
    Tensor[N, 4]; never on ``rescaled`` boxes); a translation of the same boxes is kept below it when every image
    moved, dropped otherwise."""
    flip = None if rescaled else _flip_shift(d, image)
    if flip is None:
        return
    out["flip_shift"] = flip["shift"]
    if flip["images_shifted"] < flip["images"]:  # some images moved and the others not: no translation
        out["causes"] = [c for c in out["causes"] if c.name != "translation"]
    for cause in out["causes"]:
        if cause.name == "translation":  # the same boxes, read as a flip: ranked below it, and says why
            cause.strength *= 0.8
            cause.evidence["flip_off_by_one_fits"] = True
            cause.evidence["tells_apart_from_flip_off_by_one"] = FLIP_VS_TRANSLATION
            cause.explanation += " The shift is exactly 1 px in x and 0 in y: the fingerprint of a flip off by one."
    out["causes"].append(_flip_cause(flip, d))


def _geometry_causes(p: Pairs, image_size: Optional[Tuple[int, int]]) -> Dict[str, Any]:
    r, c = p["ref_boxes"], p["cand_boxes"]
    n = r.shape[0]
    d = c - r
    max_abs = float(d.abs().max()) if n else 0.0
    equal = bool(_close(d, r, c, BOX_ATOL).all())
    out: Dict[str, Any] = {"causes": [], "max_abs": max_abs, "model": None, "sigma": 0.0, "explained": None,
                           "equal": equal, "agree": equal or max_abs <= 0.5}
    if n == 0 or equal:  # equal within tolerance at any magnitude: nothing to fit (and no rounding to misread)
        return out
    # xyxy written as xywh: x1, y1 agree and the candidate's x2 is x1 + the reference's x2
    xy = xyxy_read_as_xywh(r)
    res_xywh = (c - xy).abs().amax(1)
    ax, tx, px, rx1, rx2 = _fit_axis(r[:, 0], r[:, 2], c[:, 0], c[:, 2])
    ay, ty, py, ry1, ry2 = _fit_axis(r[:, 1], r[:, 3], c[:, 1], c[:, 3])
    res = torch.stack([rx1, ry1, rx2, ry2], 1)
    sigma = _mad_sigma(res.reshape(-1))
    tol = max(4.0 * sigma, 0.02)
    res_aff = res.abs().amax(1)
    sigma_xywh = _mad_sigma((c - xy).reshape(-1))
    tol_xywh = max(4.0 * sigma_xywh, 0.02)
    xywh_frac = float((res_xywh <= tol_xywh).double().mean())
    mag = max(float(r.abs().median()), 1.0)
    out.update(sigma=sigma, model=(ax, tx, px, ay, ty, py))
    if sigma_xywh < 0.25 * sigma and xywh_frac >= 0.5:
        out["explained"] = res_xywh <= tol_xywh
        out["sigma"] = sigma_xywh
        out["model"] = None
        out["xywh"] = True
        w_r, w_c = r[:, 2], c[:, 2] - c[:, 0]
        out["causes"].append(make_cause("xywh_as_xyxy", xywh_frac, {
            "pairs_explained": xywh_frac, "median_candidate_width_minus_reference_x2": float((w_c - w_r).median()),
            "median_x1_difference": float(d[:, 0].median())},
            f"The candidate's widths equal the reference's x2 (median difference "
            f"{float((w_c - w_r).median()):.3g} px) while x1, y1 agree: (x1, y1, x2, y2) was written as (x, y, w, h)."))
        return out
    explained = res_aff <= tol
    frac = float(explained.double().mean())
    out["explained"] = explained
    thr_px = max(0.3, 3.0 * sigma)

    def strength(effect_px: float) -> float:
        return frac * effect_px / (effect_px + 3.0 * sigma + 0.02)

    s_mean = 0.5 * (ax + ay)
    aniso_px = abs(ax - ay) * mag
    if aniso_px > thr_px:
        ev = {"sx": ax, "sy": ay, "pairs_explained": frac}
        hint = ""
        if image_size is not None:
            h, w = image_size
            if abs(ax / ay - (h / w) ** 2) < 0.05 * (h / w) ** 2 or abs(ax / ay - (w / h) ** 2) < 0.05 * (w / h) ** 2:
                hint = " The ratio sx/sy equals (H/W)^2 or (W/H)^2: height and width were swapped in the rescale."
                ev["swap_hint"] = True
        out["causes"].append(make_cause("anisotropic_scale", strength(aniso_px), ev,
                                        f"x is scaled by {ax:.4g} and y by {ay:.4g} (about origin 0, 0).{hint}"))
    elif abs(s_mean - 1.0) * mag > thr_px:
        out["causes"].append(make_cause("scale", strength(abs(s_mean - 1.0) * mag), {"factor": s_mean, "sx": ax, "sy": ay,
                                                                                       "pairs_explained": frac},
                                        f"Every coordinate is multiplied by {s_mean:.4g} (1/{1 / s_mean:.4g}): "
                                        f"a rescale between the network's input size and the image size."))
    sa = s_mean if abs(s_mean - 1.0) * mag > thr_px else 1.0
    ttol = 0.1 + 2.0 * sigma
    hx, hy = _near(tx, (0.5, -0.5, 0.5 * sa, -0.5 * sa), ttol), _near(ty, (0.5, -0.5, 0.5 * sa, -0.5 * sa), ttol)
    if sigma < 0.1 and hx is not None and hy is not None and hx * hy > 0:
        out["causes"].append(make_cause("half_pixel_shift", strength(0.5), {"dx": tx, "dy": ty, "pairs_explained": frac},
                                        f"All coordinates are shifted by ({tx:+.3g}, {ty:+.3g}) px: pixel indices on one "
                                        f"side, continuous coordinates on the other."))
    elif max(abs(tx), abs(ty)) > ttol:
        eff = math.hypot(tx, ty)
        out["causes"].append(make_cause("translation", strength(eff), {"dx": tx, "dy": ty, "pairs_explained": frac},
                                        f"Every box is moved by ({tx:+.4g}, {ty:+.4g}) px: an offset (padding or crop) "
                                        f"that one side does not undo."))
    _add_flip(out, d, p["image"], rescaled=sa != 1.0)
    ptol = 0.15 + 2.0 * sigma
    qx, qy = _near(px, (1.0, -1.0, sa, -sa), ptol), _near(py, (1.0, -1.0, sa, -sa), ptol)
    if sigma < 0.2 and qx is not None and qy is not None and qx * qy > 0:
        out["causes"].append(make_cause("plus_one", strength(1.0), {"dx2_minus_dx1": px, "dy2_minus_dy1": py,
                                                                    "pairs_explained": frac},
                                        f"x2 and y2 differ by ({px:+.3g}, {py:+.3g}) px more than x1 and y1: "
                                        f"inclusive corners (width = x2 - x1 + 1) on one side."))
    elif max(abs(px), abs(py)) > ptol:
        out["size_offset"] = (px, py)
    return out


def _flood_evidence(causes: List[Cause], unmatched: Unmatched, n_c: int) -> None:
    """A label offset with many extra candidate detections of one label: the background row read as a class."""
    lab = [c for c in causes if c.name in ("label_offset", "label_permutation")]
    u = unmatched["candidate"]
    if not lab or u["count"] < max(3, 0.3 * n_c):
        return
    ul = u["labels"]
    v, cnt = torch.unique(ul, return_counts=True)
    share = float(cnt.max()) / len(ul)
    if share >= 0.8:
        c = lab[0]
        c.evidence["extra_candidate_detections"] = int(len(ul))
        c.evidence["extra_share_of_one_label"] = share
        c.explanation += (f" The candidate also has {len(ul)} extra detections, {share:.0%} of them labelled "
                          f"{int(v[cnt.argmax()])}: the background row read as a class, as an unconverted "
                          f"classifier does.")


def _set_causes(R: FlatDetections, C: FlatDetections, p: Pairs, unmatched: Unmatched) -> List[Cause]:
    out = []
    nr, nc = R.counts(), C.counts()
    for side, other, mine, theirs in (("reference", "candidate", nr, nc), ("candidate", "reference", nc, nr)):
        u = unmatched[side]
        matched_scores = p["ref_scores"] if side == "reference" else p["cand_scores"]
        if u["count"] == 0 or matched_scores.numel() == 0:
            continue
        cut = float(matched_scores.min())
        below = float((u["scores"] <= cut + 1e-6).double().mean())
        # top-k: the other side holds at most k detections per image and the unmatched are ranked beyond them
        k = int(theirs.max()) if len(theirs) else 0
        beyond = float((u["rank"] >= k).double().mean()) if k else 0.0
        over = mine > k
        capped = bool(over.any()) and bool((theirs[over] == k).all())
        if below >= 0.9:
            ev = {"missing_from": other, "count": u["count"], "max_unmatched_score": float(u["scores"].max()),
                  "min_matched_score": cut, "fraction_below": below}
            out.append(make_cause("threshold_or_topk", below, ev,
                                  f"{u['count']} {side} detections have no partner, "
                                  f"{below:.0%} of them scored at or below {cut:.3g} (the lowest matched score): "
                                  f"the {other} keeps only detections above a score between "
                                  f"{float(u['scores'].max()):.3g} and {cut:.3g}."))
        elif capped and beyond >= 0.9:
            ev = {"missing_from": other, "count": u["count"], "per_image_cap": k, "fraction_beyond_cap": beyond}
            out.append(make_cause("threshold_or_topk", beyond, ev,
                                  f"The {other} holds at most {k} detections per image and the {u['count']} unmatched "
                                  f"{side} detections are ranked beyond that: a top-k cap."))
    if len(out) == 2:  # both sides lose low scores: one cause, the stronger evidence
        out = [max(out, key=lambda c: c.strength)]
    return out


def _box_residual(p: Pairs, geo: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
    """What the fitted geometry leaves of each pair's box difference (|.|, Tensor[N, 4]), and the tolerance for it."""
    r, c = p["ref_boxes"], p["cand_boxes"]
    if geo.get("flip_shift") is not None:  # a flip off by one on some images: the others unchanged
        pred = r.clone()
        pred[:, 0] += geo["flip_shift"]
        pred[:, 2] += geo["flip_shift"]
    elif geo["causes"] and geo["model"] is not None:
        ax, tx, px, ay, ty, py = geo["model"]
        pred = torch.stack([ax * r[:, 0] + tx, ay * r[:, 1] + ty, ax * r[:, 2] + tx + px, ay * r[:, 3] + ty + py], 1)
    else:
        pred = r
    return (c - pred).abs(), BOX_ATOL + RTOL * torch.maximum(pred.abs(), c.abs())


def _unexplained(found: List[Cause], changed: float, left: Unmatched, n: int) -> Dict[str, Any]:
    """Label changes and unmatched detections that no cause found so far explains."""
    names = {c.name for c in found}
    ev: Dict[str, Any] = {}
    if changed > 0 and not names & {"label_offset", "label_permutation", "coco_category_ids"}:
        ev["labels_changed"] = changed
    flood = any("extra_candidate_detections" in c.evidence for c in found)
    lost = {k: v["count"] for k, v in left.items() if v["count"] and not (k == "candidate" and flood)}
    if lost and "threshold_or_topk" not in names:
        ev["unmatched"] = lost
        ev["unmatched_share"] = sum(lost.values()) / max(n + sum(lost.values()), 1)
    return ev


def _noise_causes(p: Pairs, geo: Dict[str, Any], found: List[Cause], changed: float, left: Unmatched) -> List[Cause]:
    n = len(p["image"])
    if n == 0:
        return []
    ev = _unexplained(found, changed, left, n)
    sigma = geo["sigma"]
    ds = (p["cand_scores"] - p["ref_scores"]).abs()
    scores_ok = bool(_close(ds, p["ref_scores"], p["cand_scores"], SCORE_ATOL).all())
    if geo.get("xywh"):
        res, tol = torch.zeros(n, 4, dtype=torch.float64), torch.ones(n, 4, dtype=torch.float64)
    else:
        res, tol = _box_residual(p, geo)
    boxes_ok = bool((res <= tol).all())
    if boxes_ok and scores_ok and not ev:
        return []
    worst, max_ds, med_ds = float(res.max()), float(ds.max()), float(ds.median())
    big = float((res.amax(1) > 2.0).double().mean())
    ev.update({"box_residual_sigma_px": sigma, "max_box_residual_px": worst, "max_score_difference": max_ds,
               "median_score_difference": med_ds})
    if geo.get("size_offset") is not None:
        ev["size_offset_px"] = list(geo["size_offset"])
    lab, lost = ev.get("labels_changed", 0.0), ev.get("unmatched_share", 0.0)
    if sigma > 0.5 or big >= 0.05 or med_ds > 0.02 or geo.get("size_offset") is not None or lab >= 0.05 or lost >= 0.05:
        parts = []
        if big >= 0.05:
            parts.append(f"{big:.0%} of the pairs differ by more than 2 px beyond any global pattern")
        elif sigma > 0.5:
            parts.append(f"box residual spread {sigma:.3g} px")
        if med_ds > 0.02:
            parts.append(f"scores differ by {med_ds:.3g} (median)")
        if lab:
            parts.append(f"{lab:.1%} of the matched pairs change label without a pattern")
        if lost:
            parts.append(f"{', '.join(f'{v} {k}' for k, v in ev['unmatched'].items())} detections have no partner "
                         f"and no score or count pattern explains it")
        s = max(big, min(1.0, sigma / 2.0), min(1.0, med_ds * 10), lab, lost, 0.3)
        return [make_cause("inference_difference", 0.9 * s if not found else 0.5 * s, ev,
                           f"Matched detections differ without a global pattern: {'; '.join(parts) or 'box sizes'}.")]
    frac = float((res > tol).any(1).double().mean()) if not boxes_ok else float((ds > SCORE_ATOL).double().mean())
    extra = (f"; {lab:.1%} of the pairs change label" if lab else "") + (
        f"; {', '.join(f'{v} {k}' for k, v in ev['unmatched'].items())} detections unmatched" if lost else "")
    return [make_cause("numerical_noise", 0.5 * max(frac, 0.2, lab, lost), ev,
                       f"Small unstructured differences: boxes within {worst:.3g} px (spread {sigma:.3g} px) "
                       f"and scores within {max_ds:.3g}{extra}.")]
