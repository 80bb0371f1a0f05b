"""What the fields beyond boxes and labels show: non-finite values, fields on one side only, keypoints and masks.

Each function reads the two sides (stacks of every detection, :class:`explainer.diagnosis.detections.FlatDetections`
sharing one image list) and the matched pairs (``ref_row``, ``cand_row``, ``image``), and returns causes of
:data:`explainer.diagnosis.causes.CAUSES`:

* :func:`non_finite` (``non_finite``): NaN or infinity in a box, score or keypoint, per side and field, with
  the first few detections named. Detections with a non-finite box or score are left out of the matching.
* :func:`keypoint_causes`: ``keypoint_half_pixel``, ``flip_off_by_one``, or keypoints that differ without
  either pattern (``inference_difference``, or ``numerical_noise`` below half a pixel).
* :func:`mask_causes`: ``mask_paste`` when boxes agree and the masks differ along their contour, or masks that
  differ elsewhere (``inference_difference``); the masks are read with pycocotools
  (:mod:`explainer.diagnosis.result_masks`).
* :class:`Fields` gathers what one side lacks (keypoints or masks absent, masks empty, segmentations that do not
  decode) into one ``missing_field`` cause, naming the field and the detections.

Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from explainer.diagnosis.causes import BOX_ATOL, FLIP_VS_TRANSLATION, RTOL, Cause, make_cause
from explainer.diagnosis.detections import FlatDetections
from explainer.diagnosis.result_masks import compare_masks, pair_rles

__all__ = ["non_finite_rows", "non_finite", "Fields", "keypoint_causes", "mask_causes", "EXAMPLES"]

#: How many detections a finding names.
EXAMPLES = 5
#: Masks whose differing pixels lie within 2 px of the reference contour at least this often are a paste difference.
ON_CONTOUR = 0.9


def _name(side: FlatDetections, row: int) -> str:
    return f"image {side.image_ids[int(side.image[row])]} detection {int(side.within_image()[row])}"


# --------------------------------------------------------------------------------------------------
# non-finite values
# --------------------------------------------------------------------------------------------------
def non_finite_rows(side: FlatDetections) -> Dict[str, torch.Tensor]:
    """Per field (``boxes``, ``scores``, ``keypoints``): which detections hold a NaN or infinity."""
    out = {"boxes": ~torch.isfinite(side.boxes).all(1), "scores": ~torch.isfinite(side.scores)}
    if side.keypoints is not None and side.has_keypoints is not None:
        out["keypoints"] = side.has_keypoints & ~torch.isfinite(side.keypoints).flatten(1).all(1)
    return out


def non_finite(sides: Dict[str, FlatDetections]) -> Optional[Cause]:
    """``non_finite`` when either side (``{"reference": ..., "candidate": ...}``) holds NaN or infinity."""
    ev: Dict[str, Any] = {}
    examples: List[str] = []
    for name, side in sides.items():
        counts = {}
        for fld, bad in non_finite_rows(side).items():
            if bad.any():
                counts[fld] = int(bad.sum())
                for r in bad.nonzero()[:EXAMPLES, 0].tolist():
                    if len(examples) < EXAMPLES:
                        v = getattr(side, fld)[r].reshape(-1)
                        shown = [x for x in v.tolist() if not math.isfinite(x)][:4]
                        examples.append(f"{name} {_name(side, r)}: {fld} {shown}")
        if counts:
            ev[name] = counts
    if not ev:
        return None
    ev["examples"] = examples
    parts = [f"the {side} has {', '.join(f'{n} non-finite {f}' for f, n in c.items())}" for side, c in ev.items()
             if side != "examples"]
    return make_cause("non_finite", 0.9, ev,
                      f"NaN or infinity in the detections: {'; '.join(parts)} (first: {examples[0]}). Detections "
                      f"with a non-finite box or score are left out of the matching; a NaN is never 'equal'.")


# --------------------------------------------------------------------------------------------------
# fields on one side only
# --------------------------------------------------------------------------------------------------
@dataclass
class Fields:
    """What one side lacks where the other has it: ``problems`` per field, each (what, detections named)."""

    problems: Dict[str, List[Tuple[str, List[str]]]] = field(default_factory=dict)
    share: float = 0.0

    def add(self, fld: str, what: str, names: List[str], share: float) -> None:
        self.problems.setdefault(fld, []).append((what, names[:EXAMPLES]))
        self.share = max(self.share, share)

    def cause(self) -> Optional[Cause]:
        if not self.problems:
            return None
        ev: Dict[str, Any] = {fld: [f"{what}" + (f" (e.g. {', '.join(names)})" if names else "") for what, names in lst]
                              for fld, lst in self.problems.items()}
        ev["fields"] = sorted(self.problems)
        text = "; ".join(f"{fld}: {what}" for fld, lst in self.problems.items() for what, _ in lst)
        return make_cause("missing_field", 0.55 + 0.4 * min(1.0, self.share), ev,
                          f"A field is missing, empty or unreadable on one side: {text}.")


def _presence(ref: FlatDetections, cand: FlatDetections, p: Dict[str, torch.Tensor], fld: str,
              rh: torch.Tensor, ch: torch.Tensor, fields: Fields) -> None:
    """Pairs whose ``fld`` is on one side only (``rh``, ``ch``: which pairs have it on each side)."""
    n = len(rh)
    for side, other, mine, theirs, rows, S in (("reference", "candidate", rh, ch, p["ref_row"], ref),
                                               ("candidate", "reference", ch, rh, p["cand_row"], cand)):
        lack = theirs & ~mine
        if lack.any():
            k = int(lack.sum())
            what = (f"the {side} has no {fld} at all" if not mine.any() else
                    f"{k} of {n} matched {side} detections have no {fld} where the {other} has them")
            fields.add(fld, what, [_name(S, int(r)) for r in rows[lack][:EXAMPLES]], k / max(int(theirs.sum()), 1))


# --------------------------------------------------------------------------------------------------
# keypoints
# --------------------------------------------------------------------------------------------------
def _keypoint_pairs(ref: FlatDetections, cand: FlatDetections, p: Dict[str, torch.Tensor], fields: Fields
                    ) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    n = len(p["image"])
    rh = ref.has_keypoints[p["ref_row"]] if ref.has_keypoints is not None else torch.zeros(n, dtype=torch.bool)
    ch = cand.has_keypoints[p["cand_row"]] if cand.has_keypoints is not None else torch.zeros(n, dtype=torch.bool)
    _presence(ref, cand, p, "keypoints", rh, ch, fields)
    both = rh & ch
    if not both.any() or ref.keypoints is None or cand.keypoints is None:
        return None
    if ref.keypoints.shape[1] != cand.keypoints.shape[1]:
        fields.add("keypoints", f"the reference has {ref.keypoints.shape[1]} keypoints per detection, the candidate "
                                f"{cand.keypoints.shape[1]} (another keypoint set)", [], 1.0)
        return None
    return ref.keypoints[p["ref_row"][both]], cand.keypoints[p["cand_row"][both]], both


def keypoint_causes(ref: FlatDetections, cand: FlatDetections, p: Dict[str, torch.Tensor], geo: Dict[str, Any],
                    fields: Fields) -> List[Cause]:
    """Keypoint causes of the matched pairs; the fitted geometry (``geo``) moves the reference's keypoints first."""
    if not len(p["image"]):
        return []
    kp = _keypoint_pairs(ref, cand, p, fields)
    if kp is None:
        return []
    a, b, both = kp
    finite = torch.isfinite(a).all(-1) & torch.isfinite(b).all(-1)
    va, vb = (a[..., 2] > 0) & finite, (b[..., 2] > 0) & finite
    flipped = int((va != vb).sum())
    vis = va & vb
    if not vis.any():
        return []
    pa, pb = a[..., :2][vis].clone(), b[..., :2][vis]
    if geo.get("flip_shift") is not None:
        # a flip off by one moves each flipped detection's keypoints with its box
        pa[:, 0] += geo["flip_shift"][both][:, None].expand(vis.shape)[vis]
    elif geo.get("model") is not None:
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
    tol = BOX_ATOL + RTOL * torch.maximum(pa.abs(), pb.abs())
    differing = (d.abs() > tol).any(1)
    out = _keypoint_patterns(d, differing)
    if out or not (differing.any() or flipped):
        return out
    dd = d[differing]
    big = float(dd.abs().max()) if len(dd) else 0.0
    ev = {"keypoints_differing": float(differing.double().mean()), "max_keypoint_difference_px": big,
          "median_dx": float(dd[:, 0].median()) if len(dd) else 0.0, "median_dy": float(dd[:, 1].median()) if len(dd) else 0.0,
          "visibility_changed": flipped}
    if big <= 0.5 and not flipped:
        return [make_cause("numerical_noise", 0.3, ev, f"Keypoints differ by at most {big:.3g} px, without a pattern.")]
    return [make_cause("inference_difference", 0.4 + 0.5 * min(1.0, ev["keypoints_differing"]), ev,
                       f"Keypoints differ without a known pattern while their boxes match: {ev['keypoints_differing']:.0%} "
                       f"of the visible keypoints move (by up to {big:.3g} px, median ({ev['median_dx']:+.3g}, "
                       f"{ev['median_dy']:+.3g}) px); {flipped} change visibility. The keypoint heads compute differently.")]


def _keypoint_patterns(d: torch.Tensor, differing: torch.Tensor) -> List[Cause]:
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
                                                                      "keypoints_differing": fd, "fraction_dx_1px": ff,
                                                                      "tells_apart_from_translation": FLIP_VS_TRANSLATION},
                              f"{ff:.0%} of the differing keypoints move by exactly 1 px in x and not in y: a flip "
                              f"computed as W - 1 - x on one side and W - x on the other."))
    return out


# --------------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------------
def mask_causes(ref: FlatDetections, cand: FlatDetections, p: Dict[str, torch.Tensor], boxes_agree: bool,
                fields: Fields) -> Tuple[List[Cause], Optional[Dict[str, Any]]]:
    """Mask causes of the matched pairs, and the masks compared (``ref``/``cand`` RLEs per pair, ``compare`` from
    :func:`explainer.diagnosis.result_masks.compare_masks`, ``problems``) for the report and the pair browser."""
    n = len(p["image"])
    if (ref.masks is None and cand.masks is None) or not n:
        return [], None
    rm = [ref.masks[r] for r in p["ref_row"].tolist()] if ref.masks is not None else [None] * n
    cm = [cand.masks[r] for r in p["cand_row"].tolist()] if cand.masks is not None else [None] * n
    _presence(ref, cand, p, "masks", torch.tensor([m is not None for m in rm]), torch.tensor([m is not None for m in cm]),
              fields)
    r_rle, c_rle, problems = pair_rles(rm, cm, p["image"].tolist(), torch.cat([p["ref_boxes"], p["cand_boxes"]]))
    cmp = compare_masks(r_rle, c_rle)
    for i in cmp["unreadable"]:
        problems.append((i, "reference or candidate", "RLE counts do not add up to its size"))
    sides = {"reference": (ref, p["ref_row"]), "candidate": (cand, p["cand_row"])}
    for side in ("reference", "candidate"):
        why: Dict[str, List[int]] = {}
        for i, s_, w in problems:
            if s_ in (side, "reference or candidate"):
                why.setdefault(w, []).append(i)
        S, rows = sides[side]
        for w, idx in why.items():
            fields.add("masks", f"{len(idx)} {side} segmentation(s) cannot be read: {w}",
                       [_name(S, int(rows[i])) for i in idx], len(idx) / n)
    info = {"ref": r_rle, "cand": c_rle, "compare": cmp, "problems": problems}
    one_sided = _empty_masks(cmp, sides, fields)
    return _mask_verdict(cmp, boxes_agree, ~one_sided), info


def _empty_masks(cmp: Dict[str, Any], sides: Dict[str, Any], fields: Fields) -> np.ndarray:
    """Masks empty on one side where the other side's are not, on most such pairs: a finding of its own (those
    pairs are then left out of the mask verdict). Returns which pairs it took."""
    ar, ac = cmp["area_ref"], cmp["area_cand"]
    taken = np.zeros(len(ar), dtype=bool)
    for side, mine, theirs in (("reference", ar, ac), ("candidate", ac, ar)):
        has_other = theirs > 0
        empty = has_other & (mine == 0)
        if has_other.any() and empty.sum() >= 0.5 * has_other.sum():
            S, rows = sides[side]
            fields.add("masks", f"{int(empty.sum())} of {int(has_other.sum())} {side} masks are empty where the other "
                                f"side's are not", [_name(S, int(rows[i])) for i in np.flatnonzero(empty)[:EXAMPLES]],
                       float(empty.sum() / has_other.sum()))
            taken |= empty
    return taken


def _mask_verdict(cmp: Dict[str, Any], boxes_agree: bool, use: np.ndarray) -> List[Cause]:
    if not cmp["n_differing"]:
        return []
    iou, f = cmp["iou"], cmp["boundary_f"]
    seen = np.isfinite(iou) & use
    if not (seen & (iou < 1)).any():
        return []
    ring = cmp["ring"]
    on_contour = ring["within_2px"] / max(ring["differ"], 1)
    area = cmp["area_cand"] - cmp["area_ref"]
    ok = np.isfinite(area)
    rel = float(np.median(area[ok] / np.maximum(cmp["area_ref"][ok], 1))) if ok.any() else 0.0
    share = cmp["n_differing"] / max(cmp["n_compared"], 1)
    ev = {"pairs_with_different_masks": share, "mean_mask_iou": float(iou[seen].mean()),
          "min_mask_iou": float(iou[seen].min()), "mean_boundary_f": float(np.nanmean(f[seen])),
          "differing_pixels_within_1px_of_contour": ring["within_1px"] / max(ring["differ"], 1),
          "differing_pixels_within_2px_of_contour": on_contour,
          "median_relative_area_difference": rel, "pairs_examined": int(seen.sum()) - (cmp["n_compared"] - cmp["n_differing"])}
    if not boxes_agree:
        return []
    if on_contour >= ON_CONTOUR:
        grow = "larger" if rel > 0 else "smaller"
        return [make_cause("mask_paste", max(0.5, on_contour * max(share, 0.5)), ev,
                           f"Boxes agree; masks differ in {share:.0%} of the pairs (mean mask IoU "
                           f"{ev['mean_mask_iou']:.3f}, boundary F-score {ev['mean_boundary_f']:.3f} at 1 px) and "
                           f"{on_contour:.0%} of the differing pixels lie within 2 px of the reference contour; the "
                           f"candidate's masks are {abs(rel):.1%} {grow} (median): a different paste.")]
    return [make_cause("inference_difference", 0.4 + 0.5 * share, ev,
                       f"Boxes agree but masks differ away from their contour in {share:.0%} of the pairs (mean mask "
                       f"IoU {ev['mean_mask_iou']:.3f}; only {on_contour:.0%} of the differing pixels lie within 2 px "
                       f"of the contour): the mask heads compute differently.")]
