"""Deployment: resize coordinate modes, the resizes of OpenCV and PIL, input preprocessing, TensorFlow's
crop_and_resize against ROIAlign, and "SAME" padding through a ResNet.

Coordinate conventions: images are N x C x H x W tensors (C x H x W where a function says so); pixel indices run
0..W-1 and pixel i's value sits at continuous coordinate i + 0.5 (Detectron2's model). Each function states the
rule it implements, following the source or the documented formulas of ONNX (``Resize``, ``RoiAlign``), TensorFlow
(``tf.image.resize``, ``tf.image.crop_and_resize``, "SAME" padding), OpenCV (``cv::resize``), Pillow
(``Image.resize``) and PyTorch. Where the original computes in float32 (OpenCV on float images, TensorFlow's
``crop_and_resize``), so do these functions, operation by operation; no TensorFlow, OpenCV or ONNX install is
needed (the tests cross-check against them where they are installed). Nothing here imports matplotlib or ipywidgets.
The module is a little over 600 lines because the resizes of OpenCV and Pillow (used by Detectron's and
Detectron2's preprocessing, and by Detectron's mask paste) belong with the other frameworks' resizes.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple, Union

import torch

from explainer import _validate as _v
from explainer._validate import (
    ArrayLike,
    as_boxes,
    as_tensor,
    finite_number,
    one_of,
    positive_int,
    positive_number,
    size_pair,
)
from explainer.export_ops import CAFFE2_LEGACY_PLUS_ONE_OPS, CAFFE2_OPS_WITHOUT_PLUS_ONE  # noqa: F401  (re-exported tables)

__all__ = [
    "RESIZE_MODES",
    "resize_coordinate_map",
    "resize",
    "crop_and_resize",
    "crop_and_resize_positions",
    "roi_align_box_to_crop_and_resize",
    "roi_align_via_crop_and_resize",
    "naive_crop_and_resize_boxes",
    "naive_roi_align_via_crop_and_resize",
    "crop_and_resize_grid",
    "same_padding",
    "conv_output_centres",
    "backbone_offsets",
    "RESNET_STRIDE_LAYERS",
    "cv2_resize",
    "pil_resize",
    "DETECTRON_PIXEL_MEANS",
    "DETECTRON2_PIXEL_MEAN",
    "detectron_input_size",
    "detectron2_input_size",
    "detectron_preprocess",
    "detectron2_preprocess",
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
    """Bilinear resize of a Tensor[N, C, H, W] (or Tensor[C, H, W]) image to ``size`` = (height, width), on a coordinate mode.

    Built on :func:`resize_coordinate_map`: each output pixel interpolates the input linearly at its mapped
    coordinate, clamped to the image (edge replication). ``antialias=True`` (``half_pixel`` only) uses PIL's
    triangle filter instead: widened by the downscale factor and renormalised where it leaves the image, as
    ``F.interpolate(..., antialias=True)`` does (so it also differs from plain bilinear at the borders when
    upscaling); sides of length 1 are the exception, which torch's antialiased kernel treats differently.

    ``half_pixel`` equals ``F.interpolate(mode="bilinear", align_corners=False)`` for every size, output sides of 1
    included; ``align_corners`` equals ``align_corners=True``. ``pytorch_half_pixel`` equals ``align_corners=False``
    only while every output side is longer than 1: ONNX maps a length-1 output to input coordinate 0 (the first
    pixel), where PyTorch samples the centre. ``antialias=True`` with ``half_pixel`` is PIL's ``BILINEAR`` (computed
    in float64 here; :func:`pil_resize` reproduces PIL's own arithmetic).
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
# OpenCV's and PIL's bilinear resize, operation by operation
# --------------------------------------------------------------------------------------------
_F32 = torch.float32


def _image_chw(image: ArrayLike, name: str) -> Tuple[torch.Tensor, bool]:
    """A Tensor[H, W] or Tensor[C, H, W] image as Tensor[C, H, W], and whether it was Tensor[H, W]."""
    x = _v.as_image(image, name)
    if x.dim() not in (2, 3) or 0 in x.shape:
        raise ValueError(f"{name} must be H x W or C x H x W with H, W >= 1, got shape {tuple(x.shape)}")
    return (x[None], True) if x.dim() == 2 else (x, False)


def _cv2_taps(n_in: int, n_out: int, scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's INTER_LINEAR source index and float32 fraction of each output (``cv::hal::resize``): the position
    (j + 0.5) scale - 0.5 is computed in double and rounded to float, then split into floor and fraction."""
    pos = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).to(_F32)
    lo = torch.floor(pos)
    return lo.long(), pos - lo


def _cv2_linear(x: torch.Tensor, out_h: int, out_w: int, scale_y: float, scale_x: float) -> torch.Tensor:
    """OpenCV's generic INTER_LINEAR on float32 (``resizeGeneric_`` with ``HResizeLinear``/``VResizeLinear``)."""
    H, W = x.shape[-2:]
    sx, fx = _cv2_taps(W, out_w, scale_x)
    left = sx < 0                                   # columns left of the image: the first pixel, weight (1, 0)
    sx, fx = torch.where(left, 0, sx), torch.where(left, 0.0, fx)
    right = sx >= W - 1                             # from here on, the last pixel itself (xmax)
    sx, fx = torch.where(right, W - 1, sx), torch.where(right, 0.0, fx)
    a, b = x[..., sx], x[..., (sx + 1).clamp(max=W - 1)]
    rows = torch.where(right, a, a * (1 - fx) + b * fx)          # float32: two products and a sum, each rounded
    sy, fy = _cv2_taps(H, out_h, scale_y)           # rows: no reset at the borders; the row indices are clipped
    top, bottom = rows[..., sy.clamp(0, H - 1), :], rows[..., (sy + 1).clamp(0, H - 1), :]
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def _cv2_area_half(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """OpenCV's ``resizeAreaFast_`` for an exact 2x reduction (which INTER_LINEAR hands over to INTER_AREA): full
    2 x 2 blocks are (a + b) + (c + d) where its SIMD loop runs (1 or 4 channels, in groups of four values) and
    ((a + b) + c) + d elsewhere, times 0.25; blocks cut by an odd edge average the pixels they have."""
    H, W = x.shape[-2:]
    hf, wf = min(H // 2, out_h), min(W // 2, out_w)
    out = torch.zeros(*x.shape[:-2], out_h, out_w, dtype=_F32)
    blk = x[..., : 2 * hf, : 2 * wf]
    a, b, c, d = blk[..., 0::2, 0::2], blk[..., 0::2, 1::2], blk[..., 1::2, 0::2], blk[..., 1::2, 1::2]
    full = ((a + b) + c) + d
    cn = x.shape[0] if x.dim() == 3 else 1
    v = (wf * cn // 4) * 4 // cn if cn in (1, 4) else 0       # its SIMD loop runs for 1 and 4 channels only
    full[..., :v] = ((a + b) + (c + d))[..., :v]
    out[..., :hf, :wf] = full * 0.25
    for dy in range(out_h):                          # the partial blocks along an odd edge, pixel by pixel
        for dx in range(out_w):
            if dy < hf and dx < wf:
                continue
            vals = x[..., 2 * dy: 2 * dy + 2, 2 * dx: 2 * dx + 2]
            if vals.shape[-1] and vals.shape[-2]:
                acc = torch.zeros(x.shape[:-2], dtype=_F32)
                for v_ in vals.reshape(*vals.shape[:-2], -1).unbind(-1):
                    acc = acc + v_
                out[..., dy, dx] = acc / float(vals.shape[-1] * vals.shape[-2])
    return out


def cv2_resize(image: ArrayLike, size: Union[Sequence[int], None] = None, fx: Union[float, None] = None,
               fy: Union[float, None] = None) -> torch.Tensor:
    """``cv2.resize(image, dsize, fx=..., fy=...)`` with the default ``INTER_LINEAR``, on a float32 image.

    ``image``: Tensor[H, W] or Tensor[C, H, W] (OpenCV's Tensor[H, W, C], channels first), computed in float32 like OpenCV's float
    path. Give either ``size`` = (height, width) (OpenCV's ``dsize`` is (width, height)) or the factors ``fx``,
    ``fy`` (``fy`` defaults to ``fx``), as Detectron's ``utils/blob.py:prep_im_for_blob`` calls it: the output
    size is then W fx rounded half to even (``saturate_cast<int>``) and the sampling scale is 1 / fx itself, not
    in / out. Rules, from OpenCV's ``modules/imgproc/src/resize.cpp``: source position (j + 0.5) / scale - 0.5 in
    float32; columns left of the image read the first pixel and columns past the last read the last one; rows are
    clipped to the image; a same-size resize is a copy; an exact 2x reduction in both axes is ``INTER_AREA``'s
    2 x 2 average. Equal bit for bit to OpenCV's own code (``cv2.ipp.setUseIPP(False)``); OpenCV builds with
    Intel IPP (the opencv-python wheels) hand this resize to IPP, whose float32 results differ in the last bits.
    """
    x, squeeze = _image_chw(image, "image")
    if not x.is_floating_point():
        raise ValueError(f"image must be a float image (OpenCV's INTER_LINEAR on float32), got {x.dtype}")
    x = x.to(_F32)
    H, W = x.shape[-2:]
    if size is not None:
        if fx is not None or fy is not None:
            raise ValueError("give either size or fx (and fy), not both")
        out_h, out_w = size_pair(size, "size")
        inv_x, inv_y = out_w / W, out_h / H
    else:
        if fx is None:
            raise ValueError("give size = (height, width) or the scale factor fx")
        inv_x = positive_number(fx, "fx")
        inv_y = positive_number(fy, "fy") if fy is not None else inv_x
        out_w, out_h = round(W * inv_x), round(H * inv_y)     # saturate_cast<int>: round half to even
        if out_w < 1 or out_h < 1:
            raise ValueError(f"fx, fy give an empty output ({out_h} x {out_w}) for a {H} x {W} image")
    if (out_h, out_w) == (H, W):
        out = x.clone()
    else:
        scale_x, scale_y = 1.0 / inv_x, 1.0 / inv_y
        halves = all(abs(sc - 2.0) < 2.220446049250313e-16 for sc in (scale_x, scale_y))
        out = _cv2_area_half(x, out_h, out_w) if halves else _cv2_linear(x, out_h, out_w, scale_y, scale_x)
    return out[0] if squeeze else out


def _pil_taps(n_in: int, n_out: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """PIL's BILINEAR filter taps (``Resample.c:precompute_coeffs``): out x K source indices and float64 weights
    (a triangle of support max(in / out, 1), normalised to sum 1; padded with weight 0 on the first index)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support, ss = filterscale, 1.0 / filterscale
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    xmin = torch.floor(centre - support + 0.5).clamp(min=0).long()      # (int) of a value >= 0, or clamped to 0
    xmax = torch.floor(centre + support + 0.5).clamp(max=n_in).long()
    k = int((xmax - xmin).max())
    x = xmin[:, None] + torch.arange(k)[None]
    inside = x < xmax[:, None]
    w = torch.where(inside, (1.0 - ((x.double() - centre[:, None] + 0.5) * ss).abs()).clamp(min=0.0), 0.0)
    total = torch.zeros(n_out, dtype=torch.float64)
    for j in range(k):                                                   # the sum in tap order, as PIL adds them
        total = total + w[:, j]
    w = torch.where(total[:, None] != 0, w / total[:, None], w)
    return torch.where(inside, x, 0), w


def _pil_pass(x: torch.Tensor, n_out: int, dim: int) -> torch.Tensor:
    """One pass of PIL's separable resample along ``dim`` (-1: horizontal, -2: vertical)."""
    idx, w = _pil_taps(x.shape[dim], n_out)
    xs = x.movedim(dim, -1)
    if x.dtype == torch.uint8:
        # ImagingResample*_8bpc: weights in fixed point with 22 fractional bits, rounded; a sum that starts at half
        # a unit; the result shifted back (floor) and clipped to 0..255
        kk = torch.floor(w * (1 << 22) + 0.5).int()
        acc = torch.full((*xs.shape[:-1], n_out), 1 << 21, dtype=torch.int32)
        for k in range(idx.shape[1]):
            acc = acc + xs[..., idx[:, k]].int() * kk[:, k]
        out = torch.div(acc, 1 << 22, rounding_mode="floor").clamp(0, 255).to(torch.uint8)
    else:
        # ImagingResample*_32bpc: a double sum in tap order, stored as float32
        acc = torch.zeros((*xs.shape[:-1], n_out), dtype=torch.float64)
        for k in range(idx.shape[1]):
            acc = acc + xs[..., idx[:, k]].double() * w[:, k]
        out = acc.to(_F32)
    return out.movedim(-1, dim)


def pil_resize(image: ArrayLike, size: Sequence[int], vertical_first: bool = False) -> torch.Tensor:
    """``PIL.Image.resize((width, height), Image.BILINEAR)``, as Detectron2's ``ResizeTransform`` calls it on uint8.

    ``image``: Tensor[H, W] or Tensor[C, H, W], uint8 (PIL's "L"/"RGB" modes: integer arithmetic) or float32 (mode "F": double
    sums). ``size`` = (height, width). PIL's BILINEAR is a triangle filter widened by the reduction factor (so it
    antialiases when shrinking, and is plain bilinear interpolation when enlarging), normalised where it leaves the
    image (``src/libImaging/Resample.c``). It resizes in two passes, rounding to uint8 in between: horizontally, then
    vertically, in every Pillow release up to 12; Pillow 13 runs the vertical pass first for some reductions of the
    height (python-pillow/Pillow PR #9549), ``vertical_first=True``. The two orders differ by at most one level of
    uint8 (or float32 rounding).
    """
    vertical_first = _v.flag(vertical_first, "vertical_first")
    x, squeeze = _image_chw(image, "image")
    if x.dtype not in (torch.uint8, torch.float32):
        raise ValueError(f"image must be uint8 (PIL 'L', 'RGB') or float32 (PIL 'F'), got {x.dtype}")
    out_h, out_w = size_pair(size, "size")
    for dim, n in ((-2, out_h), (-1, out_w)) if vertical_first else ((-1, out_w), (-2, out_h)):
        if n != x.shape[dim]:
            x = _pil_pass(x, n, dim)
    out = x.clone()
    return out[0] if squeeze else out


# --------------------------------------------------------------------------------------------
# Input preprocessing: Detectron's (OpenCV, mean first, float32) and Detectron2's (PIL, uint8, mean last)
# --------------------------------------------------------------------------------------------
#: Detectron's ``cfg.PIXEL_MEANS`` (BGR; ``detectron/core/config.py``). There is no standard deviation.
DETECTRON_PIXEL_MEANS: Tuple[float, float, float] = (102.9801, 115.9465, 122.7717)
#: Detectron2's ``MODEL.PIXEL_MEAN`` (BGR, since ``INPUT.FORMAT`` is BGR; ``detectron2/config/defaults.py``), with
#: ``MODEL.PIXEL_STD`` = (1, 1, 1) for the MSRA/Detectron weights.
DETECTRON2_PIXEL_MEAN: Tuple[float, float, float] = (103.530, 116.280, 123.675)


def _three(values: Sequence[float], name: str, positive: bool = False) -> List[float]:
    """Three finite numbers, one per channel (B, G, R)."""
    out = _v.numbers(values, name, positive=positive)
    if len(out) != 3:
        raise ValueError(f"{name} must have 3 values, one per channel (B, G, R), got {len(out)}")
    return out


def _bgr_uint8(image: ArrayLike) -> torch.Tensor:
    x = _v.as_image(image, "image")
    if x.dtype != torch.uint8 or x.dim() != 3 or x.shape[0] != 3 or 0 in x.shape:
        raise ValueError(f"image must be a 3 x H x W uint8 tensor (BGR, as read from a file), got "
                         f"{x.dtype} of shape {tuple(x.shape)}")
    return x


def detectron_input_size(height: int, width: int, target_size: int = 800, max_size: int = 1333) -> Tuple[float, Tuple[int, int]]:
    """Detectron's scale and network input size (``utils/blob.py:prep_im_for_blob``): im_scale = target / shorter
    side, or max_size / longer side when ``np.round(im_scale * longer) > max_size``; OpenCV then makes each side
    round-half-to-even(side * im_scale). Returns (im_scale, (height, width))."""
    h, w = positive_int(height, "height"), positive_int(width, "width")
    t, m = positive_int(target_size, "target_size"), positive_int(max_size, "max_size")
    im_scale = float(t) / float(min(h, w))
    if round(im_scale * max(h, w)) > m:          # np.round: half to even, like Python's round
        im_scale = float(m) / float(max(h, w))
    return im_scale, (round(h * im_scale), round(w * im_scale))


def detectron2_input_size(height: int, width: int, short_edge: int = 800, max_size: int = 1333) -> Tuple[int, int]:
    """Detectron2's network input size (``ResizeShortestEdge.get_output_shape``): the shorter side to ``short_edge``,
    scaled down when the longer one passes ``max_size``, each side rounded half up (``int(x + 0.5)``)."""
    h, w = positive_int(height, "height"), positive_int(width, "width")
    size, m = positive_int(short_edge, "short_edge"), positive_int(max_size, "max_size")
    scale = size * 1.0 / min(h, w)
    newh, neww = (size, scale * w) if h < w else (scale * h, size)
    if max(newh, neww) > m:
        scale = m * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def detectron_preprocess(image: ArrayLike, target_size: int = 800, max_size: int = 1333,
                         pixel_means: Sequence[float] = DETECTRON_PIXEL_MEANS) -> Tuple[torch.Tensor, float]:
    """Detectron's test-time input (``utils/blob.py:prep_im_for_blob``): the BGR uint8 image as float32, minus
    ``PIXEL_MEANS`` (a float64 array, so the subtraction runs in double and is stored as float32), then
    ``cv2.resize(im, None, None, fx=im_scale, fy=im_scale, interpolation=cv2.INTER_LINEAR)`` on the float image.
    ``image``: Tensor[3, H, W] uint8, BGR. Returns (3 x h x w float32, im_scale); boxes map back by / im_scale."""
    x = _bgr_uint8(image)
    im_scale, _ = detectron_input_size(x.shape[1], x.shape[2], target_size, max_size)
    mean = torch.tensor(_three(pixel_means, "pixel_means"), dtype=torch.float64).view(3, 1, 1)
    centred = (x.double() - mean).to(_F32)
    return cv2_resize(centred, fx=im_scale, fy=im_scale), im_scale


def detectron2_preprocess(image: ArrayLike, short_edge: int = 800, max_size: int = 1333,
                          pixel_mean: Sequence[float] = DETECTRON2_PIXEL_MEAN,
                          pixel_std: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Detectron2's test-time input: ``ResizeShortestEdge`` (``ResizeTransform.apply_image`` resizes uint8 images
    with PIL's BILINEAR: :func:`pil_resize`), then ``GeneralizedRCNN.preprocess_image``: (x - PIXEL_MEAN) / PIXEL_STD
    in float32. ``image``: Tensor[3, H, W] uint8, BGR. Returns 3 x h x w float32; boxes map back by the per-axis ratio
    new / old."""
    x = _bgr_uint8(image)
    h, w = detectron2_input_size(x.shape[1], x.shape[2], short_edge, max_size)
    resized = pil_resize(x, (h, w)) if (h, w) != tuple(x.shape[1:]) else x
    mean = torch.tensor(_three(pixel_mean, "pixel_mean"), dtype=_F32).view(3, 1, 1)
    std = torch.tensor(_three(pixel_std, "pixel_std", positive=True), dtype=_F32).view(3, 1, 1)
    return (resized.to(_F32) - mean) / std


# --------------------------------------------------------------------------------------------
# TensorFlow's crop_and_resize and ROIAlign
# --------------------------------------------------------------------------------------------
def _axis_samples(a0: torch.Tensor, a1: torch.Tensor, n: int, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """TF's sample positions along one axis (in index units) and their validity, K x n, in float32 as its CPU kernel
    computes them: scale = (a1 - a0) (L - 1) / (n - 1), position a0 (L - 1) + i scale, each operation rounded to float;
    a single sample sits at 0.5 (a0 + a1) (L - 1), evaluated in double (``0.5`` is a double literal) and rounded."""
    last = torch.tensor(float(length - 1), dtype=_F32)
    if n > 1:
        scale = (a1 - a0) * last / torch.tensor(float(n - 1), dtype=_F32)
        pos = (a0 * last)[:, None] + torch.arange(n, dtype=_F32)[None] * scale[:, None]
    else:
        pos = (0.5 * (a0 + a1).double() * (length - 1)).to(_F32)[:, None]
    valid = (pos >= 0) & (pos <= last)
    return pos, valid


def crop_and_resize_positions(start: float, end: float, crop: int, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where ``tf.image.crop_and_resize`` samples along one axis of ``length`` pixels, for a box from ``start`` to
    ``end`` (normalised) and ``crop`` samples: the float32 positions in pixel indices, and which lie inside
    [0, length - 1] (the others take the extrapolation value)."""
    a = torch.tensor([finite_number(start, "start"), finite_number(end, "end")], dtype=_F32)
    pos, valid = _axis_samples(a[:1], a[1:], positive_int(crop, "crop"), positive_int(length, "length"))
    return pos[0], valid[0]


def crop_and_resize(image: ArrayLike, boxes: ArrayLike, crop_size: Union[int, Sequence[int]], extrapolation_value: float = 0.0) -> torch.Tensor:
    """``tf.image.crop_and_resize`` (bilinear) on a Tensor[1, C, H, W] tensor: Tensor[K, C, crop_h, crop_w], float32.

    ``boxes``: Tensor[K, 4] normalised [y1, x1, y2, x2] (TensorFlow's order), corner-aligned: y1 maps to row y1 (H - 1)
    and the crop's rows are spread evenly to y2 (H - 1) inclusive. A sample outside [0, H - 1] (or [0, W - 1])
    takes ``extrapolation_value``; inside, it is bilinear between floor and ceil. Everything is float32, operation by
    operation, as in TensorFlow's CPU kernel (``tensorflow/core/kernels/image/crop_and_resize_op.cc``): boxes and
    image values are read as float, so a sample meant for the last row can land at 7.0000005 on an 8-row image and
    take the extrapolation value.
    """
    x = as_tensor(image, "image")
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"image must be 1 x C x H x W with H, W >= 1, got shape {tuple(x.shape)}")
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
    b = b.to(_F32)
    ys, vy = _axis_samples(b[:, 0], b[:, 2], ch, H)
    xs, vx = _axis_samples(b[:, 1], b[:, 3], cw, W)
    y0 = ys.floor().clamp(0, H - 1).long()
    y1 = ys.ceil().clamp(0, H - 1).long()
    x0 = xs.floor().clamp(0, W - 1).long()
    x1 = xs.ceil().clamp(0, W - 1).long()
    fy = (ys - ys.floor())[:, None, :, None]
    fx = (xs - xs.floor())[:, None, None, :]
    img = x[0].to(_F32)

    def at(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:  # K x C x ch x cw
        return img[:, yi[:, :, None], xi[:, None, :]].permute(1, 0, 2, 3)

    top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx
    bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx
    out = top + (bottom - top) * fy
    valid = (vy[:, :, None] & vx[:, None, :])[:, None]
    return torch.where(valid, out, torch.tensor(float(extrapolation_value), dtype=_F32))


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
    nx0 = (x1 + s/2 - 0.5) / (W - 1) and nw = s (crop_size - 1) / (W - 1). Returns Tensor[K, 4] [y1, x1, y2, x2].
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
    ``torchvision.ops.roi_align(..., aligned=True, sampling_ratio=2)``; ``features`` is Tensor[1, C, H, W], ``boxes``
    Tensor[K, 4] in image pixels. Returns Tensor[K, C, R, R].
    """
    f = as_tensor(features, "features")
    if f.dim() != 4 or f.shape[0] != 1 or f.shape[2] < 1 or f.shape[3] < 1:
        raise ValueError(f"features must be 1 x C x H x W with H, W >= 1, got shape {tuple(f.shape)}")
    r = positive_int(resolution, "resolution")
    pad_border = _v.flag(pad_border, "pad_border")
    H, W = f.shape[-2:]
    img = torch.nn.functional.pad(f, (1, 1, 1, 1), mode="replicate") if pad_border else f
    positive_number(spatial_scale, "spatial_scale", maximum=_v.MAX_SPATIAL_SCALE)
    tb = roi_align_box_to_crop_and_resize(boxes, (H, W), 2 * r, spatial_scale, pad_border)
    crops = crop_and_resize(img, tb, 2 * r)
    return torch.nn.functional.avg_pool2d(crops, 2, 2)


def naive_roi_align_via_crop_and_resize(features: ArrayLike, boxes: ArrayLike, resolution: int) -> torch.Tensor:
    """The first thing people try for ROIAlign on TensorFlow: ``crop_and_resize`` at 2R x 2R on the naive boxes
    (:func:`naive_crop_and_resize_boxes`: corners divided by the map size), then a 2 x 2 average. ``features``:
    Tensor[1, C, H, W]; ``boxes``: Tensor[K, 4] in feature cells (x1, y1, x2, y2). Returns Tensor[K, C, R, R]."""
    f = as_tensor(features, "features")
    if f.dim() != 4 or f.shape[0] != 1:
        raise ValueError(f"features must be 1 x C x H x W, got shape {tuple(f.shape)}")
    n = 2 * positive_int(resolution, "resolution")
    nb = naive_crop_and_resize_boxes(boxes, tuple(f.shape[-2:]))
    return torch.nn.functional.avg_pool2d(crop_and_resize(f, nb, n), 2, 2)


def crop_and_resize_grid(boxes: ArrayLike, length: int, crop: int, shift: float = 0.0) -> torch.Tensor:
    """Where ``crop_and_resize`` samples for the first of ``boxes`` (Tensor[K, 4], normalised [y1, x1, y2, x2]) on a
    square map of ``length`` cells, ``crop`` x ``crop`` samples, minus ``shift`` (1 for a map padded by one cell):
    (crop * crop) x 2 of (x, y) in the unpadded map's pixel indices, row by row, in float64 for drawing."""
    b = as_tensor(boxes, "boxes").to(torch.float64)
    if b.dim() != 2 or b.shape[-1] != 4 or len(b) == 0:
        raise ValueError(f"boxes must be K x 4 with K >= 1, got shape {tuple(b.shape)}")
    L, n = positive_int(length, "length"), positive_int(crop, "crop")
    if n < 2:
        raise ValueError(f"crop must be at least 2 (samples spread from one corner to the other), got {n}")
    shift = finite_number(shift, "shift")
    steps = torch.arange(n, dtype=torch.float64)
    ys = b[0, 0] * (L - 1) + steps * (b[0, 2] - b[0, 0]) * (L - 1) / (n - 1)
    xs = b[0, 1] * (L - 1) + steps * (b[0, 3] - b[0, 1]) * (L - 1) / (n - 1)
    Y, X = torch.meshgrid(ys - shift, xs - shift, indexing="ij")
    return torch.stack([X.reshape(-1), Y.reshape(-1)], 1)


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


#: The layers of a ResNet-50 that change the stride, in order: (name, kernel, stride), for the main branch of each
#: stage's first block with the stride in the 3 x 3 convolution (torchvision, Caffe2's "C2" models) or in the first
#: 1 x 1 (``MODEL.RESNETS.STRIDE_IN_1X1``, Detectron's ``RESNETS.STRIDE_1X1``: the original MSRA ResNets), and for
#: the projection shortcut (a 1 x 1, stride 2). Stride-1 layers with odd kernels are centred under every padding and do not move
#: the grid.
RESNET_STRIDE_LAYERS: Dict[str, List[Tuple[str, int, int]]] = {
    "stem": [("conv1 7x7/2", 7, 2), ("max pool 3x3/2", 3, 2)],
    "stride_in_3x3": [("res3 conv2 3x3/2", 3, 2), ("res4 conv2 3x3/2", 3, 2), ("res5 conv2 3x3/2", 3, 2)],
    "stride_in_1x1": [("res3 conv1 1x1/2", 1, 2), ("res4 conv1 1x1/2", 1, 2), ("res5 conv1 1x1/2", 1, 2)],
    "shortcut": [("res3 shortcut 1x1/2", 1, 2), ("res4 shortcut 1x1/2", 1, 2), ("res5 shortcut 1x1/2", 1, 2)],
}
BACKBONE_PADDINGS = ("symmetric", "tf_same", "tensorpack")


def _pads(n: int, k: int, s: int, padding: str, tf_pad_mode: bool) -> Tuple[int, int]:
    """(before, after) padding of one layer on an input of length n."""
    if padding == "tf_same":
        return same_padding(n, k, s)
    if padding == "tensorpack" and k > 1 and s == 2:
        # modeling/backbone.py: tf.pad(maybe_reverse_pad(2, 3)) before the 7 x 7 and (0, 1) before the 3 x 3s, reversed
        # to (3, 2) and (1, 0) unless BACKBONE.TF_PAD_MODE; then a "VALID" convolution
        lo, hi = (2, 3) if k == 7 else (0, 1)
        return (lo, hi) if tf_pad_mode else (hi, lo)
    return k // 2, k // 2


def backbone_offsets(size: int, stride_in_1x1: bool = False, padding: str = "tf_same",
                     tf_pad_mode: bool = False) -> List[Dict[str, object]]:
    """Where a ResNet-50's feature grid sits, per stride, in image pixels: the offset of output 0's centre from the
    symmetric-padding grid (which puts output i of stride S at S i), on an input side of ``size`` pixels.

    Each layer (kernel k, stride s, ``before`` pixels of padding) centres output o on input o s - before + (k - 1) / 2;
    chaining the layers in image pixels, a layer whose input has stride S adds S ((k - 1) / 2 - before) to the
    offset. ``padding``: ``"symmetric"`` (k // 2 each side: PyTorch, Caffe2), ``"tf_same"`` (TensorFlow's "SAME":
    :func:`same_padding`, which depends on each layer's input length) or ``"tensorpack"`` (its explicit pads and
    "VALID" convolutions, with ``tf_pad_mode`` = ``BACKBONE.TF_PAD_MODE``; tensorpack pads only the stem, the pool
    and the 3 x 3 stride-2 convolutions, and uses "SAME" for the 1 x 1s). ``stride_in_1x1`` is Detectron2's
    ``MODEL.RESNETS.STRIDE_IN_1X1`` (the original MSRA ResNets): the stride then sits in a 1 x 1, which no padding
    moves.

    Returns one entry per stride 2, 4, 8, 16, 32: ``stride``, ``size`` (the feature length), ``main`` (offset of the
    main branch, px) and ``shortcut`` (offset of the projection shortcut that is added to it, px; stride 2 and 4 have
    no shortcut of their own: the stem's offset).
    """
    n0 = positive_int(size, "size")
    one_of(padding, "padding", BACKBONE_PADDINGS)
    stride_in_1x1, tf_pad_mode = _v.flag(stride_in_1x1, "stride_in_1x1"), _v.flag(tf_pad_mode, "tf_pad_mode")
    branch = RESNET_STRIDE_LAYERS["stride_in_1x1" if stride_in_1x1 else "stride_in_3x3"]

    def chain(layers: List[Tuple[str, int, int]]) -> List[Tuple[int, float]]:
        n, stride, offset, out = n0, 1, 0.0, []
        for _, k, s in layers:
            before, after = _pads(n, k, s, "tf_same" if padding == "tensorpack" and k == 1 else padding, tf_pad_mode)
            offset += stride * ((k - 1) / 2 - before)
            n, stride = (n + before + after - k) // s + 1, stride * s
            out.append((n, offset))
        return out

    main = chain(RESNET_STRIDE_LAYERS["stem"] + branch)
    short = chain(RESNET_STRIDE_LAYERS["stem"] + RESNET_STRIDE_LAYERS["shortcut"])
    return [{"stride": 2 ** (i + 1), "size": m[0], "main": m[1], "shortcut": sh[1]} for i, (m, sh) in enumerate(zip(main, short))]


# --------------------------------------------------------------------------------------------
# ONNX's modes against the two conventions (data for the chapter's tables)
# --------------------------------------------------------------------------------------------
ONNX_MODES: List[Dict[str, str]] = [
    {"op": "RoiAlign", "attribute": "coordinate_transformation_mode = half_pixel (opset 16+, default)",
     "rule": "shift the scaled box by -0.5", "matches": "aligned=True: Detectron2's ROIAlignV2"},
    {"op": "RoiAlign", "attribute": "coordinate_transformation_mode = output_half_pixel (the only behaviour before opset 16)",
     "rule": "no shift", "matches": "aligned=False: Detectron's ROIAlign (and torchvision's default)"},
    {"op": "Resize", "attribute": "coordinate_transformation_mode = half_pixel",
     "rule": "x_in = (x_out + 0.5) / s - 0.5",
     "matches": "F.interpolate(align_corners=False) at every size (what torch 2's exporters write for it), "
                "OpenCV's INTER_LINEAR, PIL's BILINEAR when enlarging, TF2's tf.image.resize"},
    {"op": "Resize", "attribute": "coordinate_transformation_mode = pytorch_half_pixel",
     "rule": "as half_pixel, but 0 when the output length is 1",
     "matches": "F.interpolate(align_corners=False) only where every output side is > 1; PyTorch's exporter wrote "
                "it for align_corners=False until mid-2022 (pytorch/pytorch issue #79361)"},
    {"op": "Resize", "attribute": "coordinate_transformation_mode = align_corners",
     "rule": "x_in = x_out (in - 1) / (out - 1)", "matches": "F.interpolate(align_corners=True)"},
    {"op": "Resize", "attribute": "coordinate_transformation_mode = asymmetric",
     "rule": "x_in = x_out / s", "matches": "TF1 resize_bilinear without half_pixel_centers; nearest upsampling in FPN"},
]
