"""Why do two sets of detections for the same images differ?  Name the convention mistake from its fingerprint.

``diagnose(reference, candidate)`` matches detections one to one per image (by box IoU, ignoring labels),
fits every hypothesis of :data:`CAUSES` to the matched pairs, looks at what the unmatched detections have in
common, and returns a :class:`Diagnosis`: the causes ranked, each with its evidence in numbers and the fix.

Each side is detections for one or more images, in any of these forms (see :func:`load_detections`):

* a COCO result list ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score", "keypoints"?}, ...]``,
  or the path of a JSON file holding one;
* ``{"boxes": N x 4 (x1, y1, x2, y2), "scores": N, "labels": N, "masks"?: N x H x W, "keypoints"?: N x K x 3}``
  for one image, or ``{image_id: such a dict}`` / a list of them for several;
* an N x 4, N x 5 (+ score) or N x 6 (+ score, label) tensor or array for one image.

How the matching survives large mistakes: when few pairs overlap as they are, the candidate is aligned
first. Detections are paired by score rank within each image (scores survive geometric mistakes), a robust
per-coordinate line c = a r + b is fitted to those pairs (least median of squares over random pairs, then
least squares on the inliers), and the "xyxy written as xywh" reading is tried as well; whichever
alignment matches most detections at IoU >= 0.5 is kept. The causes are then fitted on the matched pairs
in their original coordinates, so the alignment never hides a difference.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ._validate import as_tensor, finite_number
from ._validate import image_size as _image_size
from .boxes import greedy_match
from .labels import COCO_CATEGORY_IDS
from .pixels import xyxy_to_xywh

__all__ = [
    "CAUSES",
    "Cause",
    "Diagnosis",
    "Detections",
    "ImageDetections",
    "load_detections",
    "to_coco_results",
    "diagnose",
    "inject",
    "register_cli",
]

#: Matched pairs need this box IoU (after alignment).
MATCH_IOU = 0.5
#: Below this fraction of matched detections the two sides are called unrelated.
UNRELATED_BELOW = 0.3
#: Differences at or below these are "identical": box coordinates (px) and scores.
BOX_ATOL, SCORE_ATOL = 1e-4, 1e-5
#: Mask evidence (where the differing pixels lie) is read from at most this many differing pairs.
MASK_PAIRS_EXAMINED = 2000


# --------------------------------------------------------------------------------------------------
# the vocabulary
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CauseInfo:
    """One entry of the vocabulary: what it means, the fingerprint the diagnosis looks for, and the fix."""

    meaning: str
    fingerprint: str
    fix: str


#: Every cause :func:`diagnose` can report, in the order the course introduces them.
CAUSES: Dict[str, CauseInfo] = {
    "identical": CauseInfo(
        "the two sides agree",
        f"every detection matched, boxes within {BOX_ATOL:g} px, scores within {SCORE_ATOL:g}, same labels",
        "nothing to fix"),
    "no_detections": CauseInfo(
        "one side (or both) has no detections",
        "an empty side",
        "check the export of the empty side: the input image (normalisation, BGR/RGB, size), the score threshold, "
        "and that its results were written at all"),
    "plus_one": CauseInfo(
        "Detectron's inclusive box corners (width = x2 - x1 + 1) against Detectron2's continuous ones",
        "x1, y1 agree; x2 and y2 differ by exactly 1 px",
        "convert inclusive boxes with x2 += 1, y2 += 1 (Detectron's COCO export adds 1 to w and h); "
        "in Caffe2 operators set legacy_plus_one to match the model's training code"),
    "half_pixel_shift": CauseInfo(
        "pixel indices (centre of the first pixel = 0) read as continuous coordinates (its left edge = 0)",
        "all four coordinates shifted by the same 0.5 px",
        "add or subtract 0.5 where one side converts between pixel indices and coordinates "
        "(ROIAlign aligned=True, MODEL.ROI_BOX_HEAD.POOLER_TYPE, the exporter's coordinate convention)"),
    "scale": CauseInfo(
        "boxes left in the resized input's frame (the rescale to the original image is missing or doubled)",
        "every coordinate multiplied by one constant",
        "rescale the boxes to the original image size (Detectron2's detector_postprocess with the original "
        "height and width; Detectron divides by im_scale)"),
    "anisotropic_scale": CauseInfo(
        "x and y rescaled by different factors: height and width swapped, or a resize that ignored the aspect ratio",
        "x coordinates times sx, y coordinates times sy, sx != sy",
        "pass (height, width) where (height, width) is expected, and rescale x by the width ratio, y by the height ratio"),
    "translation": CauseInfo(
        "a constant offset: padding or a crop that is not undone",
        "x coordinates + dx, y coordinates + dy, the same for every box",
        "subtract the padding (letterbox) offset or add back the crop origin before comparing"),
    "xywh_as_xyxy": CauseInfo(
        "(x1, y1, x2, y2) written where (x, y, width, height) is expected, or the other way round",
        "x1, y1 agree; the candidate's width equals the reference's x2 (and its height the reference's y2)",
        "convert with w = x2 - x1, h = y2 - y1 when writing COCO's bbox (and back with x2 = x + w on reading)"),
    "label_offset": CauseInfo(
        "class indices shifted: background first (Detectron, 0 = background) against last (Detectron2), "
        "or 1-based against 0-based label maps",
        "boxes match; candidate label = reference label + k for one constant k",
        "reorder the classifier rows when converting (background row first vs last) or map labels with the "
        "dataset's contiguous id mapping"),
    "label_permutation": CauseInfo(
        "a different class order (label map, or the classifier's rows permuted)",
        "boxes match; each reference label maps to one candidate label, not by a constant offset",
        "use the same class list (in the same order) on both sides; for COCO, the dataset's metadata "
        "thing_dataset_id_to_contiguous_id"),
    "coco_category_ids": CauseInfo(
        "COCO's category ids (1..90, with gaps) against the 80 contiguous labels",
        "labels shifted by +1 for the first 11 classes and by more after each gap (12, 26, 29, 30, 45, ...)",
        "map contiguous labels through COCO's category id list when writing results (and back when reading)"),
    "keypoint_half_pixel": CauseInfo(
        "keypoints as pixel indices (COCO annotations) against continuous coordinates (raw Detectron2 output)",
        "keypoints shifted by the same 0.5 px in x and y while the boxes agree",
        "subtract 0.5 from raw Detectron2 keypoints when writing COCO results (its COCO evaluator does this)"),
    "flip_off_by_one": CauseInfo(
        "a horizontal flip computed as W - 1 - x (pixel indices) on one side and W - x (coordinates) on the other",
        "keypoints (or flipped boxes) differ by exactly 1 px in x and not at all in y",
        "flip continuous coordinates with W - x and pixel indices with W - 1 - x; keep one convention per quantity"),
    "mask_paste": CauseInfo(
        "masks pasted into the image by different methods (Detectron's per-box resize vs Detectron2's grid sampling)",
        "boxes agree; masks differ only within 2 px of their contour",
        "use the same paste (Detectron2's paste_masks_in_image, or its legacy paste for Detectron models)"),
    "threshold_or_topk": CauseInfo(
        "a different score threshold, detection cap or pre/post-NMS top-k",
        "matched detections agree; the unmatched ones are all scored below the matched ones, or beyond a "
        "per-image count",
        "align MODEL.ROI_HEADS.SCORE_THRESH_TEST / TEST.SCORE_THRESH, TEST.DETECTIONS_PER_IMAGE / "
        "TEST.DETECTIONS_PER_IM and the RPN top-k settings"),
    "numerical_noise": CauseInfo(
        "floating-point differences (fp16, another backend, another resize implementation)",
        "small, unstructured differences in boxes and scores, no pattern shared by the pairs",
        "nothing, if the size is acceptable; otherwise compare the preprocessed input tensors first"),
    "inference_difference": CauseInfo(
        "the models compute differently: anchors, ROIAlign, box decoding, NMS or weights",
        "matched boxes differ by more than numerics with no global pattern, or scores drift while boxes agree",
        "compare the two pipelines stage by stage (anchors, proposals, pooled features) or bisect the "
        "conventions (explainer.pipeline.bisect_conventions)"),
    "unrelated": CauseInfo(
        "the two sides do not describe the same detections",
        f"fewer than {UNRELATED_BELOW:.0%} of the detections match one to one, even after trying a global alignment",
        "check that both files are for the same images (image ids, file order) and the same model; "
        "if they are, the converted model is broken: compare its stages with the original's"),
}


@dataclass
class Cause:
    """One ranked cause: ``name`` (a key of :data:`CAUSES`), ``strength`` in [0, 1], ``evidence``, ``fix``."""

    name: str
    strength: float
    evidence: Dict[str, Any]
    fix: str
    explanation: str

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "strength": round(float(self.strength), 4), "evidence": _jsonable(self.evidence),
                "fix": self.fix, "explanation": self.explanation}


def _cause(name: str, strength: float, evidence: Dict[str, Any], explanation: str) -> Cause:
    return Cause(name, float(min(max(strength, 0.0), 1.0)), evidence, CAUSES[name].fix, explanation)


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, torch.Tensor):
        return _jsonable(v.tolist())
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return round(f, 6) if math.isfinite(f) else str(f)
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
@dataclass
class ImageDetections:
    """One image's detections: boxes N x 4 (x1, y1, x2, y2, float64), scores N, labels N (int64),
    and optionally masks N x H x W (bool) and keypoints N x K x 3 (x, y, visibility)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    masks: Optional[torch.Tensor] = None
    keypoints: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def take(self, keep: torch.Tensor) -> "ImageDetections":
        return ImageDetections(self.boxes[keep], self.scores[keep], self.labels[keep],
                               None if self.masks is None else self.masks[keep],
                               None if self.keypoints is None else self.keypoints[keep])


@dataclass
class Detections:
    """Detections of several images: ``images`` maps image id -> :class:`ImageDetections`, in input order."""

    images: Dict[Any, ImageDetections]
    source: str = "detections"

    @property
    def n(self) -> int:
        return sum(len(d) for d in self.images.values())


def _empty_image() -> ImageDetections:
    return ImageDetections(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
                           torch.zeros(0, dtype=torch.long))


def _number(v, where: str, field_: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ValueError(f"{where}: field '{field_}' must be a finite number, got {v!r}")
    return float(v)


def _image_key(v, where: str):
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"{where}: field 'image_id' must be an integer or a string, got {v!r}")
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return v


def _from_coco(entries: Sequence[Any], source: str) -> Detections:
    per: Dict[Any, Dict[str, list]] = {}
    for i, e in enumerate(entries):
        where = f"{source}: entry {i}"
        if not isinstance(e, dict):
            raise ValueError(f"{where} must be an object with image_id, category_id, bbox and score; got {type(e).__name__}")
        for f_ in ("image_id", "category_id", "bbox", "score"):
            if f_ not in e:
                raise ValueError(f"{where}: missing field '{f_}' (a COCO result needs image_id, category_id, "
                                 f"bbox [x, y, width, height] and score)")
        img = _image_key(e["image_id"], where)
        where = f"{source}: entry {i} (image_id {img})"
        b = e["bbox"]
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            raise ValueError(f"{where}: field 'bbox' must be [x, y, width, height], got {b!r}")
        x, y, w, h = (_number(v, where, "bbox") for v in b)
        if w < 0 or h < 0:
            raise ValueError(f"{where}: field 'bbox' has a negative {'width' if w < 0 else 'height'} "
                             f"([x, y, width, height] = {list(b)}); is it (x1, y1, x2, y2)?")
        cat = e["category_id"]
        if isinstance(cat, bool) or not isinstance(cat, (int, float)) or float(cat) != int(cat):
            raise ValueError(f"{where}: field 'category_id' must be an integer, got {cat!r}")
        s = _number(e["score"], where, "score")
        d = per.setdefault(img, {"boxes": [], "scores": [], "labels": [], "keypoints": []})
        d["boxes"].append((x, y, x + w, y + h))
        d["scores"].append(s)
        d["labels"].append(int(cat))
        kp = e.get("keypoints")
        if kp is not None:
            if not isinstance(kp, (list, tuple)) or len(kp) % 3 or not kp:
                raise ValueError(f"{where}: field 'keypoints' must be a flat list [x1, y1, v1, x2, y2, v2, ...]")
            d["keypoints"].append([_number(v, where, "keypoints") for v in kp])
    images = {}
    for img, d in per.items():
        kps = None
        if d["keypoints"]:
            lens = {len(k) for k in d["keypoints"]}
            if len(d["keypoints"]) != len(d["boxes"]) or len(lens) != 1:
                raise ValueError(f"{source}: image {img}: field 'keypoints' must be given for every result, "
                                 f"with the same number of keypoints")
            kps = torch.tensor(d["keypoints"], dtype=torch.float64).reshape(len(d["boxes"]), -1, 3)
        images[img] = ImageDetections(torch.tensor(d["boxes"], dtype=torch.float64).reshape(-1, 4),
                                      torch.tensor(d["scores"], dtype=torch.float64),
                                      torch.tensor(d["labels"], dtype=torch.long), None, kps)
    return Detections(images, source)


def _from_dict(d: Mapping, where: str) -> ImageDetections:
    t = as_tensor(d["boxes"], f"{where}: field 'boxes'", dtype=torch.float64)
    if t.dim() == 1 and t.numel() == 0:
        t = t.reshape(0, 4)
    if t.dim() != 2 or t.shape[1] != 4:
        raise ValueError(f"{where}: field 'boxes' must be N x 4 (x1, y1, x2, y2), got shape {tuple(t.shape)}")
    if t.numel() and not torch.isfinite(t).all():
        raise ValueError(f"{where}: field 'boxes' must be finite")
    bad = (t[:, 2] < t[:, 0]) | (t[:, 3] < t[:, 1])
    if bad.any():
        r = int(bad.nonzero()[0])
        raise ValueError(f"{where}: field 'boxes' row {r} has a negative width or height: {t[r].tolist()} "
                         f"(boxes must be x1, y1, x2, y2 with x2 >= x1, y2 >= y1)")
    n = t.shape[0]

    def vec(key, default, dtype):
        if key not in d or d[key] is None:
            return default
        v = as_tensor(d[key], f"{where}: field '{key}'", dtype=torch.float64).reshape(-1)
        if v.numel() != n:
            raise ValueError(f"{where}: field '{key}' has {v.numel()} values for {n} boxes")
        if not torch.isfinite(v).all():
            raise ValueError(f"{where}: field '{key}' must be finite")
        return v.to(dtype)

    scores = vec("scores", torch.ones(n, dtype=torch.float64), torch.float64)
    labels = vec("labels", torch.zeros(n, dtype=torch.long), torch.long)
    masks = d.get("masks")
    if masks is not None:
        masks = torch.as_tensor(masks) if not isinstance(masks, np.ndarray) else torch.from_numpy(masks)
        if masks.dim() == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.dim() != 3 or masks.shape[0] != n:
            raise ValueError(f"{where}: field 'masks' must be N x H x W for {n} boxes, got shape {tuple(masks.shape)}")
        masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
    kps = d.get("keypoints")
    if kps is not None:
        kps = as_tensor(kps, f"{where}: field 'keypoints'", dtype=torch.float64)
        if kps.dim() != 3 or kps.shape[0] != n or kps.shape[2] not in (2, 3):
            raise ValueError(f"{where}: field 'keypoints' must be N x K x 3 (x, y, visibility) for {n} boxes, "
                             f"got shape {tuple(kps.shape)}")
        if kps.shape[2] == 2:
            kps = torch.cat([kps, torch.full_like(kps[..., :1], 2.0)], dim=2)
    return ImageDetections(t, scores, labels, masks, kps)


def load_detections(x, name: str = "detections") -> Detections:
    """Read one side of a comparison (see the module's docstring for the accepted forms).

    Raises ``ValueError`` naming the file (or ``name``), the entry and the field for malformed input.
    A side with no detections is valid.
    """
    if isinstance(x, Detections):
        return x
    if isinstance(x, (str, Path)):
        p = Path(x)
        if not p.is_file():
            raise ValueError(f"{name}: file {str(p)!r} does not exist (expected a COCO results JSON file)")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        except UnicodeDecodeError:
            raise ValueError(f"{p}: not a text file (expected COCO results JSON)") from None
        return load_detections(data, name=str(p))
    if isinstance(x, (torch.Tensor, np.ndarray)):
        t = as_tensor(x, name, dtype=torch.float64)
        if t.dim() != 2 or t.shape[1] not in (4, 5, 6):
            raise ValueError(f"{name} must be N x 4 boxes (or N x 5 with scores, N x 6 with scores and labels), "
                             f"got shape {tuple(t.shape)}")
        d = {"boxes": t[:, :4]}
        if t.shape[1] >= 5:
            d["scores"] = t[:, 4]
        if t.shape[1] == 6:
            d["labels"] = t[:, 5]
        return Detections({0: _from_dict(d, f"{name}: image 0")}, name)
    if isinstance(x, Mapping):
        if "boxes" in x:
            return Detections({0: _from_dict(x, f"{name}: image 0")}, name)
        if "annotations" in x and isinstance(x["annotations"], list):
            return _from_coco(x["annotations"], name)
        images = {}
        for k, v in x.items():
            key = _image_key(k, f"{name}: key {k!r}")
            if not isinstance(v, Mapping) or "boxes" not in v:
                raise ValueError(f"{name}: image {k!r} must be a dict with 'boxes' (and 'scores', 'labels'); "
                                 f"got {type(v).__name__}")
            images[key] = _from_dict(v, f"{name}: image {k!r}")
        return Detections(images, name)
    if isinstance(x, (list, tuple)):
        if not x:
            return Detections({}, name)
        if all(isinstance(e, Mapping) and "boxes" in e for e in x):
            return Detections({i: _from_dict(e, f"{name}: image {i}") for i, e in enumerate(x)}, name)
        return _from_coco(x, name)
    raise ValueError(f"{name} must be a COCO result list, a JSON file, a dict with 'boxes', or an N x 4 tensor; "
                     f"got {type(x).__name__}")


def to_coco_results(detections, *, legacy_plus_one: bool = False) -> List[Dict[str, Any]]:
    """Detections (any form :func:`load_detections` reads) as a COCO result list, ready for ``json.dump``.

    ``bbox`` is [x, y, w, h] by :func:`explainer.pixels.xyxy_to_xywh`: w = x2 - x1, or x2 - x1 + 1 under
    ``legacy_plus_one`` (Detectron's export of inclusive boxes). Keypoints, when present, are written flat.
    """
    dets = load_detections(detections, name="detections")
    out = []
    for image_id, d in dets.images.items():
        xywh = xyxy_to_xywh(d.boxes, legacy_plus_one=legacy_plus_one).tolist()
        kps = d.keypoints.reshape(len(d), -1).tolist() if d.keypoints is not None else None
        for k, (b, s, l) in enumerate(zip(xywh, d.scores.tolist(), d.labels.tolist())):
            r = {"image_id": image_id, "category_id": int(l), "bbox": b, "score": float(s)}
            if kps is not None:
                r["keypoints"] = kps[k]
            out.append(r)
    return out


# --------------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------------
def _pad(boxes: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    n = max((len(b) for b in boxes), default=0)
    out = torch.zeros(len(boxes), max(n, 1), 4, dtype=torch.float64)
    valid = torch.zeros(len(boxes), max(n, 1), dtype=torch.bool)
    for i, b in enumerate(boxes):
        out[i, : len(b)] = b
        valid[i, : len(b)] = True
    return out, valid


def _batched_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of B x N x 4 against B x M x 4 (continuous areas): B x N x M, in float32 (enough to rank overlaps)."""
    a, b = a.float(), b.float()
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), (union == 0).to(inter.dtype))


def _match(ref: List[torch.Tensor], cand: List[torch.Tensor], thr: float = MATCH_IOU):
    """One-to-one matching per image, greedy by IoU (:func:`explainer.boxes.greedy_match`), all images at once:
    (image, ref index, cand index, IoU) tensors."""
    if not ref or all(len(r) == 0 for r in ref) or all(len(c) == 0 for c in cand):
        return (torch.zeros(0, dtype=torch.long),) * 3 + (torch.zeros(0, dtype=torch.float64),)
    a, va = _pad(ref)
    b, vb = _pad(cand)
    iou = _batched_iou(a, b)
    iou = torch.where(va[:, :, None] & vb[:, None, :], iou, torch.full_like(iou, -1.0))
    bi, ii, jj, v = greedy_match(iou, thr)
    return bi, ii, jj, v.double()


def _rank_pairs(ref: List[ImageDetections], cand: List[ImageDetections]):
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


def _lmeds_line(r: torch.Tensor, q: torch.Tensor, gen: torch.Generator, samples: int = 256):
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


def _xywh_read(boxes: torch.Tensor) -> torch.Tensor:
    """What (x1, y1, x2, y2) becomes when it is written as COCO's (x, y, w, h) and read back."""
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


# --------------------------------------------------------------------------------------------------
# the diagnosis
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

    def summary(self) -> str:
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
        return {"causes": [c.to_dict() for c in self.causes], "n_reference": self.n_reference,
                "n_candidate": self.n_candidate, "n_matched": self.n_matched, "n_images": self.n_images,
                "alignment": self.alignment, "notes": list(self.notes),
                "unmatched": {k: {"count": v["count"]} for k, v in self.unmatched.items()}}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _mad_sigma(x: torch.Tensor) -> float:
    if x.numel() == 0:
        return 0.0
    return float(1.4826 * (x - x.median()).abs().median())


def _fit_axis(r1, r2, q1, q2, iters: int = 4):
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


def diagnose(reference, candidate, image_size=None, seed: int = 0) -> Diagnosis:
    """Diagnose why ``candidate`` differs from ``reference`` (see the module docstring).

    Image ids: the two sides must share at least one (otherwise a ``ValueError`` lists both sides' ids); an
    image present on one side only has no detections on the other, and ``Diagnosis.notes`` says which.
    ``image_size`` (height, width), optional: with it the evidence says whether a scale matches the image's
    aspect ratio (height and width swapped). ``seed`` fixes the random pairs of the robust alignment.
    """
    ref = load_detections(reference, name="reference")
    cand = load_detections(candidate, name="candidate")
    if image_size is not None:
        image_size = _image_size(image_size)
    ids_r, ids_c = list(ref.images), list(cand.images)
    notes: List[str] = []
    if ids_r and ids_c and not set(ids_r) & set(ids_c):
        raise ValueError(f"the two sides share no image id: {ref.source} has {_few(ids_r)}, {cand.source} has "
                         f"{_few(ids_c)}; compare results of the same images (is one side numbered from 0 "
                         f"and the other from 1, or by file name?)")
    only_r = [i for i in ids_r if i not in cand.images]
    only_c = [i for i in ids_c if i not in ref.images]
    if only_r:
        notes.append(f"{len(only_r)} image(s) have reference detections only: {_few(only_r)}")
    if only_c:
        notes.append(f"{len(only_c)} image(s) have candidate detections only: {_few(only_c)}")
    image_ids = ids_r + only_c
    R = [ref.images.get(i) or _empty_image() for i in image_ids]
    C = [cand.images.get(i) or _empty_image() for i in image_ids]
    n_r, n_c = sum(len(r) for r in R), sum(len(c) for c in C)

    def finish(causes, pairs, residuals, unmatched, n_m, alignment):
        causes.sort(key=lambda c: -c.strength)
        return Diagnosis(causes, pairs, residuals, unmatched, n_r, n_c, n_m, len(image_ids), image_ids, alignment,
                         notes)

    empty_pairs = _pairs_dict(R, C, *(torch.zeros(0, dtype=torch.long),) * 3, torch.zeros(0, dtype=torch.float64))
    if n_r == 0 or n_c == 0:
        which = "both sides" if n_r == n_c else ("the reference" if n_r == 0 else "the candidate")
        ev = {"reference": n_r, "candidate": n_c}
        if n_r == n_c:
            expl = "Both sides have no detections: nothing to compare."
        else:
            other = n_c if n_r == 0 else n_r
            expl = (f"{which.capitalize()} has no detections while the other side has {other}.")
        unmatched = _unmatched(R, C, *(torch.zeros(0, dtype=torch.long),) * 3)
        return finish([_cause("no_detections", 1.0, ev, expl)], empty_pairs, _residuals(empty_pairs), unmatched, 0,
                      "no")

    gen = torch.Generator().manual_seed(seed)
    rboxes, cboxes = [r.boxes for r in R], [c.boxes for c in C]
    best = ("identity", _match(rboxes, cboxes))
    need = min(n_r, n_c)
    if len(best[1][0]) < 0.9 * need:
        rt, ct = _rank_pairs(R, C)
        tries = [("xyxy-as-xywh", [_xywh_read(b) for b in rboxes])]
        if rt.shape[0] >= 2:
            lines = [_lmeds_line(rt[:, k], ct[:, k], gen) for k in range(4)]
            a = torch.tensor([l[0] for l in lines], dtype=torch.float64)
            b = torch.tensor([l[1] for l in lines], dtype=torch.float64)
            tries.insert(0, ("affine", [bx * a + b for bx in rboxes]))
        for name, mapped in tries:
            m = _match(mapped, cboxes)
            if len(m[0]) > len(best[1][0]) + max(2, 0.05 * need):
                best = (name, m)
    alignment, (mb, mi, mj, miou) = best
    pairs = _pairs_dict(R, C, mb, mi, mj, miou)
    residuals = _residuals(pairs)
    n_m = len(mb)
    unmatched = _unmatched(R, C, mb, mi, mj)

    if n_m < UNRELATED_BELOW * need:
        ev = {"matched": n_m, "reference": n_r, "candidate": n_c, "matched_fraction": n_m / max(need, 1)}
        expl = (f"Only {n_m} of {need} possible pairs match at IoU >= {MATCH_IOU}, even after trying a scale, "
                f"translation and xywh alignment: the two sides are not the same detections.")
        return finish([_cause("unrelated", 1.0 - n_m / max(need, 1), ev, expl)], pairs, residuals, unmatched, n_m,
                      alignment)

    causes: List[Cause] = []
    geo = _geometry_causes(pairs, alignment, image_size)
    causes += geo["causes"]
    causes += _label_causes(pairs)
    _flood_evidence(causes, unmatched, n_c)
    causes += _set_causes(R, C, pairs, unmatched)
    causes += _keypoint_causes(R, C, pairs, geo)
    causes += _mask_causes(R, C, pairs, geo)
    causes += _noise_causes(pairs, geo, causes)

    if not causes:
        causes = [_cause("identical", 1.0, {"matched": n_m, "max_box_diff_px": geo["max_abs"]},
                         f"All {n_m} detections match with the same labels, boxes within {BOX_ATOL:g} px and "
                         f"scores within {SCORE_ATOL:g}.")]
    return finish(causes, pairs, residuals, unmatched, n_m, alignment)


def _few(ids: Sequence[Any], k: int = 5) -> str:
    s = ", ".join(str(i) for i in list(ids)[:k])
    return s + (f", ... ({len(ids)} in all)" if len(ids) > k else "")


def _flat_index(S: List[ImageDetections], image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of the images' detections stacked in image order: where detection ``index`` of ``image`` sits."""
    offsets = torch.tensor([0] + [len(s) for s in S][:-1], dtype=torch.long).cumsum(0)
    return offsets[image] + index


def _pairs_dict(R, C, mb, mi, mj, miou) -> Dict[str, torch.Tensor]:
    out = {"image": mb, "ref_index": mi, "cand_index": mj, "iou": miou}
    for side, S, idx in (("ref", R, mi), ("cand", C, mj)):
        flat = _flat_index(S, mb, idx)
        for attr in ("boxes", "labels", "scores"):
            rows = getattr(_empty_image(), attr)
            if len(mb):
                rows = torch.cat([getattr(s, attr) for s in S])[flat]
            out[f"{side}_{attr}"] = rows
    return out


def _residuals(p) -> Dict[str, torch.Tensor]:
    d = p["cand_boxes"] - p["ref_boxes"]
    rb = p["ref_boxes"]
    size = ((rb[:, 2] - rb[:, 0]).clamp(min=0) * (rb[:, 3] - rb[:, 1]).clamp(min=0)).sqrt()
    level = torch.floor(4 + torch.log2(size.clamp(min=1e-6) / 224.0)).clamp(2, 5)
    return {"dx1": d[:, 0], "dy1": d[:, 1], "dx2": d[:, 2], "dy2": d[:, 3], "size": size, "level": level,
            "image": p["image"]}


def _unmatched(R, C, mb, mi, mj) -> Dict[str, Dict[str, Any]]:
    """Per side: the detections without a partner, with their scores, labels, image and score rank in it."""
    out = {}
    for side, S, idx in (("reference", R, mi), ("candidate", C, mj)):
        parts = {"scores": [], "labels": [], "rank": [], "image": []}
        for k, s in enumerate(S):
            free = torch.ones(len(s), dtype=torch.bool)
            free[idx[mb == k]] = False
            rank = torch.empty(len(s), dtype=torch.long)
            rank[torch.argsort(s.scores, descending=True, stable=True)] = torch.arange(len(s))
            parts["scores"].append(s.scores[free])
            parts["labels"].append(s.labels[free])
            parts["rank"].append(rank[free])
            parts["image"].append(torch.full((int(free.sum()),), k, dtype=torch.long))
        u = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64 if k == "scores" else torch.long)
             for k, v in parts.items()}
        u["count"] = len(u["scores"])
        out[side] = u
    return out


def _geometry_causes(p, alignment: str, image_size) -> Dict[str, Any]:
    r, c = p["ref_boxes"], p["cand_boxes"]
    n = r.shape[0]
    d = c - r
    max_abs = float(d.abs().max()) if n else 0.0
    out: Dict[str, Any] = {"causes": [], "max_abs": max_abs, "model": None, "sigma": 0.0, "explained": None}
    if n == 0:
        return out
    # xyxy written as xywh: x1, y1 agree and the candidate's x2 is x1 + the reference's x2
    xy = _xywh_read(r)
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
        out["causes"].append(_cause("xywh_as_xyxy", xywh_frac, {
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
        out["causes"].append(_cause("anisotropic_scale", strength(aniso_px), ev,
                                    f"x is scaled by {ax:.4g} and y by {ay:.4g} (about origin 0, 0).{hint}"))
    elif abs(s_mean - 1.0) * mag > thr_px:
        out["causes"].append(_cause("scale", strength(abs(s_mean - 1.0) * mag), {"factor": s_mean, "sx": ax, "sy": ay,
                                                                                   "pairs_explained": frac},
                                    f"Every coordinate is multiplied by {s_mean:.4g} (1/{1 / s_mean:.4g}): "
                                    f"a rescale between the network's input size and the image size."))
    sa = s_mean if abs(s_mean - 1.0) * mag > thr_px else 1.0
    ttol = 0.1 + 2.0 * sigma
    hx, hy = _near(tx, (0.5, -0.5, 0.5 * sa, -0.5 * sa), ttol), _near(ty, (0.5, -0.5, 0.5 * sa, -0.5 * sa), ttol)
    if sigma < 0.1 and hx is not None and hy is not None and hx * hy > 0:
        out["causes"].append(_cause("half_pixel_shift", strength(0.5), {"dx": tx, "dy": ty, "pairs_explained": frac},
                                    f"All coordinates are shifted by ({tx:+.3g}, {ty:+.3g}) px: pixel indices on one "
                                    f"side, continuous coordinates on the other."))
    elif max(abs(tx), abs(ty)) > ttol:
        eff = math.hypot(tx, ty)
        out["causes"].append(_cause("translation", strength(eff), {"dx": tx, "dy": ty, "pairs_explained": frac},
                                    f"Every box is moved by ({tx:+.4g}, {ty:+.4g}) px: an offset (padding or crop) "
                                    f"that one side does not undo."))
    ptol = 0.15 + 2.0 * sigma
    qx, qy = _near(px, (1.0, -1.0, sa, -sa), ptol), _near(py, (1.0, -1.0, sa, -sa), ptol)
    if sigma < 0.2 and qx is not None and qy is not None and qx * qy > 0:
        out["causes"].append(_cause("plus_one", strength(1.0), {"dx2_minus_dx1": px, "dy2_minus_dy1": py,
                                                                "pairs_explained": frac},
                                    f"x2 and y2 differ by ({px:+.3g}, {py:+.3g}) px more than x1 and y1: "
                                    f"inclusive corners (width = x2 - x1 + 1) on one side."))
    elif max(abs(px), abs(py)) > ptol:
        out["size_offset"] = (px, py)
    return out


def _label_causes(p) -> List[Cause]:
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

    def via(src, dst, shift):
        ok = (src - shift >= 0) & (src - shift < 80)
        m = torch.zeros_like(src, dtype=torch.bool)
        m[ok] = ids[src[ok] - shift] == dst[ok]
        return float(m.double().mean())

    coco = max([(via(rl, cl, 0), "contiguous labels 0..79 written as COCO ids"),
                (via(rl, cl, 1), "labels 1..80 written as COCO ids"),
                (via(cl, rl, 0), "COCO ids on the reference side, contiguous 0..79 on the candidate"),
                (via(cl, rl, 1), "COCO ids on the reference side, labels 1..80 on the candidate")])
    if coco[0] >= 0.9 and coco[0] > frac_off + 0.02:
        return [_cause("coco_category_ids", coco[0], {"pairs_consistent": coco[0], "direction": coco[1]},
                       f"Labels follow COCO's category id gaps ({coco[1]}); a constant offset explains only "
                       f"{frac_off:.0%} of the pairs.")]
    if frac_off >= 0.9:
        ev = {"offset": k, "pairs_consistent": frac_off}
        expl = f"Candidate label = reference label {k:+d} for {frac_off:.0%} of the matched pairs."
        if coco[0] >= 0.9:
            ev["also_consistent_with"] = "coco_category_ids"
            expl += (" Every label involved lies below COCO's first id gap (12), where category ids are the "
                     "contiguous labels + 1: this may equally be coco_category_ids.")
        return [_cause("label_offset", frac_off, ev, expl)]
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
        return [_cause("label_permutation", cons * min(1.0, changed / 0.5 + 0.5),
                       {"pairs_consistent": cons, "labels_changed": changed, "mapping_reference_to_candidate": shown},
                       f"Each reference label maps to one candidate label ({len(moved)} labels moved, e.g. "
                       f"{', '.join(f'{a}->{b}' for a, b in list(moved.items())[:4])}).")]
    return []


def _flood_evidence(causes: List[Cause], unmatched, n_c: int) -> None:
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


def _set_causes(R, C, p, unmatched) -> List[Cause]:
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
            out.append(_cause("threshold_or_topk", below, ev,
                              f"{u['count']} {side} detections have no partner, "
                              f"{below:.0%} of them scored at or below {cut:.3g} (the lowest matched score): "
                              f"the {other} keeps only detections above a score between "
                              f"{float(u['scores'].max()):.3g} and {cut:.3g}."))
        elif capped and beyond >= 0.9:
            ev = {"missing_from": other, "count": u["count"], "per_image_cap": k, "fraction_beyond_cap": beyond}
            out.append(_cause("threshold_or_topk", beyond, ev,
                              f"The {other} holds at most {k} detections per image and the {u['count']} unmatched "
                              f"{side} detections are ranked beyond that: a top-k cap."))
    if len(out) == 2:  # both sides lose low scores: one cause, the stronger evidence
        out = [max(out, key=lambda c: c.strength)]
    return out


def _keypoint_causes(R, C, p, geo) -> List[Cause]:
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
    a = rkp[_flat_index(R, p["image"], p["ref_index"])]
    b = ckp[_flat_index(C, p["image"], p["cand_index"])]
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
        out.append(_cause("keypoint_half_pixel", fh * fd, {"median_dx": float(med[0]), "median_dy": float(med[1]),
                                                           "keypoints_differing": fd},
                          f"Keypoints are shifted by ({float(med[0]):+.3g}, {float(med[1]):+.3g}) px: pixel "
                          f"indices on one side, continuous coordinates on the other."))
    if ff >= 0.8 or (ff >= 0.3 and fh < 0.3):
        out.append(_cause("flip_off_by_one", ff * max(fd, 0.5), {"median_dx": float(med[0]),
                                                                  "median_dy": float(med[1]),
                                                                  "keypoints_differing": fd, "fraction_dx_1px": ff},
                          f"{ff:.0%} of the differing keypoints move by exactly 1 px in x and not in y: a flip "
                          f"computed as W - 1 - x on one side and W - x on the other."))
    return out


def _mask_causes(R, C, p, geo) -> List[Cause]:
    if not len(p["image"]):
        return []
    rm = [r.masks for r in R if len(r)]
    cm = [c.masks for c in C if len(c)]
    if any(m is None for m in rm + cm):
        return []
    shapes = {tuple(m.shape[1:]) for m in rm + cm}
    if len(shapes) != 1:
        return []
    shape = next(iter(shapes))
    allr = torch.cat([r.masks if r.masks is not None else torch.zeros(0, *shape, dtype=torch.bool) for r in R])
    allc = torch.cat([c.masks if c.masks is not None else torch.zeros(0, *shape, dtype=torch.bool) for c in C])
    ir = _flat_index(R, p["image"], p["ref_index"])
    ic = _flat_index(C, p["image"], p["cand_index"])
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
        union = float((a | b).sum())
        miou[k] = float((a & b).sum()) / union if union else 1.0
        diff += float(x.sum())
        ring_diff += float((x & ring).sum())
    if diff == 0:
        return []
    frac_ring = ring_diff / diff
    pairs_diff = float((miou < 1.0).double().mean())
    boxes_agree = geo.get("max_abs", 0.0) <= 0.5 or (geo.get("explained") is not None and bool(geo["causes"]))
    if frac_ring >= 0.9 and boxes_agree:
        return [_cause("mask_paste", frac_ring * max(pairs_diff, 0.5),
                       {"mean_mask_iou": float(miou.mean()), "differing_pixels_on_contour": frac_ring,
                        "pairs_with_different_masks": pairs_diff},
                       f"Masks differ in {pairs_diff:.0%} of the pairs (mean mask IoU {float(miou.mean()):.3f}) and "
                       f"{frac_ring:.0%} of the differing pixels lie within 2 px of the contour: a different paste.")]
    return []


def _noise_causes(p, geo, found: List[Cause]) -> List[Cause]:
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
        return [_cause("inference_difference", 0.9 * s if not found else 0.5 * s, ev,
                       f"Matched detections differ without a global pattern: {what}.")]
    frac = float((left.amax(1) > BOX_ATOL).double().mean()) if worst > BOX_ATOL else float((ds > SCORE_ATOL).double().mean())
    return [_cause("numerical_noise", 0.5 * max(frac, 0.2), ev,
                   f"Small unstructured differences: boxes within {worst:.3g} px (spread {sigma:.3g} px) "
                   f"and scores within {max_ds:.3g}.")]


# --------------------------------------------------------------------------------------------------
# injecting a cause (for the course's dashboards and for readers' experiments)
# --------------------------------------------------------------------------------------------------
def inject(detections, cause: str, **params) -> Detections:
    """Apply one cause of :data:`CAUSES` to detections and return new :class:`Detections`.

    Parameters by cause: ``plus_one`` (amount=1.0), ``half_pixel_shift`` (shift=0.5), ``scale`` (factor=0.8),
    ``anisotropic_scale`` (sx=0.75, sy=4/3), ``translation`` (dx=16, dy=8), ``xywh_as_xyxy``,
    ``label_offset`` (offset=1), ``label_permutation`` (mapping={label: label} or a random one from seed=0),
    ``coco_category_ids`` (labels 0..79),
    ``keypoint_half_pixel`` (shift=0.5), ``flip_off_by_one`` (shift=-1.0), ``mask_paste`` (grow=1 px),
    ``threshold_or_topk`` (score_threshold or topk), ``numerical_noise`` (sigma=0.05 px, score_sigma=1e-3, seed=0).
    """
    dets = load_detections(detections, name="detections")
    if cause not in CAUSES or cause in ("identical", "unrelated", "no_detections", "inference_difference"):
        injectable = [c for c in CAUSES if c not in ("identical", "unrelated", "no_detections", "inference_difference")]
        raise ValueError(f"cause must be one of {', '.join(injectable)}; got {cause!r}")
    known = {"plus_one": {"amount"}, "half_pixel_shift": {"shift"}, "scale": {"factor"},
             "anisotropic_scale": {"sx", "sy"}, "translation": {"dx", "dy"}, "xywh_as_xyxy": set(),
             "label_offset": {"offset"}, "label_permutation": {"seed", "mapping"}, "coco_category_ids": set(),
             "keypoint_half_pixel": {"shift"}, "flip_off_by_one": {"shift"}, "mask_paste": {"grow"},
             "threshold_or_topk": {"score_threshold", "topk"}, "numerical_noise": {"sigma", "score_sigma", "seed"}}
    extra = set(params) - known[cause]
    if extra:
        raise ValueError(f"{cause} takes {sorted(known[cause]) or 'no parameters'}; unknown: {sorted(extra)}")
    num = {k: finite_number(v, k) for k, v in params.items() if k not in ("seed", "topk", "mapping")}
    gen = torch.Generator().manual_seed(int(params.get("seed", 0)))
    all_labels = sorted({int(l) for d in dets.images.values() for l in d.labels.tolist()})
    perm = None
    if cause == "label_permutation" and "mapping" in params:
        m = params["mapping"]
        if not isinstance(m, Mapping) or not all(isinstance(k, int) and isinstance(v, int) for k, v in m.items()):
            raise ValueError(f"mapping must be a dict of integer labels {{label: new label}}, got {m!r}")
        perm = {a: int(m.get(a, a)) for a in all_labels}
    elif cause == "label_permutation" and all_labels:
        order = torch.randperm(len(all_labels), generator=gen)
        perm = {a: all_labels[int(order[i])] for i, a in enumerate(all_labels)}
    out = {}
    for k, d in dets.images.items():
        b, s, l, m, kp = d.boxes.clone(), d.scores.clone(), d.labels.clone(), d.masks, d.keypoints
        if cause == "plus_one":
            b[:, 2:] += num.get("amount", 1.0)
        elif cause == "half_pixel_shift":
            b += num.get("shift", 0.5)
        elif cause == "scale":
            b *= num.get("factor", 0.8)
        elif cause == "anisotropic_scale":
            b[:, 0::2] *= num.get("sx", 0.75)
            b[:, 1::2] *= num.get("sy", 4 / 3)
        elif cause == "translation":
            b[:, 0::2] += num.get("dx", 16.0)
            b[:, 1::2] += num.get("dy", 8.0)
        elif cause == "xywh_as_xyxy":
            b = _xywh_read(b)
        elif cause == "label_offset":
            l = l + int(num.get("offset", 1))
        elif cause == "label_permutation":
            l = torch.tensor([perm[int(v)] for v in l.tolist()], dtype=torch.long)
        elif cause == "coco_category_ids":
            if l.numel() and (l.min() < 0 or l.max() > 79):
                raise ValueError(f"coco_category_ids needs contiguous labels 0..79; image {k} has "
                                 f"{int(l.min())}..{int(l.max())}")
            l = torch.tensor(COCO_CATEGORY_IDS, dtype=torch.long)[l]
        elif cause in ("keypoint_half_pixel", "flip_off_by_one"):
            if kp is None:
                raise ValueError(f"{cause} needs keypoints; image {k} has none")
            kp = kp.clone()
            if cause == "keypoint_half_pixel":
                kp[..., :2] += num.get("shift", 0.5)
            else:
                kp[..., 0] += num.get("shift", -1.0)
        elif cause == "mask_paste":
            if m is None:
                raise ValueError(f"mask_paste needs masks; image {k} has none")
            g = int(num.get("grow", 1))
            mf = m.float()[:, None]
            m = (F.max_pool2d(mf, 2 * g + 1, 1, g) if g > 0 else -F.max_pool2d(-mf, -2 * g + 1, 1, -g))[:, 0] > 0
        elif cause == "threshold_or_topk":
            keep = torch.ones(len(s), dtype=torch.bool)
            if "score_threshold" in num:
                keep &= s > num["score_threshold"]
            if "topk" in params:
                kk = int(params["topk"])
                top = torch.argsort(s, descending=True, stable=True)[:kk]
                t = torch.zeros(len(s), dtype=torch.bool)
                t[top] = True
                keep &= t
            out[k] = d.take(keep)
            continue
        elif cause == "numerical_noise":
            b = b + torch.randn(b.shape, generator=gen, dtype=torch.float64) * num.get("sigma", 0.05)
            b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2])
            s = s + torch.randn(s.shape, generator=gen, dtype=torch.float64) * num.get("score_sigma", 1e-3)
        out[k] = ImageDetections(b, s, l, m, kp)
    return Detections(out, dets.source)


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def _cmd_diagnose(args) -> int:
    try:
        size = tuple(args.image_size) if args.image_size else None
        diag = diagnose(args.reference, args.candidate, image_size=size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(diag.to_dict(), indent=2))
    else:
        print(diag.summary())
    return 0 if diag.names == ["identical"] else 1


def register_cli(subparsers) -> None:
    """Add ``diagnose`` to ``python -m explainer``."""
    p = subparsers.add_parser(
        "diagnose", help="explain why two sets of detections (COCO result JSON files) differ",
        description="Match the candidate's detections to the reference's and name the convention mistakes "
                    "that explain the differences. Exit codes: 0 identical, 1 differences explained, 2 bad input.")
    p.add_argument("reference", help="COCO results JSON of the original model")
    p.add_argument("candidate", help="COCO results JSON of the converted model")
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    p.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"),
                   help="image height and width (lets the evidence recognise swapped height and width)")
    p.set_defaults(func=_cmd_diagnose)
