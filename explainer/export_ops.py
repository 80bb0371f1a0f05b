"""Caffe2 detection operators and the flags that carry the two conventions, as data; Detectron2's export paths, and
what torch's two ONNX exporters write for ROIAlign, exported live.

Source: Caffe2's detection operators gained a ``legacy_plus_one`` argument (default ``True``) in
pytorch PR #20550 ("make box plus one a legacy argument in detection ops"); ``RoIAlign`` gained a
separate ``aligned`` argument (PR #23706). Detectron2's Caffe2 exporter (``detectron2/export/c10.py``,
``caffe2_modeling.py``) passes ``legacy_plus_one=False`` to every op that has it and forwards the
pooler's ``aligned``. Chapters render these tables and attach live checks computed by the package.

Detectron2's ``tools/deploy/export_model.py`` exports by one of three methods (:data:`DETECTRON2_EXPORT_METHODS`);
its ``tracing`` method calls ``torch.onnx.export(..., opset_version=STABLE_ONNX_OPSET_VERSION)``, 11
(``detectron2/export/__init__.py``), without choosing an exporter. :func:`export_roi_align_onnx` exports
torchvision's ``roi_align`` with either exporter and reads back the opset and the ``RoiAlign`` mode written, and what
ONNX Runtime computes with them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any, Dict, Iterator, List, Optional

import torch

from explainer._validate import flag, positive_int

__all__ = ["CAFFE2_LEGACY_PLUS_ONE_OPS", "CAFFE2_OPS_WITHOUT_PLUS_ONE", "caffe2_ops_rows", "DETECTRON2_EXPORT_METHODS",
           "STABLE_ONNX_OPSET_VERSION", "export_roi_align_onnx"]

#: Operators with ``legacy_plus_one``: what the +1 changes inside each, and what the export sets.
CAFFE2_LEGACY_PLUS_ONE_OPS: List[Dict[str, str]] = [
    {
        "op": "GenerateProposals",
        "plus_one_affects": "anchor decoding (width x2-x1+1, decoded x2 minus 1), clipping to W-1, "
                            "min-size filter on +1 sizes, NMS with +1 areas",
        "default": "legacy_plus_one=True",
        "detectron2_export_sets": "legacy_plus_one=False (one op per FPN level, Detectron2 cell anchors passed as a tensor)",
        "live_check": "decode",
    },
    {
        "op": "BBoxTransform",
        "plus_one_affects": "box decoding: width x2-x1+1 and the '- 1' on the decoded x2/y2",
        "default": "legacy_plus_one=True",
        "detectron2_export_sets": "legacy_plus_one=False, apply_scale=True",
        "live_check": "decode",
    },
    {
        "op": "BoxWithNMSLimit",
        "plus_one_affects": "per-class NMS (and soft-NMS) with +1 areas",
        "default": "legacy_plus_one=True",
        "detectron2_export_sets": "legacy_plus_one=False, input_boxes_include_bg_cls=False, output_classes_include_bg_cls=False",
        "live_check": "nms",
    },
    {
        "op": "CollectAndDistributeFpnRpnProposals",
        "plus_one_affects": "FPN level of each RoI from its +1 area",
        "default": "legacy_plus_one=True",
        "detectron2_export_sets": "not used: the export calls CollectRpnProposals then DistributeFpnProposals",
        "live_check": "area",
    },
    {
        "op": "DistributeFpnProposals",
        "plus_one_affects": "BoxesArea / MapRoIsToFpnLevels: FPN level from the +1 area",
        "default": "legacy_plus_one=True",
        "detectron2_export_sets": "legacy_plus_one=False, roi_canonical_scale=224, roi_canonical_level=4",
        "live_check": "area",
    },
]

#: Operators in the same graphs that have no ``legacy_plus_one``.
CAFFE2_OPS_WITHOUT_PLUS_ONE: List[Dict[str, str]] = [
    {"op": "CollectRpnProposals", "why": "only sorts proposals by score and keeps the top N"},
    {"op": "RoIAlign", "why": "has its own 'aligned' argument instead (the half-pixel shift); the export passes the pooler's value"},
]


def caffe2_ops_rows() -> List[List[str]]:
    """The first table as rows (op, what +1 changes, default, what Detectron2's export sets)."""
    return [[d["op"], d["plus_one_affects"], d["default"], d["detectron2_export_sets"]] for d in CAFFE2_LEGACY_PLUS_ONE_OPS]


#: ``detectron2/export/__init__.py``, l. 20: the opset Detectron2's ``tools/deploy/export_model.py`` asks for.
STABLE_ONNX_OPSET_VERSION = 11

#: The three ``--export-method`` values of Detectron2's ``tools/deploy/export_model.py`` (l. 190; default ``tracing``): what
#: each does, the formats it writes and where it is (file: function).
DETECTRON2_EXPORT_METHODS: List[Dict[str, str]] = [
    {"method": "caffe2_tracing", "formats": "caffe2, onnx, torchscript",
     "how": "Caffe2Tracer rewrites the model into Caffe2-compatible modules (caffe2_modeling.py) whose detection "
            "operators get legacy_plus_one=False and the pooler's aligned (the table above), then traces it",
     "where": "tools/deploy/export_model.py l. 40 (export_caffe2_tracing); detectron2/export/api.py l. 22 (Caffe2Tracer)"},
    {"method": "tracing", "formats": "torchscript, onnx",
     "how": "TracingAdapter flattens the model's inputs (a list of dicts holding an image) into a tuple of tensors and "
            "its outputs (Instances: boxes, scores, classes, masks) into a tuple of tensors, keeping the schemas to "
            "rebuild them; then torch.jit.trace, or torch.onnx.export(opset_version=STABLE_ONNX_OPSET_VERSION) with "
            "no exporter chosen",
     "where": "tools/deploy/export_model.py l. 108 (export_tracing; torch.onnx.export at l. 132); "
              "detectron2/export/flatten.py l. 186 (TracingAdapter)"},
    {"method": "scripting", "formats": "torchscript only",
     "how": "scripting_with_instances: torch.jit.script with Instances turned into a scriptable class of fixed "
            "fields",
     "where": "tools/deploy/export_model.py l. 63 (export_scripting); detectron2/export/torchscript.py "
              "(scripting_with_instances)"},
]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress lines, warnings and logged conversion failures (read back from the model)."""
    names = ("torch.onnx", "onnxscript", "torch._dynamo", "torch.export", "torch._export")
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.CRITICAL)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


class _RoIAlign(torch.nn.Module):
    def __init__(self, aligned: bool):
        super().__init__()
        self.aligned = aligned

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchvision.roi_align(x, rois, 1.0, 2, 2, 2, self.aligned)


def export_roi_align_onnx(aligned: bool, *, dynamo: bool, opset_version: Optional[int] = None) -> Dict[str, Any]:
    """Export torchvision's ``roi_align`` (one box on the 8 x 8 map 10 y + x, output 2 x 2, sampling ratio 2) with
    ``torch.onnx.export`` and read back what was written.

    ``dynamo``: the exporter (``True``: the torch.export-based one, torch's default since 2.9; ``False``: the
    TorchScript one, through which torchvision registers ``roi_align`` at opsets 11 and 16). ``opset_version``: the
    opset asked for (None: the exporter's default); Detectron2's ``export_model.py`` asks for
    :data:`STABLE_ONNX_OPSET_VERSION`. Returns ``requested_opset``, ``written_opset`` (the model's default-domain
    opset), ``mode`` (``RoiAlign``'s ``coordinate_transformation_mode``, or ONNX's behaviour where the opset has no
    such attribute: ``output_half_pixel`` before 16), ``ort_vs_aligned`` and ``ort_vs_unaligned`` (largest
    difference between ONNX Runtime's output and torchvision's with ``aligned=True`` / ``False``) and
    ``computes_aligned`` (ONNX Runtime reproduces ``aligned=True``).
    """
    import onnx
    import onnxruntime as ort

    aligned, dynamo = flag(aligned, "aligned"), flag(dynamo, "dynamo")
    if opset_version is not None:
        opset_version = positive_int(opset_version, "opset_version", minimum=7, maximum=30)
    import torchvision  # noqa: F401  (registers torch.ops.torchvision.roi_align and its ONNX export)

    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    x = (10 * ys + xs)[None, None]
    rois = torch.tensor([[0.0, 1.0, 1.0, 5.0, 5.0]])
    model = _RoIAlign(aligned).eval()
    kwargs: Dict[str, Any] = {} if opset_version is None else {"opset_version": opset_version}
    with _quiet():
        if dynamo:
            program = torch.onnx.export(model, (x, rois), dynamo=True, verbose=False, **kwargs)
            if program is None:
                raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
            proto = program.model_proto
        else:
            buffer: Any = io.BytesIO()      # the TorchScript exporter writes to a file object too
            torch.onnx.export(model, (x, rois), buffer, dynamo=False, **kwargs)
            proto = onnx.load_from_string(buffer.getvalue())
    written = next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
    node = next(n for n in proto.graph.node if n.op_type == "RoiAlign")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    mode = attrs.get("coordinate_transformation_mode", b"half_pixel" if written >= 16 else b"output_half_pixel")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), (x, rois))}
    got = torch.from_numpy(session.run(None, feeds)[0])
    ref = {a: torch.ops.torchvision.roi_align(x, rois, 1.0, 2, 2, 2, a) for a in (True, False)}
    vs = {a: float((got - ref[a]).abs().max()) for a in (True, False)}
    return {"exporter": "dynamo (torch.export)" if dynamo else "TorchScript", "aligned": aligned,
            "requested_opset": opset_version, "written_opset": int(written),
            "mode": mode.decode() if isinstance(mode, bytes) else str(mode),
            "ort_vs_aligned": vs[True], "ort_vs_unaligned": vs[False], "computes_aligned": vs[True] < 1e-4}
