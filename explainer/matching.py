"""Which detection of the candidate is which of the reference: one-to-one matching per image, robust to large mistakes.

:func:`match_boxes` pairs detections one to one within each image, greedily by box IoU (labels ignored), with
:func:`explainer.boxes.greedy_match` over :func:`explainer.boxes.pairwise_iou` of all images at once. The
overlaps are ranked in float32: enough to order them, and what makes the batch fast.

:func:`align_and_match` survives large geometric mistakes: when few pairs overlap as they are, the reference
is aligned first. Detections are paired by score rank within each image (scores survive geometric mistakes),
a robust per-coordinate line c = a r + b is fitted to those pairs (least median of squares over random pairs,
then least squares on the inliers), and the "xyxy written as xywh" reading is tried as well; whichever
alignment matches most detections at IoU >= :data:`MATCH_IOU` is kept. The alignment only decides which
detections pair up: :func:`matched_pairs` and :func:`residuals` report the pairs in their original
coordinates, so it never hides a difference.

Sides are lists of :class:`explainer.detections.ImageDetections`, one per image, in the same image order.
Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import torch

from .boxes import greedy_match, pairwise_iou
from .detections import ImageDetections
from .roi_align import assign_fpn_levels

__all__ = ["MATCH_IOU", "Match", "match_boxes", "align_and_match", "matched_pairs", "residuals", "unmatched",
           "flat_index", "xyxy_read_as_xywh"]

#: Matched pairs need this box IoU (after alignment).
MATCH_IOU = 0.5


class Match(NamedTuple):
    """Matched pairs: ``image`` (index into the sides' image list), ``ref_index`` and ``cand_index`` within
    that image, and the pair's ``iou`` (float64, after alignment)."""

    image: torch.Tensor
    ref_index: torch.Tensor
    cand_index: torch.Tensor
    iou: torch.Tensor

    @staticmethod
    def none() -> "Match":
        empty = torch.zeros(0, dtype=torch.long)
        return Match(empty, empty, empty, torch.zeros(0, dtype=torch.float64))

    @property
    def n(self) -> int:
        """The number of pairs."""
        return int(self.image.numel())


def xyxy_read_as_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """What (x1, y1, x2, y2) becomes when it is written as COCO's (x, y, w, h) and read back: x2' = x1 + x2.

    Unchecked (unlike :func:`explainer.pixels.xywh_to_xyxy`): boxes of any sign are read, as a writer that
    made this mistake would have written them.
    """
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def _pad(boxes: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images' boxes as one B x N x 4 float32 batch (N: the most boxes of an image) and which rows are real."""
    n = max((len(b) for b in boxes), default=0)
    out = torch.zeros(len(boxes), max(n, 1), 4, dtype=torch.float64)
    valid = torch.zeros(len(boxes), max(n, 1), dtype=torch.bool)
    for i, b in enumerate(boxes):
        out[i, : len(b)] = b
        valid[i, : len(b)] = True
    out = out.float()
    # boxes mapped by an alignment hypothesis may come out inverted: they are read as empty (IoU 0)
    out[..., 2:] = torch.maximum(out[..., 2:], out[..., :2])
    return out, valid


def match_boxes(ref: Sequence[torch.Tensor], cand: Sequence[torch.Tensor], threshold: float = MATCH_IOU) -> Match:
    """One-to-one pairs per image (``ref[i]`` against ``cand[i]``), greedy by IoU, each with IoU >= ``threshold``."""
    if not ref or all(len(r) == 0 for r in ref) or all(len(c) == 0 for c in cand):
        return Match.none()
    a, va = _pad(list(ref))
    b, vb = _pad(list(cand))
    iou = pairwise_iou(a, b)
    iou = torch.where(va[:, :, None] & vb[:, None, :], iou, torch.full_like(iou, -1.0))
    bi, ii, jj, v = greedy_match(iou, threshold)
    return Match(bi, ii, jj, v.double())


def _rank_pairs(ref: Sequence[ImageDetections], cand: Sequence[ImageDetections]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Tentative correspondences for alignment: same score rank, and nearest score, within each image."""
    rb, cb = [], []
    for r, c in zip(ref, cand):
        n = min(len(r), len(c))
        if n == 0:
            continue
        ro = torch.argsort(r.scores, descending=True, stable=True)
        co = torch.argsort(c.scores, descending=True, stable=True)
        rb.append(r.boxes[ro[:n]])
        cb.append(c.boxes[co[:n]])
        near = (c.scores[:, None] - r.scores[None, :]).abs().argmin(dim=1)
        rb.append(r.boxes[near])
        cb.append(c.boxes)
    if not rb:
        return torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.float64)
    return torch.cat(rb), torch.cat(cb)


def _lmeds_line(r: torch.Tensor, q: torch.Tensor, gen: torch.Generator, samples: int = 256) -> Tuple[float, float]:
    """Robust q = a r + b: the line through two random points with most inliers, refitted on its inliers."""
    K = r.numel()
    i = torch.randint(K, (samples,), generator=gen)
    j = torch.randint(K, (samples,), generator=gen)
    dr = r[i] - r[j]
    ok = dr.abs() > 1.0
    if not ok.any():
        return 1.0, float((q - r).median())
    i, j, dr = i[ok], j[ok], dr[ok]
    a = (q[i] - q[j]) / dr
    b = q[i] - a * r[i]
    tol = max(2.0, 0.02 * float(q.abs().median()))
    # score the candidate lines on at most 2000 of the points, then take the best line's inliers among all
    sub = torch.randperm(K, generator=gen)[:2000] if K > 2000 else torch.arange(K)
    rs, qs = r[sub], q[sub]
    inl = ((qs[None, :] - (a[:, None] * rs[None, :] + b[:, None])).abs() <= tol)
    best = int(inl.sum(1).argmax())
    m = (q - (a[best] * r + b[best])).abs() <= tol
    if m.sum() < 2:
        return float(a[best]), float(b[best])
    X = torch.stack([r[m], torch.ones_like(r[m])], 1)
    sol = torch.linalg.lstsq(X, q[m, None]).solution[:, 0]
    return float(sol[0]), float(sol[1])


def align_and_match(ref: Sequence[ImageDetections], cand: Sequence[ImageDetections],
                    seed: int = 0) -> Tuple[str, Match]:
    """Match as given ("identity"); when that pairs fewer than 90% of the smaller side, also try an "affine"
    alignment of the reference and the "xyxy-as-xywh" reading, and keep the one that matches clearly more.

    ``seed`` fixes the random pairs of the robust line fit. Returns the alignment's name and the pairs.
    """
    gen = torch.Generator().manual_seed(seed)
    rboxes, cboxes = [r.boxes for r in ref], [c.boxes for c in cand]
    best_name, best = "identity", match_boxes(rboxes, cboxes)
    need = min(sum(len(r) for r in ref), sum(len(c) for c in cand))
    if best.n >= 0.9 * need:
        return best_name, best
    tries = [("xyxy-as-xywh", [xyxy_read_as_xywh(b) for b in rboxes])]
    rt, ct = _rank_pairs(ref, cand)
    if rt.shape[0] >= 2:
        lines = [_lmeds_line(rt[:, k], ct[:, k], gen) for k in range(4)]
        a = torch.tensor([line[0] for line in lines], dtype=torch.float64)
        b = torch.tensor([line[1] for line in lines], dtype=torch.float64)
        tries.insert(0, ("affine", [bx * a + b for bx in rboxes]))
    for name, mapped in tries:
        m = match_boxes(mapped, cboxes)
        if m.n > best.n + max(2, 0.05 * need):
            best_name, best = name, m
    return best_name, best


# --------------------------------------------------------------------------------------------------
# what the pairs and the left-overs are
# --------------------------------------------------------------------------------------------------
def flat_index(side: Sequence[ImageDetections], image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of the images' detections stacked in image order: where detection ``index`` of ``image`` sits."""
    offsets = torch.tensor([0] + [len(s) for s in side][:-1], dtype=torch.long).cumsum(0)
    return offsets[image] + index


def matched_pairs(ref: Sequence[ImageDetections], cand: Sequence[ImageDetections], match: Match) -> Dict[str, torch.Tensor]:
    """The pairs as tensors: ``image``, ``ref_index``, ``cand_index``, ``iou``, and for each side (``ref_``,
    ``cand_``) its ``boxes``, ``labels`` and ``scores``, in the sides' original coordinates."""
    out = {"image": match.image, "ref_index": match.ref_index, "cand_index": match.cand_index, "iou": match.iou}
    for prefix, side, idx in (("ref", ref, match.ref_index), ("cand", cand, match.cand_index)):
        flat = flat_index(side, match.image, idx)
        for attr in ("boxes", "labels", "scores"):
            rows = getattr(ImageDetections.empty(), attr)
            if match.n:
                rows = torch.cat([getattr(s, attr) for s in side])[flat]
            out[f"{prefix}_{attr}"] = rows
    return out


def residuals(pairs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Per matched pair: candidate - reference for ``dx1, dy1, dx2, dy2`` (px), the reference box's ``size``
    (sqrt of its area, px), its FPN ``level`` (:func:`explainer.roi_align.assign_fpn_levels`, Detectron2's
    rule) and its ``image``."""
    rb = pairs["ref_boxes"]
    d = pairs["cand_boxes"] - rb
    size = ((rb[:, 2] - rb[:, 0]).clamp(min=0) * (rb[:, 3] - rb[:, 1]).clamp(min=0)).sqrt()
    return {"dx1": d[:, 0], "dy1": d[:, 1], "dx2": d[:, 2], "dy2": d[:, 3], "size": size,
            "level": assign_fpn_levels(rb), "image": pairs["image"]}


def unmatched(ref: Sequence[ImageDetections], cand: Sequence[ImageDetections], match: Match) -> Dict[str, Dict[str, Any]]:
    """Per side (``reference``, ``candidate``): the detections without a partner, with their ``scores``,
    ``labels``, ``image`` and ``rank`` (by score within the image), and their ``count``."""
    out = {}
    for side_name, side, idx in (("reference", ref, match.ref_index), ("candidate", cand, match.cand_index)):
        parts: Dict[str, List[torch.Tensor]] = {"scores": [], "labels": [], "rank": [], "image": []}
        for k, s in enumerate(side):
            free = torch.ones(len(s), dtype=torch.bool)
            free[idx[match.image == k]] = False
            rank = torch.empty(len(s), dtype=torch.long)
            rank[torch.argsort(s.scores, descending=True, stable=True)] = torch.arange(len(s))
            parts["scores"].append(s.scores[free])
            parts["labels"].append(s.labels[free])
            parts["rank"].append(rank[free])
            parts["image"].append(torch.full((int(free.sum()),), k, dtype=torch.long))
        u: Dict[str, Any] = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64 if k == "scores" else torch.long)
                             for k, v in parts.items()}
        u["count"] = len(u["scores"])
        out[side_name] = u
    return out
