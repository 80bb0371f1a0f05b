"""Why do two sets of detections for the same images differ?  Name the convention mistake from its fingerprint.

``diagnose(reference, candidate)`` matches detections one to one per image (by box IoU, ignoring labels;
:mod:`explainer.matching`, which aligns the sides first when a large mistake keeps them apart), fits every
hypothesis of :data:`CAUSES` (:mod:`explainer.causes`) to the matched pairs, looks at what the unmatched
detections have in common, and returns a :class:`Diagnosis`: the causes ranked, each with its evidence in
numbers and the fix. The causes are fitted on the matched pairs in their original coordinates.

Each side is detections for one or more images, in any form :func:`load_detections` reads
(:mod:`explainer.detections`): a COCO result list or JSON file, dicts of tensors per image, an N x 4..6 tensor.
:func:`inject` (:mod:`explainer.inject`) applies a cause to detections, for experiments and the course.

This module also hands on those modules' public names, so that ``from explainer import diagnose as D`` reaches
everything a reader needs. It is a little over 600 lines because the cause detectors stay together: they read
the same matched pairs and the same geometry fit, and one detector's verdict is another's evidence (a label
offset explains extra detections; a rescale explains moved keypoints). Nothing here imports matplotlib or
ipywidgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ._validate import image_size as _image_size
from .causes import BOX_ATOL, CAUSES, SCORE_ATOL, UNRELATED_BELOW, Cause, CauseInfo, make_cause
from .detections import Detections, ImageDetections, detections_from_json, load_detections, to_coco_results
from .inject import INJECTIONS, inject
from .labels import COCO_CATEGORY_IDS
from .masks import mask_iou
from .matching import (
    MATCH_IOU,
    Match,
    align_and_match,
    flat_index,
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
]

#: Mask evidence (where the differing pixels lie) is read from at most this many differing pairs.
MASK_PAIRS_EXAMINED = 2000

#: The matched pairs (:func:`explainer.matching.matched_pairs`), the unmatched detections per side
#: (:func:`explainer.matching.unmatched`), and one side's detections image by image.
Pairs = Dict[str, torch.Tensor]
Unmatched = Dict[str, Dict[str, Any]]
Side = Sequence[ImageDetections]


# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------
@dataclass
class Diagnosis:
    """What :func:`diagnose` found.

    ``causes``: ranked :class:`Cause` list (strongest first). ``pairs``: the matched pairs as tensors
    (``image`` index into ``image_ids``, ``ref_index``/``cand_index`` within the image, ``iou`` after
    alignment, ``ref_boxes``, ``cand_boxes``, ``ref_labels``, ``cand_labels``, ``ref_scores``, ``cand_scores``).
    ``residuals``: per matched pair, candidate - reference for ``dx1, dy1, dx2, dy2`` (px), the reference box's
    ``size`` (sqrt of its area, px) and its FPN ``level`` (2..5 by Detectron2's rule, canonical 224 at level 4).
    ``unmatched``: per side, the count and scores of the detections without a partner.
    ``alignment``: how the pairs were found (``identity``, ``affine``, ``xyxy-as-xywh``; ``no`` without pairs).
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

    @property
    def top(self) -> Cause:
        return self.causes[0]

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.causes]

    def pairs_by_difference(self) -> torch.Tensor:
        """Indices of the matched pairs, the largest coordinate difference |candidate - reference| first
        (ties in pair order)."""
        worst = (self.pairs["cand_boxes"] - self.pairs["ref_boxes"]).abs().amax(dim=1)
        return torch.argsort(worst, descending=True, stable=True)

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
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> Dict[str, Any]:
        """The diagnosis as JSON-ready values (what ``explainer diagnose --json`` prints)."""
        return {"causes": [c.to_dict() for c in self.causes], "n_reference": self.n_reference,
                "n_candidate": self.n_candidate, "n_matched": self.n_matched, "n_images": self.n_images,
                "alignment": self.alignment, "notes": list(self.notes),
                "unmatched": {k: {"count": v["count"]} for k, v in self.unmatched.items()}}


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
    """Robust fit of q1 = a r1 + t, q2 = a r2 + t + p (one axis): returns a, t, p and per-pair residuals."""
    n = r1.numel()
    X = torch.zeros(2 * n, 3, dtype=torch.float64)
    X[:n, 0], X[n:, 0] = r1, r2
    X[:, 1] = 1.0
    X[n:, 2] = 1.0
    y = torch.cat([q1, q2])
    w = torch.ones(2 * n, dtype=torch.bool)
    sol = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    for _ in range(iters):
        if w.sum() < 3:
            break
        sol = torch.linalg.lstsq(X[w], y[w, None]).solution[:, 0]
        res = y - X @ sol
        s = _mad_sigma(res[w])
        w = res.abs() <= max(4.0 * s, 1e-6) + 1e-9
    res = y - X @ sol
    return float(sol[0]), float(sol[1]), float(sol[2]), res[:n], res[n:]


def _near(v: float, targets: Sequence[float], tol: float) -> Optional[float]:
    for t in targets:
        if abs(v - t) <= tol:
            return t
    return None



# --------------------------------------------------------------------------------------------------
# the diagnosis
# --------------------------------------------------------------------------------------------------
@dataclass
class _Sides:
    """The two sides image by image: ``image_ids`` (the reference's, then the candidate's own), and for each
    side one :class:`ImageDetections` per image (empty where a side lacks the image)."""

    image_ids: List[Any]
    ref: List[ImageDetections]
    cand: List[ImageDetections]
    notes: List[str]

    @property
    def n_ref(self) -> int:
        return sum(len(r) for r in self.ref)

    @property
    def n_cand(self) -> int:
        return sum(len(c) for c in self.cand)


def _side_by_side(ref: Detections, cand: Detections) -> _Sides:
    ids_r, ids_c = list(ref.images), list(cand.images)
    if ids_r and ids_c and not set(ids_r) & set(ids_c):
        raise ValueError(f"the two sides share no image id: {ref.source} has {_few(ids_r)}, {cand.source} has "
                         f"{_few(ids_c)}; compare results of the same images (is one side numbered from 0 "
                         f"and the other from 1, or by file name?)")
    only_r = [i for i in ids_r if i not in cand.images]
    only_c = [i for i in ids_c if i not in ref.images]
    notes = []
    if only_r:
        notes.append(f"{len(only_r)} image(s) have reference detections only: {_few(only_r)}")
    if only_c:
        notes.append(f"{len(only_c)} image(s) have candidate detections only: {_few(only_c)}")
    image_ids = ids_r + only_c
    return _Sides(image_ids, [ref.images.get(i) or ImageDetections.empty() for i in image_ids],
                  [cand.images.get(i) or ImageDetections.empty() for i in image_ids], notes)


def diagnose(reference: Any, candidate: Any, image_size: Optional[Sequence[int]] = None, seed: int = 0) -> Diagnosis:
    """Diagnose why ``candidate`` differs from ``reference`` (see the module docstring).

    Image ids: the two sides must share at least one (otherwise a ``ValueError`` lists both sides' ids); an
    image present on one side only has no detections on the other, and ``Diagnosis.notes`` says which.
    ``image_size`` (height, width), optional: with it the evidence says whether a scale matches the image's
    aspect ratio (height and width swapped). ``seed`` fixes the random pairs of the robust alignment.
    """
    ref = load_detections(reference, name="reference")
    cand = load_detections(candidate, name="candidate")
    size = _image_size(image_size) if image_size is not None else None
    s = _side_by_side(ref, cand)
    if s.n_ref == 0 or s.n_cand == 0:
        return _diagnosis(s, [_no_detections(s.n_ref, s.n_cand)], Match.none(), "no")
    alignment, match = align_and_match(s.ref, s.cand, seed=seed)
    pairs, left = matched_pairs(s.ref, s.cand, match), unmatched(s.ref, s.cand, match)
    need = min(s.n_ref, s.n_cand)
    if match.n < UNRELATED_BELOW * need:
        ev = {"matched": match.n, "reference": s.n_ref, "candidate": s.n_cand, "matched_fraction": match.n / max(need, 1)}
        expl = (f"Only {match.n} of {need} possible pairs match at IoU >= {MATCH_IOU}, even after trying a scale, "
                f"translation and xywh alignment: the two sides are not the same detections.")
        causes = [make_cause("unrelated", 1.0 - match.n / max(need, 1), ev, expl)]
    else:
        causes = _fingerprints(s, pairs, left, size)
    return _diagnosis(s, causes, match, alignment, pairs, left)


def _diagnosis(s: _Sides, causes: List[Cause], match: Match, alignment: str,
               pairs: Optional[Dict[str, torch.Tensor]] = None, left: Optional[Dict[str, Dict[str, Any]]] = None) -> Diagnosis:
    pairs = matched_pairs(s.ref, s.cand, match) if pairs is None else pairs
    left = unmatched(s.ref, s.cand, match) if left is None else left
    causes.sort(key=lambda c: -c.strength)
    return Diagnosis(causes, pairs, residuals(pairs), left, s.n_ref, s.n_cand, match.n, len(s.image_ids),
                     s.image_ids, alignment, s.notes)


def _no_detections(n_r: int, n_c: int) -> Cause:
    ev = {"reference": n_r, "candidate": n_c}
    if n_r == n_c:
        return make_cause("no_detections", 1.0, ev, "Both sides have no detections: nothing to compare.")
    which, other = ("the reference", n_c) if n_r == 0 else ("the candidate", n_r)
    return make_cause("no_detections", 1.0, ev, f"{which.capitalize()} has no detections while the other side has {other}.")


def _fingerprints(s: _Sides, pairs: Dict[str, torch.Tensor], left: Dict[str, Dict[str, Any]],
                  image_size: Optional[Tuple[int, int]]) -> List[Cause]:
    """Every cause whose fingerprint the matched pairs and the unmatched detections show; "identical" if none."""
    geo = _geometry_causes(pairs, image_size)
    causes: List[Cause] = []
    causes += geo["causes"]
    causes += _label_causes(pairs)
    _flood_evidence(causes, left, s.n_cand)
    causes += _set_causes(s.ref, s.cand, pairs, left)
    causes += _keypoint_causes(s.ref, s.cand, pairs, geo)
    causes += _mask_causes(s.ref, s.cand, pairs, geo)
    causes += _noise_causes(pairs, geo, causes)
    if not causes:
        n_m = len(pairs["image"])
        causes = [make_cause("identical", 1.0, {"matched": n_m, "max_box_diff_px": geo["max_abs"]},
                             f"All {n_m} detections match with the same labels, boxes within {BOX_ATOL:g} px and "
                             f"scores within {SCORE_ATOL:g}.")]
    return causes


def _few(ids: Sequence[Any], k: int = 5) -> str:
    s = ", ".join(str(i) for i in list(ids)[:k])
    return s + (f", ... ({len(ids)} in all)" if len(ids) > k else "")



def _geometry_causes(p: Pairs, image_size: Optional[Tuple[int, int]]) -> Dict[str, Any]:
    r, c = p["ref_boxes"], p["cand_boxes"]
    n = r.shape[0]
    d = c - r
    max_abs = float(d.abs().max()) if n else 0.0
    out: Dict[str, Any] = {"causes": [], "max_abs": max_abs, "model": None, "sigma": 0.0, "explained": None}
    if n == 0:
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


def _label_causes(p: Pairs) -> List[Cause]:
    rl, cl = p["ref_labels"], p["cand_labels"]
    close = p["iou"] >= 0.9  # labels are compared on pairs that are surely the same object, when there are enough
    if int(close.sum()) >= max(3, 0.3 * rl.numel()):
        rl, cl = rl[close], cl[close]
    n = rl.numel()
    if n < 3:
        return []
    d = cl - rl
    changed = float((d != 0).double().mean())
    if changed < 0.02:
        return []
    vals, counts = torch.unique(d[d != 0], return_counts=True)
    k = int(vals[counts.argmax()])
    frac_off = float((d == k).double().mean())
    ids = torch.tensor(COCO_CATEGORY_IDS, dtype=torch.long)

    def via(src: torch.Tensor, dst: torch.Tensor, shift: int) -> float:
        ok = (src - shift >= 0) & (src - shift < 80)
        m = torch.zeros_like(src, dtype=torch.bool)
        m[ok] = ids[src[ok] - shift] == dst[ok]
        return float(m.double().mean())

    coco = max([(via(rl, cl, 0), "contiguous labels 0..79 written as COCO ids"),
                (via(rl, cl, 1), "labels 1..80 written as COCO ids"),
                (via(cl, rl, 0), "COCO ids on the reference side, contiguous 0..79 on the candidate"),
                (via(cl, rl, 1), "COCO ids on the reference side, labels 1..80 on the candidate")])
    if coco[0] >= 0.9 and coco[0] > frac_off + 0.02:
        return [make_cause("coco_category_ids", coco[0], {"pairs_consistent": coco[0], "direction": coco[1]},
                           f"Labels follow COCO's category id gaps ({coco[1]}); a constant offset explains only "
                           f"{frac_off:.0%} of the pairs.")]
    if frac_off >= 0.9:
        ev: Dict[str, Any] = {"offset": k, "pairs_consistent": frac_off}
        expl = f"Candidate label = reference label {k:+d} for {frac_off:.0%} of the matched pairs."
        if coco[0] >= 0.9:
            ev["also_consistent_with"] = "coco_category_ids"
            expl += (" Every label involved lies below COCO's first id gap (12), where category ids are the "
                     "contiguous labels + 1: this may equally be coco_category_ids.")
        return [make_cause("label_offset", frac_off, ev, expl)]
    # a consistent mapping: each reference label goes to one candidate label
    uniq, inv, cnt = torch.unique(rl, return_inverse=True, return_counts=True)
    multi = cnt[inv] >= 2
    if float(multi.double().mean()) < 0.6:
        return []
    consistent = 0
    mapping = {}
    for u in range(len(uniq)):
        sel = inv == u
        if cnt[u] < 2:
            continue
        v, c = torch.unique(cl[sel], return_counts=True)
        consistent += int(c.max())
        mapping[int(uniq[u])] = int(v[c.argmax()])
    cons = consistent / max(int(multi.sum()), 1)
    moved = {a: b for a, b in mapping.items() if a != b}
    if cons >= 0.9 and changed >= 0.1 and moved:
        shown = dict(list(moved.items())[:8])
        return [make_cause("label_permutation", cons * min(1.0, changed / 0.5 + 0.5),
                           {"pairs_consistent": cons, "labels_changed": changed, "mapping_reference_to_candidate": shown},
                           f"Each reference label maps to one candidate label ({len(moved)} labels moved, e.g. "
                           f"{', '.join(f'{a}->{b}' for a, b in list(moved.items())[:4])}).")]
    return []


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


def _set_causes(R: Side, C: Side, p: Pairs, unmatched: Unmatched) -> List[Cause]:
    out = []
    for side, other, S in (("reference", "candidate", R), ("candidate", "reference", C)):
        u = unmatched[side]
        if u["count"] == 0:
            continue
        matched_scores = p["ref_scores"] if side == "reference" else p["cand_scores"]
        if matched_scores.numel() == 0:
            continue
        cut = float(matched_scores.min())
        below = float((u["scores"] <= cut + 1e-6).double().mean())
        # top-k: the other side holds at most k detections per image and the unmatched are ranked beyond them
        per_image_other = [len(s) for s in (C if side == "reference" else R)]
        k = max(per_image_other) if per_image_other else 0
        beyond = float((u["rank"] >= k).double().mean()) if k else 0.0
        counts_at_cap = [i for i, s in enumerate(S) if len(s) > k]
        capped = bool(counts_at_cap) and all(per_image_other[i] == k for i in counts_at_cap)
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


def _keypoint_causes(R: Side, C: Side, p: Pairs, geo: Dict[str, Any]) -> List[Cause]:
    if not len(p["image"]):
        return []
    rk = [r.keypoints for r in R]
    ck = [c.keypoints for c in C]
    if any(k is None for k, s in zip(rk, R) if len(s)) or any(k is None for k, s in zip(ck, C) if len(s)):
        return []
    Ks = {k.shape[1] for k in rk + ck if k is not None and len(k)}
    if len(Ks) != 1:
        return []
    rkp = torch.cat([k for k in rk if k is not None])
    ckp = torch.cat([k for k in ck if k is not None])
    a = rkp[flat_index(R, p["image"], p["ref_index"])]
    b = ckp[flat_index(C, p["image"], p["cand_index"])]
    vis = (a[..., 2] > 0) & (b[..., 2] > 0)
    if vis.sum() < 3:
        return []
    pa = a[..., :2][vis].clone()
    pb = b[..., :2][vis]
    if geo.get("model") is not None:
        # keypoints follow the boxes' rescale and offset (not their pixel-convention shifts)
        ax, tx, _, ay, ty, _ = geo["model"]
        names = {c.name for c in geo["causes"]}
        if names & {"scale", "anisotropic_scale"}:
            pa[:, 0] *= ax
            pa[:, 1] *= ay
        if "translation" in names:
            pa[:, 0] += tx
            pa[:, 1] += ty
    d = pb - pa
    differing = d.abs().amax(1) > 0.05
    fd = float(differing.double().mean())
    if fd < 0.05:
        return []
    dd = d[differing]
    half = ((dd.abs() - 0.5).abs() <= 0.1).all(1) & (torch.sign(dd[:, 0]) == torch.sign(dd[:, 1]))
    flip = ((dd[:, 0].abs() - 1.0).abs() <= 0.1) & (dd[:, 1].abs() <= 0.1)
    out = []
    fh, ff = float(half.double().mean()), float(flip.double().mean())
    med = dd.median(0).values
    if fh >= 0.8:
        out.append(make_cause("keypoint_half_pixel", fh * fd, {"median_dx": float(med[0]), "median_dy": float(med[1]),
                                                               "keypoints_differing": fd},
                              f"Keypoints are shifted by ({float(med[0]):+.3g}, {float(med[1]):+.3g}) px: pixel "
                              f"indices on one side, continuous coordinates on the other."))
    if ff >= 0.8 or (ff >= 0.3 and fh < 0.3):
        out.append(make_cause("flip_off_by_one", ff * max(fd, 0.5), {"median_dx": float(med[0]),
                                                                      "median_dy": float(med[1]),
                                                                      "keypoints_differing": fd, "fraction_dx_1px": ff},
                              f"{ff:.0%} of the differing keypoints move by exactly 1 px in x and not in y: a flip "
                              f"computed as W - 1 - x on one side and W - x on the other."))
    return out


def _mask_causes(R: Side, C: Side, p: Pairs, geo: Dict[str, Any]) -> List[Cause]:
    if not len(p["image"]):
        return []
    present = [d.masks for d in list(R) + list(C) if len(d)]
    masks = [m for m in present if m is not None]
    if len(masks) < len(present):
        return []
    shapes = {tuple(m.shape[1:]) for m in masks}
    if len(shapes) != 1:
        return []
    shape = next(iter(shapes))
    allr = torch.cat([r.masks if r.masks is not None else torch.zeros(0, *shape, dtype=torch.bool) for r in R])
    allc = torch.cat([c.masks if c.masks is not None else torch.zeros(0, *shape, dtype=torch.bool) for c in C])
    ir = flat_index(R, p["image"], p["ref_index"])
    ic = flat_index(C, p["image"], p["cand_index"])
    diff = ring_diff = 0.0
    miou = torch.ones(len(ir), dtype=torch.float64)
    differing = []
    for s in range(0, len(ir), 256):
        a, b = allr[ir[s:s + 256]].flatten(1), allc[ic[s:s + 256]].flatten(1)
        differing.append(s + (a != b).any(1).nonzero()[:, 0])
    # each differing pair in its own window (the two masks' bounding box and a margin): its IoU, and whether
    # the differing pixels lie within 2 px of the reference contour; at most MASK_PAIRS_EXAMINED pairs
    for k in torch.cat(differing)[:MASK_PAIRS_EXAMINED].tolist():
        a, b = allr[ir[k]], allc[ic[k]]
        on = a | b
        ys, xs = on.any(1).nonzero()[:, 0], on.any(0).nonzero()[:, 0]
        y0, y1 = max(int(ys[0]) - 3, 0), int(ys[-1]) + 4
        x0, x1 = max(int(xs[0]) - 3, 0), int(xs[-1]) + 4
        a, b = a[y0:y1, x0:x1], b[y0:y1, x0:x1]
        af = a.float()[None]
        grown = F.max_pool2d(torch.cat([af, 1.0 - af])[None], 5, 1, 2)[0]   # dilation of a, of its complement
        ring = (grown[0] > 0) & (grown[1] > 0)                            # within 2 px of the contour
        x = a ^ b
        miou[k] = mask_iou(a, b)
        diff += float(x.sum())
        ring_diff += float((x & ring).sum())
    if diff == 0:
        return []
    frac_ring = ring_diff / diff
    pairs_diff = float((miou < 1.0).double().mean())
    boxes_agree = geo.get("max_abs", 0.0) <= 0.5 or (geo.get("explained") is not None and bool(geo["causes"]))
    if frac_ring >= 0.9 and boxes_agree:
        return [make_cause("mask_paste", frac_ring * max(pairs_diff, 0.5),
                           {"mean_mask_iou": float(miou.mean()), "differing_pixels_on_contour": frac_ring,
                            "pairs_with_different_masks": pairs_diff},
                           f"Masks differ in {pairs_diff:.0%} of the pairs (mean mask IoU {float(miou.mean()):.3f}) and "
                           f"{frac_ring:.0%} of the differing pixels lie within 2 px of the contour: a different paste.")]
    return []


def _noise_causes(p: Pairs, geo: Dict[str, Any], found: List[Cause]) -> List[Cause]:
    n = len(p["image"])
    if n == 0 or geo.get("xywh"):
        return []
    sigma = geo["sigma"]
    ds = (p["cand_scores"] - p["ref_scores"]).abs()
    max_ds = float(ds.max())
    structured = bool(geo["causes"])
    if structured:
        ax, tx, px, ay, ty, py = geo["model"]
        r = p["ref_boxes"]
        pred = torch.stack([ax * r[:, 0] + tx, ay * r[:, 1] + ty, ax * r[:, 2] + tx + px, ay * r[:, 3] + ty + py], 1)
        left = (p["cand_boxes"] - pred).abs()
    else:
        left = (p["cand_boxes"] - p["ref_boxes"]).abs()
    worst = float(left.max())
    if worst <= BOX_ATOL and max_ds <= SCORE_ATOL:
        return []
    big = float((left.amax(1) > 2.0).double().mean())
    med_ds = float(ds.median())
    ev = {"box_residual_sigma_px": sigma, "max_box_residual_px": worst, "max_score_difference": max_ds,
          "median_score_difference": med_ds}
    if geo.get("size_offset") is not None:
        ev["size_offset_px"] = list(geo["size_offset"])
    if sigma > 0.5 or big >= 0.05 or med_ds > 0.02 or geo.get("size_offset") is not None:
        what = (f"{big:.0%} of the pairs differ by more than 2 px beyond any global pattern" if big >= 0.05
                else f"box residual spread {sigma:.3g} px")
        if med_ds > 0.02:
            what += f"; scores differ by {med_ds:.3g} (median)"
        s = max(big, min(1.0, sigma / 2.0), min(1.0, med_ds * 10))
        return [make_cause("inference_difference", 0.9 * s if not found else 0.5 * s, ev,
                           f"Matched detections differ without a global pattern: {what}.")]
    frac = float((left.amax(1) > BOX_ATOL).double().mean()) if worst > BOX_ATOL else float((ds > SCORE_ATOL).double().mean())
    return [make_cause("numerical_noise", 0.5 * max(frac, 0.2), ev,
                       f"Small unstructured differences: boxes within {worst:.3g} px (spread {sigma:.3g} px) "
                       f"and scores within {max_ds:.3g}.")]
