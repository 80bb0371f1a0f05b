"""Detectron's NMS (exact, with +1 and >=) against torchvision's on the same random boxes.

Target: the legacy path within 2x of ``torchvision.ops.nms``. Two kinds of boxes: whole pixel
indices (exact by construction) and fractional boxes such as decoded detections (checked against
the literal float32 formulas).
"""

from __future__ import annotations

import torch

from .common import Row, best_of


def _random_boxes(n: int, seed: int, whole_pixels: bool):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 100 + 1
    b = torch.cat([xy, xy + wh], 1)
    if whole_pixels:
        b = b.round()
    return b, torch.rand(n, generator=g)


def run(quick: bool = False):
    import torchvision

    from explainer import boxes as B

    rows = []
    repeat = 2 if quick else 5
    for n in (5000, 20000):
        for whole in (True, False):
            b, s = _random_boxes(n, seed=n, whole_pixels=whole)
            tv = best_of(lambda b=b, s=s: torchvision.ops.nms(b, s, 0.5), repeat=repeat)
            legacy = best_of(lambda b=b, s=s: B.nms(b, s, 0.5, legacy_plus_one=True), repeat=repeat)
            kind = "whole-pixel" if whole else "fractional"
            ratio = legacy / tv
            rows.append(Row("boxes", f"legacy nms / torchvision nms, {n} {kind} boxes", ratio, "x", "<= 2x", ratio <= 2.0,
                            f"legacy {legacy * 1000:.0f} ms, torchvision.ops.nms {tv * 1000:.0f} ms (best of {repeat}; "
                            f"IoU 0.5; boxes 1-101 px in a 1000 px square)"))
    return rows
