"""Converting checkpoints' names and layouts from Detectron (and maskrcnn-benchmark) to Detectron2.

* :func:`detectron_to_detectron2_name` renames one blob as Detectron2's loader does
  (``detectron2/checkpoint/c2_model_loading.py:convert_c2_detectron_names``), with the layer family it belongs to.
* :func:`detectron_cfg_values` reads the few config values a conversion needs from a checkpoint's ``cfg`` text
  (a small YAML reader: no code runs).
* :func:`reorder_rpn_anchor_rows` moves the RPN's rows from Detectron's ratio-major anchor order to Detectron2's
  size-major one, which Detectron2's loader does not do.
* :func:`convert_detectron_to_detectron2` renames every blob, converts the predictors (background last, see
  :mod:`explainer.labels`) and reports what it left out and why; :func:`convert_detectron2_to_detectron_predictor`
  goes the other way for the predictors.

Loading and writing files is :mod:`explainer.checkpoints`'s; so is :func:`explainer.checkpoints.convert_checkpoint`,
which takes a loaded file and calls this module or :mod:`explainer.checkpoints.maskrcnn_benchmark`.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from explainer import _validate as _v
from explainer import anchors as A
from explainer import labels as L

__all__ = [
    "synthetic_retinanet_blobs",
    "detectron_to_detectron2_name",
    "convert_detectron_to_detectron2",
    "detectron_cfg_values",
    "reorder_rpn_anchor_rows",
    "convert_detectron2_to_detectron_predictor",
    "C4_RPN_SIZES",
    "C4_RPN_RATIOS",
    "C4_RPN_STRIDE",
]

#: Detectron's C4 defaults for the RPN's anchors (``detectron/core/config.py``: ``RPN.SIZES``,
#: ``RPN.ASPECT_RATIOS``, the stride of res4).
C4_RPN_SIZES = (32.0, 64.0, 128.0, 256.0, 512.0)
C4_RPN_RATIOS = (0.5, 1.0, 2.0)
C4_RPN_STRIDE = 16.0


# --------------------------------------------------------------------------------------------
# Detectron -> Detectron2 names
# --------------------------------------------------------------------------------------------
# Each rule: (family, pattern on the dotted name, replacement). Applied in order, after "_" -> "." and the suffix
# and normalisation rules. The resulting names are those of Detectron2's loader (before it aligns them by suffix
# with the model's own names, e.g. "backbone.bottom_up.res2.0.conv1.weight").
_SUFFIX_RULES = [
    (r"\.w$", ".weight"), (r"\.b$", ".bias"),
    (r"bn\.s$", "norm.weight"), (r"bn\.bias$", "norm.bias"), (r"bn\.gamma$", "norm.weight"), (r"bn\.beta$", "norm.bias"),
    (r"bn\.rm$", "norm.running_mean"), (r"bn\.riv$", "norm.running_var"),
    (r"bn\.running\.mean$", "norm.running_mean"), (r"bn\.running\.var$", "norm.running_var"),
    (r"gn\.s$", "norm.weight"), (r"gn\.bias$", "norm.bias"),
    (r"^pred\.(weight|bias)$", r"linear.\1"),  # an ImageNet classifier's final layer
]
_FAMILY_RULES = [
    # DensePose (Detectron2's convert_basic_c2_names, in its order: "Index.UV" before "U"/"V", anywhere in the name)
    ("densepose", r"^body\.conv\.fcn", "body_conv_fcn"), ("densepose", r"AnnIndex\.lowres", "ann_index_lowres"),
    ("densepose", r"Index\.UV\.lowres", "index_uv_lowres"), ("densepose", r"U\.lowres", "u_lowres"),
    ("densepose", r"V\.lowres", "v_lowres"),
    ("stem", r"^res\.conv1\.norm\.", "stem.conv1.norm."),
    ("stem", r"^conv1\.", "stem.conv1."),
    ("res stages", r"\.branch1\.", ".shortcut."), ("res stages", r"\.branch2a\.", ".conv1."),
    ("res stages", r"\.branch2b\.", ".conv2."), ("res stages", r"\.branch2c\.", ".conv3."),
    ("rpn", r"^conv\.rpn(\.fpn2)?\.", "proposal_generator.rpn_head.conv."),
    ("rpn", r"^rpn\.bbox\.pred(\.fpn2)?\.", "proposal_generator.rpn_head.anchor_deltas."),
    ("rpn", r"^rpn\.cls\.logits(\.fpn2)?\.", "proposal_generator.rpn_head.objectness_logits."),
    ("box predictor", r"^bbox\.pred\.", "bbox_pred."), ("box predictor", r"^cls\.score\.", "cls_score."),
    ("box head", r"^fc6\.", "box_head.fc1."), ("box head", r"^fc7\.", "box_head.fc2."),
    ("box head", r"^head\.conv", "box_head.conv"),
    ("mask head", r"^\.\[mask\]\.fcn", "mask_head.mask_fcn"), ("mask head", r"^\.mask\.fcn", "mask_head.mask_fcn"),
    ("mask predictor", r"^mask\.fcn\.logits\.", "mask_head.predictor."),
    ("mask head", r"^conv5\.mask\.", "mask_head.deconv."),
    ("keypoint head", r"^conv\.fcn", "roi_heads.keypoint_head.conv_fcn"),
    ("keypoint head", r"^kps\.score\.lowres\.", "roi_heads.keypoint_head.score_lowres."),
    ("keypoint head", r"^kps\.score\.", "roi_heads.keypoint_head.score."),
]
#: RetinaNet (``modeling/retinanet_heads.py``): the towers' convolutions and the two predictors exist once, at the
#: finest level (``_fpn3``; the other levels share them), and become Detectron2's ``RetinaNetHead`` names, where
#: each tower is a Sequential of convolution and ReLU (convolution n at index 2 n). The extra levels ``fpn_6``
#: and ``fpn_7`` (``modeling/FPN.py``, from res5) are Detectron2's ``LastLevelP6P7`` (``top_block.p6``, ``p7``).
#: Detectron2's own loader has none of these rules.
_RETINANET = [
    (re.compile(r"^retnet\.(cls|bbox)\.conv\.n(\d+)\.fpn\d+\.(weight|bias)$"),
     lambda m: f"head.{m.group(1)}_subnet.{2 * int(m.group(2))}.{m.group(3)}"),
    (re.compile(r"^retnet\.cls\.pred\.fpn\d+\.(weight|bias)$"), lambda m: f"head.cls_score.{m.group(1)}"),
    (re.compile(r"^retnet\.bbox\.pred\.fpn\d+\.(weight|bias)$"), lambda m: f"head.bbox_pred.{m.group(1)}"),
    (re.compile(r"^fpn\.([67])\.(weight|bias)$"), lambda m: f"top_block.p{m.group(1)}.{m.group(2)}"),
]
_FPN_INNER = re.compile(r"^fpn\.inner\.res(\d)\.\d+\.sum(\.lateral)?\.(norm\.)?(weight|bias)$")
_FPN_OUT = re.compile(r"^fpn\.res(\d)\.\d+\.sum\.(norm\.)?(weight|bias)$")


def synthetic_retinanet_blobs(num_classes: int = 80, small: bool = False, prior_prob: float = 0.01) -> Dict[str, Any]:
    """The blobs of a Detectron RetinaNet's head and extra levels, named and shaped as ``modeling/retinanet_heads.py``
    and ``modeling/FPN.py`` make them with the defaults (4 convolutions per tower, 3 octaves x 3 ratios = 9 anchors,
    sigmoid classes, class-agnostic boxes): each stored once, at level 3, which the others share. Weights are
    zero, the class bias the prior ``-log((1 - p) / p)`` (float32 numpy arrays). ``small=True`` divides the widths
    by 16. The backbone is left out (its names are the other detectors')."""
    num_classes, small = _v.positive_int(num_classes, "num_classes", maximum=10_000), _v.flag(small, "small")
    p = _v.finite_number(prior_prob, "prior_prob")
    L.retinanet_prior_bias(p)                      # checks 0 < p < 1
    dim, res5, a = (16, 128, 9) if small else (256, 2048, 9)
    f = np.float32
    b: Dict[str, Any] = {}
    for tower in ("cls", "bbox"):
        for n in range(4):
            b[f"retnet_{tower}_conv_n{n}_fpn3_w"] = np.zeros((dim, dim, 3, 3), f)
            b[f"retnet_{tower}_conv_n{n}_fpn3_b"] = np.zeros(dim, f)
    b["retnet_cls_pred_fpn3_w"] = np.zeros((a * num_classes, dim, 3, 3), f)
    b["retnet_cls_pred_fpn3_b"] = np.full(a * num_classes, L.retinanet_prior_bias(p), f)
    b["retnet_bbox_pred_fpn3_w"] = np.zeros((a * 4, dim, 3, 3), f)
    b["retnet_bbox_pred_fpn3_b"] = np.zeros(a * 4, f)
    b["fpn_6_w"], b["fpn_6_b"] = np.zeros((dim, res5, 3, 3), f), np.zeros(dim, f)
    b["fpn_7_w"], b["fpn_7_b"] = np.zeros((dim, dim, 3, 3), f), np.zeros(dim, f)
    return b


def detectron_to_detectron2_name(name: str) -> Tuple[str, str]:
    """The Detectron2 name of one Detectron blob, and its family (stem, res stages, fpn, rpn, box head, ...)."""
    if not isinstance(name, str):
        raise _v.WrongType(f"name must be a blob name (a string), got {type(name).__name__}: {name!r}")
    k = name.replace("_", ".")
    for pat, rep in _SUFFIX_RULES:
        k = re.sub(pat, rep, k)
    m = _FPN_INNER.match(k)
    if m:
        return f"fpn_lateral{m.group(1)}{'.norm' if m.group(3) else ''}.{m.group(4)}", "fpn"
    m = _FPN_OUT.match(k)
    if m:
        return f"fpn_output{m.group(1)}{'.norm' if m.group(2) else ''}.{m.group(3)}", "fpn"
    for pattern, rename in _RETINANET:
        m = pattern.match(k)
        if m:
            return rename(m), "fpn" if k.startswith("fpn") else "retinanet head"
    family = "res stages" if re.match(r"^res\d", k) else "other"
    for fam, pat, rep in _FAMILY_RULES:
        new = re.sub(pat, rep, k)
        if new != k:
            k = new
            if family in ("other", "res stages") or fam == "stem":
                family = fam
    return k, family


PREDICTOR_BLOBS = {"cls_score_w", "cls_score_b", "bbox_pred_w", "bbox_pred_b", "mask_fcn_logits_w", "mask_fcn_logits_b"}


# --------------------------------------------------------------------------------------------
# The checkpoint's cfg, and the RPN's anchor rows
# --------------------------------------------------------------------------------------------
_CFG_KEY = re.compile(r"^(\s*)(-\s+)?([A-Za-z_][A-Za-z0-9_]*):(?:\s+(.*))?$")
_CFG_ITEM = re.compile(r"^(\s*)-\s+(.*)$")
_CFG_MAX_CHARS = 1_000_000


def _cfg_scalar(text: str) -> Any:
    t = text.strip().strip("'\"")
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def _cfg_value(text: str, anchors: Dict[str, Any]) -> Tuple[Any, Optional[str], bool]:
    """(value, anchor it defines, True when a block sequence follows) of one YAML value as ``yaml.dump`` writes it."""
    t = text.strip()
    anchor = None
    m = re.match(r"^&(\S+)\s*(.*)$", t)
    if m:
        anchor, t = m.group(1), m.group(2).strip()
    if t.startswith("*"):
        return anchors.get(t[1:].strip()), anchor, False
    t = re.sub(r"^!!python/(tuple|list)\s*", "", t)
    t = re.sub(r"^!!\S+\s*", "", t)
    if t == "":
        return [], anchor, True
    if (t.startswith("[") and t.endswith("]")) or (t.startswith("(") and t.endswith(")")):
        inner = t[1:-1].strip()
        return ([_cfg_scalar(v) for v in inner.split(",")] if inner else []), anchor, False
    return _cfg_scalar(t), anchor, False


def _split_flow(text: str) -> List[str]:
    """Split a YAML flow collection's items at the commas that are not inside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in parts + [cur] if p.strip()]


def _cfg_key_line(line: str, stack: List[Tuple[int, str]], out: Dict[str, Any],
                  anchors: Dict[str, Any]) -> Optional[Tuple[str, int, Optional[str]]]:
    """Read one ``KEY: value`` line into ``out``; returns (path, indent, anchor) when a block sequence follows."""
    m = _CFG_KEY.match(line)
    if not m or m.group(2):
        return None
    indent, key, rest = len(m.group(1)), m.group(3), (m.group(4) or "").strip()
    while stack and stack[-1][0] >= indent:
        stack.pop()
    if not key[0].isupper():  # dictitems:, state:, __immutable__: ... are structure, not part of the path
        if key == "dictitems" and rest.startswith("{") and rest.endswith("}"):  # a flow mapping of scalar items
            prefix = ".".join(k for _, k in stack if k)
            for part in _split_flow(rest[1:-1]):
                k, _, v = part.partition(":")
                if k.strip() and k.strip()[0].isupper():
                    out[f"{prefix}.{k.strip()}" if prefix else k.strip()] = _cfg_value(v, anchors)[0]
        stack.append((indent, ""))
        return None
    path = ".".join([k for _, k in stack if k] + [key])
    if rest == "" or re.sub(r"^&\S+\s*", "", rest).startswith("!!python/object"):
        stack.append((indent, key))  # a nested mapping follows
        return None
    value, anchor, block = _cfg_value(rest, anchors)
    out[path] = value
    if block:
        return path, indent, anchor
    if anchor:
        anchors[anchor] = value
    return None


def _cfg_from_text(text: str) -> Dict[str, Any]:
    """Dotted key -> value for the mappings and scalar sequences of a YAML text as Detectron's cfg dump has them.

    Detectron's ``save_model_to_weights_file`` stores ``yaml.dump(cfg)``: nested ``AttrDict`` s written as
    ``!!python/object/new:...AttrDict`` with their items under ``dictitems:``, tuples as ``!!python/tuple`` (block or
    flow style), shared tuples as anchors and aliases (``&id001`` / ``*id001``). Only the text is read: no tag is
    constructed and nothing is run. Lower-case keys (``dictitems``, ``state``) are structure and not part of the path.
    """
    out: Dict[str, Any] = {}
    anchors: Dict[str, Any] = {}
    stack: List[Tuple[int, str]] = []
    seq: Optional[Tuple[str, int, Optional[str]]] = None  # a key collecting a block sequence: path, indent, anchor
    for line in text[:_CFG_MAX_CHARS].splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        item = _CFG_ITEM.match(line)
        if seq is not None:
            if item and len(item.group(1)) >= seq[1] and not _CFG_KEY.match(line):
                out[seq[0]].append(_cfg_scalar(item.group(2)))
                continue
            if seq[2]:
                anchors[seq[2]] = out[seq[0]]
        seq = _cfg_key_line(line, stack, out, anchors)
    if seq is not None and seq[2]:
        anchors[seq[2]] = out[seq[0]]
    return out


def _flatten(d: Mapping, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, (tuple, list)) else v
    return out


def detectron_cfg_values(cfg: Any) -> Dict[str, Any]:
    """A Detectron checkpoint's ``cfg`` as dotted keys (``"RPN.SIZES": [32, 64, ...]``); {} when there is none.

    ``cfg`` is what a Detectron ``.pkl`` stores next to its ``blobs`` (``detectron/utils/net.py:
    save_model_to_weights_file`` saves ``dict(blobs=blobs, cfg=yaml.dump(cfg))``), i.e. the YAML text, or an
    already parsed dict. The text is read as text (see :func:`_cfg_from_text`): keys with scalar or sequence
    values, such as ``RPN.SIZES``, ``RPN.ASPECT_RATIOS``, ``FPN.FPN_ON``, ``MODEL.NUM_CLASSES``.
    """
    if isinstance(cfg, bytes):
        cfg = cfg.decode("latin1")
    if isinstance(cfg, str):
        return _cfg_from_text(cfg)
    if isinstance(cfg, Mapping):
        return _flatten(cfg)
    return {}


def _rpn_layout(n_anchors: int, fpn: bool, rpn_anchors: Optional[Tuple[int, int]], rpn_anchors_source: str, cfg: Any,
                assumed_ratios: str, fpn_source: str) -> Tuple[int, int, str]:
    """(n_sizes, n_ratios, where that came from) for an RPN head with ``n_anchors`` rows per location."""
    if rpn_anchors is not None:
        try:
            n_s, n_r = (int(v) for v in rpn_anchors)
        except (TypeError, ValueError):
            raise ValueError(f"rpn_anchors must be (number of sizes, number of aspect ratios), got {rpn_anchors!r}") from None
        source = rpn_anchors_source
    elif fpn:
        return 1, n_anchors, fpn_source
    else:
        values = detectron_cfg_values(cfg)
        sizes, ratios = values.get("RPN.SIZES"), values.get("RPN.ASPECT_RATIOS")
        if values.get("FPN.FPN_ON") is True:
            return 1, n_anchors, "the checkpoint's cfg (FPN.FPN_ON: one size per level)"
        if isinstance(sizes, list) and isinstance(ratios, list) and sizes and ratios:
            n_s, n_r = len(sizes), len(ratios)
            source = f"the checkpoint's cfg (RPN.SIZES {sizes}, RPN.ASPECT_RATIOS {ratios})"
        elif n_anchors % 3 == 0:
            n_s, n_r = n_anchors // 3, 3
            source = (f"assumed: no cfg in the checkpoint and no rpn_anchors argument, so 3 ratios as {assumed_ratios} "
                      f"({n_anchors} rows = {n_anchors // 3} sizes x 3 ratios)")
        else:
            raise ValueError(f"the RPN has {n_anchors} anchors per location and neither the checkpoint's cfg nor an argument "
                             "says how many sizes and aspect ratios they are: pass rpn_anchors=(sizes, ratios), or turn the "
                             "reorder off (reorder_anchors=False, --no-reorder-anchors)")
    if n_s < 1 or n_r < 1 or n_s * n_r != n_anchors:
        raise ValueError(f"the RPN predicts {n_anchors} anchors per location, but {source} gives {n_s} sizes x {n_r} ratios "
                         f"= {n_s * n_r}")
    return n_s, n_r, source


def reorder_rpn_anchor_rows(tensors: Mapping[str, torch.Tensor], objectness: Tuple[str, str], deltas: Tuple[str, str], *,
                            reorder: bool = True, fpn: bool = False, rpn_anchors: Optional[Tuple[int, int]] = None,
                            rpn_anchors_source: str = "argument rpn_anchors", cfg: Any = None,
                            assumed_ratios: str = "Detectron's default RPN.ASPECT_RATIOS (0.5, 1, 2)",
                            fpn_source: str = "blob names (FPN: one size per level, so the two orders coincide)"
                            ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The RPN predictors' rows moved from ratio-major (Detectron, maskrcnn-benchmark) to size-major (Detectron2).

    ``objectness`` and ``deltas`` name the (weight, bias) of the two 1 x 1 convolutions in ``tensors``. The number of
    sizes and ratios comes from ``rpn_anchors`` = (sizes, ratios) if given (``rpn_anchors_source`` names where they
    were read), else from ``fpn`` (one size per level: nothing moves), else from ``cfg`` (``RPN.SIZES``,
    ``RPN.ASPECT_RATIOS``, ``FPN.FPN_ON``; see :func:`detectron_cfg_values`), else 3 ratios are assumed
    (``assumed_ratios`` says why) when the row count allows it, and a ``ValueError`` says what to pass when not.
    Returns the moved tensors (by name; empty when the checkpoint has no such RPN) and a report: ``anchors``
    (rows per location), ``sizes``, ``ratios``, ``source``, ``permutation`` (Detectron2 row k takes row
    ``permutation[k]``), ``rows_moved`` and ``reordered``.
    """
    names = [*objectness, *deltas]
    if not all(n in tensors for n in names):
        return {}, {"anchors": 0, "reordered": False, "source": "no RPN predictor in the checkpoint", "permutation": [],
                    "rows_moved": 0}
    ow, ob, dw, db = (tensors[n] for n in names)
    a = ow.shape[0]
    if ob.shape != (a,) or dw.shape[0] != 4 * a or db.shape != (4 * a,):
        raise ValueError(f"the RPN predictors do not fit one another: {objectness[0]} {tuple(ow.shape)}, {objectness[1]} "
                         f"{tuple(ob.shape)}, {deltas[0]} {tuple(dw.shape)}, {deltas[1]} {tuple(db.shape)} (expected A, A, 4A, 4A rows)")
    report: Dict[str, Any] = {"anchors": a, "reordered": False}
    if not reorder:
        report.update(source="turned off (reorder_anchors=False)", permutation=list(range(a)), rows_moved=0)
        return {}, report
    n_s, n_r, source = _rpn_layout(a, fpn, rpn_anchors, rpn_anchors_source, cfg, assumed_ratios, fpn_source)
    perm = A.anchor_order_permutation(n_s, n_r, "ratio_major", "size_major")
    moved = int((perm != torch.arange(a)).sum())
    report.update(sizes=n_s, ratios=n_r, source=source, permutation=perm.tolist(), rows_moved=moved, reordered=moved > 0)
    if not moved:
        return {}, report
    out = {objectness[0]: A.permute_anchor_rows(ow, n_s, n_r, "ratio_major", "size_major"),
           objectness[1]: A.permute_anchor_rows(ob, n_s, n_r, "ratio_major", "size_major"),
           deltas[0]: A.permute_anchor_rows(dw, n_s, n_r, "ratio_major", "size_major", per_anchor=4),
           deltas[1]: A.permute_anchor_rows(db, n_s, n_r, "ratio_major", "size_major", per_anchor=4)}
    return out, report


def predictor_report(pred: Dict[str, torch.Tensor], conv: Dict[str, torch.Tensor]) -> List[Tuple[str, str, str]]:
    rows = [("cls_score", f"{tuple(pred['cls_score_w'].shape)} -> {tuple(conv['cls_score.weight'].shape)}", "background row moved last"),
            ("bbox_pred", f"{tuple(pred['bbox_pred_w'].shape)} -> {tuple(conv['bbox_pred.weight'].shape)}", "4 background rows dropped")]
    if "mask_fcn_logits_w" in pred:
        agnostic = pred["mask_fcn_logits_w"].shape[0] == 1
        rows.append(("mask_fcn_logits", f"{tuple(pred['mask_fcn_logits_w'].shape)} -> "
                     f"{tuple(conv['mask_head.predictor.weight'].shape)}",
                     "class-agnostic: kept, load with MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True (Detectron2's own loader "
                     "cuts it to 0 channels, skips it with a warning and leaves the predictor random)" if agnostic
                     else "background channel dropped"))
    return rows


def convert_detectron_to_detectron2(blobs: Mapping[str, Any], *, reorder_anchors: bool = True,
                                    rpn_anchors: Optional[Tuple[int, int]] = None, cfg: Any = None
                                    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Detectron blobs -> (Detectron2 state dict, report).

    Names follow Detectron2's loader (``c2_model_loading.py:convert_c2_detectron_names``): backbone, FPN, RPN, box,
    mask, keypoint and DensePose heads; beyond it, RetinaNet's ``retnet_*`` blobs and extra levels ``fpn_6``,
    ``fpn_7`` become ``head.cls_subnet.*``, ``head.bbox_subnet.*``, ``head.cls_score.*``, ``head.bbox_pred.*`` and
    ``top_block.p6.*``, ``p7.*`` (Detectron2's loader has no rule for them, so it loads none of them). The predictors change layout as that loader does (background last, background
    box rows and mask channel dropped; see :mod:`explainer.labels`). Keypoint heads are only renamed (they have no
    background channel); Detectron's fixed bilinear upsampling ``kps_score`` becomes ``roi_heads.keypoint_head.score.*``,
    which Detectron2's head does not have (it upsamples with ``interpolate``), so Detectron2 reports it as unused.

    One step goes beyond Detectron2's loader, which never touches the RPN's tensors: with ``reorder_anchors`` (the
    default) the rows of ``rpn_cls_logits`` and ``rpn_bbox_pred`` move from Detectron's ratio-major anchor order to
    Detectron2's size-major one (:func:`reorder_rpn_anchor_rows`). It matters when a level has several sizes (C4:
    Detectron's C4 configs set 5 sizes x 3 ratios = 15 anchors); the shapes match either way, so without it the
    model loads silently with 12 of 15 anchors predicted by another anchor's rows. The numbers of sizes and ratios
    come from ``rpn_anchors`` = (sizes, ratios), else from the blob names (FPN: one size per level, nothing moves),
    else from the checkpoint's ``cfg`` (pass ``Checkpoint.extra["cfg"]``), else 3 ratios are assumed (Detectron's
    default ``RPN.ASPECT_RATIOS``, which none of its configs changes); the report says which.

    The report lists ``renamed`` (old, new, family, shape), ``predictor`` (what the class-order conversion did),
    ``rpn_anchors`` (the reorder: see :func:`reorder_rpn_anchor_rows`), ``ignored`` (blob, reason) and ``counts``.
    Optimizer state (``*_momentum``) is left out, as Detectron2's loader does; a blob that no rule maps is kept under
    its dotted name and listed as ``unmapped``.
    """
    if not isinstance(blobs, Mapping):
        raise ValueError(f"blobs must be a dict of name -> array, got {type(blobs).__name__}")
    if not isinstance(reorder_anchors, bool):
        raise ValueError(f"reorder_anchors must be True or False, got {reorder_anchors!r}")
    tensors = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))) for k, v in blobs.items()
               if isinstance(v, (np.ndarray, torch.Tensor))}
    report: Dict[str, Any] = {"renamed": [], "predictor": [], "ignored": [], "unmapped": []}
    for k, v in blobs.items():
        if not isinstance(v, (np.ndarray, torch.Tensor)):
            report["ignored"].append((k, f"not an array ({type(v).__name__}): bookkeeping, not a parameter"))
    fpn = "rpn_cls_logits_fpn2_w" in tensors
    suffix = "_fpn2" if fpn else ""
    moved, report["rpn_anchors"] = reorder_rpn_anchor_rows(
        tensors, (f"rpn_cls_logits{suffix}_w", f"rpn_cls_logits{suffix}_b"), (f"rpn_bbox_pred{suffix}_w", f"rpn_bbox_pred{suffix}_b"),
        reorder=reorder_anchors, fpn=fpn, rpn_anchors=rpn_anchors, cfg=cfg)
    tensors.update(moved)
    out: Dict[str, torch.Tensor] = {}
    pred = {k: tensors[k] for k in PREDICTOR_BLOBS if k in tensors}
    if pred:
        conv = L.convert_box_predictor(pred)
        out.update(conv)
        report["predictor"] = predictor_report(pred, conv)
        report["K"] = pred["cls_score_w"].shape[0] - 1 if "cls_score_w" in pred else None
    momentum = "optimizer state (SGD momentum): Detectron2's loader drops *_momentum"
    rename_into(out, report, {k: v for k, v in tensors.items() if k not in PREDICTOR_BLOBS}, detectron_to_detectron2_name,
                 lambda k: momentum if k.endswith("_momentum") else "", "blobs", n_in=len(tensors))
    return out, report


def rename_into(out: Dict[str, torch.Tensor], report: Dict[str, Any], tensors: Mapping[str, torch.Tensor],
                 rename: Any, ignore: Any, what: str, n_in: int) -> None:
    """Put every tensor into ``out`` under ``rename(name)[0]`` (or list it as ignored when ``ignore(name)`` gives a
    reason), recording ``renamed``, ``unmapped`` (family "other") and the ``counts`` (``n_in`` tensors read) in
    ``report``."""
    for k in sorted(tensors):
        why = ignore(k)
        if why:
            report["ignored"].append((k, why))
            continue
        new, family = rename(k)
        if new in out:
            raise ValueError(f"{what} {k!r} and another one both map to {new!r}")
        out[new] = tensors[k]
        if family == "other":
            report["unmapped"].append((k, new))
        report["renamed"].append((k, new, family, tuple(tensors[k].shape)))
    report["counts"] = {"tensors in": n_in, "tensors out": len(out),
                        "ignored": len(report["ignored"]), "parameters out": int(sum(t.numel() for t in out.values()))}


def convert_detectron2_to_detectron_predictor(state_dict: Mapping[str, torch.Tensor], bg_box_rows: str = "copy") -> Dict[str, torch.Tensor]:
    """The reverse direction for the predictors: Detectron2 names (any prefix) -> Detectron blobs, background first."""
    def find(suffix):
        hits = [k for k in state_dict if k == suffix or k.endswith("." + suffix)]
        if not hits:
            raise ValueError(f"state_dict has no '{suffix}'")
        return state_dict[hits[0]]

    params = {s: find(s) for s in ("cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias")}
    try:
        params["mask_head.predictor.weight"] = find("mask_head.predictor.weight")
        params["mask_head.predictor.bias"] = find("mask_head.predictor.bias")
    except ValueError:
        pass
    return L.convert_box_predictor(params, background_first=True, bg_box_rows=bg_box_rows)
