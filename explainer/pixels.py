"""Pixels against coordinates: the two models of an image, and the mapping between them.

Coordinate conventions used in this module
------------------------------------------
* **Continuous coordinates** (Detectron2, torchvision, PIL, ``align_corners=False``): the image is the
  rectangle [0, W] x [0, H]; pixel ``i`` covers [i, i + 1) and its centre is ``i + 0.5``.
  A box (x1, y1, x2, y2) has width ``x2 - x1``.
* **Inclusive pixel indices** (Detectron, maskrcnn-benchmark, py-faster-rcnn): a box (x1, y1, x2, y2)
  names the first and the last pixel it covers, so its width is ``x2 - x1 + 1``.

The inclusive box [x1, x2] is the continuous box [x1, x2 + 1): :func:`to_continuous` and
:func:`to_inclusive` are that mapping and are the whole origin of Detectron's "+1".

All functions take tensors, numpy arrays or lists and return float tensors; boxes are N x 4 in
(x1, y1, x2, y2). Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import torch
import torch.nn.functional as F

from explainer._validate import (
    ArrayLike,
    as_box,
    as_boxes,
    as_points,
    as_tensor,
    finite_number,
    finite_result,
    flag,
    image_size,
    one_of,
    positive_int,
    positive_number,
)

__all__ = [
    "to_continuous",
    "to_inclusive",
    "pixel_centre",
    "pixel_index",
    "box_size",
    "box_centre",
    "pixel_coverage",
    "flip_x",
    "hflip_boxes",
    "hflip_points",
    "hflip_polygon",
    "coco_keypoints_to_continuous",
    "continuous_keypoints_to_coco",
    "keypoint_heatmap_cell",
    "heatmap_cell_to_keypoint",
    "exported_keypoints",
    "bilinear_deconv_kernel",
    "upsample_heatmaps",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "resize_index",
    "scale_boxes",
    "compare_box",
]


# --------------------------------------------------------------------------------------------
# The +1 mapping
# --------------------------------------------------------------------------------------------
def to_continuous(boxes: ArrayLike) -> torch.Tensor:
    """Inclusive pixel-index boxes (Detectron) to continuous boxes: [x1, y1, x2 + 1, y2 + 1].

    ``boxes``: Tensor[N, 4]. Returns Tensor[N, 4] (a new tensor).
    """
    b = as_boxes(boxes, "boxes", legacy_plus_one=True)
    return b + b.new_tensor([0.0, 0.0, 1.0, 1.0])


def to_inclusive(boxes: ArrayLike) -> torch.Tensor:
    """Continuous boxes (Detectron2) to inclusive pixel-index boxes: [x1, y1, x2 - 1, y2 - 1].

    Exact inverse of :func:`to_continuous`. Non-integer corners stay non-integer: Detectron's
    box code accepts them and applies the same +1 arithmetic.
    """
    b = as_boxes(boxes, "boxes")
    return b - b.new_tensor([0.0, 0.0, 1.0, 1.0])


def pixel_centre(index: ArrayLike) -> torch.Tensor:
    """Continuous coordinate of the centre of pixel ``index``: index + 0.5 (Heckbert's c = d + 0.5)."""
    return as_tensor(index, "index") + 0.5


def pixel_index(coordinate: ArrayLike) -> torch.Tensor:
    """The pixel that contains a continuous coordinate: floor(c) (Heckbert's d = floor(c))."""
    return torch.floor(as_tensor(coordinate, "coordinate"))


# --------------------------------------------------------------------------------------------
# Size, area, centre under each model
# --------------------------------------------------------------------------------------------
def box_size(boxes: ArrayLike, *, legacy_plus_one: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Widths and heights (N each): Detectron's x2 - x1 + 1 (``legacy_plus_one``) or Detectron2's x2 - x1.

    The one width formula of the package: :func:`explainer.boxes.area` multiplies these.
    """
    b = as_boxes(boxes, "boxes", legacy_plus_one=legacy_plus_one)
    if legacy_plus_one:
        return b[:, 2] - b[:, 0] + 1.0, b[:, 3] - b[:, 1] + 1.0
    return b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]


def box_centre(boxes: ArrayLike, *, legacy_plus_one: bool = False) -> torch.Tensor:
    """Centres (Tensor[N, 2]) as each codebase computes them: x1 + 0.5 * w with its own w.

    Detectron's centre (x1 + 0.5 (x2 - x1 + 1)) is a continuous coordinate even though its
    corners are pixel indices: it is the centre of the covered pixels seen as squares.
    """
    b = as_boxes(boxes, "boxes", legacy_plus_one=legacy_plus_one)
    w, h = box_size(b, legacy_plus_one=legacy_plus_one)
    return torch.stack([b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h], dim=1)


def pixel_coverage(box: Sequence[float], image_size_hw: Sequence[int], *, inclusive: bool = False) -> torch.Tensor:
    """Fraction of each pixel covered by one box, Tensor[H, W], in [0, 1].

    ``inclusive=True`` reads the box as Detectron's pixel indices (it covers the pixels x1..x2 whole);
    otherwise it is a continuous rectangle and border pixels are covered partly.
    """
    h, w = image_size(image_size_hw, "image_size_hw")
    inclusive = flag(inclusive, "inclusive")
    b = as_box(box, "box", legacy_plus_one=inclusive)
    b = (to_continuous(b) if inclusive else b)[0]
    xs = torch.arange(w, dtype=torch.float64)
    ys = torch.arange(h, dtype=torch.float64)
    cov_x = (torch.minimum(xs + 1, b[2]) - torch.maximum(xs, b[0])).clamp(min=0, max=1)
    cov_y = (torch.minimum(ys + 1, b[3]) - torch.maximum(ys, b[1])).clamp(min=0, max=1)
    return (cov_y[:, None] * cov_x[None, :]).to(torch.float32)


# --------------------------------------------------------------------------------------------
# Horizontal flip
# --------------------------------------------------------------------------------------------
@finite_result
def flip_x(x: ArrayLike, width: float, *, minus_one: bool = False) -> torch.Tensor:
    """Mirror x coordinates in an image of ``width`` pixels.

    Continuous coordinates map x -> W - x (Detectron2, fvcore ``HFlipTransform``); pixel indices map
    i -> W - 1 - i (``minus_one=True``: Detectron's boxes, polygons and keypoints).
    """
    w = positive_number(width, "width")
    minus_one = flag(minus_one, "minus_one")
    t = as_tensor(x, "x")
    return (w - 1.0 if minus_one else w) - t


def hflip_boxes(boxes: ArrayLike, width: float, *, minus_one: bool = False) -> torch.Tensor:
    """Mirror Tensor[N, 4] boxes: the new x1 is the flipped x2 and vice versa.

    ``minus_one=False``: Detectron2 (x1' = W - x2, x2' = W - x1). ``minus_one=True``: Detectron's
    ``roidb.extend_with_flipped_entries`` (x1' = W - x2 - 1, x2' = W - x1 - 1), right for inclusive indices.
    Each is right in its own pixel model: they cover the same pixels. From a convention:
    ``hflip_boxes(boxes, W, **conv.operator_flags("minus_one"))``.
    """
    b = as_boxes(boxes, "boxes", legacy_plus_one=flag(minus_one, "minus_one"))
    out = b.clone()
    out[:, 0] = flip_x(b[:, 2], width, minus_one=minus_one)
    out[:, 2] = flip_x(b[:, 0], width, minus_one=minus_one)
    return out


def hflip_points(points: ArrayLike, width: float, *, minus_one: bool = False) -> torch.Tensor:
    """Mirror Tensor[N, 2] (x, y) points, or Tensor[N, 3] (x, y, visibility): only x changes."""
    flag(minus_one, "minus_one")
    t = as_tensor(points, "points")
    if t.dim() != 2 or t.shape[-1] not in (2, 3):
        raise ValueError(f"points must have shape (N, 2) or (N, 3), got {tuple(t.shape)}")
    as_points(t[:, :2], "points")
    out = t.clone()
    out[:, 0] = flip_x(t[:, 0], width, minus_one=minus_one)
    return out


def hflip_polygon(polygon: ArrayLike, width: float, *, minus_one: bool = False) -> torch.Tensor:
    """Mirror a polygon given flat [x0, y0, x1, y1, ...] (COCO) or as Tensor[K, 2]; returns the same layout.

    Polygons are continuous coordinates, so ``minus_one=True`` (Detectron's ``flip_segms``) moves
    them one pixel too far left.
    """
    flag(minus_one, "minus_one")
    t = as_tensor(polygon, "polygon")
    flat = t.dim() == 1
    if flat:
        if t.numel() % 2:
            raise ValueError(f"polygon given flat must have an even number of values, got {t.numel()}")
        pts = t.reshape(-1, 2)
    else:
        pts = t
    pts = hflip_points(pts, width, minus_one=minus_one)
    return pts.reshape(-1) if flat else pts


def coco_keypoints_to_continuous(keypoints: ArrayLike) -> torch.Tensor:
    """COCO keypoints (pixel indices, Tensor[N, 2] or Tensor[N, 3]) to continuous coordinates: +0.5 on x and y.

    Detectron2's ``load_coco_json`` does this on load.
    """
    t = as_tensor(keypoints, "keypoints")
    if t.dim() != 2 or t.shape[-1] not in (2, 3):
        raise ValueError(f"keypoints must have shape (N, 2) or (N, 3), got {tuple(t.shape)}")
    out = t.clone()
    out[:, :2] += 0.5
    return out


def continuous_keypoints_to_coco(keypoints: ArrayLike) -> torch.Tensor:
    """Continuous keypoints back to COCO pixel indices: -0.5 (Detectron2's ``instances_to_coco_json``)."""
    t = as_tensor(keypoints, "keypoints")
    if t.dim() != 2 or t.shape[-1] not in (2, 3):
        raise ValueError(f"keypoints must have shape (N, 2) or (N, 3), got {tuple(t.shape)}")
    out = t.clone()
    out[:, :2] -= 0.5
    return out


# --------------------------------------------------------------------------------------------
# keypoints through the keypoint head: targets, upsampling, decoding, export
# --------------------------------------------------------------------------------------------
def keypoint_heatmap_cell(x: ArrayLike, roi_start: float, roi_size: float, heatmap_size: int) -> torch.Tensor:
    """The heatmap cell a keypoint trains (one axis): floor((x - roi_start) * heatmap_size / roi_size), as float.

    Both codebases use this rule (Detectron ``utils/keypoints.py:keypoints_to_heatmap_labels``, Detectron2
    ``structures/keypoints.py:_keypoints_to_heatmap``: "d = floor(c)"), on different ``x``: Detectron passes the COCO
    pixel index unchanged, Detectron2 the index + 0.5 it added on load. ``x``: Tensor[N]; a cell outside
    [0, heatmap_size - 1] is not a target (the caller drops it, as both codebases do).
    """
    t = as_tensor(x, "x", torch.float64)
    start = finite_number(roi_start, "roi_start")
    size = positive_number(roi_size, "roi_size")
    n = positive_int(heatmap_size, "heatmap_size")
    return torch.floor((t - start) * (n / size))


def heatmap_cell_to_keypoint(cell: ArrayLike, roi_start: float, roi_size: float, map_size: int) -> torch.Tensor:
    """A heatmap's arg-max cell back to an image coordinate (one axis): roi_start + (cell + 0.5) * roi_size / map_size.

    Both codebases decode so ("c = d + 0.5", Detectron ``utils/keypoints.py:heatmaps_to_keypoints``, Detectron2
    ``structures/keypoints.py:heatmaps_to_keypoints``; ``map_size`` is the size the heatmap was resized to, ceil of
    the box's size). The result is a continuous coordinate in both. ``cell``: Tensor[N] of indices.
    """
    t = as_tensor(cell, "cell", torch.float64)
    start = finite_number(roi_start, "roi_start")
    size = positive_number(roi_size, "roi_size")
    n = positive_int(map_size, "map_size")
    return start + (t + 0.5) * (size / n)


def exported_keypoints(keypoints: ArrayLike, *, keypoint_half_pixel: bool) -> torch.Tensor:
    """Decoded keypoints (Tensor[N, 2] or Tensor[N, 3], x, y, ...) as each codebase's COCO writer writes them.

    Detectron's ``datasets/json_dataset_evaluator.py:_coco_kp_results_one_category`` writes the decoded x and y
    unchanged (``keypoint_half_pixel=False``); Detectron2's ``evaluation/coco_evaluation.py:instances_to_coco_json``
    subtracts 0.5 (``True``). The same heatmap therefore gives keypoints 0.5 px apart in the two result files.
    """
    half = flag(keypoint_half_pixel, "keypoint_half_pixel")
    return continuous_keypoints_to_coco(keypoints) if half else _keypoint_rows(keypoints).clone()


def _keypoint_rows(keypoints: ArrayLike) -> torch.Tensor:
    t = as_tensor(keypoints, "keypoints")
    if t.dim() != 2 or t.shape[-1] not in (2, 3):
        raise ValueError(f"keypoints must have shape (N, 2) or (N, 3), got {tuple(t.shape)}")
    return t


def bilinear_deconv_kernel(up_scale: int) -> torch.Tensor:
    """Detectron's fixed bilinear kernel (``modeling/detector.py:BilinearInterpolation``, from the FCN code):
    Tensor[2 s, 2 s] for an even ``up_scale`` s, (1 - |i - c| / f)(1 - |j - c| / f) with f = s and c = s - 0.5."""
    s = positive_int(up_scale, "up_scale", maximum=64)
    if s % 2:
        raise ValueError(f"up_scale must be even (Detectron asserts it), got {up_scale!r}")
    k = 2 * s
    factor, centre = (k + 1) // 2, ((k + 1) // 2) - 0.5
    w = 1 - (torch.arange(k, dtype=torch.float64) - centre).abs() / factor
    return w[:, None] * w[None, :]


def upsample_heatmaps(maps: ArrayLike, up_scale: int, *, fixed_deconv: bool) -> torch.Tensor:
    """Keypoint heatmaps (Tensor[N, K, H, W]) enlarged ``up_scale`` times, as each keypoint head does.

    ``fixed_deconv=True``: Detectron's ``kps_score``, a ConvTranspose with the fixed bilinear kernel of
    :func:`bilinear_deconv_kernel`, stride s, padding s / 2 (``KRCNN.UP_SCALE``); ``False``: Detectron2's
    ``KRCNNConvDeconvUpsampleHead``, ``interpolate(scale_factor=s, mode="bilinear", align_corners=False)``. Inside,
    the two are equal; on the outer s / 2 rows and columns the transposed convolution misses the weights that fall
    outside the map (zeros), while ``interpolate`` repeats the edge value. Returns Tensor[N, K, s H, s W].
    """
    t = as_tensor(maps, "maps", torch.float64)
    if t.dim() != 4 or t.shape[-1] == 0 or t.shape[-2] == 0:
        raise ValueError(f"maps must have shape (N, K, H, W) with H, W >= 1, got {tuple(t.shape)}")
    fixed_deconv = flag(fixed_deconv, "fixed_deconv")
    kernel = bilinear_deconv_kernel(up_scale)
    s = kernel.shape[0] // 2
    if not fixed_deconv:
        return F.interpolate(t, scale_factor=s, mode="bilinear", align_corners=False)
    n, c, h, w = t.shape
    out = F.conv_transpose2d(t.reshape(n * c, 1, h, w), kernel[None, None], stride=s, padding=s // 2)
    return out.reshape(n, c, *out.shape[-2:])


# --------------------------------------------------------------------------------------------
# COCO's [x, y, w, h]
# --------------------------------------------------------------------------------------------
@finite_result
def xywh_to_xyxy(boxes: ArrayLike, *, legacy_plus_one: bool = False) -> torch.Tensor:
    """COCO [x, y, w, h] to corners: Detectron2 x2 = x + w; Detectron x2 = x + max(0, w - 1)."""
    legacy_plus_one = flag(legacy_plus_one, "legacy_plus_one")
    t = as_tensor(boxes, "boxes")
    if t.dim() == 1 and t.numel() == 0:
        t = t.reshape(0, 4)
    if t.dim() != 2 or t.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as (x, y, w, h), got {tuple(t.shape)}")
    if t.numel() and (not torch.isfinite(t).all() or (t[:, 2:] < 0).any()):
        raise ValueError("boxes must be finite with w >= 0 and h >= 0")
    out = t.clone()
    if legacy_plus_one:
        out[:, 2:] = t[:, :2] + (t[:, 2:] - 1.0).clamp(min=0.0)
    else:
        out[:, 2:] = t[:, :2] + t[:, 2:]
    return out


def xyxy_to_xywh(boxes: ArrayLike, *, legacy_plus_one: bool = False) -> torch.Tensor:
    """Corners to COCO [x, y, w, h]: w = x2 - x1 (+ 1 under ``legacy_plus_one``, Detectron's ``xyxy_to_xywh``)."""
    b = as_boxes(boxes, "boxes", legacy_plus_one=legacy_plus_one)
    w, h = box_size(b, legacy_plus_one=legacy_plus_one)
    return torch.stack([b[:, 0], b[:, 1], w, h], dim=1)


# --------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------
_RESIZE_MODES = ("half_pixel", "align_corners", "asymmetric")


@finite_result
def resize_index(index: ArrayLike, in_size: int, out_size: int, *, mode: str = "half_pixel") -> torch.Tensor:
    """Where input pixel ``index`` (its centre) lands in the output pixel grid, as a fractional index.

    * ``half_pixel`` (``align_corners=False``; PIL, OpenCV, Detectron2): continuous x -> s x, so
      index i -> (i + 0.5) s - 0.5 with s = out / in.
    * ``align_corners``: the corner pixel centres are pinned: i -> i (out - 1) / (in - 1).
    * ``asymmetric`` (TF1's default): i -> i s; the image content shifts towards the top-left.
    """
    n_in = positive_int(in_size, "in_size")
    n_out = positive_int(out_size, "out_size")
    one_of(mode, "mode", _RESIZE_MODES)
    i = as_tensor(index, "index")
    if mode == "half_pixel":
        return (i + 0.5) * (n_out / n_in) - 0.5
    if mode == "align_corners":
        if n_in == 1:
            return torch.zeros_like(i)
        return i * ((n_out - 1) / (n_in - 1))
    if mode == "asymmetric":
        return i * (n_out / n_in)
    raise ValueError(f"mode must be one of {', '.join(_RESIZE_MODES)}; got {mode!r}")


@finite_result
def scale_boxes(boxes: ArrayLike, scale: float, *, legacy_plus_one: bool = False) -> torch.Tensor:
    """Boxes after resizing the image by ``scale``, as each codebase computes them.

    Both codebases multiply the four numbers by the scale (Detectron: ``boxes * im_scale`` in
    ``_get_rois_blob`` / ``im_detect_bbox``; Detectron2: ``ResizeTransform.apply_box``). For continuous
    boxes that is exact. For inclusive boxes it is not: the covered pixels x1..x2 become
    [s x1, s x2 + 1) in continuous terms instead of [s x1, s (x2 + 1)), an error of (1 - s) pixels
    at x2 and y2. Use :func:`compare_box` to see it.
    """
    s = positive_number(scale, "scale")
    b = as_boxes(boxes, "boxes", legacy_plus_one=legacy_plus_one)
    return b * s


def compare_box(box: Sequence[float]) -> Dict[str, Dict[str, Any]]:
    """One box read under both models: width, height, area, centre and covered continuous extent.

    ``box`` is (x1, y1, x2, y2); the same four numbers are read as Detectron's inclusive indices and
    as Detectron2's continuous coordinates, which is what happens when a box crosses codebases
    without conversion.
    """
    b = as_box(box, "box")
    out = {}
    for key, plus in (("detectron", True), ("detectron2", False)):
        w, h = box_size(b, legacy_plus_one=plus)
        c = box_centre(b, legacy_plus_one=plus)[0]
        extent = to_continuous(b)[0] if plus else b[0]
        out[key] = {
            "width": float(w[0]),
            "height": float(h[0]),
            "area": float(w[0] * h[0]),
            "centre": (float(c[0]), float(c[1])),
            "continuous_extent": tuple(float(v) for v in extent),
        }
    return out
