"""Capturing the stages of a run: a ``torch.nn.Module``'s intermediate outputs, or an ONNX model's in ONNX Runtime.

The capture half of :mod:`explainer.trace` (which re-exports these functions): :func:`record` taps module
outputs with forward hooks; :func:`onnx_intermediates` exposes chosen values of an ONNX model as graph outputs of
a copy of the whole model and lets ONNX Runtime compute them in the model's own order;
:func:`onnx_module_outputs` maps the module paths that ``torch.onnx.export`` (TorchScript route) writes into node
names to the values each module produced.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:  # only for annotations: onnx is imported where it is used
    import onnx

import numpy as np
import torch

from explainer._bounds import MAX_TOTAL_BYTES, ONNX_FILE_BYTES

__all__ = ["record", "Recording", "INPUT_MODULES", "onnx_intermediates", "onnx_module_outputs", "module_path", "onnx_scopes"]


# --------------------------------------------------------------------------------------------------
# capturing stages
# --------------------------------------------------------------------------------------------------
def _flatten_output(name: str, value: Any, out: Dict[str, torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        out[name] = value.detach().clone()
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _flatten_output(f"{name}.{i}", v, out)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _flatten_output(f"{name}.{k}", v, out)


class Recording(dict):
    """{stage name: tensor} as :func:`record` returns it, with what the recording learned on the way.

    ``poolers``: {pooled stage: :class:`explainer.trace.causes.Pooler` or :class:`~explainer.trace.causes.LevelPooler`}
    captured from the network's ROI poolers, which :func:`explainer.trace.compare` uses without being told;
    ``notes``: sentences about the run (the mode it ran in, the inputs recorded).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.poolers: Dict[str, Any] = {}
        self.notes: List[str] = []
        #: {stage: the module path (with ``:k`` for its call k) whose output or input it is}
        self.sources: Dict[str, str] = {}


#: Names of the modules whose input is recorded by default (the shallowest module so named, at any depth: a
#: detector's ``backbone``, or ``model.backbone`` inside Detectron2's ``TracingAdapter``): the preprocessed image,
#: as the network's backbone reads it.
INPUT_MODULES = ("backbone",)


def _first_tensor(value: Any) -> Optional[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, Mapping):
        for v in value.values():
            t = _first_tensor(v)
            if t is not None:
                return t
    tensors = getattr(value, "tensors", None)          # torchvision's ImageList, Detectron2's ImageList
    if isinstance(tensors, torch.Tensor):
        return tensors
    return getattr(value, "tensor", None) if isinstance(getattr(value, "tensor", None), torch.Tensor) else None


def _box_tensor(b: Any) -> torch.Tensor:
    """Tensor[R, 4] of one image's boxes: a tensor, or an object holding one (Detectron2's ``Boxes``)."""
    t = b if isinstance(b, torch.Tensor) else getattr(b, "tensor", None)
    if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[-1] != 4:
        raise ValueError("not boxes")
    return t


def _pooler_of(mod: Any, args: Tuple[Any, ...], output: Any, stage_of) -> Optional[Any]:
    """A :class:`LevelPooler` describing one call of an FPN pooler module (or a :class:`Pooler`, one ROIAlign
    module called on one map), or None when it is not one.

    Knows ROIAlign modules (``spatial_scale``, ``sampling_ratio``, ``aligned``), torchvision's ``MultiScaleRoIAlign`` (``featmap_names``, ``scales`` and ``map_levels`` set by its
    forward) and Detectron2's ``ROIPooler`` (``level_poolers``, ``canonical_level``, ``canonical_box_size``,
    ``min_level``)."""
    from explainer.trace.causes import LevelPooler, Pooler

    if len(args) < 2 or not isinstance(output, torch.Tensor) or output.dim() != 4:
        return None
    feats_in, boxes_in = args[0], args[1]
    if (isinstance(feats_in, torch.Tensor) and isinstance(boxes_in, torch.Tensor) and boxes_in.dim() == 2
            and boxes_in.shape[-1] == 5 and hasattr(mod, "spatial_scale") and hasattr(mod, "aligned")):
        name = stage_of(feats_in)            # one ROIAlign module (torchvision's RoIAlign, Detectron2's ROIAlign)
        size = mod.output_size if isinstance(mod.output_size, (tuple, list)) else (mod.output_size,) * 2
        return None if name is None else Pooler(features=name, rois=boxes_in.detach().clone(),
                                                output_size=(int(size[0]), int(size[1])),
                                                spatial_scale=float(mod.spatial_scale),
                                                sampling_ratio=int(mod.sampling_ratio), aligned=bool(mod.aligned))
    try:
        boxes = [_box_tensor(b) for b in boxes_in]
    except (TypeError, ValueError):
        return None
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype), b], dim=1)
                      for i, b in enumerate(boxes)]) if boxes else torch.zeros(0, 5)
    if hasattr(mod, "featmap_names") and hasattr(mod, "map_levels") and getattr(mod, "scales", None):
        maps = [feats_in[k] for k in mod.featmap_names]
        scales = tuple(float(x) for x in mod.scales)
        levels = mod.map_levels(boxes) if len(scales) > 1 else torch.zeros(len(rois), dtype=torch.int64)
        aligned, ratio = False, int(mod.sampling_ratio)            # torchvision pools with aligned=False
        size = tuple(int(x) for x in mod.output_size)
        canonical = (int(getattr(mod.map_levels, "lvl0", 4)), float(getattr(mod.map_levels, "s0", 224)))
    elif hasattr(mod, "level_poolers") and hasattr(mod, "canonical_level"):
        maps = list(feats_in.values()) if isinstance(feats_in, Mapping) else list(feats_in)
        lp = list(mod.level_poolers)
        maps = maps[:len(lp)]                         # a dict of levels may hold more (an FPN's "pool")
        if len(lp) != len(maps) or not lp:
            return None
        scales = tuple(float(p.spatial_scale) for p in lp)
        aligned, ratio = bool(getattr(lp[0], "aligned", False)), int(getattr(lp[0], "sampling_ratio", 0))
        size = tuple(int(x) for x in (lp[0].output_size if isinstance(lp[0].output_size, (tuple, list))
                                      else (lp[0].output_size, lp[0].output_size)))
        canonical = (int(mod.canonical_level), float(getattr(mod, "canonical_box_size", 224)))
        b = rois[:, 1:].double()
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        min_level = int(getattr(mod, "min_level", 2))
        lv = torch.floor(canonical[0] + torch.log2(area.clamp_min(0).sqrt() / canonical[1] + 1e-8))
        levels = (lv.clamp(min_level, min_level + len(lp) - 1) - min_level).to(torch.int64)
    else:
        return None
    names = []
    for f in maps:
        name = stage_of(f)
        if name is None:
            return None
        names.append(name)
    return LevelPooler(features=tuple(names), rois=rois.detach().clone(), levels=levels.detach().clone().view(-1),
                       spatial_scales=scales, output_size=(int(size[0]), int(size[1])), sampling_ratio=ratio,
                       aligned=aligned, canonical_level=canonical[0], canonical_scale=canonical[1])


def record(module: torch.nn.Module, *inputs: Any, names: Optional[Sequence[str]] = None,
           inputs_of: Optional[Sequence[str]] = None) -> Recording:
    """Run ``module(*inputs)`` in eval mode under ``torch.no_grad()`` and return the outputs of its submodules.

    ``names``: the module paths to tap (``dict(module.named_modules())`` keys; ``""`` is the module itself, recorded
    as ``"output"``); default every submodule. A module that returns a tuple or list gives ``name.0``,
    ``name.1``, ... (a dict, such as an FPN's levels, ``name.key``); a module called twice gives ``name`` then
    ``name:1``. ``inputs_of``: module paths whose first input tensor is recorded too, as ``name:input``, before
    their outputs (default: the shallowest module called ``backbone`` when there is one, so the preprocessed image, after
    normalisation and batch padding, is a stage of its own). Outputs are cloned (an in-place operation later in
    the network cannot change them) and keep the order in which they were produced.

    The module runs in eval mode (``torch.onnx.export`` leaves a model in the mode it found it, and a detector in
    training mode asks for targets); the caller's mode of every submodule is restored afterwards, and the
    recording's ``notes`` say so. ROI pooler modules (torchvision's ``MultiScaleRoIAlign``, Detectron2's
    ``ROIPooler``) are described in the recording's ``poolers``, with the boxes they pooled and the level of
    each, so that :func:`explainer.trace.compare` can fit a shift of the boxes. The hooks are removed
    afterwards, also when the forward pass raises.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    modules = dict(module.named_modules())
    targets, entry = _record_targets(module, modules, names, inputs_of)
    rec = _Recorder()
    modes = {n: m.training for n, m in modules.items()}
    handles: List[Any] = []
    try:
        for path in entry:
            handles.append(modules[path].register_forward_pre_hook(rec.pre_hook_for(path)))
        for path in targets:
            handles.append(modules[path].register_forward_hook(rec.hook_for(path)))
        module.eval()
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
        for n, m in modules.items():
            m.training = modes[n]
    _notes(rec.out, module, modes[""], entry)
    return rec.out


class _Recorder:
    """The hooks of one :func:`record` run and what they collect."""

    def __init__(self) -> None:
        self.out = Recording()
        self.calls: Counter = Counter()
        self.input_calls: Counter = Counter()

    def stage_of(self, t: torch.Tensor) -> Optional[str]:
        """The latest recorded stage equal to ``t`` (a pooler's input map), or None."""
        for k in reversed(list(self.out)):
            v = self.out[k]
            if v.shape == t.shape and v.dtype == t.dtype and torch.equal(v, t.detach()):
                return k
        return None

    def hook_for(self, path: str):
        def hook(mod, args, output):
            k = self.calls[path]
            self.calls[path] += 1
            base = path or "output"
            name = base if k == 0 else f"{base}:{k}"
            before = set(self.out)
            _flatten_output(name, output, self.out)
            for key in self.out:
                if key not in before:
                    self.out.sources[key] = name
            try:
                pooler = _pooler_of(mod, tuple(args), output, self.stage_of)
            except Exception:      # a module that only looks like a pooler: it is recorded, not described
                pooler = None
            if pooler is not None and name in self.out:
                self.out.poolers[name] = pooler
        return hook

    def pre_hook_for(self, path: str):
        def pre_hook(_mod, args):
            t = _first_tensor(args)
            if t is not None:
                k = self.input_calls[path]
                self.input_calls[path] += 1
                key = f"{path}:input" if k == 0 else f"{path}:input:{k}"
                self.out[key] = t.detach().clone()
                self.out.sources[key] = key
        return pre_hook


def _record_targets(module: torch.nn.Module, modules: Dict[str, torch.nn.Module], names: Optional[Sequence[str]],
                    inputs_of: Optional[Sequence[str]]) -> Tuple[List[str], List[str]]:
    """(module paths whose outputs are recorded, module paths whose inputs are), checked."""
    if names is None:
        targets = [n for n in modules if n]
    else:
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ValueError("names must be a list of module paths (strings)")
        unknown = [n for n in names if n not in modules]
        if unknown:
            some = [n for n in modules if n][:12]
            raise ValueError(f"names: no module {unknown} in {type(module).__name__}; module paths include {some}")
        targets = list(dict.fromkeys(names))
    if inputs_of is None:
        named = [n for n in modules if n.split(".")[-1] in INPUT_MODULES]
        return targets, sorted(named, key=lambda n: n.count("."))[:1]
    if isinstance(inputs_of, str) or not all(isinstance(n, str) for n in inputs_of):
        raise ValueError("inputs_of must be a list of module paths (strings)")
    bad = [n for n in inputs_of if n not in modules or not n]
    if bad:
        raise ValueError(f"inputs_of: no module {bad} in {type(module).__name__} (give module paths, as in "
                         f"dict(module.named_modules()))")
    return targets, list(dict.fromkeys(inputs_of))


def _notes(out: Recording, module: torch.nn.Module, was_training: bool, entry: List[str]) -> None:
    if was_training:
        out.notes.append(f"{type(module).__name__} was in training mode (torch.onnx.export leaves a model in the "
                         f"mode it found it in); it ran in eval mode, and its mode was restored afterwards")
    if entry:
        out.notes.append(f"the inputs of {', '.join(entry)} are recorded as {', '.join(p + ':input' for p in entry)}")
    if out.poolers:
        out.notes.append(f"ROI poolers described: {', '.join(out.poolers)} (their boxes and levels, for the shift "
                         f"fit)")


def _external_tensors(m) -> List[Any]:
    """The model's tensors (initializers, also in subgraphs, and constant attributes) kept in external files."""
    from onnx import TensorProto
    from onnx.external_data_helper import _get_all_tensors

    return [t for t in _get_all_tensors(m) if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL]


def _check_external_data(m, p: Path) -> None:
    """Every external data file of the model at ``p``: a relative path inside the model's folder, a regular file
    that holds the bytes each tensor declares, all of them together within the bounds of
    :mod:`explainer._bounds`."""
    folder, total = p.resolve().parent, 0
    for t in _external_tensors(m):
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = (folder / loc).resolve()
        if not loc or os.path.isabs(loc) or folder not in target.parents:
            raise ValueError(f"{p}: tensor {t.name[:60]!r} keeps its data at {loc[:80]!r}, not a relative path inside the "
                             f"model's folder "
                             f"(save the model with external data beside it: onnx.save_model(..., "
                             f"save_as_external_data=True, location='weights.bin'))")
        try:
            offset, length = int(info.get("offset", 0) or 0), int(info.get("length", 0) or 0)
            size = os.stat(target).st_size
        except (ValueError, OSError):
            raise ValueError(f"{p}: tensor {t.name[:60]!r}: its external data {loc[:80]!r} cannot be read (keep "
                             f"the data file beside the model)") from None
        if not os.path.isfile(target) or offset < 0 or length < 0 or offset + length > size:
            raise ValueError(f"{p}: tensor {t.name[:60]!r}: its external data {loc[:80]!r} does not hold the "
                             f"{length:,} bytes at {offset:,} it declares (truncated? copy the data file again)")
        total += length or size
        if total > MAX_TOTAL_BYTES:
            raise ValueError(f"{p}: its external data exceeds {MAX_TOTAL_BYTES >> 30} GiB (split the model)")


def load_onnx(model):
    import onnx

    from explainer._bounds import Limits, open_untrusted

    if isinstance(model, onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        return m
    if isinstance(model, (bytes, bytearray)):
        if len(model) > ONNX_FILE_BYTES:
            raise ValueError(f"model_path: {len(model):,} bytes, over protobuf's 2 GiB limit for one model (give "
                             f"the .onnx file's path, with its weights in external data)")
        try:
            m = onnx.load_from_string(bytes(model))
        except Exception as e:  # DecodeError and others for bytes that are not a model
            raise ValueError(f"model_path: the bytes are not an ONNX model ({type(e).__name__}) (give the .onnx "
                             f"file's path or its bytes)") from None
        if _external_tensors(m):
            raise ValueError("model_path: the model keeps weights in external data files, which its bytes do not "
                             "carry (give the .onnx file's path)")
        return m
    if isinstance(model, (str, Path)):
        p = Path(model)
        if not p.is_file():
            raise ValueError(f"model_path: file {str(p)!r} does not exist (expected an .onnx file)")
        try:
            with open_untrusted(p, Limits(max_file_bytes=ONNX_FILE_BYTES)) as (f, _):
                m = onnx.load_from_string(f.read())
        except ValueError as e:  # the bounded opener's refusals
            raise ValueError(f"{p}: {e} (expected an .onnx file)") from None
        except Exception as e:  # onnx raises DecodeError and others for a file that is not a model
            raise ValueError(f"{p}: not an ONNX model ({type(e).__name__}: {e})") from None
        if _external_tensors(m):
            _check_external_data(m, p)
            try:
                onnx.external_data_helper.load_external_data_for_model(m, str(p.resolve().parent))
            except Exception as e:
                raise ValueError(f"{p}: its external data cannot be read ({type(e).__name__}) (keep the data file "
                                 f"beside the model)") from None
        return m
    raise ValueError(f"model_path must be a path, bytes or an onnx.ModelProto, got {type(model).__name__}")


_CALL_SUFFIX = re.compile(r"^(.*)_(\d+)$")


def module_path(scope: Sequence[str]) -> str:
    """The module path (as in ``named_modules()``) of a scope the TorchScript exporter writes into node names.

    The exporter names a module inside a container after its path from the container's owner:
    ``/backbone/body/layer1/layer1.0/conv1/Conv`` is ``backbone.body.layer1.0.conv1``, and
    ``/roi_heads/mask_head/mask_head.0/mask_head.0.0/Conv`` is ``roi_heads.mask_head.0.0``: a component that
    extends the previous one by ``.`` replaces it. A module's second call is ``name_1``; a container called
    again gives its children's scopes under ``conv_1/conv.0``, which is the child's call too. The call number
    (the largest met on the way) ends the path as ``_k``: ``rpn.head.conv.0.0_3``.
    """
    parts: List[str] = []
    call = 0
    for comp in scope:
        if parts and comp.startswith(parts[-1] + "."):
            parts[-1] = comp
            continue
        m = _CALL_SUFFIX.match(parts[-1]) if parts else None
        if m and comp.startswith(m.group(1) + "."):       # "conv_1" then "conv.0": the container's call 1
            call = max(call, int(m.group(2)))
            parts[-1] = comp
            continue
        parts.append(comp)
    path = ".".join(parts)
    if call:
        m = _CALL_SUFFIX.match(parts[-1])
        own = int(m.group(2)) if m else 0
        base = path[: -len(m.group(0)) + len(m.group(1))] if m else path
        return f"{base}_{max(call, own)}"
    return path


def onnx_scopes(model: Union["onnx.ModelProto", str, os.PathLike]) -> Dict[str, Dict[str, List[str]]]:
    """{module path: {"outputs": values it produced, "inputs": values it read}} of a model exported by
    ``torch.onnx.export``, in graph order.

    The TorchScript route (``dynamo=False``) names each node after the module that created it
    (``/rpn/head/conv/conv.0/Conv``); the dynamo route keeps the module paths in each node's metadata
    (:data:`NAME_SCOPES`). A value is
    one of a module's outputs when a node inside the module produced it and a node outside it (or the graph's
    output) reads it, and one of its inputs when a node inside reads it and it was made outside (a graph input
    or another module's value; initializers and constants are left out). Module paths follow
    :func:`module_path`; a module called a second time is ``path_1``.
    """
    graph = load_onnx(model).graph
    constants = _constant_values(graph)
    producer, consumers = _producers_and_consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    out: Dict[str, Dict[str, List[str]]] = {}
    paths: Dict[Tuple[str, ...], str] = {}

    def entry(prefix: Tuple[str, ...]) -> Dict[str, List[str]]:
        if prefix not in paths:
            paths[prefix] = module_path(prefix)
        return out.setdefault(paths[prefix], {"outputs": [], "inputs": []})

    for node in graph.node:
        for v in node.output:
            scope = producer.get(v, ())
            for k in range(1, len(scope) + 1):
                if v in graph_outputs or any(cs[:k] != scope[:k] for cs in consumers.get(v, [])):
                    entry(scope[:k])["outputs"].append(v)
    seen = set()
    for node in graph.node:
        scope = _scope(node)
        for v in node.input:
            if v and v not in constants and v in producer:
                for k in range(1, len(scope) + 1):
                    if producer[v][:k] != scope[:k] and (scope[:k], v) not in seen:
                        seen.add((scope[:k], v))
                        entry(scope[:k])["inputs"].append(v)
    return out


def _constant_values(graph) -> set:
    """Initializers, constants, and values computed from them alone (an Identity of a weight)."""
    constants = {i.name for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" or (n.input and all(v in constants for v in n.input if v)):
            constants.update(v for v in n.output if v)
    return constants


def _producers_and_consumers(graph) -> Tuple[Dict[str, Tuple[str, ...]], Dict[str, List[Tuple[str, ...]]]]:
    """({value: scope of the node that made it (graph inputs: ())}, {value: scopes of the nodes that read it})."""
    producer: Dict[str, Tuple[str, ...]] = {i.name: () for i in graph.input}
    consumers: Dict[str, List[Tuple[str, ...]]] = {}
    for node in graph.node:
        scope = _scope(node)
        for v in node.output:
            if v:
                producer[v] = scope
        for v in node.input:
            if v:
                consumers.setdefault(v, []).append(scope)
    return producer, consumers


#: Where the dynamo exporter keeps a node's module scopes: a list of module paths, the root first, the node last.
NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def _scope(node) -> Tuple[str, ...]:
    """A node's module scope: the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata (``['', 'body',
    'body.layer1', 'body.layer1.0', 'body.layer1.0.relu', 'relu_1']``: each a full module path, every call of a
    module in the same scope), else the path the TorchScript exporter wrote into the node's name
    (``/rpn/head/conv/Conv``)."""
    for p in node.metadata_props:
        if p.key == NAME_SCOPES:
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return ()
            if isinstance(scopes, list) and all(isinstance(x, str) for x in scopes):
                return tuple(x for x in scopes[1:-1] if x)
            return ()
    name = node.name
    return tuple(p for p in name.split("/")[1:-1] if p) if name.startswith("/") else ()


def onnx_module_outputs(model: Union["onnx.ModelProto", str, os.PathLike]) -> Dict[str, List[str]]:
    """{module path: the values it produced} for a model exported by ``torch.onnx.export``
    (the ``outputs`` of :func:`onnx_scopes`)."""
    return {k: v["outputs"] for k, v in onnx_scopes(model).items() if v["outputs"]}


def _feed_array(name: str, value: Any, elem_type: int) -> np.ndarray:
    import onnx

    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    want = onnx.helper.tensor_dtype_to_np_dtype(elem_type) if elem_type else arr.dtype
    if arr.dtype != want:
        if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(want, np.floating):
            arr = arr.astype(want)
        elif np.issubdtype(arr.dtype, np.integer) and np.issubdtype(want, np.integer):
            arr = arr.astype(want)
        else:
            raise ValueError(f"feeds[{name!r}] has dtype {arr.dtype}, the model expects {np.dtype(want)}")
    return np.ascontiguousarray(arr)


def _run_onnx(extracted, opts, providers, node_values, arrays) -> List[Any]:
    import onnx
    import onnxruntime as ort

    try:
        data = extracted.SerializeToString()       # protobuf refuses a model over 2 GB (EncodeError, ValueError)
    except Exception:
        data = None
    if data is not None:
        sess = ort.InferenceSession(data, opts, providers=list(providers))
        return sess.run(node_values, arrays)
    with tempfile.TemporaryDirectory(prefix="explainer-trace-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(extracted, str(path), save_as_external_data=True, location="weights.bin")
        sess = ort.InferenceSession(str(path), opts, providers=list(providers))
        got = sess.run(node_values, arrays)
        del sess
        return got


def _subgraph_values(graph) -> Dict[str, str]:
    """{value produced inside a subgraph (an ``If`` branch, a ``Loop`` body, ...): the main-graph node that holds it}."""
    inside: Dict[str, str] = {}

    def walk(g, owner: str) -> None:
        for node in g.node:
            for a in node.attribute:
                subs = ([a.g] if a.HasField("g") else []) + list(a.graphs)
                for sub in subs:
                    for n in sub.node:
                        for v in n.output:
                            if v:
                                inside.setdefault(v, owner or node.name or node.op_type)
                    walk(sub, owner or node.name or node.op_type)

    walk(graph, "")
    return inside


def onnx_intermediates(model_path: Union["onnx.ModelProto", str, os.PathLike], feeds: Mapping[str, Any], names: Optional[Sequence[str]] = None,
                       providers: Sequence[str] = ("CPUExecutionProvider",)) -> Dict[str, np.ndarray]:
    """Run an ONNX model in ONNX Runtime and return chosen intermediate values, computed by ONNX Runtime.

    ``model_path``: an ``.onnx`` file (or an ``onnx.ModelProto`` / its bytes); ``feeds``: {graph input name:
    array or tensor} (floating feeds are cast to the input's float type); ``names``: the values to return (node
    outputs of the main graph or graph inputs; default every graph input and every node output). The chosen
    values become extra outputs of a copy of the whole model, so ONNX Runtime runs every node in the original
    order, through ``If``, ``Loop``, ``TopK`` and ``NonZero`` and the data-dependent shapes they make. The copy
    runs from memory; a model over protobuf's 2 GB limit goes through a temporary directory that is always
    removed. The user's file is never written. A value that cannot be exposed (one computed inside an ``If``
    branch or a ``Loop`` body) is refused by name, with the node that holds it. Returns {name: array} in graph
    order (inputs first).
    """
    import onnxruntime as ort

    model = load_onnx(model_path)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    input_names = [i.name for i in inputs]
    if not isinstance(feeds, Mapping):
        raise ValueError(f"feeds must be a dict {{input name: array}}, got {type(feeds).__name__}")
    missing = [n for n in input_names if n not in feeds]
    extra = [n for n in feeds if n not in input_names]
    if missing or extra:
        raise ValueError(f"feeds must give exactly the model's inputs {input_names}; missing {missing}, unknown {extra}")
    produced = [v for node in graph.node for v in node.output if v]
    order = input_names + produced
    if names is None:
        wanted = order
    else:
        if isinstance(names, str):
            raise ValueError("names must be a list of value names, not one string")
        known = set(order)
        unknown = [n for n in names if n not in known]
        if unknown:
            inner = _subgraph_values(graph)
            held = [f"{n} (computed inside {inner[n]}'s subgraph, which ONNX Runtime does not expose; compare "
                    f"that node's output instead)" for n in unknown if n in inner]
            if held:
                raise ValueError(f"names: {len(held)} value(s) cannot be exposed: {'; '.join(held[:5])}")
            raise ValueError(f"names: no value {unknown} in the model; values include {order[:10]}")
        pos = {n: i for i, n in enumerate(order)}
        wanted = sorted(dict.fromkeys(names), key=pos.__getitem__)
    arrays = {i.name: _feed_array(i.name, feeds[i.name], i.type.tensor_type.elem_type) for i in inputs}
    node_values = [n for n in wanted if n not in arrays]
    result: Dict[str, np.ndarray] = {n: arrays[n] for n in wanted if n in arrays}
    if node_values:
        exposed = _with_outputs(model, node_values)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            got = _run_onnx(exposed, opts, providers, node_values, arrays)
        except Exception as e:  # onnxruntime's Fail, InvalidArgument, InvalidGraph, ... on a model it cannot run
            raise ValueError(f"model_path: ONNX Runtime cannot run the model ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:300]}) (check it with onnx.checker.check_model)") from None
        for n, v in zip(node_values, got):
            result[n] = v
    return {n: result[n] for n in wanted}


def _with_outputs(model, values: Sequence[str]):
    """A copy of the whole model whose graph outputs are its own outputs and then ``values``, declared without a
    type (ONNX Runtime takes each value's type from the node that makes it; shapes are left to the run, since
    top-k and NMS make them data-dependent)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in values if n not in present)
    return m
