"""The transparent ROIAlign against torchvision's compiled kernel, side by side in one run."""

from __future__ import annotations

import torch

from .common import Row, best_of


def run(quick: bool = False):
    import torchvision

    from explainer.roi_align import roi_align

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 256, 200, 304, generator=g)
    xy = torch.rand(1000, 2, generator=g) * torch.tensor([1216.0, 800.0])
    wh = torch.rand(1000, 2, generator=g) * 300 + 8
    rois = torch.cat([torch.zeros(1000, 1), xy, xy + wh], 1)
    rows = []
    for aligned in (True, False):
        args = (feats, rois, (7, 7), 0.25, 2, aligned)
        ref = torchvision.ops.roi_align(*args)
        diff = (roi_align(*args) - ref).abs().max().item()
        t_tv = best_of(lambda args=args: torchvision.ops.roi_align(*args), repeat=2 if quick else 5)
        t_ours = best_of(lambda args=args: roi_align(*args), repeat=2 if quick else 5)
        ratio = t_ours / t_tv
        rows.append(Row("roi_align", f"transparent / torchvision, aligned={aligned}", ratio, "x", "<= 3x", ratio <= 3.0,
                        f"1,000 boxes, 256 channels, 7x7, sampling_ratio 2, 200x304 map: ours {1000 * t_ours:.0f} ms, "
                        f"torchvision {1000 * t_tv:.0f} ms (best of runs, {torch.get_num_threads()} threads); max |diff| {diff:.1e}"))
    return rows
