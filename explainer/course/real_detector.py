"""A real detector for chapter 11: torchvision's Mask R-CNN R50-FPN, exported, traced, and made wrong on purpose.

The course's miniature detector shows every cause on a network small enough to read. This module runs the same
trace on the kind of network users bring: a ResNet-50 FPN with a multi-level ROI pooler, a data-dependent RPN
top-k and NMS, and a batch padded to a multiple of 32 after normalisation, as Detectron2's ``ImageList`` pads it.

How a random-weight model is made to behave like a trained one where the trace needs it (:func:`build_maskrcnn`):
``torch.manual_seed(0)``, ``weights=None, weights_backbone=None``; ``min_size = max_size`` = the photo's long
side (no resize inside the model); 200 proposals; the box classifier's bias -8 for every class and +8 for COCO ids
1, 3 and 18 (confident classes); both box regressors' weights times 0.05 (at random initialisation they shrink
every box to a sliver); score threshold 0.05, 50 detections. ``aligned_poolers`` swaps torchvision's poolers
(``MultiScaleRoIAlign``, ``aligned=False``) for Detectron2's shape (:class:`LevelPoolers`: one ``RoIAlign`` module
per level, ``aligned=True``, as ``POOLER_TYPE: ROIAlignV2`` builds them in ``modeling/poolers.py``).

:data:`MISTAKES` are the conversion mistakes chapter 11 traces; :class:`RealCaseBuilder` exports and traces each
once per process.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import RoIAlign

from explainer import trace

__all__ = ["LevelPoolers", "STRIDES", "FAVOURED", "build_maskrcnn", "export_detector", "photo", "MISTAKES", "flip_results",
           "RealCase", "RealCaseBuilder", "real_builder"]

#: Strides of the FPN levels the ROI heads pool (p2 to p5).
STRIDES: Tuple[int, ...] = (4, 8, 16, 32)
#: COCO ids whose box-classifier bias is raised, so the random model is confident.
FAVOURED: Tuple[int, ...] = (1, 3, 18)
#: torchvision's ``GeneralizedRCNNTransform`` defaults (ImageNet's mean and std, RGB in [0, 1]).
IMAGE_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)


class LevelPoolers(torch.nn.Module):
    """Detectron2's FPN pooler shape with torchvision's call signature (features dict, boxes, image sizes): each
    box assigned to a level by ``floor(4 + log2(sqrt(area) / 224 + 1e-8))`` clamped to p2..p5 (Detectron2's
    ``assign_boxes_to_levels``), pooled by that level's own ``RoIAlign`` module, called once per level."""

    def __init__(self, output_size: int, sampling_ratio: int = 0, aligned: bool = True):
        super().__init__()
        self.level_poolers = torch.nn.ModuleList(
            RoIAlign(output_size, 1.0 / s, sampling_ratio, aligned=aligned) for s in STRIDES)
        self.canonical_level, self.canonical_box_size, self.min_level = 4, 224, 2
        self.output_size = output_size

    def forward(self, x: Dict[str, torch.Tensor], boxes: List[torch.Tensor], image_shapes: Any = None) -> torch.Tensor:
        feats = [x[k] for k in ("0", "1", "2", "3")]
        rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
        b = rois[:, 1:]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        level = torch.floor(self.canonical_level + torch.log2(torch.sqrt(area) / self.canonical_box_size + 1e-8))
        level = (level.clamp(self.min_level, self.min_level + len(feats) - 1) - self.min_level).to(torch.int64)
        out = torch.zeros(len(rois), feats[0].shape[1], self.output_size, self.output_size)
        for k, (f, pooler) in enumerate(zip(feats, self.level_poolers)):
            idx = torch.nonzero(level == k).squeeze(1)
            out[idx] = pooler(f, rois[idx])
        return out


def build_maskrcnn(size: int = 320, aligned_poolers: bool = False, max_size: Optional[int] = None,
                   **kwargs: Any) -> torch.nn.Module:
    """torchvision's Mask R-CNN R50-FPN as the module's docstring describes, in eval mode; ``size``: the long side
    of the images it will see (its ``min_size``; ``max_size``, default the same: no resize inside the model);
    ``kwargs``: more arguments of ``maskrcnn_resnet50_fpn`` (``image_mean``, ...)."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    m = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=size, max_size=max_size or size,
                              rpn_post_nms_top_n_test=200, **kwargs)
    with torch.no_grad():
        m.roi_heads.box_predictor.cls_score.bias.fill_(-8.0)
        m.roi_heads.box_predictor.cls_score.bias[list(FAVOURED)] = 8.0
        m.rpn.head.bbox_pred.weight.mul_(0.05)
        m.roi_heads.box_predictor.bbox_pred.weight.mul_(0.05)
    m.roi_heads.score_thresh = 0.05
    m.roi_heads.detections_per_img = 50
    if aligned_poolers:
        m.roi_heads.box_roi_pool = LevelPoolers(7, 2, True)
        m.roi_heads.mask_roi_pool = LevelPoolers(14, 2, True)
    return m.eval()


def export_detector(model: torch.nn.Module, image: torch.Tensor, opset: int) -> bytes:
    """``torch.onnx.export`` (TorchScript route) of a torchvision detector taking one image (height and width
    dynamic), as bytes; the exporter's warnings are silenced, the model's mode is left as it was."""
    f: Any = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, ([image],), f, opset_version=opset, dynamo=False, input_names=["image"],
                          dynamic_axes={"image": [1, 2]})
    return f.getvalue()


def photo(name: str = "grace_hopper.jpg", long_side: int = 320) -> torch.Tensor:
    """A photo matplotlib ships, as Tensor[3, H, W] RGB in [0, 1], resized (Pillow, bilinear) to ``long_side``."""
    from matplotlib import cbook
    from PIL import Image

    data: Any = cbook.get_sample_data(name)
    with data as f:
        im = Image.open(f).convert("RGB")
    s = long_side / max(im.size)
    im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255


#: {key: (label, how the mistake is made, the stage where it shows first)}
MISTAKES: Dict[str, Tuple[str, str, str]] = {
    "none": ("none (opset 16)", "the same model exported at opset 16 and fed the same image", "nowhere"),
    "bgr": ("BGR fed to an RGB model", "the image's channels reversed before it is fed to the export",
            "backbone:input"),
    "pixel_mean": ("pixel mean reversed", "normalised with image_mean in the reverse channel order: the image fed "
                   "with each channel moved by (mean - reversed mean), which is what an export built with the "
                   "reversed mean computes from the image", "backbone:input"),
    "pixel_std": ("pixel std of 1", "the export built with image_std = (1, 1, 1): Detectron2's default for BGR "
                  "0-255 input, on a model that expects [0, 1]", "backbone:input"),
    "resize_mode": ("resize with align_corners=True", "the image fed to the export shrunk from a larger one with "
                    "align_corners=True, where the reference used align_corners=False", "backbone:input"),
    "translated": ("image moved 3 px down, 2 px right", "the picture fed to the export starts 3 rows lower and 2 "
                   "columns further right (a crop or a pad off by a few pixels)", "backbone:input"),
    "opset11": ("aligned pooler at opset 11", "Detectron2's poolers (aligned=True) exported at opset 11, "
                "Detectron2's STABLE_ONNX_OPSET_VERSION: RoiAlign has no half-pixel mode there", "level_poolers"),
}


@dataclass
class RealCase:
    """One traced mistake: the report, both sides' stages, and the seconds each step took."""

    key: str
    report: Any
    reference: Dict[str, torch.Tensor]
    candidate: Dict[str, np.ndarray]
    seconds: Dict[str, float]


class RealCaseBuilder:
    """Builds and traces :data:`MISTAKES` on :func:`build_maskrcnn`, each once (exports and recordings cached)."""

    def __init__(self, size: int = 320):
        self.size = int(size)
        self.image = photo(long_side=self.size)
        self._models: Dict[str, torch.nn.Module] = {}
        self._exports: Dict[Tuple[str, int], bytes] = {}
        self._records: Dict[str, Any] = {}
        self._cases: Dict[str, RealCase] = {}

    def model(self, variant: str) -> torch.nn.Module:
        if variant not in self._models:
            kwargs: Any = {"base": {}, "aligned": {"aligned_poolers": True},
                           "pixel_std": {"image_std": [1.0, 1.0, 1.0]}}[variant]
            self._models[variant] = build_maskrcnn(self.size, **kwargs)
        return self._models[variant]

    def export(self, variant: str, opset: int) -> bytes:
        if (variant, opset) not in self._exports:
            self._exports[variant, opset] = export_detector(self.model(variant), self.image, opset)
        return self._exports[variant, opset]

    def recording(self, variant: str, image: torch.Tensor) -> Any:
        if variant not in self._records:
            self._records[variant] = trace.record(self.model(variant), [image])
        return self._records[variant]

    def fed(self, key: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """(the image the reference sees, the image the export is fed) for a mistake."""
        x = self.image
        if key == "bgr":
            return x, x.flip(0)
        if key == "translated":
            moved = torch.zeros_like(x)
            moved[:, 3:, 2:] = x[:, :-3, :-2]
            return x, moved
        if key == "pixel_mean":     # (x + m - m') - m = x - m': the reversed mean, without another export
            shift = torch.tensor(IMAGE_MEAN) - torch.tensor(IMAGE_MEAN[::-1])
            return x, x + shift.view(3, 1, 1)
        if key == "resize_mode":
            big = torch.nn.functional.interpolate(x[None], scale_factor=1.5, mode="bilinear", align_corners=False)
            size = tuple(x.shape[-2:])
            ref = torch.nn.functional.interpolate(big, size=size, mode="bilinear", align_corners=False)[0]
            cand = torch.nn.functional.interpolate(big, size=size, mode="bilinear", align_corners=True)[0]
            return ref.clamp(0, 1), cand.clamp(0, 1)
        return x, x

    def case(self, key: str) -> RealCase:
        if key not in MISTAKES:
            raise ValueError(f"key must be one of {list(MISTAKES)}, got {key!r}")
        if key not in self._cases:
            self._cases[key] = self._case(key)
        return self._cases[key]

    def _case(self, key: str) -> RealCase:
        seconds: Dict[str, float] = {}
        ref_variant = "aligned" if key == "opset11" else "base"
        cand_variant = {"pixel_std": "pixel_std", "opset11": "aligned"}.get(key, "base")
        ref_image, cand_image = self.fed(key)
        t = time.perf_counter()
        model: Any = self.export(cand_variant, 11 if key == "opset11" else 16)
        seconds["export"] = time.perf_counter() - t
        t = time.perf_counter()
        reference = (trace.record(self.model(ref_variant), [ref_image]) if key == "resize_mode"
                     else self.recording(ref_variant, ref_image))
        seconds["record"] = time.perf_counter() - t
        t = time.perf_counter()
        candidate = trace.onnx_intermediates(model, {"image": cand_image}, names=trace.onnx_names(reference, model))
        seconds["onnx_runtime"] = time.perf_counter() - t
        t = time.perf_counter()
        report = trace.compare(reference, candidate, onnx_model=model)
        seconds["compare"] = time.perf_counter() - t
        return RealCase(key, report, dict(reference), candidate, seconds)

    def rows(self, keys: Sequence[str] = ()) -> List[List[str]]:
        """One row per mistake: its label, the stage where it was made to show, the first divergence with a cause
        of its own, the cause, the fitted parameters, how many later stages carry it along. Proposals that a
        random model scores alike may come out of the RPN's top-k in another order in ONNX Runtime
        (``row_order``); a row names that first and goes on to the next cause."""
        out = []
        for key in keys or list(MISTAKES):
            rep = self.case(key).report
            label, _, expected = MISTAKES[key]
            roots = rep.root_causes
            main = next((s for s in roots if s.cause.name != "row_order"), roots[0] if roots else None)
            if main is None:
                out.append([label, expected, "none", "", "", "0"])
                continue
            ev = main.cause.evidence
            detail = _fitted(main.cause.name, ev)
            if "padding_ignored" in ev:
                detail += f"; fitted on the image, the batch padding ({ev['padding_ignored'][0]} rows, " \
                          f"{ev['padding_ignored'][1]} columns) left out"
            before = [s for s in roots if s.cause.name == "row_order" and s is not main]
            where = main.name + (f" (after {before[0].name}: proposals in another order)" if before else "")
            carried = sum(1 for x in rep.stages.values() if x.inherited_from == main.name)
            out.append([label, expected, where, main.cause.name, detail, str(carried)])
        return out


def _fitted(name: str, ev: Dict[str, Any]) -> str:
    """A cause's fitted parameters in a few words."""
    if name == "shift":
        return f"(dy, dx) = ({ev['dy']:+.2f}, {ev['dx']:+.2f}) {ev['unit']}"
    if name == "channel_permutation":
        return f"order {ev['permutation']}"
    if name == "channel_affine":
        return f"scale {[round(v, 3) for v in ev['scale']]}, bias {[round(v, 3) for v in ev['bias']]}"
    if name == "row_order":
        return f"{ev['rows_moved']} of {ev['rows']} rows moved"
    if name == "resample":
        return (f"y' = {ev['scale_y']:.5f} y {ev['offset_y']:+.3f}, x' = {ev['scale_x']:.5f} x {ev['offset_x']:+.3f} "
                f"({ev['explained']:.0%} explained)")
    return ""


_BUILDERS: Dict[int, RealCaseBuilder] = {}


def real_builder(size: int = 320) -> RealCaseBuilder:
    """One :class:`RealCaseBuilder` per process and image size."""
    if size not in _BUILDERS:
        _BUILDERS[size] = RealCaseBuilder(size)
    return _BUILDERS[size]


def flip_results(size: int = 320, names: Sequence[str] = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
                 ) -> Dict[str, Any]:
    """COCO results of a test-time flip, mapped back to the photo two ways, from :func:`build_maskrcnn`.

    Each photo (``long_side`` = ``size``) is run flipped left-right; its detections are mapped back to the photo's
    frame with x -> W - x (continuous coordinates: ``reference``) and with x -> W - 1 - x (pixel indices, a
    flip written for Detectron's inclusive boxes: ``candidate``). Boxes swap their x1 and x2; masks (thresholded
    at 0.5) have their columns reversed, the same under either rule. Returns both result lists (COCO format,
    masks as compressed RLE, by :func:`explainer.diagnosis.detections.to_coco_results`), the image sizes and
    how many masks each side holds.
    """
    from explainer.diagnosis.detections import to_coco_results

    model = build_maskrcnn(size)
    images = [photo(n, size).flip(-1) for n in names]
    with torch.no_grad():
        outs = model(images)
    sides: Dict[str, Dict[int, Dict[str, torch.Tensor]]] = {"reference": {}, "candidate": {}}
    for image_id, (img, out) in enumerate(zip(images, outs), 1):
        width = float(img.shape[-1])
        b = out["boxes"].double()
        masks = (out["masks"][:, 0] > 0.5).flip(-1)
        for side, minus in (("reference", 0.0), ("candidate", 1.0)):
            boxes = torch.stack([width - minus - b[:, 2], b[:, 1], width - minus - b[:, 0], b[:, 3]], 1)
            sides[side][image_id] = {"boxes": boxes, "scores": out["scores"], "labels": out["labels"],
                                     "masks": masks}
    return {"reference": to_coco_results(sides["reference"]), "candidate": to_coco_results(sides["candidate"]),
            "sizes": {i: tuple(img.shape[-2:]) for i, img in enumerate(images, 1)},
            "masks": sum(len(o["boxes"]) for o in outs)}
