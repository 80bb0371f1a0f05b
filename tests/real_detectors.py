"""Real detectors for the tools' tests: torchvision's R50-FPN detectors with random weights, made to give
confident detections, a Detectron2-shaped ROI pooler, and their ONNX exports.

How a random-weight Mask R-CNN is made usable (``maskrcnn``):

* ``torch.manual_seed(0)`` before building, ``weights=None, weights_backbone=None``, ``.eval()``;
* ``min_size=max_size=320`` (the photos of :func:`tests.test_diagnose_real.photo` are 320 px on the long side, so
  the transform does not resize them again) and ``rpn_post_nms_top_n_test=200`` proposals;
* the box predictor's ``cls_score`` bias -8 for every class and +8 for COCO ids 1, 3 and 18, so each box has a
  class far above the rest;
* the weights of ``rpn.head.bbox_pred`` and ``roi_heads.box_predictor.bbox_pred`` multiplied by 0.05 (at their
  random initialisation they turn every proposal into a sliver);
* ``roi_heads.score_thresh = 0.05`` and ``detections_per_img = 50``.

The RPN's objectness is left as it is: scaling it saturates the sigmoid, and proposals whose scores are all
1.0 in float32 tie, so ONNX Runtime's and PyTorch's NMS keep different ones.

Detectron2 pools each FPN level with its own ``ROIAlign`` module (``ROIPooler.level_poolers``, each called once
per level), with ``aligned=True`` (``POOLER_TYPE: ROIAlignV2``); torchvision's ``MultiScaleRoIAlign`` runs one
``roi_align`` call per level with ``aligned=False``. :class:`LevelPoolers` is the first shape, written here from
Detectron2's description (``modeling/poolers.py``: ``assign_boxes_to_levels`` with ``canonical_box_size`` 224 and
``canonical_level`` 4, an output tensor filled level by level).
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Dict, List, Sequence

import torch
from torchvision.ops import RoIAlign

#: ONNX opsets exported: Detectron2's export_model.py pins 11 (detectron2/export/__init__.py:
#: STABLE_ONNX_OPSET_VERSION); 16 adds RoiAlign's coordinate_transformation_mode; 17 is a later one.
OPSETS = (11, 16, 17)
FAVOURED = [1, 3, 18]
#: Strides of the FPN levels pooled (p2 to p5).
STRIDES = (4, 8, 16, 32)


class LevelPoolers(torch.nn.Module):
    """A Detectron2-shaped FPN pooler with torchvision's call signature (features dict, boxes, image sizes)."""

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


def confident(model: Any) -> Any:
    """The changes of this module's docstring, on a torchvision R-CNN."""
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.fill_(-8.0)
        model.roi_heads.box_predictor.cls_score.bias[FAVOURED] = 8.0
        model.rpn.head.bbox_pred.weight.mul_(0.05)
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(0.05)
    model.roi_heads.score_thresh = 0.05
    model.roi_heads.detections_per_img = 50
    return model


def maskrcnn(aligned_poolers: bool = False, **kwargs: Any) -> Any:
    """torchvision's Mask R-CNN R50-FPN as this module's docstring describes; ``aligned_poolers``: Detectron2's
    poolers (:class:`LevelPoolers`, ``aligned=True``, sampling ratio 2) in place of torchvision's."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    m = confident(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=320, max_size=320,
                                        rpn_post_nms_top_n_test=200, **kwargs))
    if aligned_poolers:
        m.roi_heads.box_roi_pool = LevelPoolers(7, 2, True)
        m.roi_heads.mask_roi_pool = LevelPoolers(14, 2, True)
    return m.eval()


def export(model: torch.nn.Module, images: Sequence[torch.Tensor], opset: int) -> bytes:
    """``torch.onnx.export`` (TorchScript route) of a torchvision detector taking one image, height and width
    dynamic; the model's mode is what it was (the exporter restores it)."""
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (list(images),), f, opset_version=opset, dynamo=False, input_names=["image"],
                          dynamic_axes={"image": [1, 2]})
    return f.getvalue()
