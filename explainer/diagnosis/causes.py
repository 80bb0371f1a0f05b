"""The vocabulary of the diagnosis: every cause it can name, the fingerprint it looks for, and the fix.

:data:`CAUSES` is what :func:`explainer.diagnosis.diagnose` reports from two sets of detections, and what a
stage-by-stage comparison of two models names when it finds the same mistake inside them. A found cause is a
:class:`Cause`: its name, a strength in [0, 1], the evidence in numbers and the fix. Nothing here imports
matplotlib or ipywidgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

from explainer._json import jsonable

__all__ = ["CAUSES", "CauseInfo", "Cause", "make_cause", "UNRELATED_BELOW", "BOX_ATOL", "SCORE_ATOL", "RTOL",
           "FLIP_VS_TRANSLATION", "TORCHVISION_FINGERPRINTS", "torchvision_suspects"]

#: Below this fraction of matched detections the two sides are called unrelated.
UNRELATED_BELOW = 0.3
#: Differences at or below these are "identical": box and keypoint coordinates (px) and scores, plus RTOL times
#: the value's magnitude (float64 keeps about 16 digits, so boxes 1e20 px wide still compare as equal to themselves).
BOX_ATOL, SCORE_ATOL = 1e-4, 1e-5
RTOL = 1e-9

#: What tells a flip off by one from a translation (the evidence of both causes says it).
FLIP_VS_TRANSLATION = ("a translation moves every box by an arbitrary (dx, dy), on every image; a flip mapped back "
                       "with W - 1 - x instead of W - x moves x1 and x2 by exactly the same 1 px, y not at all, and "
                       "only on the images that were flipped; with keypoints a flip also swaps the left and right "
                       "keypoints, which a translation never does")


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
        f"every detection matched, boxes (and keypoints) within {BOX_ATOL:g} px, scores within {SCORE_ATOL:g}, "
        f"same labels, same masks, every value finite",
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
        "boxes match; candidate label = reference label + k for one constant k, in the raw labels or in the "
        "contiguous index seen through COCO's category ids (category_id = COCO_IDS[i + 1] for COCO_IDS[i])",
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
        "keypoints, or whole detections (x1 and x2 alike), moved by exactly 1 px in x and not at all in y, on every "
        "image or only on the flipped ones (the others unchanged); a translation moves by an arbitrary (dx, dy) and "
        "never swaps the left and right keypoints, which a flip does",
        "flip continuous coordinates with W - x and pixel indices with W - 1 - x; keep one convention per quantity"),
    "mask_paste": CauseInfo(
        "masks pasted into the image by different methods (Detectron's per-box resize vs Detectron2's grid sampling)",
        "boxes agree; masks differ, and the differing pixels lie within 2 px of the contour (mask IoU below 1, "
        "boundary F-score near 1)",
        "use the same paste on both sides: Detectron2's layers/mask_ops.py paste_masks_in_image, or, to reproduce "
        "Detectron's core/test.py segm_results, the per-box resize of paste_mask_in_image_old after pad_masks and "
        "scale_boxes (the same file)"),
    "non_finite": CauseInfo(
        "NaN or infinite values in the detections (an overflow in float16, a division by a zero width, the log of 0 "
        "in box decoding)",
        "a box, score or keypoint that is NaN or +-inf on one side (those detections are left out of the matching)",
        "find where the exporting side produces it: clamp dw/dh before exp() (Detectron2's scale_clamp = log(1000/16)), "
        "keep box decoding and score computations in float32, and check the input for NaN"),
    "missing_field": CauseInfo(
        "a field (keypoints, masks) written on one side only, or empty or unreadable on one side",
        "detections matched by their boxes, one side with keypoints or masks and the other without (or with empty "
        "masks, or segmentations that do not decode)",
        "write the same fields on both sides (Detectron2's instances_to_coco_json writes segmentation and keypoints "
        "when the model predicts them); check the mask head's threshold and the paste for empty masks"),
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
        "matched boxes differ by more than numerics with no global pattern, scores drift while boxes agree, "
        "keypoints or masks differ without a known pattern, or detections go missing without a score or count pattern",
        "compare the two pipelines stage by stage (anchors, proposals, pooled features) or bisect the "
        "conventions (explainer.course.compare.bisect_conventions)"),
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
        """The cause as JSON-ready values (numbers rounded, tensors as lists)."""
        return {"name": self.name, "strength": round(float(self.strength), 4), "evidence": jsonable(self.evidence, 6),
                "fix": self.fix, "explanation": self.explanation}


def make_cause(name: str, strength: float, evidence: Dict[str, Any], explanation: str) -> Cause:
    """A :class:`Cause` of the vocabulary, its strength clipped to [0, 1] and the vocabulary's fix."""
    return Cause(name, float(min(max(strength, 0.0), 1.0)), evidence, CAUSES[name].fix, explanation)


#: How the differences between torchvision's detectors and Detectron2 show in two result files, in this vocabulary:
#: difference -> (the causes :func:`diagnose` names for it, the setting that removes it). Measured, not assumed:
#: ``tests/test_torchvision_diagnosis.py`` runs each difference (on the course's detector, and on COCO-labelled
#: detections for the ids) and checks that the diagnosis names one of these causes first.
TORCHVISION_FINGERPRINTS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "category ids": (("coco_category_ids", "label_offset"),
                     "torchvision's labels are COCO category ids with 0 the background (1..90 with gaps for COCO); "
                     "Detectron2's are contiguous 0..K-1: map through the dataset's category id list (with only a "
                     "few classes and no gap, the map is a constant +1, a label offset)"),
    "ROIAlign shift": (("inference_difference",),
                       "torchvision pools with roi_align(aligned=False, sampling_ratio=2): set "
                       "MODEL.ROI_*_HEAD.POOLER_TYPE ROIAlign and POOLER_SAMPLING_RATIO 2 for every head"),
    "mask paste": (("mask_paste",),
                   "torchvision pastes with roi_heads.paste_masks_in_image(padding=1), Detectron's method on continuous "
                   "boxes; Detectron2 has no option for it: compare masks with a one-pixel tolerance on the contour"),
    "input normalisation": (("no_detections", "unrelated"),
                            "torchvision's weights expect RGB in [0, 1] normalised with ImageNet's mean and std: "
                            "INPUT.FORMAT RGB, MODEL.PIXEL_MEAN [123.675, 116.28, 103.53], MODEL.PIXEL_STD "
                            "[58.395, 57.12, 57.375]"),
}


def torchvision_suspects(cause_names: Any) -> Dict[str, str]:
    """For the names of the causes a diagnosis found (strongest first), the torchvision-vs-Detectron2 differences
    that leave those fingerprints, with their settings: ``{difference: what to set}``, in the order of the causes."""
    names = [cause_names] if isinstance(cause_names, str) else list(cause_names)
    unknown = [n for n in names if n not in CAUSES]
    if unknown:
        raise ValueError(f"cause_names must be causes of the vocabulary ({', '.join(CAUSES)}); unknown: {unknown}")
    out: Dict[str, str] = {}
    for n in names:
        for difference, (causes, fix) in TORCHVISION_FINGERPRINTS.items():
            if n in causes and difference not in out:
                out[difference] = fix
    return out
