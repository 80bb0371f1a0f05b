"""Pasting 100 masks into an 800 x 1333 image with each method (Detectron's segm_results, Detectron2's paste_masks_in_image)."""

from __future__ import annotations

import torch

from .common import Row, best_of


def run(quick: bool = False):
    from explainer.conventions import MASK_PASTES
    from explainer.masks import paste_masks

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(100, 2, generator=g) * torch.tensor([1250.0, 720.0])
    boxes = torch.cat([xy, xy + torch.rand(100, 2, generator=g) * 300 + 4], 1)
    masks = torch.rand(100, 28, 28, generator=g)
    rows = []
    for method in MASK_PASTES:
        t = best_of(lambda method=method: paste_masks(masks, boxes, (800, 1333), mask_paste=method), repeat=2 if quick else 5)
        rows.append(Row("mask paste", f"{method}: 100 masks into 800x1333", t * 1000, "ms", "< 500 ms", t < 0.5,
                        "boxes 4-304 px, 28x28 masks, boolean N x H x W output; best of runs"))
    return rows
