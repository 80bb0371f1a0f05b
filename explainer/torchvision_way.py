"""torchvision's detectors (``torchvision.models.detection``): a third set of conventions, computed here in torch.

Each function below is written from torchvision 0.29's source (file named in its docstring) and checked in the tests
against torchvision's own function, run in the same process. Nothing here imports torchvision.

Coordinate conventions: boxes are Tensor[N, 4] (x1, y1, x2, y2) in continuous image coordinates, as in Detectron2
(no +1 anywhere, except the mask paste, which keeps Detectron's +1 on continuous boxes). Images are Tensor[3, H, W]
RGB floats in [0, 1]. Where torchvision agrees with Detectron or with Detectron2:

=======================  ========================================================  ==================================
what                     torchvision                                               agrees with
=======================  ========================================================  ==================================
cell anchors             ratio-major rows, corners +-w/2 rounded (``.round()``)    Detectron's row order; neither's
                         (``anchor_utils.py:AnchorGenerator.generate_anchors``)    rounding (Detectron rounds sizes)
anchor grid              shifts ``arange(W) * stride``, stride = image // grid     Detectron2 with OFFSET 0.0
ROIAlign                 ``aligned=False``, ``sampling_ratio=2``                   Detectron
FPN level of a box       floor(4 + log2(sqrt(area) / 224) + 1e-6), float32         Detectron2 (no +1)
                         (``ops/poolers.py:LevelMapper``)
box coder                weights (1, 1, 1, 1) RPN, (10, 10, 5, 5) box head,        Detectron2 (no +1)
                         clamp log(1000 / 16) (``_utils.py:BoxCoder``)
NMS                      IoU > threshold; classes apart by coordinate offsets      Detectron2 (which calls it)
                         (``ops/boxes.py:batched_nms``)
mask paste               pad 1, expand, int boxes, +1 sizes, bilinear resize       Detectron (on continuous boxes)
                         (``roi_heads.py:paste_masks_in_image``)
labels                   0 is the background, labels are COCO category ids         Detectron's background row
input                    RGB in [0, 1], ImageNet mean and std, ``F.interpolate``   neither (both: BGR 0..255)
                         (``transform.py:GeneralizedRCNNTransform``)
keypoints                (argmax + 0.5) * width / ceil(width) + x1, bicubic        Detectron
                         (``roi_heads.py:heatmaps_to_keypoints``)
RetinaNet                sigmoid, no background row, top 1000 per level over       Detectron2's decoding
                         0.05, ``batched_nms`` 0.5 (``retinanet.py``)
=======================  ========================================================  ==================================

Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from explainer._validate import (
    ArrayLike,
    as_boxes,
    as_image,
    as_tensor,
    finite_number,
    positive_int,
    positive_number,
    probability,
    size_pair,
)
from explainer.anchors import grid_anchors, torchvision_cell_anchors
from explainer.boxes import decode
from explainer.conventions import RESIZES
from explainer.deployment import (
    DETECTRON2_PIXEL_MEAN,
    DETECTRON_PIXEL_MEANS,
    detectron2_preprocess,
    detectron_preprocess,
)
from explainer.masks import paste_masks
from explainer.pixels import to_inclusive
from explainer.roi_align import roi_align

__all__ = [
    "IMAGE_MEAN", "IMAGE_STD", "BBOX_XFORM_CLIP", "RPN_WEIGHTS", "BOX_HEAD_WEIGHTS",
    "cell_anchors", "image_anchors", "level_mapper", "infer_scale", "multiscale_roi_align", "decode_boxes",
    "nms", "batched_nms", "expand_masks", "paste_masks_in_image", "normalize", "resized_size", "resize_image",
    "batch_images", "resize_boxes", "resize_keypoints", "transform", "heatmaps_to_keypoints",
    "retinanet_postprocess", "input_pipeline", "paste_three_ways", "compare_inputs",
]

#: ``GeneralizedRCNNTransform``'s ``image_mean`` and ``image_std`` in the detection builders (ImageNet's, RGB, [0, 1]).
IMAGE_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)
#: ``BoxCoder``'s default ``bbox_xform_clip`` (``_utils.py``): log(1000 / 16), Detectron2's scale clamp too.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)
#: ``BoxCoder`` weights in the RPN (``rpn.py``) and in the box head (``roi_heads.py``'s default ``bbox_reg_weights``).
RPN_WEIGHTS: Tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
BOX_HEAD_WEIGHTS: Tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)


def _numbers(values: Sequence[float], name: str) -> List[float]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
    return [positive_number(v, name) for v in values]


# --------------------------------------------------------------------------------------------
# Anchors
# --------------------------------------------------------------------------------------------
#: ``AnchorGenerator.generate_anchors`` (:func:`explainer.anchors.torchvision_cell_anchors`).
cell_anchors = torchvision_cell_anchors


def image_anchors(image_size: Sequence[int], feature_sizes: Sequence[Sequence[int]], sizes: Sequence[Sequence[float]],
                  aspect_ratios: Sequence[Sequence[float]]) -> torch.Tensor:
    """``AnchorGenerator.forward`` for one (padded) image of ``image_size`` (height, width): Tensor[sum H_l W_l A_l, 4],
    level by level, location-major. Each level's stride is ``image_size // feature_size`` (integer division) and
    its grid starts at 0 (Detectron2's OFFSET 0.0)."""
    ih, iw = size_pair(image_size, "image_size")
    if not (len(feature_sizes) == len(sizes) == len(aspect_ratios)) or len(sizes) == 0:
        raise ValueError(f"feature_sizes, sizes and aspect_ratios must have one entry per level, got "
                         f"{len(feature_sizes)}, {len(sizes)} and {len(aspect_ratios)}")
    out = []
    for fs, sz, ar in zip(feature_sizes, sizes, aspect_ratios):
        fh, fw = size_pair(fs, "feature_sizes")
        sh, sw = ih // fh, iw // fw
        if sh != sw or sh < 1:
            raise ValueError(f"feature_sizes: a {fh} x {fw} grid on a {ih} x {iw} image has strides {sh}, {sw}; "
                             "give one equal integer stride per level")
        out.append(grid_anchors(cell_anchors(sz, ar), (fh, fw), float(sh), offset=0.0))
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# Pooling: MultiScaleRoIAlign and its LevelMapper
# --------------------------------------------------------------------------------------------
def level_mapper(boxes: ArrayLike, k_min: int = 2, k_max: int = 5, canonical_scale: float = 224.0,
                 canonical_level: int = 4, eps: float = 1e-6) -> torch.Tensor:
    """``ops/poolers.py:LevelMapper``: the index (level - k_min) of the FPN map each box is pooled from, int64.

    floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps), in the boxes' dtype, clamped to
    [k_min, k_max]. The eps is added after the logarithm (Detectron2 and Detectron add theirs inside it).
    """
    b = as_boxes(boxes, "boxes")
    if not b.is_floating_point():
        b = b.float()
    lo, hi = positive_int(k_min, "k_min"), positive_int(k_max, "k_max")
    if hi < lo:
        raise ValueError(f"k_max ({hi}) must be >= k_min ({lo})")
    s0 = positive_number(canonical_scale, "canonical_scale")
    lvl0 = positive_int(canonical_level, "canonical_level")
    e = finite_number(eps, "eps", minimum=0.0)
    s = torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    lvl = torch.floor(lvl0 + torch.log2(s / s0) + torch.tensor(e, dtype=s.dtype))
    return (lvl.clamp(min=lo, max=hi).to(torch.int64) - lo)


def infer_scale(feature_size: Sequence[int], original_size: Sequence[int]) -> float:
    """``ops/poolers.py:_infer_scale``: feature / image size rounded to a power of two (from the heights)."""
    fh, _ = size_pair(feature_size, "feature_size")
    oh, _ = size_pair(original_size, "original_size")
    return float(2.0 ** float(torch.tensor(float(fh) / float(oh)).log2().round()))


def multiscale_roi_align(features: Sequence[torch.Tensor], boxes: Sequence[ArrayLike], image_sizes: Sequence[Sequence[int]],
                         output_size: int = 7, sampling_ratio: int = 2, canonical_scale: float = 224.0,
                         canonical_level: int = 4) -> torch.Tensor:
    """``ops/poolers.py:MultiScaleRoIAlign`` over FPN maps ``features`` (each Tensor[N, C, H_l, W_l], finest first):
    Tensor[K, C, output_size, output_size] for the per-image boxes (Tensor[N_i, 4] in image pixels), in order.

    Scales come from :func:`infer_scale` against the largest image size, levels from :func:`level_mapper`, and each
    level runs ROIAlign with ``aligned=False`` (Detectron's ROIAlign) and the given ``sampling_ratio``.
    """
    if len(features) == 0:
        raise ValueError("features must be a non-empty list of Tensor[N, C, H, W] maps")
    if len(image_sizes) == 0:
        raise ValueError("image_sizes must give one (height, width) per image")
    sizes = [size_pair(s, "image_sizes") for s in image_sizes]
    original = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    scales = [infer_scale(tuple(f.shape[-2:]), original) for f in features]
    bl = [as_boxes(b, "boxes").to(features[0].dtype) for b in boxes]
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype), b], dim=1) for i, b in enumerate(bl)])
    if len(features) == 1:
        return roi_align(features[0], rois, output_size, scales[0], sampling_ratio, aligned=False)
    k_min, k_max = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))
    levels = level_mapper(rois[:, 1:], k_min, k_max, canonical_scale, canonical_level)
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], output_size, output_size))
    for level, (f, scale) in enumerate(zip(features, scales)):
        idx = torch.where(levels == level)[0]
        if len(idx):
            out[idx] = roi_align(f, rois[idx], output_size, scale, sampling_ratio, aligned=False).to(out.dtype)
    return out


# --------------------------------------------------------------------------------------------
# Boxes: BoxCoder, nms, batched_nms
# --------------------------------------------------------------------------------------------
def decode_boxes(rel_codes: ArrayLike, boxes: ArrayLike, weights: Sequence[float] = BOX_HEAD_WEIGHTS,
                 bbox_xform_clip: float = BBOX_XFORM_CLIP) -> torch.Tensor:
    """``_utils.py:BoxCoder.decode_single``: Tensor[N, 4k] boxes from Tensor[N, 4k] deltas on Tensor[N, 4] boxes.
    It is Detectron2's ``Box2BoxTransform.apply_deltas`` (width x2 - x1, no - 1 on x2), which is
    :func:`explainer.boxes.decode` with ``legacy_plus_one=False``."""
    return decode(rel_codes, boxes, weights, bbox_xform_clip, legacy_plus_one=False)


def _scores(scores: ArrayLike, n: int) -> torch.Tensor:
    s = as_tensor(scores, "scores")
    if s.dim() != 1 or s.numel() != n:
        raise ValueError(f"scores must have shape ({n},), one per box, got {tuple(s.shape)}")
    return s


def nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.nms`` on the CPU (``csrc/ops/cpu/nms_kernel.cpp``), written out: indices (int64) of the kept
    boxes by descending score (a stable sort: among equal scores the lower index first). Areas, intersections and
    IoUs are computed in the boxes' dtype, IoU = inter / ((area_i + area_j) - inter); a box is suppressed when that
    IoU, widened to double, is **> iou_threshold** (a Python float, a double)."""
    b = as_boxes(boxes, "boxes")
    s = _scores(scores, b.shape[0])
    t = probability(iou_threshold, "iou_threshold")
    if b.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    if not b.is_floating_point():
        b = b.float()
    order = torch.sort(s, stable=True, descending=True).indices
    bo = b[order]
    x1, y1, x2, y2 = bo.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = torch.arange(i + 1, len(order))
        rest = rest[~suppressed[rest]]
        if not len(rest):
            break
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        ovr = inter / ((areas[i] + areas[rest]) - inter)
        suppressed[rest[ovr.double() > t]] = True
    return order[torch.tensor(keep, dtype=torch.int64)]


def batched_nms(boxes: ArrayLike, scores: ArrayLike, idxs: ArrayLike, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.batched_nms``: NMS within each category ``idxs``, indices by descending score.

    Up to 4,000 coordinates (1,000 boxes) on the CPU, torchvision moves each category's boxes apart by
    ``idxs * (boxes.max() + 1)`` and runs one :func:`nms` (``_batched_nms_coordinate_trick``); in float32 the shifted
    coordinates are rounded, so an IoU at the threshold can land on either side of it, and the result can differ
    from NMS run per category. Above that it runs :func:`nms` per category (``_batched_nms_vanilla``)."""
    b = as_boxes(boxes, "boxes")
    s = _scores(scores, b.shape[0])
    i = as_tensor(idxs, "idxs")
    if i.dim() != 1 or i.numel() != b.shape[0]:
        raise ValueError(f"idxs must have shape ({b.shape[0]},), one category per box, got {tuple(i.shape)}")
    if b.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    if b.numel() > 4000:
        keep = torch.zeros(b.shape[0], dtype=torch.bool)
        for c in torch.unique(i):
            cur = torch.where(i == c)[0]
            keep[cur[nms(b[cur], s[cur], iou_threshold)]] = True
        kept = torch.where(keep)[0]
        return kept[s[kept].sort(descending=True)[1]]
    offsets = i.to(b) * (b.max() + torch.tensor(1).to(b))
    return nms(b + offsets[:, None], s, iou_threshold)


# --------------------------------------------------------------------------------------------
# Masks: roi_heads.paste_masks_in_image
# --------------------------------------------------------------------------------------------
def expand_masks(masks: ArrayLike, padding: int = 1) -> Tuple[torch.Tensor, float]:
    """``roi_heads.py:expand_masks``: Tensor[N, 1, M + 2 padding, M + 2 padding] zero-padded, and the scale
    (M + 2 padding) / M by which the boxes grow."""
    m = as_tensor(masks, "masks")
    if m.dim() != 4 or m.shape[1] != 1 or m.shape[-1] < 1:
        raise ValueError(f"masks must have shape (N, 1, M, M), got {tuple(m.shape)}")
    p = positive_int(padding, "padding", minimum=0)
    M = m.shape[-1]
    return F.pad(m, (p,) * 4), float(M + 2 * p) / M


def paste_masks_in_image(masks: ArrayLike, boxes: ArrayLike, image_size: Sequence[int], padding: int = 1) -> torch.Tensor:
    """``roi_heads.py:paste_masks_in_image``: Tensor[N, 1, H, W] mask probabilities (not thresholded).

    Pad each Tensor[1, M, M] mask by ``padding``, expand its box about the centre by (M + 2) / M, truncate the box
    to integers, resize the padded mask bilinearly (``F.interpolate``, ``align_corners=False``) to
    (y2 - y1 + 1) x (x2 - x1 + 1) and copy it to pixels x1..x2, y1..y2 clipped to the image. That is Detectron's
    ``segm_results`` (with a float resize instead of OpenCV's and no threshold), applied to continuous boxes, whose
    x2 is one pixel further right than Detectron's inclusive x2.
    """
    H, W = size_pair(image_size, "image_size")
    padded, scale = expand_masks(masks, padding)
    b = as_boxes(boxes, "boxes")
    if b.shape[0] != padded.shape[0]:
        raise ValueError(f"boxes must have one row per mask: got {b.shape[0]} boxes for {padded.shape[0]} masks")
    if not b.is_floating_point():
        b = b.float()
    half_w, half_h = (b[:, 2] - b[:, 0]) * 0.5 * scale, (b[:, 3] - b[:, 1]) * 0.5 * scale
    cx, cy = (b[:, 2] + b[:, 0]) * 0.5, (b[:, 3] + b[:, 1]) * 0.5
    ib = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1).to(torch.int64)
    out = padded.new_zeros((padded.shape[0], 1, H, W))
    for k in range(padded.shape[0]):
        x1, y1, x2, y2 = (int(v) for v in ib[k])
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        resized = F.interpolate(padded[k:k + 1], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        xa, xb, ya, yb = max(x1, 0), min(x2 + 1, W), max(y1, 0), min(y2 + 1, H)
        if xb > xa and yb > ya:
            out[k, 0, ya:yb, xa:xb] = resized[ya - y1:yb - y1, xa - x1:xb - x1]
    return out


# --------------------------------------------------------------------------------------------
# Input: GeneralizedRCNNTransform
# --------------------------------------------------------------------------------------------
def _image(image: ArrayLike, name: str = "image") -> torch.Tensor:
    x = as_image(image, name)
    if x.dim() != 3 or not x.is_floating_point() or 0 in x.shape:
        raise ValueError(f"{name} must be a float Tensor[C, H, W] (RGB in [0, 1]), got {x.dtype} of shape {tuple(x.shape)}")
    return x


def normalize(image: ArrayLike, image_mean: Sequence[float] = IMAGE_MEAN, image_std: Sequence[float] = IMAGE_STD) -> torch.Tensor:
    """``GeneralizedRCNNTransform.normalize``: (image - mean) / std per channel, in the image's dtype."""
    x = _image(image)
    mean = torch.as_tensor([finite_number(v, "image_mean") for v in image_mean], dtype=x.dtype)
    std = torch.as_tensor(_numbers(image_std, "image_std"), dtype=x.dtype)
    if len(mean) != x.shape[0] or len(std) != x.shape[0]:
        raise ValueError(f"image_mean and image_std must have one value per channel ({x.shape[0]})")
    return (x - mean[:, None, None]) / std[:, None, None]


def resized_size(height: int, width: int, min_size: int = 800, max_size: int = 1333) -> Tuple[int, int]:
    """The size ``_resize_image_and_masks`` gives: scale = min(min_size / shorter, max_size / longer), each side
    floor(side * scale) (``F.interpolate`` with ``recompute_scale_factor=True``). Detectron2 rounds half up and
    Detectron rounds half to even instead, so a side can come out one pixel shorter here."""
    h, w = positive_int(height, "height"), positive_int(width, "width")
    lo, hi = positive_int(min_size, "min_size"), positive_int(max_size, "max_size")
    scale = min(lo / min(h, w), hi / max(h, w))
    return int(math.floor(h * scale)), int(math.floor(w * scale))


def resize_image(image: ArrayLike, min_size: int = 800, max_size: int = 1333) -> torch.Tensor:
    """``GeneralizedRCNNTransform.resize`` at test time: bilinear ``F.interpolate`` (half-pixel centres, no antialias)
    to :func:`resized_size`."""
    x = _image(image)
    h, w = resized_size(x.shape[-2], x.shape[-1], min_size, max_size)
    return F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]


def batch_images(images: Sequence[torch.Tensor], size_divisible: int = 32) -> torch.Tensor:
    """``GeneralizedRCNNTransform.batch_images``: Tensor[N, C, H, W], each image top-left, zero padding (after
    normalisation, so the padding is the mean colour), H and W rounded up to multiples of ``size_divisible``."""
    if len(images) == 0:
        raise ValueError("images must be a non-empty list of Tensor[C, H, W]")
    xs = [_image(im, "images") for im in images]
    d = positive_int(size_divisible, "size_divisible")
    c = max(x.shape[0] for x in xs)
    h = int(math.ceil(max(x.shape[1] for x in xs) / d) * d)
    w = int(math.ceil(max(x.shape[2] for x in xs) / d) * d)
    out = xs[0].new_zeros((len(xs), c, h, w))
    for k, x in enumerate(xs):
        out[k, :x.shape[0], :x.shape[1], :x.shape[2]] = x
    return out


def _ratios(original_size: Sequence[int], new_size: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    oh, ow = size_pair(original_size, "original_size")
    nh, nw = size_pair(new_size, "new_size")
    f32 = torch.float32
    return torch.tensor(nh, dtype=f32) / torch.tensor(oh, dtype=f32), torch.tensor(nw, dtype=f32) / torch.tensor(ow, dtype=f32)


def resize_boxes(boxes: ArrayLike, original_size: Sequence[int], new_size: Sequence[int]) -> torch.Tensor:
    """``transform.py:resize_boxes``: Tensor[N, 4] times the per-axis ratios new / original (float32 ratios); what
    ``postprocess`` does to map detections back to the original image."""
    b = as_boxes(boxes, "boxes")
    rh, rw = _ratios(original_size, new_size)
    return torch.stack((b[:, 0] * rw, b[:, 1] * rh, b[:, 2] * rw, b[:, 3] * rh), dim=1)


def resize_keypoints(keypoints: ArrayLike, original_size: Sequence[int], new_size: Sequence[int]) -> torch.Tensor:
    """``transform.py:resize_keypoints``: Tensor[N, K, 3] (x, y, v) with x and y times the per-axis ratios."""
    k = as_tensor(keypoints, "keypoints")
    if k.dim() != 3 or k.shape[-1] < 2:
        raise ValueError(f"keypoints must have shape (N, K, 3), got {tuple(k.shape)}")
    rh, rw = _ratios(original_size, new_size)
    out = k.clone()
    out[..., 0] *= rw
    out[..., 1] *= rh
    return out


def transform(images: Sequence[torch.Tensor], min_size: int = 800, max_size: int = 1333,
              image_mean: Sequence[float] = IMAGE_MEAN, image_std: Sequence[float] = IMAGE_STD,
              size_divisible: int = 32) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """``GeneralizedRCNNTransform.forward`` at test time: normalise, resize, batch. Returns the batch
    Tensor[N, 3, H, W] and each image's size before padding (the ``image_sizes`` of its ``ImageList``)."""
    resized = [resize_image(normalize(im, image_mean, image_std), min_size, max_size) for im in images]
    return batch_images(resized, size_divisible), [(int(r.shape[-2]), int(r.shape[-1])) for r in resized]


def input_pipeline(image: ArrayLike, resize: str, short_edge: int = 800, max_size: int = 1333) -> torch.Tensor:
    """The network input Tensor[3, h, w] (float32, before padding) that each codebase makes from one BGR uint8 image
    Tensor[3, H, W], named by the ``resize`` knob of :class:`explainer.conventions.Convention`:

    * ``"prep_im_for_blob"`` (Detectron): BGR, minus PIXEL_MEANS in 0..255, OpenCV's resize by ``fx`` (half to even);
    * ``"ResizeShortestEdge"`` (Detectron2): PIL's bilinear on uint8 (antialiased), then minus PIXEL_MEAN (BGR);
    * ``"GeneralizedRCNNTransform"`` (torchvision): RGB / 255, minus ImageNet's mean over its std, ``F.interpolate``.
    """
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
    if resize == "prep_im_for_blob":
        return detectron_preprocess(image, short_edge, max_size)[0]
    if resize == "ResizeShortestEdge":
        return detectron2_preprocess(image, short_edge, max_size)
    x = as_image(image, "image")
    if x.dtype != torch.uint8 or x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"image must be a 3 x H x W uint8 tensor (BGR), got {x.dtype} of shape {tuple(x.shape)}")
    rgb = x.flip(0).to(torch.float32) / 255.0
    return resize_image(normalize(rgb), short_edge, max_size)


# --------------------------------------------------------------------------------------------
# Other heads: keypoints and RetinaNet
# --------------------------------------------------------------------------------------------
def heatmaps_to_keypoints(maps: ArrayLike, rois: ArrayLike) -> Tuple[torch.Tensor, torch.Tensor]:
    """``roi_heads.py:heatmaps_to_keypoints``: from Tensor[R, K, S, S] heat maps and their Tensor[R, 4] boxes,
    (Tensor[R, K, 3] (x, y, 1), Tensor[R, K] scores). Each map is resized bicubically to ceil(box side) (at least 1),
    and the arg-max cell gives x = (ix + 0.5) * width / ceil(width) + x1: Detectron's rule, no half-pixel shift."""
    m = as_tensor(maps, "maps")
    if m.dim() != 4:
        raise ValueError(f"maps must have shape (R, K, S, S), got {tuple(m.shape)}")
    r = as_boxes(rois, "rois").to(m.dtype)
    if r.shape[0] != m.shape[0]:
        raise ValueError(f"rois must have one row per map: got {r.shape[0]} boxes for {m.shape[0]} maps")
    widths = (r[:, 2] - r[:, 0]).clamp(min=1)
    heights = (r[:, 3] - r[:, 1]).clamp(min=1)
    k = m.shape[1]
    xy = torch.zeros((r.shape[0], 3, k), dtype=m.dtype)
    scores = torch.zeros((r.shape[0], k), dtype=m.dtype)
    for i in range(r.shape[0]):
        rw, rh = int(widths[i].ceil().item()), int(heights[i].ceil().item())
        roi_map = F.interpolate(m[i][:, None], size=(rh, rw), mode="bicubic", align_corners=False)[:, 0]
        pos = roi_map.reshape(k, -1).argmax(dim=1)
        x_int = pos % rw
        y_int = torch.div(pos - x_int, rw, rounding_mode="floor")
        xy[i, 0] = (x_int.float() + 0.5) * (widths[i] / rw) + r[i, 0]
        xy[i, 1] = (y_int.float() + 0.5) * (heights[i] / rh) + r[i, 1]
        xy[i, 2] = 1
        scores[i] = roi_map[torch.arange(k), y_int, x_int]
    return xy.permute(0, 2, 1), scores


def retinanet_postprocess(cls_logits: Sequence[torch.Tensor], bbox_regression: Sequence[torch.Tensor],
                          anchors: Sequence[torch.Tensor], image_size: Sequence[int], score_thresh: float = 0.05,
                          nms_thresh: float = 0.5, detections_per_img: int = 300,
                          topk_candidates: int = 1000) -> Dict[str, torch.Tensor]:
    """``retinanet.py:RetinaNet.postprocess_detections`` for one image. Per level (Tensor[A_l, K] logits,
    Tensor[A_l, 4] deltas, Tensor[A_l, 4] anchors): sigmoid scores (one per class, no background column) above
    ``score_thresh``, the best ``topk_candidates``, boxes decoded with weights (1, 1, 1, 1) and clipped to the image;
    then :func:`batched_nms` over the levels together and the first ``detections_per_img``. Returns boxes,
    scores and labels (label = column index)."""
    H, W = size_pair(image_size, "image_size")
    st, nt = probability(score_thresh, "score_thresh"), probability(nms_thresh, "nms_thresh")
    n_det, n_top = positive_int(detections_per_img, "detections_per_img"), positive_int(topk_candidates, "topk_candidates")
    if not (len(cls_logits) == len(bbox_regression) == len(anchors)) or not len(anchors):
        raise ValueError("cls_logits, bbox_regression and anchors must have one tensor per level")
    all_boxes, all_scores, all_labels = [], [], []
    for logits, deltas, anc in zip(cls_logits, bbox_regression, anchors):
        k = logits.shape[-1]
        scores = torch.sigmoid(logits).flatten()
        keep = scores > st
        scores = scores[keep]
        idx = torch.where(keep)[0]
        scores, top = scores.topk(min(n_top, idx.numel()))
        idx = idx[top]
        a_idx = torch.div(idx, k, rounding_mode="floor")
        boxes = decode_boxes(deltas[a_idx], anc[a_idx], RPN_WEIGHTS).reshape(-1, 4)
        xs, ys = boxes[:, 0::2].clamp(min=0, max=W), boxes[:, 1::2].clamp(min=0, max=H)
        all_boxes.append(torch.stack((xs, ys), dim=2).reshape(-1, 4))
        all_scores.append(scores)
        all_labels.append(idx % k)
    b, s, lab = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    keep = batched_nms(b, s, lab, nt)[:n_det]
    return {"boxes": b[keep], "scores": s[keep], "labels": lab[keep]}


# --------------------------------------------------------------------------------------------
# The three codebases side by side (chapter 13)
# --------------------------------------------------------------------------------------------
def paste_three_ways(mask: ArrayLike, box: Sequence[float], image_size: Sequence[int],
                     threshold: float = 0.5) -> Dict[str, torch.Tensor]:
    """One Tensor[M, M] mask pasted for one continuous box (x1, y1, x2, y2) into an image of ``image_size``
    (height, width), binarised, each codebase's way: Tensor[H, W] booleans under ``"detectron"`` (``segm_results``
    on the box as Detectron's inclusive indices, x2 - 1), ``"detectron2"`` (``paste_masks_in_image``, >= threshold)
    and ``"torchvision"`` (its ``paste_masks_in_image`` with padding 1 on the continuous box, > threshold)."""
    m = as_tensor(mask, "mask")
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"mask must have shape (M, M), got {tuple(m.shape)}")
    b = as_boxes([list(box)], "box").to(torch.float32)
    t = probability(threshold, "threshold")
    size = size_pair(image_size, "image_size")
    return {"detectron": paste_masks(m[None], to_inclusive(b), size, t, mask_paste="segm_results")[0],
            "detectron2": paste_masks(m[None], b, size, t, mask_paste="paste_masks_in_image")[0],
            "torchvision": paste_masks_in_image(m[None, None].float(), b, size)[0, 0] > t}


def _as_rgb255(x: torch.Tensor, resize: str) -> torch.Tensor:
    """A network input of :func:`input_pipeline` undone to RGB 0..255 (mean added back, std multiplied)."""
    if resize == "GeneralizedRCNNTransform":
        std = torch.tensor(IMAGE_STD, dtype=torch.float32).view(3, 1, 1)
        mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32).view(3, 1, 1)
        return (x * std + mean) * 255.0
    m = DETECTRON_PIXEL_MEANS if resize == "prep_im_for_blob" else DETECTRON2_PIXEL_MEAN
    return (x + torch.tensor(m, dtype=torch.float32).view(3, 1, 1)).flip(0)


def compare_inputs(image: ArrayLike, short_edge: int = 800, max_size: int = 1333) -> List[Dict[str, object]]:
    """The three input pipelines (:func:`input_pipeline`) on one BGR uint8 Tensor[3, H, W] image, one row each:
    ``resize`` (the function), ``size`` (h, w), ``channels`` ("BGR" or "RGB"), ``range`` (min, max of the network
    input), and, for the image each one resizes undone to RGB 0..255, ``max_diff_vs_detectron2`` and
    ``mean_diff_vs_detectron2`` (grey levels; None when the sizes differ, since no pixel is then the same one)."""
    outs = {r: input_pipeline(image, r, short_edge, max_size) for r in RESIZES}
    ref = _as_rgb255(outs["ResizeShortestEdge"], "ResizeShortestEdge")
    rows: List[Dict[str, object]] = []
    for r, x in outs.items():
        rgb = _as_rgb255(x, r)
        diff = (rgb - ref).abs() if rgb.shape == ref.shape else None
        rows.append({"resize": r, "size": (int(x.shape[1]), int(x.shape[2])),
                     "channels": "RGB" if r == "GeneralizedRCNNTransform" else "BGR",
                     "range": (float(x.min()), float(x.max())),
                     "max_diff_vs_detectron2": None if diff is None else float(diff.max()),
                     "mean_diff_vs_detectron2": None if diff is None else float(diff.mean())})
    return rows
