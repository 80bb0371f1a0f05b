"""maskrcnn-benchmark checkpoints to Detectron2: names, background-first predictors, RPN anchor rows.

maskrcnn-benchmark (facebookresearch/maskrcnn-benchmark) saves ``torch.save({"model": state_dict, "optimizer": ...,
...})``; its state-dict names are module attribute paths:

* backbone: ``backbone.body.stem.conv1`` / ``stem.bn1``, ``backbone.body.layer{1..4}.{block}.conv{1,2,3}`` /
  ``bn{1,2,3}`` / ``downsample.{0,1}`` (``modeling/backbone/resnet.py``: stage ``"layer" + str(index)``), FPN
  ``backbone.fpn.fpn_inner{i}`` and ``fpn_layer{i}`` for the i-th input (``fpn.py``; input i is res(i+1));
* RPN: ``rpn.head.conv``, ``rpn.head.cls_logits`` (A rows), ``rpn.head.bbox_pred`` (4A rows)
  (``modeling/rpn/rpn.py:RPNHead``), and the anchors themselves as buffers ``rpn.anchor_generator.cell_anchors.{l}``;
* RoI heads (``roi_heads.py:CombinedROIHeads``, a ModuleDict of "box", "mask", "keypoint"):
  ``roi_heads.box.feature_extractor.fc6/fc7`` (FPN) or ``.head.layer4...`` (C4),
  ``roi_heads.box.predictor.cls_score / bbox_pred``, ``roi_heads.mask.feature_extractor.mask_fcn{i}``,
  ``roi_heads.mask.predictor.conv5_mask / mask_fcn_logits``, ``roi_heads.keypoint.feature_extractor.conv_fcn{i}``,
  ``roi_heads.keypoint.predictor.kps_score_lowres``.

Like Detectron, maskrcnn-benchmark puts the background first (``MODEL.ROI_BOX_HEAD.NUM_CLASSES = 81`` counts it,
``data/datasets/coco.py`` maps categories to ``i + 1``, ``box_head/inference.py`` skips ``j = 0``), and its
anchors are ratio-major (``modeling/rpn/anchor_generator.py:_generate_anchors`` repeats Detectron's
``_ratio_enum`` then ``_scale_enum``). :func:`convert_maskrcnn_benchmark_to_detectron2` therefore gives the
predictors Detectron2's layout with :func:`explainer.labels.convert_box_predictor` and moves the RPN's anchor rows
with :func:`explainer.checkpoints.reorder_rpn_anchor_rows`; its output names are the ones
:func:`explainer.checkpoints.convert_detectron_to_detectron2` produces for the same layers, so the same audit applies.
Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from explainer import labels as L

__all__ = ["is_maskrcnn_benchmark_state_dict", "maskrcnn_benchmark_to_detectron2_name",
           "convert_maskrcnn_benchmark_to_detectron2", "synthetic_maskrcnn_benchmark_state_dict"]

_MARKER = re.compile(r"^(module\.)?(backbone\.body\.|rpn\.head\.|roi_heads\.(box|mask|keypoint)\.)")

# (family, pattern, replacement) on the name without "module.", the first match wins
_RES = r"(conv[123]\.weight|bn([123])\.(weight|bias|running_mean|running_var)|downsample\.0\.weight|downsample\.1\.(weight|bias|running_mean|running_var))"
_RULES: List[Tuple[str, str, Any]] = [
    ("stem", r"^backbone\.body\.stem\.conv1\.weight$", "stem.conv1.weight"),
    ("stem", r"^backbone\.body\.stem\.bn1\.(weight|bias|running_mean|running_var)$", r"stem.conv1.norm.\1"),
    ("res stages", r"^backbone\.body\.layer([1-4])\.(\d+)\.", lambda m: f"res{int(m.group(1)) + 1}.{m.group(2)}."),
    ("res stages", r"^roi_heads\.box\.feature_extractor\.head\.layer4\.(\d+)\.", r"res5.\1."),
    ("fpn", r"^backbone\.fpn\.fpn_inner(\d)(\.0)?\.(weight|bias)$", lambda m: f"fpn_lateral{int(m.group(1)) + 1}.{m.group(3)}"),
    ("fpn", r"^backbone\.fpn\.fpn_inner(\d)\.1\.(weight|bias)$", lambda m: f"fpn_lateral{int(m.group(1)) + 1}.norm.{m.group(2)}"),
    ("fpn", r"^backbone\.fpn\.fpn_layer(\d)(\.0)?\.(weight|bias)$", lambda m: f"fpn_output{int(m.group(1)) + 1}.{m.group(3)}"),
    ("fpn", r"^backbone\.fpn\.fpn_layer(\d)\.1\.(weight|bias)$", lambda m: f"fpn_output{int(m.group(1)) + 1}.norm.{m.group(2)}"),
    ("rpn", r"^rpn\.head\.conv\.", "proposal_generator.rpn_head.conv."),
    ("rpn", r"^rpn\.head\.cls_logits\.", "proposal_generator.rpn_head.objectness_logits."),
    ("rpn", r"^rpn\.head\.bbox_pred\.", "proposal_generator.rpn_head.anchor_deltas."),
    ("box head", r"^roi_heads\.box\.feature_extractor\.fc6\.", "box_head.fc1."),
    ("box head", r"^roi_heads\.box\.feature_extractor\.fc7\.", "box_head.fc2."),
    ("mask head", r"^roi_heads\.mask\.feature_extractor\.mask_fcn(\d+)\.", r"mask_head.mask_fcn\1."),
    ("mask head", r"^roi_heads\.mask\.predictor\.conv5_mask\.", "mask_head.deconv."),
    ("keypoint head", r"^roi_heads\.keypoint\.feature_extractor\.conv_fcn(\d+)\.", r"roi_heads.keypoint_head.conv_fcn\1."),
    ("keypoint head", r"^roi_heads\.keypoint\.predictor\.kps_score_lowres\.", "roi_heads.keypoint_head.score_lowres."),
]
_BLOCK_PARTS = [(r"conv([123])\.weight$", r"conv\1.weight"), (r"bn([123])\.", r"conv\1.norm."),
                (r"downsample\.0\.weight$", "shortcut.weight"), (r"downsample\.1\.", "shortcut.norm.")]
#: maskrcnn-benchmark predictor names -> the Detectron blob names that explainer.labels converts
_PREDICTORS = {"roi_heads.box.predictor.cls_score.weight": "cls_score_w", "roi_heads.box.predictor.cls_score.bias": "cls_score_b",
               "roi_heads.box.predictor.bbox_pred.weight": "bbox_pred_w", "roi_heads.box.predictor.bbox_pred.bias": "bbox_pred_b",
               "roi_heads.mask.predictor.mask_fcn_logits.weight": "mask_fcn_logits_w",
               "roi_heads.mask.predictor.mask_fcn_logits.bias": "mask_fcn_logits_b"}
_RPN = (("rpn.head.cls_logits.weight", "rpn.head.cls_logits.bias"), ("rpn.head.bbox_pred.weight", "rpn.head.bbox_pred.bias"))


def is_maskrcnn_benchmark_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True when most names are maskrcnn-benchmark's module paths (``backbone.body.``, ``rpn.head.``, ``roi_heads.box.``)."""
    keys = [k for k in state_dict if isinstance(k, str)]
    return bool(keys) and sum(bool(_MARKER.match(k)) for k in keys) > len(keys) / 2


def maskrcnn_benchmark_to_detectron2_name(name: str) -> Tuple[str, str]:
    """The Detectron2 loader-style name of one maskrcnn-benchmark parameter, and its family ("other" if no rule maps it)."""
    k = name[len("module."):] if name.startswith("module.") else name
    for family, pat, rep in _RULES:
        m = re.match(pat, k)
        if not m:
            continue
        head = rep(m) if callable(rep) else m.expand(rep)
        rest = k[m.end():]
        if family == "res stages":
            for p, r in _BLOCK_PARTS:
                if re.match(p, rest):
                    return head + re.sub(p, r, rest, count=1), family
            return k, "other"
        return head + rest, family
    return k, "other"


def _cell_anchor_counts(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Optional[Tuple[int, int]], bool, str]:
    """(sizes, ratios) read from the ``rpn.anchor_generator.cell_anchors.*`` buffers, whether there are several
    levels (FPN), and a note; (None, False, note) when the buffers are absent."""
    levels = sorted(k for k in state_dict if re.match(r"^(module\.)?rpn\.anchor_generator\.cell_anchors\.\d+$", k))
    if not levels:
        return None, False, ""
    if len(levels) > 1:
        return None, True, (f"the checkpoint's anchor buffers ({len(levels)} levels: FPN, one size per level, so the two "
                            "orders coincide)")
    a = state_dict[levels[0]].to(torch.float64)
    if a.dim() != 2 or a.shape[1] != 4 or a.shape[0] == 0:
        return None, False, ""
    aspect = ((a[:, 3] - a[:, 1] + 1) / (a[:, 2] - a[:, 0] + 1)).tolist()
    ratios = sorted({round(v, 6) for v in aspect})
    n_r = len(ratios)
    n_s = a.shape[0] // n_r
    ratio_major = n_s * n_r == a.shape[0] and all(round(aspect[i], 6) == round(aspect[(i // n_s) * n_s], 6)
                                                  for i in range(a.shape[0]))
    if not ratio_major:
        return None, False, ""
    return (n_s, n_r), False, (f"the checkpoint's anchor buffer {levels[0]} ({a.shape[0]} anchors: {n_s} sizes x {n_r} "
                               "aspect ratios, ratio-major)")


def convert_maskrcnn_benchmark_to_detectron2(state_dict: Mapping[str, Any], *, reorder_anchors: bool = True,
                                             rpn_anchors: Optional[Tuple[int, int]] = None
                                             ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """A maskrcnn-benchmark state dict -> (Detectron2 state dict, report), as for a Detectron checkpoint.

    Renames backbone, FPN, RPN and box, mask and keypoint heads (module description); converts the background-first
    predictors to Detectron2's layout (background row of ``cls_score`` last, the 4 background rows of ``bbox_pred``
    and the background channel of ``mask_fcn_logits`` dropped); with ``reorder_anchors`` moves the RPN rows from
    ratio-major to size-major. The numbers of sizes and ratios come from ``rpn_anchors``, else from the
    ``rpn.anchor_generator.cell_anchors`` buffers when the file has them, else maskrcnn-benchmark's defaults (3
    ``MODEL.RPN.ASPECT_RATIOS``) are assumed; the report says which. A ``module.`` prefix (DataParallel) is removed.

    The report has the keys of :func:`explainer.checkpoints.convert_detectron_to_detectron2`'s: ``renamed``,
    ``predictor``, ``rpn_anchors``, ``ignored``, ``unmapped``, ``counts``. Not converted: a C4 mask head's own res5
    (``roi_heads.mask.feature_extractor.head``; Detectron2's C4 mask head shares the box head's), RetinaNet, and
    anything else no rule maps (kept under its name and listed as ``unmapped``).
    """
    from explainer.checkpoints.conversion import predictor_report, rename_into, reorder_rpn_anchor_rows

    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a dict of name -> tensor, got {type(state_dict).__name__}")
    if not isinstance(reorder_anchors, bool):
        raise ValueError(f"reorder_anchors must be True or False, got {reorder_anchors!r}")
    tensors = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()
               if isinstance(v, torch.Tensor)}
    report: Dict[str, Any] = {"renamed": [], "predictor": [], "ignored": [], "unmapped": []}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            report["ignored"].append((k, f"not a tensor ({type(v).__name__})"))
    counts, fpn, note = _cell_anchor_counts(tensors)
    source = "argument rpn_anchors" if rpn_anchors is not None else note
    moved, report["rpn_anchors"] = reorder_rpn_anchor_rows(
        tensors, *_RPN, reorder=reorder_anchors, fpn=fpn, rpn_anchors=rpn_anchors if rpn_anchors is not None else counts,
        rpn_anchors_source=source, assumed_ratios="maskrcnn-benchmark's default MODEL.RPN.ASPECT_RATIOS (0.5, 1.0, 2.0)",
        fpn_source=note or "FPN")
    tensors.update(moved)
    out: Dict[str, torch.Tensor] = {}
    pred = {blob: tensors[k] for k, blob in _PREDICTORS.items() if k in tensors}
    if pred:
        conv = L.convert_box_predictor(pred)
        out.update(conv)
        report["predictor"] = predictor_report(pred, conv)
        report["K"] = pred["cls_score_w"].shape[0] - 1
    buffer = "anchor buffer: Detectron2 builds its anchors from the config"
    rename_into(out, report, {k: v for k, v in tensors.items() if k not in _PREDICTORS}, maskrcnn_benchmark_to_detectron2_name,
                 lambda k: buffer if re.match(r"^rpn\.anchor_generator\.cell_anchors\.\d+$", k) else "", "parameters",
                 n_in=len(tensors))
    return out, report


def synthetic_maskrcnn_benchmark_state_dict(num_classes: int = 3, arch: str = "c4", seed: int = 0) -> Dict[str, torch.Tensor]:
    """A small maskrcnn-benchmark-style Mask R-CNN state dict (R-50 layout, widths divided by 16), built in code.

    Names as the module paths listed above; background-first predictors (``NUM_CLASSES`` = K + 1); for
    ``arch="c4"`` a 15-anchor RPN with its ratio-major ``cell_anchors`` buffer (Detectron's generator, which
    maskrcnn-benchmark copies), for ``"fpn"`` a 3-anchor RPN shared by the levels and one buffer per level.
    """
    from explainer import anchors as A
    from explainer.checkpoints.conversion import C4_RPN_RATIOS, C4_RPN_SIZES, C4_RPN_STRIDE

    if arch not in ("c4", "fpn"):
        raise ValueError(f"arch must be 'c4' or 'fpn', got {arch!r}")
    g = torch.Generator().manual_seed(int(seed))
    sd: Dict[str, torch.Tensor] = {}

    def add(name: str, *shape: int) -> None:
        sd[name] = torch.randn(*shape, generator=g) * 0.01

    def bn(prefix: str, n: int) -> None:
        for part in ("weight", "bias", "running_mean", "running_var"):
            add(f"{prefix}.{part}", n)

    add("backbone.body.stem.conv1.weight", 4, 3, 7, 7)
    bn("backbone.body.stem.bn1", 4)
    cin = 4
    stages = [(1, 3, 4, 16), (2, 4, 8, 32), (3, 6, 16, 64)] + ([(4, 3, 32, 128)] if arch == "fpn" else [])
    for layer, blocks, mid, cout in stages:
        for b in range(blocks):
            _block(add, bn, f"backbone.body.layer{layer}.{b}", cin if b == 0 else cout, mid, cout, b == 0)
        cin = cout
    k1 = num_classes + 1
    if arch == "c4":
        for b in range(3):
            _block(add, bn, f"roi_heads.box.feature_extractor.head.layer4.{b}", 64 if b == 0 else 128, 32, 128, b == 0)
        rpn_in, box_in, anchors = 64, 128, [A.detectron_cell_anchors(C4_RPN_STRIDE, C4_RPN_SIZES, C4_RPN_RATIOS)]
        add("roi_heads.mask.predictor.conv5_mask.weight", box_in, 16, 2, 2)
        add("roi_heads.mask.predictor.conv5_mask.bias", 16)
    else:
        for i, c in enumerate((16, 32, 64, 128), 1):
            add(f"backbone.fpn.fpn_inner{i}.weight", 16, c, 1, 1)
            add(f"backbone.fpn.fpn_inner{i}.bias", 16)
            add(f"backbone.fpn.fpn_layer{i}.weight", 16, 16, 3, 3)
            add(f"backbone.fpn.fpn_layer{i}.bias", 16)
        rpn_in, box_in = 16, 64
        anchors = [A.detectron_cell_anchors(2.0 ** lv, (32.0 * 2 ** (lv - 2),), (0.5, 1.0, 2.0)) for lv in range(2, 7)]
        add("roi_heads.box.feature_extractor.fc6.weight", box_in, 16 * 7 * 7)
        add("roi_heads.box.feature_extractor.fc6.bias", box_in)
        add("roi_heads.box.feature_extractor.fc7.weight", box_in, box_in)
        add("roi_heads.box.feature_extractor.fc7.bias", box_in)
        for i in range(1, 5):
            add(f"roi_heads.mask.feature_extractor.mask_fcn{i}.weight", 16, 16, 3, 3)
            add(f"roi_heads.mask.feature_extractor.mask_fcn{i}.bias", 16)
        add("roi_heads.mask.predictor.conv5_mask.weight", 16, 16, 2, 2)
        add("roi_heads.mask.predictor.conv5_mask.bias", 16)
    a = anchors[0].shape[0]
    add("rpn.head.conv.weight", rpn_in, rpn_in, 3, 3)
    add("rpn.head.conv.bias", rpn_in)
    add("rpn.head.cls_logits.weight", a, rpn_in, 1, 1)
    add("rpn.head.cls_logits.bias", a)
    add("rpn.head.bbox_pred.weight", 4 * a, rpn_in, 1, 1)
    add("rpn.head.bbox_pred.bias", 4 * a)
    for lv, cell in enumerate(anchors):
        sd[f"rpn.anchor_generator.cell_anchors.{lv}"] = cell.float()
    add("roi_heads.box.predictor.cls_score.weight", k1, box_in)
    add("roi_heads.box.predictor.cls_score.bias", k1)
    add("roi_heads.box.predictor.bbox_pred.weight", 4 * k1, box_in)
    add("roi_heads.box.predictor.bbox_pred.bias", 4 * k1)
    add("roi_heads.mask.predictor.mask_fcn_logits.weight", k1, 16, 1, 1)
    add("roi_heads.mask.predictor.mask_fcn_logits.bias", k1)
    return sd


def _block(add, bn, prefix: str, cin: int, mid: int, cout: int, first: bool) -> None:
    add(f"{prefix}.conv1.weight", mid, cin, 1, 1)
    bn(f"{prefix}.bn1", mid)
    add(f"{prefix}.conv2.weight", mid, mid, 3, 3)
    bn(f"{prefix}.bn2", mid)
    add(f"{prefix}.conv3.weight", cout, mid, 1, 1)
    bn(f"{prefix}.bn3", cout)
    if first:
        add(f"{prefix}.downsample.0.weight", cout, cin, 1, 1)
        bn(f"{prefix}.downsample.1", cout)
