"""Every difference of :mod:`explainer.effects` measured on the course's miniature detector: the live column of
chapter 12's table, whole configurations scored against the original, and the ROIAlign experiment of chapter 4.

The rows themselves (what each codebase does, the flag, the published effect and its source) are data of the topic
module :mod:`explainer.effects`; what needs the fitted detector (:mod:`explainer.course.cache`), or the tools'
vocabularies of causes, is here, so that a topic never imports a tool. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from explainer import _validate as _v
from explainer import deployment as Dep
from explainer import torchvision_way as TV
from explainer.conventions import DETECTRON, DETECTRON2, PRESETS, Convention
from explainer.course.cache import N_TEST, course_detector, run_scene
from explainer.course.compare import quality, same_label_matches
from explainer.course.pipeline import INFERENCE_KNOBS, Run, Scene
from explainer.diagnosis.causes import CAUSES as DETECTION_CAUSES
from explainer.diagnosis.causes import CauseInfo
from explainer.effects import DIFFERENCES, PRACTITIONER, Difference
from explainer.masks import mask_iou
from explainer.pixels import to_continuous
from explainer.trace.causes import CAUSES as TRACE_CAUSES

__all__ = ["fingerprint_info", "reproduced", "measure_on_course_detector", "compare_settings", "remaining_differences",
           "effect_points",
           "aligned_effect_on_course_detector", "INPUT_CHANGES", "RESIZE_SHORT_EDGE", "MEASURED_KNOBS"]


def fingerprint_info(difference: Difference) -> Tuple[str, CauseInfo]:
    """The vocabulary (``"detections"`` or ``"stages"``) and the :class:`~explainer.diagnosis.causes.CauseInfo` of a row's
    fingerprint."""
    if difference.fingerprint in DETECTION_CAUSES:
        return "detections", DETECTION_CAUSES[difference.fingerprint]
    return "stages", TRACE_CAUSES[difference.fingerprint]


# --------------------------------------------------------------------------------------------------
# agreement between two runs: boxes and masks separately
# --------------------------------------------------------------------------------------------------
def _continuous(run: Any) -> Mapping[str, torch.Tensor]:
    """A run's detections with boxes in continuous coordinates (Detectron's inclusive x2, y2 + 1)."""
    d = dict(run.detections) if isinstance(run, Run) else dict(run)
    if isinstance(run, Run) and run.convention.legacy_plus_one and len(d["boxes"]):
        d["boxes"] = to_continuous(d["boxes"])
    return d


def reproduced(reference: Any, candidate: Any, box_iou: float = 0.99, mask_iou_at: float = 0.99) -> Dict[str, float]:
    """How far ``candidate`` reproduces ``reference`` (Runs or detection dicts), boxes and masks counted apart.

    Boxes are compared in continuous coordinates. ``boxes``: the share of the reference's detections with a
    same-label candidate box at IoU >= ``box_iou`` (one to one); ``masks``: the share whose best same-label match
    (box IoU >= 0.5, one to one) has mask IoU >= ``mask_iou_at``; ``mean_box_iou`` and ``mean_mask_iou``: the IoU
    of each reference detection with that match, averaged, 0 for a detection without one (a graded measure);
    ``n_reference``, ``n_candidate``.
    """
    box_iou, mask_iou_at = _v.probability(box_iou, "box_iou"), _v.probability(mask_iou_at, "mask_iou_at")
    a, b = _continuous(reference), _continuous(candidate)
    na, nb = len(a["boxes"]), len(b["boxes"])
    same = 1.0 if na == nb == 0 else 0.0
    out = {"boxes": same, "masks": same, "mean_box_iou": same, "mean_mask_iou": same, "n_reference": na,
           "n_candidate": nb}
    if na == 0 or nb == 0:
        return out
    out["boxes"] = len(same_label_matches(a, b, box_iou)[0]) / na
    ii, jj, vals, _ = same_label_matches(a, b, 0.5)
    if len(ii):
        out["mean_box_iou"] = float(vals.sum()) / na
        if "masks" in a and "masks" in b:
            m = mask_iou(a["masks"][ii], b["masks"][jj])
            out["masks"] = int((m >= mask_iou_at).sum()) / na
            out["mean_mask_iou"] = float(m.sum()) / na
    return out


# --------------------------------------------------------------------------------------------------
# the live column
# --------------------------------------------------------------------------------------------------
def _bgr_to_rgb_shift(delta_bgr: Sequence[float]) -> torch.Tensor:
    """A per-channel shift given in BGR 0..255 units, as the 3 x 1 x 1 RGB shift of an image in [0, 1]."""
    return torch.tensor(list(delta_bgr)[::-1], dtype=torch.float32).view(3, 1, 1) / 255.0


def _mean_shift(image: torch.Tensor) -> torch.Tensor:
    """A model trained with Detectron's mean, given Detectron2's: it sees x - m2 = (x + m1 - m2) - m1."""
    d = [a - b for a, b in zip(Dep.DETECTRON_PIXEL_MEANS, Dep.DETECTRON2_PIXEL_MEAN)]
    return image + _bgr_to_rgb_shift(d)


def _reversed_mean(image: torch.Tensor) -> torch.Tensor:
    """Detectron2's BGR mean used as an RGB one (tensorpack's order) without reversing: x - m[::-1] = (x + m - m[::-1]) - m."""
    m = Dep.DETECTRON2_PIXEL_MEAN
    return image + _bgr_to_rgb_shift([a - b for a, b in zip(m, m[::-1])])


def _swap_channels(image: torch.Tensor) -> torch.Tensor:
    return image[[2, 1, 0]]


def _detectron2_input_for_torchvision_weights(image: torch.Tensor) -> torch.Tensor:
    """Weights trained on torchvision's input (RGB [0, 1], (x - mean) / std) given Detectron2's default one (BGR
    0..255 minus PIXEL_MEAN): what they see, written back in their own input space, g * std + mean per channel."""
    got = image[[2, 1, 0]] * 255.0 - torch.tensor(Dep.DETECTRON2_PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(TV.IMAGE_STD, dtype=torch.float32).view(3, 1, 1)
    mean = torch.tensor(TV.IMAGE_MEAN, dtype=torch.float32).view(3, 1, 1)
    return got * std + mean


#: How each input difference changes the image the course's detector sees (RGB in [0, 1]).
INPUT_CHANGES: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "pixel_mean": _mean_shift, "channel_order": _swap_channels, "pixel_mean_order": _reversed_mean,
    "tv_input": _detectron2_input_for_torchvision_weights,
}
#: The knobs whose rows are measured by switching them in the course's detector: its inference knobs, and
#: torchvision's anchor rounding, which acts through :func:`explainer.anchors.cell_anchors`.
MEASURED_KNOBS = INFERENCE_KNOBS + ("anchor_round_corners",)
#: The scale of the resize comparison: the test scenes' shorter side goes from 192 to 240 pixels.
RESIZE_SHORT_EDGE = 240


def _to_uint8_bgr(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)[[2, 1, 0]]


def _resized_pair(scene: Scene, short_edge: int) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """The scene as a uint8 BGR file, preprocessed by Detectron (cv2 on the float image minus the mean) and by
    Detectron2's resize (PIL on uint8), both with Detectron's mean so that only the resize differs; returned as the
    RGB [0, 1] images the course's detector reads, and the scale."""
    bgr = _to_uint8_bgr(scene.image)
    h, w = scene.image_size
    d1, scale = Dep.detectron_preprocess(bgr, short_edge, 10 * max(h, w))
    d2 = Dep.detectron2_preprocess(bgr, short_edge, 10 * max(h, w), pixel_mean=Dep.DETECTRON_PIXEL_MEANS)
    mean = torch.tensor(Dep.DETECTRON_PIXEL_MEANS, dtype=torch.float32).view(3, 1, 1)
    back = [((x + mean) / 255.0)[[2, 1, 0]] for x in (d1, d2)]
    return back[0], back[1], scale


def _torchvision_resized_pair(scene: Scene, short_edge: int) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """The scene as a uint8 file enlarged by Detectron2's resize (PIL on uint8) and by torchvision's
    (``F.interpolate`` on the float image, :func:`explainer.torchvision_way.resize_image`) to the same size (the
    interpolation apart; torchvision's floor can make a side one pixel shorter), as RGB [0, 1] images, and the scale."""
    bgr = _to_uint8_bgr(scene.image)
    h, w = scene.image_size
    d2 = Dep.detectron2_preprocess(bgr, short_edge, 10 * max(h, w), pixel_mean=(0.0, 0.0, 0.0))
    rgb = bgr.flip(0).to(torch.float32) / 255.0
    tv = torch.nn.functional.interpolate(rgb[None], size=tuple(d2.shape[-2:]), mode="bilinear", align_corners=False)[0]
    return d2[[2, 1, 0]] / 255.0, tv, d2.shape[-2] / h


def _scaled_scene(scene: Scene, image: torch.Tensor, scale: float) -> Scene:
    return Scene(image=image, boxes=scene.boxes * scale, labels=scene.labels,
                 masks=torch.zeros(0, *image.shape[1:], dtype=torch.bool), class_names=scene.class_names)


def _summary(ref_runs: List[Any], cand_runs: List[Any], scenes: Sequence[Scene]) -> Dict[str, Any]:
    ags = [reproduced(r, c) for r, c in zip(ref_runs, cand_runs)]
    n = sum(a["n_reference"] for a in ags)

    def share(key: str) -> float:
        return sum(a[key] * a["n_reference"] for a in ags) / n if n else 1.0

    q0, q1 = quality(ref_runs, scenes), quality(cand_runs, scenes)
    return {"boxes": share("boxes"), "masks": share("masks"), "mean_box_iou": share("mean_box_iou"),
            "mean_mask_iou": share("mean_mask_iou"), "detections": n,
            "recall": (q0["recall"], q1["recall"]), "precision": (q0["precision"], q1["precision"]),
            "objects": q0["objects"], "detections_after": q1["detections"],
            "false_detections": (q0["detections"] - q0["found"], q1["detections"] - q1["found"])}


def _measure_knob(knob: str, run: Callable[[int, Convention], Run], indices: Sequence[int], scenes: Sequence[Scene],
                  towards: Convention = DETECTRON):
    base = DETECTRON2
    changed = DETECTRON2.replace(**{knob: getattr(towards, knob)})
    return _summary([run(i, base) for i in indices], [run(i, changed) for i in indices], scenes)


@lru_cache(maxsize=4)
def _measure_cached(indices: Tuple[int, ...]) -> Tuple[Tuple[str, Any], ...]:
    course = course_detector()
    scenes = [course.test[i] for i in indices]

    def run(i: int, conv: Convention) -> Run:
        return run_scene(i, conv, converted=True)

    out: Dict[str, Any] = {}
    for d in DIFFERENCES:
        if d.when == "inference" and d.knob in MEASURED_KNOBS:
            out[d.key] = _measure_knob(d.knob, run, indices, scenes, PRESETS[d.towards])
        elif d.key in INPUT_CHANGES:
            change = INPUT_CHANGES[d.key]
            ref = [run(i, DETECTRON2) for i in indices]
            cand = [course.converted.run(change(course.test[i].image), DETECTRON2) for i in indices]
            out[d.key] = _summary(ref, cand, scenes)
        elif d.key == "input_resize":
            pairs = [_resized_pair(course.test[i], RESIZE_SHORT_EDGE) for i in indices]
            big = [_scaled_scene(course.test[i], p[0], p[2]) for i, p in zip(indices, pairs)]
            ref = [course.converted.run(p[0], DETECTRON2) for p in pairs]
            cand = [course.converted.run(p[1], DETECTRON2) for p in pairs]
            out[d.key] = {**_summary(ref, cand, big), "scale": pairs[0][2]}
        elif d.key == "tv_resize":
            pairs = [_torchvision_resized_pair(course.test[i], RESIZE_SHORT_EDGE) for i in indices]
            big = [_scaled_scene(course.test[i], p[0], p[2]) for i, p in zip(indices, pairs)]
            ref = [course.converted.run(p[0], DETECTRON2) for p in pairs]
            cand = [course.converted.run(p[1], DETECTRON2) for p in pairs]
            out[d.key] = {**_summary(ref, cand, big), "scale": pairs[0][2]}
    return tuple(out.items())


def measure_on_course_detector(scenes: Optional[Sequence[int]] = None) -> Dict[str, Dict[str, Any]]:
    """The live column: for each row of :data:`DIFFERENCES`, how much the difference changes the outputs of the
    course's converted detector, over its test scenes (``scenes``: indices; all by default). Cached per process.

    * an inference knob: the converted detector under Detectron2's conventions, against the same with that one
      knob at Detectron's value (at torchvision's, for torchvision's rows);
    * ``tv_input``: the image weights trained on torchvision's normalisation see under Detectron2's default one;
    * ``tv_resize``: as ``input_resize``, Detectron2's resize against torchvision's ``F.interpolate``;
    * ``pixel_mean``, ``channel_order``, ``pixel_mean_order``: the same run on the image the model would see
      (Detectron2's mean instead of Detectron's, channels swapped, the mean in reversed order);
    * ``input_resize``: the scene saved as uint8, enlarged to a shorter side of :data:`RESIZE_SHORT_EDGE` by
      Detectron's preprocessing and by Detectron2's resize (both with Detectron's mean);
    * training-only rows are absent: a converted model's weights are whatever training made them.

    Each entry: ``boxes`` and ``masks`` (shares of the first run's detections reproduced, see :func:`reproduced`),
    ``mean_box_iou`` and ``mean_mask_iou`` (of the matched pairs, weighted by detections), ``detections`` (how
    many), ``recall`` and ``precision`` as (first run, second run) against the ground truth, ``objects`` (how many
    in the ground truth), ``detections_after`` (the second run's detections) and ``false_detections`` (first run,
    second run: detections that match no object).
    """
    indices = tuple(range(N_TEST)) if scenes is None else tuple(int(i) for i in scenes)
    if not indices or any(not 0 <= i < N_TEST for i in indices):
        raise ValueError(f"scenes must be indices of the course's test scenes, 0..{N_TEST - 1}; got {scenes!r}")
    return dict(_measure_cached(indices))


def effect_points(measured: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One point per measured row of :data:`DIFFERENCES`, for chapter 12's figure: the published change in trained AP
    (``published``, AP points, None where the source gives no figure) against the share of the converted detector's
    detections the difference changes (``boxes_changed``, ``masks_changed``: 1 minus the shares reproduced).
    ``measured``: from :func:`measure_on_course_detector`. Each point also has ``key``, ``title`` and ``when``."""
    if not isinstance(measured, Mapping):
        raise ValueError(f"measured must be the dict of measure_on_course_detector, got {type(measured).__name__}")
    return [{"key": d.key, "title": d.title, "when": d.when, "published": d.published_ap_change,
             "boxes_changed": 1.0 - float(measured[d.key]["boxes"]),
             "masks_changed": 1.0 - float(measured[d.key]["masks"])}
            for d in DIFFERENCES if d.key in measured]


def remaining_differences(convention: Convention = PRACTITIONER) -> List[Difference]:
    """The inference rows that ``convention`` still leaves at Detectron2's value (what no flag set)."""
    return [d for d in DIFFERENCES if d.when == "inference" and d.knob in INFERENCE_KNOBS and d.towards == "detectron"
            and getattr(convention, d.knob) != getattr(DETECTRON, d.knob)
            and d.key not in ("background_first", "anchor_order")]


def compare_settings(scenes: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
    """Whole configurations against the original (the Detectron-fitted detector under Detectron's conventions), over
    the course's test scenes: recall and precision of each, and box and mask agreement with the original, apart.

    Rows: the original; the converted weights under Detectron2's defaults; the converted weights under
    :data:`PRACTITIONER` (OFFSET 0.5, POOLER_TYPE ROIAlign, the sampling ratio of the fit: 2); the weights loaded unconverted. Each:
    ``setting``, ``convention``, ``converted``, ``recall``, ``precision``, ``detections``, and against the original
    ``boxes``, ``masks`` (shares reproduced at IoU >= 0.99, :func:`reproduced`), ``mean_box_iou``, ``mean_mask_iou``.
    """
    indices = list(range(N_TEST)) if scenes is None else [int(i) for i in scenes]
    course = course_detector()
    test = [course.test[i] for i in indices]
    reference = [run_scene(i, DETECTRON) for i in indices]
    settings = [("Detectron, as fitted (the original)", DETECTRON, False),
                ("Detectron2 defaults, weights converted", DETECTRON2, True),
                ("Detectron2 with the converted-model settings", PRACTITIONER, True),
                ("Detectron2 defaults, weights loaded unconverted", DETECTRON2, False)]
    rows = []
    for name, conv, converted in settings:
        runs = [run_scene(i, conv, converted) for i in indices]
        q = quality(runs, test)
        s = _summary(reference, runs, test)
        rows.append({"setting": name, "convention": conv, "converted": converted, "recall": q["recall"],
                     "precision": q["precision"], "detections": q["detections"],
                     **{k: s[k] for k in ("boxes", "masks", "mean_box_iou", "mean_mask_iou")}})
    return rows


# --------------------------------------------------------------------------------------------------
# chapter 4: ROIAlign's aligned on the converted detector
# --------------------------------------------------------------------------------------------------
def aligned_effect_on_course_detector(iou: float = 0.5) -> Dict[str, Any]:
    """Run the course's converted detector (:mod:`explainer.course.cache`) on its test scenes with ``aligned`` True and False.

    The detector was fitted under Detectron's conventions (``aligned=False``) and converted to Detectron2's layout;
    both runs use Detectron2's conventions and differ only in ``roi_aligned`` (``POOLER_TYPE`` ROIAlignV2 against
    ROIAlign), which acts in its box head's pooling and in its mask pooling. Detections are matched one to one (same
    label, box IoU >= ``iou``). Returns ``detections`` ({False: n, True: n}), ``recall`` and ``precision`` against the
    scenes' ground truth ({False: ..., True: ...}, :func:`explainer.course.compare.quality` at IoU 0.5), ``matched``, ``box_iou_mean`` and
    ``box_iou_min`` over the matched pairs, ``box_shift_max`` (largest coordinate difference, px), ``mask_iou_mean``,
    ``mask_offset`` ({False: (dx, dy), True: (dx, dy)}: the mask's centroid minus its box's centre, image pixels,
    averaged over the matched pairs whose masks are not empty; it includes each shape's own centroid, e.g. a
    triangle's lies below its box's centre), and ``mask_offset_change`` and ``mask_offset_change_abs``: the mean and
    the mean absolute value, over those pairs, of (offset with aligned=True) - (offset with aligned=False).
    """
    iou = _v.probability(iou, "iou")
    runs = {a: [run_scene(i, DETECTRON2.replace(roi_aligned=a), converted=True).detections for i in range(N_TEST)]
            for a in (False, True)}
    scenes = course_detector().test
    scores = {a: quality(runs[a], scenes) for a in (False, True)}
    ious: List[float] = []
    shifts: List[float] = []
    miou: List[float] = []
    offsets: Dict[bool, List[torch.Tensor]] = {False: [], True: []}
    for f, t in zip(runs[False], runs[True]):
        rows, cols, vals, _ = same_label_matches(f, t, iou)
        ious += vals.tolist()
        if len(rows):
            shifts.append(float((f["boxes"][rows] - t["boxes"][cols]).abs().max()))
            miou += mask_iou(f["masks"][rows], t["masks"][cols]).tolist()
        for r, c in zip(rows.tolist(), cols.tolist()):
            o_f, o_t = _mask_offset(f["masks"][r], f["boxes"][r]), _mask_offset(t["masks"][c], t["boxes"][c])
            if bool(torch.isfinite(o_f).all() and torch.isfinite(o_t).all()):  # an empty mask has no centroid
                offsets[False].append(o_f)
                offsets[True].append(o_t)
    nan2 = (float("nan"), float("nan"))
    mean_offset = {a: tuple(torch.stack(v).mean(0).tolist()) if v else nan2 for a, v in offsets.items()}
    change = torch.stack(offsets[True]) - torch.stack(offsets[False]) if offsets[True] else None
    return {"detections": {a: sum(len(d["boxes"]) for d in runs[a]) for a in (False, True)}, "matched": len(ious),
            "recall": {a: scores[a]["recall"] for a in scores}, "precision": {a: scores[a]["precision"] for a in scores},
            "box_iou_mean": sum(ious) / len(ious) if ious else float("nan"), "box_iou_min": min(ious, default=float("nan")),
            "box_shift_max": max(shifts, default=0.0), "mask_iou_mean": sum(miou) / len(miou) if miou else float("nan"),
            "mask_offset": mean_offset,
            "mask_offset_change": tuple(change.mean(0).tolist()) if change is not None else nan2,
            "mask_offset_change_abs": tuple(change.abs().mean(0).tolist()) if change is not None else nan2}


def _mask_offset(mask: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Centroid of a pasted mask's pixels (pixel centres, continuous coordinates) minus its box's centre: (dx, dy)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        return torch.full((2,), float("nan"), dtype=torch.float64)
    centroid = torch.stack([xs.double().mean(), ys.double().mean()]) + 0.5
    b = box.double()
    return centroid - (b[:2] + b[2:]) / 2
