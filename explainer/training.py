"""What changed in training: post-NMS top-k per batch or per image, smooth L1 against L1, flips.

These differences do not break a converted model; they change what training produces, so they
matter when a Detectron result is reproduced in Detectron2 (or the reverse).

Coordinate conventions: boxes are N x 4 (x1, y1, x2, y2) in image pixels, continuous for Detectron2
and inclusive pixel indices for Detectron (see :mod:`explainer.pixels`); polygons are continuous
coordinates in both codebases (COCO stores them so); keypoints are COCO pixel indices (x, y, v).

Sources (paths in the original repositories):

* Detectron ``ops/collect_and_distribute_fpn_rpn_proposals.py:collect`` keeps
  ``TRAIN.RPN_POST_NMS_TOP_N`` proposals over the *whole minibatch* (Detectron issue #459);
  Detectron2 ``modeling/proposal_generator/proposal_utils.py:find_top_rpn_proposals`` keeps
  ``MODEL.RPN.POST_NMS_TOPK_TRAIN`` *per image*; ``Base-RCNN-FPN.yaml`` halves it to 1000 because
  Detectron's FPN default batch was 2 images. maskrcnn-benchmark has the switch
  ``MODEL.RPN.FPN_POST_NMS_PER_BATCH`` (True by default).
* Smooth L1: ``0.5 x^2 / beta`` if ``|x| < beta`` else ``|x| - 0.5 beta``; fvcore's
  ``smooth_l1_loss`` switches to plain L1 when ``beta < 1e-5``. Detectron: beta 1/9 for the RPN,
  1.0 (the Caffe2 ``SmoothL1Loss`` default) for the box head. Detectron2: ``MODEL.RPN.SMOOTH_L1_BETA``
  and ``MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA`` both 0.0 (L1).
* Flips: Detectron ``roidb.extend_with_flipped_entries``, ``segms.flip_segms`` and
  ``keypoints.flip_keypoints`` use W - x - 1; Detectron2 (fvcore ``HFlipTransform``) uses W - x on
  continuous coordinates, and its keypoints are continuous after the +0.5 of ``load_coco_json``.
  Boxes flip with :func:`explainer.pixels.hflip_boxes`; polygons and keypoints here. Each flip takes the
  knobs that act as booleans (``minus_one``, and ``keypoint_half_pixel`` for keypoints); from a convention,
  ``**conv.operator_flags("minus_one")``.

Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple, Union

import torch

from explainer import pixels
from explainer._validate import (
    ArrayLike,
    WrongType,
    as_boxes,
    as_tensor,
    check_values,
    finite_number,
    flag,
    positive_int,
    probability,
    size_pair,
)
from explainer._validate import seed as _seed

__all__ = [
    "select_post_nms_topk",
    "smooth_l1",
    "smooth_l1_grad",
    "FVCORE_L1_BETA",
    "hflip_polygons",
    "hflip_keypoints",
    "keypoint_flip_indices",
    "DETECTRON1_COMPARISON_SETTINGS",
    "synthetic_proposal_batch",
    "topk_effect",
]

#: fvcore's ``smooth_l1_loss`` treats beta below this as 0 and returns plain L1.
FVCORE_L1_BETA = 1e-5


# --------------------------------------------------------------------------------------------
# POST_NMS_TOPK_TRAIN: per batch (Detectron training) or per image (Detectron2)
# --------------------------------------------------------------------------------------------
def select_post_nms_topk(proposals_per_image: Sequence, scores_per_image: Sequence, k: int,
                         per_image: bool) -> List[torch.Tensor]:
    """Keep the top ``k`` proposals by score, per image or over the whole batch.

    ``proposals_per_image``: a list (one entry per image) of Tensor[N_i, 4] boxes; ``scores_per_image``: a
    list of N_i scores. Returns, per image, the kept proposals in descending score order.

    * ``per_image=True`` (Detectron2 ``find_top_rpn_proposals``: ``keep[:post_nms_topk]`` for each
      image): every image keeps min(k, N_i).
    * ``per_image=False`` (Detectron ``collect``: concatenate all images' RoIs, then
      ``argsort(-scores)[:post_nms_topN]``): the batch keeps k in total, and an image with many
      high-scoring proposals takes the share of the others.
    Ties in score keep the lower index first (a stable sort), for both rules.
    """
    k = positive_int(k, "k")
    per_image = flag(per_image, "per_image")
    if not isinstance(proposals_per_image, (list, tuple)) or not isinstance(scores_per_image, (list, tuple)):
        raise ValueError("proposals_per_image and scores_per_image must be lists with one entry per image")
    if len(proposals_per_image) == 0:
        raise ValueError("proposals_per_image must hold at least one image (the batch is empty)")
    if len(proposals_per_image) != len(scores_per_image):
        raise ValueError(f"proposals_per_image has {len(proposals_per_image)} images but scores_per_image has "
                         f"{len(scores_per_image)}")
    boxes, scores = [], []
    for i, (b, s) in enumerate(zip(proposals_per_image, scores_per_image)):
        b = as_boxes(b, f"proposals_per_image[{i}]", allow_inverted=True)
        s = as_tensor(s, f"scores_per_image[{i}]").reshape(-1)
        if s.numel() != b.shape[0]:
            raise ValueError(f"scores_per_image[{i}] has {s.numel()} scores for {b.shape[0]} proposals")
        if s.numel() and not torch.isfinite(s).all():
            raise ValueError(f"scores_per_image[{i}] must be finite")
        boxes.append(b)
        scores.append(s)
    if per_image:
        out = []
        for b, s in zip(boxes, scores):
            order = torch.sort(s, descending=True, stable=True).indices[:k]
            out.append(b[order])
        return out
    all_scores = torch.cat(scores)
    image_of = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(scores)])
    order = torch.sort(all_scores, descending=True, stable=True).indices[:k]
    offsets = torch.tensor([0] + [len(s) for s in scores]).cumsum(0)
    out = []
    for i, b in enumerate(boxes):
        mine = order[image_of[order] == i]  # already in descending score order
        out.append(b[mine - offsets[i]])
    return out


# --------------------------------------------------------------------------------------------
# Smooth L1 against L1
# --------------------------------------------------------------------------------------------
def _beta(beta) -> float:
    b = finite_number(beta, "beta")
    if b < 0:
        raise ValueError(f"beta must be >= 0 (0 means L1), got {beta!r}")
    return b


def smooth_l1(x: ArrayLike, beta: float) -> torch.Tensor:
    """Element-wise smooth L1 of residuals ``x``: 0.5 x²/beta where |x| < beta, else |x| - 0.5 beta.

    ``beta`` below 1e-5 gives plain L1 |x|, as fvcore's ``smooth_l1_loss`` (Detectron2's default
    beta 0.0). No reduction: sum or average as the caller's loss does.
    """
    b = _beta(beta)
    t = as_tensor(x, "x")
    n = t.abs()
    if b < FVCORE_L1_BETA:
        return n
    return torch.where(n < b, 0.5 * n * n / b, n - 0.5 * b)


def smooth_l1_grad(x: ArrayLike, beta: float) -> torch.Tensor:
    """d smooth_l1 / dx: x/beta inside the quadratic zone, sign(x) outside (sign(x) everywhere for L1)."""
    b = _beta(beta)
    t = as_tensor(x, "x")
    if b < FVCORE_L1_BETA:
        return torch.sign(t)
    return torch.where(t.abs() < b, t / b, torch.sign(t))


# --------------------------------------------------------------------------------------------
# Flip augmentation
# --------------------------------------------------------------------------------------------
def hflip_polygons(polygons: Union[ArrayLike, Sequence[ArrayLike]], width: float, *, minus_one: bool = False) -> List[torch.Tensor]:
    """Flip a list of polygons (each flat [x0, y0, x1, y1, ...], continuous coordinates as in COCO).

    ``minus_one=True`` is Detectron's ``flip_segms`` (W - x - 1): its flipped polygons land one pixel left of
    where the flipped image puts the object; ``minus_one=False`` is Detectron2's W - x, exact. From a
    convention: ``**conv.operator_flags("minus_one")``.
    """
    flag(minus_one, "minus_one")
    if isinstance(polygons, torch.Tensor) and polygons.dim() == 1:
        polygons = [polygons]
    if not isinstance(polygons, (list, tuple)):
        raise ValueError("polygons must be a list of flat [x0, y0, x1, y1, ...] coordinate lists")
    return [pixels.hflip_polygon(p, width, minus_one=minus_one) for p in polygons]


def keypoint_flip_indices(names: Sequence[str], flip_map: Union[Mapping[str, str], Sequence[Tuple[str, str]]]) -> List[int]:
    """The permutation that swaps left and right keypoints (Detectron2's ``keypoint_hflip_indices``).

    ``flip_map`` pairs names, e.g. ``{"left_eye": "right_eye"}`` or ``[("left_eye", "right_eye")]``;
    each pair is used both ways, unlisted names map to themselves.
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError("names must be unique keypoint names")
    pairs = list(flip_map.items()) if isinstance(flip_map, Mapping) else list(flip_map)
    full: Dict[str, str] = {}
    for pair in pairs:
        try:
            a, b = pair
        except (TypeError, ValueError):
            raise ValueError(f"flip_map must pair keypoint names, got {pair!r}") from None
        for x in (a, b):
            if x not in names:
                raise ValueError(f"flip_map names {x!r}, which is not one of the keypoint names {names}")
        for x, y in ((a, b), (b, a)):
            if full.get(x, y) != y:
                raise ValueError(f"flip_map is not a permutation: {x!r} is paired with {full[x]!r} and {y!r}")
            full[x] = y
    return [names.index(full.get(n, n)) for n in names]


def _check_permutation(flip_map, k: int) -> torch.Tensor:
    if isinstance(flip_map, (str, bytes)) or flip_map is None:
        raise WrongType(f"flip_map must be a permutation of 0..{k - 1} (a list of indices), got {flip_map!r}")
    try:
        perm = as_tensor(list(flip_map), "flip_map", integer=True)
    except TypeError:
        raise WrongType(f"flip_map must be a permutation of 0..{k - 1} (a list of indices), got {flip_map!r}") from None
    if perm.dim() != 1 or perm.numel() != k or sorted(perm.tolist()) != list(range(k)):
        raise ValueError(f"flip_map must be a permutation of 0..{k - 1}, got {list(flip_map)!r}")
    if not torch.equal(perm[perm], torch.arange(k)):
        raise ValueError(f"flip_map must swap pairs (applying it twice must give the identity), got {perm.tolist()}")
    return perm


def hflip_keypoints(keypoints: ArrayLike, width: float, flip_map: Sequence[int], *, minus_one: bool = False,
                    keypoint_half_pixel: bool = True) -> torch.Tensor:
    """Flip COCO keypoints (pixel indices) and swap left/right, as each codebase's pipeline does.

    ``keypoints``: Tensor[K, 3] or Tensor[N, K, 3] (x, y, visibility) in COCO's pixel-index space; ``flip_map``: a
    permutation of 0..K-1 that swaps left and right (see :func:`keypoint_flip_indices`). Two knobs act:
    ``keypoint_half_pixel`` (+0.5 before the flip and -0.5 after it) and ``minus_one`` (the flip W - x - 1);
    from a convention: ``**conv.operator_flags("minus_one"), keypoint_half_pixel=conv.keypoint_half_pixel``.

    * Detectron (``minus_one=True, keypoint_half_pixel=False``; ``flip_keypoints``): x' = W - x - 1 on the pixel
      index, then the swap.
    * Detectron2 (the defaults): +0.5 on load (``load_coco_json``), W - x (``HFlipTransform.apply_coords``), the
      swap (``transform_keypoint_annotations``), -0.5 on export (``instances_to_coco_json``).
    Both give W - 1 - x: each is right, which the tests check.
    """
    minus_one, keypoint_half_pixel = flag(minus_one, "minus_one"), flag(keypoint_half_pixel, "keypoint_half_pixel")
    t = as_tensor(keypoints, "keypoints")
    single = t.dim() == 2
    if single:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (K, 3) or (N, K, 3) as (x, y, visibility), got {tuple(as_tensor(keypoints, 'keypoints').shape)}")
    perm = _check_permutation(flip_map, t.shape[1])
    flat = t.reshape(-1, 3)
    if keypoint_half_pixel:
        cont = pixels.coco_keypoints_to_continuous(flat)
        out = pixels.continuous_keypoints_to_coco(pixels.hflip_points(cont, width, minus_one=minus_one))
    else:
        out = pixels.hflip_points(flat, width, minus_one=minus_one)
    out = out.reshape(t.shape)[:, perm]
    return out[0] if single else out


# --------------------------------------------------------------------------------------------
# The settings that reproduce Detectron in Detectron2 (its configs/Detectron1-Comparisons)
# --------------------------------------------------------------------------------------------
#: (what, Detectron, Detectron2 default, to reproduce Detectron in Detectron2)
DETECTRON1_COMPARISON_SETTINGS: List[Tuple[str, str, str, str]] = [
    ("post-NMS proposals kept in training", "TRAIN.RPN_POST_NMS_TOP_N 2000, per batch (FPN)",
     "MODEL.RPN.POST_NMS_TOPK_TRAIN 2000, per image (1000 in Base-RCNN-FPN.yaml)",
     "POST_NMS_TOPK_TRAIN = 2000 / images per batch (the keypoint comparison config uses 1500)"),
    ("RPN box loss", "smooth L1, beta = 1/9", "MODEL.RPN.SMOOTH_L1_BETA 0.0 (L1)", "MODEL.RPN.SMOOTH_L1_BETA 0.1111"),
    ("box head loss", "smooth L1, beta = 1 (Caffe2 SmoothL1Loss default)", "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA 0.0 (L1)",
     "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA 1.0"),
    ("ROIAlign", "no half-pixel shift, ROI_XFORM_SAMPLING_RATIO 2", "POOLER_TYPE ROIAlignV2, POOLER_SAMPLING_RATIO 0",
     "POOLER_TYPE ROIAlign and POOLER_SAMPLING_RATIO 2 in each ROI head"),
    ("scale augmentation", "one training scale (800)", "MIN_SIZE_TRAIN (640, ..., 800), choice", "INPUT.MIN_SIZE_TRAIN (800,)"),
    ("polygon flip", "W - x - 1 (one pixel off)", "W - x (exact)", "cannot be set: Detectron2 only has the exact flip"),
]


# --------------------------------------------------------------------------------------------
# A synthetic batch for the chapter: crowded and sparse images
# --------------------------------------------------------------------------------------------
def synthetic_proposal_batch(n_images: int, n_proposals: int = 2000, image_size: Tuple[int, int] = (600, 800), seed: int = 0) -> Dict[str, list]:
    """Proposals after NMS for a batch whose images alternate between crowded and sparse scenes.

    Image 0, 2, ... hold 12 objects and most of their proposals score high; images 1, 3, ... hold one
    object and most proposals are low-scoring background. Returns lists (one entry per image) of
    ``gt`` (Tensor[M_i, 4]), ``proposals`` (n_proposals x 4), ``scores`` (n_proposals) and ``best_iou``
    (the IoU of each proposal with its best-matching object, Detectron2's convention), plus ``kind``.
    Deterministic for a given seed.
    """
    from explainer.boxes import pairwise_iou

    n_images = positive_int(n_images, "n_images")
    n_proposals = positive_int(n_proposals, "n_proposals")
    check_values(n_images * n_proposals * 4, "n_proposals", f"{n_images:,} images x {n_proposals:,} proposals")
    image_size, seed = size_pair(image_size, "image_size"), _seed(seed)
    if min(image_size) < 21:
        raise ValueError(f"image_size must be at least 21 x 21 pixels (background boxes are drawn inside), got {image_size}")
    h, w = image_size
    out: Dict[str, list] = {"gt": [], "proposals": [], "scores": [], "best_iou": [], "kind": []}
    for i in range(n_images):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        crowded = i % 2 == 0
        n_obj = 12 if crowded else 1
        wh = torch.rand(n_obj, 2, generator=g) * torch.tensor([120.0, 120.0]) + 40
        xy = torch.rand(n_obj, 2, generator=g) * (torch.tensor([w, h], dtype=torch.float32) - wh)
        gt = torch.cat([xy, xy + wh], 1)
        near_frac = 0.6 if crowded else 0.08
        n_near = int(n_proposals * near_frac)
        which = torch.randint(0, n_obj, (n_near,), generator=g)
        base = gt[which]
        size = (base[:, 2:] - base[:, :2]).repeat(1, 2)
        near = base + torch.randn(n_near, 4, generator=g) * 0.15 * size
        near[:, 2:] = torch.maximum(near[:, 2:], near[:, :2] + 2)
        n_bg = n_proposals - n_near
        bxy = torch.rand(n_bg, 2, generator=g) * torch.tensor([w - 20.0, h - 20.0])
        bwh = torch.rand(n_bg, 2, generator=g) * 150 + 10
        bg = torch.cat([bxy, bxy + bwh], 1)
        props = torch.cat([near, bg])
        best = pairwise_iou(props, gt).max(dim=1).values
        # an RPN that scores proposals by how well they overlap an object, plus noise
        scores = (0.15 + 0.8 * best + 0.1 * torch.randn(n_proposals, generator=g)).clamp(0.0, 1.0)
        out["gt"].append(gt)
        out["proposals"].append(props)
        out["scores"].append(scores)
        out["best_iou"].append(best)
        out["kind"].append("crowded (12 objects)" if crowded else "sparse (1 object)")
    return out


def topk_effect(batch: Dict[str, list], k: int, positive_iou: float = 0.5) -> Dict[str, list]:
    """Per image: proposals kept and positives among them (IoU >= ``positive_iou``) under both rules."""
    k = positive_int(k, "k")
    iou_t = probability(positive_iou, "positive_iou")
    res: Dict[str, list] = {}
    # select on indices so that the IoU of each kept proposal is known
    idx = [torch.arange(len(s), dtype=torch.float32).repeat(4, 1).t() for s in batch["scores"]]
    for name, per_image in (("per_batch", False), ("per_image", True)):
        kept = select_post_nms_topk(idx, batch["scores"], k, per_image=per_image)
        res[f"{name}_kept"] = [len(x) for x in kept]
        res[f"{name}_positives"] = [int((b[x[:, 0].long()] >= iou_t).sum()) for b, x in zip(batch["best_iou"], kept)]
    return res
