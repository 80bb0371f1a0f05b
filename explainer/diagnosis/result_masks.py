"""Masks in COCO results: reading ``segmentation`` with pycocotools, and comparing the masks of matched pairs.

A result's ``segmentation`` is compressed RLE (``{"size": [h, w], "counts": "..."}``, what pycocotools'
``mask.encode`` writes and Detectron2's ``instances_to_coco_json`` stores with its counts decoded to text),
uncompressed RLE (``counts`` a list of run lengths) or polygons (``[[x1, y1, x2, y2, ...], ...]``). Every
conversion is pycocotools' own (``frPyObjects``, ``merge``, ``encode``, ``decode``, ``area``, ``iou``); this
module only checks the structure first and bounds what a hostile file can make it allocate.

:func:`check_segmentation` is the structural check done while a file is read (a wrong type is an error of the
file). :func:`pair_rles` turns the masks of matched pairs into RLEs on a common canvas per image, and says
which ones cannot be read (counts that do not decode, a size that disagrees with the other side's, polygons
beyond the canvas): those are evidence, not errors. :func:`compare_masks` gives per pair the mask IoU, the
signed area difference and, on the pairs it examines, the boundary F-score and where the differing pixels lie.
Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util

from explainer._bounds import MASK_CANVAS_PIXELS, MASK_DECODE_PIXELS, MASK_MAX_SIDE, MASK_POLYGON_WALK
from explainer.masks import boundary_error, mask_iou

__all__ = ["check_segmentation", "segmentation_for_json", "grow_rle", "pair_rles", "compare_masks", "pair_evidence", "decode_pair",
           "boundary_f_score",
           "MAX_SIDE", "DECODE_PIXELS", "BOUNDARY_TOLERANCE"]

#: Largest mask height or width accepted, and the most pixels decoded for one mask (h * w bytes are allocated);
#: the longest outline (pixels, summed over a mask's polygons) drawn for one mask. See :mod:`explainer._bounds`.
MAX_SIDE, DECODE_PIXELS, MAX_POLYGON_WALK = MASK_MAX_SIDE, MASK_DECODE_PIXELS, MASK_POLYGON_WALK
#: The boundary F-score counts a contour pixel as found when the other contour passes within this many pixels.
BOUNDARY_TOLERANCE = 1
#: pycocotools' ``area`` takes at most this many RLEs at once (see :func:`_areas`).
_AREA_BATCH = 255
#: Compressed counts use the characters 48..111 (pycocotools' 6-bit code), and the last one ends its number
#: (no continuation bit, 0x20 after subtracting 48): otherwise pycocotools' reader runs past the end of the text.
_COUNTS = re.compile(rb"([0-o]*[0-O])?")

#: An RLE as pycocotools takes it, or None; and why a mask could not be read.
Rle = Optional[Dict[str, Any]]


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def _size(v: Any, where: str) -> Tuple[int, int]:
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_SIDE for x in v)
            or v[0] * v[1] >= MASK_CANVAS_PIXELS):
        raise ValueError(f"{where}: field 'segmentation' size must be [height, width], whole numbers in 0..{MAX_SIDE} "
                         f"(under 2**31 pixels); "
                         f"got {str(v)[:60]}")
    return int(v[0]), int(v[1])


def check_segmentation(v: Any, where: str) -> Any:
    """One result's ``segmentation`` checked for its structure: an RLE dict (``size`` [h, w] and ``counts`` as text
    or a list of run lengths) or a list of polygons (lists of numbers). Returns it as pycocotools takes it
    (counts as bytes); raises ``ValueError`` naming ``where`` and the field otherwise."""
    if isinstance(v, dict):
        if "size" not in v or "counts" not in v:
            raise ValueError(f"{where}: field 'segmentation' is an object without 'size' and 'counts' "
                             f"(expected RLE {{'size': [h, w], 'counts': ...}} or polygons [[x1, y1, ...], ...])")
        h, w = _size(v["size"], where)
        c = v["counts"]
        if isinstance(c, str):
            return {"size": [h, w], "counts": c.encode("utf-8", "surrogatepass")}
        if isinstance(c, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in c):
            return {"size": [h, w], "counts": c}
        raise ValueError(f"{where}: field 'segmentation' counts must be text (compressed RLE) or a list of whole "
                         f"numbers (uncompressed RLE); got {type(c).__name__}")
    if isinstance(v, list) and all(isinstance(p, list) for p in v):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for p in v for x in p):
            raise ValueError(f"{where}: field 'segmentation' polygons must be lists of numbers [x1, y1, x2, y2, ...]")
        try:
            return [[float(x) for x in p] for p in v]
        except OverflowError:
            raise ValueError(f"{where}: field 'segmentation' holds an integer beyond float64's range") from None
    raise ValueError(f"{where}: field 'segmentation' must be RLE {{'size': [h, w], 'counts': ...}} or polygons "
                     f"[[x1, y1, x2, y2, ...], ...]; got {type(v).__name__} {str(v)[:40]!r}")


def segmentation_for_json(masks: Any) -> Optional[List[Any]]:
    """Masks as COCO segmentations ready for ``json.dump``: a Tensor[N, H, W] tensor as compressed RLEs (counts as
    text, as Detectron2's ``instances_to_coco_json`` writes them), segmentations read from a file as they were."""
    if masks is None:
        return None
    if isinstance(masks, torch.Tensor):
        if not len(masks):
            return []
        rles = mask_util.encode(np.asfortranarray(masks.permute(1, 2, 0).to(torch.uint8).numpy()))
        return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]
    out: List[Any] = []
    for m in masks:
        if isinstance(m, dict) and isinstance(m.get("counts"), bytes):
            m = {"size": list(m["size"]), "counts": m["counts"].decode("utf-8", "surrogatepass")}
        out.append(m)
    return out


def _decode(rle: Dict[str, Any]) -> np.ndarray:
    """pycocotools' decode (its numpy-2 copy-keyword deprecation notice silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_util.decode(rle)


def grow_rle(rle: Dict[str, Any], g: int) -> Dict[str, Any]:
    """An RLE mask dilated (g > 0) or eroded (g < 0) by a (2|g| + 1)-pixel square, through pycocotools."""
    h, w = int(rle["size"][0]), int(rle["size"][1])
    if h * w > DECODE_PIXELS:
        raise ValueError(f"a {h} x {w} mask is too large to decode here")
    m = torch.from_numpy(_decode(rle).astype(bool))
    grown = _grow(m, g) if g > 0 else ~_grow(~m, -g) if g < 0 else m
    return {"size": [h, w], "counts": mask_util.encode(np.asfortranarray(grown.numpy().astype(np.uint8)))["counts"]}


def _sized(m: Any) -> Optional[Tuple[int, int]]:
    """The canvas a mask states: an RLE's size or a tensor's shape (polygons state none)."""
    if isinstance(m, dict):
        return int(m["size"][0]), int(m["size"][1])
    if isinstance(m, torch.Tensor):
        return int(m.shape[0]), int(m.shape[1])
    return None


def _rle(m: Any, canvas: Tuple[int, int]) -> Tuple[Rle, str]:
    """One mask as a compressed RLE on ``canvas``, or None and why it cannot be read ("" when there is no mask)."""
    if m is None:
        return None, ""
    h, w = canvas
    if isinstance(m, torch.Tensor):
        return mask_util.encode(np.asfortranarray(m.to(torch.uint8).numpy())), ""
    if isinstance(m, dict):
        if isinstance(m["counts"], list):
            c = m["counts"]
            if any(x < 0 for x in c) or sum(c) != h * w:
                return None, f"uncompressed RLE counts add up to {sum(c)} pixels, not {h} x {w} = {h * w}"
            return mask_util.frPyObjects(m, h, w), ""
        if not _COUNTS.fullmatch(m["counts"]):
            return None, "compressed RLE counts hold characters outside pycocotools' code (48..111), or end mid-number"
        try:
            area, box = int(mask_util.area(m)), mask_util.toBbox(m)
        except (ValueError, TypeError, OverflowError) as e:
            return None, f"RLE does not decode ({e})"
        if area > h * w or box[0] + box[2] > w or box[1] + box[3] > h:
            return None, f"RLE counts run past its {h} x {w} size"
        return m, ""
    return _polygons(m, canvas)


def _polygons(polys: List[List[float]], canvas: Tuple[int, int]) -> Tuple[Rle, str]:
    h, w = canvas
    parts = [p for p in polys if p]
    if not parts:
        return mask_util.frPyObjects({"size": [h, w], "counts": [h * w]}, h, w), ""   # empty, no canvas drawn
    walk = 0.0
    for p in parts:
        if len(p) < 6 or len(p) % 2:
            return None, f"a polygon has {len(p)} numbers (needs x, y pairs, at least 3 points)"
        xy = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(xy).all() or (xy < -(h + w)).any() or (xy > 2 * (h + w)).any():
            return None, f"a polygon has a non-finite coordinate or one far outside the {h} x {w} canvas"
        walk += float(np.abs(np.roll(xy, -1, 0) - xy).max(1).sum())
    if walk > MAX_POLYGON_WALK:  # pycocotools traces every edge at 5 points per pixel
        return None, f"polygons {walk:.3g} px long, beyond the {MAX_POLYGON_WALK:.0e} px drawn for one mask"
    return mask_util.merge(mask_util.frPyObjects(parts, h, w)), ""


def _canvas(masks: Sequence[Any], boxes: torch.Tensor) -> Tuple[Optional[Tuple[int, int]], str]:
    """One image's canvas: the size most of its sized masks state, else the extent of its polygons and boxes."""
    sizes = [s for s in (_sized(m) for m in masks) if s is not None]
    if sizes:
        return max(set(sizes), key=sizes.count), ""
    xs = [x for m in masks if isinstance(m, list) for p in m for x in p[0::2] if math.isfinite(x)]
    ys = [y for m in masks if isinstance(m, list) for p in m for y in p[1::2] if math.isfinite(y)]
    b = boxes[torch.isfinite(boxes).all(1)]
    xmax = max(xs + ([float(b[:, 2].max())] if len(b) else []) + [1.0])
    ymax = max(ys + ([float(b[:, 3].max())] if len(b) else []) + [1.0])
    h, w = math.ceil(ymax) + 1, math.ceil(xmax) + 1
    if h * w > DECODE_PIXELS or max(h, w) > MAX_SIDE:
        return None, f"polygons without an image size reach ({xmax:.4g}, {ymax:.4g}), beyond a canvas that can be drawn"
    return (h, w), ""


def pair_rles(ref: Sequence[Any], cand: Sequence[Any], image: Sequence[int], boxes: torch.Tensor
              ) -> Tuple[List[Rle], List[Rle], List[Tuple[int, str, str]]]:
    """The masks of matched pairs (``ref[i]``, ``cand[i]``: a segmentation, a Tensor[H, W] tensor or None; ``image[i]``
    the pair's image) as RLEs on one canvas per image; ``boxes`` (Tensor[2P, 4], both sides' boxes) bound polygons
    that state no size. Returns both sides' RLEs (None where absent or unreadable) and the problems as
    (pair, side, what)."""
    by_image: Dict[int, List[int]] = {}
    for i, k in enumerate(image):
        by_image.setdefault(int(k), []).append(i)
    n = len(ref)
    out_r: List[Rle] = [None] * n
    out_c: List[Rle] = [None] * n
    problems: List[Tuple[int, str, str]] = []
    for rows in by_image.values():
        here = [ref[i] for i in rows] + [cand[i] for i in rows]
        canvas, why = _canvas(here, boxes[torch.tensor(rows + [n + i for i in rows])])
        for i in rows:
            for side, m, out in (("reference", ref[i], out_r), ("candidate", cand[i], out_c)):
                if m is None:
                    continue
                size = _sized(m)
                if canvas is None:
                    problems.append((i, side, why))
                elif size is not None and size != canvas:
                    problems.append((i, side, f"mask size {size[0]} x {size[1]} differs from the {canvas[0]} x "
                                              f"{canvas[1]} of the other masks of its image"))
                else:
                    out[i], why_not = _rle(m, canvas)
                    if why_not:
                        problems.append((i, side, why_not))
    return out_r, out_c, problems


# --------------------------------------------------------------------------------------------------
# comparing
# --------------------------------------------------------------------------------------------------
def _grow(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(x[None, None].float(), 2 * r + 1, stride=1, padding=r)[0, 0] > 0


def _contour(m: torch.Tensor) -> torch.Tensor:
    """The mask's own pixels that touch a pixel outside it (8-neighbourhood; the image border does not count)."""
    return m & _grow(~m, 1)


def boundary_f_score(a: torch.Tensor, b: torch.Tensor, tolerance: int = BOUNDARY_TOLERANCE) -> float:
    """Boundary F-score of two Tensor[H, W] masks: precision = share of b's contour pixels within ``tolerance`` px
    (chessboard distance) of a's contour, recall the other way round, F = 2PR / (P + R); 1 when neither has a
    contour."""
    ca, cb = _contour(a.bool()), _contour(b.bool())
    na, nb = int(ca.sum()), int(cb.sum())
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    p = float((cb & _grow(ca, tolerance)).sum()) / nb
    r = float((ca & _grow(cb, tolerance)).sum()) / na
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def decode_pair(r: Dict[str, Any], c: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, int]]:
    """Both masks of a pair (RLEs on one canvas), cropped to their joint extent plus 3 px, and the crop's top-left
    pixel (row, column). Raises ``ValueError`` when either does not decode to exactly its size (pycocotools
    refuses runs past the end; runs that stop short leave a tail that encoding the decoded mask again does not
    reproduce)."""
    h, w = int(r["size"][0]), int(r["size"][1])
    if h * w > DECODE_PIXELS:
        raise ValueError(f"a {h} x {w} mask is too large to decode here")
    a, b = _decode(r), _decode(c)
    for m, rle in ((a, r), (b, c)):
        if int(mask_util.area(mask_util.encode(m))) != int(mask_util.area(rle)):
            raise ValueError("the RLE's runs stop short of its size")
    on = (a | b).astype(bool)
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    if not len(rows):
        return torch.zeros(1, 1, dtype=torch.bool), torch.zeros(1, 1, dtype=torch.bool), (0, 0)
    y0, y1 = max(int(rows[0]) - 3, 0), int(rows[-1]) + 4
    x0, x1 = max(int(cols[0]) - 3, 0), int(cols[-1]) + 4
    return (torch.from_numpy(a[y0:y1, x0:x1].astype(bool)), torch.from_numpy(b[y0:y1, x0:x1].astype(bool)), (y0, x0))


def pair_evidence(r: Dict[str, Any], c: Dict[str, Any]) -> Dict[str, Any]:
    """One pair's masks compared: ``iou``, ``boundary_f`` (:func:`boundary_f_score`), ``area_difference``
    (candidate - reference, pixels) and where the differing pixels lie (:func:`explainer.masks.boundary_error`:
    ``differ``, ``within_1px``, ``within_2px`` of the reference contour); ``ref`` and ``cand``, the two masks
    cropped, and ``origin`` (row, column), the crop's top-left pixel (see :func:`decode_pair`)."""
    a, b, origin = decode_pair(r, c)
    return {"iou": float(mask_iou(a, b)), "boundary_f": boundary_f_score(a, b),
            "area_difference": int(b.sum()) - int(a.sum()), **boundary_error(a, b), "ref": a, "cand": b,
            "origin": origin}


def compare_masks(ref: Sequence[Rle], cand: Sequence[Rle], examine: int = 1500) -> Dict[str, Any]:
    """Masks of matched pairs compared. For every pair with a readable mask on both sides: ``area_ref`` and
    ``area_cand`` (pixels, pycocotools' ``area``) and whether the RLEs are the same (``iou`` 1 without decoding).
    Of the pairs whose RLEs differ, at most ``examine`` (spread evenly over them) are decoded
    (:func:`pair_evidence`): their ``iou`` and ``boundary_f``, and the differing pixels summed in ``ring``;
    the other differing pairs keep NaN. ``unreadable``: pairs whose counts do not decode. Only decoded RLEs meet
    pycocotools' ``iou`` or ``merge``, whose loops assume runs that add up to the size."""
    n = len(ref)
    iou, f_score = np.full(n, np.nan), np.full(n, np.nan)
    area_r, area_c = np.full(n, np.nan), np.full(n, np.nan)
    both = [i for i in range(n) if ref[i] is not None and cand[i] is not None]
    if both:
        area_r[both] = _areas([ref[i] for i in both])
        area_c[both] = _areas([cand[i] for i in both])
    differing = []
    for i in both:
        r, c = ref[i], cand[i]
        assert r is not None and c is not None
        if r["counts"] == c["counts"]:
            iou[i] = f_score[i] = 1.0
        else:
            differing.append(i)
    ring = {"differ": 0, "within_1px": 0, "within_2px": 0}
    unreadable = []
    for i in differing if len(differing) <= examine else _spread(differing, examine):
        r, c = ref[i], cand[i]
        assert r is not None and c is not None
        try:
            ev = pair_evidence(r, c)
        except ValueError:
            unreadable.append(i)
            continue
        iou[i], f_score[i] = ev["iou"], ev["boundary_f"]
        for k in ring:
            ring[k] += ev[k]
    return {"iou": iou, "boundary_f": f_score, "area_ref": area_r, "area_cand": area_c, "ring": ring,
            "n_compared": len(both), "n_differing": len(differing), "unreadable": unreadable}


def _areas(rles: List[Any]) -> np.ndarray:
    """pycocotools' ``area`` of many RLEs, in batches of at most 255 (its ``area`` sizes a uint8 array with the
    count, which overflows under numpy 2)."""
    out = np.zeros(len(rles), dtype=np.float64)
    for a in range(0, len(rles), _AREA_BATCH):
        out[a:a + _AREA_BATCH] = mask_util.area(rles[a:a + _AREA_BATCH])
    return out


def _spread(rows: List[int], k: int) -> List[int]:
    """``k`` of ``rows`` spread evenly over them (deterministic)."""
    step = len(rows) / k
    return [rows[int(j * step)] for j in range(k)]
