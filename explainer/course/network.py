"""The course detector as one ``torch.nn.Module``: what ``torch.onnx.export`` sees, and what ONNX Runtime runs.

:class:`CourseNetwork` carries the weights of a fitted :class:`explainer.course.pipeline.MiniDetector` and computes,
with tensor operations only, what the detector computes up to its heads, for one image and given boxes:

===============================  =========================================================  ======================
stage (module path)              what it computes                                           shape
===============================  =========================================================  ======================
``input``                        the image as fed: BGR, 0-255 (Detectron2's                  1 x 3 x H x W
                                 ``INPUT.FORMAT = "BGR"``)
``preprocess``                   (image - ``MODEL.PIXEL_MEAN``) / ``MODEL.PIXEL_STD``        1 x 3 x H x W
``backbone``                     the colour likelihood of each class and their maximum       1 x (K + 1) x H x W
                                 (:func:`explainer.course.pipeline.colour_maps`) as a 1 x 1 conv,
                                 a square and an exp, on the normalised BGR image
``rpn_pool``                     the foreground map averaged over 8 x 8 pixels (stride 8)    1 x 1 x H/8 x W/8
``rpn_features``                 window means, contrasts (one fixed 9 x 9 conv) and their    1 x 65 x H/8 x W/8
                                 pairwise products
``rpn_head.objectness_logits``   one 1 x 1 conv per output: the RPN's objectness             1 x A x H/8 x W/8
``rpn_head.anchor_deltas``       and box deltas (A anchor types, rows as fitted)             1 x 4A x H/8 x W/8
``upsample``                     objectness upsampled by 8 to the image,                     1 x A x H x W
                                 ``F.interpolate(mode="bilinear", align_corners=False)``
``head_pool``                    the backbone maps averaged over 2 x 2 pixels (stride 2)     1 x (K + 1) x H/2 x W/2
``box_pooler``                   torchvision's ``roi_align`` 7 x 7 of each box, then of      2N x (K + 1) x 7 x 7
                                 the box enlarged 1.6 times (``aligned``,
                                 ``sampling_ratio``)
``box_head``                     each box's two pooled maps, flattened                       N x 2(K + 1) 49
``box_predictor.cls_score``      class logits (a linear layer; background row last)          N x (K + 1)
``box_predictor.bbox_pred``      class-specific box deltas (a linear layer)                   N x 4K
===============================  =========================================================  ======================

The numbers equal :meth:`explainer.course.pipeline.MiniDetector.run` on the same image and boxes (the tests compare
objectness and class probabilities with it), so a fitted detector's behaviour carries over. Anchor decoding,
NMS and post-processing stay outside the graph, as they do in many exported detectors.

:func:`export_onnx` exports with the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``), the
route on which torchvision registers ``roi_align``'s ONNX symbolic functions, one for opset 11 and one for
opset 16 (``torchvision/ops/_register_onnx_ops.py``: ``roi_align_opset11`` and ``roi_align_opset16``). ONNX's
``RoiAlign`` gained ``coordinate_transformation_mode`` in opset 16; ``roi_align_opset11`` has no place to put
``aligned=True`` and only warns. :data:`MISMATCHES` and :func:`run_case` build the conversion mistakes that
chapter 11 traces, each as a real export run in ONNX Runtime.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from explainer import trace
from explainer._validate import as_boxes, as_tensor, flag, whole_number
from explainer.conventions import DETECTRON2
from explainer.course import pipeline as P
from explainer.course.cache import fitted_detector
from explainer.trace import causes as TC

if TYPE_CHECKING:  # only for annotations: onnx is imported where it is used
    import onnx

__all__ = [
    "PIXEL_MEAN", "PIXEL_STD", "STAGES", "CourseNetwork", "export_onnx", "set_resize_mode", "onnx_stage_names",
    "image_to_bgr", "box_pooler_spec", "MISMATCHES", "Case", "CaseBuilder",
]

#: Detectron2's default ``MODEL.PIXEL_MEAN`` (BGR order, since ``INPUT.FORMAT`` defaults to BGR) and
#: ``MODEL.PIXEL_STD``, from ``detectron2/config/defaults.py``.
PIXEL_MEAN: Tuple[float, float, float] = (103.530, 116.280, 123.675)
PIXEL_STD: Tuple[float, float, float] = (1.0, 1.0, 1.0)

#: The stages :func:`explainer.trace.record` taps, in network order (module paths; ``input`` is the image as fed).
STAGES: Tuple[str, ...] = (
    "input", "preprocess", "backbone", "rpn_pool", "rpn_features", "rpn_head.objectness_logits",
    "rpn_head.anchor_deltas", "upsample", "head_pool", "box_pooler", "box_head", "box_predictor.cls_score",
    "box_predictor.bbox_pred",
)

#: The window sizes and contrast half-widths of the RPN's location features (one fixed 9 x 9 conv).
_RPN_WINDOWS = (3, 5, 9)


def _likelihood_width() -> float:
    """The width sigma of :func:`explainer.course.pipeline.colour_maps`' likelihood exp(-d^2 / (2 sigma^2)), read off it.

    Measured on a one-pixel image at a known colour distance from class 0's colour, so that this network
    follows the features the detector was fitted on.
    """
    d = 0.1
    probe = (P.CLASS_COLOURS[0] + torch.tensor([d, 0.0, 0.0])).view(3, 1, 1).double()
    lik = float(P.colour_maps(probe.float())[0, 0, 0].double())
    return float((d * d / (-2.0 * torch.log(torch.tensor(lik, dtype=torch.float64)))).sqrt())


def _bias(layer: nn.Module) -> torch.Tensor:
    b = getattr(layer, "bias", None)
    if not isinstance(b, torch.Tensor):
        raise ValueError(f"{type(layer).__name__} has no bias")
    return b


class Preprocess(nn.Module):
    """(image - pixel_mean) / pixel_std per channel, as Detectron2's ``GeneralizedRCNN.preprocess_image``."""

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, pixel_mean: Sequence[float], pixel_std: Sequence[float]):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.pixel_mean) / self.pixel_std


class ColourBackbone(nn.Module):
    """The colour likelihoods of :func:`explainer.course.pipeline.colour_maps`, on the normalised BGR image.

    With x the normalised image, the squared distance of a pixel's RGB colour in [0, 1] to class k's colour is
    sum_c (s_c x_c - t_kc)^2 with s_c = std_c / 255 and t_kc = colour_kc - mean_c / 255 (channels in BGR order):
    a 1 x 1 conv (weights -2 s_c t_kc, bias sum_c t_kc^2) plus sum_c s_c^2 x_c^2. The weights are fixed when the
    network is built, from the pixel mean and std the detector was fitted with.
    """

    def __init__(self, pixel_mean: Sequence[float], pixel_std: Sequence[float]):
        super().__init__()
        mean = torch.tensor(pixel_mean, dtype=torch.float64)
        std = torch.tensor(pixel_std, dtype=torch.float64)
        s = std / 255.0
        t = P.CLASS_COLOURS.double().flip(1) - mean / 255.0          # K x 3, BGR order
        k = len(t)
        self.distance = nn.Conv2d(3, k, 1)
        self.square = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.distance.weight.copy_((-2.0 * s * t).view(k, 3, 1, 1).float())
            _bias(self.distance).copy_((t * t).sum(1).float())
            self.square.weight.copy_((s * s).view(1, 3, 1, 1).float())
        self.inv_two_var = 1.0 / (2.0 * _likelihood_width() ** 2)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d2 = self.distance(x) + self.square(x * x)
        lik = torch.exp(-d2 * self.inv_two_var)
        return torch.cat([lik, lik.amax(dim=1, keepdim=True)], dim=1)


class RPNPool(nn.Module):
    """The foreground map (the backbone's last channel) averaged over stride x stride pixels."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = int(stride)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(maps[:, -1:], self.stride)


class RPNFeatures(nn.Module):
    """Per location: the foreground, its means over 3, 5, 9 cells, left/right and up/down contrasts over 1, 2, 4
    cells (one fixed 9 x 9 conv, zero padding), then every pairwise product of those 10 maps (i <= j)."""

    def __init__(self):
        super().__init__()
        n = 1 + 3 * len(_RPN_WINDOWS)
        w = torch.zeros(n, 1, 9, 9, dtype=torch.float64)
        w[0, 0, 4, 4] = 1.0
        for i, k in enumerate(_RPN_WINDOWS):
            half = k // 2
            w[1 + 3 * i, 0, 4 - half:5 + half, 4 - half:5 + half] = 1.0 / (k * k)
            w[2 + 3 * i, 0, 4, 5:5 + half] = 1.0 / half              # along x: the cells after ...
            w[2 + 3 * i, 0, 4, 4 - half:4] = -1.0 / half             # ... minus the cells before
            w[3 + 3 * i, 0, 5:5 + half, 4] = 1.0 / half              # along y
            w[3 + 3 * i, 0, 4 - half:4, 4] = -1.0 / half
        self.windows = nn.Conv2d(1, n, 9, padding=4, bias=False)
        with torch.no_grad():
            self.windows.weight.copy_(w.float())
        self.windows.weight.requires_grad_(False)
        i, j = torch.triu_indices(n, n)
        self.register_buffer("first", i.clone())
        self.register_buffer("second", j.clone())

    def forward(self, fg: torch.Tensor) -> torch.Tensor:
        f = self.windows(fg)
        quad = f.index_select(1, self.first) * f.index_select(1, self.second)
        return torch.cat([f, quad], dim=1)


class RPNHead(nn.Module):
    """Objectness and deltas per anchor type: two 1 x 1 convs (Detectron2's ``StandardRPNHead`` names)."""

    def __init__(self, rpn_w: torch.Tensor):
        super().__init__()
        a, d, _ = rpn_w.shape                                        # A x D x 5; the last feature is the bias
        self.objectness_logits = nn.Conv2d(d - 1, a, 1)
        self.anchor_deltas = nn.Conv2d(d - 1, 4 * a, 1)
        with torch.no_grad():
            self.objectness_logits.weight.copy_(rpn_w[:, :-1, 0].reshape(a, d - 1, 1, 1))
            _bias(self.objectness_logits).copy_(rpn_w[:, -1, 0])
            deltas = rpn_w[:, :, 1:].permute(0, 2, 1).reshape(4 * a, d)  # rows (anchor, coordinate)
            self.anchor_deltas.weight.copy_(deltas[:, :-1].reshape(4 * a, d - 1, 1, 1))
            _bias(self.anchor_deltas).copy_(deltas[:, -1])

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.objectness_logits(features), self.anchor_deltas(features)


class Upsample(nn.Module):
    """``F.interpolate`` by an integer factor, bilinear, ``align_corners=False`` (ONNX ``Resize``, half-pixel)."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = int(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=float(self.factor), mode="bilinear", align_corners=False)


class HeadPool(nn.Module):
    """The backbone maps averaged over stride x stride pixels: the map the box head pools from."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = int(stride)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(maps, self.stride)


class BoxPooler(nn.Module):
    """torchvision's ``roi_align`` of each box and of the box enlarged ``context`` times around its centre."""

    def __init__(self, output_size: int, spatial_scale: float, sampling_ratio: int, aligned: bool, context: float):
        super().__init__()
        self.output_size, self.spatial_scale = int(output_size), float(spatial_scale)
        self.sampling_ratio, self.aligned, self.context = int(sampling_ratio), bool(aligned), float(context)

    def forward(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return roi_align(features, _rois_with_context(boxes, self.context), self.output_size,
                         spatial_scale=self.spatial_scale, sampling_ratio=self.sampling_ratio, aligned=self.aligned)


def _rois_with_context(boxes: torch.Tensor, context: float) -> torch.Tensor:
    """Tensor[2N, 5] (batch index 0, x1, y1, x2, y2): the boxes, then the boxes enlarged ``context`` times."""
    ctr = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    half = (boxes[:, 2:] - boxes[:, :2]) * (0.5 * context)
    both = torch.cat([boxes, torch.cat([ctr - half, ctr + half], dim=1)], dim=0)
    return torch.cat([torch.zeros_like(both[:, :1]), both], dim=1)


class BoxHead(nn.Module):
    """Each box's pooled map and its context's, side by side, flattened: Tensor[N, 2C, S, S] -> N x 2CSS."""

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        per_roi = pooled.flatten(1)
        return per_roi.reshape(2, -1, per_roi.shape[1]).transpose(0, 1).flatten(1)


class BoxPredictor(nn.Module):
    """Class logits and class-specific deltas: two linear layers (Detectron2's ``FastRCNNOutputLayers`` names)."""

    def __init__(self, cls_w: torch.Tensor, box_w: torch.Tensor):
        super().__init__()
        p = cls_w.shape[0] - 1                                       # the last feature is the bias
        self.cls_score = nn.Linear(p, cls_w.shape[1])
        self.bbox_pred = nn.Linear(p, box_w.shape[1])
        with torch.no_grad():
            self.cls_score.weight.copy_(cls_w[:-1].T)
            self.cls_score.bias.copy_(cls_w[-1])
            self.bbox_pred.weight.copy_(box_w[:-1].T)
            self.bbox_pred.bias.copy_(box_w[-1])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class CourseNetwork(nn.Module):
    """The course detector's network (see the module's table). ``forward(image, boxes)``:

    ``image``: Tensor[1, 3, H, W] float32, **BGR, 0-255**, H and W multiples of 8; ``boxes``: Tensor[N, 4] (x1, y1, x2, y2) in
    image pixels, continuous coordinates. Returns (objectness Tensor[1, A, H/8, W/8], deltas Tensor[1, 4A, H/8, W/8],
    objectness upsampled to Tensor[1, A, H, W], class logits Tensor[N, K + 1], box deltas Tensor[N, 4K]).

    The weights come from ``detector`` (fitted with :func:`explainer.course.pipeline.fit_detector`) and are read as
    stored, in its layout (anchor rows, background row), as a model loaded without conversion would.
    ``aligned`` and ``sampling_ratio`` default to ``DETECTRON2``'s (``POOLER_TYPE: ROIAlignV2``,
    ``POOLER_SAMPLING_RATIO: 0``).
    """

    def __init__(self, detector: P.MiniDetector, pixel_mean: Sequence[float] = PIXEL_MEAN,
                 pixel_std: Sequence[float] = PIXEL_STD, aligned: bool = DETECTRON2.roi_aligned,
                 sampling_ratio: int = DETECTRON2.sampling_ratio):
        super().__init__()
        if not isinstance(detector, P.MiniDetector):
            raise ValueError(f"detector must be an explainer.course.pipeline.MiniDetector (from fit_detector), "
                             f"got {type(detector).__name__}")
        for name, v in (("pixel_mean", pixel_mean), ("pixel_std", pixel_std)):
            if len(v) != 3 or not all(isinstance(x, (int, float)) for x in v):
                raise ValueError(f"{name} must be three numbers (B, G, R), got {v!r}")
        if any(float(s) <= 0 for s in pixel_std):
            raise ValueError(f"pixel_std must be positive, got {pixel_std!r}")
        self.input = nn.Identity()
        self.preprocess = Preprocess(pixel_mean, pixel_std)
        self.backbone = ColourBackbone(pixel_mean, pixel_std)
        self.rpn_pool = RPNPool(P.STRIDE)
        self.rpn_features = RPNFeatures()
        self.rpn_head = RPNHead(detector.rpn_w)
        self.upsample = Upsample(P.STRIDE)
        self.head_pool = HeadPool(P.HEAD_STRIDE)
        self.box_pooler = BoxPooler(P.POOL, 1.0 / P.HEAD_STRIDE, sampling_ratio, aligned, P.CONTEXT)
        self.box_head = BoxHead()
        self.box_predictor = BoxPredictor(detector.cls_w, detector.box_w)
        self.eval()

    def forward(self, image: torch.Tensor, boxes: torch.Tensor):
        x = self.preprocess(self.input(image))
        maps = self.backbone(x)
        objectness, deltas = self.rpn_head(self.rpn_features(self.rpn_pool(maps)))
        heat = self.upsample(objectness)
        pooled = self.box_pooler(self.head_pool(maps), boxes)
        scores, box_deltas = self.box_predictor(self.box_head(pooled))
        return objectness, deltas, heat, scores, box_deltas

    def with_pixel_mean(self, pixel_mean: Sequence[float]) -> "CourseNetwork":
        """A copy whose preprocessing subtracts another mean; the backbone keeps the weights it was built with."""
        if len(pixel_mean) != 3:
            raise ValueError(f"pixel_mean must be three numbers (B, G, R), got {pixel_mean!r}")
        out = copy.deepcopy(self)
        out.preprocess.pixel_mean.copy_(torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1))
        return out


def image_to_bgr(image: torch.Tensor) -> torch.Tensor:
    """A scene's Tensor[3, H, W] RGB image in [0, 1] as the network's input: Tensor[1, 3, H, W], BGR, 0-255, float32."""
    image = as_tensor(image, "image")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a 3 x H x W RGB tensor in [0, 1], got {tuple(image.shape)}")
    if image.shape[1] % P.STRIDE or image.shape[2] % P.STRIDE:
        raise ValueError(f"image height and width must be multiples of {P.STRIDE}, got {tuple(image.shape[1:])}")
    return (image.flip(0) * 255.0).unsqueeze(0).to(torch.float32).contiguous()


def box_pooler_spec(boxes: torch.Tensor, aligned: bool = DETECTRON2.roi_aligned,
                    sampling_ratio: int = DETECTRON2.sampling_ratio) -> TC.Pooler:
    """How :class:`CourseNetwork`'s ``box_pooler`` pools ``boxes``, for ``compare(..., poolers=...)``."""
    boxes, aligned = as_boxes(boxes, "boxes").to(torch.float32), flag(aligned, "aligned")
    sampling_ratio = whole_number(sampling_ratio, "sampling_ratio")
    rois = _rois_with_context(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), P.CONTEXT)
    return TC.Pooler(features="head_pool", rois=rois, output_size=(P.POOL, P.POOL),
                           spatial_scale=1.0 / P.HEAD_STRIDE, sampling_ratio=int(sampling_ratio), aligned=bool(aligned))


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def export_onnx(net: nn.Module, image: torch.Tensor, boxes: torch.Tensor, path: Union[str, os.PathLike],
                opset_version: int = 16) -> List[str]:
    """Export ``net`` to ``path`` with the TorchScript exporter (``dynamo=False``); returns its warnings.

    Inputs are named ``image`` and ``boxes`` (the number of boxes is a dynamic axis). The returned list holds the
    text of each ``UserWarning`` the exporter raised (at opset 11, torchvision's warning that ``aligned=True``
    is not exported); its deprecation notice about the TorchScript route is left out.
    """
    if not isinstance(opset_version, int) or not 11 <= opset_version <= 20:
        raise ValueError(f"opset_version must be an integer from 11 to 20, got {opset_version!r}")
    net = net.eval()
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        torch.onnx.export(net, (image, boxes), str(path), dynamo=False, opset_version=opset_version,
                          input_names=["image", "boxes"],
                          output_names=["objectness", "anchor_deltas", "objectness_upsampled", "class_logits",
                                        "box_deltas"],
                          dynamic_axes={"boxes": {0: "n"}, "class_logits": {0: "n"}, "box_deltas": {0: "n"}})
    out = []
    for w in caught:
        if issubclass(w.category, UserWarning) and not issubclass(w.category, DeprecationWarning) \
                and "TracerWarning" not in w.category.__name__:
            text = str(w.message)
            if text not in out:
                out.append(text)
    return out


def set_resize_mode(model: Union["onnx.ModelProto", str, os.PathLike], mode: str) -> "onnx.ModelProto":
    """A copy of an ONNX model whose ``Resize`` nodes use another ``coordinate_transformation_mode``.

    ``model`` is an ``onnx.ModelProto`` or a path; ``mode`` one of ONNX's modes (``"half_pixel"``,
    ``"pytorch_half_pixel"``, ``"align_corners"``, ``"asymmetric"``, ``"tf_crop_and_resize"``). The attribute is
    written with ``onnx.helper.make_attribute``; the model is checked with ``onnx.checker``.
    """
    import onnx

    modes = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize")
    if mode not in modes:
        raise ValueError(f"mode must be one of {modes}, got {mode!r}")
    from explainer.trace.capture import load_onnx  # read within bounds, external data only from beside the model

    m = load_onnx(model if isinstance(model, (onnx.ModelProto, bytes, bytearray)) else os.fspath(model))
    found = 0
    for node in m.graph.node:
        if node.op_type == "Resize":
            keep = [a for a in node.attribute if a.name != "coordinate_transformation_mode"]
            del node.attribute[:]
            node.attribute.extend(keep + [onnx.helper.make_attribute("coordinate_transformation_mode", mode)])
            found += 1
    if not found:
        raise ValueError("model has no Resize node")
    onnx.checker.check_model(m)
    return m


def onnx_stage_names(model: Union["onnx.ModelProto", str, os.PathLike]) -> Dict[str, str]:
    """{stage of :data:`STAGES`: ONNX value name} for an export of :class:`CourseNetwork` by :func:`export_onnx`."""
    found = trace.onnx_module_outputs(model)
    out = {"input": "image"}
    missing = []
    for stage in STAGES[1:]:
        values = found.get(stage, [])
        if len(values) != 1:
            missing.append(f"{stage} ({len(values)} values)")
            continue
        out[stage] = values[0]
    if missing:
        raise ValueError(f"no single ONNX value for stages {missing}; was the model exported by export_onnx?")
    return out


# --------------------------------------------------------------------------------------------------
# the mismatches of chapter 11, each a real export run in ONNX Runtime
# --------------------------------------------------------------------------------------------------
#: Each mismatch: (label, what was done, where it should show first).
MISMATCHES: Dict[str, Tuple[str, str, str]] = {
    "none": ("none (opset 16)", "exported at opset 16: RoiAlign carries coordinate_transformation_mode='half_pixel'",
             "nowhere"),
    "opset11": ("exporter opset 11", "exported at opset 11: torchvision's roi_align_opset11 cannot express "
                "aligned=True; the exporter only warns", "box_pooler"),
    "rgb_input": ("RGB fed to a BGR model", "the image is fed in RGB order to a model that expects BGR",
                  "input"),
    "pixel_mean": ("pixel mean in RGB order", "the exported preprocessing subtracts the pixel mean in RGB order "
                   "(123.675, 116.28, 103.53) from a BGR image", "preprocess"),
    "background_row": ("background row moved", "the classifier's background row moved from last (Detectron2) to "
                       "first (Detectron) without reordering the class rows", "box_predictor.cls_score"),
    "anchor_order": ("anchor rows reordered", "the RPN head's rows written in ratio-major order (Detectron's) and "
                     "read as size-major (Detectron2's)", "rpn_head.objectness_logits"),
    "resize_mode": ("resize mode asymmetric", "the Resize node run with coordinate_transformation_mode='asymmetric' "
                    "instead of PyTorch's half-pixel mapping", "upsample"),
}


@dataclass
class Case:
    """One mismatch, traced: the PyTorch reference, the ONNX Runtime candidate, and how to pair them."""

    mismatch: str
    reference: Dict[str, torch.Tensor]
    candidate: Dict[str, Any]
    name_map: Dict[str, str]
    poolers: Dict[str, Any]
    report: "trace.TraceReport"
    onnx_path: Path
    opset_version: int
    export_warnings: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)


class CaseBuilder:
    """Builds and caches :class:`Case` objects for one detector, image and set of boxes.

    Each ONNX file is exported once per builder into ``workdir`` (which the caller owns and removes).
    """

    def __init__(self, detector: P.MiniDetector, image: torch.Tensor, boxes: torch.Tensor, workdir,
                 atol: float = trace.ATOL, rtol: float = trace.RTOL):
        self.detector = detector
        self.image = image_to_bgr(image)
        self.boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).contiguous()
        if len(self.boxes) == 0:
            raise ValueError("boxes must hold at least one box")
        self.workdir = Path(workdir)
        if not self.workdir.is_dir():
            raise ValueError(f"workdir must be an existing directory, got {str(workdir)!r}")
        self.atol, self.rtol = atol, rtol
        self.net = CourseNetwork(detector)
        self.reference = trace.record(self.net, self.image, self.boxes, names=STAGES)
        self.scene: Any = None
        self._exports: Dict[Tuple[str, int], Tuple[Path, List[str], float]] = {}
        self._cases: Dict[str, Case] = {}

    def _network(self, variant: str) -> CourseNetwork:
        if variant == "pixel_mean":
            return self.net.with_pixel_mean(PIXEL_MEAN[::-1])
        if variant == "background_row":
            det = copy.copy(self.detector)
            k = det.cls_w.shape[1] - 1
            order = [k] + list(range(k)) if not det.background_first else list(range(1, k + 1)) + [0]
            det.cls_w = det.cls_w[:, order].contiguous()
            return CourseNetwork(det)
        if variant == "anchor_order":
            other = "ratio_major" if self.detector.anchor_order == "size_major" else "size_major"
            return CourseNetwork(self.detector.converted(DETECTRON2.replace(anchor_order=other)))
        return self.net

    def export(self, variant: str, opset_version: int = 16) -> Tuple[Path, List[str], float]:
        """(path, exporter warnings, seconds) of the ONNX file of a network variant; exported once."""
        key = (variant, opset_version)
        if key not in self._exports:
            t0 = time.perf_counter()
            path = self.workdir / f"course_{variant}_opset{opset_version}.onnx"
            warns = export_onnx(self._network(variant), self.image, self.boxes, path, opset_version)
            self._exports[key] = (path, warns, time.perf_counter() - t0)
        return self._exports[key]

    def case(self, mismatch: str) -> Case:
        """Export (once), run in ONNX Runtime with every stage exposed, and compare with PyTorch."""
        if mismatch not in MISMATCHES:
            raise ValueError(f"mismatch must be one of {list(MISMATCHES)}, got {mismatch!r}")
        if mismatch in self._cases:
            return self._cases[mismatch]
        with trace.single_thread():
            self._cases[mismatch] = self._case(mismatch)
        return self._cases[mismatch]

    def _case(self, mismatch: str) -> Case:
        variant = mismatch if mismatch in ("pixel_mean", "background_row", "anchor_order") else "base"
        opset = 11 if mismatch == "opset11" else 16
        path, warns, export_s = self.export(variant, opset)
        model: Any = path
        if mismatch == "resize_mode":
            model = set_resize_mode(path, "asymmetric")
        names = onnx_stage_names(model)
        image = self.image.flip(1) if mismatch == "rgb_input" else self.image
        t0 = time.perf_counter()
        cand = trace.onnx_intermediates(model, {"image": image, "boxes": self.boxes}, names=list(names.values()))
        run_s = time.perf_counter() - t0
        poolers = {"box_pooler": box_pooler_spec(self.boxes)}
        t0 = time.perf_counter()
        report = trace.compare(self.reference, cand, name_map=names, poolers=poolers, atol=self.atol, rtol=self.rtol)
        compare_s = time.perf_counter() - t0
        c = Case(mismatch=mismatch, reference=self.reference, candidate=cand, name_map=names, poolers=poolers,
                 report=report, onnx_path=path, opset_version=opset, export_warnings=list(warns),
                 timings={"export_s": export_s, "onnxruntime_s": run_s, "compare_s": compare_s})
        return c


def course_boxes(detector: P.MiniDetector, scene: P.Scene, n: int = 32) -> torch.Tensor:
    """The ``n`` best proposals after NMS of ``detector`` on ``scene`` under Detectron2's conventions (Tensor[N, 4])."""
    run = detector.run(scene, DETECTRON2)
    return run.stages["proposals_nms"]["boxes"][: int(n)].clone()


_COURSE: Dict[str, Any] = {}


def course_builder() -> CaseBuilder:
    """Chapter 11's :class:`CaseBuilder`, made once per process: the detector fitted under Detectron2's conventions
    on 8 scenes (seed 0; :func:`explainer.course.cache.fitted_detector`, so a later kernel reads the fitted weights),
    test scene 1000 and its 32 best proposals. Its ONNX files go to a temporary directory that is removed when the
    process exits."""
    if "builder" not in _COURSE:
        import atexit
        import shutil
        import tempfile

        with trace.single_thread():     # small torch operations: a second thread only waits on a busy core
            det = fitted_detector(DETECTRON2)   # fit_detector on 8 scenes (seed 0), or its cached weights
            scene = P.synthetic_scenes(1, seed=1000)[0]
            workdir = tempfile.mkdtemp(prefix="explainer-onnx-")
            atexit.register(shutil.rmtree, workdir, True)
            builder = CaseBuilder(det, scene.image, course_boxes(det, scene, 32), workdir)
        builder.scene = scene
        _COURSE["builder"] = builder
    return _COURSE["builder"]


def first_divergence_rows(builder: CaseBuilder, mismatches: Sequence[str] = ()) -> List[List[str]]:
    """One row per mismatch (default all): its label, the first divergent stage, the cause, the fitted
    parameters and how many later stages inherit it; computed with ``builder``."""
    rows = []
    for key in mismatches or list(MISMATCHES):
        rep = builder.case(key).report
        label = MISMATCHES[key][0]
        if rep.first_divergence is None:
            rows.append([label, "none", "", "", "0"])
            continue
        s = rep.stages[rep.first_divergence]
        ev = s.cause.evidence
        if s.cause.name == "shift":
            detail = f"(dy, dx) = ({ev['dy']:+.2f}, {ev['dx']:+.2f}) {ev['unit']}"
        elif s.cause.name == "channel_permutation":
            detail = f"p = {ev['permutation']}"
        elif s.cause.name == "channel_affine":
            detail = f"scale {[round(v, 3) for v in ev['scale']]}, bias {[round(v, 3) for v in ev['bias']]}"
        else:
            detail = ""
        n_inh = sum(x.cause.name == "inherited" for x in rep.stages.values())
        rows.append([label, s.name, s.cause.name, detail, str(n_inh)])
    return rows


__all__ += ["course_boxes", "course_builder", "first_divergence_rows"]
