"""Deployment: resize coordinate modes, TensorFlow's crop_and_resize against ROIAlign, and "SAME" padding.

Coordinate conventions: images are N x C x H x W tensors; pixel indices run 0..W-1 and pixel i's value sits at
continuous coordinate i + 0.5 (Detectron2's model). Each function states the rule it implements, following the
documented formulas of ONNX (``Resize``, ``RoiAlign``), TensorFlow (``tf.image.resize``,
``tf.image.crop_and_resize``, "SAME" padding) and PyTorch; no TensorFlow or ONNX install is needed.
Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple, Union

import torch

from . import _validate as _v
from ._validate import ArrayLike, as_boxes, as_tensor, one_of, positive_int, positive_number, size_pair
from .export_ops import CAFFE2_LEGACY_PLUS_ONE_OPS, CAFFE2_OPS_WITHOUT_PLUS_ONE  # noqa: F401  (re-exported tables)

__all__ = [
    "RESIZE_MODES",
    "resize_coordinate_map",
    "resize",
    "crop_and_resize",
    "roi_align_box_to_crop_and_resize",
    "roi_align_via_crop_and_resize",
    "naive_crop_and_resize_boxes",
    "same_padding",
    "conv_output_centres",
    "ONNX_MODES",
    "CAFFE2_LEGACY_PLUS_ONE_OPS",
]

RESIZE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")


# --------------------------------------------------------------------------------------------
# Resize
# --------------------------------------------------------------------------------------------
def resize_coordinate_map(in_size: int, out_size: int, mode: str) -> torch.Tensor:
    """For each output index j (0..out_size-1), the input coordinate it samples, in input index units.

    With s = out / in (ONNX ``Resize`` names):

    * ``half_pixel`` (``align_corners=False``, TF2 ``tf.image.resize``, OpenCV, PIL): x = (j + 0.5) / s - 0.5;
    * ``pytorch_half_pixel``: the same, but 0 when out_size is 1;
    * ``align_corners``: x = j (in - 1) / (out - 1) (0 when out_size is 1);
    * ``asymmetric`` (TF1 ``resize_bilinear`` default): x = j / s.
    """
    n_in, n_out = positive_int(in_size, "in_size"), positive_int(out_size, "out_size")
    one_of(mode, "mode", RESIZE_MODES)
    j = torch.arange(n_out, dtype=torch.float64)
    s = n_out / n_in
    if mode == "half_pixel":
        return (j + 0.5) / s - 0.5
    if mode == "pytorch_half_pixel":
        return (j + 0.5) / s - 0.5 if n_out > 1 else torch.zeros(1, dtype=torch.float64)
    if mode == "align_corners":
        return j * (n_in - 1) / (n_out - 1) if n_out > 1 else torch.zeros(1, dtype=torch.float64)
    return j / s


def _linear_weights(coords: torch.Tensor, n_in: int) -> torch.Tensor:
    """out x in interpolation matrix of linear interpolation at ``coords`` (clamped to the image, as PyTorch does)."""
    x = coords.clamp(0.0, n_in - 1)
    lo = x.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    f = x - lo.to(x.dtype)
    m = torch.zeros(len(coords), n_in, dtype=torch.float64)
    m.scatter_add_(1, lo[:, None], (1.0 - f)[:, None])
    m.scatter_add_(1, hi[:, None], f[:, None])
    return m


def _antialias_weights(n_in: int, n_out: int) -> torch.Tensor:
    """out x in triangle-filter weights widened by the downscale factor (PIL's and ``antialias=True``'s rule)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for j in range(n_out):
        centre = (j + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        xs = torch.arange(lo, hi, dtype=torch.float64)
        w = (1.0 - ((xs - centre + 0.5) / support).abs()).clamp(min=0.0)
        if w.sum() > 0:
            m[j, lo:hi] = w / w.sum()
    return m


def resize(image: ArrayLike, size: Sequence[int], mode: str = "half_pixel", antialias: bool = False) -> torch.Tensor:
    """Bilinear resize of an N x C x H x W (or C x H x W) image to ``size`` = (height, width), on a coordinate mode.

    Built on :func:`resize_coordinate_map`: each output pixel interpolates the input linearly at its mapped
    coordinate, clamped to the image (edge replication). ``antialias=True`` (``half_pixel`` only) uses PIL's
    triangle filter instead: widened by the downscale factor and renormalised where it leaves the image, as
    ``F.interpolate(..., antialias=True)`` does (so it also differs from plain bilinear at the borders when
    upscaling); sides of length 1 are the exception, which torch's antialiased kernel treats differently. Equals
    ``F.interpolate(mode="bilinear")`` for ``half_pixel`` / ``pytorch_half_pixel`` (align_corners False) and
    ``align_corners``.
    """
    x = as_tensor(image, "image")
    squeeze = x.dim() == 3
    if squeeze:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"image must be C x H x W or N x C x H x W, got shape {tuple(as_tensor(image, 'image').shape)}")
    oh, ow = size_pair(size, "size")
    one_of(mode, "mode", RESIZE_MODES)
    antialias = _v.flag(antialias, "antialias")
    _v.check_values(x.shape[0] * x.shape[1] * oh * ow + oh * x.shape[-2] + ow * x.shape[-1], "size",
                    f"{x.shape[0] * x.shape[1]} maps of {oh:,} x {ow:,} pixels")
    H, W = x.shape[-2:]
    mats = []
    for n_in, n_out in ((H, oh), (W, ow)):
        if antialias and mode in ("half_pixel", "pytorch_half_pixel"):
            mats.append(_antialias_weights(n_in, n_out))
        else:
            mats.append(_linear_weights(resize_coordinate_map(n_in, n_out, mode), n_in))
    my, mx = (m.to(x.dtype) for m in mats)
    out = torch.einsum("yh,nchw,xw->ncyx", my, x, mx)
    return out[0] if squeeze else out


# --------------------------------------------------------------------------------------------
# TensorFlow's crop_and_resize and ROIAlign
# --------------------------------------------------------------------------------------------
def _axis_samples(a0, a1, n: int, length: int):
    """TF's sample positions along one axis (in index units) and their validity, K x n."""
    if n > 1:
        pos = a0[:, None] * (length - 1) + torch.arange(n, dtype=a0.dtype)[None] * ((a1 - a0) * (length - 1) / (n - 1))[:, None]
    else:
        pos = (0.5 * (a0 + a1) * (length - 1))[:, None]
    valid = (pos >= 0) & (pos <= length - 1)
    return pos, valid


def crop_and_resize(image: ArrayLike, boxes: ArrayLike, crop_size: Union[int, Sequence[int]], extrapolation_value: float = 0.0) -> torch.Tensor:
    """``tf.image.crop_and_resize`` on a 1 x C x H x W tensor: K x C x crop_h x crop_w.

    ``boxes``: K x 4 normalised [y1, x1, y2, x2] (TensorFlow's order), corner-aligned: y1 maps to row y1 (H - 1)
    and the crop's rows are spread evenly to y2 (H - 1) inclusive. A sample outside [0, H - 1] (or [0, W - 1])
    takes ``extrapolation_value``; inside, it is bilinear between floor and ceil.
    """
    x = as_tensor(image, "image")
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"image must be 1 x C x H x W, got shape {tuple(x.shape)}")
    b = as_tensor(boxes, "boxes")
    if b.dim() == 1 and b.numel() == 0:
        b = b.reshape(0, 4)
    if b.dim() != 2 or b.shape[-1] != 4:
        raise ValueError(f"boxes must be K x 4 normalised [y1, x1, y2, x2], got shape {tuple(b.shape)}")
    if b.numel() and not torch.isfinite(b).all():
        raise ValueError("boxes must be finite")
    if isinstance(crop_size, int):
        crop_size = (crop_size, crop_size)
    ch, cw = size_pair(crop_size, "crop_size")
    extrapolation_value = _v.finite_number(extrapolation_value, "extrapolation_value")
    _v.check_values(b.shape[0] * x.shape[1] * ch * cw * 4, "crop_size", f"{b.shape[0]:,} crops of {ch:,} x {cw:,}")
    _, c, H, W = x.shape
    b = b.to(torch.float64)
    ys, vy = _axis_samples(b[:, 0], b[:, 2], ch, H)
    xs, vx = _axis_samples(b[:, 1], b[:, 3], cw, W)
    y0 = ys.floor().clamp(0, H - 1).long()
    y1 = ys.ceil().clamp(0, H - 1).long()
    x0 = xs.floor().clamp(0, W - 1).long()
    x1 = xs.ceil().clamp(0, W - 1).long()
    fy = (ys - ys.floor())[:, None, :, None]
    fx = (xs - xs.floor())[:, None, None, :]
    img = x[0].to(torch.float64)

    def at(yi, xi):  # K x C x ch x cw
        return img[:, yi[:, :, None], xi[:, None, :]].permute(1, 0, 2, 3)

    top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx
    bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx
    out = top + (bottom - top) * fy
    valid = (vy[:, :, None] & vx[:, None, :])[:, None]
    out = torch.where(valid, out, torch.full_like(out, float(extrapolation_value)))
    return out.to(x.dtype)


@_v.finite_result
def naive_crop_and_resize_boxes(boxes: ArrayLike, feature_size: Sequence[int], spatial_scale: float = 1.0) -> torch.Tensor:
    """The first thing people try: box corners divided by the map size, [y1/H, x1/W, y2/H, x2/W] (misaligned)."""
    b = as_boxes(boxes, "boxes", allow_inverted=True).to(torch.float64) * positive_number(spatial_scale, "spatial_scale")
    H, W = size_pair(feature_size, "feature_size")
    return torch.stack([b[:, 1] / H, b[:, 0] / W, b[:, 3] / H, b[:, 2] / W], 1)


@_v.finite_result
def roi_align_box_to_crop_and_resize(boxes: ArrayLike, feature_size: Sequence[int], crop_size: int, spatial_scale: float = 1.0,
                                     pad_border: bool = True) -> torch.Tensor:
    """Turn ROIAlign boxes (image pixels, x1 y1 x2 y2) into ``crop_and_resize`` boxes, as tensorpack does.

    On the feature map (after ``spatial_scale``, and +1 when the map is padded by one cell each side), a crop of
    ``crop_size`` samples has spacing s = (x2 - x1) / crop_size and should sample at x1 + s/2 - 0.5 + k s (the
    aligned ROIAlign positions); TensorFlow samples at nx0 (W - 1) + k nw (W - 1) / (crop_size - 1), so
    nx0 = (x1 + s/2 - 0.5) / (W - 1) and nw = s (crop_size - 1) / (W - 1). Returns K x 4 [y1, x1, y2, x2].
    """
    b = as_boxes(boxes, "boxes", allow_inverted=True).to(torch.float64) * positive_number(spatial_scale, "spatial_scale")
    H, W = size_pair(feature_size, "feature_size")
    n = positive_int(crop_size, "crop_size", minimum=2)
    pad_border = _v.flag(pad_border, "pad_border")
    if pad_border:
        b = b + 1.0
        H, W = H + 2, W + 2
    sw = (b[:, 2] - b[:, 0]) / n
    sh = (b[:, 3] - b[:, 1]) / n
    nx0 = (b[:, 0] + sw / 2 - 0.5) / (W - 1)
    ny0 = (b[:, 1] + sh / 2 - 0.5) / (H - 1)
    nw = sw * (n - 1) / (W - 1)
    nh = sh * (n - 1) / (H - 1)
    return torch.stack([ny0, nx0, ny0 + nh, nx0 + nw], 1)


def roi_align_via_crop_and_resize(features: ArrayLike, boxes: ArrayLike, resolution: int, spatial_scale: float = 1.0,
                                  pad_border: bool = True) -> torch.Tensor:
    """tensorpack's ROIAlign on TensorFlow: ``crop_and_resize`` at 2R x 2R on transformed boxes, then 2 x 2 average.

    With ``pad_border`` the map is padded by one cell with its own edge values (TensorFlow's "SYMMETRIC" pad of
    width 1) so that samples in [-1, 0) read the edge as torchvision does. Equals
    ``torchvision.ops.roi_align(..., aligned=True, sampling_ratio=2)``; ``features`` is 1 x C x H x W, ``boxes``
    K x 4 in image pixels. Returns K x C x R x R.
    """
    f = as_tensor(features, "features")
    if f.dim() != 4 or f.shape[0] != 1:
        raise ValueError(f"features must be 1 x C x H x W, got shape {tuple(f.shape)}")
    r = positive_int(resolution, "resolution")
    pad_border = _v.flag(pad_border, "pad_border")
    H, W = f.shape[-2:]
    img = torch.nn.functional.pad(f, (1, 1, 1, 1), mode="replicate") if pad_border else f
    tb = roi_align_box_to_crop_and_resize(boxes, (H, W), 2 * r, spatial_scale, pad_border)
    crops = crop_and_resize(img, tb, 2 * r)
    return torch.nn.functional.avg_pool2d(crops, 2, 2)


# --------------------------------------------------------------------------------------------
# "SAME" padding
# --------------------------------------------------------------------------------------------
def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow's "SAME" padding (before, after): total = max((ceil(n / s) - 1) s + k - n, 0), before = total // 2.

    The extra pixel goes after (bottom/right). PyTorch and Caffe2 detection backbones pad k // 2 on both sides.
    """
    n, k, s = positive_int(size, "size"), positive_int(kernel, "kernel"), positive_int(stride, "stride")
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def conv_output_centres(size: int, kernel: int, stride: int, padding: str = "tf_same") -> torch.Tensor:
    """The input pixel index each output of a convolution is centred on (its window's middle).

    ``padding="tf_same"`` pads as :func:`same_padding`; ``"symmetric"`` pads k // 2 each side (PyTorch, Caffe2).
    Output o's window starts at o s - pad_before, so it is centred on o s - pad_before + (k - 1) / 2.
    """
    n, k, s = positive_int(size, "size"), positive_int(kernel, "kernel"), positive_int(stride, "stride")
    one_of(padding, "padding", ("tf_same", "symmetric"))
    if padding == "tf_same":
        before, after = same_padding(n, k, s)
    else:
        before = after = k // 2
    n_out = (n + before + after - k) // s + 1
    return torch.arange(n_out, dtype=torch.float64) * s - before + (k - 1) / 2


# --------------------------------------------------------------------------------------------
# ONNX's modes against the two conventions (data for the chapter's tables)
# --------------------------------------------------------------------------------------------
ONNX_MODES: List[Dict[str, str]] = [
    {"op": "RoiAlign", "attribute": "coordinate_transformation_mode = half_pixel (opset 16+, default)",
     "rule": "shift the scaled box by -0.5", "matches": "aligned=True: Detectron2's ROIAlignV2"},
    {"op": "RoiAlign", "attribute": "coordinate_transformation_mode = output_half_pixel (the only behaviour before opset 16)",
     "rule": "no shift", "matches": "aligned=False: Detectron's ROIAlign (and torchvision's default)"},
    {"op": "Resize", "attribute": "coordinate_transformation_mode = half_pixel",
     "rule": "x_in = (x_out + 0.5) / s - 0.5", "matches": "F.interpolate(align_corners=False), PIL, OpenCV, TF2"},
    {"op": "Resize", "attribute": "coordinate_transformation_mode = pytorch_half_pixel",
     "rule": "as half_pixel, but 0 when the output length is 1", "matches": "PyTorch's exporter for align_corners=False"},
    {"op": "Resize", "attribute": "coordinate_transformation_mode = align_corners",
     "rule": "x_in = x_out (in - 1) / (out - 1)", "matches": "F.interpolate(align_corners=True)"},
    {"op": "Resize", "attribute": "coordinate_transformation_mode = asymmetric",
     "rule": "x_in = x_out / s", "matches": "TF1 resize_bilinear without half_pixel_centers; nearest upsampling in FPN"},
]
