"""Anchor grids: Detectron's quantized cell anchors against Detectron2's exact ones.

Coordinate conventions
----------------------
* Detectron (``detectron/modeling/generate_anchors.py``): anchors are inclusive pixel indices. The base
  window is [0, 0, stride - 1, stride - 1], whose centre is the pixel index (stride - 1) / 2; widths and
  heights are rounded with ``np.round`` (half to even) in ``_ratio_enum``; rows are ratio-major.
  Grids shift the cell anchors by ``arange(W) * stride`` (``ops/generate_proposals.py``).
* Detectron2 (``detectron2/modeling/anchor_generator.py:DefaultAnchorGenerator``): continuous
  coordinates. Cell anchors are centred at (0, 0) with exact w = sqrt(s^2 / a), h = a w; rows are
  size-major; grids shift by ``arange(offset * stride, W * stride, stride)`` with
  ``MODEL.ANCHOR_GENERATOR.OFFSET`` (config default 0.0).

In continuous coordinates ([x1, y1, x2 + 1, y2 + 1]) Detectron's anchors are Detectron2's with OFFSET 0.5
plus the rounding, not the default OFFSET 0.0. Both lay grids out location-major: for each feature location
(row by row), every cell anchor.

Sizes and strides are in image pixels. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from explainer import _validate as _v
from explainer._validate import ArrayLike, as_tensor, finite_number, positive_int, positive_number, size_pair
from explainer.conventions import DETECTRON2, Convention, check_convention
from explainer.pixels import to_continuous, to_inclusive

__all__ = [
    "detectron_cell_anchors",
    "d2_cell_anchors",
    "detectron_retinanet_cell_anchors",
    "retinanet_sizes",
    "torchvision_cell_anchors",
    "grid_anchors",
    "cell_anchors",
    "ratio_major_to_size_major",
    "anchor_order_permutation",
    "permute_anchor_rows",
    "rpn_outputs_per_anchor",
    "object_answering_rpn",
    "anchor_report",
    "fpn_level_configs",
    "c4_config",
    "all_level_anchors",
    "proposal_shift",
]


def _four_deltas(deltas) -> torch.Tensor:
    d = as_tensor(deltas, "deltas").to(torch.float64)
    if d.numel() != 4:
        raise ValueError(f"deltas must be 4 numbers (dx, dy, dw, dh), got shape {tuple(d.shape)}")
    return d.reshape(4)


def _level_configs(configs: Any) -> List[Dict]:
    """``configs`` checked: a non-empty list of {"stride", "sizes", "aspect_ratios"} (as fpn_level_configs gives)."""
    if isinstance(configs, (str, bytes, dict)) or not isinstance(configs, (list, tuple)):
        raise _v.WrongType(f"configs must be a list of levels {{'stride', 'sizes', 'aspect_ratios'}} (see "
                           f"fpn_level_configs), got {type(configs).__name__}")
    if not configs:
        raise ValueError("configs must list at least one level {'stride', 'sizes', 'aspect_ratios'} (see "
                         "fpn_level_configs), got an empty list")
    for i, c in enumerate(configs):
        if not isinstance(c, dict) or not {"stride", "sizes", "aspect_ratios"} <= set(c):
            raise ValueError(f"configs[{i}] must be a dict with 'stride', 'sizes' and 'aspect_ratios' (see "
                             f"fpn_level_configs), got {str(c)[:60]}")
    return list(configs)


def _positive_list(values, name: str) -> List[float]:
    return _v.positive_numbers(values, name)


# --------------------------------------------------------------------------------------------
# Detectron: generate_anchors, written out step by step (numpy float64, as the original)
# --------------------------------------------------------------------------------------------
def _whctrs(anchor: np.ndarray):
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws: np.ndarray, hs: np.ndarray, x_ctr, y_ctr) -> np.ndarray:
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1), x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))


def _ratio_enum(anchor: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    size_ratios = (w * h) / ratios
    ws = np.round(np.sqrt(size_ratios))  # the quantization (Detectron issue #227); numpy rounds half to even
    hs = np.round(ws * ratios)
    return _mkanchors(ws, hs, x_ctr, y_ctr)


def _scale_enum(anchor: np.ndarray, scales: np.ndarray) -> np.ndarray:
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    return _mkanchors(w * scales, h * scales, x_ctr, y_ctr)


def detectron_cell_anchors(stride: float, sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """Detectron's ``generate_anchors(stride, sizes, aspect_ratios)``: Tensor[A, 4] inclusive pixel indices, float64.

    Rows are ratio-major: row = ratio_index * len(sizes) + size_index.
    """
    stride_px = positive_number(stride, "stride")
    size_arr = np.array(_positive_list(sizes, "sizes"), dtype=np.float64)
    ratios = np.array(_positive_list(aspect_ratios, "aspect_ratios"), dtype=np.float64)
    base = np.array([1, 1, stride_px, stride_px], dtype=np.float64) - 1
    ratio_anchors = _ratio_enum(base, ratios)
    scales = size_arr / stride_px
    out = np.vstack([_scale_enum(ratio_anchors[i, :], scales) for i in range(ratio_anchors.shape[0])])
    return torch.from_numpy(out)


def detectron_retinanet_cell_anchors(stride: float, scales_per_octave: int = 3,
                                     aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                                     anchor_scale: float = 4.0) -> torch.Tensor:
    """Detectron's RetinaNet cell anchors for one level (``core/test_retinanet.py:_create_cell_anchors``, defaults
    from ``RETINANET.SCALES_PER_OCTAVE``, ``ASPECT_RATIOS`` and ``ANCHOR_SCALE``): Tensor[A, 4] inclusive pixel
    indices, float64.

    For each octave o, then each aspect ratio, one ``generate_anchors(stride, (stride * 2**(o / n) * anchor_scale,),
    (ratio,))``: the rows are octave-major, which is size-major, the order of Detectron2's ``generate_cell_anchors``
    with ``SIZES`` [x, x 2**(1/3), x 2**(2/3)] (``configs/Base-RetinaNet.yaml``). Unlike the C4 RPN's rows, nothing
    needs reordering.
    """
    stride_px = positive_number(stride, "stride")
    n = positive_int(scales_per_octave, "scales_per_octave", maximum=64)
    ratios = _positive_list(aspect_ratios, "aspect_ratios")
    scale = positive_number(anchor_scale, "anchor_scale")
    rows = [detectron_cell_anchors(stride_px, [stride_px * 2 ** (o / n) * scale], [ratio])
            for o in range(n) for ratio in ratios]
    return torch.cat(rows)


def retinanet_sizes(stride: float, scales_per_octave: int = 3, anchor_scale: float = 4.0) -> List[float]:
    """The anchor sizes of one RetinaNet level, smallest first: stride * anchor_scale * 2**(o / scales_per_octave)
    (Detectron's loop; Detectron2's ``Base-RetinaNet.yaml`` writes the same sizes, x = 32 at stride 8)."""
    stride_px = positive_number(stride, "stride")
    n = positive_int(scales_per_octave, "scales_per_octave", maximum=64)
    scale = positive_number(anchor_scale, "anchor_scale")
    return [stride_px * scale * 2 ** (o / n) for o in range(n)]


# --------------------------------------------------------------------------------------------
# Detectron2: generate_cell_anchors
# --------------------------------------------------------------------------------------------
def d2_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Detectron2's ``generate_cell_anchors``: Tensor[A, 4] continuous boxes centred at (0, 0), size-major rows.

    w = sqrt(size^2 / ratio), h = ratio * w, so every anchor of a size has area size^2 exactly (up to
    floating point). ``dtype`` float32 gives the values of Detectron2's anchor buffers.
    """
    sizes = _positive_list(sizes, "sizes")
    ratios = _positive_list(aspect_ratios, "aspect_ratios")
    rows = []
    for size in sizes:
        area = size ** 2.0
        for ratio in ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            rows.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(rows, dtype=dtype)


def torchvision_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float],
                             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """torchvision's ``AnchorGenerator.generate_anchors`` (``models/detection/anchor_utils.py``): Tensor[A, 4] centred
    on (0, 0), ratio-major rows (row = ratio_index * len(sizes) + size_index), w = size / sqrt(ratio),
    h = size * sqrt(ratio), and the corners +-w/2, +-h/2 rounded half to even (``Tensor.round``) in ``dtype``. So a
    side is always even: 32 at ratio 0.5 gives 46 x 22, where Detectron's rounded sizes give 48 x 24 at stride 4."""
    s = torch.tensor(_positive_list(sizes, "sizes"), dtype=dtype)
    r = torch.tensor(_positive_list(aspect_ratios, "aspect_ratios"), dtype=dtype)
    h_ratios = torch.sqrt(r)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * s[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * s[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


_ANCHOR_ORDERS = ("ratio_major", "size_major")


def anchor_order_permutation(n_sizes: int, n_ratios: int, src: str, dst: str) -> torch.Tensor:
    """Row permutation ``p`` with ``rows_dst = rows_src[p]`` between the two orders of cell anchors.

    ``src``, ``dst``: ``"ratio_major"`` (Detectron's ``generate_anchors``: row = ratio_index * n_sizes +
    size_index) or ``"size_major"`` (Detectron2's ``generate_cell_anchors``: row = size_index * n_ratios +
    ratio_index). Anything laid out per cell anchor follows the same permutation: the anchors themselves, and
    the per-anchor rows of an RPN's objectness and delta predictors. Returns n_sizes * n_ratios int64 indices.
    """
    n_sizes, n_ratios = positive_int(n_sizes, "n_sizes"), positive_int(n_ratios, "n_ratios")
    for name, v in (("src", src), ("dst", dst)):
        if not isinstance(v, str):
            raise _v.WrongType(f"{name} must be 'ratio_major' or 'size_major', got {type(v).__name__}: {v!r}")
        if v not in _ANCHOR_ORDERS:
            raise ValueError(f"{name} must be 'ratio_major' or 'size_major', got {v!r}")
    idx = torch.arange(n_sizes * n_ratios)
    if src == dst:
        return idx
    # the source's rows as a grid (outer index, inner index); the destination reads that grid transposed
    outer, inner = (n_ratios, n_sizes) if src == "ratio_major" else (n_sizes, n_ratios)
    return idx.reshape(outer, inner).T.reshape(-1)


def ratio_major_to_size_major(anchors: ArrayLike, n_sizes: int, n_ratios: int) -> torch.Tensor:
    """Reorder Detectron's ratio-major rows into Detectron2's size-major order (and nothing else)."""
    a = as_tensor(anchors, "anchors")
    n_sizes, n_ratios = positive_int(n_sizes, "n_sizes"), positive_int(n_ratios, "n_ratios")
    if a.dim() != 2 or a.shape[0] != n_sizes * n_ratios:
        raise ValueError(f"anchors must have n_sizes * n_ratios = {n_sizes * n_ratios} rows, got shape {tuple(a.shape)}")
    return a[anchor_order_permutation(n_sizes, n_ratios, "ratio_major", "size_major")]


def permute_anchor_rows(rows: ArrayLike, n_sizes: int, n_ratios: int, src: str, dst: str, per_anchor: int = 1) -> torch.Tensor:
    """An RPN predictor's weight or bias with its per-anchor rows moved from one cell-anchor order to the other.

    ``rows``: A * ``per_anchor`` rows along dim 0, A = ``n_sizes * n_ratios``: the objectness predictor
    (``rpn_cls_logits`` / ``objectness_logits``, ``per_anchor=1``) or the delta predictor (``rpn_bbox_pred`` /
    ``anchor_deltas``, ``per_anchor=4``). The deltas are laid out anchor-major, then coordinate, in both
    codebases: row 4a + c is coordinate c of anchor a (Detectron's ``generate_proposals.py`` reads the
    (4A, H, W) output as (H, W, A, 4); Detectron2's ``rpn.py`` views (N, A*B, H, W) as (N, A, B, H, W)). So
    block a of 4 rows moves as one, by :func:`anchor_order_permutation`.
    """
    t = as_tensor(rows, "rows")
    n_sizes, n_ratios = positive_int(n_sizes, "n_sizes"), positive_int(n_ratios, "n_ratios")
    k = positive_int(per_anchor, "per_anchor")
    a = n_sizes * n_ratios
    if t.dim() == 0 or t.shape[0] != a * k:
        raise ValueError(f"rows must have n_sizes * n_ratios * per_anchor = {n_sizes} * {n_ratios} * {k} = {a * k} rows "
                         f"along dim 0, got shape {tuple(t.shape)}")
    perm = anchor_order_permutation(n_sizes, n_ratios, src, dst)
    return t.reshape(a, k, *t.shape[1:])[perm].reshape(t.shape)


def _conv1x1(weight: ArrayLike, bias: ArrayLike, feature: ArrayLike, name: str) -> torch.Tensor:
    w, b = as_tensor(weight, f"{name}_weight"), as_tensor(bias, f"{name}_bias")
    f = as_tensor(feature, "feature").reshape(-1)
    if w.dim() not in (2, 4) or w.shape[1] != f.numel() or b.shape != (w.shape[0],):
        raise ValueError(f"{name} must be a 1 x 1 convolution (rows x {f.numel()} [x 1 x 1]) with one bias per row; "
                         f"got weight {tuple(w.shape)}, bias {tuple(b.shape)}")
    return w.reshape(w.shape[0], -1).to(torch.float64) @ f.to(torch.float64) + b.to(torch.float64)


def rpn_outputs_per_anchor(objectness_weight: ArrayLike, objectness_bias: ArrayLike, deltas_weight: ArrayLike,
                           deltas_bias: ArrayLike, feature: ArrayLike, stride: float, sizes: Sequence[float],
                           aspect_ratios: Sequence[float], convention: Convention = DETECTRON2) -> Dict[str, torch.Tensor]:
    """What an RPN head predicts at one feature location for each of its cell anchors, read under ``convention``.

    The head's last two layers are 1 x 1 convolutions: ``objectness_weight`` (Tensor[A, C] or Tensor[A, C, 1, 1])
    and its bias, and ``deltas_weight`` (Tensor[4A, C] or Tensor[4A, C, 1, 1]) and its bias; ``feature`` is the C
    values at the location (0, 0) after the RPN's hidden conv. Row a is read as the convention's cell anchor a (:func:`cell_anchors`: its order, rounding
    and ``offset``), and its deltas are decoded on that anchor with RPN weights (1, 1, 1, 1), in continuous
    coordinates (the same numbers as Detectron's +1 decode, chapter 2). Returns float64 tensors of A rows:
    ``size``, ``ratio`` (the anchor each row is read as), ``anchors`` and ``proposals`` (Tensor[A, 4], image pixels,
    continuous), ``logits``.
    """
    from explainer.boxes import decode

    sizes_l, ratios_l = _positive_list(sizes, "sizes"), _positive_list(aspect_ratios, "aspect_ratios")
    stride = positive_number(stride, "stride")
    a = len(sizes_l) * len(ratios_l)
    logits = _conv1x1(objectness_weight, objectness_bias, feature, "objectness")
    deltas = _conv1x1(deltas_weight, deltas_bias, feature, "deltas")
    if logits.numel() != a or deltas.numel() != 4 * a:
        raise ValueError(f"{len(sizes_l)} sizes x {len(ratios_l)} ratios = {a} anchors need {a} objectness rows and {4 * a} "
                         f"delta rows; got {logits.numel()} and {deltas.numel()}")
    cell = cell_anchors(stride, sizes_l, ratios_l, convention, dtype=torch.float64) + convention.anchor_offset * stride
    if convention.anchor_order == "size_major":
        size, ratio = ([s for s in sizes_l for _ in ratios_l], [r for _ in sizes_l for r in ratios_l])
    else:
        size, ratio = ([s for _ in ratios_l for s in sizes_l], [r for r in ratios_l for _ in sizes_l])
    return {"size": torch.tensor(size, dtype=torch.float64), "ratio": torch.tensor(ratio, dtype=torch.float64),
            "anchors": cell, "logits": logits, "proposals": decode(deltas.reshape(a, 4), cell)}


def object_answering_rpn(channels: int, stride: float, sizes: Sequence[float], aspect_ratios: Sequence[float],
                         object_size: Tuple[float, float] = (96.0, 192.0), seed: int = 0) -> Dict[str, torch.Tensor]:
    """Detectron-layout RPN predictors (ratio-major rows) that answer one feature as a trained RPN would an object.

    For the feature ``e_0`` (1 in channel 0, 0 elsewhere) at location (0, 0), the predictors output for each of
    Detectron's cell anchors (:func:`detectron_cell_anchors`, at its centre stride / 2) the deltas that move that
    anchor exactly onto an object of ``object_size`` = (width, height) pixels centred on the same point, and an
    objectness logit of 10 (IoU - 0.5), IoU being the anchor's overlap with the object. The other channels carry
    small random weights (seeded), as an untrained part of a real head would. Returns float32 ``objectness_weight``
    (Tensor[A, C, 1, 1]), ``objectness_bias`` (A), ``deltas_weight`` (Tensor[4A, C, 1, 1]), ``deltas_bias`` (4A) and ``feature``
    (C): the blobs ``rpn_cls_logits_w/_b`` and ``rpn_bbox_pred_w/_b`` of a Detectron checkpoint, and the probe.
    """
    from explainer.boxes import encode, pairwise_iou

    c = positive_int(channels, "channels")
    stride = positive_number(stride, "stride")
    sides = _v.positive_numbers(object_size, "object_size")
    if len(sides) != 2:
        raise ValueError(f"object_size must be (width, height), got {len(sides)} numbers")
    w_obj, h_obj = sides
    anchors = to_continuous(detectron_cell_anchors(stride, sizes, aspect_ratios))
    a = anchors.shape[0]
    centre = stride / 2.0
    obj = torch.tensor([[centre - w_obj / 2, centre - h_obj / 2, centre + w_obj / 2, centre + h_obj / 2]], dtype=torch.float64)
    deltas = encode(anchors, obj.expand(a, 4))
    logits = 10.0 * (pairwise_iou(anchors, obj)[:, 0] - 0.5)
    g = torch.Generator().manual_seed(_v.seed(seed))
    w_cls = torch.randn(a, c, generator=g, dtype=torch.float64) * 0.01
    w_box = torch.randn(4 * a, c, generator=g, dtype=torch.float64) * 0.01
    w_cls[:, 0], w_box[:, 0] = logits, deltas.reshape(-1)
    feature = torch.zeros(c, dtype=torch.float64)
    feature[0] = 1.0
    return {"objectness_weight": w_cls.float()[:, :, None, None], "objectness_bias": torch.zeros(a),
            "deltas_weight": w_box.float()[:, :, None, None], "deltas_bias": torch.zeros(4 * a), "feature": feature.float()}


# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------
@_v.finite_result
def grid_anchors(cell_anchors: ArrayLike, feature_size: Sequence[int], stride: float, offset: float = 0.0) -> torch.Tensor:
    """All anchors of one level: (H * W * A) x 4, location-major (for each location, every cell anchor).

    ``feature_size`` is (height, width) in feature cells. Shifts are ``arange(offset * stride, W * stride,
    stride)`` as in Detectron2's ``_create_grid_offsets``; Detectron's own grid is ``offset=0`` applied to its
    cell anchors (``arange(W) * stride``).
    """
    cell = as_tensor(cell_anchors, "cell_anchors")
    if cell.dim() != 2 or cell.shape[-1] != 4 or cell.shape[0] == 0:
        raise ValueError(f"cell_anchors must have shape (A, 4) with A >= 1, got {tuple(cell.shape)}")
    fh, fw = size_pair(feature_size, "feature_size")
    _v.check_values(fh * fw * cell.shape[0] * 4, "feature_size", f"{fh * fw:,} locations x {cell.shape[0]} anchors")
    stride = positive_number(stride, "stride")
    off = finite_number(offset, "offset")
    if not 0.0 <= off < 1.0:
        raise ValueError(f"offset must be in [0, 1) (MODEL.ANCHOR_GENERATOR.OFFSET), got {offset!r}")
    dt = cell.dtype
    shift_x = torch.arange(off * stride, fw * stride, step=stride, dtype=dt)[:fw]
    shift_y = torch.arange(off * stride, fh * stride, step=stride, dtype=dt)[:fh]
    sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    sx, sy = sx.reshape(-1), sy.reshape(-1)
    shifts = torch.stack((sx, sy, sx, sy), dim=1)
    return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)


def cell_anchors(stride: float, sizes: Sequence[float], aspect_ratios: Sequence[float], convention: Convention = DETECTRON2,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Tensor[A, 4] cell anchors centred on (0, 0) in continuous coordinates, as the convention's anchor knobs make them.

    ``anchor_round_corners``: torchvision's rounded corners (:func:`torchvision_cell_anchors`);
    ``anchor_rounding``: Detectron's rounded sizes (:func:`detectron_cell_anchors`, read as [x1, y1, x2 + 1, y2 + 1]
    and moved from its centre stride / 2 to 0) instead of Detectron2's exact ones (:func:`d2_cell_anchors`);
    ``anchor_order``: rows ratio-major (for each ratio, every size) or size-major. Place them on a grid with
    :func:`grid_anchors` and ``offset=convention.anchor_offset``. Both presets' rows are exactly their codebase's cell
    anchors in continuous coordinates.
    """
    check_convention(convention)
    n_sizes, n_ratios = len(_positive_list(sizes, "sizes")), len(_positive_list(aspect_ratios, "aspect_ratios"))
    if convention.anchor_round_corners:
        a = torchvision_cell_anchors(sizes, aspect_ratios, dtype=dtype)
        return ratio_major_to_size_major(a, n_sizes, n_ratios).to(dtype) if convention.anchor_order == "size_major" else a
    if convention.anchor_rounding:
        a = to_continuous(detectron_cell_anchors(stride, sizes, aspect_ratios)) - positive_number(stride, "stride") / 2.0
        if convention.anchor_order == "size_major":  # generate_anchors' rows are ratio-major
            a = ratio_major_to_size_major(a, n_sizes, n_ratios)
        return a.to(dtype)
    if convention.anchor_order == "ratio_major":  # generate_cell_anchors' rows are size-major: one ratio at a time
        return torch.cat([d2_cell_anchors(sizes, (r,), dtype=dtype) for r in aspect_ratios])
    return d2_cell_anchors(sizes, aspect_ratios, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Configurations and reports
# --------------------------------------------------------------------------------------------
def fpn_level_configs(levels: Sequence[int] = (2, 3, 4, 5, 6), start_size: float = 32.0,
                      aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> List[Dict]:
    """The default FPN anchors: level l has stride 2^l and one size start_size * 2^(l - min level).

    Detectron: ``FPN.RPN_ANCHOR_START_SIZE`` 32, levels 2..6; Detectron2: ``Base-RCNN-FPN.yaml``
    ``SIZES [[32], [64], [128], [256], [512]]`` with strides 4..64.
    """
    levels = [positive_int(v, "levels", maximum=60) for v in _v.numbers(levels, "levels")]
    start_size, aspect_ratios = positive_number(start_size, "start_size"), _positive_list(aspect_ratios, "aspect_ratios")
    lo = min(levels)
    return [{"name": f"P{lv}", "level": lv, "stride": 2.0 ** lv, "sizes": (start_size * 2.0 ** (lv - lo),),
             "aspect_ratios": tuple(aspect_ratios)} for lv in levels]


def c4_config(sizes: Sequence[float] = (32.0, 64.0, 128.0, 256.0, 512.0), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> Dict:
    """A single-level (C4) configuration: stride 16 and several sizes."""
    sizes, aspect_ratios = _positive_list(sizes, "sizes"), _positive_list(aspect_ratios, "aspect_ratios")
    return {"name": "C4", "level": 4, "stride": 16.0, "sizes": tuple(sizes), "aspect_ratios": tuple(aspect_ratios)}


def anchor_report(stride: float, sizes: Sequence[float], aspect_ratios: Sequence[float]) -> List[Dict]:
    """Per (size, ratio): intended and actual width, height, area and aspect ratio in each codebase.

    Everything is in continuous coordinates (Detectron's anchors converted with [x1, y1, x2 + 1, y2 + 1]),
    so widths are directly comparable. ``centre`` is each anchor's centre at feature location (0, 0):
    Detectron's grid, and Detectron2's with OFFSET 0 and 0.5. ``diff_vs_offset05`` is Detectron minus
    Detectron2 with OFFSET 0.5 (pure rounding), ``diff_vs_offset0`` the same against the default OFFSET 0.
    """
    sizes_l = _positive_list(sizes, "sizes")
    ratios_l = _positive_list(aspect_ratios, "aspect_ratios")
    det = to_continuous(ratio_major_to_size_major(detectron_cell_anchors(stride, sizes_l, ratios_l), len(sizes_l), len(ratios_l)))
    d2 = d2_cell_anchors(sizes_l, ratios_l, dtype=torch.float64)
    stride = float(stride)
    rows = []
    for i, (s, a) in enumerate((s, a) for s in sizes_l for a in ratios_l):
        w_int = math.sqrt(s * s / a)
        dw, dh = float(det[i, 2] - det[i, 0]), float(det[i, 3] - det[i, 1])
        ew, eh = float(d2[i, 2] - d2[i, 0]), float(d2[i, 3] - d2[i, 1])
        if dw <= 0 or dh <= 0:
            raise ValueError(f"stride {stride:g} with size {s:g} and aspect ratio {a:g} gives a Detectron anchor "
                             f"without width or height; use a stride of at least 1 pixel")
        d2_05 = d2[i] + 0.5 * stride
        rows.append({
            "size": s, "ratio": a,
            "intended": {"w": w_int, "h": a * w_int, "area": s * s, "aspect": a},
            "detectron": {"w": dw, "h": dh, "area": dw * dh, "aspect": dh / dw,
                          "centre": (float(det[i, 0] + det[i, 2]) / 2, float(det[i, 1] + det[i, 3]) / 2),
                          "box": [float(v) for v in det[i]]},
            "detectron2": {"w": ew, "h": eh, "area": ew * eh, "aspect": eh / ew, "centre_offset0": (0.0, 0.0),
                           "centre_offset05": (0.5 * stride, 0.5 * stride), "box": [float(v) for v in d2[i]]},
            "diff_vs_offset05": [float(v) for v in det[i] - d2_05],
            "diff_vs_offset0": [float(v) for v in det[i] - d2[i]],
        })
    return rows


def all_level_anchors(image_size: Sequence[int] = (800, 1333), configs: Sequence[Dict] | None = None,
                      convention: Convention = DETECTRON2) -> List[torch.Tensor]:
    """Every anchor of an image over the levels of ``configs`` (default: FPN P2..P6), one tensor per level.

    Feature sizes are ceil(image / stride). Each level is :func:`cell_anchors` under ``convention`` on a grid
    with its ``offset`` (``MODEL.ANCHOR_GENERATOR.OFFSET``), location-major, float32, in the convention's box
    coordinates: inclusive pixel indices under ``legacy_plus_one`` (x2 - 1), continuous otherwise. With
    ``DETECTRON`` that is Detectron's own grid: ``generate_anchors`` shifted by ``arange(W) * stride``; with
    ``DETECTRON2``, ``DefaultAnchorGenerator`` with OFFSET 0.0.
    """
    h, w = size_pair(image_size, "image_size")
    configs = _level_configs(configs) if configs is not None else fpn_level_configs()
    check_convention(convention)
    out = []
    for c in configs:
        fs = (math.ceil(h / c["stride"]), math.ceil(w / c["stride"]))
        cell = cell_anchors(c["stride"], c["sizes"], c["aspect_ratios"], convention)
        if convention.legacy_plus_one:  # x2 - 1 on the A cell anchors rather than on every anchor of the grid
            cell = to_inclusive(cell)
        out.append(grid_anchors(cell, fs, c["stride"], convention.anchor_offset))
    return out


def proposal_shift(configs: Sequence[Dict] | None = None, deltas: ArrayLike | None = None, offset: float = 0.0) -> List[Dict]:
    """The same RPN deltas decoded on each codebase's anchors at feature location (0, 0), per level.

    Each codebase decodes with its own box coder (Detectron's ``bbox_transform`` with "+1" and the "- 1" on
    x2/y2; Detectron2's ``apply_deltas``), RPN weights (1, 1, 1, 1). Reported per level: the proposals (as
    each codebase outputs them), the shift of their numeric centres (x1 + x2) / 2 (what a comparison of
    raw outputs sees: (stride - 1) / 2 at OFFSET 0) and of their continuous centres (stride / 2 at OFFSET 0).
    """
    from explainer.boxes import decode

    configs = _level_configs(configs) if configs is not None else fpn_level_configs()
    off = finite_number(offset, "offset")
    if not 0.0 <= off < 1.0:
        raise ValueError(f"offset must be in [0, 1), got {offset!r}")
    out = []
    for c in configs:
        det = detectron_cell_anchors(c["stride"], c["sizes"], c["aspect_ratios"])
        d2 = d2_cell_anchors(c["sizes"], c["aspect_ratios"], dtype=torch.float64) + off * c["stride"]
        det = ratio_major_to_size_major(det, len(c["sizes"]), len(c["aspect_ratios"]))
        dl = torch.zeros(len(det), 4, dtype=torch.float64) if deltas is None else _four_deltas(deltas).expand(len(det), 4)
        p1 = decode(dl, det, (1.0, 1.0, 1.0, 1.0), legacy_plus_one=True)
        p2 = decode(dl, d2, (1.0, 1.0, 1.0, 1.0))
        num1 = (p1[:, :2] + p1[:, 2:]) / 2
        num2 = (p2[:, :2] + p2[:, 2:]) / 2
        cont1 = (to_continuous(p1)[:, :2] + to_continuous(p1)[:, 2:]) / 2
        out.append({"name": c.get("name", f"stride {c['stride']}"), "stride": c["stride"], "detectron": p1, "detectron2": p2,
                    "numeric_centre_shift": (num1 - num2).mean(0).tolist(),
                    "continuous_centre_shift": (cont1 - num2).mean(0).tolist()})
    return out
