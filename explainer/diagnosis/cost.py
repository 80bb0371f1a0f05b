"""What each cause of a diagnosis costs in AP: the candidate measured with COCO's evaluation, then measured again
with each found cause undone from its fitted parameters, and with all of them undone.

:func:`ap_cost` takes the two sides, the :class:`~explainer.diagnosis.report.Diagnosis` of them and ground truth
(COCO instances or keypoints annotations, read by :func:`ground_truth`), and returns an :class:`APCost`. Without
ground truth, :func:`agreement_truth` makes pseudo ground truth of the reference's detections scored at or above a
threshold; the numbers are then *agreement AP* (how well the candidate reproduces the reference), and every
output says so.

For each task present on both sides and in the ground truth (``bbox``; ``segm`` when both sides have masks;
``keypoints`` when both have 17 COCO keypoints) the metrics are COCOeval's (pycocotools): ``AP`` (IoU 0.50:0.95),
``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` (small, medium, large objects; None where the ground truth has no object
of that size), in [0, 1]. Measured for the reference, the candidate, the candidate with each cause undone alone
(``fixed``; ``dAP`` = its AP minus the candidate's) and with every undoable cause undone (``all_fixed``). A cause
that no parameter undoes (a threshold, noise, a missing field) is listed in ``cannot_undo`` with the reason.

Each variant is evaluated once; the per-category and per-size breakdowns, the precision-recall curves and the images
that lose the most are read from that same evaluation. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from explainer._validate import read_json
from explainer.diagnosis.causes import Cause
from explainer.diagnosis.detections import Detections, ImageDetections, to_coco_results
from explainer.diagnosis.injection import inject
from explainer.labels import COCO_CATEGORY_IDS

__all__ = ["METRICS", "TASKS", "APCost", "TaskCost", "ap_cost", "ground_truth", "agreement_truth", "evaluate",
           "undo", "CANNOT_UNDO", "GALLERY", "AGREEMENT_SCORE"]

#: The metrics reported per task, COCOeval's names as Detectron2's COCO evaluator prints them.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: COCOeval's tasks, in the order reported.
TASKS = ("bbox", "segm", "keypoints")
#: How many of the images that lose the most are kept for a gallery.
GALLERY = 8
#: The default score from which the reference's detections serve as pseudo ground truth.
AGREEMENT_SCORE = 0.5
#: The index space of a label offset read through COCO's category ids (the diagnosis's own words).
_COCO_INDEX_SPACE = "contiguous index through COCO category ids"

#: Why a cause cannot be undone from its parameters.
CANNOT_UNDO: Dict[str, str] = {
    "identical": "nothing differs",
    "no_detections": "one side has no detections: there is nothing to correct",
    "threshold_or_topk": "the detections below the threshold or beyond the cap were never written; nothing in the "
                         "candidate can bring them back",
    "numerical_noise": "unstructured differences: no parameter describes them",
    "inference_difference": "the models compute differently, without a global pattern to invert",
    "unrelated": "the two sides are not the same detections",
    "non_finite": "the NaN or infinite values carry no number to restore (those detections are left out of the "
                  "evaluation)",
    "missing_field": "the field is absent or empty on the candidate: there is nothing to correct",
}


# --------------------------------------------------------------------------------------------------
# ground truth
# --------------------------------------------------------------------------------------------------
def _quiet(fn: Callable[..., Any], *args: Any) -> Any:
    """A pycocotools call with what it prints kept out of the caller's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def _coco_of(data: Dict[str, Any]) -> COCO:
    c = COCO()
    c.dataset = data
    _quiet(c.createIndex)
    return c


def _gt_images(images: List[Any], name: str) -> List[Dict[str, Any]]:
    out = []
    for i, im in enumerate(images):
        if not isinstance(im, Mapping) or "id" not in im or isinstance(im["id"], (bool, float, list, dict)):
            raise ValueError(f"{name}: images[{i}] must be an object with an integer or text 'id'")
        out.append(dict(im))
    return out


def ground_truth(gt: Union[str, os.PathLike, Mapping[str, Any], COCO], name: str = "gt") -> COCO:
    """COCO instances or keypoints annotations (a path, the parsed dict, or a pycocotools ``COCO``) checked and indexed.

    Raises ``ValueError`` starting with ``name`` (or the path) and saying what is wrong when the input is not COCO
    annotations: an object with lists ``images`` (each with an ``id``), ``annotations`` (each with ``image_id``,
    ``category_id`` and ``bbox`` [x, y, width, height]) and ``categories`` (each with an ``id``). An annotation
    without ``area`` gets its box's area, one without ``iscrowd`` gets 0.
    """
    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, (str, os.PathLike)):
        name = os.fspath(gt)
        gt = read_json(gt, "COCO annotations (an object with images, annotations and categories)")
    if not isinstance(gt, Mapping):
        what = "a list (is this a results file? ground truth is an object with images, annotations, categories)" \
            if isinstance(gt, list) else type(gt).__name__
        raise ValueError(f"{name}: not COCO annotations: got {what}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(gt.get(k), list)]
    if missing:
        raise ValueError(f"{name}: not COCO annotations: no list {', '.join(repr(m) for m in missing)} (ground truth "
                         f"is an object with lists 'images', 'annotations' and 'categories')")
    images = _gt_images(gt["images"], name)
    ids = {im["id"] for im in images}
    anns = []
    for i, a in enumerate(gt["annotations"]):
        where = f"{name}: annotations[{i}]"
        if not isinstance(a, Mapping) or any(k not in a for k in ("image_id", "category_id", "bbox")):
            raise ValueError(f"{where} must be an object with image_id, category_id and bbox [x, y, width, height]")
        b = a["bbox"]
        if (not isinstance(b, list) or len(b) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                               and math.isfinite(v) for v in b) or b[2] < 0 or b[3] < 0):
            raise ValueError(f"{where}: 'bbox' must be four finite numbers [x, y, width, height], width and height "
                             f">= 0; got {str(b)[:60]}")
        if a["image_id"] not in ids:
            raise ValueError(f"{where}: image_id {str(a['image_id'])[:40]} is not among the ground truth's images")
        a = dict(a)
        a.setdefault("area", float(b[2] * b[3]))
        a.setdefault("iscrowd", 0)
        a["id"] = i + 1  # pycocotools matches by id: unique ids whatever the file says
        anns.append(a)
    cats = []
    for i, c in enumerate(gt["categories"]):
        if not isinstance(c, Mapping) or "id" not in c:
            raise ValueError(f"{name}: categories[{i}] must be an object with an 'id'")
        cats.append(dict(c))
    return _coco_of({"images": images, "annotations": anns, "categories": cats})


def agreement_truth(reference: Detections, candidate: Optional[Detections] = None,
                    agreement_score: float = AGREEMENT_SCORE) -> COCO:
    """Pseudo ground truth: the reference's detections scored at or above ``agreement_score``, as COCO annotations
    (its masks and keypoints included), over every image of both sides. What is measured against it is *agreement
    AP*."""
    score = agreement_score
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
        raise ValueError(f"agreement_score must be a finite number (the reference's detections at or above it serve "
                         f"as ground truth); got {score!r}")
    ids = list(reference.images)
    if candidate is not None:
        ids += [k for k in candidate.images if k not in reference.images]
    keep = {k: d.take(d.scores >= score) for k, d in reference.images.items()}
    res = [r for r in to_coco_results(Detections(keep, "reference"))
           if all(math.isfinite(v) for v in r["bbox"])]
    size: Dict[Any, Tuple[int, int]] = {}
    for r in res:
        s = r.get("segmentation")
        if isinstance(s, dict) and "size" in s:
            size[r["image_id"]] = (int(s["size"][0]), int(s["size"][1]))
    far: Dict[Any, Tuple[int, int]] = {}
    for r in res:
        x, y, w, h = r["bbox"]
        hi, wi = far.get(r["image_id"], (1, 1))
        far[r["image_id"]] = (max(hi, int(math.ceil(y + h))), max(wi, int(math.ceil(x + w))))
    images = [{"id": k, "height": size.get(k, far.get(k, (1, 1)))[0], "width": size.get(k, far.get(k, (1, 1)))[1]}
              for k in ids]
    anns = []
    for i, r in enumerate(res):
        a = {"id": i + 1, "image_id": r["image_id"], "category_id": r["category_id"], "bbox": r["bbox"], "iscrowd": 0,
             "area": float(r["bbox"][2] * r["bbox"][3])}
        if "segmentation" in r:
            a["segmentation"] = r["segmentation"]
        if "keypoints" in r:
            kp = r["keypoints"]
            a["keypoints"] = kp
            a["num_keypoints"] = int(sum(1 for v in kp[2::3] if v > 0))
        anns.append(a)
    cats = sorted({a["category_id"] for a in anns})
    return _coco_of({"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in cats]})


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """One COCOeval run: ``metrics`` (:data:`METRICS`), ``per_category`` {category id: AP or None}, ``pr`` the
    precision at 101 recall points at IoU 0.5, averaged over the categories (Tensor[101]), ``hits`` per image the
    ground-truth objects found at IoU 0.5 ({image id: count})."""

    metrics: Dict[str, Optional[float]]
    per_category: Dict[Any, Optional[float]]
    pr: np.ndarray
    hits: Dict[Any, int]


def _mean(p: np.ndarray) -> Optional[float]:
    v = p[p > -1]
    return float(v.mean()) if v.size else None


def _results(dets: Detections, task: str) -> List[Dict[str, Any]]:
    out = []
    for r in to_coco_results(dets):
        if not all(math.isfinite(v) for v in r["bbox"]) or not math.isfinite(r["score"]):
            continue
        if task == "keypoints" and "keypoints" not in r:
            continue
        out.append(r)
    return out


def _load_results(gt: COCO, results: List[Dict[str, Any]]) -> COCO:
    if results:
        return _quiet(gt.loadRes, results)
    return _coco_of({"images": list(gt.dataset["images"]), "annotations": [],
                     "categories": list(gt.dataset["categories"])})


def evaluate(gt: COCO, results: Union[Detections, List[Dict[str, Any]]], task: str = "bbox") -> Evaluation:
    """COCOeval (pycocotools) of ``results`` (detections, or a COCO result list) against ``gt`` for ``task``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    res = _results(results, task) if isinstance(results, Detections) else results
    E = COCOeval(gt, _load_results(gt, res), task)
    _quiet(E.evaluate)
    _quiet(E.accumulate)
    p = E.eval["precision"]  # [T iou, R recall, K categories, A areas, M max detections]
    areas = list(E.params.areaRngLbl)   # all, small, medium, large (keypoints: no small)
    m: Dict[str, Optional[float]] = {"AP": _mean(p[:, :, :, 0, -1]), "AP50": _mean(p[0, :, :, 0, -1]),
                                     "AP75": _mean(p[5, :, :, 0, -1])}
    for key, label in (("APs", "small"), ("APm", "medium"), ("APl", "large")):
        m[key] = _mean(p[:, :, :, areas.index(label), -1]) if label in areas else None
    per_cat = {c: _mean(p[:, :, k, 0, -1]) for k, c in enumerate(E.params.catIds)}
    pr = p[0, :, :, 0, -1]
    pr = np.array([_mean(pr[r]) or 0.0 for r in range(pr.shape[0])])
    hits: Dict[Any, int] = {}
    n_areas = len(E.params.areaRng)
    n_imgs = len(E.params.imgIds)
    for k in range(len(E.params.catIds)):
        for i in range(n_imgs):
            e = E.evalImgs[k * n_areas * n_imgs + i]   # area "all"
            if e is None:
                continue
            found = int(((np.asarray(e["gtMatches"])[0] > 0) & ~np.asarray(e["gtIgnore"], dtype=bool)).sum()) \
                if len(e["gtIds"]) else 0
            hits[e["image_id"]] = hits.get(e["image_id"], 0) + found
    return Evaluation(m, per_cat, pr, hits)


# --------------------------------------------------------------------------------------------------
# undoing a cause
# --------------------------------------------------------------------------------------------------
def _map_boxes(dets: Detections, fn: Callable[[torch.Tensor], torch.Tensor]) -> Detections:
    out = {}
    for k, d in dets.images.items():
        b = fn(d.boxes.clone())
        b[:, 2] = torch.maximum(b[:, 2], b[:, 0])
        b[:, 3] = torch.maximum(b[:, 3], b[:, 1])
        out[k] = ImageDetections(b, d.scores, d.labels, d.masks, d.keypoints, d.segmentations, d.has_keypoints)
    return Detections(out, dets.source)


def _map_labels(dets: Detections, fn: Callable[[torch.Tensor], torch.Tensor]) -> Detections:
    """Labels mapped by ``fn``; a label mapped to -1 drops its detection."""
    out = {}
    for k, d in dets.images.items():
        lab = fn(d.labels.clone())
        d = d.take(lab >= 0)
        out[k] = ImageDetections(d.boxes, d.scores, lab[lab >= 0], d.masks, d.keypoints, d.segmentations,
                                 d.has_keypoints)
    return Detections(out, dets.source)


def _lookup(table: Dict[int, int], lab: torch.Tensor) -> torch.Tensor:
    return torch.tensor([table.get(int(v), -1) for v in lab.tolist()], dtype=torch.long)


def _coco_shift(offset: int) -> Callable[[torch.Tensor], torch.Tensor]:
    ids = list(COCO_CATEGORY_IDS)
    back = {ids[i]: ids[i - offset] for i in range(len(ids)) if 0 <= i - offset < len(ids)}
    return lambda lab: _lookup(back, lab)


def _coco_ids_back(direction: str) -> Callable[[torch.Tensor], torch.Tensor]:
    ids = list(COCO_CATEGORY_IDS)
    shift = 1 if "labels 1..80" in direction else 0
    if direction.startswith("COCO ids on the reference"):   # the candidate wrote contiguous labels
        table = {i + shift: c for i, c in enumerate(ids)}
    else:                                                    # the candidate wrote COCO ids
        table = {c: i + shift for i, c in enumerate(ids)}
    return lambda lab: _lookup(table, lab)


def _pairs_mapping(diag: Any) -> Dict[int, int]:
    """Each candidate label's most frequent reference label over the matched pairs (the fitted relabelling)."""
    rl, cl = diag.pairs["ref_labels"].tolist(), diag.pairs["cand_labels"].tolist()
    counts: Dict[int, Dict[int, int]] = {}
    for r, c in zip(rl, cl):
        counts.setdefault(int(c), {}).setdefault(int(r), 0)
        counts[int(c)][int(r)] += 1
    return {c: max(v.items(), key=lambda kv: (kv[1], -kv[0]))[0] for c, v in counts.items()}


def _flip_images(diag: Any, sign: float) -> Dict[Any, float]:
    """The images whose matched pairs moved by ``sign`` px in x (the flipped ones), with that shift."""
    d = diag.pairs["cand_boxes"] - diag.pairs["ref_boxes"]
    img = diag.pairs["image"]
    out = {}
    for i in torch.unique(img).tolist():
        dx = d[img == i][:, [0, 2]].median()
        if abs(float(dx) - sign) <= 0.15:
            out[diag.image_ids[i]] = sign
    return out


def _shift_keypoints(dets: Detections, dx: float, dy: float, images: Optional[Dict[Any, float]] = None) -> Detections:
    out = {}
    for k, d in dets.images.items():
        kp = d.keypoints
        if kp is not None and (images is None or k in images):
            kp = kp.clone()
            kp[..., 0] -= dx
            kp[..., 1] -= dy
        out[k] = ImageDetections(d.boxes, d.scores, d.labels, d.masks, kp, d.segmentations, d.has_keypoints)
    return Detections(out, dets.source)


def _undo_flip(dets: Detections, cause: Cause, diag: Any) -> Detections:
    ev = cause.evidence
    if "median_dx" in ev:   # keypoints only: the boxes were flipped right
        return _shift_keypoints(dets, float(ev["median_dx"]), 0.0)
    sign = 1.0 if float(ev["dx"]) > 0 else -1.0
    images = _flip_images(diag, sign) if diag is not None else {k: sign for k in dets.images}
    out = {}
    for k, d in dets.images.items():
        if k in images:
            b = d.boxes.clone()
            b[:, 0::2] -= images[k]
            kp = d.keypoints
            if kp is not None:
                kp = kp.clone()
                kp[..., 0] -= images[k]
            d = ImageDetections(b, d.scores, d.labels, d.masks, kp, d.segmentations, d.has_keypoints)
        out[k] = d
    return Detections(out, dets.source)


def _undo_box(name: str, ev: Dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    def plus_one(b: torch.Tensor) -> torch.Tensor:
        b[:, 2] -= float(ev["dx2_minus_dx1"])
        b[:, 3] -= float(ev["dy2_minus_dy1"])
        return b

    def shift(b: torch.Tensor) -> torch.Tensor:
        b[:, 0::2] -= float(ev["dx"])
        b[:, 1::2] -= float(ev["dy"])
        return b

    def scale(b: torch.Tensor) -> torch.Tensor:
        b[:, 0::2] /= float(ev["sx"])
        b[:, 1::2] /= float(ev["sy"])
        return b

    def xywh(b: torch.Tensor) -> torch.Tensor:   # the candidate holds (x1, y1, x1 + x2, y1 + y2)
        b[:, 2:] -= b[:, :2]
        return b

    return {"plus_one": plus_one, "half_pixel_shift": shift, "translation": shift, "scale": scale,
            "anisotropic_scale": scale, "xywh_as_xyxy": xywh}[name]


def undo(candidate: Detections, cause: Cause, diagnosis: Any = None) -> Tuple[Optional[Detections], str]:
    """``candidate`` with ``cause`` undone from its fitted parameters (its evidence), and "" ; or None and why it
    cannot be undone. ``diagnosis`` (the :class:`~explainer.diagnosis.report.Diagnosis` that found the cause) gives
    what the evidence only summarises: the full relabelling of a permutation, the images a flip moved."""
    name, ev = cause.name, cause.evidence
    if name in CANNOT_UNDO:
        return None, CANNOT_UNDO[name]
    if name in ("plus_one", "half_pixel_shift", "translation", "scale", "anisotropic_scale", "xywh_as_xyxy"):
        return _map_boxes(candidate, _undo_box(name, ev)), ""
    if name == "label_offset":
        k = int(ev["offset"])
        if ev.get("space") == _COCO_INDEX_SPACE:
            return _map_labels(candidate, _coco_shift(k)), ""
        return _map_labels(candidate, lambda lab: lab - k), ""
    if name == "coco_category_ids":
        return _map_labels(candidate, _coco_ids_back(str(ev["direction"]))), ""
    if name == "label_permutation":
        if diagnosis is None:
            return None, "the full relabelling is fitted on the matched pairs: pass the diagnosis"
        table = _pairs_mapping(diagnosis)
        return _map_labels(candidate, lambda lab: torch.tensor([table.get(int(v), int(v)) for v in lab.tolist()],
                                                                dtype=torch.long)), ""
    if name == "keypoint_half_pixel":
        return _shift_keypoints(candidate, float(ev["median_dx"]), float(ev["median_dy"])), ""
    if name == "flip_off_by_one":
        return _undo_flip(candidate, cause, diagnosis), ""
    if name == "mask_paste":
        grow = -1 if float(ev.get("median_relative_area_difference", 0.0)) > 0 else 1
        try:
            return inject(candidate, "mask_paste", grow=grow), ""
        except ValueError as e:
            return None, f"its masks cannot be changed here ({e})"
    return None, "no way to undo this cause is known"


#: The order in which :func:`ap_cost` undoes several causes: offsets in the candidate's frame first, then the
#: rescale (the fitted model is candidate = scale x reference + offset), then the labels and the fields.
UNDO_ORDER = ("plus_one", "half_pixel_shift", "translation", "flip_off_by_one", "scale", "anisotropic_scale",
              "xywh_as_xyxy", "label_offset", "coco_category_ids", "label_permutation", "keypoint_half_pixel",
              "mask_paste")


# --------------------------------------------------------------------------------------------------
# the cost
# --------------------------------------------------------------------------------------------------
@dataclass
class TaskCost:
    """The AP of one task (:data:`TASKS`) for every variant, and what it says.

    ``reference``, ``candidate``, ``all_fixed``: {metric: value or None}; ``fixed``: {cause: metrics};
    ``evaluations``: the :class:`Evaluation` of every variant ("reference", "candidate", "all_fixed", each cause)."""

    task: str
    evaluations: Dict[str, Evaluation]
    causes: List[str]
    cannot_undo: Dict[str, str]
    categories: Dict[Any, str]

    def metrics(self, variant: str) -> Dict[str, Optional[float]]:
        return self.evaluations[variant].metrics

    def dap(self) -> Dict[str, float]:
        """Each undone cause's dAP: its fixed AP minus the candidate's (largest first)."""
        c = self.metrics("candidate")["AP"] or 0.0
        d = {k: (self.metrics(k)["AP"] or 0.0) - c for k in self.causes}
        return dict(sorted(d.items(), key=lambda kv: -kv[1]))

    def by_size(self) -> Dict[str, Dict[str, Optional[float]]]:
        """Per cause (and ``all_fixed``) the dAP of small, medium and large objects (None: no such object)."""
        c = self.metrics("candidate")
        out: Dict[str, Dict[str, Optional[float]]] = {}
        for k in self.causes + ["all_fixed"]:
            f = self.metrics(k)
            out[k] = {size: None if f[m] is None or c[m] is None else float(f[m]) - float(c[m])  # type: ignore[arg-type]
                      for size, m in (("small", "APs"), ("medium", "APm"), ("large", "APl"))}
        return out

    def by_category(self) -> List[Dict[str, Any]]:
        """Per category: AP of the reference, the candidate and all fixed, the ``loss`` (reference - candidate), the
        dAP of each cause and of all; the categories that lose the most first."""
        ev = self.evaluations
        rows = []
        for cat in ev["candidate"].per_category:
            r, c, a = (ev[v].per_category.get(cat) for v in ("reference", "candidate", "all_fixed"))
            if r is None and c is None:
                continue
            row = {"category_id": cat, "name": self.categories.get(cat, str(cat)), "reference": r, "candidate": c,
                   "all_fixed": a, "loss": (r or 0.0) - (c or 0.0),
                   "dAP": {k: (ev[k].per_category.get(cat) or 0.0) - (c or 0.0) for k in self.causes}}
            row["dAP"]["all_fixed"] = (a or 0.0) - (c or 0.0)
            rows.append(row)
        rows.sort(key=lambda r: -r["loss"])
        return rows

    def explained(self) -> Dict[str, Optional[float]]:
        """The candidate's AP gap (reference - candidate), what undoing every cause recovers, the share of the gap
        that is (None when there is no gap) and the rest, unexplained."""
        r, c, a = (self.metrics(v)["AP"] or 0.0 for v in ("reference", "candidate", "all_fixed"))
        gap, rec = r - c, a - c
        return {"gap": gap, "recovered": rec, "share": rec / gap if abs(gap) > 1e-9 else None,
                "unexplained": gap - rec}

    def worst_images(self, k: int = GALLERY) -> List[Tuple[Any, int]]:
        """The images where the candidate finds the fewest of the objects the reference finds (IoU 0.5), with the
        count lost; the most lost first, images that lose nothing left out."""
        r, c = self.evaluations["reference"].hits, self.evaluations["candidate"].hits
        lost = [(img, n - c.get(img, 0)) for img, n in r.items() if n - c.get(img, 0) > 0]
        lost.sort(key=lambda t: -t[1])
        return lost[:k]

    def pr_curves(self) -> Dict[str, np.ndarray]:
        """Precision at IoU 0.5 over 101 recall points (0, 0.01, ..., 1), averaged over the categories, for the
        reference, the candidate and all fixed (np.ndarray of 101 values each)."""
        return {v: self.evaluations[v].pr for v in ("reference", "candidate", "all_fixed")}

    def to_dict(self) -> Dict[str, Any]:
        fixed = {k: self.metrics(k) for k in self.causes}
        return {"reference": self.metrics("reference"), "candidate": self.metrics("candidate"),
                "all_fixed": self.metrics("all_fixed"), "fixed": fixed, "dAP": self.dap(),
                "cannot_undo": dict(self.cannot_undo), "by_size": self.by_size(), "by_category": self.by_category(),
                "explained": self.explained()}


@dataclass
class APCost:
    """What each cause costs: ``tasks`` {task: :class:`TaskCost`}; ``agreement``: True when the ground truth is the
    reference's own detections (agreement AP), and ``truth`` says which; ``skipped`` {task: why not measured};
    ``sides`` the variants' detections ({"reference", "candidate", "all_fixed", cause: Detections}), ``gt`` the
    ground truth (pycocotools ``COCO``)."""

    tasks: Dict[str, TaskCost]
    agreement: bool
    truth: str
    skipped: Dict[str, str] = field(default_factory=dict)
    sides: Dict[str, Detections] = field(default_factory=dict)
    gt: Optional[COCO] = None

    @property
    def label(self) -> str:
        return "agreement AP" if self.agreement else "AP"

    def gallery(self, task: str = "bbox", k: int = GALLERY) -> List[Dict[str, Any]]:
        """The ``k`` images that lose the most (:meth:`TaskCost.worst_images`) with what to draw: ``image_id``,
        ``lost``, ``file_name`` (or None), ``height``, ``width`` and the boxes (Tensor[N, 4], x1, y1, x2, y2) of the
        ground truth and of the reference, the candidate and all fixed."""
        if task not in self.tasks or self.gt is None:
            return []
        out = []
        for img, lost in self.tasks[task].worst_images(k):
            info = self.gt.imgs.get(img, {})
            gt = torch.tensor([a["bbox"] for a in self.gt.imgToAnns.get(img, [])], dtype=torch.float64).reshape(-1, 4)
            gt[:, 2:] += gt[:, :2]
            row = {"image_id": img, "lost": lost, "file_name": info.get("file_name"), "gt": gt}
            for v in ("reference", "candidate", "all_fixed"):
                d = self.sides[v].images.get(img)
                row[v] = d.boxes if d is not None else torch.zeros(0, 4, dtype=torch.float64)
            far = torch.cat([row[v] for v in ("gt", "reference", "candidate", "all_fixed")])
            far = far[torch.isfinite(far).all(1)]
            row["height"] = int(info.get("height") or (float(far[:, 3].max()) + 1 if len(far) else 1))
            row["width"] = int(info.get("width") or (float(far[:, 2].max()) + 1 if len(far) else 1))
            out.append(row)
        return out

    def to_dict(self) -> Dict[str, Any]:
        """``{task: {"measure", "reference", "candidate", "all_fixed", "fixed", "dAP", "cannot_undo", "by_size",
        "by_category", "explained"}}``: what ``--json`` prints under ``"ap"``."""
        return {t: {"measure": f"{self.label} against {self.truth}", **tc.to_dict()} for t, tc in self.tasks.items()}

    def summary(self) -> List[str]:
        lines = []
        for t, tc in self.tasks.items():
            m = {v: tc.metrics(v)["AP"] for v in ("reference", "candidate", "all_fixed")}
            lines.append(f"{t} {self.label} (against {self.truth}): reference {_pc(m['reference'])}, candidate "
                         f"{_pc(m['candidate'])}, all causes undone {_pc(m['all_fixed'])}")
            for k, v in tc.dap().items():
                lines.append(f"   undoing {k}: dAP {100 * v:+.1f}")
            for k, why in tc.cannot_undo.items():
                lines.append(f"   {k} cannot be undone: {why}")
            e = tc.explained()
            if e["share"] is not None:
                lines.append(f"   the causes explain {e['share']:.0%} of the {100 * (e['gap'] or 0):.1f}-point gap; "
                             f"{100 * (e['unexplained'] or 0):.1f} points unexplained")
        lines += [f"{t}: not measured ({why})" for t, why in self.skipped.items()]
        return lines


def _pc(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _has(dets: Detections, task: str) -> bool:
    f = dets.flat()
    if task == "segm":
        return f.masks is not None
    if task == "keypoints":
        return f.keypoints is not None and int(f.keypoints.shape[1]) == 17
    return True


def _gt_has(gt: COCO, task: str) -> bool:
    anns = gt.dataset["annotations"]
    if task == "segm":
        return any("segmentation" in a for a in anns)
    if task == "keypoints":
        return any("keypoints" in a for a in anns)
    return True


def _check_coverage(gt: COCO, sides: Sequence[Detections], name: str) -> None:
    have = set(gt.getImgIds())
    for d in sides:
        out = [k for k in d.images if k not in have]
        if out:
            few = ", ".join(str(k)[:30] for k in out[:5]) + (f", ... ({len(out)} in all)" if len(out) > 5 else "")
            raise ValueError(f"{name}: does not cover the results: image ids {few} of the {d.source} are not among "
                             f"its {len(have)} images (are the results for another split, or numbered differently?)")


def _undo_all(candidate: Detections, causes: List[Cause], diag: Any) -> Detections:
    out = candidate
    for c in sorted(causes, key=lambda c: UNDO_ORDER.index(c.name) if c.name in UNDO_ORDER else len(UNDO_ORDER)):
        fixed, _ = undo(out, c, diag)
        if fixed is not None:
            out = fixed
    return out


def ap_cost(reference: Detections, candidate: Detections, diagnosis: Any, gt: Any = None,
            agreement_score: float = AGREEMENT_SCORE, gt_name: str = "gt") -> APCost:
    """Measure each found cause's cost in AP (see the module docstring). ``gt``: COCO annotations (path, dict or
    ``COCO``); None: agreement AP, the reference's detections scored >= ``agreement_score`` as ground truth."""
    if gt is None:
        truth = agreement_truth(reference, candidate, agreement_score)
        label = f"the reference's detections scored >= {agreement_score:g}"
        tname = "agreement"
    else:
        truth = ground_truth(gt, gt_name)
        label = os.fspath(gt) if isinstance(gt, (str, os.PathLike)) else "the given annotations"
        tname = label
        _check_coverage(truth, (reference, candidate), tname if isinstance(gt, (str, os.PathLike)) else gt_name)
    causes: List[Cause] = []
    cannot: Dict[str, str] = {}
    sides = {"reference": reference, "candidate": candidate}
    for c in diagnosis.causes:
        key = c.name if c.name not in sides else f"{c.name}#{len(sides)}"
        fixed, why = undo(candidate, c, diagnosis)
        if fixed is None:
            cannot[key] = why
        else:
            sides[key] = fixed
            causes.append(c)
    sides["all_fixed"] = _undo_all(candidate, causes, diagnosis)
    names = [k for k in sides if k not in ("reference", "candidate", "all_fixed")]
    cats = {c["id"]: str(c.get("name", c["id"])) for c in truth.dataset["categories"]}
    tasks, skipped = {}, {}
    for task in TASKS:
        if not _gt_has(truth, task):
            if task != "bbox":
                continue
        if not (_has(reference, task) and _has(candidate, task)):
            if task != "bbox" and _gt_has(truth, task) and (_has(reference, task) or _has(candidate, task)):
                skipped[task] = "one side has none (keypoints are measured for COCO's 17 only)"
            continue
        ev = {k: evaluate(truth, d, task) for k, d in sides.items()}
        tasks[task] = TaskCost(task, ev, names, dict(cannot), cats)
    return APCost(tasks, gt is None, label, skipped, sides, truth)
