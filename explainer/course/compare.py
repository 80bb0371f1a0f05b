"""Two runs of the miniature detector side by side: stage by stage, detections against detections, and a
bisection over the knobs that finds which ones a reference was produced with.

* :func:`stage_differences` compares two :class:`~explainer.course.pipeline.Run` objects stage by stage (in the
  order of :data:`~explainer.course.pipeline.STAGES`), tensor by tensor; :func:`first_divergence` is the first
  tensor in that order that differs by more than a tolerance: where a difference starts.
* :func:`compare_detections` matches two sets of detections one to one (same label, high IoU; masks too when
  both sides carry them); :func:`quality` scores runs against their scenes' ground truth.
* :func:`bisect_conventions` changes knobs of a :class:`~explainer.conventions.Convention` one at a time
  (then in pairs, then greedily) until the outputs agree with a reference.

Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from explainer import boxes as B
from explainer._validate import finite_number, probability
from explainer.conventions import DETECTRON, DETECTRON2, Convention, check_convention
from explainer.course.pipeline import INFERENCE_KNOBS, STAGES, Run, Scene
from explainer.masks import mask_iou
from explainer.pixels import to_continuous

__all__ = ["stage_differences", "first_divergence", "BOX_TENSORS", "same_label_matches", "compare_detections", "quality", "BisectReport",
           "bisect_conventions"]

#: Detections as :func:`compare_detections` takes them: a Run, or a dict with boxes, scores, labels (and masks).
DetectionsLike = Union[Run, Mapping[str, torch.Tensor]]


# --------------------------------------------------------------------------------------------------
# stage by stage
# --------------------------------------------------------------------------------------------------
def _tensor_difference(key: str, ta: torch.Tensor, tb: Optional[torch.Tensor]) -> Tuple[float, str]:
    """The largest |a - b| of one tensor and a phrase saying it; inf when ``tb`` is missing or shaped otherwise."""
    if tb is None or ta.shape != tb.shape:
        return float("inf"), f"{key}: shape {tuple(ta.shape)} vs {tuple(tb.shape) if tb is not None else None}"
    if ta.numel() == 0:
        return 0.0, f"{key} is empty on both sides"
    diff = float((ta.double() - tb.double()).abs().max())
    return diff, f"{key} differs by up to {diff:.3g}"


#: The tensors of :attr:`Run.stages` that hold boxes (rows of 4 numbers, x1 y1 x2 y2): :func:`stage_differences`
#: compares them in continuous coordinates.
BOX_TENSORS = (("anchors", "anchors"), ("proposals", "boxes"), ("proposals_nms", "boxes"), ("head", "boxes"),
               ("detections", "boxes"))


def _in_continuous(run: Run, stage: str, key: str, t: torch.Tensor) -> torch.Tensor:
    """A box tensor of a run in continuous coordinates (Detectron's inclusive x2, y2 plus 1); anything else as it is."""
    if not run.convention.legacy_plus_one or (stage, key) not in BOX_TENSORS or t.numel() == 0 or t.shape[-1] % 4:
        return t
    return to_continuous(t.reshape(-1, 4)).reshape(t.shape)


def stage_differences(run_a: Run, run_b: Run) -> List[Dict[str, Any]]:
    """Per stage of :data:`~explainer.course.pipeline.STAGES`, in pipeline order, how far ``run_b`` is from ``run_a``.

    Boxes (:data:`BOX_TENSORS`) are compared in continuous coordinates: a run under ``legacy_plus_one`` stores
    inclusive boxes, whose x2 and y2 are one less for the same region, and that notation is not a difference.

    Each entry: ``stage``; ``tensors``, for every tensor of ``run_a``'s stage in its order, ``(largest
    absolute difference, a phrase saying it)`` (inf when ``run_b`` lacks the tensor or has another shape, 0
    for empty tensors); ``max_diff``, the largest of them (0 for a stage without tensors); ``tensor``, the
    first tensor that reaches it.
    """
    for r, name in ((run_a, "run_a"), (run_b, "run_b")):
        if not isinstance(r, Run):
            raise ValueError(f"{name} must be a Run (from MiniDetector.run), got {type(r).__name__}")
    out = []
    for stage in STAGES:
        a, b = run_a.stages.get(stage, {}), run_b.stages.get(stage, {})
        tensors = {key: _tensor_difference(key, _in_continuous(run_a, stage, key, ta),
                                           None if b.get(key) is None else _in_continuous(run_b, stage, key, b[key]))
                   for key, ta in a.items()}
        worst = max(tensors, key=lambda k: tensors[k][0], default="")
        out.append({"stage": stage, "max_diff": tensors[worst][0] if worst else 0.0, "tensor": worst,
                    "tensors": tensors})
    return out


def first_divergence(run_a: Run, run_b: Run, atol: float = 1e-4) -> Optional[Dict[str, Any]]:
    """The first tensor, in pipeline order, that differs by more than ``atol`` (or in shape); None if none.

    Returns ``stage``, ``tensor``, ``max_abs_diff`` and ``detail`` (a phrase): read off :func:`stage_differences`.
    """
    atol = finite_number(atol, "atol", minimum=0.0)
    for d in stage_differences(run_a, run_b):
        for key, (diff, detail) in d["tensors"].items():
            if diff > atol:
                return {"stage": d["stage"], "tensor": key, "max_abs_diff": diff, "detail": detail}
    return None


# --------------------------------------------------------------------------------------------------
# detections against detections
# --------------------------------------------------------------------------------------------------
def _as_dets(x: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(x, Run):
        return x.detections
    if isinstance(x, Mapping) and "boxes" in x:
        return x
    raise ValueError(f"detections must be a Run or a dict with 'boxes', 'scores' and 'labels', got {type(x).__name__}")


def same_label_matches(a: DetectionsLike, b: DetectionsLike,
                       iou: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-to-one matches between two sets of detections: same label and box IoU >= ``iou``, greedily by IoU.

    ``a`` and ``b``: Runs, or dicts with ``boxes`` (Tensor[N, 4], x1, y1, x2, y2 in one convention's coordinates) and
    ``labels`` (N). Returns ``rows`` (P, indices into ``a``), ``cols`` (P, into ``b``),
    ``ious`` (P) and the same-label IoU matrix (Tensor[N_a, N_b], 0 where the labels differ). The one
    matching core of :func:`compare_detections`, :func:`explainer.course.measured.reproduced` and chapter 4's
    ROIAlign experiment.
    """
    iou = probability(iou, "iou")
    da, db = _as_dets(a), _as_dets(b)
    m = B.pairwise_iou(da["boxes"].float(), db["boxes"].float())
    m = torch.where(da["labels"].view(-1, 1) == db["labels"].view(1, -1), m, torch.zeros_like(m))
    rows, cols, vals = B.greedy_match(m, iou)[:3]
    return rows, cols, vals, m


def compare_detections(a: DetectionsLike, b: DetectionsLike, iou: float = 0.99) -> Dict[str, Any]:
    """How far ``b`` reproduces ``a``: one-to-one matches with the same label and box IoU >= ``iou``.

    Pairs are matched greedily by IoU. When both sides carry ``masks`` (Tensor[N, H, W]), a pair also needs mask IoU
    (:func:`explainer.masks.mask_iou`) >= ``iou``. Returns ``agreement`` (matched / detections of ``a``; 1.0
    when both are empty), ``matched``, ``n_a``, ``n_b``, ``max_box_diff`` (largest coordinate difference over
    the box-matched pairs, px), ``min_mask_iou`` (over those pairs; 1.0 without masks) and ``mean_iou`` (each
    detection of ``a``'s best IoU with a same-label detection of ``b``, averaged: a graded measure of how
    close ``b`` is).
    """
    iou = probability(iou, "iou")
    da, db = _as_dets(a), _as_dets(b)
    ba, bb = da["boxes"].float(), db["boxes"].float()
    na, nb = len(ba), len(bb)
    out: Dict[str, Any] = {"agreement": 0.0, "matched": 0, "n_a": na, "n_b": nb, "max_box_diff": 0.0,
                           "min_mask_iou": 1.0, "mean_iou": 0.0}
    if na == 0 or nb == 0:
        out["agreement"] = out["mean_iou"] = 1.0 if na == nb else 0.0
        return out
    ii, jj, _, m = same_label_matches(da, db, iou)
    out["mean_iou"] = float(m.max(1).values.mean())
    if len(ii):
        out["max_box_diff"] = float((ba[ii] - bb[jj]).abs().max())
    ok = torch.ones(len(ii), dtype=torch.bool)
    ma, mb = da.get("masks"), db.get("masks")
    if ma is not None and mb is not None and len(ma) == na and len(mb) == nb and len(ii):
        mious = mask_iou(ma[ii], mb[jj])
        out["min_mask_iou"] = float(mious.min())
        ok = mious >= iou
    out["matched"] = int(ok.sum())
    out["agreement"] = out["matched"] / na
    return out


def quality(runs: Sequence[DetectionsLike], scenes: Sequence[Scene], iou: float = 0.5) -> Dict[str, float]:
    """Recall and precision of runs against their scenes' ground truth (same label, box IoU >= ``iou``).

    A run's boxes are taken in its convention's coordinates and mapped to continuous ones first
    (Detectron's inclusive x2, y2 + 1), so both conventions are scored alike.
    """
    iou = probability(iou, "iou")
    if len(runs) != len(scenes):
        raise ValueError(f"runs and scenes must pair up; got {len(runs)} runs and {len(scenes)} scenes")
    n_gt = n_det = hit = 0
    for run, scene in zip(runs, scenes):
        d = _as_dets(run)
        boxes = d["boxes"].float()
        if isinstance(run, Run) and run.convention.legacy_plus_one:
            boxes = to_continuous(boxes)
        gt = {"boxes": scene.boxes.float(), "scores": torch.ones(len(scene.boxes)), "labels": scene.labels}
        c = compare_detections(gt, {"boxes": boxes, "scores": d["scores"], "labels": d["labels"]}, iou=iou)
        n_gt, n_det, hit = n_gt + c["n_a"], n_det + c["n_b"], hit + c["matched"]
    return {"recall": hit / n_gt if n_gt else 1.0, "precision": hit / n_det if n_det else 1.0,
            "objects": n_gt, "detections": n_det, "found": hit}


# --------------------------------------------------------------------------------------------------
# bisecting the knobs
# --------------------------------------------------------------------------------------------------
@dataclass
class BisectReport:
    """What changing knobs back did: ``trials`` (one dict per change), the ``found`` knobs, the ``baseline``."""

    start: Convention
    towards: Convention
    baseline: float
    trials: List[Dict[str, Any]]
    found: Optional[Tuple[str, ...]]
    no_effect: List[str]

    def summary(self) -> str:
        lines = [f"start: {self.start.name}; towards: {self.towards.name}; agreement before any change: {self.baseline:.3f}"]
        for t in self.trials:
            lines.append(f"  set back {' + '.join(t['knobs']):<44} agreement {t['agreement']:.3f}  "
                         f"mean IoU {t['mean_iou']:.3f}  ({t['n_detections']} detections)")
        if self.no_effect:
            lines.append(f"no effect on this detector's outputs: {', '.join(self.no_effect)}")
        lines.append(f"found: {' + '.join(self.found)}" if self.found else
                     "found: no single knob or pair makes the outputs agree")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _score(t: Dict[str, Any]) -> Tuple[float, float]:
    return t["agreement"], t["mean_iou"]


@dataclass
class _Bisection:
    """The trials of one bisection, in the order they ran."""

    run: Callable[[Convention], Any]
    reference: Mapping[str, torch.Tensor]
    start: Convention
    towards: Convention
    agree_at: float

    def __post_init__(self) -> None:
        self.base_out = _as_dets(self.run(self.start))
        self.trials: List[Dict[str, Any]] = []

    def trial(self, knobs: Tuple[str, ...]) -> Dict[str, Any]:
        conv = self.start.replace(**{k: getattr(self.towards, k) for k in knobs})
        out = _as_dets(self.run(conv))
        c = compare_detections(self.reference, out)
        unchanged = (compare_detections(self.base_out, out)["agreement"] == 1.0
                     and len(out["boxes"]) == len(self.base_out["boxes"]))
        t = {"knobs": knobs, "convention": conv, "agreement": c["agreement"], "mean_iou": c["mean_iou"],
             "max_box_diff": c["max_box_diff"], "n_detections": c["n_b"], "unchanged": unchanged}
        self.trials.append(t)
        return t

    def singles(self, knobs: Sequence[str]) -> Tuple[Optional[Tuple[str, ...]], List[str], List[str]]:
        """Each knob alone: the first that agrees, the knobs that changed the outputs (most promising first),
        and those that did not."""
        found: Optional[Tuple[str, ...]] = None
        no_effect = []
        for k in knobs:
            t = self.trial((k,))
            if t["unchanged"]:
                no_effect.append(k)
            if found is None and t["agreement"] >= self.agree_at:
                found = (k,)
        effective = sorted((t for t in self.trials if not t["unchanged"]), key=lambda t: (-t["agreement"], -t["mean_iou"]))
        return found, [t["knobs"][0] for t in effective], no_effect

    def pairs(self, knobs: Sequence[str]) -> Optional[Tuple[str, ...]]:
        for pair in combinations(knobs, 2):
            if self.trial(pair)["agreement"] >= self.agree_at:
                return pair
        return None

    def greedy(self, knobs: Sequence[str]) -> Optional[Tuple[str, ...]]:
        """From the best pair (or single knob), keep adding the knob that helps most while agreement improves."""
        start_t = max([t for t in self.trials if len(t["knobs"]) == 2] or self.trials, key=_score)
        chosen, best = start_t["knobs"], _score(start_t)
        while True:
            rest = [k for k in knobs if k not in chosen]
            if not rest:
                return None
            t = max((self.trial(chosen + (k,)) for k in rest), key=_score)
            if _score(t) <= best:
                return None
            chosen, best = t["knobs"], _score(t)
            if t["agreement"] >= self.agree_at:
                return chosen


def bisect_conventions(run: Callable[[Convention], Any], reference: DetectionsLike, start: Convention = DETECTRON2,
                       towards: Convention = DETECTRON, knobs: Sequence[str] = INFERENCE_KNOBS,
                       pairs: bool = True, agree_at: float = 1.0) -> BisectReport:
    """Change one knob at a time from ``start`` to its value in ``towards``; report which change reproduces ``reference``.

    ``run``: a callable Convention -> Run (or detections dict); ``reference``: a Run or detections. Agreement is
    :func:`compare_detections` with IoU >= 0.99 and the same label. When no single knob reaches ``agree_at``,
    pairs of knobs are tried (``pairs=True``), the most promising first (ranked by what each knob alone did);
    when no pair suffices either, knobs are added greedily to the best pair while agreement improves. Knobs
    whose change leaves the outputs unchanged are listed in ``no_effect``.
    """
    if not callable(run):
        raise ValueError(f"run must be a callable Convention -> Run, got {type(run).__name__}")
    start, towards = check_convention(start), check_convention(towards)
    unknown = [k for k in knobs if k not in INFERENCE_KNOBS]
    if unknown:
        raise ValueError(f"knobs must be among {INFERENCE_KNOBS}; unknown: {unknown}")
    b = _Bisection(run, _as_dets(reference), start, towards, agree_at)
    baseline = compare_detections(b.reference, b.base_out)["agreement"]
    found: Optional[Tuple[str, ...]] = None
    no_effect: List[str] = []
    if baseline < agree_at:
        found, effective, no_effect = b.singles([k for k in knobs if getattr(start, k) != getattr(towards, k)])
        if found is None and pairs:
            found = b.pairs(effective)
        if found is None and len(effective) > 2:
            found = b.greedy(effective)
    return BisectReport(start=start, towards=towards, baseline=baseline, trials=b.trials, found=found,
                        no_effect=no_effect)
