"""Which detection of the candidate is which of the reference: one-to-one matching per image, robust to large mistakes.

Both sides are stacks of every detection (a :class:`Stack`: ``boxes`` N x 4, ``scores`` N, ``image`` N indices
of a shared image list, non-decreasing), so that nothing here loops over images: the cost follows the number
of detections, not of images.

:func:`match_stacks` pairs detections one to one within each image, greedily by box IoU (labels ignored). The
pairs worth an IoU are found through one sort: two boxes with IoU >= t overlap by at least t of their union
along x as well, which puts the candidate's x-centre within w (1 - t) / (2 t) of the reference's (w its width);
each reference box meets only the candidates of its image inside that window, found by one lexicographic sort of
(image, x-centre). IoU is computed in float64, scale-free (relative to the pair's joint extent, so boxes 1e20 px
wide neither overflow nor lose their ratio; two identical empty boxes have IoU 1). The greedy assignment is
computed as rounds of mutually best pairs (:func:`explainer.boxes.greedy_match`'s rule: the largest remaining
IoU first, ties to the lower reference row, then the lower candidate row) over all images at once.

:func:`align_and_match` survives large geometric mistakes: when few pairs overlap as they are, the reference
is aligned first. Detections are paired by score rank within each image (scores survive geometric mistakes),
a robust per-coordinate line c = a r + b is fitted to those pairs (least median of squares over random pairs,
then least squares on the inliers), and the "xyxy written as xywh" reading is tried as well; whichever
alignment matches most detections at IoU >= :data:`MATCH_IOU` is kept. The alignment only decides which
detections pair up: :func:`matched_pairs` and :func:`residuals` report the pairs in their original
coordinates, so it never hides a difference. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Protocol, Sequence, Tuple

import numpy as np
import torch

from explainer.roi_align import fpn_level_of_size

__all__ = ["MATCH_IOU", "MAX_CANDIDATE_PAIRS", "Stack", "Match", "match_boxes", "match_stacks", "align_and_match",
           "matched_pairs", "residuals", "unmatched", "score_rank", "count_before", "lex_order", "pair_iou",
           "xyxy_read_as_xywh"]

#: Matched pairs need this box IoU (after alignment).
MATCH_IOU = 0.5
#: Refuse inputs whose overlap windows hold more (reference, candidate) pairs than this (boxes piled on one spot).
MAX_CANDIDATE_PAIRS = 200_000_000
#: IoUs are computed this many pairs at a time.
_CHUNK = 1 << 21
#: Rounds of mutually best pairs before the rest is assigned one pair at a time (long chains of overlaps).
_ROUNDS = 12


class Stack(Protocol):
    """One side's detections in one stack: ``boxes`` Tensor[N, 4] (float64), ``scores`` N, ``labels`` N, ``image`` N
    (non-decreasing)."""

    @property
    def boxes(self) -> torch.Tensor: ...

    @property
    def scores(self) -> torch.Tensor: ...

    @property
    def labels(self) -> torch.Tensor: ...

    @property
    def image(self) -> torch.Tensor: ...


class Match(NamedTuple):
    """Matched pairs: ``image`` (index into the shared image list), ``ref_row`` and ``cand_row`` (rows of the two
    stacks), and the pair's ``iou`` (float64, after alignment); ordered by reference row."""

    image: torch.Tensor
    ref_row: torch.Tensor
    cand_row: torch.Tensor
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


# --------------------------------------------------------------------------------------------------
# sorted-index helpers
# --------------------------------------------------------------------------------------------------
def _dense(k: np.ndarray) -> Tuple[np.ndarray, int]:
    """Dense ranks of ``k`` (equal values share a rank, 0..m-1) and m."""
    if k.dtype.kind in "iub" and len(k) and int(k.max()) - int(k.min()) < 4 * len(k) + 16:
        d = (k - k.min()).astype(np.int64)
        return d, int(d.max()) + 1
    o = np.argsort(k)
    sk = k[o]
    step = np.empty(len(k), dtype=np.int64)
    step[:1] = 0
    step[1:] = sk[1:] != sk[:-1]
    d = np.empty(len(k), dtype=np.int64)
    d[o] = np.cumsum(step)
    return d, int(d[o[-1]]) + 1 if len(k) else 1


def lex_order(*keys: np.ndarray) -> np.ndarray:
    """The order that sorts rows by ``keys[0]``, then ``keys[1]``, ...: one argsort of a combined int64 key when
    the ranks fit (np.lexsort otherwise); rows equal in every key come in no particular order."""
    code = np.zeros(len(keys[0]), dtype=np.int64)
    bound = 1
    for k in keys:
        d, m = _dense(k)
        if bound * m >= 1 << 62:
            return np.lexsort(keys[::-1])
        code = code * m + d
        bound *= m
    return np.argsort(code)


def count_before(item_group: torch.Tensor, item_value: torch.Tensor, q_group: torch.Tensor, q_value: torch.Tensor,
                 inclusive: Sequence[bool] = (False,)) -> List[torch.Tensor]:
    """For each query (group g, value v): how many items have a lower group, or group g and a value below v
    (``<=`` v where ``inclusive``). ``q_value`` may be Q (one bound) or Tensor[Q, B] (B bounds, ``inclusive`` one flag
    each); one lexicographic sort answers all of them. Returns B tensors of Q counts."""
    qv = q_value.reshape(len(q_group), -1)
    nb, nq, ni = qv.shape[1], len(q_group), len(item_group)
    # on equal (group, value): strict bounds sort before the items, inclusive ones after them
    kind = np.concatenate([np.full(ni, 1)] + [np.full(nq, 2 if inc else 0) for inc in inclusive[:nb]])
    groups = np.concatenate([item_group.numpy()] + [q_group.numpy()] * nb)
    values = np.concatenate([item_value.numpy()] + [qv[:, k].numpy() for k in range(nb)])
    order = lex_order(groups, values, kind)
    is_item = order < ni
    before = np.empty(len(order), dtype=np.int64)
    before[order] = np.cumsum(is_item) - is_item
    return [torch.from_numpy(before[ni + k * nq: ni + (k + 1) * nq]) for k in range(nb)]


def score_rank(scores: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Each detection's rank by score within its image (0 = best; ties in row order); rows grouped by image."""
    n = len(scores)
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    order = lex_order(image.numpy(), -scores.numpy(), np.arange(n))
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    first = np.searchsorted(image.numpy(), image.numpy(), side="left")  # rows are grouped: the image's first row
    return torch.from_numpy(pos - first)


# --------------------------------------------------------------------------------------------------
# IoU of candidate pairs, greedy assignment
# --------------------------------------------------------------------------------------------------
def pair_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of box ``a[k]`` with box ``b[k]`` (Tensor[E, 4] each, float64). Where areas could overflow float64 (coordinates
    of 1e150 and beyond), coordinates are halved (exact in binary floating point, so no difference overflows)
    and measured in units of the pair's joint extent. Empty (inverted or zero-area) boxes have IoU 0 with
    anything but an identical box, with which they have IoU 1."""
    if not len(a):
        return torch.zeros(0, dtype=torch.float64)
    a2, b2 = a, b
    if max(float(a.abs().max()), float(b.abs().max())) >= 1e150:  # areas could overflow: measure in joint extents
        a2, b2 = a * 0.5, b * 0.5
        lo = torch.minimum(a2[:, :2], b2[:, :2])
        ext = (torch.maximum(a2[:, 2:], b2[:, 2:]) - lo).clamp(min=torch.finfo(torch.float64).tiny)
        a2 = (a2 - lo.repeat(1, 2)) / ext.repeat(1, 2)
        b2 = (b2 - lo.repeat(1, 2)) / ext.repeat(1, 2)
    area_a = (a2[:, 2:] - a2[:, :2]).clamp(min=0).prod(1)
    area_b = (b2[:, 2:] - b2[:, :2]).clamp(min=0).prod(1)
    inter = (torch.minimum(a2[:, 2:], b2[:, 2:]) - torch.maximum(a2[:, :2], b2[:, :2])).clamp(min=0).prod(1)
    union = area_a + area_b - inter
    iou = torch.where(union > 0, inter / union.clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(inter))
    return torch.where((a == b).all(1), torch.ones_like(iou), iou)


def _edges(ref: torch.Tensor, ri: torch.Tensor, cand: torch.Tensor, ci: torch.Tensor,
           threshold: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (reference row, candidate row) pair of one image with IoU >= ``threshold``, and its IoU."""
    cx_c = (cand[:, 0] + cand[:, 2]) * 0.5
    order = torch.from_numpy(lex_order(ci.numpy(), cx_c.numpy()))
    cx_r = (ref[:, 0] + ref[:, 2]) * 0.5
    w = (ref[:, 2] - ref[:, 0]).clamp(min=0)
    half = w * ((1 - threshold) / (2 * threshold)) * (1 + 1e-6) + 1e-9 * (cx_r.abs() + w) + 1e-12
    start, end = count_before(ci, cx_c, ri, torch.stack([cx_r - half, cx_r + half], 1), inclusive=(False, True))
    length = (end - start).clamp(min=0)
    total = int(length.sum())
    if total > MAX_CANDIDATE_PAIRS:
        raise ValueError(f"{total:,} (reference, candidate) pairs overlap enough to be compared (more than "
                         f"{MAX_CANDIDATE_PAIRS:,}): are the boxes piled on one spot, or all of one huge size?")
    rows, cols, vals = [], [], []
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), length.cumsum(0)])
    r0 = 0
    while r0 < len(ref):  # chunks of whole reference rows, about _CHUNK pairs each
        r1 = max(int(torch.searchsorted(bounds, bounds[r0] + _CHUNK, right=True)) - 1, r0 + 1)
        L = length[r0:r1]
        rr = torch.repeat_interleave(torch.arange(r0, r1), L)
        pos = torch.arange(int(L.sum())) - torch.repeat_interleave(bounds[r0:r1] - bounds[r0], L) + start[rr]
        cc = order[pos]
        v = pair_iou(ref[rr], cand[cc])
        keep = v >= threshold
        rows.append(rr[keep])
        cols.append(cc[keep])
        vals.append(v[keep])
        r0 = r1
    if not rows:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.float64)
    return torch.cat(rows), torch.cat(cols), torch.cat(vals)


def _greedy(r: torch.Tensor, c: torch.Tensor, v: torch.Tensor, nr: int, nc: int) -> torch.Tensor:
    """The edges (indices into r, c, v) that the greedy assignment keeps: rounds of mutually best edges."""
    E = len(v)
    if E == 0:
        return torch.zeros(0, dtype=torch.long)
    rank = torch.empty(E, dtype=torch.long)
    rank[torch.from_numpy(lex_order(-v.numpy(), r.numpy(), c.numpy()))] = torch.arange(E)
    alive = torch.arange(E)
    won = []
    for _ in range(_ROUNDS):
        rr, cc, kk = r[alive], c[alive], rank[alive]
        best_r = torch.full((nr,), E, dtype=torch.long).scatter_reduce(0, rr, kk, "amin")
        best_c = torch.full((nc,), E, dtype=torch.long).scatter_reduce(0, cc, kk, "amin")
        win = (kk == best_r[rr]) & (kk == best_c[cc])
        won.append(alive[win])
        used_r = torch.zeros(nr, dtype=torch.bool)
        used_c = torch.zeros(nc, dtype=torch.bool)
        used_r[rr[win]] = True
        used_c[cc[win]] = True
        alive = alive[~(used_r[rr] | used_c[cc])]
        if not len(alive):
            break
    if len(alive):  # what long chains leave: the best remaining edge first, one at a time
        taken_r, taken_c = set(), set()
        rest = []
        for e in alive[torch.argsort(rank[alive])].tolist():
            a, b = int(r[e]), int(c[e])
            if a not in taken_r and b not in taken_c:
                taken_r.add(a)
                taken_c.add(b)
                rest.append(e)
        won.append(torch.tensor(rest, dtype=torch.long))
    return torch.cat(won)


def match_stacks(ref: Stack, cand: Stack, threshold: float = MATCH_IOU, ref_boxes: Any = None) -> Match:
    """One-to-one pairs within each image, greedy by IoU, each with IoU >= ``threshold`` (in (0, 1]).

    ``ref_boxes`` (optional) stands for ``ref.boxes`` (an alignment hypothesis); inverted boxes match nothing.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    rb = ref.boxes if ref_boxes is None else ref_boxes
    if not len(rb) or not len(cand.boxes):
        return Match.none()
    r, c, v = _edges(rb, ref.image, cand.boxes, cand.image, threshold)
    keep = _greedy(r, c, v, len(rb), len(cand.boxes))
    r, c, v = r[keep], c[keep], v[keep]
    order = torch.argsort(r)
    return Match(ref.image[r[order]], r[order], c[order], v[order])


class _Boxes(NamedTuple):
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    image: torch.Tensor


def match_boxes(ref: Sequence[torch.Tensor], cand: Sequence[torch.Tensor], threshold: float = MATCH_IOU
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-to-one pairs per image (``ref[i]`` against ``cand[i]``, lists of Tensor[N, 4] boxes) as
    (image, reference index in the image, candidate index in the image, IoU), ordered by image and reference index."""
    sides = []
    for boxes in (ref, cand):
        counts = torch.tensor([len(b) for b in boxes], dtype=torch.long)
        stack = torch.cat([torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4) for b in boxes]) if boxes else \
            torch.zeros(0, 4, dtype=torch.float64)
        image = torch.repeat_interleave(torch.arange(len(boxes)), counts)
        sides.append((_Boxes(stack, torch.zeros(len(stack), dtype=torch.float64), torch.zeros(len(stack), dtype=torch.long),
                             image), counts.cumsum(0) - counts))
    (rs, ro), (cs, co) = sides
    m = match_stacks(rs, cs, threshold)
    return m.image, m.ref_row - ro[m.image], m.cand_row - co[m.image], m.iou


# --------------------------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------------------------
def _rank_pairs(ref: Stack, cand: Stack) -> Tuple[torch.Tensor, torch.Tensor]:
    """Tentative correspondences for alignment, within each image: the same score rank, and each candidate with
    the reference of nearest score."""
    n_img = int(max(int(ref.image.max()) if len(ref.image) else -1, int(cand.image.max()) if len(cand.image) else -1)) + 1
    nr = torch.bincount(ref.image, minlength=n_img)
    nc = torch.bincount(cand.image, minlength=n_img)
    m = torch.minimum(nr, nc)
    rank_r, rank_c = score_rank(ref.scores, ref.image), score_rank(cand.scores, cand.image)
    sel_r = torch.from_numpy(lex_order(ref.image.numpy(), rank_r.numpy()))
    sel_c = torch.from_numpy(lex_order(cand.image.numpy(), rank_c.numpy()))
    sel_r = sel_r[rank_r[sel_r] < m[ref.image[sel_r]]]
    sel_c = sel_c[rank_c[sel_c] < m[cand.image[sel_c]]]
    # nearest score in the same image: the neighbours of the candidate's score among the reference's, sorted
    has = nr[cand.image] > 0
    by_score = torch.from_numpy(lex_order(ref.image.numpy(), ref.scores.numpy()))
    first = (nr.cumsum(0) - nr)[cand.image]
    k = count_before(ref.image[by_score], ref.scores[by_score], cand.image, cand.scores)[0]
    lo = (k - 1).clamp(min=0)
    lo = torch.maximum(lo, first)
    hi = torch.minimum(k, first + nr[cand.image] - 1).clamp(min=0)
    lo, hi = lo.clamp(max=max(len(by_score) - 1, 0)), hi.clamp(max=max(len(by_score) - 1, 0))
    rows_c = torch.arange(len(cand.scores))[has]
    if len(by_score):
        a, b = by_score[lo[has]], by_score[hi[has]]
        s = cand.scores[has]
        near = torch.where((ref.scores[a] - s).abs() <= (ref.scores[b] - s).abs(), a, b)
    else:
        near = torch.zeros(0, dtype=torch.long)
    return (torch.cat([ref.boxes[sel_r], ref.boxes[near]]), torch.cat([cand.boxes[sel_c], cand.boxes[rows_c]]))


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


def align_and_match(ref: Stack, cand: Stack, seed: int = 0) -> Tuple[str, Match]:
    """Match as given ("identity"); when that pairs fewer than 90% of the smaller side, also try an "affine"
    alignment of the reference and the "xyxy-as-xywh" reading, and keep the one that matches clearly more.

    ``seed`` fixes the random pairs of the robust line fit. Returns the alignment's name and the pairs.
    """
    gen = torch.Generator().manual_seed(seed)
    best_name, best = "identity", match_stacks(ref, cand)
    need = min(len(ref.boxes), len(cand.boxes))
    if best.n >= 0.9 * need:
        return best_name, best
    tries = [("xyxy-as-xywh", xyxy_read_as_xywh(ref.boxes))]
    rt, ct = _rank_pairs(ref, cand)
    if rt.shape[0] >= 2:
        lines = [_lmeds_line(rt[:, k], ct[:, k], gen) for k in range(4)]
        a = torch.tensor([line[0] for line in lines], dtype=torch.float64)
        b = torch.tensor([line[1] for line in lines], dtype=torch.float64)
        tries.insert(0, ("affine", ref.boxes * a + b))
    for name, mapped in tries:
        m = match_stacks(ref, cand, ref_boxes=mapped)
        if m.n > best.n + max(2, 0.05 * need):
            best_name, best = name, m
    return best_name, best


# --------------------------------------------------------------------------------------------------
# what the pairs and the left-overs are
# --------------------------------------------------------------------------------------------------
def matched_pairs(ref: Stack, cand: Stack, match: Match) -> Dict[str, torch.Tensor]:
    """The pairs as tensors: ``image``, ``ref_row``, ``cand_row``, ``iou``, and for each side (``ref_``,
    ``cand_``) its ``boxes``, ``labels`` and ``scores``, in the sides' original coordinates."""
    out = {"image": match.image, "ref_row": match.ref_row, "cand_row": match.cand_row, "iou": match.iou}
    for prefix, side, rows in (("ref", ref, match.ref_row), ("cand", cand, match.cand_row)):
        for attr in ("boxes", "labels", "scores"):
            out[f"{prefix}_{attr}"] = getattr(side, attr)[rows]
    return out


def residuals(pairs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Per matched pair: candidate - reference for ``dx1, dy1, dx2, dy2`` (px), the reference box's ``size``
    (sqrt of its area, px), its FPN ``level`` (:func:`explainer.roi_align.assign_fpn_levels`'s rule, Detectron2's,
    on that size: boxes of any magnitude have one; a box with a NaN coordinate, which the diagnosis reports as
    ``non_finite``, counts as the lowest level) and its ``image``."""
    rb = pairs["ref_boxes"]
    d = pairs["cand_boxes"] - rb
    size = ((rb[:, 2] - rb[:, 0]).clamp(min=0) * (rb[:, 3] - rb[:, 1]).clamp(min=0)).sqrt()
    return {"dx1": d[:, 0], "dy1": d[:, 1], "dx2": d[:, 2], "dy2": d[:, 3], "size": size,
            "level": fpn_level_of_size(torch.nan_to_num(size, nan=0.0)), "image": pairs["image"]}


def unmatched(ref: Stack, cand: Stack, match: Match) -> Dict[str, Dict[str, Any]]:
    """Per side (``reference``, ``candidate``): the detections without a partner, with their ``rows``,
    ``scores``, ``labels``, ``image`` and ``rank`` (by score within the image), and their ``count``."""
    out = {}
    for side_name, side, rows in (("reference", ref, match.ref_row), ("candidate", cand, match.cand_row)):
        free = torch.ones(len(side.scores), dtype=torch.bool)
        free[rows] = False
        idx = free.nonzero()[:, 0]
        rank = score_rank(side.scores, side.image)
        u: Dict[str, Any] = {"rows": idx, "scores": side.scores[idx], "labels": side.labels[idx],
                             "image": side.image[idx], "rank": rank[idx], "count": int(len(idx))}
        out[side_name] = u
    return out
