"""Pasting an M x M mask prediction into the image, Detectron's way and Detectron2's way.

Coordinate conventions: boxes are N x 4 (x1, y1, x2, y2) in image pixels as each codebase's box head outputs them;
``image_size`` is (height, width). Pixel (i, j) has its centre at (j + 0.5, i + 0.5).

The two methods are named after those functions: ``mask_paste="segm_results"`` and
``mask_paste="paste_masks_in_image"`` (the values of :attr:`explainer.conventions.Convention.mask_paste`).

* **Detectron** (``core/test.py:segm_results``): zero-pad the mask to (M+2) x (M+2) (against OpenCV's border
  replication), expand the box by (M+2)/M about its centre with half-widths (x2 - x1)/2 (no +1,
  ``utils/boxes.py:expand_boxes``), truncate to int32 (towards zero), resize the padded mask with OpenCV's
  bilinear (``INTER_LINEAR``: half-pixel centres, border replicated) to (x2 - x1 + 1) x (y2 - y1 + 1), binarise with
  ``> MRCNN.THRESH_BINARIZE`` (0.5) and copy into pixels x1..x2, y1..y2, clipped to the image. All of it in float32,
  as Detectron runs it: its boxes are float32 (``box_results_with_nms_and_limit`` casts them), ``expand_boxes``
  scales them in place (``w_half *= scale`` keeps float32), the mask is a float32 blob, OpenCV resizes float32 in
  float32 (:func:`explainer.deployment.cv2_resize`) and numpy compares a float32 array with the threshold in
  float32. Box [5, 6, 33, 48] at M = 14 expands to [3.0, 2.999998, 35.0, 51.0] in float32, int [3, 2, 35, 51];
  double arithmetic would give [3, 3, 35, 51].
* **Detectron2** (``layers/mask_ops.py:paste_masks_in_image``): sample the mask at every pixel centre with
  ``grid_sample(align_corners=False)`` and zero padding, i.e. mask cell j covers x1 + [j, j+1) (x2 - x1)/M, and
  binarise with ``>= threshold``. On the CPU it pastes box by box over the box's pixels plus one (``skip_empty``),
  which is what this module does.

The bilinear resize is written in torch (no OpenCV needed). Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from explainer import _validate as _v
from explainer._validate import ArrayLike, as_boxes, as_tensor, image_size, one_of, positive_int, probability
from explainer.conventions import MASK_PASTES
from explainer.deployment import cv2_resize
from explainer.pixels import to_inclusive

__all__ = ["expand_boxes", "expanded_box_differences", "detectron_paste_steps", "paste_masks", "mask_iou",
           "boundary_error", "rasterize_disc", "perfect_mask_prediction", "detectron_mask_target",
           "synthetic_paste_experiment"]


@_v.finite_result
def expand_boxes(boxes: ArrayLike, scale: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Detectron's ``utils/boxes.py:expand_boxes``: scale half-widths (x2 - x1)/2 about the centre (no +1).

    Evaluated in ``dtype``, operation by operation as numpy does it on Detectron's float32 boxes: w_half = (x2 - x1)
    * .5, x_c = (x2 + x1) * .5, ``w_half *= scale`` (in place, so ``scale`` is rounded to float32 first), then
    x_c - w_half and x_c + w_half. The result is returned in float64, exactly as ``boxes_exp = np.zeros(...)`` stores
    it. ``dtype=torch.float64`` gives what the same formulas yield in double, for comparison.
    """
    scale = _v.finite_number(scale, "scale")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 (Detectron's boxes) or torch.float64, got {dtype!r}")
    b = as_boxes(boxes, "boxes", allow_inverted=True).to(dtype)
    sc = torch.tensor(scale, dtype=dtype)
    w_half = (b[:, 2] - b[:, 0]) * 0.5
    h_half = (b[:, 3] - b[:, 1]) * 0.5
    xc = (b[:, 2] + b[:, 0]) * 0.5
    yc = (b[:, 3] + b[:, 1]) * 0.5
    w_half, h_half = w_half * sc, h_half * sc
    return torch.stack([xc - w_half, yc - h_half, xc + w_half, yc + h_half], 1).to(torch.float64)


def expanded_box_differences(M: int = 14, max_coord: int = 63) -> Dict[str, float]:
    """How often Detectron's float32 ``expand_boxes`` truncates to another integer box than double arithmetic would,
    over every integer box with 0 <= x1 < x2 <= ``max_coord`` (the same on y).

    x and y go through the same arithmetic, so each axis is counted over its pairs (x1, x2) and a box differs when
    either axis does. Returns ``pairs``, ``pairs_differing`` (per axis), ``boxes``, ``boxes_differing``, ``fraction``
    (of boxes), ``x1_differs``, ``x2_differs`` (pairs whose left or right edge moves) and ``scale`` ((M + 2) / M).
    """
    M, n = positive_int(M, "M"), positive_int(max_coord, "max_coord")
    i, j = torch.triu_indices(n + 1, n + 1, offset=1)
    pairs = torch.stack([i, torch.zeros_like(i), j, torch.zeros_like(j)], 1).double()
    scale = (M + 2.0) / M
    e32 = torch.trunc(expand_boxes(pairs, scale, torch.float32))
    e64 = torch.trunc(expand_boxes(pairs, scale, torch.float64))
    d_lo, d_hi = e32[:, 0] != e64[:, 0], e32[:, 2] != e64[:, 2]
    p, d = len(pairs), int((d_lo | d_hi).sum())
    boxes = p * p
    differing = boxes - (p - d) ** 2
    return {"M": M, "scale": scale, "pairs": p, "pairs_differing": d, "x1_differs": int(d_lo.sum()),
            "x2_differs": int(d_hi.sum()), "boxes": boxes, "boxes_differing": differing, "fraction": differing / boxes}


def _check_resize(b: torch.Tensor, name: str) -> None:
    """Detectron resizes the padded mask to the whole expanded box (by (M + 2) / M <= 3): refuse absurd boxes."""
    if b.numel():
        bw, bh = (b[:, 2] - b[:, 0]).double() * 3 + 3, (b[:, 3] - b[:, 1]).double() * 3 + 3
        _v.check_values(float((bw * bh).max()), name, "the mask resized to the largest box (segm_results)",
                        "Detectron resizes the mask to the whole box; crop the box to the image first")


def _check(masks, boxes, size, threshold):
    m = as_tensor(masks, "masks")
    if m.dim() == 2:
        m = m[None]
    if m.dim() != 3 or m.shape[-1] != m.shape[-2] or m.shape[-1] == 0:
        raise ValueError(f"masks must be N x M x M (square, M >= 1), got shape {tuple(m.shape)}")
    b = as_boxes(boxes, "boxes", allow_inverted=False)
    if b.shape[0] != m.shape[0]:
        raise ValueError(f"masks has {m.shape[0]} masks but boxes has {b.shape[0]} boxes")
    h, w = image_size(size, "image_size_hw")
    _v.check_values(m.shape[0] * h * w, "image_size_hw", f"{m.shape[0]:,} masks of {h:,} x {w:,} pixels")
    t = probability(threshold, "threshold")
    return m, b, (h, w), t


def detectron_paste_steps(mask: ArrayLike, box: ArrayLike, image_size_hw: Sequence[int], threshold: float = 0.5,
                          expand_dtype: torch.dtype = torch.float32) -> Dict[str, object]:
    """Every step of Detectron's ``segm_results`` for one mask: padded mask, expanded box, integer box, resized
    mask (soft), binary mask in the box, and the pasted Tensor[H, W] boolean image.

    ``expand_dtype=torch.float64`` runs ``expand_boxes`` in double instead of Detectron's float32 (the rest stays as
    Detectron computes it), to show what the float32 box arithmetic changes.
    """
    mask, box = as_tensor(mask, "mask"), _v.as_box(box, "box")
    m, b, (H, W), t = _check(torch.as_tensor(mask)[None] if torch.as_tensor(mask).dim() == 2 else mask,
                             torch.as_tensor(box, dtype=torch.float64).reshape(1, 4), image_size_hw, threshold)
    _check_resize(b, "box")
    y0, y1, x0, x1, steps, region = _detectron_region(m[0], b[0], H, W, t, expand_dtype)
    out = torch.zeros(H, W, dtype=torch.bool)
    if region is not None:
        out[y0:y1, x0:x1] = steps["binary"][region]
    return {**steps, "pasted": out}


def _d2_paste_region(mask: torch.Tensor, box: torch.Tensor, H: int, W: int):
    """Detectron2's soft paste of one mask over the box's pixels plus one (its CPU path): (ya, yb, xa, xb, values)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    xa, ya = max(int(math.floor(x0)) - 1, 0), max(int(math.floor(y0)) - 1, 0)
    xb, yb = min(int(math.ceil(x1)) + 1, W), min(int(math.ceil(y1)) + 1, H)
    if xb <= xa or yb <= ya:
        return ya, ya, xa, xa, None
    img_y = (torch.arange(ya, yb, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    img_x = (torch.arange(xa, xb, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    gy, gx = torch.meshgrid(img_y, img_x, indexing="ij")
    grid = torch.stack([gx, gy], dim=2)[None]
    return ya, yb, xa, xb, F.grid_sample(mask[None, None].float(), grid, align_corners=False)[0, 0]


def _detectron_region(mask: torch.Tensor, box: torch.Tensor, H: int, W: int, threshold: float,
                      expand_dtype: torch.dtype = torch.float32):
    """Detectron's paste of one mask: (y0, y1, x0, x1, steps, region) for the part inside the image."""
    M = mask.shape[-1]
    padded = torch.zeros(M + 2, M + 2, dtype=torch.float32)            # np.zeros((M + 2, M + 2), dtype=np.float32)
    padded[1:-1, 1:-1] = mask.to(torch.float32)
    ebox = expand_boxes(box.to(torch.float32).reshape(1, 4), (M + 2.0) / M, expand_dtype)[0]
    ibox = torch.trunc(ebox).long()  # .astype(np.int32): truncation towards zero
    x1, y1, x2, y2 = (int(v) for v in ibox)
    w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    resized = cv2_resize(padded, (h, w))
    binary = resized > torch.tensor(threshold, dtype=torch.float32)    # float32 array > Python float: in float32
    x0, x_1 = max(x1, 0), min(x2 + 1, W)
    y0, y_1 = max(y1, 0), min(y2 + 1, H)
    steps = {"padded": padded, "expanded_box": ebox, "int_box": ibox, "resized": resized, "binary": binary}
    if x_1 <= x0 or y_1 <= y0:
        return 0, 0, 0, 0, steps, None
    region = (slice(y0 - y1, y_1 - y1), slice(x0 - x1, x_1 - x1))
    return y0, y_1, x0, x_1, steps, region


def paste_masks(masks: ArrayLike, boxes: ArrayLike, image_size_hw: Sequence[int], threshold: float = 0.5, mask_paste: str = "paste_masks_in_image",
                soft: bool = False) -> torch.Tensor:
    """Paste Tensor[N, M, M] masks into an image: Tensor[N, H, W] booleans (or floats in [0, 1] with ``soft=True``).

    ``mask_paste="segm_results"`` reproduces Detectron's ``core/test.py:segm_results`` in float32 (binarised with
    ``> threshold``; its soft variant is the resized mask before binarising, placed in the image; its boxes are
    rounded to float32, as Detectron's are);
    ``mask_paste="paste_masks_in_image"`` reproduces Detectron2's ``layers/mask_ops.py:paste_masks_in_image``
    (``>= threshold``). From a convention: ``mask_paste=conv.mask_paste``. ``boxes`` are Tensor[N, 4] as that
    codebase's box head outputs them (inclusive pixel indices for ``segm_results``, continuous coordinates for
    ``paste_masks_in_image``); boxes partly or wholly outside the image are valid.
    """
    one_of(mask_paste, "mask_paste", MASK_PASTES)
    soft = _v.flag(soft, "soft")
    m, b, (H, W), t = _check(masks, boxes, image_size_hw, threshold)
    if mask_paste == "segm_results":
        _check_resize(b, "boxes")
    n = m.shape[0]
    out = torch.zeros(n, H, W, dtype=torch.float32 if soft else torch.bool)
    for i in range(n):
        if mask_paste == "paste_masks_in_image":
            ya, yb, xa, xb, vals = _d2_paste_region(m[i], b[i], H, W)
            if vals is not None:
                out[i, ya:yb, xa:xb] = vals if soft else vals >= t
        else:
            y0, y1, x0, x1, steps, region = _detectron_region(m[i], b[i], H, W, t)
            if region is not None:
                src = steps["resized"] if soft else steps["binary"]
                out[i, y0:y1, x0:x1] = src[region].to(out.dtype)
    return out


def mask_iou(a: ArrayLike, b: ArrayLike) -> torch.Tensor:
    """IoU of boolean masks (..., H, W); 1 when both are empty."""
    a, b = _v.as_mask(a, "a"), _v.as_mask(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    inter = (a & b).flatten(-2).sum(-1).double()
    union = (a | b).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _dilate(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(x[None, None].float(), 2 * r + 1, stride=1, padding=r)[0, 0] > 0


def boundary_error(a: ArrayLike, b: ArrayLike) -> Dict[str, int]:
    """Where two Tensor[H, W] boolean masks differ: in total, and within 1 and 2 pixels of a's contour (8-neighbourhood)."""
    a, b = _v.as_mask(a, "a"), _v.as_mask(b, "b")
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"masks must be two H x W masks of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    contour = _dilate(a, 1) & _dilate(~a, 1)  # pixels with both an inside and an outside pixel among their 8 neighbours
    diff = a ^ b
    return {"differ": int(diff.sum()), "within_1px": int((diff & _dilate(contour, 1)).sum()),
            "within_2px": int((diff & _dilate(contour, 2)).sum())}


# --------------------------------------------------------------------------------------------
# A synthetic experiment with exact ground truth
# --------------------------------------------------------------------------------------------
SHAPES = ("disc", "diamond")


def _inside(shape: str, xs: torch.Tensor, ys: torch.Tensor, centre: Sequence[float], radius: float) -> torch.Tensor:
    """Points (grid of ys x xs) inside a disc or a diamond (a square turned 45 degrees, a polygon) of the given radius."""
    dx, dy = xs[None, :] - centre[0], ys[:, None] - centre[1]
    if shape == "disc":
        return dx ** 2 + dy ** 2 <= radius ** 2
    if shape == "diamond":
        return dx.abs() + dy.abs() <= radius
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def _centre(centre: Sequence[float]) -> List[float]:
    c = _v.numbers(centre, "centre")
    if len(c) != 2:
        raise ValueError(f"centre must be two numbers (x, y), got {len(c)}")
    return c


def rasterize_disc(centre: Sequence[float], radius: float, image_size_hw: Sequence[int], supersample: int = 1, shape: str = "disc") -> torch.Tensor:
    """Tensor[H, W] coverage of a disc or diamond (continuous coordinates): with ``supersample=1`` a boolean mask of the pixels
    whose centre is inside; with more, the covered fraction of each pixel (s x s samples)."""
    H, W = image_size(image_size_hw, "image_size_hw")
    centre, radius, shape = _centre(centre), _v.finite_number(radius, "radius", minimum=0.0, maximum=_v.MAX_COORDINATE), one_of(shape, "shape", SHAPES)
    supersample = _v.positive_int(supersample, "supersample")
    _v.check_values(H * W * supersample ** 2, "supersample", f"{H:,} x {W:,} pixels x {supersample ** 2:,} samples")
    s = max(int(supersample), 1)
    off = (torch.arange(s, dtype=torch.float64) + 0.5) / s
    ys = (torch.arange(H, dtype=torch.float64)[:, None] + off[None]).reshape(-1)
    xs = (torch.arange(W, dtype=torch.float64)[:, None] + off[None]).reshape(-1)
    inside = _inside(shape, xs, ys, centre, radius)
    cov = inside.double().reshape(H, s, W, s).mean(dim=(1, 3))
    return cov > 0.5 if s == 1 else cov


def perfect_mask_prediction(centre: Sequence[float], radius: float, box: Sequence[float], M: int = 28, supersample: int = 8,
                            shape: str = "disc") -> torch.Tensor:
    """The M x M mask a perfect head would predict for a disc: the fraction of each mask cell the disc covers."""
    centre, radius, shape = _centre(centre), _v.finite_number(radius, "radius", minimum=0.0, maximum=_v.MAX_COORDINATE), one_of(shape, "shape", SHAPES)
    box, M, supersample = _v.as_box(box, "box")[0].tolist(), _v.positive_int(M, "M"), _v.positive_int(supersample, "supersample")
    _v.check_values((M * supersample) ** 2, "supersample", f"{M} x {M} cells x {supersample ** 2:,} samples")
    x1, y1, x2, y2 = (float(v) for v in box)
    cw, ch = (x2 - x1) / M, (y2 - y1) / M
    off = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample
    cx = x1 + (torch.arange(M, dtype=torch.float64)[:, None] + off[None]).reshape(-1) * cw
    cy = y1 + (torch.arange(M, dtype=torch.float64)[:, None] + off[None]).reshape(-1) * ch
    inside = _inside(shape, cx, cy, centre, radius)
    return inside.double().reshape(M, supersample, M, supersample).mean(dim=(1, 3)).float()


def detectron_mask_target(centre: Sequence[float], radius: float, box: Sequence[float], M: int = 28,
                          supersample: int = 8, shape: str = "disc") -> torch.Tensor:
    """The M x M mask a perfect head trained on Detectron's targets predicts for an inclusive box [x1, y1, x2, y2].

    Detectron builds its targets in ``roi_data/mask_rcnn.py:add_mask_rcnn_blobs`` with
    ``utils/segms.py:polys_to_mask_wrt_box``: w = max(x2 - x1, 1) (no +1), the polygon mapped by (p - x1) M / w.
    The M cells therefore span [x1, x1 + w] of the polygon's continuous coordinates: the inclusive box's last pixel
    column and row (x2 .. x2 + 1) lie outside the target, while ``segm_results`` later pastes the mask over all
    x2 - x1 + 1 pixels. Here, the fraction of each of those cells the shape covers.
    """
    x1, y1, x2, y2 = _v.as_box(box, "box")[0].tolist()
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    return perfect_mask_prediction(centre, radius, [x1, y1, x1 + w, y1 + h], M, supersample, shape)


def synthetic_paste_experiment(sizes: Sequence[float] = (8, 16, 32, 64, 128), n: int = 40, seed: int = 0, M: int = 28,
                               shape: str = "disc") -> List[Dict[str, float]]:
    """Mask IoU against exact ground truth for each paste method, by object size (disc diameter in pixels).

    Each trial draws a disc (or a diamond, a polygon) at a random sub-pixel position and takes its tight box
    (continuous coordinates, as Detectron2's box head outputs; Detectron receives the same box as inclusive indices,
    x2 - 1). Three pastes of a perfect M x M prediction: ``detectron2`` (the mask over the continuous box, pasted by
    ``paste_masks_in_image``), ``detectron`` (the same mask pasted by ``segm_results`` on the inclusive box) and
    ``detectron_trained`` (the mask a head trained on Detectron's own targets predicts,
    :func:`detectron_mask_target`, pasted by ``segm_results``). Returns per size the mean IoU of each.
    """
    sizes, n, M, shape = _v.positive_numbers(sizes, "sizes"), _v.positive_int(n, "n"), _v.positive_int(M, "M"), one_of(shape, "shape", SHAPES)
    _v.check_values((max(sizes) + 9) ** 2, "sizes", "an image around the largest disc")
    g = torch.Generator().manual_seed(_v.seed(seed))
    rows = []
    for d in sizes:
        r = d / 2.0
        side = int(math.ceil(d + 8))
        ious: Dict[str, List[float]] = {"detectron": [], "detectron_trained": [], "detectron2": []}
        for _ in range(n):
            c = (4 + r + float(torch.rand(1, generator=g)), 4 + r + float(torch.rand(1, generator=g)))
            gt = rasterize_disc(c, r, (side, side), shape=shape)
            box = [c[0] - r, c[1] - r, c[0] + r, c[1] + r]
            mask = perfect_mask_prediction(c, r, box, M, shape=shape)
            d2 = paste_masks(mask[None], [box], (side, side), mask_paste="paste_masks_in_image")[0]
            # the same box as Detectron's inclusive indices, mapped in double and handed over as float32 like the box
            inc = to_inclusive(torch.tensor([box], dtype=torch.float64)).float()
            d1 = paste_masks(mask[None], inc, (side, side), mask_paste="segm_results")[0]
            trained = detectron_mask_target(c, r, inc[0].tolist(), M, shape=shape)
            d1t = paste_masks(trained[None], inc, (side, side), mask_paste="segm_results")[0]
            ious["detectron"].append(float(mask_iou(d1, gt)))
            ious["detectron_trained"].append(float(mask_iou(d1t, gt)))
            ious["detectron2"].append(float(mask_iou(d2, gt)))
        rows.append({"size": float(d), **{k: float(np.mean(v)) for k, v in ious.items()}, "n": n})
    return rows
