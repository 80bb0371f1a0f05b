"""Checkpoints: load Detectron and Detectron2 weights without running untrusted code, convert, and audit.

* :func:`load_checkpoint` reads a Detectron ``.pkl`` (a pickled dict, often ``{"blobs": {...}}``, written by
  Python 2's ``cPickle`` at protocol 2 and read back with ``encoding="latin1"``, as ``save_object`` and
  ``load_object`` in Detectron's ``detectron/utils/io.py`` do), a Detectron2 ``.pkl``
  (``{"model": {...}, "__author__": ...}``) and a torch ``.pth``: a zip archive, or torch.save's legacy format
  (before torch 1.6, as maskrcnn-benchmark's released checkpoints are). Pickles are read by
  :class:`RestrictedUnpickler` (:mod:`explainer.checkpoints.safe_load`), which builds only containers, numbers, strings and
  numeric numpy arrays: any other global (a ``__reduce__`` payload, an unknown class) is refused by name before
  anything of it runs. A ``.pth``'s members and its ``data.pkl`` (a legacy file's pickles and the storages
  that follow them) are checked the same way before
  ``torch.load(..., weights_only=True)`` reads it. Every size a file declares is checked before anything is
  allocated, within the limits of :class:`Limits` (defaults: files up to ``MAX_FILE_BYTES`` = 8 GiB, one array
  up to ``MAX_ARRAY_BYTES`` = 4 GiB, all arrays up to ``MAX_TOTAL_BYTES`` = 8 GiB and at most ``EXPANSION`` = 4
  times the file's size, ``MAX_OPS`` = 2 million pickle operations, ``MAX_DEPTH`` = 100 nesting levels,
  ``MAX_EXPANDED`` = 10 million items reached when walking the result with shared references counted each
  time; the full list is in :mod:`explainer.checkpoints.safe_load`). Each refusal is one short ``ValueError`` naming the
  file, what was wrong and what to do.
* :func:`convert_detectron_to_detectron2` (in :mod:`explainer.checkpoints.conversion`, reachable here too) renames blobs to the names Detectron2's loader produces
  (``detectron2/checkpoint/c2_model_loading.py``), converts the predictors (background last, background box rows
  and mask channel dropped; see :mod:`explainer.labels`), moves the RPN's rows from Detectron's ratio-major anchor
  order to Detectron2's size-major one (which Detectron2's loader does not do; :func:`reorder_rpn_anchor_rows`) and
  reports every blob it left out and why. :func:`convert_checkpoint` also takes maskrcnn-benchmark state dicts
  (:mod:`explainer.checkpoints.maskrcnn_benchmark`).
* :func:`audit` compares a state dict with what a model expects (a dict of shapes, an ``nn.Module`` or a JSON
  file), matching names by suffix as Detectron2's ``align_and_update_state_dicts`` does, and explains each
  finding (``NUM_CLASSES`` counted with or without background, class-agnostic heads, renamed layers), and warns
  where shapes cannot tell (an RPN with more than 3 anchors per location, whose rows may be in either order).
* :func:`save_checkpoint` writes atomically (a temporary file, then a rename) with the permissions a plain
  ``open()`` would give; :func:`exit_on_sigterm` lets a command line turn SIGTERM into a clean exit that removes
  the temporary file.

Command line: ``python -m explainer convert IN OUT [--force] [--no-reorder-anchors]`` and ``python -m explainer audit
CKPT --expected SPEC``.
Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import signal
import stat
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from explainer import _validate as _v
from explainer import anchors as A
from explainer._files import atomic_output
from explainer.checkpoints.conversion import (  # noqa: F401  (the conversion functions, also reachable here as before)
    C4_RPN_RATIOS,
    C4_RPN_SIZES,
    C4_RPN_STRIDE,
    PREDICTOR_BLOBS,
    convert_detectron2_to_detectron_predictor,
    convert_detectron_to_detectron2,
    detectron_cfg_values,
    detectron_to_detectron2_name,
    reorder_rpn_anchor_rows,
)
from explainer.checkpoints.maskrcnn_benchmark import (
    convert_maskrcnn_benchmark_to_detectron2,
    is_maskrcnn_benchmark_state_dict,
)
from explainer.checkpoints.safe_load import (
    DEFAULT_LIMITS,
    NOTHING_RAN,
    TORCH_LEGACY_MAGIC,
    Limits,
    Refused,
    RestrictedUnpickler,
    check_structure,
    load_torch_legacy,
    load_torch_zip,
    open_untrusted,
    short_repr,
)
from explainer.checkpoints.torchvision_detection import (
    convert_detectron2_to_torchvision,
    convert_torchvision_to_detectron2,
    is_torchvision_state_dict,
)

__all__ = [
    "RestrictedUnpickler",
    "Limits",
    "DEFAULT_LIMITS",
    "Checkpoint",
    "load_checkpoint",
    "detectron_to_detectron2_name",
    "convert_detectron_to_detectron2",
    "convert_checkpoint",
    "detectron_cfg_values",
    "reorder_rpn_anchor_rows",
    "convert_detectron2_to_detectron_predictor",
    "convert_torchvision_to_detectron2",
    "convert_detectron2_to_torchvision",
    "is_torchvision_state_dict",
    "audit",
    "synthetic_detectron_checkpoint",
    "example_c4_checkpoint",
    "detectron2_expected_shapes",
    "save_checkpoint",
    "exit_on_sigterm",
    "write_detectron_pickle",
    "C4_RPN_SIZES",
    "C4_RPN_RATIOS",
    "C4_RPN_STRIDE",
]


# --------------------------------------------------------------------------------------------
# Safe loading
# --------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A loaded checkpoint: a flat name -> tensor dict, the format recognised, and what else the file held."""

    tensors: Dict[str, torch.Tensor]
    format: str
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def n_parameters(self) -> int:
        return sum(int(t.numel()) for t in self.tensors.values())


_DETECTRON_NAME = re.compile(r"^(conv1|res\d|res_conv1|fpn_|conv_rpn|rpn_|fc\d|cls_score|bbox_pred|mask_fcn|_\[mask\]|conv5_mask|kps_|conv_fcn|head_conv)")


def _array_to_tensor(a: np.ndarray, where: str) -> torch.Tensor:
    """A numeric array as a tensor of the same shape (0-d stays 0-d), native byte order, contiguous, writable."""
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if not (a.flags.c_contiguous and a.flags.writeable):
        a = np.array(a, order="C", copy=True)
    try:
        return torch.from_numpy(a)
    except TypeError:
        raise ValueError(f"{where}: an array of dtype {a.dtype}, which torch cannot hold") from None


def _to_tensors(d: Mapping, where: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Split a mapping into name -> tensor (numeric arrays and tensors) and everything else."""
    tensors: Dict[str, torch.Tensor] = {}
    other: Dict[str, Any] = {}
    for k, v in d.items():
        if not isinstance(k, str):
            raise ValueError(f"{where}: keys must be parameter names (strings), found {type(k).__name__} {short_repr(k)}")
        if isinstance(v, np.ndarray) and v.dtype.kind in "biufc":
            tensors[k] = _array_to_tensor(v, f"{where} {short_repr(k)}")
        elif isinstance(v, torch.Tensor):
            tensors[k] = v
        else:
            other[k] = v
    return tensors, other


def _read_object(p: Path, limits: Limits) -> Tuple[Any, str]:
    """The file's top-level object and the container format ("pkl" or "pth")."""
    with open_untrusted(p, limits) as (f, size):
        head = f.read(512)
        f.seek(0)
        if head[:4] == b"PK\x03\x04":
            return load_torch_zip(f, size, limits), "pth"
        if head.startswith(TORCH_LEGACY_MAGIC):
            return load_torch_legacy(f, size, limits), "pth"
        if head[257:262] == b"ustar":
            raise Refused("written by torch.save in its tar format (torch before 0.4), which is not read here: "
                          "save it again with a newer torch.save where it was made")
        obj = RestrictedUnpickler(f, size=size, limits=limits).load()
    check_structure(obj, limits)
    return obj, "pkl"


def _as_checkpoint(obj: Any, p: Path, fmt_prefix: str) -> Checkpoint:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{p}: expected a dict of parameters, found a {type(obj).__name__}")
    if "blobs" in obj and isinstance(obj["blobs"], Mapping):
        tensors, other = _to_tensors(obj["blobs"], f"{p} blobs")
        extra = {k: v for k, v in obj.items() if k != "blobs"}
        extra.update({f"blobs.{k}": v for k, v in other.items()})
        fmt = "detectron"
    elif "model" in obj and isinstance(obj["model"], Mapping):
        tensors, other = _to_tensors(obj["model"], f"{p} model")
        extra = {k: v for k, v in obj.items() if k != "model"}
        fmt = "detectron2" if fmt_prefix == "pkl" or "__author__" in obj else "pth"
    else:
        tensors, other = _to_tensors(obj, str(p))
        extra = other
        if tensors and sum(bool(_DETECTRON_NAME.match(k)) for k in tensors) > len(tensors) / 2:
            fmt = "detectron"
        elif is_torchvision_state_dict(tensors):
            fmt = "torchvision"
        else:
            fmt = "state_dict"
    if not tensors:
        keys = sorted(short_repr(k, 40) for k in list(obj)[:10])
        raise ValueError(f"{p}: holds no arrays or tensors; keys found: {', '.join(keys)}{' ...' if len(obj) > 10 else ''}")
    return Checkpoint(tensors, f"{fmt} ({fmt_prefix})", extra)


def load_checkpoint(path: Union[str, os.PathLike], *, limits: Optional[Limits] = None) -> Checkpoint:
    """Read a Detectron ``.pkl``, a Detectron2 ``.pkl`` or a ``.pth`` into a :class:`Checkpoint`, safely.

    Raises one short ``ValueError`` naming the file and the problem: missing, unreadable, not a regular file
    (a directory, a FIFO, a device), larger than ``limits.max_file_bytes``, truncated or corrupted, a refused
    pickle global, a declared size the file does not back (see :class:`Limits`; ``limits`` defaults to
    ``DEFAULT_LIMITS``), or a structure that is not a checkpoint. Nothing in a refused file is run.
    """
    p = Path(path)
    lim = DEFAULT_LIMITS if limits is None else limits
    try:
        obj, fmt_prefix = _read_object(p, lim)
    except Refused as e:
        msg = str(e)
        if "truncated or corrupted" in msg and "fresh copy" not in msg:
            msg += "; get a fresh copy of the file"
        raise ValueError(f"{p}: {msg}") from None
    except MemoryError:
        raise ValueError(f"{p}: needs more memory than is available; free memory or load it on a larger machine") from None
    except RecursionError:
        raise ValueError(f"{p}: nested too deeply to read; {NOTHING_RAN}") from None
    except Exception as e:  # anything else a damaged file makes the readers raise
        raise ValueError(f"{p}: not a readable checkpoint (truncated or corrupted?): {type(e).__name__}: "
                         f"{short_repr(str(e), 120)[1:-1]}; get a fresh copy of the file") from None
    return _as_checkpoint(obj, p, fmt_prefix)


def convert_checkpoint(ck: Checkpoint, *, reorder_anchors: bool = True, rpn_anchors: Optional[Tuple[int, int]] = None
                       ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """A loaded Detectron, torchvision or maskrcnn-benchmark checkpoint -> (Detectron2 state dict, report, with
    ``source``).

    A Detectron file (``{"blobs": ..., "cfg": ...}``, or blob names) goes through
    :func:`convert_detectron_to_detectron2` with its ``cfg``; a torchvision detection model's state dict (its FPN's
    ``inner_blocks``, its ``box_predictor``, its RetinaNet head) through
    :func:`explainer.checkpoints.torchvision_detection.convert_torchvision_to_detectron2`; a state dict whose names
    are maskrcnn-benchmark's module
    paths (``backbone.body.``, ``rpn.head.``, ``roi_heads.box.``) through
    :func:`explainer.checkpoints.maskrcnn_benchmark.convert_maskrcnn_benchmark_to_detectron2`. Anything else (a Detectron2
    checkpoint, another state dict) raises a ``ValueError`` saying what was recognised.
    """
    if not isinstance(ck, Checkpoint):
        raise ValueError(f"ck must be a Checkpoint (from load_checkpoint), got {type(ck).__name__}")
    if ck.format.startswith("detectron "):
        sd, report = convert_detectron_to_detectron2(ck.tensors, reorder_anchors=reorder_anchors, rpn_anchors=rpn_anchors,
                                                     cfg=ck.extra.get("cfg"))
        report["source"] = "Detectron"
    elif is_torchvision_state_dict(ck.tensors):
        sd, report = convert_torchvision_to_detectron2(ck.tensors, reorder_anchors=reorder_anchors)
    elif is_maskrcnn_benchmark_state_dict(ck.tensors):
        sd, report = convert_maskrcnn_benchmark_to_detectron2(ck.tensors, reorder_anchors=reorder_anchors, rpn_anchors=rpn_anchors)
        report["source"] = "maskrcnn-benchmark"
    else:
        raise ValueError(f"recognised as {ck.format}, neither a Detectron checkpoint nor a torchvision or "
                         "maskrcnn-benchmark state dict; nothing to convert")
    return sd, report


# --------------------------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------------------------
def _expected_shapes(expected) -> Dict[str, Tuple[int, ...]]:
    if isinstance(expected, torch.nn.Module):
        return {k: tuple(v.shape) for k, v in expected.state_dict().items()}
    if isinstance(expected, (str, os.PathLike)):
        p = Path(expected)
        data = _v.read_json(p, "a JSON spec of parameter names and shapes")
        expected = data.get("shapes", data) if isinstance(data, dict) else data
    if not isinstance(expected, Mapping):
        raise ValueError("expected must be a dict of name -> shape, an nn.Module or a JSON file path")
    out = {}
    for k, v in expected.items():
        if isinstance(v, torch.Tensor):
            out[k] = tuple(v.shape)
        else:
            try:
                out[k] = tuple(_v.whole_number(x, f"expected[{k!r}]", 0) for x in v)
            except TypeError:
                raise ValueError(f"expected[{k!r}] must be a shape (list of ints) or a tensor, got {v!r}") from None
    return out


def _align(loaded: List[str], expected: List[str]) -> Dict[str, str]:
    """Match loaded names to expected names by the longest suffix at a '.' boundary (Detectron2's heuristic)."""
    match = {}
    taken = set()
    for e in sorted(expected, key=len, reverse=True):
        best = None
        for k in loaded:
            if (e == k or e.endswith("." + k)) and (best is None or len(k) > len(best)):
                best = k
        if best is not None and best not in taken:
            match[best] = e
            taken.add(best)
    return match


def _mask_cause(got: int, want: int) -> str:
    """Why a mask predictor with ``got`` channels does not fit one with ``want`` ("" when nothing specific)."""
    if got == 0:
        return ("0 channels: a class-agnostic (1-channel) Detectron mask head cut by the background-channel rule w[1:]; "
                "Detectron2 skips it with a warning and the predictor stays random: keep the channel "
                "(labels.convert_box_predictor does) and set MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True")
    if got == want + 1:
        return "mask predictor keeps its background channel (not converted)"
    if got == 1 or want == 1:
        return "class-agnostic against class-specific mask head (CLS_AGNOSTIC_MASK)"
    if abs(got - want) == 1:
        return "NUM_CLASSES off by one in the mask predictor"
    return ""


def _cause(name: str, got: Tuple[int, ...], want: Tuple[int, ...]) -> str:
    if "cls_score" in name and len(got) and len(want) and abs(got[0] - want[0]) == 1:
        return (f"NUM_CLASSES counted differently: {got[0]} rows against {want[0]} (K+1 rows expected; Detectron counts background "
                "in NUM_CLASSES, Detectron2 does not)")
    if "bbox_pred" in name and len(got) and len(want):
        g, w = got[0], want[0]
        if g == w + 4:
            return f"background box rows not dropped ({g} = 4(K+1) rows, Detectron2 wants 4K = {w})"
        if w == 4 and g % 4 == 0 and g > 4:
            return "class-specific box regression loaded into a class-agnostic head (CLS_AGNOSTIC_BBOX_REG)"
        if g == 4 and w > 4:
            return "class-agnostic box regression loaded into a class-specific head"
        if g % 4 == 0 and w % 4 == 0 and abs(g - w) == 4:
            return f"NUM_CLASSES off by one ({g // 4} classes against {w // 4})"
    if "predictor" in name and "mask" in name and len(got) and len(want):
        cause = _mask_cause(got[0], want[0])
        if cause:
            return cause
    if len(got) == len(want) and got[1:] == want[1:]:
        return "different number of output channels"
    return "different layer configuration"


def audit(state_dict: Mapping[str, Any], expected: Union[Mapping[str, Any], "torch.nn.Module", str, os.PathLike]) -> Dict[str, Any]:
    """Compare a state dict with what a model expects; every finding comes with its likely cause.

    Names are matched by suffix as Detectron2's loader does. Returns {"matched", "missing", "unexpected",
    "mismatched", "warnings", "ok"}: missing/unexpected are (name, shape, likely cause), mismatched (loaded name,
    expected name, loaded shape, expected shape, likely cause), and warnings (name, shape, what to check) for what
    loads but may be wrong: an RPN head with more than 3 anchors per location, whose rows may be in the other
    codebase's anchor order (see :func:`reorder_rpn_anchor_rows`). Warnings do not change ``ok``.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a dict of name -> tensor, got {type(state_dict).__name__}")
    got = {k: tuple(v.shape) for k, v in state_dict.items() if hasattr(v, "shape")}
    want = _expected_shapes(expected)
    match = _align(list(got), list(want))
    mismatched = [(k, e, got[k], want[e], _cause(e, got[k], want[e])) for k, e in sorted(match.items()) if got[k] != want[e]]
    missing_names = [e for e in want if e not in match.values()]
    unexpected_names = [k for k in got if k not in match]
    missing, unexpected = [], []
    for e in sorted(missing_names):
        cause = "not in the checkpoint"
        if e.endswith(("running_mean", "running_var")):
            cause = ("normalisation statistics: Detectron's AffineChannel stores only scale and bias; Detectron2's "
                     "FrozenBatchNorm2d fills mean 0 and variance 1 when they are absent (benign)")
        else:
            same_shape = [k for k in unexpected_names if got[k] == want[e]]
            suffix = e.split(".")[-1]
            similar = [k for k in same_shape if k.split(".")[-1] == suffix]
            if similar:
                cause = f"probably renamed between versions: the checkpoint has {similar[0]!r} with the same shape"
        missing.append((e, want[e], cause))
    for k in sorted(unexpected_names):
        cause = "the model has no such parameter"
        if k.endswith("_momentum") or "momentum" in k:
            cause = "optimizer state, not a parameter"
        unexpected.append((k, got[k], cause))
    benign = [m for m in missing if "benign" in m[2]]
    warnings = _rpn_order_warnings(got)
    torchvision_names = is_torchvision_state_dict(got) and not is_torchvision_state_dict(want)
    if torchvision_names:
        warnings.insert(0, ("(the state dict)", (), "a torchvision detection model's state dict, named by torchvision's "
                                                     "modules: convert it first (convert_torchvision_to_detectron2, or "
                                                     "`python -m explainer convert`), then audit the result"))
    return {"matched": len(match) - len(mismatched), "missing": missing, "unexpected": unexpected, "mismatched": mismatched,
            "warnings": warnings, "source": "torchvision" if is_torchvision_state_dict(got) else "",
            "ok": not mismatched and not unexpected and len(benign) == len(missing)}


_RPN_OBJECTNESS = ("objectness_logits.weight", "rpn_cls_logits_w", "rpn.head.cls_logits.weight")


def _rpn_order_warnings(got: Mapping[str, Tuple[int, ...]]) -> List[Tuple[str, Tuple[int, ...], str]]:
    """A warning per RPN objectness predictor whose rows could be in either anchor order (shapes cannot tell)."""
    out = []
    for k, shape in sorted(got.items()):
        if not k.endswith(_RPN_OBJECTNESS) and not re.search(r"rpn_cls_logits_fpn\d+_w$", k):
            continue
        a = shape[0] if shape else 0
        if a <= 3:
            continue
        example = ""
        if a % 3 == 0:
            moved = int((A.anchor_order_permutation(a // 3, 3, "ratio_major", "size_major") != torch.arange(a)).sum())
            example = f" (as {a // 3} sizes x 3 ratios, {moved} of {a} rows would sit on another anchor)"
        out.append((k, shape, f"{a} anchors per location: if they are several sizes x several aspect ratios, Detectron and "
                              "maskrcnn-benchmark order them ratio-major and Detectron2 size-major. The shapes match either "
                              f"way, so nothing here can tell whether the rows were reordered{example}. Detectron2's "
                              "convert_c2_detectron_names does not reorder them; explainer's converter does "
                              "(reorder_anchors=True, the default)."))
    return out


# --------------------------------------------------------------------------------------------
# A synthetic Detectron checkpoint (ResNet-50-FPN Mask R-CNN) and Detectron2's expected shapes
# --------------------------------------------------------------------------------------------
def _resnet_blobs(width: int) -> List[Tuple[str, Tuple[int, ...]]]:
    c = lambda n: max(1, n // width)  # noqa: E731
    out = [("conv1_w", (c(64), 3, 7, 7)), ("res_conv1_bn_s", (c(64),)), ("res_conv1_bn_b", (c(64),))]
    cin = c(64)
    for stage, (blocks, mid, cout) in zip(range(2, 6), ((3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048))):
        for b in range(blocks):
            pre = f"res{stage}_{b}"
            if b == 0:
                out += [(f"{pre}_branch1_w", (c(cout), cin, 1, 1)), (f"{pre}_branch1_bn_s", (c(cout),)), (f"{pre}_branch1_bn_b", (c(cout),))]
            for name, shape in (("branch2a", (c(mid), cin if b == 0 else c(cout), 1, 1)), ("branch2b", (c(mid), c(mid), 3, 3)),
                                ("branch2c", (c(cout), c(mid), 1, 1))):
                out += [(f"{pre}_{name}_w", shape), (f"{pre}_{name}_bn_s", (shape[0],)), (f"{pre}_{name}_bn_b", (shape[0],))]
            cin = c(cout)
    return out


def _fpn_maskrcnn_blobs(width: int, num_classes: int) -> List[Tuple[str, Tuple[int, ...]]]:
    c = lambda n: max(1, n // width)  # noqa: E731
    f = c(256)
    last = {2: "res2_2", 3: "res3_3", 4: "res4_5", 5: "res5_2"}
    cins = {2: c(256), 3: c(512), 4: c(1024), 5: c(2048)}
    out = []
    for lvl in (5, 4, 3, 2):
        inner = f"fpn_inner_{last[lvl]}_sum" + ("" if lvl == 5 else "_lateral")
        out += [(f"{inner}_w", (f, cins[lvl], 1, 1)), (f"{inner}_b", (f,))]
        out += [(f"fpn_{last[lvl]}_sum_w", (f, f, 3, 3)), (f"fpn_{last[lvl]}_sum_b", (f,))]
    out += [("conv_rpn_fpn2_w", (f, f, 3, 3)), ("conv_rpn_fpn2_b", (f,)), ("rpn_cls_logits_fpn2_w", (3, f, 1, 1)),
            ("rpn_cls_logits_fpn2_b", (3,)), ("rpn_bbox_pred_fpn2_w", (12, f, 1, 1)), ("rpn_bbox_pred_fpn2_b", (12,))]
    h = c(1024)
    out += [("fc6_w", (h, f * 7 * 7)), ("fc6_b", (h,)), ("fc7_w", (h, h)), ("fc7_b", (h,)),
            ("cls_score_w", (num_classes + 1, h)), ("cls_score_b", (num_classes + 1,)),
            ("bbox_pred_w", (4 * (num_classes + 1), h)), ("bbox_pred_b", (4 * (num_classes + 1),))]
    for i in range(1, 5):
        out += [(f"_[mask]_fcn{i}_w", (f, f, 3, 3)), (f"_[mask]_fcn{i}_b", (f,))]
    out += [("conv5_mask_w", (f, f, 2, 2)), ("conv5_mask_b", (f,)),
            ("mask_fcn_logits_w", (num_classes + 1, f, 1, 1)), ("mask_fcn_logits_b", (num_classes + 1,))]
    return out


#: Detectron's C4 configs (``configs/12_2017_baselines/*R-50-C4*``): ``RPN.SIZES: (32, 64, 128, 256, 512)`` with the
#: default ``RPN.ASPECT_RATIOS: (0.5, 1, 2)``, at ``RPN.STRIDE`` 16: 15 anchors per location.


def _c4_maskrcnn_blobs(width: int, num_classes: int) -> List[Tuple[str, Tuple[int, ...]]]:
    """RPN and heads of Detectron's ResNet-50-C4 Mask R-CNN: RPN on res4 (1024 channels), res5 as the RoI head."""
    c = lambda n: max(1, n // width)  # noqa: E731
    a = len(C4_RPN_SIZES) * len(C4_RPN_RATIOS)
    f4, f5, m = c(1024), c(2048), c(256)
    return [("conv_rpn_w", (f4, f4, 3, 3)), ("conv_rpn_b", (f4,)), ("rpn_cls_logits_w", (a, f4, 1, 1)), ("rpn_cls_logits_b", (a,)),
            ("rpn_bbox_pred_w", (4 * a, f4, 1, 1)), ("rpn_bbox_pred_b", (4 * a,)),
            ("cls_score_w", (num_classes + 1, f5)), ("cls_score_b", (num_classes + 1,)),
            ("bbox_pred_w", (4 * (num_classes + 1), f5)), ("bbox_pred_b", (4 * (num_classes + 1),)),
            ("conv5_mask_w", (f5, m, 2, 2)), ("conv5_mask_b", (m,)),
            ("mask_fcn_logits_w", (num_classes + 1, m, 1, 1)), ("mask_fcn_logits_b", (num_classes + 1,))]


def _synthetic_cfg(arch: str, num_classes: int) -> str:
    """A few keys of the cfg, as Detectron's ``yaml.dump(cfg)`` writes them (nested AttrDicts, flow-style tuples)."""
    tag = "!!python/object/new:detectron.utils.collections.AttrDict"
    fpn_on = "true" if arch == "fpn" else "false"
    sizes = ", ".join(f"{v:g}" for v in (C4_RPN_SIZES if arch == "c4" else (64, 128, 256, 512)))
    return "\n".join([
        tag, "dictitems:",
        f"  FPN: {tag}", "    dictitems:", f"      FPN_ON: {fpn_on}", "      RPN_ANCHOR_START_SIZE: 32",
        "      RPN_ASPECT_RATIOS: &id001 !!python/tuple [0.5, 1, 2]", "    state: {__immutable__: true}",
        f"  MODEL: {tag}", f"    dictitems: {{NUM_CLASSES: {num_classes + 1}, TYPE: generalized_rcnn}}",
        "    state: {__immutable__: true}",
        f"  RPN: {tag}", "    dictitems:", "      ASPECT_RATIOS: *id001", "      RPN_ON: true",
        f"      SIZES: !!python/tuple [{sizes}]", "      STRIDE: 16", "    state: {__immutable__: true}",
        "state: {__immutable__: true}", ""])


def example_c4_checkpoint(seed: int = 0) -> Dict[str, Any]:
    """The course's example of a converted model's source (chapters 3 and 9): a small Detectron R-50-C4 Mask R-CNN
    checkpoint for COCO's 80 classes, as :func:`synthetic_detectron_checkpoint` builds it (15 anchors per location,
    so its RPN rows are reordered on conversion)."""
    return synthetic_detectron_checkpoint(num_classes=80, small=True, seed=seed, arch="c4")


def synthetic_detectron_checkpoint(num_classes: int = 80, small: bool = False, seed: int = 0, momentum: bool = True,
                                   arch: str = "fpn") -> Dict[str, Any]:
    """A Detectron-layout Mask R-CNN checkpoint ``{"blobs": {...}, "cfg": ...}`` built deterministically.

    ``arch="fpn"``: ResNet-50-FPN (about 44 M parameters for K = 80); ``arch="c4"``: ResNet-50-C4, whose RPN on res4
    has 5 sizes x 3 ratios = 15 anchors per location, as Detectron's C4 configs set. Realistic blob names and shapes
    (``small=True`` divides every width by 16 for fast tests), small random float32 values, a few ``*_momentum``
    optimizer blobs, and a ``cfg`` in the form Detectron stores (YAML text; only the keys the conversion reads).
    The C4 checkpoint's RPN predictors are :func:`explainer.anchors.object_answering_rpn`: for the feature ``e_0`` they
    answer as a trained RPN would an object of 96 x 192 pixels, so that what each anchor predicts can be read.
    Nothing is downloaded. ``num_classes`` is at most 10,000.
    """
    _v.one_of(arch, "arch", ("fpn", "c4"))
    num_classes, seed = _v.positive_int(num_classes, "num_classes", maximum=10_000), _v.seed(seed)
    small, momentum = _v.flag(small, "small"), _v.flag(momentum, "momentum")
    rng = np.random.default_rng(seed)
    width = 16 if small else 1
    blobs: Dict[str, Any] = {}
    heads = _fpn_maskrcnn_blobs(width, num_classes) if arch == "fpn" else _c4_maskrcnn_blobs(width, num_classes)
    for name, shape in _resnet_blobs(width) + heads:
        blobs[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.01)
    if arch == "c4":
        rpn = A.object_answering_rpn(blobs["rpn_cls_logits_w"].shape[1], C4_RPN_STRIDE, C4_RPN_SIZES, C4_RPN_RATIOS, seed=seed)
        for blob, key in (("rpn_cls_logits_w", "objectness_weight"), ("rpn_cls_logits_b", "objectness_bias"),
                          ("rpn_bbox_pred_w", "deltas_weight"), ("rpn_bbox_pred_b", "deltas_bias")):
            blobs[blob] = rpn[key].numpy()
    if momentum:
        for name in ("conv1_w", "fc6_b" if arch == "fpn" else "conv_rpn_b", "cls_score_w"):
            blobs[f"{name}_momentum"] = np.zeros_like(blobs[name])
    blobs["cls_score_b"][0] = 2.0  # a trained background prior
    return {"blobs": blobs, "cfg": _synthetic_cfg(arch, num_classes)}


def detectron2_expected_shapes(num_classes: int = 80, small: bool = False, arch: str = "fpn") -> Dict[str, Tuple[int, ...]]:
    """Parameter names and shapes of Detectron2's ResNet-50-FPN (or ``arch="c4"``: -C4) Mask R-CNN, as its model's
    state_dict names them.

    Built from the same layer list as :func:`synthetic_detectron_checkpoint`, named as in Detectron2's model
    (``backbone.bottom_up...`` with FPN, ``backbone...`` and ``roi_heads.res5...`` with C4, ``roi_heads.box_predictor...``),
    with FrozenBatchNorm statistics.
    """
    num_classes, small = _v.positive_int(num_classes, "num_classes", maximum=10_000), _v.flag(small, "small")
    _v.one_of(arch, "arch", ("fpn", "c4"))
    width = 16 if small else 1
    out: Dict[str, Tuple[int, ...]] = {}
    layers = _resnet_blobs(width) + (_fpn_maskrcnn_blobs(width, num_classes) if arch == "fpn" else _c4_maskrcnn_blobs(width, num_classes))
    for name, shape in layers:
        new, family = detectron_to_detectron2_name(name)
        if name in PREDICTOR_BLOBS:
            continue
        if family in ("stem", "res stages"):
            if arch == "c4" and new.startswith("res5."):
                new = "roi_heads." + new
            else:
                new = ("backbone.bottom_up." if arch == "fpn" else "backbone.") + new
            if new.endswith("norm.weight"):
                out[new.replace("norm.weight", "norm.running_mean")] = shape
                out[new.replace("norm.weight", "norm.running_var")] = shape
        elif family == "fpn":
            new = "backbone." + new
        elif family in ("box head", "mask head"):
            new = "roi_heads." + new
        out[new] = shape
    h = max(1, (1024 if arch == "fpn" else 2048) // width)
    f = max(1, 256 // width)
    out.update({"roi_heads.box_predictor.cls_score.weight": (num_classes + 1, h), "roi_heads.box_predictor.cls_score.bias": (num_classes + 1,),
                "roi_heads.box_predictor.bbox_pred.weight": (4 * num_classes, h), "roi_heads.box_predictor.bbox_pred.bias": (4 * num_classes,),
                "roi_heads.mask_head.predictor.weight": (num_classes, f, 1, 1), "roi_heads.mask_head.predictor.bias": (num_classes,)})
    return out


class _Py2PickleWriter:
    """Protocol 2 as Python 2's ``cPickle`` wrote Detectron's model files: names and array data as Python 2
    ``str`` (SHORT_BINSTRING/BINSTRING), arrays through ``numpy.core.multiarray._reconstruct`` + BUILD, every
    string and reused object memoised. Handles what a checkpoint holds: dicts, lists, tuples, strings, bytes,
    numbers, None, booleans and numeric numpy arrays."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.memo: Dict[Any, int] = {}

    def _put(self, key: Any) -> None:
        i = self.memo[key] = len(self.memo)
        self.f.write(pickle.BINPUT + bytes([i]) if i < 256 else pickle.LONG_BINPUT + struct.pack("<I", i))

    def _get_or_put(self, key: Any, write: Any) -> None:
        if key in self.memo:
            i = self.memo[key]
            self.f.write(pickle.BINGET + bytes([i]) if i < 256 else pickle.LONG_BINGET + struct.pack("<I", i))
        else:
            write()
            self._put(key)

    def _str(self, b: bytes) -> None:
        self.f.write(pickle.SHORT_BINSTRING + bytes([len(b)]) if len(b) < 256 else pickle.BINSTRING + struct.pack("<i", len(b)))
        self.f.write(b)
        self._put(("str", len(self.memo)))

    def _global(self, module: str, name: str) -> None:
        self._get_or_put(("global", module, name), lambda: self.f.write(pickle.GLOBAL + f"{module}\n{name}\n".encode()))

    def _array(self, a: np.ndarray) -> None:
        if a.dtype.kind not in "biufc":
            raise ValueError(f"write_detectron_pickle: arrays must be numeric, got dtype {a.dtype}")
        self._global("numpy.core.multiarray", "_reconstruct")
        self._global("numpy", "ndarray")
        self.f.write(pickle.BININT1 + b"\x00" + pickle.TUPLE1)
        self._str(b"b")
        self.f.write(pickle.TUPLE3)
        self._put(("args", len(self.memo)))
        self.f.write(pickle.REDUCE)
        self._put(("array", len(self.memo)))
        self.f.write(pickle.MARK + pickle.BININT1 + b"\x01")
        self.save(tuple(int(d) for d in a.shape))
        spec, order = f"{a.dtype.kind}{a.dtype.itemsize}", {"=": "<", "|": "|"}.get(a.dtype.byteorder, a.dtype.byteorder)

        def dtype() -> None:
            self._global("numpy", "dtype")
            self._str(spec.encode())
            self.f.write(pickle.BININT1 + b"\x00" + pickle.BININT1 + b"\x01" + pickle.TUPLE3 + pickle.REDUCE)
            self._put(("dtype-object", spec, order))
            self.f.write(pickle.MARK + pickle.BININT1 + b"\x03")
            self._str(order.encode())
            self.f.write(pickle.NONE * 3 + (pickle.BININT + struct.pack("<i", -1)) * 2 + pickle.BININT1 + b"\x00"
                         + pickle.TUPLE + pickle.BUILD)
        self._get_or_put(("dtype", spec, order), dtype)
        self.f.write(pickle.NEWFALSE)
        self._str(np.ascontiguousarray(a).tobytes() if a.ndim else a.tobytes())
        self.f.write(pickle.TUPLE)
        self._put(("state", len(self.memo)))  # cPickle memoises tuples too
        self.f.write(pickle.BUILD)

    def save(self, obj: Any) -> None:
        if obj is None or isinstance(obj, bool):
            self.f.write(pickle.NONE if obj is None else pickle.NEWTRUE if obj else pickle.NEWFALSE)
        elif isinstance(obj, int):
            self.f.write(pickle.BININT + struct.pack("<i", obj) if -2**31 <= obj < 2**31 else pickle.LONG1 + bytes([(obj.bit_length() + 8) // 8]) + obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True))
        elif isinstance(obj, float):
            self.f.write(pickle.BINFLOAT + struct.pack(">d", obj))
        elif isinstance(obj, (str, bytes)):
            self._str(obj.encode("latin1") if isinstance(obj, str) else obj)
        elif isinstance(obj, np.ndarray):
            self._array(obj)
        elif isinstance(obj, (list, tuple, dict)):
            self._container(obj)
        else:
            raise ValueError(f"write_detectron_pickle: cannot write a {type(obj).__name__}")

    def _container(self, obj: Union[list, tuple, dict]) -> None:
        if isinstance(obj, tuple):
            self.f.write(pickle.MARK)
            for x in obj:
                self.save(x)
            self.f.write(pickle.TUPLE)
            return
        self.f.write(pickle.EMPTY_DICT if isinstance(obj, dict) else pickle.EMPTY_LIST)
        self._put(("container", len(self.memo)))
        items: List[Any] = list(obj.items()) if isinstance(obj, dict) else list(obj)
        for start in range(0, len(items), 1000):  # cPickle's batch size
            self.f.write(pickle.MARK)
            for it in items[start:start + 1000]:
                for x in (it if isinstance(obj, dict) else (it,)):
                    self.save(x)
            self.f.write(pickle.SETITEMS if isinstance(obj, dict) else pickle.APPENDS)


def write_detectron_pickle(obj: Mapping[str, Any], path: Union[str, os.PathLike]) -> Path:
    """Write a dict (e.g. ``{"blobs": {...}}``) the way Detectron's Python 2 ``cPickle`` wrote model files.

    Protocol 2 with names and array buffers as Python 2 byte strings, so reading needs ``encoding="latin1"``
    exactly as a real Detectron ``.pkl`` does. Used for the synthetic checkpoint of the tests, the notebook and
    the benchmark. Written atomically like :func:`save_checkpoint` (an existing file is replaced).
    """
    p = Path(path)
    mode = _output_mode(p, force=True)
    with atomic_output(p, mode) as f:
        f.write(pickle.PROTO + b"\x02")
        _Py2PickleWriter(f).save(dict(obj))
        f.write(pickle.STOP)
    return p


# --------------------------------------------------------------------------------------------
# Writing, atomically
# --------------------------------------------------------------------------------------------
def _output_mode(p: Path, force: bool) -> Optional[int]:
    """Check the output path; the permission bits to give it (an overwritten file keeps its own), else None."""
    try:
        st: Optional[os.stat_result] = os.stat(p)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise ValueError(f"{p.parent}: is not a folder") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot be written: {e.strerror}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{p}: is a directory; give the path of a file ending in .pth or .pkl")
        if not force:
            raise FileExistsError(f"{p}: exists; pass --force to overwrite it")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{p}: exists and is not a regular file (a FIFO or a device?); choose another output path")
        return stat.S_IMODE(st.st_mode) & 0o777
    folder = p.parent
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: is not a folder")
    return None


def save_checkpoint(state_dict: Mapping[str, torch.Tensor], path: Union[str, os.PathLike], force: bool = False,
                    meta: Optional[Dict[str, Any]] = None) -> Path:
    """Write a Detectron2 checkpoint atomically (a temporary file in the same folder, then a rename).

    ``.pth``: ``torch.save({"model": state_dict, ...})``; ``.pkl``: Detectron2's pickle layout with numpy arrays
    (``{"model": {...}, "__author__": ...}``). The new file gets the permissions ``open()`` would give it
    (``0o666`` less the umask; an overwritten file keeps its own). An existing file is refused with
    ``FileExistsError`` unless ``force``; a directory, a missing or unwritable folder, or a failed write raise
    ``ValueError``. The temporary file is removed on any exception, KeyboardInterrupt included, and on SIGTERM
    when the caller runs inside :func:`exit_on_sigterm`.
    """
    p = Path(path)
    if p.suffix not in (".pth", ".pkl"):
        raise ValueError(f"{p}: the output must end in .pth or .pkl")
    mode = _output_mode(p, force)
    meta = dict(meta or {})
    with atomic_output(p, mode) as f:
        if p.suffix == ".pth":
            torch.save({"model": dict(state_dict), **meta}, f)
        else:
            pickle.dump({"model": {k: v.detach().cpu().numpy() for k, v in state_dict.items()}, "__author__": "explainer",
                         "matching_heuristics": True, **meta}, f, protocol=4)
    return p


@contextlib.contextmanager
def exit_on_sigterm(code: int = 128 + signal.SIGTERM) -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(code)`` (143 by default, the shell's 128 + 15), so that
    ``finally`` clauses run -- :func:`save_checkpoint` removes its temporary file -- and the process exits with
    ``code``. Further SIGTERMs are ignored while that cleanup runs; the previous handler is restored when the
    block ends. In a thread other than the main one (where Python cannot install signal handlers) it does
    nothing. Library functions never install it themselves: the command line wraps its work in it::

        with exit_on_sigterm():
            save_checkpoint(sd, out)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(code)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
