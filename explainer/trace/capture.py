"""Capturing the stages of a run: a ``torch.nn.Module``'s intermediate outputs, or an ONNX model's in ONNX Runtime.

The capture half of :mod:`explainer.trace` (which re-exports these functions): :func:`record` taps module
outputs with forward hooks; :func:`onnx_intermediates` exposes chosen values of an ONNX model as graph outputs of
a copy (``onnx.utils.Extractor`` after ``onnx.shape_inference``) and lets ONNX Runtime compute them;
:func:`onnx_module_outputs` maps the module paths that ``torch.onnx.export`` (TorchScript route) writes into node
names to the values each module produced.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:  # only for annotations: onnx is imported where it is used
    import onnx

import numpy as np
import torch

from explainer._bounds import MAX_TOTAL_BYTES, ONNX_FILE_BYTES

__all__ = ["record", "onnx_intermediates", "onnx_module_outputs"]


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


def record(module: torch.nn.Module, *inputs: Any, names: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    """Run ``module(*inputs)`` under ``torch.no_grad()`` and return the outputs of its submodules, by module path.

    ``names``: the module paths to tap (``dict(module.named_modules())`` keys; ``""`` is the module itself, recorded
    as ``"output"``); default every submodule. A module that returns a tuple or list gives ``name.0``,
    ``name.1``, ... (a dict, ``name.key``); a module called twice gives ``name`` then ``name:1``. Outputs are
    cloned (an in-place operation later in the network cannot change them) and keep the order in which they were
    produced. The hooks are removed afterwards, also when the forward pass raises.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    modules = dict(module.named_modules())
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
    out: Dict[str, torch.Tensor] = {}
    calls: Counter = Counter()

    def hook_for(path: str):
        def hook(_mod, _args, output):
            k = calls[path]
            calls[path] += 1
            base = path or "output"
            _flatten_output(base if k == 0 else f"{base}:{k}", output, out)
        return hook

    handles = []
    try:
        for path in targets:
            handles.append(modules[path].register_forward_hook(hook_for(path)))
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return out


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


def onnx_module_outputs(model: Union["onnx.ModelProto", str, os.PathLike]) -> Dict[str, List[str]]:
    """{module path: the values it produced} for a model exported by ``torch.onnx.export(..., dynamo=False)``.

    That exporter names each node after the module that created it (``/rpn_head/objectness_logits/Conv``); a
    value belongs to a module's outputs when a node inside the module produced it and a node outside it (or the
    graph's output) reads it. Values are listed in graph order.
    """
    m = load_onnx(model)
    graph = m.graph
    producer_scope: Dict[str, Tuple[str, ...]] = {}
    consumers: Dict[str, List[Tuple[str, ...]]] = {}
    for node in graph.node:
        scope = tuple(p for p in node.name.split("/")[1:-1] if p) if node.name.startswith("/") else ()
        for v in node.output:
            if v:
                producer_scope[v] = scope
        for v in node.input:
            if v:
                consumers.setdefault(v, []).append(scope)
    graph_outputs = {o.name for o in graph.output}
    out: Dict[str, List[str]] = {}
    for node in graph.node:
        for v in node.output:
            scope = producer_scope.get(v, ())
            for k in range(1, len(scope) + 1):
                prefix = scope[:k]
                leaves = v in graph_outputs or any(cs[:k] != prefix for cs in consumers.get(v, []))
                if leaves:
                    out.setdefault(".".join(prefix), []).append(v)
    return out


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

    if extracted.ByteSize() < (1 << 31) - (1 << 20):
        sess = ort.InferenceSession(extracted.SerializeToString(), opts, providers=list(providers))
        return sess.run(node_values, arrays)
    with tempfile.TemporaryDirectory(prefix="explainer-trace-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(extracted, str(path), save_as_external_data=True, location="weights.bin")
        sess = ort.InferenceSession(str(path), opts, providers=list(providers))
        got = sess.run(node_values, arrays)
        del sess
        return got


def onnx_intermediates(model_path: Union["onnx.ModelProto", str, os.PathLike], feeds: Mapping[str, Any], names: Optional[Sequence[str]] = None,
                       providers: Sequence[str] = ("CPUExecutionProvider",)) -> Dict[str, np.ndarray]:
    """Run an ONNX model in ONNX Runtime and return chosen intermediate values, computed by ONNX Runtime.

    ``model_path``: an ``.onnx`` file (or an ``onnx.ModelProto`` / its bytes); ``feeds``: {graph input name:
    array or tensor} (floating feeds are cast to the input's float type); ``names``: the values to return (node
    outputs or graph inputs; default every graph input and every node output). The model is copied with
    ``onnx.utils.Extractor`` (which runs ``onnx.shape_inference`` and turns the chosen values into graph outputs
    with their inferred types), and ONNX Runtime runs that copy from memory; a model over protobuf's 2 GB limit
    goes through a temporary directory that is always removed. The user's file is never written.
    Returns {name: array} in graph order (inputs first).
    """
    import onnx
    import onnxruntime as ort
    from onnx.utils import Extractor

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
            raise ValueError(f"names: no value {unknown} in the model; values include {order[:10]}")
        pos = {n: i for i, n in enumerate(order)}
        wanted = sorted(dict.fromkeys(names), key=pos.__getitem__)
    arrays = {i.name: _feed_array(i.name, feeds[i.name], i.type.tensor_type.elem_type) for i in inputs}
    node_values = [n for n in wanted if n not in arrays]
    result: Dict[str, np.ndarray] = {n: arrays[n] for n in wanted if n in arrays}
    if node_values:
        inferred = onnx.shape_inference.infer_shapes(model)
        typed = {v.name for v in (*inferred.graph.value_info, *inferred.graph.output)}
        # a value shape inference could not type (a custom operator's output) is exposed without a type
        inferred.graph.value_info.extend(onnx.helper.make_empty_tensor_value_info(n)
                                         for n in node_values if n not in typed)
        extracted = Extractor(inferred).extract_model(input_names, node_values)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            got = _run_onnx(extracted, opts, providers, node_values, arrays)
        except Exception as e:  # onnxruntime's Fail, InvalidArgument, InvalidGraph, ... on a model it cannot run
            raise ValueError(f"model_path: ONNX Runtime cannot run the model ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:300]}) (check it with onnx.checker.check_model)") from None
        for n, v in zip(node_values, got):
            result[n] = v
    return {n: result[n] for n in wanted}
