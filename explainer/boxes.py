"""Box area, IoU, box regression, clipping and NMS, with Detectron's "+1" and without it.

Coordinate conventions used in this module
------------------------------------------
Boxes are N x 4 tensors (x1, y1, x2, y2) in image pixels. Every function takes the keyword
``legacy_plus_one`` (the name of the Caffe2 operators' argument):

* ``legacy_plus_one=False`` (Detectron2, torchvision): continuous coordinates. The image is
  [0, W] x [0, H], a box's width is ``x2 - x1`` (``detectron2/structures/boxes.py``,
  ``modeling/box_regression.py``, ``torchvision.ops.nms``).
* ``legacy_plus_one=True`` (Detectron, ``detectron/utils/boxes.py``, ``cython_bbox.pyx``,
  ``cython_nms.pyx``): inclusive pixel indices. A box names its first and its last pixel, so its
  width is ``x2 - x1 + 1`` and the image is [0, W - 1] x [0, H - 1].

The legacy formulas are written out literally below. Most of them are Detectron2's formulas applied
to :func:`to_continuous` boxes ([x1, y1, x2 + 1, y2 + 1]); the tests prove it. The exceptions:

* :func:`clip`: Detectron clamps all four coordinates to [0, W - 1]; on continuous boxes that keeps
  a box that lies wholly outside the image one pixel wide, where Detectron2 collapses it to width 0.
* :func:`nms`: Detectron suppresses at IoU >= threshold, torchvision at IoU > threshold; Detectron
  returns the kept indices in ascending index order (``np.where``), torchvision in descending score
  order. Here both return descending score order.

Computations run in the floating dtype of the input (float32 for lists), except the legacy
:func:`nms`, which runs in float32 as ``cython_nms.pyx`` does. Nothing here imports matplotlib or
ipywidgets.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from explainer import _validate as _v
from explainer._torchvision import torchvision_op
from explainer._validate import ArrayLike, as_boxes, as_tensor, finite_number, image_size, probability
from explainer.pixels import box_size, to_continuous, to_inclusive

__all__ = [
    "to_continuous",
    "to_inclusive",
    "DEFAULT_SCALE_CLAMP",
    "area",
    "pairwise_iou",
    "greedy_match",
    "encode",
    "decode",
    "clip",
    "nonempty",
    "nms",
    "nms_threshold_as_strict",
    "iou_by_size",
    "nms_disagreement_by_size",
    "regression_drift",
    "legacy_plus_one_op_checks",
]

#: ``log(1000 / 16)``: Detectron's ``cfg.BBOX_XFORM_CLIP`` and Detectron2's ``_DEFAULT_SCALE_CLAMP``
#: (no predicted box grows more than 1000/16 times its proposal).
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _boxes(b: ArrayLike, name: str, legacy_plus_one: bool) -> torch.Tensor:
    return as_boxes(b, name, legacy_plus_one=legacy_plus_one)


def _weights(weights) -> Tuple[float, float, float, float]:
    w = tuple(_v.numbers(weights, "weights"))
    if len(w) != 4 or any(v <= 0 for v in w):
        raise ValueError(f"weights must be four positive numbers (wx, wy, ww, wh), got {weights!r}")
    return w  # type: ignore[return-value]


def _same_float(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    dt = torch.promote_types(a.dtype, b.dtype)
    return a.to(dt), b.to(dt)


# --------------------------------------------------------------------------------------------
# Area and IoU
# --------------------------------------------------------------------------------------------
def area(boxes: ArrayLike, *, legacy_plus_one: bool = False) -> torch.Tensor:
    """Box areas, N, in square image pixels.

    Detectron ``boxes_area``: (x2 - x1 + 1) * (y2 - y1 + 1).
    Detectron2 ``Boxes.area``: (x2 - x1) * (y2 - y1).
    The widths and heights are :func:`explainer.pixels.box_size`'s.
    """
    w, h = box_size(boxes, legacy_plus_one=legacy_plus_one)
    return w * h


def pairwise_iou(a: ArrayLike, b: ArrayLike, *, legacy_plus_one: bool = False) -> torch.Tensor:
    """Intersection over union of every box of ``a`` (Tensor[N, 4]) with every box of ``b`` (Tensor[M, 4]): Tensor[N, M].

    Detectron (``cython_bbox.pyx:bbox_overlaps``): iw = min(x2) - max(x1) + 1, ih likewise; the
    overlap is iw*ih / (area_a + area_b - iw*ih) with +1 areas when iw > 0 and ih > 0, else 0.
    Touching boxes such as [0, 0, 10, 10] and [10, 0, 20, 10] share pixel column 10: IoU 1/21.

    Detectron2 (``pairwise_iou``): iw = max(0, min(x2) - max(x1)), likewise ih; inter / union when
    inter > 0, else 0. Touching boxes have IoU 0.

    Batches: ``a`` Tensor[B, N, 4] and ``b`` Tensor[B, M, 4] give Tensor[B, N, M], image ``i`` of ``a`` against image ``i`` of
    ``b`` only (the same formulas; pad images to a common N or M and ignore the padded rows and columns).
    The result has the promoted floating dtype of ``a`` and ``b`` (float32 for lists).
    """
    a, b = _iou_inputs(a, b, legacy_plus_one)
    a, b = _same_float(a, b)
    a, b = a[..., :, None, :], b[..., None, :, :]      # ... x N x 1 x 4 against ... x 1 x M x 4
    if legacy_plus_one:
        iw = torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0]) + 1
        ih = torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1]) + 1
        area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
        area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
        inter = iw * ih
        ua = area_a + area_b - inter
        overlap = (iw > 0) & (ih > 0)
        return torch.where(overlap, inter / torch.where(overlap, ua, torch.ones_like(ua)), torch.zeros_like(inter))
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    pos = inter > 0
    return torch.where(pos, inter / torch.where(pos, union, torch.ones_like(union)), torch.zeros_like(inter))


def _iou_inputs(a: ArrayLike, b: ArrayLike, legacy_plus_one: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``a``, ``b`` checked as Tensor[N, 4] and Tensor[M, 4] boxes, or as Tensor[B, N, 4] and Tensor[B, M, 4] batches of them."""
    ta, tb = as_tensor(a, "a"), as_tensor(b, "b")
    if ta.dim() != 3 and tb.dim() != 3:
        return _boxes(ta, "a", legacy_plus_one), _boxes(tb, "b", legacy_plus_one)
    if ta.dim() != 3 or tb.dim() != 3 or ta.shape[0] != tb.shape[0] or ta.shape[-1] != 4 or tb.shape[-1] != 4:
        raise ValueError(f"a and b must be N x 4 and M x 4 boxes, or B x N x 4 and B x M x 4 batches with the same B; "
                         f"got shapes {tuple(ta.shape)} and {tuple(tb.shape)}")
    # rows of a batch are checked as one list of boxes (a bad row is named by its index in that list)
    return (_boxes(ta.reshape(-1, 4), "a", legacy_plus_one).reshape(ta.shape),
            _boxes(tb.reshape(-1, 4), "b", legacy_plus_one).reshape(tb.shape))


def greedy_match(iou: torch.Tensor, threshold: float) -> Tuple[torch.Tensor, ...]:
    """One-to-one pairs from an overlap matrix, the best remaining pair first, each with IoU >= ``threshold`` (> 0).

    ``iou``: Tensor[N, M], or Tensor[B, N, M] for B independent images (entries below the threshold, or negative for
    padding, never pair). Returns ``(rows, cols, values)`` for Tensor[N, M] and ``(batch, rows, cols, values)`` for
    Tensor[B, N, M]. Computed as rounds of mutually best pairs (each row's best column whose best row it is), which
    gives the same pairs as repeatedly taking the largest remaining entry, ties going to the lower index.
    """
    iou = as_tensor(iou, "iou")
    threshold = finite_number(threshold, "threshold")
    if iou.dim() not in (2, 3):
        raise ValueError(f"iou must be an N x M or B x N x M tensor, got {type(iou).__name__} "
                         f"{tuple(getattr(iou, 'shape', ()))}")
    flat = iou.dim() == 2
    m = iou[None] if flat else iou
    m = torch.where((m >= threshold) & (m > 0), m, torch.full_like(m, -1.0))
    rows = torch.arange(m.shape[1])
    out: List[List[torch.Tensor]] = [[], [], [], []]
    while m.numel():
        rmax, rarg = m.max(dim=2)
        carg = m.max(dim=1).indices
        mutual = (rmax > 0) & (carg.gather(1, rarg) == rows[None, :])
        if not mutual.any():
            break
        bi, ii = mutual.nonzero(as_tuple=True)
        jj = rarg[bi, ii]
        for lst, v in zip(out, (bi, ii, jj, rmax[bi, ii])):
            lst.append(v)
        m[bi, ii, :] = -1.0
        m[bi, :, jj] = -1.0
    b, i, j, v = (torch.cat(x) if x else torch.zeros(0, dtype=torch.long) for x in out)
    if not out[3]:
        v = torch.zeros(0, dtype=iou.dtype)
    return (i, j, v) if flat else (b, i, j, v)


# --------------------------------------------------------------------------------------------
# Box regression
# --------------------------------------------------------------------------------------------
@_v.finite_result
def encode(boxes: ArrayLike, targets: ArrayLike, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), *, legacy_plus_one: bool = False) -> torch.Tensor:
    """Regression deltas (dx, dy, dw, dh), Tensor[N, 4], that move each box (Tensor[N, 4]) onto its target (Tensor[N, 4]).

    Detectron ``bbox_transform_inv`` (``legacy_plus_one=True``)::

        w = x2 - x1 + 1.0;  cx = x1 + 0.5 * w          (same for the target: gw, gcx)
        dx = wx * (gcx - cx) / w;  dw = ww * log(gw / w)

    Detectron2 ``Box2BoxTransform.get_deltas``: the same with w = x2 - x1.
    ``weights`` are (wx, wy, ww, wh): (10, 10, 5, 5) for the box head (``BBOX_REG_WEIGHTS``),
    (1, 1, 1, 1) for the RPN. Widths must be positive (Detectron2 asserts it).
    """
    src = _boxes(boxes, "boxes", legacy_plus_one)
    tgt = _boxes(targets, "targets", legacy_plus_one)
    if src.shape[0] != tgt.shape[0]:
        raise ValueError(f"targets must have one row per box: got {tgt.shape[0]} targets for {src.shape[0]} boxes")
    wx, wy, ww, wh = _weights(weights)
    src, tgt = _same_float(src, tgt)
    ex_w, ex_h = box_size(src, legacy_plus_one=legacy_plus_one)
    gt_w, gt_h = box_size(tgt, legacy_plus_one=legacy_plus_one)
    for name, w in (("boxes", ex_w), ("boxes", ex_h), ("targets", gt_w), ("targets", gt_h)):
        if w.numel() and not (w > 0).all():
            bad = int((w <= 0).nonzero()[0])
            need = "x2 - x1 + 1 > 0" if legacy_plus_one else "x2 - x1 > 0 and y2 - y1 > 0"
            raise ValueError(f"{name} must have positive widths and heights ({need}) to be encoded; row {bad} has none")
    ex_cx = src[:, 0] + 0.5 * ex_w
    ex_cy = src[:, 1] + 0.5 * ex_h
    gt_cx = tgt[:, 0] + 0.5 * gt_w
    gt_cy = tgt[:, 1] + 0.5 * gt_h
    dx = wx * (gt_cx - ex_cx) / ex_w
    dy = wy * (gt_cy - ex_cy) / ex_h
    dw = ww * torch.log(gt_w / ex_w)
    dh = wh * torch.log(gt_h / ex_h)
    return torch.stack((dx, dy, dw, dh), dim=1)


@_v.finite_result
def decode(deltas: ArrayLike, boxes: ArrayLike, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), scale_clamp: float = DEFAULT_SCALE_CLAMP,
           *, legacy_plus_one: bool = False) -> torch.Tensor:
    """Apply regression deltas (N x 4k: k boxes per row, e.g. one per class) to boxes (Tensor[N, 4]): N x 4k.

    Detectron ``bbox_transform`` (``legacy_plus_one=True``)::

        w = x2 - x1 + 1.0;  cx = x1 + 0.5 * w
        dw = min(dw / ww, BBOX_XFORM_CLIP)                  # log(1000/16)
        pcx = dx / wx * w + cx;  pw = exp(dw) * w
        x1' = pcx - 0.5 * pw;  x2' = pcx + 0.5 * pw - 1     # "'- 1' is correct"

    Detectron2 ``Box2BoxTransform.apply_deltas``: w = x2 - x1 and x2' = pcx + 0.5 * pw (no - 1);
    ``scale_clamp`` is its ``_DEFAULT_SCALE_CLAMP``, the same log(1000/16).
    """
    b = _boxes(boxes, "boxes", legacy_plus_one)
    d = as_tensor(deltas, "deltas")
    if d.dim() == 1 and d.numel() == 0:
        d = d.reshape(0, 4)
    if d.dim() != 2 or d.shape[1] == 0 or d.shape[1] % 4:
        raise ValueError(f"deltas must have shape (N, 4k) as (dx, dy, dw, dh) per box, got shape {tuple(d.shape)}")
    if d.numel() and not torch.isfinite(d).all():
        raise ValueError("deltas must be finite")
    if d.shape[0] != b.shape[0]:
        raise ValueError(f"deltas must have one row per box: got {d.shape[0]} rows for {b.shape[0]} boxes")
    wx, wy, ww, wh = _weights(weights)
    clamp = finite_number(scale_clamp, "scale_clamp")
    d, b = _same_float(d, b)
    clamp = min(clamp, torch.finfo(d.dtype).max)        # a clamp beyond the dtype's range clamps nothing
    widths, heights = box_size(b, legacy_plus_one=legacy_plus_one)
    ctr_x = b[:, 0] + 0.5 * widths
    ctr_y = b[:, 1] + 0.5 * heights
    dx = d[:, 0::4] / wx
    dy = d[:, 1::4] / wy
    dw = torch.clamp(d[:, 2::4] / ww, max=clamp)
    dh = torch.clamp(d[:, 3::4] / wh, max=clamp)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    x1 = pred_ctr_x - 0.5 * pred_w
    y1 = pred_ctr_y - 0.5 * pred_h
    if legacy_plus_one:
        x2 = pred_ctr_x + 0.5 * pred_w - 1
        y2 = pred_ctr_y + 0.5 * pred_h - 1
    else:
        x2 = pred_ctr_x + 0.5 * pred_w
        y2 = pred_ctr_y + 0.5 * pred_h
    return torch.stack((x1, y1, x2, y2), dim=-1).reshape(d.shape)


# --------------------------------------------------------------------------------------------
# Clipping and small-box filtering
# --------------------------------------------------------------------------------------------
def clip(boxes: ArrayLike, image_size_hw: Sequence[int], *, legacy_plus_one: bool = False) -> torch.Tensor:
    """Clamp boxes (Tensor[N, 4]) into an image of ``image_size_hw = (height, width)``: Tensor[N, 4].

    Detectron ``clip_tiled_boxes`` / ``clip_boxes_to_image``: all four coordinates to
    [0, W - 1] x [0, H - 1] (the last pixel index). Detectron2 ``Boxes.clip((h, w))``: all four to
    [0, W] x [0, H]. A box touching the right border therefore ends at x2 = W - 1 in one and W in the
    other (the same pixels), but a box starting beyond W - 1 keeps x1 = W - 1 in Detectron only.
    """
    h, w = image_size(image_size_hw, "image_size_hw")
    b = _boxes(boxes, "boxes", legacy_plus_one)
    top_x, top_y = (w - 1, h - 1) if legacy_plus_one else (w, h)
    out = b.clone()
    out[:, 0::2] = b[:, 0::2].clamp(min=0, max=top_x)
    out[:, 1::2] = b[:, 1::2].clamp(min=0, max=top_y)
    return out


def nonempty(boxes: ArrayLike, min_size: float = 0.0, *, legacy_plus_one: bool = False) -> torch.Tensor:
    """Indices (int64) of the boxes larger than ``min_size`` in both directions.

    Detectron ``filter_small_boxes``: keep (x2 - x1 + 1 > min_size) and (y2 - y1 + 1 > min_size).
    Detectron2 ``Boxes.nonempty(threshold)``: keep (x2 - x1 > threshold) and (y2 - y1 > threshold).
    """
    t = finite_number(min_size, "min_size")
    w, h = box_size(boxes, legacy_plus_one=legacy_plus_one)
    return ((w > t) & (h > t)).nonzero().flatten()


# --------------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------------
def nms_threshold_as_strict(iou_threshold: float) -> float:
    """The double t' for which torchvision's test ``ovr > t'`` makes exactly Detectron's decisions, for float32 ovr.

    ``cython_nms.pyx:nms`` declares ``np.float32_t thresh``: the Python float (``cfg.TEST.NMS``, ``RPN_NMS_THRESH``)
    is rounded to the nearest float32 c when it is passed in, the overlap ``ovr`` is a float32 (``cdef
    np.float32_t inter, ovr``), and the test ``ovr >= thresh`` compares two float32. torchvision's CPU kernel
    (``nms_kernel.cpp``) also computes ``ovr`` in float32 for float32 boxes, but compares it with ``double
    iou_threshold`` using ``>``. For a float32 x, x >= c holds exactly when x > c_, where c_ is the float32 just
    below c (no float32 lies between them); so t' = c_, returned as a double, turns Detectron's test into
    torchvision's without changing a single decision.

    The rounding of the threshold matters: 0.7 rounds down to float32 0.699999988. An IoU of exactly 63/90
    (integer boxes with +1 areas 90 and 63) computes to that same float32, so Detectron suppresses the box
    (0.699999988 >= 0.699999988), where a comparison with the double 0.7 would keep it.
    """
    c = _float32_threshold(probability(iou_threshold, "iou_threshold"))
    return float(np.nextafter(c, np.float32(-np.inf)))


def _float32_threshold(t: float) -> np.float32:
    """``thresh`` as ``cython_nms.pyx`` holds it (``np.float32_t``): the double rounded to the nearest float32.

    (torch compares a float32 tensor with a 0-d float32 tensor in float32, as the .pyx does.)
    """
    return np.float32(t)


def _legacy_order(scores: torch.Tensor) -> torch.Tensor:
    """Detectron's ``scores.argsort()[::-1]`` with a stable sort: equal scores go higher index first."""
    return torch.argsort(scores, stable=True).flip(0)


_EXACT_GRID_BITS = 22


def _on_exact_grid(b32: torch.Tensor) -> bool:
    """True when float32 arithmetic on x2 + 1 and on x2 - x1 + 1 cannot round (see :func:`nms`).

    That is the case when every coordinate is a multiple of 2^-k with |x| * 2^k <= 2^22 for one k
    (e.g. whole pixel indices below 4 million): then every sum and difference the two kernels form
    is an integer multiple of 2^-k below 2^24 in magnitude, which float32 holds exactly.
    """
    if b32.numel() == 0:
        return True
    x = b32.to(torch.float64)
    m = float(x.abs().max()) + 1.0
    k = _EXACT_GRID_BITS - math.ceil(math.log2(m)) if m > 0 else _EXACT_GRID_BITS
    if k < 0:
        return False
    scaled = x * (2.0 ** k)
    return bool((scaled == torch.round(scaled)).all())


def _legacy_keep_holds(b32: torch.Tensor, kept_rank: torch.Tensor, thresh: float,
                       chunk: int = 256) -> bool:
    """Check a candidate result against Detectron's arithmetic: the greedy NMS result is the only set K
    such that a box is in K exactly when no earlier box of K overlaps it with IoU >= thresh.

    ``b32``: boxes in processing order (float32); ``kept_rank``: positions in that order of K.
    Overlaps are computed with the literal float32 formulas of ``cython_nms.pyx``.
    """
    n = b32.shape[0]
    thresh32 = torch.tensor(_float32_threshold(thresh))
    x1, y1, x2, y2 = b32.unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    suppressed = torch.zeros(n, dtype=torch.bool)
    pos = torch.arange(n)
    # only columns that can overlap a chunk need looking at: sort columns by x1 once
    xs, xorder = torch.sort(x1)
    max_w = float((x2 - x1).max()) + 1.0 if n else 0.0
    # chunks of kept boxes that lie close together, so that each chunk meets few columns
    by_x = kept_rank[torch.argsort(x1[kept_rank])]
    for s in range(0, by_x.numel(), chunk):
        rows = by_x[s:s + chunk]
        if thresh32 > 0:
            lo = int(torch.searchsorted(xs, x1[rows].min() - max_w - 1.0))
            hi = int(torch.searchsorted(xs, x2[rows].max() + 1.0, right=True))
            cols = xorder[lo:hi]
        else:  # IoU 0 >= 0 suppresses even disjoint boxes (a threshold below 2^-150 rounds to 0): every column counts
            cols = pos
        shape = (rows.numel(), cols.numel())
        # explicit expand: torch's broadcasting min/max is far slower than on expanded views

        def r(v, rows=rows, shape=shape):
            return v[rows, None].expand(shape)

        def c(v, cols=cols, shape=shape):
            return v[None, cols].expand(shape)

        w = (torch.minimum(r(x2), c(x2)) - torch.maximum(r(x1), c(x1)) + 1).clamp(min=0)
        h = (torch.minimum(r(y2), c(y2)) - torch.maximum(r(y1), c(y1)) + 1).clamp(min=0)
        inter = w * h
        ovr = inter / (r(areas) + c(areas) - inter)
        hit = (ovr >= thresh32) & (r(pos) < c(pos))
        suppressed[cols] |= hit.any(0)
    is_kept = torch.zeros(n, dtype=torch.bool)
    is_kept[kept_rank] = True
    return bool((suppressed == ~is_kept).all())


def _legacy_nms_greedy(b32: torch.Tensor, thresh: float) -> torch.Tensor:
    """Detectron's greedy loop, vectorised over the boxes after the current one (boxes in processing order)."""
    n = b32.shape[0]
    thresh32 = torch.tensor(_float32_threshold(thresh))
    x1, y1, x2, y2 = b32.unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, n)
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + 1).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + 1).clamp(min=0)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest] |= ovr >= thresh32
    return torch.tensor(keep, dtype=torch.int64)


def nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float, *, legacy_plus_one: bool = False) -> torch.Tensor:
    """Greedy non-maximum suppression: indices (int64) of the kept boxes, in descending score order.

    ``boxes``: Tensor[N, 4]; ``scores``: N; ``iou_threshold`` in [0, 1].

    Detectron2 (``legacy_plus_one=False``) calls ``torchvision.ops.nms``: no +1, a box is suppressed
    when its IoU with a kept, higher-scoring box is **> iou_threshold**.

    Detectron (``cython_nms.pyx:nms``, ``legacy_plus_one=True``), everything in float32, the threshold included
    (``np.float32_t thresh``: 0.7 becomes 0.699999988)::

        areas = (x2 - x1 + 1) * (y2 - y1 + 1);  order = scores.argsort()[::-1]
        for each i in order, unless suppressed:
            w = max(0, min(x2[i], x2[j]) - max(x1[i], x1[j]) + 1)   (h likewise)
            ovr = w*h / (areas[i] + areas[j] - w*h)
            suppress every later j with ovr >= thresh

    For example boxes [474, 276, 482, 285] (score 0.388) and [475, 276, 481, 284] (0.761) at 0.7: the +1 IoU is
    63/90, which float32 computes as 0.699999988 = float32(0.7), so Detectron suppresses box 0 and keeps [1];
    torchvision's IoU without +1 is 48/72 and it keeps both.

    Detectron returns ``np.where(suppressed == 0)`` (ascending index); sort the result to compare.
    Among equal scores Detectron's order is whatever numpy's default (unstable) sort leaves, reversed;
    for small arrays, which numpy sorts by insertion, that is the higher index first. Here it is always
    the higher index first, as a stable ``argsort()[::-1]`` gives. (torchvision takes the lower index
    first; with distinct scores the two orders agree.)

    How it is computed fast: the legacy arithmetic on a box is torchvision's on [x1, y1, x2 + 1, y2 + 1],
    and Detectron's ``ovr >= float32(t)`` is torchvision's ``ovr > t'`` with t' from
    :func:`nms_threshold_as_strict`; so torchvision runs on the shifted boxes, fed in Detectron's order. When the
    coordinates lie on a grid where float32 cannot round x2 + 1 or x2 - x1 + 1 (whole pixels, for instance) the
    result is exact by construction; otherwise it is checked against the literal float32 formulas and, in the
    rare case that a one-ulp rounding difference changes a decision, recomputed with the literal loop.
    """
    tv_nms = torchvision_op("nms")   # torch.ops.torchvision.nms: what torchvision.ops.nms calls
    b = _boxes(boxes, "boxes", legacy_plus_one)
    s = as_tensor(scores, "scores")
    if s.dim() == 0 or (s.dim() != 1 and not (s.dim() == 2 and s.shape[1] == 1)):
        raise ValueError(f"scores must have shape (N,), got {tuple(s.shape)}")
    s = s.reshape(-1)
    if s.numel() != b.shape[0]:
        raise ValueError(f"scores must have one value per box: got {s.numel()} scores for {b.shape[0]} boxes")
    if s.numel() and not torch.isfinite(s).all():
        raise ValueError("scores must be finite")
    t = probability(iou_threshold, "iou_threshold")
    if b.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    if not legacy_plus_one:
        b, s = _same_float(b, s)
        return tv_nms(b, s, t)

    order = _legacy_order(s.to(torch.float32))  # dets[:, 4] of the float32 dets array
    if b.dtype == torch.float64 and float(b.abs().max()) > _v.FLOAT32_SAFE:
        # areas beyond float32's range, where Detectron's float32 gives inf and NaN: the literal loop in float64
        return order[_legacy_nms_greedy(b[order], t)]
    b32 = b.to(torch.float32)[order]
    shifted = to_continuous(b32)
    # distinct scores in processing order make torchvision follow exactly that order
    rank_scores = torch.arange(b32.shape[0], 0, -1, dtype=torch.float32)
    kept_rank = tv_nms(shifted, rank_scores, nms_threshold_as_strict(t))
    if not (_on_exact_grid(b32) or _legacy_keep_holds(b32, kept_rank, t)):
        kept_rank = _legacy_nms_greedy(b32, t)
    return order[kept_rank]


# --------------------------------------------------------------------------------------------
# Helpers for the chapter's figures and tables
# --------------------------------------------------------------------------------------------
def iou_by_size(sizes: ArrayLike, shift: float = 1.0, *, diagonal: bool = False) -> Dict[str, torch.Tensor]:
    """IoU of a square box of each size with the same box moved ``shift`` pixels, under both conventions.

    ``sizes``: K box sides in image pixels (the four numbers are [0, 0, s, s] and [d, 0, s + d, s], or
    shifted along both axes with ``diagonal``). Returns float64 tensors of K values:
    ``detectron``, ``detectron2`` and ``relative_difference`` = (Detectron - Detectron2) / Detectron2
    (infinite where Detectron2's IoU is 0).
    """
    sz = as_tensor(sizes, "sizes", dtype=torch.float64).reshape(-1)
    if sz.numel() and (not torch.isfinite(sz).all() or (sz <= 0).any()):
        raise ValueError("sizes must be positive, finite box sides in pixels")
    d = finite_number(shift, "shift")
    dy = d if _v.flag(diagonal, "diagonal") else 0.0
    zeros = torch.zeros_like(sz)
    a = torch.stack([zeros, zeros, sz, sz], 1)
    b = torch.stack([zeros + d, zeros + dy, sz + d, sz + dy], 1)
    out = {key: pairwise_iou(a, b, legacy_plus_one=plus).diagonal() for key, plus in (("detectron", True), ("detectron2", False))}
    d2 = out["detectron2"]
    out["relative_difference"] = torch.where(d2 > 0, (out["detectron"] - d2) / torch.where(d2 > 0, d2, torch.ones_like(d2)),
                                             torch.full_like(d2, math.inf))
    return out


def nms_disagreement_by_size(sizes: Sequence[float], n_boxes: int = 300, iou_threshold: float = 0.5, jitter: float = 0.25,
                             seed: int = 0) -> Dict[str, List[int]]:
    """How often the two NMS rules keep different boxes, for clusters of boxes of each size, in three settings.

    For each size s (image pixels), ``n_boxes`` boxes of side about s are drawn around 10 random centres in a square
    of side 20 s, with corners jittered by ``jitter * s``, and random scores (seeded). Detectron's NMS
    (``legacy_plus_one=True``) runs on Detectron's boxes; Detectron2's runs on:

    * ``differ``: the same four numbers per box, rounded to whole pixels (as when Detectron-style boxes are handed
      to Detectron2 unchanged): "+1" and the tie rule both act;
    * ``differ_mapped``: the same whole-pixel boxes mapped with :func:`to_continuous` ([x1, y1, x2 + 1, y2 + 1]), as a
      correctly converted model's boxes are: IoUs are then equal, and only the tie rule remains (an IoU exactly equal
      to the threshold is suppressed by ``>=`` and kept by ``>``);
    * ``differ_mapped_fractional``: the same, with the corners left fractional (decoded boxes are): exact ties no
      longer occur.

    Returns lists of K values: ``detectron_kept``, ``detectron2_kept`` (same numbers), and the three ``differ*`` counts
    (boxes kept by exactly one of the two rules). ``n_boxes`` is at most 100,000.
    """
    sz = _v.numbers(sizes, "sizes")
    if any(v <= 0 for v in sz):
        raise ValueError("sizes must be positive box sides in pixels")
    n = _v.positive_int(n_boxes, "n_boxes", maximum=100_000)
    iou_threshold, jitter = probability(iou_threshold, "iou_threshold"), finite_number(jitter, "jitter", minimum=0.0)
    g = torch.Generator().manual_seed(_v.seed(seed))
    out: Dict[str, List[int]] = {"detectron_kept": [], "detectron2_kept": [], "differ": [], "differ_mapped": [],
                                 "differ_mapped_fractional": []}
    for side in sz:
        centres = torch.rand(10, 2, generator=g, dtype=torch.float64) * 20 * side
        c = centres[torch.randint(0, 10, (n,), generator=g)]
        half = side / 2
        frac = torch.cat([c - half, c + half], 1) + (torch.rand(n, 4, generator=g, dtype=torch.float64) - 0.5) * 2 * jitter * side
        frac[:, 2:] = torch.maximum(frac[:, 2:], frac[:, :2])
        b = torch.round(frac)
        b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2])
        scores = torch.rand(n, generator=g)
        k1 = set(nms(b, scores, iou_threshold, legacy_plus_one=True).tolist())
        k2 = set(nms(b, scores, iou_threshold).tolist())
        k3 = set(nms(to_continuous(b), scores, iou_threshold).tolist())
        f32 = frac.to(torch.float32)  # the legacy NMS computes in float32: compare both on the same float32 corners
        k1f = set(nms(f32, scores, iou_threshold, legacy_plus_one=True).tolist())
        k3f = set(nms(to_continuous(f32), scores, iou_threshold).tolist())
        out["detectron_kept"].append(len(k1))
        out["detectron2_kept"].append(len(k2))
        out["differ"].append(len(k1 ^ k2))
        out["differ_mapped"].append(len(k1 ^ k3))
        out["differ_mapped_fractional"].append(len(k1f ^ k3f))
    return out


def regression_drift(proposals: ArrayLike, targets: ArrayLike, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)) -> Dict[str, torch.Tensor]:
    """What a Detectron-trained box head asks for, and what Detectron2's decoder makes of it.

    The head learned Detectron's deltas: ``encode(proposals, targets, legacy_plus_one=True)``.
    Decoding them with Detectron's formula on the same proposals gives the targets back; decoding
    them with Detectron2's formula on the same four numbers does not. Returns Tensor[N, 4] tensors:
    ``deltas``, ``detectron`` (legacy decode), ``detectron2`` (Detectron2 decode of the same numbers),
    ``detectron2_mapped`` (Detectron2 decode of ``to_continuous(proposals)``, shown back as inclusive
    indices) and ``drift`` = detectron2 - detectron, in image pixels.
    """
    p = _boxes(proposals, "proposals", True)
    deltas = encode(p, targets, weights, legacy_plus_one=True)
    legacy = decode(deltas, p, weights, legacy_plus_one=True)
    d2 = decode(deltas, p, weights)
    mapped = to_inclusive(decode(deltas, to_continuous(p), weights))
    return {"deltas": deltas, "detectron": legacy, "detectron2": d2, "detectron2_mapped": mapped, "drift": d2 - legacy}


def _fmt_box(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3f}".rstrip("0").rstrip(".") for v in t.tolist()) + "]"


def _check_generate_proposals() -> Tuple[str, str, str, bool]:
    anchor = torch.tensor([[0.0, 0.0, 15.0, 15.0]])
    rpn_delta = torch.tensor([[0.1, -0.1, 0.2, 0.1]])
    legacy = clip(decode(rpn_delta, anchor, legacy_plus_one=True), (16, 16), legacy_plus_one=True)[0]
    d2 = clip(decode(rpn_delta, anchor), (16, 16))[0]
    return ("anchor [0, 0, 15, 15], RPN deltas [0.1, -0.1, 0.2, 0.1], weights 1: decode, clip to a 16 x 16 image",
            _fmt_box(legacy), _fmt_box(d2), not torch.equal(legacy, d2))


def _check_decode() -> Tuple[str, str, str, bool]:
    proposal = torch.tensor([[20.0, 30.0, 79.0, 99.0]])
    head_delta = torch.tensor([[1.0, -0.5, 0.5, -0.25]])
    legacy = decode(head_delta, proposal, (10, 10, 5, 5), legacy_plus_one=True)[0]
    d2 = decode(head_delta, proposal, (10, 10, 5, 5))[0]
    return ("proposal [20, 30, 79, 99], deltas [1, -0.5, 0.5, -0.25], weights (10, 10, 5, 5): decode",
            _fmt_box(legacy), _fmt_box(d2), not torch.equal(legacy, d2))


def _check_nms() -> Tuple[str, str, str, bool]:
    pair = torch.tensor([[10.0, 20.0, 18.0, 24.0], [12.0, 18.0, 18.0, 25.0]])
    pair_scores = torch.tensor([0.8, 0.9])
    legacy = sorted(nms(pair, pair_scores, 0.5, legacy_plus_one=True).tolist())
    d2 = sorted(nms(pair, pair_scores, 0.5).tolist())
    iou1 = float(pairwise_iou(pair[:1], pair[1:], legacy_plus_one=True))
    iou2 = float(pairwise_iou(pair[:1], pair[1:]))
    return ("boxes [10, 20, 18, 24] (score 0.8) and [12, 18, 18, 25] (0.9), NMS at 0.5: kept",
            f"{legacy} (IoU {iou1:.4f})", f"{d2} (IoU {iou2:.4f})", legacy != d2)


def _check_area() -> Tuple[str, str, str, bool]:
    level_box = torch.tensor([[10.0, 10.0, 121.0, 121.0]])
    a1 = float(area(level_box, legacy_plus_one=True)[0])
    a2 = float(area(level_box)[0])
    return ("box [10, 10, 121, 121]: sqrt(area), which picks the FPN level (boundary 224 / 2 = 112)",
            f"{math.sqrt(a1):g}", f"{math.sqrt(a2):g}", a1 != a2)


#: The live check of each kind named by ``CAFFE2_LEGACY_PLUS_ONE_OPS[...]["live_check"]``.
_OP_CHECKS: Dict[str, Callable[[], Tuple[str, str, str, bool]]] = {
    "decode": _check_decode, "nms": _check_nms, "area": _check_area,
}


def legacy_plus_one_op_checks() -> List[Dict[str, object]]:
    """One live check per Caffe2 operator that gained ``legacy_plus_one``, computed with this module.

    Returns one dict per operator of ``explainer.export_ops.CAFFE2_LEGACY_PLUS_ONE_OPS`` (same order),
    with ``op``, ``check`` (what is computed), ``detectron`` and ``detectron2`` (the two values, as
    text) and ``differs`` (bool). ``GenerateProposals`` decodes an anchor and clips it; the other
    operators get the check their ``live_check`` names.
    """
    from explainer.export_ops import CAFFE2_LEGACY_PLUS_ONE_OPS

    out: List[Dict[str, object]] = []
    for op in CAFFE2_LEGACY_PLUS_ONE_OPS:
        fn = _check_generate_proposals if op["op"] == "GenerateProposals" else _OP_CHECKS.get(op["live_check"])
        check, legacy, d2, differs = fn() if fn is not None else ("not computed here", "", "", False)
        out.append({"op": op["op"], "check": check, "detectron": legacy, "detectron2": d2, "differs": differs})
    return out
