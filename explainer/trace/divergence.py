"""Find the first layer where two runs of a network diverge, and say why.

Two runs of "the same" network (PyTorch against ONNX Runtime, Detectron against Detectron2, a model before and
after conversion) are dumped stage by stage, and :func:`compare` walks the reference's stages in order:

* :func:`record` taps named intermediate outputs of a ``torch.nn.Module`` with forward hooks (this and the next
  two live in :mod:`explainer.trace.capture`);
* :func:`onnx_intermediates` runs an ONNX model in ONNX Runtime with chosen intermediate values exposed as
  extra graph outputs of a copy of the whole model (the user's file is never written);
* :func:`onnx_module_outputs` finds, in a model exported by ``torch.onnx.export``'s TorchScript route, the
  value each module produced (its node names carry the module path), so stages pair up by name;
* :func:`compare` pairs the stages, measures every value (max and mean absolute error, relative error,
  cosine similarity, pass/fail against ``|c - r| <= atol + rtol |r|``, the rule of ``numpy.allclose``), names
  the **first divergence** and fits a cause to each failing stage from the vocabulary
  :data:`explainer.trace.causes.CAUSES` (each with its meaning, fingerprint and fix, in the form of
  :data:`explainer.diagnosis.CAUSES`). Stages after a divergence whose difference has no cause of its own, or
  the same one, are reported as ``inherited``.

From the command line, :func:`trace_command` compares two saved dumps (``.npz``, or a ``.pt`` file holding a
dict of tensors, loaded with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from explainer._bounds import DUMP_EXPANSION, MAX_ERROR_CHARS, NOTHING_RAN, Limits, Refused, open_untrusted, short_repr
from explainer._json import jsonable
from explainer._text import printable as _printable
from explainer._threads import single_thread
from explainer._validate import WrongType, read_json
from explainer.checkpoints.safe_load import (
    TORCH_LEGACY_MAGIC,
    TorchPickleScan,
    check_npz,
    load_torch_legacy,
    load_torch_zip,
)
from explainer.diagnosis.causes import Cause
from explainer.trace import causes as TC
from explainer.trace.capture import Recording, onnx_intermediates, onnx_module_outputs, onnx_scopes, record
from explainer.trace.causes import CAUSES

__all__ = [
    "CAUSES", "ATOL", "RTOL", "NOISE", "record", "Recording", "onnx_intermediates", "onnx_module_outputs", "onnx_scopes",
    "onnx_names", "scope_pairs", "compare", "StageComparison", "TraceReport", "load_dump", "trace_command",
    "single_thread",
]

#: Default tolerance: a value passes when |candidate - reference| <= ATOL + RTOL |reference|.
ATOL, RTOL = 1e-4, 1e-3
#: ... or when the stage's relative error ||c - r|| / ||r|| is at most NOISE: float32 rounding in sums of large
#: terms (a convolution of a real network) gives values near zero an error far above atol + rtol |value|.
NOISE = 1e-5
#: Values are measured in chunks of this many (the chunk stays in the processor's cache).
_CHUNK = 1 << 17
#: Runs with at least this many values per side are compared on several cores, a stage per core at a time.
_PARALLEL_VALUES = 1 << 22


def _workers() -> int:
    """How many stages to compare at once: the cores this process may use, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


# --------------------------------------------------------------------------------------------------
# comparing
# --------------------------------------------------------------------------------------------------
@dataclass
class StageComparison:
    """One paired stage: its errors, whether it passed, and its cause.

    ``pairing`` says how the candidate's stage was found: ``"name_map"``, ``"name"`` or ``"order"`` (plus
    ``" (reshaped)"`` when the shapes agree only once axes of size 1 are dropped). ``rel_error`` is
    ||c - r|| / ||r||, ``cosine`` the cosine similarity of the two flattened tensors, ``tolerances`` the largest
    |c - r| / (atol + rtol |r|), above 1 exactly when the stage fails (values are read in chunks, and a chunk
    whose differences all lie within atol counts as max |c - r| / atol, an upper bound, without dividing). ``inherited_from`` names the divergence an
    ``inherited`` stage carries along.
    """

    name: str
    candidate: str
    pairing: str
    shape: Tuple[int, ...]
    max_abs: float
    mean_abs: float
    rel_error: float
    cosine: float
    failing: int
    tolerances: float
    passed: bool
    cause: Cause
    inherited_from: Optional[str] = None
    own_cause: Optional[Cause] = None
    candidate_shape: Optional[Tuple[int, ...]] = None

    def to_dict(self) -> Dict[str, Any]:
        d = {"name": self.name, "candidate": self.candidate, "pairing": self.pairing, "shape": list(self.shape),
             "max_abs": self.max_abs, "mean_abs": self.mean_abs, "rel_error": self.rel_error, "cosine": self.cosine,
             "failing_values": self.failing, "tolerances": self.tolerances, "passed": self.passed, "cause": self.cause.to_dict(),
             "inherited_from": self.inherited_from,
             "candidate_shape": list(self.candidate_shape) if self.candidate_shape is not None else list(self.shape)}
        if self.own_cause is not None:
            d["own_cause"] = self.own_cause.to_dict()
        return jsonable(d)


@dataclass
class TraceReport:
    """The comparison of two runs, stage by stage in the reference's order."""

    stages: Dict[str, StageComparison]
    first_divergence: Optional[str]
    atol: float
    rtol: float
    unpaired_reference: List[str] = field(default_factory=list)
    unpaired_candidate: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    noise: float = 0.0

    @property
    def root_causes(self) -> List[StageComparison]:
        """Failing stages with a cause of their own (the first divergence first)."""
        return [s for s in self.stages.values() if not s.passed and s.cause.name != "inherited"]

    @property
    def ok(self) -> bool:
        return self.first_divergence is None

    def summary(self) -> str:
        how = Counter(s.pairing.split(" ")[0] for s in self.stages.values())
        lines = [f"{len(self.stages)} stages compared (paired by " +
                 ", ".join(f"{k}: {v}" for k, v in how.items()) +
                 f"); a value passes when |candidate - reference| <= {self.atol:g} + {self.rtol:g} |reference|"
                 + (f", a stage when that holds everywhere or its relative error is <= {self.noise:g}." if self.noise
                    else ".")]
        if self.first_divergence is None:
            lines.append("no divergence: every stage is identical or within the tolerance.")
        else:
            first = self.stages[self.first_divergence]
            lines.append(f"first divergence: {first.name} ({first.cause.name}): {first.cause.explanation}")
        lines.append(f"{'stage':<28} {'max abs':>10} {'mean abs':>10} {'rel err':>9} {'cosine':>9}  result")
        for s in self.stages.values():
            mark = "  <- first divergence" if s.name == self.first_divergence else ""
            res = s.cause.name if s.passed else f"FAIL {s.cause.name}"
            if s.inherited_from:
                res += f" from {s.inherited_from}"
            lines.append(f"{s.name[:28]:<28} {s.max_abs:>10.3g} {s.mean_abs:>10.3g} {s.rel_error:>9.2g} "
                         f"{s.cosine:>9.6f}  {res}{mark}")
        for note in self.notes:
            lines.append(f"note: {note}")
        for k, s in enumerate(self.root_causes, 1):
            ev = "; ".join(f"{key} = {_fmt(v)}" for key, v in s.cause.evidence.items())
            lines.append(f"{k}. {s.name}: {s.cause.name}: {s.cause.explanation}")
            if ev:
                lines.append(f"   evidence: {ev}")
            lines.append(f"   fix: {s.cause.fix}")
        if self.unpaired_reference or self.unpaired_candidate:
            lines.append(f"not compared: reference stages {_names(self.unpaired_reference)}, "
                         f"candidate stages {_names(self.unpaired_candidate)}")
        return "\n".join(_printable(line) for line in lines)   # a name cannot start a line of its own

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> Dict[str, Any]:
        return jsonable({"first_divergence": self.first_divergence, "atol": self.atol, "rtol": self.rtol,
                          "noise": self.noise,
                          "stages": [s.to_dict() for s in self.stages.values()],
                          "root_causes": [s.name for s in self.root_causes],
                          "unpaired_reference": list(self.unpaired_reference),
                          "unpaired_candidate": list(self.unpaired_candidate), "notes": list(self.notes)})


def _names(names: Any, k: int = 10) -> str:
    """At most ``k`` names, each cut to 60 characters, and how many there are in all."""
    names = list(names)
    shown = ", ".join(short_repr(str(x), 60) for x in names[:k])
    return "[" + shown + (f", ... ({len(names):,} in all)" if len(names) > k else "") + "]"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        body = ", ".join(_fmt(x) for x in v[:12])
        return "[" + body + (f", ... ({len(v)} in all)" if len(v) > 12 else "") + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


#: Tensor dtypes compared: floating ones as they are (half precision widened to float32), integers exactly.
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32, torch.uint64)


def _check_tensor_kind(name: str, t: torch.Tensor, side: str) -> None:
    """Refuse what has no plain values to compare: sparse, meta, quantized tensors and unusual dtypes."""
    if t.layout != torch.strided:
        raise ValueError(f"{side} stage {name!r} is a sparse tensor ({t.layout}); save it dense "
                         f"(tensor.to_dense())")
    if t.is_meta:
        raise ValueError(f"{side} stage {name!r} is on the meta device and holds no values; record it on the cpu")
    if t.is_quantized:
        raise ValueError(f"{side} stage {name!r} is a quantized tensor; save tensor.dequantize()")
    if t.is_complex():
        raise ValueError(f"{side} stage {name!r} is complex; compare real tensors")
    if t.dtype not in _FLOATS + _INTEGERS + (torch.bool,):
        raise ValueError(f"{side} stage {name!r} has dtype {str(t.dtype).replace('torch.', '')}, which is not "
                         f"compared; save it as float32 (tensor.float())")


def _as_tensor(name: str, v: Any, side: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        _check_tensor_kind(name, v, side)
        t = v.detach().cpu()
    elif isinstance(v, (np.ndarray, np.generic, int, float, list, tuple)):
        try:
            a = np.asarray(v)
        except Exception:
            raise ValueError(f"{side} stage {name!r} is not numeric") from None
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{side} stage {name!r} is not numeric (dtype {a.dtype})")
        if a.dtype.itemsize > 8:
            raise ValueError(f"{side} stage {name!r} has dtype {a.dtype}, which torch does not hold; save it as "
                             f"float64")
        if not a.dtype.isnative:                  # big-endian data: the same values in this machine's order
            a = a.astype(a.dtype.newbyteorder("="))
        t = torch.from_numpy(np.ascontiguousarray(a))
    else:
        raise ValueError(f"{side} stage {name!r} must be a tensor or an array, got {type(v).__name__}")
    if t.dtype in (torch.float16, torch.bfloat16, torch.bool):
        t = t.to(torch.float32)
    return t.contiguous()


def _floating(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64) if _integer(t) else t


def _integer(t: torch.Tensor) -> bool:
    return t.dtype in _INTEGERS


def _int_differences(r: torch.Tensor, c: torch.Tensor) -> np.ndarray:
    """c - r exactly signed (zero exactly where the integers are equal) as float64, for integer or floating
    tensors of one shape: 64-bit integers are split in their high and low 32 bits, so no value is rounded before
    it is subtracted."""
    def halves(t: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
        a = t.numpy()
        if a.dtype.kind == "u":
            a = a.astype(np.uint64)
            return (a >> np.uint64(32)).astype(np.int64), (a & np.uint64(0xFFFFFFFF)).astype(np.int64)
        a = a.astype(np.int64)
        return a >> 32, a & 0xFFFFFFFF
    (rh, rl), (ch, cl) = halves(r), halves(c)
    return (ch - rh).astype(np.float64) * 4294967296.0 + (cl - rl).astype(np.float64)


def _squeezed(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


def _compatible(a: torch.Tensor, b: torch.Tensor) -> bool:
    sa, sb = tuple(a.shape), tuple(b.shape)
    return sa == sb or _squeezed(sa) == _squeezed(sb)


def _pair(ref: Mapping[str, torch.Tensor], cand: Mapping[str, torch.Tensor],
          name_map: Optional[Mapping[str, str]],
          scopes: Optional[Mapping[str, Mapping[str, List[str]]]] = None,
          sources: Optional[Mapping[str, str]] = None) -> Tuple[List[Tuple[str, str, str]], List[str], List[str]]:
    """[(reference name, candidate name, how)], unpaired reference names, unpaired candidate names.

    By ``name_map``, then by equal name, then by the ONNX module scopes (:func:`scope_pairs`), then in order
    among the rest with compatible shapes. Pairs made by a map, a name or a scope may have different shapes
    (the stage is then ``shape_changed``)."""
    name_map = dict(name_map or {})
    bad_keys = [k for k in name_map if k not in ref]
    bad_vals = [v for v in name_map.values() if v not in cand]
    if bad_keys or bad_vals:
        raise ValueError(f"name_map names stages that are not in the dumps: reference {_names(bad_keys)}, "
                         f"candidate {_names(bad_vals)}")
    paired: Dict[str, Tuple[str, str]] = {r: (name_map[r], "name_map") for r in ref if r in name_map}
    used = {c for c, _ in paired.values()}
    for r in ref:
        if r not in paired and r in cand and r not in used:
            paired[r] = (r, "name")
            used.add(r)
    if scopes:
        for r, (c, how) in scope_pairs(ref, cand, scopes, skip=paired, sources=sources).items():
            paired[r] = (c, how)
            used.add(c)
    _pair_in_order(ref, cand, paired, used)
    pairs = [(r, *paired[r]) for r in ref if r in paired]
    un_r = [r for r in ref if r not in paired]
    un_c = [c for c in cand if c not in used]
    if not pairs:
        raise ValueError(f"no stage pairs up (by name_map, by name, by ONNX scope, or in order with equal shapes); "
                         f"unpaired reference stages: {_names(un_r)}; unpaired candidate stages: {_names(un_c)}")
    return pairs, un_r, un_c


_CALL = re.compile(r"^(.*)_(\d+)$")


def _record_base(scope_path: str, bases: set) -> Optional[str]:
    """The recorded name of an ONNX scope: ``rpn.head.cls_logits_2`` is the third call, ``rpn.head.cls_logits:2``,
    unless a module is called ``cls_logits_2``."""
    if scope_path in bases:
        return scope_path
    m = _CALL.match(scope_path)
    if m and int(m.group(2)) > 0 and f"{m.group(1)}:{m.group(2)}" in bases:
        return f"{m.group(1)}:{m.group(2)}"
    return None


def scope_pairs(reference: Mapping[str, Any], candidate: Mapping[str, Any],
                scopes: Mapping[str, Mapping[str, List[str]]], skip: Optional[Mapping[str, Any]] = None,
                sources: Optional[Mapping[str, str]] = None) -> Dict[str, Tuple[str, str]]:
    """{reference stage: (candidate value, how)} for stages recorded with :func:`record` and values computed by
    :func:`onnx_intermediates` on a model exported by ``torch.onnx.export`` (either route).

    ``scopes``: :func:`onnx_scopes` of that model. A recorded stage ``path`` (or ``path:k``, the module's call
    k, which the exporter writes ``path_k``; or ``path.key``, one output of a module that returns a tuple or a
    dict, such as an FPN's levels) pairs with the values the module's scope produced, in graph order: first
    those of a compatible shape, then the rest of the same rank (a shape that changed downstream of a
    divergence). ``path:input`` pairs with the value the module reads from outside. ``how`` is ``"scope"``.
    ``sources``: {stage: the module (and call) it came from}, as a :class:`Recording` keeps them; without it, a
    stage's module is read from its name (the longest scope it starts with, unless a shorter name is a stage
    itself: then it belongs to a module the export folded away, such as a BatchNorm, and stays unpaired).
    """
    skip = skip or {}
    bases: set = set()
    for r in reference:
        parts = r.split(".")
        for i in range(1, len(parts) + 1):
            bases.add(".".join(parts[:i]))
    groups: Dict[str, List[str]] = {}
    for scope_path, vals in scopes.items():
        base = _record_base(scope_path, bases)
        if base is not None:
            groups[base] = [v for v in vals.get("outputs", []) if v in candidate]
            inputs = [v for v in vals.get("inputs", []) if v in candidate]
            groups[f"{base}:input"] = inputs
    owner: Dict[str, List[str]] = {}
    sources = sources or getattr(reference, "sources", None) or {}
    for r in reference:
        if r in skip:
            continue
        head = _group_of(sources.get(r), groups) if r in sources else _owner(r, groups, reference)
        if head is not None:
            owner.setdefault(head, []).append(r)
    out: Dict[str, Tuple[str, str]] = {}
    for base, stages in owner.items():           # one value may be several modules' output (a block's last ReLU)
        for r, v in _match_values(reference, candidate, stages, list(groups[base])).items():
            out[r] = (v, "scope")
    return out


def _group_of(source: Optional[str], groups: Mapping[str, Any]) -> Optional[str]:
    """The scope group of a recorded module call: ``X:k`` is ``X_k``'s group, or else ``X``'s (the exporter
    numbers only the innermost scope of a container called again)."""
    if source is None:
        return None
    if source in groups:
        return source
    m = re.match(r"^(.*):(\d+)$", source)
    if m and m.group(1) in groups:
        return m.group(1)
    return None


def _owner(stage: str, groups: Mapping[str, Any], reference: Mapping[str, Any]) -> Optional[str]:
    """The module of a stage read from a dump (its name alone): the longest scope its name starts with. A stage
    below a module that is a stage itself is that module's submodule, which the model has no scope for (a
    BatchNorm folded into its convolution): it has no owner."""
    parts = stage.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if i < len(parts) and head in reference:
            return None
        found = _group_of(head, groups)
        if found is not None:
            return found
    return None


def _kind(v: Any) -> str:
    """"f" for floating values, "i" for integers and booleans (labels, indices, masks of bits)."""
    if isinstance(v, torch.Tensor):
        return "f" if v.is_floating_point() else "i"
    return "f" if np.asarray(v).dtype.kind == "f" else "i"


def _match_values(reference: Mapping[str, Any], candidate: Mapping[str, Any], stages: List[str],
                  values: List[str]) -> Dict[str, str]:
    """Stages to values: each to the first free value of a compatible shape and the same kind (floating or
    integer), in graph order; then the rest to the first free value of the same rank and kind."""
    out: Dict[str, str] = {}
    rest: List[str] = []
    for r in stages:
        shape, kind = tuple(np.shape(reference[r])), _kind(reference[r])
        k = next((v for v in values if _compatible_shapes(shape, tuple(np.shape(candidate[v])))
                  and _kind(candidate[v]) == kind), None)
        if k is None:
            rest.append(r)
        else:
            values.remove(k)
            out[r] = k
    for r in rest:
        rank, kind = len(np.shape(reference[r])), _kind(reference[r])
        k = next((v for v in values if len(np.shape(candidate[v])) == rank and _kind(candidate[v]) == kind), None)
        if k is not None:
            values.remove(k)
            out[r] = k
    return out


def onnx_names(reference: Mapping[str, Any], onnx_model: Any) -> List[str]:
    """The values of ``onnx_model`` that :func:`scope_pairs` may pair with the stages of ``reference``: what to
    ask :func:`onnx_intermediates` for, instead of every value of the model.

    ``onnx_model``: an ``.onnx`` file (or its ``onnx.ModelProto`` or bytes) exported by ``torch.onnx.export``
    (either route). Raises ``ValueError`` when no recorded stage has a scope in the model (a model from another
    exporter, whose nodes carry no module path: pair its values with a name map).
    """
    if not isinstance(reference, Mapping) or not reference:
        raise ValueError("reference must be a non-empty dict {stage name: tensor}, as record returns it")
    scopes = onnx_scopes(onnx_model)
    bases: set = set()
    for r in reference:
        parts = str(r).split(".")
        bases.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    names: List[str] = []
    for scope_path, vals in scopes.items():
        base = _record_base(scope_path, bases)
        if base is None:
            continue
        if any(str(r) == base or str(r).startswith(base + ".") for r in reference):
            names.extend(vals["outputs"])
        if f"{base}:input" in reference:
            names.extend(vals["inputs"])
    if not names:
        raise ValueError(f"onnx_model: none of the recorded stages ({_names(list(reference))}) has a module scope in "
                         f"the model's node names (export with torch.onnx.export, which writes them, or pair the "
                         f"values by hand with a name map)")
    return list(dict.fromkeys(names))


def _compatible_shapes(sa: Tuple[int, ...], sb: Tuple[int, ...]) -> bool:
    return sa == sb or _squeezed(sa) == _squeezed(sb)


def _pair_in_order(ref: Mapping[str, torch.Tensor], cand: Mapping[str, torch.Tensor],
                   paired: Dict[str, Tuple[str, str]], used: set) -> None:
    """Pair the remaining stages in order: each with the next remaining candidate stage of a compatible shape."""
    rest = [c for c in cand if c not in used]
    j = 0
    for r in ref:
        if r in paired:
            continue
        k = next((k for k in range(j, len(rest)) if _compatible(ref[r], cand[rest[k]])), None)
        if k is not None:
            paired[r] = (rest[k], "order")
            used.add(rest[k])
            j = k + 1


def _measure(r: torch.Tensor, c: torch.Tensor, atol: float, rtol: float) -> Dict[str, float]:
    """Errors over every value in one streaming pass; the tensors are flat, contiguous and of one floating dtype.

    Each chunk is read once into reused buffers: d = c - r, its smallest and largest value, sum |d|, the dot
    products r.r, d.d, r.d (the relative error and the cosine follow, as c = r + d) and, where some |d| exceeds
    ``atol``, |d| / (atol + rtol |r|) with the number of values above 1. A chunk whose differences all lie within
    ``atol`` passes without that division and contributes max |d| / atol to ``tolerances``, an upper bound.
    Each operation goes to whichever of numpy and torch does it faster on one core (numpy's minimum, maximum and
    comparisons; torch's dot products, absolute values and sums), on the same memory.
    """
    n = r.numel()
    s_abs = s_dd = s_rr = s_rd = 0.0
    d_min, d_max, worst, c_max = math.inf, -math.inf, 0.0, 0.0
    failing = 0
    size = min(_CHUNK, max(n, 1))
    d_buf, t_buf = torch.empty(size, dtype=r.dtype), torch.empty(size, dtype=r.dtype)
    d_np, t_np, r_np, c_np = d_buf.numpy(), t_buf.numpy(), r.numpy(), c.numpy()
    floor = torch.full((size,), min(float(atol), torch.finfo(r.dtype).max), dtype=r.dtype)
    tiny, top_of = torch.finfo(r.dtype).tiny, torch.finfo(r.dtype).max
    with np.errstate(all="ignore"):                                   # NaN and inf are counted, not warned
        for a in range(0, n, _CHUNK):
            rr = r[a:a + _CHUNK]
            k = rr.numel()
            d, dn, tn = d_buf[:k], d_np[:k], t_np[:k]
            np.subtract(c_np[a:a + _CHUNK], r_np[a:a + _CHUNK], out=dn)
            lo, hi = float(dn.min()), float(dn.max())
            d_min, d_max = min(d_min, lo), max(d_max, hi)
            s_rr += float(torch.dot(rr, rr))
            s_dd += float(torch.dot(d, d))
            s_rd += float(torch.dot(rr, d))
            s_abs += float(d.abs_().sum())
            big = max(-lo, hi)
            if big <= atol:
                worst = max(worst, big / atol if atol > 0 else 0.0)
                continue
            tol = torch.abs(rr, out=t_buf[:k])
            c_max = max(c_max, float(tn.max()) + big)
            torch.add(floor[:k], tol, alpha=min(rtol, top_of), out=tol)   # atol + rtol |r|
            if atol <= 0:
                tol.clamp_min_(tiny)
            ratio = np.divide(dn, tn, out=dn)
            top = float(ratio.max())
            worst = max(worst, top)
            if top > 1.0:
                failing += int(np.count_nonzero(ratio > 1.0))
    s_cc, s_rc = s_rr + 2.0 * s_rd + s_dd, s_rr + s_rd
    nr, nc = math.sqrt(s_rr), math.sqrt(max(s_cc, 0.0))
    rel = math.sqrt(s_dd) / nr if nr > 0 else (0.0 if s_dd == 0 else math.inf)
    cos = s_rc / (nr * nc) if nr > 0 and nc > 0 else (1.0 if nr == nc else 0.0)
    return {"max_abs": max(-d_min, d_max, 0.0) if n else 0.0, "mean_abs": s_abs / max(n, 1), "rel_error": rel,
            "cosine": min(max(cos, -1.0), 1.0), "failing": failing, "tolerances": worst,
            "d_min": d_min if n else 0.0, "d_max": d_max if n else 0.0, "c_absmax": c_max}


def _finite_measure(r: torch.Tensor, c: torch.Tensor, atol: float, rtol: float) -> Dict[str, float]:
    ok = torch.isfinite(r) & torch.isfinite(c)
    rf, cf = (r[ok], c[ok]) if bool(ok.any()) else (r[:0], c[:0])
    m = _measure(rf, cf, atol, rtol)
    m["failing"] += int((~ok).sum())
    m["tolerances"] = math.inf
    return m


def _check_arguments(reference, candidate, name_map, atol, rtol) -> None:
    for n, v in (("reference", reference), ("candidate", candidate)):
        if not isinstance(v, Mapping) or not v:
            raise ValueError(f"{n} must be a non-empty dict {{stage name: tensor}}, got "
                             f"{type(v).__name__ if not isinstance(v, Mapping) else 'an empty dict'}")
    for n, tol in (("atol", atol), ("rtol", rtol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)):
            raise WrongType(f"{n} must be a finite number >= 0, got {type(tol).__name__}: {tol!r}")
        try:
            tol = float(tol)
        except OverflowError:
            raise ValueError(f"{n} must be a finite number >= 0, got an integer beyond float64's range") from None
        if not tol >= 0 or not math.isfinite(tol):
            raise ValueError(f"{n} must be a finite number >= 0, got {tol!r}")
    if name_map is not None and (not isinstance(name_map, Mapping) or
                                 not all(isinstance(k, str) and isinstance(x, str) for k, x in name_map.items())):
        raise ValueError("name_map must be a dict {reference stage name: candidate stage name} of strings")


def compare(reference: Mapping[str, Any], candidate: Mapping[str, Any], name_map: Optional[Mapping[str, str]] = None,
            atol: float = ATOL, rtol: float = RTOL, poolers: Optional[Mapping[str, Any]] = None,
            onnx_model: Any = None, padding: Optional[Mapping[str, Tuple[int, int]]] = None,
            noise: float = NOISE) -> TraceReport:
    """Compare two runs stage by stage; find the first divergence and why.

    ``reference``, ``candidate``: {stage name: tensor or array}, in network order (as :func:`record`,
    :func:`onnx_intermediates` and :func:`load_dump` return them). Stages pair by ``name_map`` ({reference name:
    candidate name}), else by equal name, else, given ``onnx_model`` (the ``.onnx`` file the candidate ran, as
    exported by ``torch.onnx.export``), by the module scopes its nodes carry
    (:func:`scope_pairs`), else in order among the rest when their shapes are equal (axes of size 1 aside).
    Each stage's ``pairing`` says which. A value passes when |c - r| <= ``atol`` + ``rtol`` |r|; a stage passes
    when every value does, or when its relative error ||c - r|| / ||r|| is at most ``noise`` (float32 rounding
    in a real network's sums; 0 turns this off). A paired stage whose shape changed (a proposal count after an earlier divergence)
    is ``shape_changed``, with both shapes, and is carried along from that divergence like any other.

    ``poolers``: {stage: :class:`explainer.trace.causes.Pooler` or :class:`~explainer.trace.causes.LevelPooler`}
    for ROI-pooled stages: how the reference pooled them, so that a shift of the boxes is fitted in feature
    cells (a pooled map alone cannot show a shift smaller than its bins); a :class:`Recording` brings its own.
    ``padding``: {stage: (height, width)} of the image inside a padded batch; without it, trailing rows and
    columns that are zero in both runs are taken for padding, and the causes are fitted on the image.
    Raises ``ValueError`` when nothing pairs. Each stage is compared on one torch thread, so the numbers are
    the same on every machine; a large run compares up to 4 stages at once, one per core. The thread count is
    restored afterwards.
    """
    _check_arguments(reference, candidate, name_map, atol, rtol)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 1:
        raise ValueError(f"noise must be a number in [0, 1), got {noise!r}")
    ref = {str(k): _as_tensor(str(k), v, "reference") for k, v in reference.items()}
    cand = {str(k): _as_tensor(str(k), v, "candidate") for k, v in candidate.items()}
    scopes = onnx_scopes(onnx_model) if onnx_model is not None else None
    pairs, un_r, un_c = _pair(ref, cand, name_map, scopes, getattr(reference, "sources", None))
    poolers = _check_poolers(ref, {**dict(getattr(reference, "poolers", None) or {}), **dict(poolers or {})})
    padding = _check_padding(ref, padding)
    roots: List[StageComparison] = []
    first: Optional[str] = None

    def one(pair: Tuple[str, str, str]) -> StageComparison:
        rname, cname, how = pair
        pooler = poolers.get(rname)
        source: Any = None
        if isinstance(pooler, TC.LevelPooler):
            source = [_floating(ref[f]) for f in pooler.features]
        elif pooler is not None:
            source = _floating(ref[pooler.features])
        return _compare_stage(rname, cname, how, ref[rname], cand[cname], atol, rtol, pooler, source,
                              padding.get(rname), float(noise))

    workers = min(_workers(), len(pairs))
    if sum(ref[rname].numel() for rname, _, _ in pairs) < _PARALLEL_VALUES:
        workers = 1
    with single_thread():
        if workers > 1:       # stages apart on the cores, each on one thread: the same numbers as one worker
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                done = list(pool.map(one, pairs))
        else:
            done = [one(p) for p in pairs]
    stages = {s.name: s for s in done}
    for rname, s in stages.items():
        if not s.passed:
            if first is None:
                first = rname
            elif s.cause.name != "non_finite":
                _inherit(s, roots)
            if s.cause.name != "inherited":
                roots.append(s)
    return TraceReport(stages=stages, first_divergence=first, atol=float(atol), rtol=float(rtol),
                       unpaired_reference=un_r, unpaired_candidate=un_c,
                       notes=list(getattr(reference, "notes", None) or []), noise=float(noise))


def _pooled_names(p: Any) -> List[str]:
    if isinstance(p, TC.LevelPooler):
        return list(p.features)
    return [p.features] if isinstance(p, TC.Pooler) else []


def _check_poolers(ref: Mapping[str, Any], poolers: Dict[str, Any]) -> Dict[str, Any]:
    bad = [f"{k} (pooled from {getattr(p, 'features', None)!r})" for k, p in poolers.items()
           if k not in ref or not _pooled_names(p) or any(f not in ref for f in _pooled_names(p))]
    if bad:
        raise ValueError(f"poolers must map reference stages to a Pooler or LevelPooler whose features name "
                         f"reference stages; not so for {_names(bad)}")
    return poolers


def _check_padding(ref: Mapping[str, Any], padding: Any) -> Dict[str, Tuple[int, int]]:
    if padding is not None and not isinstance(padding, Mapping):
        raise ValueError(f"padding must be a dict {{stage: (height, width)}}, got {type(padding).__name__}")
    padding = dict(padding or {})
    bad = [k for k, v in padding.items() if k not in ref or not isinstance(v, (tuple, list)) or len(v) != 2
           or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)]
    if bad:
        raise ValueError(f"padding must map reference stages to (height, width) of the image, two positive "
                         f"integers; not so for {_names(bad)}")
    return padding


def _inherit(s: StageComparison, roots: List[StageComparison]) -> None:
    """Mark a failing stage after a divergence as inherited when it has no cause of its own or the same one."""
    src = next((r for r in reversed(roots) if TC.same_cause(r.cause, s.cause)), None)
    if src is None:     # the same kind of cause, its parameters changed on the way (a scale through a convolution)
        src = next((r for r in reversed(roots) if r.cause.name == s.cause.name), None)
    if src is None and s.cause.name in ("unexplained", "shape_changed") and roots:
        src = roots[-1]
    if src is None:
        return
    s.own_cause, s.inherited_from = s.cause, src.name
    how = {"unexplained": "no cause of its own", "shape_changed": "its shape changed"}.get(s.cause.name,
                                                                                             "the same cause")
    s.cause = TC.cause("inherited", s.cause.strength, {"from": src.name, "own_fit": s.cause.name},
                       f"{how}: carried along from {src.name} ({src.cause.name})")


def _passing_cause(m: Dict[str, float], within_noise: bool, noise: float) -> Cause:
    if within_noise:
        return TC.cause("numerical_noise", 1.0, {"max_abs": m["max_abs"], "rel_error": m["rel_error"]},
                        f"relative error {m['rel_error']:.2g} <= {noise:g} (values near zero differ by up to "
                        f"{m['max_abs']:.3g}, float32 rounding of sums of larger terms)")
    same = m["max_abs"] == 0.0
    return TC.cause("identical" if same else "numerical_noise", 1.0, {"max_abs": m["max_abs"]},
                    "every value equal" if same else f"every value within the tolerance (max |difference| "
                    f"{m['max_abs']:.3g})")


def _shape_changed(rname: str, cname: str, how: str, r: torch.Tensor, c: torch.Tensor) -> StageComparison:
    """A paired stage whose shapes cannot be compared: no value is measured (NaN), every value fails."""
    nan = math.nan
    found = TC.cause("shape_changed", 1.0, {"reference_shape": list(r.shape), "candidate_shape": list(c.shape)},
                     f"{list(r.shape)} in the reference, {list(c.shape)} in the candidate")
    return StageComparison(name=rname, candidate=cname, pairing=how, shape=tuple(r.shape), max_abs=nan, mean_abs=nan,
                           rel_error=nan, cosine=nan, failing=int(max(r.numel(), c.numel())), tolerances=math.inf,
                           passed=False, cause=found, candidate_shape=tuple(c.shape))


def _compare_stage(rname: str, cname: str, how: str, r: torch.Tensor, c: torch.Tensor, atol: float, rtol: float,
                   pooler: Any, pooled_from: Any, region: Optional[Tuple[int, int]] = None,
                   noise: float = 0.0) -> StageComparison:
    if tuple(r.shape) != tuple(c.shape):
        if not _compatible(r, c):
            return _shape_changed(rname, cname, how, r, c)
        c = c.reshape(r.shape)
        how += " (reshaped)"
    exact: Optional[np.ndarray] = None
    if _integer(r) and _integer(c):               # integers compared exactly, not after a cast to floats
        exact = _int_differences(r.reshape(-1), c.reshape(-1))
        r, c = r.to(torch.float64), c.to(torch.float64)
    elif _integer(r) or _integer(c):
        r, c = r.to(torch.float64), c.to(torch.float64)
    if r.dtype != c.dtype:
        dt = torch.promote_types(r.dtype, c.dtype)
        r, c = r.to(dt), c.to(dt)
    rf, cf = r.reshape(-1), c.reshape(-1)
    m = _measure(rf, cf, atol, rtol)
    if exact is not None and m["max_abs"] == 0.0 and exact.any():   # beyond float64's 53 bits
        d = np.abs(exact)
        over = d > atol + rtol * np.abs(rf.numpy())
        m.update(max_abs=float(d.max()), mean_abs=float(d.mean()), failing=int(over.sum()),
                 d_min=float(exact.min()), d_max=float(exact.max()))
    nonfinite = None
    if not all(math.isfinite(m[k]) for k in ("max_abs", "mean_abs", "rel_error")):  # NaN and inf reach the sums
        nonfinite = TC.non_finite(rf, cf, tuple(r.shape))
        if nonfinite is not None:
            m = _finite_measure(rf, cf, atol, rtol)
    passed = nonfinite is None and m["failing"] == 0
    within_noise = (not passed and nonfinite is None and exact is None and m["rel_error"] <= noise)
    if nonfinite is not None:
        found = nonfinite
    elif exact is not None and not passed and float(rf.sub(cf).abs().max()) == 0.0:
        found = TC.cause("unexplained", 1.0, {"max_abs": m["max_abs"]}, "integers differ in digits beyond "
                         "float64's precision")
    elif passed or within_noise:
        found, passed = _passing_cause(m, within_noise, noise), True
    else:
        st = TC.Stage(r, c, atol, rtol, pooler=pooler, pooled_from=pooled_from, region=region)
        found = TC.fit_cause(st, m["d_min"], m["d_max"], m["c_absmax"])
    return StageComparison(name=rname, candidate=cname, pairing=how, shape=tuple(r.shape), max_abs=m["max_abs"],
                           mean_abs=m["mean_abs"], rel_error=m["rel_error"], cosine=m["cosine"],
                           failing=int(m["failing"]), tolerances=m["tolerances"], passed=passed, cause=found)


# --------------------------------------------------------------------------------------------------
# dumps on disk and the command line
# --------------------------------------------------------------------------------------------------
def _flatten_dump(prefix: str, value: Any, out: Dict[str, Any], path: Path) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten_dump(f"{prefix}.{k}" if prefix else str(k), v, out, path)
    elif isinstance(value, (list, tuple)) and prefix:
        for i, v in enumerate(value):
            _flatten_dump(f"{prefix}.{i}", v, out, path)
    elif isinstance(value, torch.Tensor):
        try:
            _check_tensor_kind(prefix, value, "the")
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        out[prefix] = value
    elif isinstance(value, np.ndarray):
        out[prefix] = value
    else:
        raise ValueError(f"{path}: stage {prefix!r} holds a {type(value).__name__} (save only tensors, "
                         f"keyed by stage name)")


#: The bounds a dump is read within (:mod:`explainer.safe_load`): a compressed ``.npz`` may expand to 64 times
#: its size (a dump of zeros compresses further: save it uncompressed with ``numpy.savez``).
DUMP_LIMITS = Limits(expansion=DUMP_EXPANSION)

#: What torch.save writes for tensors without plain values, and what to save instead.
_UNSUPPORTED_TENSORS = {
    "_rebuild_sparse_tensor": "a sparse tensor; save it dense (tensor.to_dense())",
    "_rebuild_sparse_csr_tensor": "a sparse tensor; save it dense (tensor.to_dense())",
    "_rebuild_meta_tensor_no_storage": "a tensor on the meta device, which holds no values; record it on the cpu",
    "_rebuild_qtensor": "a quantized tensor; save tensor.dequantize()",
    "_rebuild_tensor_v3": "a tensor of a dtype that is not compared (float8, uint16, uint32 or uint64); save it as "
                          "float32 (tensor.float()) or int64 (tensor.long())",
    "_rebuild_wrapper_subclass": "a tensor subclass; save plain tensors",
    "_rebuild_device_tensor_from_numpy": "a tensor on another device; save tensor.cpu()",
}


class _DumpScan(TorchPickleScan):
    """The checkpoint loader's scan of a torch file, naming the tensors a dump cannot hold."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch._utils", "torch._tensor") and name in _UNSUPPORTED_TENSORS:
            raise Refused(f"holds {_UNSUPPORTED_TENSORS[name]}")
        return super().find_class(module, name)


def _read_pt(p: Path) -> Any:
    """A torch file's object, read within :data:`DUMP_LIMITS` (the checkpoint loader's checks) and then by
    ``torch.load(weights_only=True)``."""
    with open_untrusted(p, DUMP_LIMITS) as (f, size):
        head = f.read(len(TORCH_LEGACY_MAGIC))
        f.seek(0)
        if head.startswith(b"PK\x03\x04"):
            return load_torch_zip(f, size, DUMP_LIMITS, _DumpScan)
        if head == TORCH_LEGACY_MAGIC:      # torch.save before torch 1.6
            return load_torch_legacy(f, size, DUMP_LIMITS, _DumpScan)
        raise Refused("not a readable torch file: not written by torch.save")


def _read_npz(p: Path, out: Dict[str, Any]) -> None:
    with open_untrusted(p, DUMP_LIMITS) as (f, size):
        check_npz(f, size, DUMP_LIMITS)    # members, headers and sizes before numpy reads anything
        f.seek(0)
        with np.load(f, allow_pickle=False) as z:
            for k in z.files:
                out[k] = z[k]


def load_dump(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a dump of stages: ``.npz`` (``numpy.savez``) or ``.pt`` (``torch.save`` of a dict of tensors).

    ``.npz`` files are read with ``allow_pickle=False``; ``.pt`` files with ``torch.load(weights_only=True)``,
    which refuses anything but tensors and plain containers. Nested dicts and lists become dotted names.
    Raises ``ValueError`` naming the file and what to do.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file (give a .npz or .pt dump of stage tensors)")
    suffix = p.suffix.lower()
    out: Dict[str, Any] = {}
    if suffix == ".npz":
        try:
            _read_npz(p, out)
        except Refused as e:
            raise ValueError(f"{p}: {e}") from None
        except Exception as e:  # a member damaged past its header: numpy's ValueError, BadZipFile, zlib.error, ...
            raise ValueError(f"{p}: not a readable .npz archive (truncated or damaged?: {type(e).__name__}: "
                             f"{short_repr(str(e), 120)[1:-1]}) (save it again with numpy.savez)") from None
    elif suffix in (".pt", ".pth"):
        try:
            data = _read_pt(p)
        except Refused as e:
            why = str(e).replace(f"; {NOTHING_RAN}", "; nothing in it was run").replace(
                "get a fresh copy of the file", "save it again")
            how = "not a readable torch file" if why.startswith("not a readable") else "refused to load"
            raise ValueError(f"{p}: {how}: {why} (save {{stage name: tensor}} with torch.save, or arrays with "
                             f"numpy.savez)") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"{p}: holds a {type(data).__name__}, not a dict of tensors (save {{stage name: tensor}})")
        _flatten_dump("", data, out, p)
    else:
        raise ValueError(f"{p}: unknown dump format {suffix or '(no suffix)'!r} (use .npz or .pt)")
    if not out:
        raise ValueError(f"{p}: holds no stages (save at least one named tensor)")
    return out


def _load_map(path) -> Dict[str, str]:
    p = Path(path)
    data = read_json(p, "a JSON object {reference stage: candidate stage}", unique_keys=True)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{p}: must be a JSON object of strings {{reference stage: candidate stage}}")
    return data


#: The longest error line printed (a message listing many names is cut).
_MAX_ERROR_CHARS = MAX_ERROR_CHARS


def _error(message: str) -> int:
    line = _printable(" ".join(message.split()))
    if len(line) > _MAX_ERROR_CHARS:
        line = line[:_MAX_ERROR_CHARS - 40] + f" ... ({len(line):,} characters in all)"
    print("error: " + line, file=sys.stderr)
    return 2


def trace_command(reference_path: Union[str, os.PathLike], candidate_path: Union[str, os.PathLike],
                  map_path: Union[str, os.PathLike, None] = None, as_json: bool = False,
                  onnx_path: Union[str, os.PathLike, None] = None) -> int:
    """Compare two dumps and print the report (or its JSON); the ``trace`` command of ``python -m explainer``.

    ``onnx_path``: the ``.onnx`` file the candidate ran, so that stages pair by module scope (see :func:`compare`).
    Exit codes, as the ``diagnose`` command's: 0 when no stage diverges (identical or within the tolerance),
    1 when a divergence and its causes were found, 2 on bad input (one line ``error: <file>: <what> (<what to
    do>)`` on stderr, no traceback).
    """
    try:
        ref = load_dump(reference_path)
        cand = load_dump(candidate_path)
        name_map = _load_map(map_path) if map_path is not None else None
        model = None
        if onnx_path is not None:
            from explainer.trace.capture import load_onnx
            model = load_onnx(onnx_path)
    except ValueError as e:                     # the loaders name the file first
        return _error(str(e))
    except MemoryError:
        return _error(f"{reference_path}, {candidate_path}: reading them needs more memory than this process may "
                      f"use (free memory, or dump fewer stages)")
    try:
        report = compare(ref, cand, name_map=name_map, onnx_model=model)
    except MemoryError:
        return _error(f"{reference_path}, {candidate_path}: comparing them needs more memory than this process may "
                      f"use (free memory, or dump fewer stages)")
    except ValueError as e:
        return _error(f"{candidate_path}: {e} (dump the same stages on both sides, or pair them with a JSON "
                      f"name map {{reference stage: candidate stage}})")
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    return 0 if report.ok else 1

