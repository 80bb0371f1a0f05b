"""torchvision's detection models' state dicts to Detectron2's, and back: names, class rows, anchor rows, the report.

torchvision 0.29's ResNet-50-FPN detectors (``torchvision/models/detection``: ``fasterrcnn_resnet50_fpn``,
``maskrcnn_resnet50_fpn``, ``keypointrcnn_resnet50_fpn``, ``retinanet_resnet50_fpn``) name their parameters by module
path. Against Detectron2's model (``detectron2/modeling``):

==========================================  =========================================  =================================
torchvision                                 Detectron2                                 layout
==========================================  =========================================  =================================
``backbone.body.conv1``, ``bn1``            ``backbone.bottom_up.stem.conv1(.norm)``
``backbone.body.layer{l}.{b}.conv{i}``,     ``backbone.bottom_up.res{l+1}.{b}.conv{i}``
``bn{i}``, ``downsample.{0,1}``             ``(.norm)``, ``shortcut(.norm)``
``backbone.fpn.inner_blocks.{k}.0``         ``backbone.fpn_lateral{k + first level}``  first level 2 (R-CNN), 3
``backbone.fpn.layer_blocks.{k}.0``         ``backbone.fpn_output{k + first level}``   (RetinaNet)
``backbone.fpn.extra_blocks.p6``, ``p7``    ``backbone.top_block.p6``, ``p7``          torchvision's from P5 (256
                                                                                       channels), Detectron2's from C5
``rpn.head.conv.0.0``, ``cls_logits``,      ``proposal_generator.rpn_head.conv``,      ratio-major = size-major: FPN
``bbox_pred``                               ``objectness_logits``, ``anchor_deltas``   has one size per level
``roi_heads.box_head.fc6``, ``fc7``         ``roi_heads.box_head.fc1``, ``fc2``
``roi_heads.box_predictor.cls_score``       ``roi_heads.box_predictor.cls_score``      background row 0 -> last
``roi_heads.box_predictor.bbox_pred``       ``roi_heads.box_predictor.bbox_pred``      background rows 0..3 dropped
``roi_heads.mask_head.{k}.0``               ``roi_heads.mask_head.mask_fcn{k+1}``
``roi_heads.mask_predictor.conv5_mask``     ``roi_heads.mask_head.deconv``
``roi_heads.mask_predictor.mask_fcn_logits``  ``roi_heads.mask_head.predictor``        background channel dropped
``roi_heads.keypoint_head.{2k}``            ``roi_heads.keypoint_head.conv_fcn{k+1}``
``roi_heads.keypoint_predictor.             ``roi_heads.keypoint_head.score_lowres``
kps_score_lowres``
``head.classification_head.conv.{k}.0``     ``head.cls_subnet.{2k}``
``head.classification_head.cls_logits``     ``head.cls_score``                         anchor rows ratio-major ->
``head.regression_head.conv.{k}.0``,        ``head.bbox_subnet.{2k}``, ``head.bbox_pred``  size-major (3 sizes x 3
``bbox_reg``                                                                           ratios per level)
==========================================  =========================================  =================================

What Detectron2's layout has no place for (the background rows of ``bbox_pred`` and ``mask_fcn_logits``, which
torchvision keeps but never reads at inference, and BatchNorm's ``num_batches_tracked``) goes into the report's
``dropped``; :func:`convert_detectron2_to_torchvision` puts it back when given, and zeros (or nothing, for the
counters) otherwise. Nothing here imports torchvision, matplotlib or ipywidgets.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from explainer import anchors as A
from explainer import labels as L

__all__ = ["is_torchvision_state_dict", "torchvision_to_detectron2_name", "detectron2_to_torchvision_name",
           "convert_torchvision_to_detectron2", "convert_detectron2_to_torchvision", "DETECTRON2_SETTINGS"]

_MARKERS = ("backbone.fpn.inner_blocks.", "head.classification_head.", "backbone.body.bn1.", "rpn.head.conv.0.0.",
            "roi_heads.box_head.fc6.")
_STAT = r"(?P<stat>weight|bias|running_mean|running_var)"
_WB = r"(?P<wb>weight|bias)"
Ctx = Dict[str, int]
#: (family, torchvision pattern, Detectron2 pattern, {group: (to Detectron2, to torchvision)}). Patterns are written
#: once and used both ways: ``{name}`` is a number, ``{stat}`` a parameter or statistic, ``{wb}`` weight or bias.
_Fn = Callable[[int, Ctx], int]
_RULES: List[Tuple[str, str, str, Dict[str, Tuple[_Fn, _Fn]]]] = [
    ("stem", "backbone.body.conv1.weight", "backbone.bottom_up.stem.conv1.weight", {}),
    ("stem", "backbone.body.bn1.{stat}", "backbone.bottom_up.stem.conv1.norm.{stat}", {}),
    ("res stages", "backbone.body.layer{l}.{b}.conv{i}.weight", "backbone.bottom_up.res{l}.{b}.conv{i}.weight",
     {"l": (lambda v, c: v + 1, lambda v, c: v - 1)}),
    ("res stages", "backbone.body.layer{l}.{b}.bn{i}.{stat}", "backbone.bottom_up.res{l}.{b}.conv{i}.norm.{stat}",
     {"l": (lambda v, c: v + 1, lambda v, c: v - 1)}),
    ("res stages", "backbone.body.layer{l}.{b}.downsample.0.weight", "backbone.bottom_up.res{l}.{b}.shortcut.weight",
     {"l": (lambda v, c: v + 1, lambda v, c: v - 1)}),
    ("res stages", "backbone.body.layer{l}.{b}.downsample.1.{stat}", "backbone.bottom_up.res{l}.{b}.shortcut.norm.{stat}",
     {"l": (lambda v, c: v + 1, lambda v, c: v - 1)}),
    ("fpn", "backbone.fpn.inner_blocks.{k}.0.{wb}", "backbone.fpn_lateral{k}.{wb}",
     {"k": (lambda v, c: v + c["first"], lambda v, c: v - c["first"])}),
    ("fpn", "backbone.fpn.layer_blocks.{k}.0.{wb}", "backbone.fpn_output{k}.{wb}",
     {"k": (lambda v, c: v + c["first"], lambda v, c: v - c["first"])}),
    ("fpn", "backbone.fpn.extra_blocks.p{k}.{wb}", "backbone.top_block.p{k}.{wb}", {}),
    ("rpn", "rpn.head.conv.0.0.{wb}", "proposal_generator.rpn_head.conv.{wb}", {}),
    ("rpn", "rpn.head.cls_logits.{wb}", "proposal_generator.rpn_head.objectness_logits.{wb}", {}),
    ("rpn", "rpn.head.bbox_pred.{wb}", "proposal_generator.rpn_head.anchor_deltas.{wb}", {}),
    ("box head", "roi_heads.box_head.fc{k}.{wb}", "roi_heads.box_head.fc{k}.{wb}",
     {"k": (lambda v, c: v - 5, lambda v, c: v + 5)}),
    ("box predictor", "roi_heads.box_predictor.cls_score.{wb}", "roi_heads.box_predictor.cls_score.{wb}", {}),
    ("box predictor", "roi_heads.box_predictor.bbox_pred.{wb}", "roi_heads.box_predictor.bbox_pred.{wb}", {}),
    ("mask head", "roi_heads.mask_head.{k}.0.{wb}", "roi_heads.mask_head.mask_fcn{k}.{wb}",
     {"k": (lambda v, c: v + 1, lambda v, c: v - 1)}),
    ("mask head", "roi_heads.mask_predictor.conv5_mask.{wb}", "roi_heads.mask_head.deconv.{wb}", {}),
    ("mask predictor", "roi_heads.mask_predictor.mask_fcn_logits.{wb}", "roi_heads.mask_head.predictor.{wb}", {}),
    ("keypoint head", "roi_heads.keypoint_head.{k}.{wb}", "roi_heads.keypoint_head.conv_fcn{k}.{wb}",
     {"k": (lambda v, c: v // 2 + 1, lambda v, c: 2 * (v - 1))}),
    ("keypoint head", "roi_heads.keypoint_predictor.kps_score_lowres.{wb}", "roi_heads.keypoint_head.score_lowres.{wb}", {}),
    ("retinanet head", "head.classification_head.conv.{k}.0.{wb}", "head.cls_subnet.{k}.{wb}",
     {"k": (lambda v, c: 2 * v, lambda v, c: v // 2)}),
    ("retinanet head", "head.classification_head.cls_logits.{wb}", "head.cls_score.{wb}", {}),
    ("retinanet head", "head.regression_head.conv.{k}.0.{wb}", "head.bbox_subnet.{k}.{wb}",
     {"k": (lambda v, c: 2 * v, lambda v, c: v // 2)}),
    ("retinanet head", "head.regression_head.bbox_reg.{wb}", "head.bbox_pred.{wb}", {}),
]


def _regex(pattern: str) -> "re.Pattern[str]":
    out = re.escape(pattern)
    out = out.replace(r"\{stat\}", _STAT).replace(r"\{wb\}", _WB)
    out = re.sub(r"\\\{(\w)\\\}", lambda m: f"(?P<{m.group(1)}>\\d+)", out)
    return re.compile(f"^{out}$")


_COMPILED = [(fam, _regex(tv), tv, _regex(d2), d2, fns) for fam, tv, d2, fns in _RULES]


def _rename(name: str, to_d2: bool, ctx: Ctx) -> Tuple[str, str]:
    for fam, tv_re, tv_fmt, d2_re, d2_fmt, fns in _COMPILED:
        m = (tv_re if to_d2 else d2_re).match(name)
        if not m:
            continue
        values: Dict[str, Any] = dict(m.groupdict())
        for g, v in list(values.items()):
            if g not in ("stat", "wb"):
                n = int(v)
                values[g] = fns[g][0 if to_d2 else 1](n, ctx) if g in fns else n
        return (d2_fmt if to_d2 else tv_fmt).format(**values), fam
    return name, "other"


def is_torchvision_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True for a state dict of one of torchvision's detection models (its FPN's ``inner_blocks``, its box head's
    ``fc6``, its RetinaNet head or its ResNet's ``bn1`` are there; maskrcnn-benchmark's and Detectron2's names
    differ)."""
    return any(isinstance(k, str) and k.startswith(_MARKERS) for k in state_dict)


def _context(names: Any) -> Ctx:
    retina = any(k.startswith(("head.classification_head.", "head.cls_score.")) for k in names)
    return {"first": 3 if retina else 2}


def torchvision_to_detectron2_name(name: str, retinanet: bool = False) -> Tuple[str, str]:
    """Detectron2's name of one torchvision parameter, and its family ("other" when no rule maps it). ``retinanet``:
    the FPN starts at level 3 (RetinaNet's ``inner_blocks.0`` is res3's lateral) instead of 2."""
    if not isinstance(name, str):
        raise ValueError(f"name must be a parameter name (a string), got {type(name).__name__}")
    return _rename(name, True, {"first": 3 if retinanet else 2})


def detectron2_to_torchvision_name(name: str, retinanet: bool = False) -> Tuple[str, str]:
    """torchvision's name of one Detectron2 parameter, and its family (the inverse of
    :func:`torchvision_to_detectron2_name`)."""
    if not isinstance(name, str):
        raise ValueError(f"name must be a parameter name (a string), got {type(name).__name__}")
    return _rename(name, False, {"first": 3 if retinanet else 2})


#: What Detectron2's config must say to run converted torchvision weights as torchvision does (the torchvision
#: preset: :data:`explainer.conventions.TORCHVISION`).
DETECTRON2_SETTINGS: Dict[str, Any] = {
    "MODEL.RESNETS.STRIDE_IN_1X1": False,      # torchvision's bottleneck strides in its 3x3 conv
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],   # ImageNet's mean and std, times 255
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlign", "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 2,
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlign", "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": 2,
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE": "ROIAlign", "MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO": 2,
}

_STATS_COUNTER = "num_batches_tracked"


def _retina_anchors(n_rows: int, per_anchor: int) -> Tuple[int, int]:
    a = n_rows // per_anchor
    if a % 3:
        raise ValueError(f"RetinaNet head: {n_rows} rows are not 3 aspect ratios x sizes x {per_anchor}")
    return a // 3, 3


def _predictor_to_d2(tensors: Dict[str, torch.Tensor], dropped: Dict[str, torch.Tensor], report: Dict[str, Any]) -> None:
    """The R-CNN predictors in place: background row last, background box rows and mask channel into ``dropped``."""
    for wb in ("weight", "bias"):
        k = f"roi_heads.box_predictor.cls_score.{wb}"
        if k in tensors:
            tensors[k] = L.background_first_to_last(tensors[k], dim=0)
        k = f"roi_heads.box_predictor.bbox_pred.{wb}"
        if k in tensors:
            dropped[k], tensors[k] = tensors[k][:4].clone(), tensors[k][4:]
        k = f"roi_heads.mask_predictor.mask_fcn_logits.{wb}"
        if k in tensors:
            dropped[k], tensors[k] = tensors[k][:1].clone(), tensors[k][1:]
    if "roi_heads.box_predictor.cls_score.weight" in tensors:
        n = tensors["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1
        report["K"] = n
        report["predictor"] = [
            ("cls_score", f"{n + 1} rows", "background row 0 moved last; Detectron2 label = torchvision label - 1"),
            ("bbox_pred", f"{4 * (n + 1)} -> {4 * n} rows", "the 4 background rows dropped (kept in the report's dropped)")]
        if "roi_heads.mask_predictor.mask_fcn_logits.weight" in tensors:
            report["predictor"].append(("mask_fcn_logits", f"{n + 1} -> {n} channels",
                                        "the background channel dropped (kept in the report's dropped)"))


def _anchor_report(n: int, moved: int, perm: List[int], reordered: bool, source: str) -> Dict[str, Any]:
    return {"anchors": n, "rows_moved": moved, "permutation": perm, "reordered": reordered, "source": source}


def _move_anchor_rows(tensors: Dict[str, torch.Tensor], retina: bool, to_d2: bool, report: Dict[str, Any]) -> None:
    src, dst = ("ratio_major", "size_major") if to_d2 else ("size_major", "ratio_major")
    if retina:
        cls = "head.classification_head.cls_logits" if to_d2 else "head.cls_score"
        box = "head.regression_head.bbox_reg" if to_d2 else "head.bbox_pred"
        n_box = tensors[f"{box}.bias"].shape[0] if f"{box}.bias" in tensors else 36
        n_s, n_r = _retina_anchors(n_box, 4)
        a = n_s * n_r
        k = tensors[f"{cls}.bias"].shape[0] // a if f"{cls}.bias" in tensors else 1
        for name, per in ((cls, k), (box, 4)):
            for wb in ("weight", "bias"):
                if f"{name}.{wb}" in tensors:
                    tensors[f"{name}.{wb}"] = A.permute_anchor_rows(tensors[f"{name}.{wb}"], n_s, n_r, src, dst, per)
        perm = A.anchor_order_permutation(n_s, n_r, src, dst)
        report["rpn_anchors"] = _anchor_report(a, int((perm != torch.arange(a)).sum()), perm.tolist(), True,
                                               f"RetinaNet: {n_s} sizes x {n_r} aspect ratios per level, torchvision's "
                                               f"rows ratio-major, Detectron2's size-major; {k} class rows per anchor")
        report["K"] = k
        return
    name = "rpn.head.cls_logits.bias" if to_d2 else "proposal_generator.rpn_head.objectness_logits.bias"
    a = tensors[name].shape[0] if name in tensors else 0
    if a:
        report["rpn_anchors"] = _anchor_report(a, 0, list(range(a)), False,
                                               f"FPN: {a} anchors per location, one size per level, so ratio-major and "
                                               "size-major list the same rows")


def _counts(report: Dict[str, Any], n_in: int, out: Mapping[str, torch.Tensor]) -> None:
    report["counts"] = {"tensors in": n_in, "tensors out": len(out), "ignored": len(report["ignored"]),
                        "parameters out": int(sum(t.numel() for t in out.values()))}


def _architecture(names: Any) -> str:
    names = list(names)
    if any(k.startswith(("head.classification_head.", "head.cls_score.")) for k in names):
        return "RetinaNet"
    if any("keypoint" in k for k in names):
        return "Keypoint R-CNN"
    if any("mask" in k for k in names):
        return "Mask R-CNN"
    return "Faster R-CNN"


def _rename_all(tensors: Mapping[str, torch.Tensor], to_d2: bool, ctx: Ctx, report: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    for k in sorted(tensors):
        new, fam = _rename(k, to_d2, ctx)
        if new in out:
            raise ValueError(f"parameters {k!r} and another one both map to {new!r}")
        out[new] = tensors[k]
        report["renamed"].append((k, new, fam, tuple(tensors[k].shape)))
        if fam == "other":
            report["unmapped"].append((k, new))
    return out


def _notes(report: Dict[str, Any], out: Mapping[str, torch.Tensor], retina: bool) -> None:
    k = report.get("K")
    key = "MODEL.RETINANET.NUM_CLASSES" if retina else "MODEL.ROI_HEADS.NUM_CLASSES"
    report["detectron2_settings"] = {**DETECTRON2_SETTINGS, **({key: k} if k else {})}
    if not retina:
        report["notes"].append("labels: Detectron2's = torchvision's - 1; torchvision's COCO weights predict the 91 COCO "
                               "category ids (with gaps), not 80 contiguous ones")
        return
    report["notes"].append("labels: Detectron2's = torchvision's (no background column in RetinaNet; COCO weights "
                           "predict the 91 COCO category ids)")
    if "backbone.top_block.p6.weight" in out:
        report["notes"].append(f"backbone.top_block.p6 takes {out['backbone.top_block.p6.weight'].shape[1]} input "
                               "channels: torchvision computes P6 from P5; Detectron2's RetinaNet builds "
                               "LastLevelP6P7 on res5 unless its in_feature is 'p5'")


def _predictor_to_tv(out: Dict[str, torch.Tensor], back: Mapping[str, torch.Tensor], report: Dict[str, Any]) -> None:
    """The R-CNN predictors in place, the inverse of :func:`_predictor_to_d2`; missing background rows are zeros."""
    for wb in ("weight", "bias"):
        k = f"roi_heads.box_predictor.cls_score.{wb}"
        if k in out:
            out[k] = L.background_last_to_first(out[k], dim=0)
        for name, rows in ((f"roi_heads.box_predictor.bbox_pred.{wb}", 4), (f"roi_heads.mask_predictor.mask_fcn_logits.{wb}", 1)):
            if name in out:
                head = back.get(name)
                if head is None:
                    head = out[name].new_zeros((rows, *out[name].shape[1:]))
                    report["filled"].append((name, f"{rows} background row(s) set to 0"))
                out[name] = torch.cat([head.to(out[name].dtype), out[name]])


def convert_torchvision_to_detectron2(state_dict: Mapping[str, Any], *, reorder_anchors: bool = True
                                      ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """A torchvision ResNet-50-FPN detector's state dict -> (Detectron2 state dict, report).

    Names as the module docstring's table; the R-CNN predictors with the background last and its box rows and mask
    channel dropped; RetinaNet's head rows from ratio-major to size-major anchors (``reorder_anchors``). A
    ``module.`` prefix (DataParallel) is removed. The report has the keys of the other converters (``renamed``,
    ``predictor``, ``rpn_anchors``, ``ignored``, ``unmapped``, ``counts``, ``K``) and ``source`` ("torchvision"),
    ``architecture``, ``dropped`` (name -> tensor left out, for :func:`convert_detectron2_to_torchvision`),
    ``detectron2_settings`` (:data:`DETECTRON2_SETTINGS`, plus ``NUM_CLASSES``) and ``notes`` (what shapes cannot
    say: the label shift, RetinaNet's P6 input).
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a dict of name -> tensor, got {type(state_dict).__name__}")
    if not isinstance(reorder_anchors, bool):
        raise ValueError(f"reorder_anchors must be True or False, got {reorder_anchors!r}")
    if not is_torchvision_state_dict(state_dict):
        raise ValueError("state_dict is not a torchvision detection model's (no backbone.fpn.inner_blocks, "
                         "roi_heads.box_head.fc6 or head.classification_head parameters)")
    tensors = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()
               if isinstance(v, torch.Tensor)}
    report: Dict[str, Any] = {"source": "torchvision", "architecture": _architecture(tensors), "renamed": [],
                              "predictor": [], "ignored": [], "unmapped": [], "dropped": {}, "rpn_anchors": {}, "notes": []}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            report["ignored"].append((k, f"not a tensor ({type(v).__name__})"))
    n_in = len(tensors)
    ctx = _context(tensors)
    retina = ctx["first"] == 3
    for k in [k for k in tensors if k.endswith(_STATS_COUNTER)]:
        report["dropped"][k] = tensors.pop(k)
        report["ignored"].append((k, "BatchNorm's step counter: Detectron2's FrozenBatchNorm2d has none"))
    _predictor_to_d2(tensors, report["dropped"], report)
    if retina and reorder_anchors:
        _move_anchor_rows(tensors, True, True, report)
    elif not retina:
        _move_anchor_rows(tensors, False, True, report)
    out = _rename_all(tensors, True, ctx, report)
    _counts(report, n_in, out)
    _notes(report, out, retina)
    return out, report


def convert_detectron2_to_torchvision(state_dict: Mapping[str, Any], *, dropped: Optional[Mapping[str, torch.Tensor]] = None,
                                      reorder_anchors: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """A Detectron2 state dict of the same architectures -> (torchvision state dict, report): the inverse of
    :func:`convert_torchvision_to_detectron2`. ``dropped`` (its report's) restores what Detectron2 has no place for;
    without it the background box rows and mask channel are zeros (torchvision never reads them at inference) and
    ``num_batches_tracked`` is absent (load with ``strict=False``, or into FrozenBatchNorm2d, as torchvision's
    pretrained builders make it). The report lists ``renamed``, ``unmapped``, ``filled`` and ``counts``."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a dict of name -> tensor, got {type(state_dict).__name__}")
    if dropped is not None and not isinstance(dropped, Mapping):
        raise ValueError(f"dropped must be the report's dict of name -> tensor, got {type(dropped).__name__}")
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    ctx = _context(tensors)
    retina = ctx["first"] == 3
    report: Dict[str, Any] = {"source": "Detectron2", "architecture": _architecture(tensors), "renamed": [],
                              "unmapped": [], "filled": [], "ignored": [], "rpn_anchors": {}}
    if retina and reorder_anchors:
        _move_anchor_rows(tensors, True, False, report)
    out = _rename_all(tensors, False, ctx, report)
    back = dict(dropped or {})
    _predictor_to_tv(out, back, report)
    for k, v in back.items():
        if k.endswith(_STATS_COUNTER):
            out[k] = v
    _counts(report, len(tensors), out)
    return out, report
