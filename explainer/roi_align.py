"""ROIAlign written out step by step, with and without the half-pixel shift; ROIPool; FPN level assignment.

Coordinate conventions
----------------------
Boxes are in image pixels (x1, y1, x2, y2), multiplied by ``spatial_scale`` (1 / stride) to reach the
feature map. ``aligned=True`` (Detectron2's ``ROIAlign`` default, ``POOLER_TYPE: ROIAlignV2``) then shifts
them by -0.5, so that continuous coordinate c samples between pixel indices floor(c - 0.5) and
ceil(c - 0.5): pixel i's value lives at its centre i + 0.5. ``aligned=False`` (Detectron's ROIAlign,
torchvision's default, ``POOLER_TYPE: ROIAlign``) omits the shift, i.e. reads pixel i's value at the corner
i, half a pixel off, and forces malformed boxes to be at least 1 x 1 feature cell.

The kernel follows torchvision's ``roi_align_kernel.cpp`` (taken from Caffe2's), the op Detectron2 calls:

1. roi_start = x1 * scale - offset; roi size = (x2 - x1) * scale, clamped to >= 1 when not aligned;
2. bin = roi size / output size; samples per bin side = ``sampling_ratio`` if > 0, else ceil(roi size /
   output size) (adaptive); count = max(samples_h * samples_w, 1);
3. sample y = roi_start_h + ph * bin_h + (iy + 0.5) * bin_h / samples_h (the same for x);
4. bilinear interpolation: a sample with y < -1 or y > H (or x < -1 or x > W) contributes 0; y <= 0 reads
   row 0; y_low = floor(y), and at y_low >= H - 1 both neighbours are the last row;
5. the bin's value is the sum of its samples divided by count.

The implementation is vectorised: bilinear weights are separable, so each RoI gathers the rows and columns
its samples touch (feature map in channels-last layout) and contracts them with the weights. Nothing here
imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch

from explainer import _validate as _v
from explainer._validate import ArrayLike, as_boxes, as_tensor, positive_int, positive_number, size_pair
from explainer.boxes import area

__all__ = ["roi_align", "sampling_points", "sampling_grid_note", "roi_pool", "roi_pool_bins", "roi_input_box", "assign_fpn_levels", "fpn_level_of_size",
           "convert_boxes_to_rois", "ramp"]

_CHUNK_FLOATS = 8_000_000  # about 32 MB of gathered features at a time


def _output_size(output_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    return size_pair(output_size, "output_size")


def ramp(size: int) -> torch.Tensor:
    """The classic test map: a 1 x 1 x size x size feature whose value at (y, x) is 10 y + x."""
    n = positive_int(size, "size")
    _v.check_values(n * n, "size", f"a {n:,} x {n:,} map")
    return (torch.arange(n).view(n, 1) * 10 + torch.arange(n).view(1, n)).float()[None, None]


def convert_boxes_to_rois(boxes: Union[ArrayLike, List[ArrayLike]], n_images: int) -> torch.Tensor:
    """A Tensor[K, 5] tensor (batch index, x1, y1, x2, y2) from Tensor[K, 5] or a list of per-image Tensor[N_i, 4] tensors."""
    n_images = positive_int(n_images, "n_images")
    if isinstance(boxes, (list, tuple)):
        parts = []
        for i, b in enumerate(boxes):
            b = as_tensor(b, f"boxes[{i}]")
            if b.dim() != 2 or b.shape[-1] != 4:
                raise ValueError(f"boxes[{i}] must have shape (N, 4), got {tuple(b.shape)}")
            parts.append(torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype), b], 1))
        rois = torch.cat(parts) if parts else torch.zeros(0, 5)
    else:
        rois = as_tensor(boxes, "boxes")
        if rois.dim() != 2 or rois.shape[-1] != 5:
            raise ValueError(f"boxes must be a K x 5 tensor (batch index, x1, y1, x2, y2) or a list of N x 4 tensors, "
                             f"got shape {tuple(rois.shape)}")
    if rois.numel() and not torch.isfinite(rois).all():
        raise ValueError("boxes must be finite")
    idx = rois[:, 0]
    if rois.numel() and (idx.min() < 0 or idx.max() >= n_images or not torch.equal(idx, idx.round())):
        raise ValueError(f"the batch index (column 0 of boxes) must be a whole number in 0..{n_images - 1}, "
                         f"found {idx.min().item():g}..{idx.max().item():g}")
    return rois


def _axis(start: torch.Tensor, size: torch.Tensor, n_bins: int, grid: torch.Tensor, g_max: int, length: int):
    """Sample positions, neighbours and weights along one axis for K RoIs.

    The arithmetic follows the kernel's order of operations in the input's float type, so that sample
    positions (and the neighbours they select) agree with torchvision bit for bit in practice.
    Returns (idx, w): K x n_bins x g_max x 2 neighbour indices and weights (0 for invalid samples and for
    grid slots beyond an RoI's own grid).
    """
    k = start.shape[0]
    dt = start.dtype
    bin_size = size / n_bins
    p = torch.arange(n_bins, dtype=dt)
    i = torch.arange(g_max, dtype=dt)
    g = grid.clamp(min=1).to(dt)
    pos = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]) + ((i[None, None, :] + 0.5) * bin_size[:, None, None]) / g[:, None, None]
    inside = (pos >= -1.0) & (pos <= float(length)) & (i[None, None, :] < grid[:, None, None])
    pos = pos.clamp(min=0.0)
    low = pos.floor().long()
    at_edge = low >= length - 1
    low = torch.where(at_edge, torch.full_like(low, length - 1), low)
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low.to(dt), pos)
    frac = pos - low.to(dt)
    w = torch.stack([1.0 - frac, frac], dim=-1) * inside[..., None].to(dt)
    idx = torch.stack([low, high], dim=-1)
    return idx.reshape(k, n_bins, g_max, 2), w.reshape(k, n_bins, g_max, 2)


def _geometry(rois: torch.Tensor, ph: int, pw: int, spatial_scale: float, sampling_ratio: int, aligned: bool,
              dtype: torch.dtype = torch.float32):
    """Per RoI: start, size and sampling grid along y and x (in feature cells), in ``dtype``.

    As the kernel: the scaled, shifted corners are computed in double and stored in the input's type; the
    size is the difference of the stored corners.
    """
    r = rois.to(torch.float64)
    offset = 0.5 if aligned else 0.0
    x1 = (r[:, 1] * spatial_scale - offset).to(dtype)
    y1 = (r[:, 2] * spatial_scale - offset).to(dtype)
    x2 = (r[:, 3] * spatial_scale - offset).to(dtype)
    y2 = (r[:, 4] * spatial_scale - offset).to(dtype)
    w, h = x2 - x1, y2 - y1
    if not aligned:  # "Force malformed ROIs to be 1x1"
        w, h = w.clamp(min=1.0), h.clamp(min=1.0)
    if sampling_ratio > 0:
        gh = torch.full(h.shape, sampling_ratio, dtype=torch.long)
        gw = torch.full(w.shape, sampling_ratio, dtype=torch.long)
    else:
        gh = torch.ceil(h / ph).long()
        gw = torch.ceil(w / pw).long()
    return x1, y1, w, h, gw, gh


def roi_align(input: ArrayLike, boxes: Union[ArrayLike, List[ArrayLike]], output_size: Union[int, Sequence[int]], spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> torch.Tensor:
    """ROIAlign with the signature and semantics of ``torchvision.ops.roi_align``.

    ``input``: Tensor[N, C, H, W] feature maps; ``boxes``: Tensor[K, 5] (batch index, x1, y1, x2, y2) in image pixels, or a
    list of per-image Tensor[N_i, 4] tensors; ``output_size``: int or (height, width); ``spatial_scale``: feature cells
    per image pixel (1 / stride); ``sampling_ratio`` <= 0 means adaptive. Returns Tensor[K, C, out_h, out_w].
    """
    x = as_tensor(input, "input")
    if x.dim() != 4 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"input must be N x C x H x W with H, W >= 1, got shape {tuple(x.shape)}")
    ph, pw = _output_size(output_size)
    scale = positive_number(spatial_scale, "spatial_scale", maximum=_v.MAX_SPATIAL_SCALE)
    sampling_ratio = _v.whole_number(sampling_ratio, "sampling_ratio")
    rois = convert_boxes_to_rois(boxes, x.shape[0])
    aligned = _v.flag(aligned, "aligned")
    _v.check_values(rois.shape[0] * x.shape[1] * ph * pw, "boxes", f"{rois.shape[0]:,} RoIs x {x.shape[1]} channels")
    _v.check_sampling((rois[:, 3] - rois[:, 1]).abs() * scale, (rois[:, 4] - rois[:, 2]).abs() * scale, (ph, pw),
                      sampling_ratio, x.shape[1])
    n, c, H, W = x.shape
    k_all = rois.shape[0]
    out = x.new_zeros((k_all, c, ph, pw))
    if k_all == 0:
        return out
    dt = x.dtype if x.is_floating_point() else torch.float32
    x1, y1, w, h, gw, gh = _geometry(rois, ph, pw, scale, sampling_ratio, aligned, dt)
    count = (gh * gw).clamp(min=1).to(dt)
    feats = x.permute(0, 2, 3, 1).contiguous()  # N x H x W x C: each gathered neighbour is one contiguous C-vector
    batch = rois[:, 0].long()
    # group RoIs so that the gathered blocks stay within a memory budget
    gh_c, gw_c = gh.clamp(min=0), gw.clamp(min=0)
    order = torch.argsort(gh_c * gw_c)
    start = 0
    while start < k_all:
        stop = start + 1
        while stop < k_all:
            gh2, gw2 = int(gh_c[order[stop]]), int(gw_c[order[stop]])
            per2 = (2 * ph * max(gh2, 1)) * (2 * pw * max(gw2, 1)) * c
            if per2 * (stop - start + 1) > _CHUNK_FLOATS:
                break
            stop += 1
        idx = order[start:stop]
        out[idx] = _roi_align_chunk(feats, batch[idx], x1[idx], y1[idx], w[idx], h[idx], gw[idx], gh[idx],
                                    count[idx], ph, pw, H, W).to(x.dtype)
        start = stop
    return out


def _roi_align_chunk(feats, batch, x1, y1, w, h, gw, gh, count, ph, pw, H, W) -> torch.Tensor:
    k = batch.shape[0]
    g_h = max(int(gh.max()), 0)
    g_w = max(int(gw.max()), 0)
    c = feats.shape[-1]
    if g_h == 0 or g_w == 0:
        return torch.zeros(k, c, ph, pw, dtype=feats.dtype)
    yi, wy = _axis(y1, h, ph, gh, g_h, H)  # K x ph x g_h x 2
    xi, wx = _axis(x1, w, pw, gw, g_w, W)
    # sum the two weights of each sample per neighbour (separable), then gather rows x columns
    rows = yi.reshape(k, -1)  # K x (ph * g_h * 2)
    cols = xi.reshape(k, -1)  # K x (pw * g_w * 2)
    block = feats[batch[:, None, None], rows[:, :, None], cols[:, None, :]]  # K x Sy x Sx x C
    block = block.reshape(k, ph, g_h * 2, pw, g_w * 2, c)
    t = torch.einsum("kpaqbc,kqb->kpaqc", block, wx.reshape(k, pw, g_w * 2))
    res = torch.einsum("kpaqc,kpa->kcpq", t, wy.reshape(k, ph, g_h * 2))
    return res / count[:, None, None, None]


def sampling_points(box: Sequence[float], output_size: Union[int, Sequence[int]], feature_size: Sequence[int], spatial_scale: float = 1.0,
                    sampling_ratio: int = -1, aligned: bool = False) -> Dict[str, torch.Tensor]:
    """Everything ROIAlign does for one box, for drawing, in feature-map coordinates (feature cells).

    ``feature_size`` is (H, W). Returns the RoI rectangle (after scaling, shift and clamp), bin edges along x
    and y, every sample point (``points``: Tensor[S, 2] as (x, y); ``valid``: S), and for each sample its four
    bilinear neighbours (``neighbours``: Tensor[S, 4, 2] as (x index, y index)) and weights (Tensor[S, 4], zero for an
    invalid sample), plus the grid size and count.
    """
    ph, pw = _output_size(output_size)
    H, W = size_pair(feature_size, "feature_size")
    b = _v.as_box(box, "box", allow_inverted=True)
    sampling_ratio, aligned = _v.whole_number(sampling_ratio, "sampling_ratio"), _v.flag(aligned, "aligned")
    scale = positive_number(spatial_scale, "spatial_scale")
    _v.check_sampling((b[:, 2] - b[:, 0]).abs() * scale, (b[:, 3] - b[:, 1]).abs() * scale, (ph, pw), sampling_ratio, 4, "box")
    rois = torch.cat([torch.zeros(1, 1, dtype=torch.float64), b], 1)
    x1, y1, w, h, gw, gh = _geometry(rois, ph, pw, positive_number(spatial_scale, "spatial_scale"), int(sampling_ratio), aligned,
                                     torch.float64)
    g_h, g_w = max(int(gh[0]), 0), max(int(gw[0]), 0)
    res = {"roi": torch.tensor([x1[0], y1[0], x1[0] + w[0], y1[0] + h[0]]),
           "x_edges": x1[0] + torch.arange(pw + 1, dtype=torch.float64) * w[0] / pw,
           "y_edges": y1[0] + torch.arange(ph + 1, dtype=torch.float64) * h[0] / ph,
           "grid": (g_h, g_w), "count": max(g_h * g_w, 1)}
    if g_h == 0 or g_w == 0:
        res.update(points=torch.zeros(0, 2), valid=torch.zeros(0, dtype=torch.bool), neighbours=torch.zeros(0, 4, 2, dtype=torch.long),
                   weights=torch.zeros(0, 4), bin_of=torch.zeros(0, 2, dtype=torch.long))
        return res
    py = y1[0] + torch.arange(ph, dtype=torch.float64)[:, None] * (h[0] / ph) + (torch.arange(g_h, dtype=torch.float64)[None] + 0.5) * (h[0] / ph / g_h)
    px = x1[0] + torch.arange(pw, dtype=torch.float64)[:, None] * (w[0] / pw) + (torch.arange(g_w, dtype=torch.float64)[None] + 0.5) * (w[0] / pw / g_w)
    yi, wy = _axis(y1, h, ph, gh, g_h, H)
    xi, wx = _axis(x1, w, pw, gw, g_w, W)
    ys, xs = py.reshape(-1), px.reshape(-1)  # (ph*g_h), (pw*g_w)
    yi, wy = yi.reshape(-1, 2), wy.reshape(-1, 2)
    xi, wx = xi.reshape(-1, 2), wx.reshape(-1, 2)
    ny, nx = len(ys), len(xs)
    Y, X = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
    Y, X = Y.reshape(-1), X.reshape(-1)
    neigh = torch.stack([torch.stack([xi[X, bx], yi[Y, by]], -1) for by in (0, 1) for bx in (0, 1)], 1)
    weights = torch.stack([wy[Y, by] * wx[X, bx] for by in (0, 1) for bx in (0, 1)], 1)
    valid = weights.sum(1) > 0
    valid |= (ys[Y] >= -1) & (ys[Y] <= H) & (xs[X] >= -1) & (xs[X] <= W)
    res.update(points=torch.stack([xs[X], ys[Y]], 1), valid=(ys[Y] >= -1) & (ys[Y] <= H) & (xs[X] >= -1) & (xs[X] <= W),
               neighbours=neigh, weights=weights, bin_of=torch.stack([X // g_w, Y // g_h], 1))
    return res


def sampling_grid_note(box: Sequence[float], output_size: Union[int, Sequence[int]], spatial_scale: float = 1.0,
                       sampling_ratio: int = -1, aligned: bool = False) -> Dict[str, Any]:
    """How many samples each bin of one box gets, and why: the case torchvision's kernel is in.

    Returns ``roi_size`` (w, h in feature cells, after the kernel's clamp), ``grid`` (samples per bin, h x w), ``empty``
    (True when the grid has no sample, so every output is exactly 0) and ``why`` (a sentence). The cases, from
    ``roi_align_kernel.cpp``: with ``aligned=False`` the RoI is widened to at least 1 x 1 cell, so every box is sampled;
    with ``aligned=True`` there is no minimum size. Then ``sampling_ratio > 0`` gives that many samples per bin side
    whatever the size (a zero-size box samples its single point, interpolated; only a point outside [-1, size] of
    the map reads 0); ``sampling_ratio <= 0`` gives
    ceil(roi size / output size) per side: 0 when the width or height is <= 0 (an empty grid: the output is exactly
    0, ``count`` being clamped to 1 over an empty sum), and 1 for any positive size, however small.
    """
    ph, pw = _output_size(output_size)
    b = _v.as_box(box, "box", allow_inverted=True)
    rois = torch.cat([torch.zeros(1, 1, dtype=torch.float64), b], 1)
    sr, aligned = _v.whole_number(sampling_ratio, "sampling_ratio"), _v.flag(aligned, "aligned")
    scale = positive_number(spatial_scale, "spatial_scale")
    _v.check_sampling((b[:, 2] - b[:, 0]).abs() * scale, (b[:, 3] - b[:, 1]).abs() * scale, (ph, pw), sr, 1, "box")
    _, _, w, h, gw, gh = _geometry(rois, ph, pw, scale, sr, aligned, torch.float64)
    rw, rh, g_w, g_h = float(w[0]), float(h[0]), int(gw[0]), int(gh[0])
    empty = g_w <= 0 or g_h <= 0
    size = f"RoI {rw:.3g} x {rh:.3g} cells"
    if not aligned:
        why = f"{size} (aligned=False widens it to at least 1 x 1 cell), so it is always sampled"
    elif sr > 0:
        why = f"{size}; sampling_ratio {sr} gives {sr} x {sr} samples per bin whatever the size" + (
            " (a zero-size box samples its single point, interpolated)" if rw == 0 or rh == 0 else "")
    elif empty:
        why = (f"{size}; sampling_ratio 0 gives ceil(size / output) = {max(g_h, 0)} x {max(g_w, 0)} (h x w) samples per bin: "
               "an empty grid, so the output is exactly 0")
    else:
        why = f"{size}; sampling_ratio 0 gives ceil(size / output) = {g_h} x {g_w} (h x w) samples per bin"
    return {"roi_size": (rw, rh), "grid": (g_h, g_w), "empty": empty, "why": why}


def _round_half_away(v: float) -> int:
    """``std::round``: half away from zero."""
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def _pool_bins(box: Sequence[float], ph: int, pw: int, scale: float, H: int, W: int
               ) -> Tuple[Tuple[int, int, int, int], List[Tuple[int, int, int, int]]]:
    """ROIPool's rounded box (x1, y1, x2, y2 in feature cells) and its ph * pw bins (x_start, y_start, x_end, y_end),
    row by row, each clipped to the Tensor[W, H] map (an empty bin has end <= start)."""
    sx, sy, ex, ey = (_round_half_away(v * scale) for v in box)
    rw, rh = max(ex - sx + 1, 1), max(ey - sy + 1, 1)
    bh, bw = rh / ph, rw / pw
    bins = []
    for p in range(ph):
        hs = min(max(int(math.floor(p * bh)) + sy, 0), H)
        he = min(max(int(math.ceil((p + 1) * bh)) + sy, 0), H)
        for q in range(pw):
            ws = min(max(int(math.floor(q * bw)) + sx, 0), W)
            we = min(max(int(math.ceil((q + 1) * bw)) + sx, 0), W)
            bins.append((ws, hs, we, he))
    return (sx, sy, ex, ey), bins


def roi_pool_bins(box: Sequence[float], output_size: Union[int, Sequence[int]], feature_size: Sequence[int],
                  spatial_scale: float = 1.0) -> Dict[str, object]:
    """The bins :func:`roi_pool` takes the maximum over, for one box (image pixels) on a Tensor[H, W] map (``feature_size``).

    Returns ``rounded`` (the box's corners rounded to whole feature cells, half away from zero) and ``bins``: out_h x
    out_w tuples (x_start, y_start, x_end, y_end) in feature cells, row by row, clipped to the map.
    """
    ph, pw = _output_size(output_size)
    H, W = size_pair(feature_size, "feature_size")
    _v.check_values(ph * pw, "output_size", f"{ph:,} x {pw:,} bins listed one by one", limit=1 << 20)
    b = _v.as_box(box, "box", allow_inverted=True)[0].tolist()
    rounded, bins = _pool_bins(b, ph, pw, positive_number(spatial_scale, "spatial_scale"), H, W)
    return {"rounded": rounded, "bins": bins}


def roi_pool(input: ArrayLike, boxes: Union[ArrayLike, List[ArrayLike]], output_size: Union[int, Sequence[int]],
             spatial_scale: float = 1.0) -> torch.Tensor:
    """ROIPool (torchvision's ``roi_pool``, Detectron2's ``POOLER_TYPE: ROIPool``): the quantized predecessor.

    Corners are rounded to whole feature cells (half away from zero), the size keeps a legacy +1
    (roi = max(end - start + 1, 1)), bins are [floor(p * bin), ceil((p + 1) * bin)) clipped to the map, and each
    output is the maximum over its bin (0 for an empty bin); :func:`roi_pool_bins` lists the bins of one box.
    Returns Tensor[K, C, out_h, out_w].
    """
    x = as_tensor(input, "input")
    if x.dim() != 4 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"input must be N x C x H x W with H, W >= 1, got shape {tuple(x.shape)}")
    ph, pw = _output_size(output_size)
    scale = positive_number(spatial_scale, "spatial_scale", maximum=_v.MAX_SPATIAL_SCALE)
    rois = convert_boxes_to_rois(boxes, x.shape[0])
    _v.check_values(rois.shape[0] * ph * pw, "boxes", f"{rois.shape[0]:,} RoIs x {ph * pw:,} bins pooled one by one",
                    limit=1 << 20)
    n, c, H, W = x.shape
    out = x.new_zeros((rois.shape[0], c, ph, pw))
    for k, (b, *box) in enumerate(rois.tolist()):
        _, bins = _pool_bins(box, ph, pw, scale, H, W)
        for i, (ws, hs, we, he) in enumerate(bins):
            if he > hs and we > ws:
                out[k, :, i // pw, i % pw] = x[int(b), :, hs:he, ws:we].amax(dim=(1, 2))
    return out


def roi_input_box(boxes: ArrayLike, *, legacy_plus_one: bool) -> torch.Tensor:
    """The box ROIAlign receives for an object whose pixels are x1..x2 and y1..y2 (Tensor[N, 4] of inclusive
    indices, as Detectron stores them). Returns Tensor[N, 4] in the image-pixel coordinates ROIAlign reads.

    ROIAlign reads every box as continuous coordinates. Detectron (``legacy_plus_one=True``) hands it its inclusive
    box unchanged (``modeling/detector.py:roi_feature_transform`` passes the RoIs to Caffe2's ``RoIAlign``), so the
    region pooled is [x1, x2], one pixel narrower and shorter than the object; Detectron2 hands it the continuous box
    [x1, x2 + 1]. A Detectron model converted to Detectron2 therefore pools one pixel more on the right and bottom
    than its heads were trained on, whatever ``aligned`` is.
    """
    b, legacy_plus_one = as_boxes(boxes, "boxes", legacy_plus_one=True), _v.flag(legacy_plus_one, "legacy_plus_one")
    return b.clone() if legacy_plus_one else b + b.new_tensor([0.0, 0.0, 1.0, 1.0])


def assign_fpn_levels(boxes: ArrayLike, *, legacy_plus_one: bool = False, min_level: int = 2, max_level: int = 5,
                      canonical_box_size: float = 224.0, canonical_level: int = 4) -> torch.Tensor:
    """The FPN level each RoI is pooled from (N levels, as integers).

    Detectron (``FPN.map_rois_to_fpn_levels``): floor(4 + log2(sqrt(area with +1) / 224 + 1e-6)).
    Detectron2 (``poolers.assign_boxes_to_levels``): floor(4 + log2(sqrt(area) / 224 + 1e-8)). Both clamp to
    [min_level, max_level]. The boundaries therefore fall at sides 112/224/448 in Detectron2 and at
    side + 1 = 112/224/448 in Detectron: a 111 x 111 box goes to level 3 in Detectron, level 2 in Detectron2.
    """
    b = as_boxes(boxes, "boxes", legacy_plus_one=legacy_plus_one).to(torch.float64)
    lo, hi = positive_int(min_level, "min_level"), positive_int(max_level, "max_level")
    canonical_level = _v.whole_number(canonical_level, "canonical_level", -1000, 1000)
    if hi < lo:
        raise ValueError(f"max_level ({hi}) must be >= min_level ({lo})")
    s0 = positive_number(canonical_box_size, "canonical_box_size")
    eps = 1e-6 if legacy_plus_one else 1e-8
    return fpn_level_of_size(torch.sqrt(area(b, legacy_plus_one=legacy_plus_one)), lo, hi, s0, canonical_level, eps)


def fpn_level_of_size(size: torch.Tensor, min_level: int = 2, max_level: int = 5, canonical_box_size: float = 224.0,
                      canonical_level: int = 4, eps: float = 1e-8) -> torch.Tensor:
    """:func:`assign_fpn_levels`'s rule on sizes already computed (sqrt of the area, float64):
    floor(canonical_level + log2(size / canonical_box_size + eps)), clamped to [min_level, max_level]. An infinite
    size goes to ``max_level``; a NaN size has no level and is refused."""
    if torch.isnan(size).any():
        raise ValueError("size must not be NaN (a box with a NaN coordinate has no FPN level)")
    lvl = torch.floor(canonical_level + torch.log2(size / canonical_box_size + eps))
    return lvl.clamp(min_level, max_level).long()
