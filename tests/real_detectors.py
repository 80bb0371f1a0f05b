"""Real detectors for the tools' tests: torchvision's R50-FPN detectors with random weights, made to give
confident detections, and a Detectron2-shaped ROI pooler, from :mod:`explainer.course.real_detector` (whose
docstring writes down how), with the ONNX opsets the tests export at.

Detectron2 pools each FPN level with its own ``ROIAlign`` module (``ROIPooler.level_poolers``, each called once
per level), with ``aligned=True`` (``POOLER_TYPE: ROIAlignV2``); torchvision's ``MultiScaleRoIAlign`` runs one
``roi_align`` call per level with ``aligned=False``. ``maskrcnn(aligned_poolers=True)`` has the first shape.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from explainer.course.real_detector import LevelPoolers, build_maskrcnn, export_detector

__all__ = ["OPSETS", "LevelPoolers", "maskrcnn", "export"]

#: ONNX opsets exported: Detectron2's export_model.py pins 11 (detectron2/export/__init__.py:
#: STABLE_ONNX_OPSET_VERSION); 16 adds RoiAlign's coordinate_transformation_mode; 17 is a later one.
OPSETS = (11, 16, 17)


def maskrcnn(aligned_poolers: bool = False, **kwargs: Any) -> torch.nn.Module:
    """Mask R-CNN for the 320 px photos of :func:`tests.test_diagnose_real.photo`."""
    return build_maskrcnn(320, aligned_poolers=aligned_poolers, **kwargs)


def export(model: torch.nn.Module, images: Sequence[torch.Tensor], opset: int) -> bytes:
    (image,) = images
    return export_detector(model, image, opset)
