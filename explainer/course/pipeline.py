"""A miniature two-stage detector whose every inference convention can be switched.

Real detectors are too big to fit live and too opaque to inspect, yet the mechanism of a conversion mismatch
only shows when a model fitted under one convention runs under another. This module builds the smallest
detector in which every knob of :mod:`explainer.conventions` that acts at inference has its real effect:

==================  =======================================================  =====================
stage               what happens                                             knobs that act here
==================  =======================================================  =====================
``anchors``         cell anchors, rounded or exact, ratio- or size-major,    anchor_rounding,
                    on the stride-8 grid (:mod:`explainer.anchors`)          anchor_order,
                                                                             anchor_offset,
                                                                             (legacy_plus_one:
                                                                             notation only)
``rpn``             objectness and deltas: one linear predictor per anchor   (weights follow the
                    type, applied to each location's features                anchor rows)
``proposals``       decode (:func:`explainer.boxes.decode`), clip, drop      legacy_plus_one
                    empty boxes, keep the 1000 best
``proposals_nms``   NMS at 0.7 (:func:`explainer.boxes.nms`), keep 200       legacy_plus_one
``pooled``          ROIAlign 7x7 of each proposal and of its context         roi_aligned,
                    (torchvision's compiled op, which chapter 4's            sampling_ratio,
                    :func:`explainer.roi_align.roi_align` reproduces); an    legacy_plus_one
                    inclusive box is pooled as given, one pixel narrower
``head``            class probabilities (softmax over K + 1 columns) and     background_first
                    class-specific boxes (deltas weighted 10, 10, 5, 5)
``detections``      score > 0.3, NMS at 0.5 per class, at most 50            legacy_plus_one
``masks``           28x28 masks pooled from the class's colour map, pasted   mask_paste
                    (:func:`explainer.masks.paste_masks`)
==================  =======================================================  =====================

Features are fixed, not learned: per-pixel colour likelihoods of the three classes of
:func:`synthetic_scenes` and their maximum ("foreground"), averaged over 8x8 pixels for the RPN and 2x2
pixels for the box head. The heads are fitted by ridge regression and by L-BFGS (multinomial logistic
regression) under one convention, in a second or two: :func:`fit_detector`.

The fitted weights are stored in that convention's layout (anchor rows, class order, box rows).
:meth:`MiniDetector.run` reads them under whatever convention it is given, **without converting them**,
as a model loaded without conversion would; :meth:`MiniDetector.converted` returns a copy whose weights were
converted as a real converter does. Boxes are in the convention's own coordinates: Detectron's are
inclusive pixel indices (x2 = last pixel), Detectron2's continuous (x2 = right edge).

The training-only knobs (``post_nms_topk_*``, ``*_smooth_l1_beta``) and the keypoint and flip knobs do not
act in this detector's inference; :data:`INFERENCE_KNOBS` lists those that do. Two runs are compared stage by
stage, and the knobs bisected, in :mod:`explainer.course.compare`; :mod:`explainer.course.cache` holds the course's
fitted detector.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from explainer import anchors as A
from explainer import boxes as B
from explainer import labels as L
from explainer._threads import single_thread
from explainer._torchvision import torchvision_op
from explainer._validate import WrongType, as_tensor, check_values, positive_int, size_pair, whole_number
from explainer._validate import seed as _seed
from explainer.conventions import DETECTRON, Convention, check_convention
from explainer.masks import paste_masks
from explainer.pixels import to_inclusive

__all__ = [
    "Scene", "synthetic_scenes", "MiniDetector", "Run", "fit_detector", "STAGES", "INFERENCE_KNOBS",
    "colour_maps", "rpn_cell_anchors", "level_anchors",
]

#: The pipeline's stages, in order; :attr:`Run.stages` holds each one's tensors.
STAGES = ("anchors", "rpn", "proposals", "proposals_nms", "pooled", "head", "detections", "masks")
#: The knobs that change this detector's inference.
INFERENCE_KNOBS = ("legacy_plus_one", "anchor_offset", "anchor_rounding", "anchor_order", "roi_aligned",
                   "sampling_ratio", "background_first", "mask_paste")

CLASS_NAMES = ("square", "disc", "triangle")
#: RGB colour of each class; the background is mid grey.
CLASS_COLOURS = torch.tensor([[0.85, 0.25, 0.2], [0.25, 0.7, 0.3], [0.25, 0.4, 0.9]])
STRIDE = 8            # RPN feature stride
HEAD_STRIDE = 2       # stride of the maps the box head pools from
SIZES = (16.0, 32.0, 64.0)
RATIOS = (0.5, 1.0, 2.0)
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
POOL = 7
CONTEXT = 1.6       # the head also pools the box enlarged by this factor
MASK = 28
PRE_NMS_TOPK, POST_NMS_TOPK = 1000, 200
SCORE_THRESH, DETECTIONS_PER_IMAGE = 0.3, 50


# --------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------
@dataclass
class Scene:
    """One synthetic image with its ground truth.

    ``image``: Tensor[3, H, W] float32 in [0, 1]; ``boxes``: Tensor[N, 4] tight boxes in continuous coordinates (x2 = right
    edge of the last pixel); ``labels``: N contiguous labels 0..K-1; ``masks``: Tensor[N, H, W] bool.
    """

    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    class_names: Tuple[str, ...] = CLASS_NAMES

    @property
    def image_size(self) -> Tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])


def _shape_mask(kind: int, cx: float, cy: float, r: float, H: int, W: int) -> torch.Tensor:
    """Pixels whose centres fall inside a square (0), disc (1) or upward triangle (2) of half-size r."""
    ys = torch.arange(H, dtype=torch.float32).view(-1, 1) + 0.5
    xs = torch.arange(W, dtype=torch.float32).view(1, -1) + 0.5
    dx, dy = xs - cx, ys - cy
    if kind == 0:
        return (dx.abs() <= r) & (dy.abs() <= r)
    if kind == 1:
        return dx * dx + dy * dy <= r * r
    # triangle: apex at (cx, cy - r), base from (cx - r, cy + r) to (cx + r, cy + r)
    return (dy <= r) & (dy >= -r) & (dx.abs() <= (dy + r) / 2)


def _touches(m: torch.Tensor, occupied: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, gap: int = 4) -> bool:
    """Whether the shape ``m`` (pixels ``ys``, ``xs``) grown by ``gap`` pixels (a max-pool of 2 gap + 1) meets
    ``occupied``. Computed on the shape's box widened by ``gap``: the grown mask is empty elsewhere."""
    H, W = m.shape
    y0, y1 = max(int(ys.min()) - gap, 0), min(int(ys.max()) + gap + 1, H)
    x0, x1 = max(int(xs.min()) - gap, 0), min(int(xs.max()) + gap + 1, W)
    grown = F.max_pool2d(m[None, None, y0:y1, x0:x1].float(), 2 * gap + 1, stride=1, padding=gap)[0, 0] > 0
    return bool((grown & occupied[y0:y1, x0:x1]).any())


def synthetic_scenes(n: int = 8, image_size: Sequence[int] = (192, 256), seed: int = 0,
                     objects: Tuple[int, int] = (3, 6)) -> List[Scene]:
    """``n`` images of squares, discs and triangles (one colour per class) on a noisy grey background.

    Object half-sizes range from 7 to 45 pixels; objects do not overlap. Deterministic for a seed.
    """
    n = positive_int(n, "n")
    H, W = size_pair(image_size, "image_size")
    if H < 64 or W < 64:
        raise ValueError(f"image_size must be at least (64, 64), got {(H, W)}")
    check_values(n * 4 * H * W, "n", f"{n:,} images of {H:,} x {W:,} pixels")
    objects = _objects(objects)
    g = torch.Generator().manual_seed(_seed(seed))
    scenes = []
    for _ in range(n):
        img = 0.5 + 0.06 * torch.randn(3, H, W, generator=g)
        img += 0.08 * torch.linspace(-1, 1, W).view(1, 1, W)  # a gentle illumination gradient
        occupied = torch.zeros(H, W, dtype=torch.bool)
        boxes: List[List[float]] = []
        labels: List[int] = []
        masks: List[torch.Tensor] = []
        want = int(torch.randint(objects[0], objects[1] + 1, (1,), generator=g))
        for _attempt in range(60):
            if len(labels) == want:
                break
            kind = int(torch.randint(0, 3, (1,), generator=g))
            r = float(7 + 38 * torch.rand(1, generator=g) ** 1.5)
            cx = float(r + 2 + (W - 2 * r - 4) * torch.rand(1, generator=g))
            cy = float(r + 2 + (H - 2 * r - 4) * torch.rand(1, generator=g))
            m = _shape_mask(kind, cx, cy, r, H, W)
            ys, xs = torch.nonzero(m, as_tuple=True)
            if not len(ys) or _touches(m, occupied, ys, xs):
                continue
            occupied |= m
            boxes.append([float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1])
            labels.append(kind)
            masks.append(m)
            colour = CLASS_COLOURS[kind] + 0.04 * torch.randn(3, generator=g)
            img[:, m] = colour.view(3, 1) + 0.05 * torch.randn(3, int(m.sum()), generator=g)
        scenes.append(Scene(image=img.clamp(0, 1), boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                            labels=torch.tensor(labels, dtype=torch.int64),
                            masks=torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=torch.bool)))
    return scenes


# --------------------------------------------------------------------------------------------------
# Fixed features
# --------------------------------------------------------------------------------------------------
def colour_maps(image: torch.Tensor) -> torch.Tensor:
    """Tensor[K + 1, H, W]: each class's colour likelihood in [0, 1], then their maximum (foreground)."""
    image = as_tensor(image, "image")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a 3 x H x W RGB tensor, got shape {tuple(image.shape)}")
    d2 = ((image.unsqueeze(0) - CLASS_COLOURS.view(-1, 3, 1, 1)) ** 2).sum(1)
    lik = torch.exp(-d2 / (2 * 0.18 ** 2))
    return torch.cat([lik, lik.max(0, keepdim=True).values])


def _rpn_features(maps: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
    """The RPN's input, Tensor[L, D]: per location of the stride-8 grid (ceil(H / 8) x ceil(W / 8), row by row),
    the foreground averaged over the location's cell, its mean over windows of 1..9 cells, left/right and
    up/down contrasts, their pairwise products and a bias. Fitting and inference both read it from here."""
    H, W = image_size
    fh, fw = math.ceil(H / STRIDE), math.ceil(W / STRIDE)
    # average pooling to the grid: cells of STRIDE x STRIDE pixels when the image is a multiple of STRIDE
    x = F.adaptive_avg_pool2d(maps[-1:][None], (fh, fw))
    feats = [x]
    for k in (3, 5, 9):
        feats.append(F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=True))
        half = k // 2
        feats.append(_shift_contrast(x, half, dim=3))
        feats.append(_shift_contrast(x, half, dim=2))
    f = torch.cat(feats, 1)[0]                       # D x h x w
    i, j = torch.triu_indices(len(f), len(f))
    quad = f[i] * f[j]                               # pairwise products: objectness is not linear in coverage
    phi = torch.cat([f, quad, torch.ones_like(f[:1])])  # with a bias feature
    return phi.permute(1, 2, 0).reshape(fh * fw, -1)


def _shift_contrast(x: torch.Tensor, half: int, dim: int) -> torch.Tensor:
    """Mean foreground in the ``half`` cells after each location minus in the ``half`` cells before it (along dim)."""
    n = x.shape[dim]
    cs = torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), x.cumsum(dim)], dim)
    idx = torch.arange(n)
    hi = (idx + half + 1).clamp(max=n)
    lo = (idx - half).clamp(min=0)
    after = cs.index_select(dim, hi) - cs.index_select(dim, idx + 1)
    before = cs.index_select(dim, idx) - cs.index_select(dim, lo)
    return (after - before) / half


# --------------------------------------------------------------------------------------------------
# Conventions applied
# --------------------------------------------------------------------------------------------------
def rpn_cell_anchors(convention: Convention) -> torch.Tensor:
    """Tensor[A, 4] cell anchors centred on 0 in continuous coordinates, in the convention's row order."""
    convention = check_convention(convention)
    return A.cell_anchors(STRIDE, SIZES, RATIOS, convention)


def _anchor_rows(src: str, dst: str) -> torch.Tensor:
    """Rows of this detector's cell anchors (or of its per-anchor RPN weights) from order ``src`` to ``dst``."""
    return A.anchor_order_permutation(len(SIZES), len(RATIOS), src, dst)


def level_anchors(convention: Convention, image_size: Tuple[int, int]) -> torch.Tensor:
    """All anchors of the RPN level, location-major, in the convention's box coordinates."""
    convention = check_convention(convention)
    H, W = size_pair(image_size, "image_size")
    grid = A.grid_anchors(rpn_cell_anchors(convention), (math.ceil(H / STRIDE), math.ceil(W / STRIDE)), STRIDE,
                          offset=float(convention.anchor_offset))
    return _to_convention(grid, convention)


def _to_convention(boxes_continuous: torch.Tensor, convention: Convention) -> torch.Tensor:
    """Detectron's box math works on inclusive pixel indices: x2 = right edge - 1."""
    return to_inclusive(boxes_continuous) if convention.legacy_plus_one else boxes_continuous


def _objects(objects: Any) -> Tuple[int, int]:
    """(fewest, most) objects per scene: whole numbers with 1 <= fewest <= most <= 60 (the placement attempts)."""
    if isinstance(objects, (str, bytes)) or not isinstance(objects, (tuple, list)) or len(objects) != 2:
        raise WrongType(f"objects must be (fewest, most) objects per scene, got {objects!r}")
    lo, hi = whole_number(objects[0], "objects fewest", 1, 60), whole_number(objects[1], "objects most", 1, 60)
    if hi < lo:
        raise ValueError(f"objects must be (fewest, most) with fewest <= most, got {objects!r}")
    return lo, hi


def _check_image(image: Any) -> torch.Tensor:
    if isinstance(image, Scene):
        image = image.image
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a Scene or a 3 x H x W float tensor in [0, 1], got {shape}")
    if image.shape[1] < 32 or image.shape[2] < 32:
        raise ValueError(f"image must be at least 32 x 32 pixels, got {tuple(image.shape[1:])}")
    return image.to(torch.float32)


# --------------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One inference: ``stages`` maps each name of :data:`STAGES` to its tensors (see the module table)."""

    convention: Convention
    stages: Dict[str, Dict[str, torch.Tensor]]
    image_size: Tuple[int, int]

    @property
    def detections(self) -> Dict[str, torch.Tensor]:
        """``boxes`` (Tensor[N, 4], the convention's coordinates), ``scores``, ``labels`` (0..K-1), ``masks`` (Tensor[N, H, W])."""
        d = self.stages["detections"]
        return {"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"], "masks": self.stages["masks"]["masks"]}


@dataclass
class MiniDetector:
    """Fitted weights, stored in the layout of ``fitted_under`` (anchor rows, class order, box rows)."""

    fitted_under: Convention
    rpn_w: torch.Tensor        # A x D x 5: per anchor type, objectness and 4 deltas from D location features
    cls_w: torch.Tensor        # P x (K + 1): class logits from P pooled features, background at the layout's index
    box_w: torch.Tensor        # P x 4(K + 1) (background first: Detectron's rows) or P x 4K (background last)
    num_classes: int = len(CLASS_NAMES)
    anchor_order: str = "ratio_major"
    background_first: bool = True
    fit_report: Dict[str, Any] = field(default_factory=dict)

    def converted(self, convention: Convention) -> "MiniDetector":
        """A copy with the weights converted to ``convention``'s layout, as a real converter does.

        Class rows go through :func:`explainer.labels.convert_box_predictor` (background moved, background box
        rows dropped or re-inserted); the RPN's per-anchor rows are reordered between ratio- and size-major.
        """
        convention = check_convention(convention)
        out = copy.copy(self)
        if convention.anchor_order != self.anchor_order:
            out.rpn_w = self.rpn_w[_anchor_rows(self.anchor_order, convention.anchor_order)]
            out.anchor_order = convention.anchor_order
        if convention.background_first != self.background_first:
            bias = {"cls": torch.zeros(self.cls_w.shape[1]), "box": torch.zeros(self.box_w.shape[1])}
            names = (("cls_score_w", "cls_score_b", "bbox_pred_w", "bbox_pred_b") if self.background_first else
                     ("cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias"))
            p = L.convert_box_predictor(dict(zip(names, (self.cls_w.T, bias["cls"], self.box_w.T, bias["box"]))),
                                        background_first=convention.background_first)
            cls_key, box_key = (("cls_score_w", "bbox_pred_w") if convention.background_first else
                                ("cls_score.weight", "bbox_pred.weight"))
            out.cls_w, out.box_w = p[cls_key].T.contiguous(), p[box_key].T.contiguous()
            out.background_first = convention.background_first
        return out

    # -- inference ------------------------------------------------------------------------------------
    def run(self, image: Union[Scene, torch.Tensor], convention: Convention) -> Run:
        """Detect in one image (a Scene or Tensor[3, H, W] tensor), reading the stored weights under ``convention``."""
        conv = check_convention(convention)
        img = _check_image(image)
        H, W = int(img.shape[1]), int(img.shape[2])
        lp1 = conv.legacy_plus_one
        maps = colour_maps(img)
        st: Dict[str, Dict[str, torch.Tensor]] = {}

        anchors = level_anchors(conv, (H, W))
        st["anchors"] = {"anchors": anchors}

        obj, deltas = self._rpn(maps, (H, W))
        st["rpn"] = {"objectness": obj, "deltas": deltas}

        props = B.decode(deltas, anchors, legacy_plus_one=lp1)
        props = B.clip(props, (H, W), legacy_plus_one=lp1)
        keep = B.nonempty(props, 1.0, legacy_plus_one=lp1)
        props, pscores = props[keep], obj[keep]
        top = torch.argsort(pscores, descending=True, stable=True)[:PRE_NMS_TOPK]
        props, pscores = props[top], pscores[top]
        st["proposals"] = {"boxes": props, "scores": pscores}

        keep = B.nms(props, pscores, 0.7, legacy_plus_one=lp1)[:POST_NMS_TOPK]
        props, pscores = props[keep], pscores[keep]
        st["proposals_nms"] = {"boxes": props, "scores": pscores}

        pooled = self._pool(maps, props, conv)
        st["pooled"] = {"features": pooled}

        probs, per_class = self._head(pooled, props, conv, (H, W))
        st["head"] = {"class_probs": probs, "boxes": per_class}

        boxes, scores, labels = self._postprocess(probs, per_class, lp1)
        st["detections"] = {"boxes": boxes, "scores": scores, "labels": labels}

        masks = self._masks(maps, boxes, labels, conv, (H, W))
        st["masks"] = {"masks": masks}
        return Run(convention=conv, stages=st, image_size=(H, W))

    def _rpn(self, maps: torch.Tensor, image_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        H, W = image_size
        phi = _rpn_features(maps, (H, W))                           # L x D
        out = torch.einsum("ld,adk->lak", phi, self.rpn_w)          # L x A x 5, location-major like the anchors
        return out[..., 0].reshape(-1), out[..., 1:].reshape(-1, 4)

    def _pool(self, maps: torch.Tensor, boxes: torch.Tensor, conv: Convention) -> torch.Tensor:
        feats = F.avg_pool2d(maps[None], HEAD_STRIDE)
        if boxes.numel() == 0:
            return torch.zeros(0, 2 * feats.shape[1], POOL, POOL)
        sr = conv.sampling_ratio if conv.sampling_ratio > 0 else -1
        # the box itself, and the box enlarged by CONTEXT around its centre: a real head's receptive field
        # sees beyond the box, which is how it tells a whole object from a part of one
        ctr, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2 * CONTEXT
        both = torch.cat([boxes, torch.cat([ctr - half, ctr + half], 1)])
        rois = torch.cat([torch.zeros(len(both), 1), both], 1)
        p = _roi_align(feats, rois, POOL, 1.0 / HEAD_STRIDE, sr, conv.roi_aligned)
        return torch.cat([p[: len(boxes)], p[len(boxes):]], 1)      # N x 2C x POOL x POOL

    def _head(self, pooled: torch.Tensor, props: torch.Tensor, conv: Convention,
              image_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        K = self.num_classes
        x = _head_features(pooled)
        logits = x @ self.cls_w
        probs_all = torch.softmax(logits, dim=1)
        # read the columns as the run's convention says they are laid out (no conversion)
        fg_cols = torch.arange(1, K + 1) if conv.background_first else torch.arange(0, K)
        probs = probs_all[:, fg_cols]                                 # N x K, in contiguous label order
        d = x @ self.box_w
        first = 4 if conv.background_first else 0
        if d.shape[1] < first + 4 * K:
            d = torch.cat([d, torch.zeros(len(d), first + 4 * K - d.shape[1])], 1)
        d = d[:, first:first + 4 * K]
        boxes = B.decode(d, props, BOX_WEIGHTS, legacy_plus_one=conv.legacy_plus_one) if len(props) else d
        boxes = B.clip(boxes.reshape(-1, 4), image_size, legacy_plus_one=conv.legacy_plus_one).reshape(-1, 4 * K)
        return probs, boxes

    def _postprocess(self, probs: torch.Tensor, per_class: torch.Tensor,
                     lp1: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        K = self.num_classes
        out_b, out_s, out_l = [], [], []
        for k in range(K):
            s = probs[:, k]
            keep = s > SCORE_THRESH
            bk, sk = per_class[keep, 4 * k:4 * k + 4], s[keep]
            ok = B.nonempty(bk, 0.0, legacy_plus_one=lp1)
            bk, sk = bk[ok], sk[ok]
            kept = B.nms(bk, sk, 0.5, legacy_plus_one=lp1)
            out_b.append(bk[kept])
            out_s.append(sk[kept])
            out_l.append(torch.full((len(kept),), k, dtype=torch.int64))
        boxes, scores, labels = torch.cat(out_b), torch.cat(out_s), torch.cat(out_l)
        order = torch.argsort(scores, descending=True, stable=True)[:DETECTIONS_PER_IMAGE]
        return boxes[order], scores[order], labels[order]

    def _masks(self, maps: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, conv: Convention,
               image_size: Tuple[int, int]) -> torch.Tensor:
        H, W = image_size
        if len(boxes) == 0:
            return torch.zeros(0, H, W, dtype=torch.bool)
        rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
        pooled = _roi_align(maps[None, :-1], rois, MASK, 1.0, 2, conv.roi_aligned)
        m = pooled[torch.arange(len(boxes)), labels]                   # each detection's own class map
        return paste_masks(m, boxes, (H, W), mask_paste=conv.mask_paste)


def _roi_align(features: torch.Tensor, rois: torch.Tensor, size: int, spatial_scale: float, sampling_ratio: int,
               aligned: bool) -> torch.Tensor:
    """torchvision's compiled ROIAlign, which ``torchvision.ops.roi_align`` and Detectron2's ``ROIAlign`` call
    (Tensor[K, C, size, size]). Chapter 4's :func:`explainer.roi_align.roi_align` reproduces it to 1e-5; the compiled
    op is used here because it is several times faster on this detector's hundreds of boxes, and loading it
    does not import torchvision."""
    return torchvision_op("roi_align")(features, rois, spatial_scale, size, size, sampling_ratio, aligned)


def _head_features(pooled: torch.Tensor) -> torch.Tensor:
    """Tensor[N, P]: the pooled maps flattened, their row and column profiles, and a bias."""
    n = pooled.shape[0]
    return torch.cat([pooled.reshape(n, -1), torch.ones(n, 1)], 1)


# --------------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------------
def _ridge(X: torch.Tensor, Y: torch.Tensor, lam: float = 1e-2) -> torch.Tensor:
    X, Y = X.double(), Y.double()
    A_ = X.T @ X + lam * len(X) * torch.eye(X.shape[1], dtype=X.dtype)
    return torch.linalg.solve(A_, X.T @ Y).float()


def fit_detector(scenes: Sequence[Scene], convention: Convention = DETECTRON, seed: int = 0) -> MiniDetector:
    """Fit the RPN and the box head on ``scenes`` under ``convention`` (its anchors, box math and layouts).

    The RPN: for each anchor type, ridge regression of objectness (the anchor's best IoU with a ground-truth
    box) and of the encoded deltas of its positive anchors. The box head: multinomial logistic
    regression (L-BFGS) over K + 1 classes, background at the convention's index, and ridge regression of each
    class's deltas (weights 10, 10, 5, 5), on the fitted RPN's proposals and jittered ground-truth boxes.
    """
    conv = check_convention(convention)
    if not isinstance(scenes, (list, tuple)) or not scenes or not all(isinstance(s, Scene) for s in scenes):
        raise ValueError("scenes must be a non-empty list of Scene (see synthetic_scenes)")
    K = len(CLASS_NAMES)
    with single_thread():   # the same weights, to the last digit, whatever the caller's thread count
        rpn_w, n_locations = _fit_rpn(scenes, conv)
        det = MiniDetector(fitted_under=conv, rpn_w=rpn_w, cls_w=torch.zeros(1, K + 1), box_w=torch.zeros(1, 4 * K),
                           anchor_order=conv.anchor_order, background_first=conv.background_first)
        X, y, T = _head_samples(det, scenes, conv, torch.Generator().manual_seed(int(seed)))
        det.cls_w, det.box_w = _fit_head(X, y, T, conv)
    det.fit_report = {"rpn_locations": n_locations, "head_samples": int(len(X)), "head_positives": int((y >= 0).sum())}
    return det


def _fit_rpn(scenes: Sequence[Scene], conv: Convention) -> Tuple[torch.Tensor, int]:
    """RPN weights Tensor[A, D, 5] (per anchor type: objectness, 4 deltas), and the number of locations fitted on."""
    lp1, A_n = conv.legacy_plus_one, len(SIZES) * len(RATIOS)
    feats, objs, dels, poss = [], [], [], []
    for s in scenes:
        H, W = s.image_size
        anchors = level_anchors(conv, (H, W))
        gt = _to_convention(s.boxes, conv)
        phi = _rpn_features(colour_maps(s.image), (H, W))
        if len(gt):
            iou = B.pairwise_iou(anchors, gt, legacy_plus_one=lp1)
            best, idx = iou.max(1)
            target = B.encode(anchors, gt[idx], legacy_plus_one=lp1)
        else:
            best = torch.zeros(len(anchors))
            target = torch.zeros(len(anchors), 4)
        feats.append(phi)
        objs.append(best.float().view(len(phi), A_n))
        dels.append(target.view(len(phi), A_n, 4))
        poss.append((best >= 0.5).view(len(phi), A_n))
    phi, obj, dl, pos = torch.cat(feats), torch.cat(objs), torch.cat(dels), torch.cat(poss)
    rpn_w = torch.zeros(A_n, phi.shape[1], 5)
    for a in range(A_n):
        rpn_w[a, :, 0] = _ridge(phi, obj[:, a:a + 1])[:, 0]
        if pos[:, a].sum() >= 3:
            rpn_w[a, :, 1:] = _ridge(phi[pos[:, a]], dl[pos[:, a], a], lam=1e-1)
    return rpn_w, int(len(phi))


def _jittered(gt: torch.Tensor, g: torch.Generator) -> List[torch.Tensor]:
    """Ground-truth boxes moved by 20% of their size, and parts of them (a half or a quadrant), ten times each."""
    out = []
    wh = (gt[:, 2:] - gt[:, :2]).repeat(1, 2)
    for _ in range(10):
        j = gt + wh * 0.2 * torch.randn(gt.shape, generator=g)
        out.append(torch.cat([torch.minimum(j[:, :2], j[:, 2:]), torch.maximum(j[:, :2], j[:, 2:])], 1))
        # parts of an object (a half or a quadrant of it) must score as background
        frac = 0.45 + 0.25 * torch.rand(len(gt), 2, generator=g)
        start = (1 - frac) * torch.rand(len(gt), 2, generator=g).round()
        lo = gt[:, :2] + wh[:, :2] * start
        out.append(torch.cat([lo, lo + wh[:, :2] * frac], 1))
    return out


def _head_samples(det: MiniDetector, scenes: Sequence[Scene], conv: Convention,
                  g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The box head's training set: features (Tensor[N, P]), labels (N, -1 for background) and box targets (Tensor[N, 4]) of the
    fitted RPN's proposals and of jittered ground-truth boxes."""
    lp1 = conv.legacy_plus_one
    xs, labels, targets = [], [], []
    for s in scenes:
        H, W = s.image_size
        maps = colour_maps(s.image)
        anchors = level_anchors(conv, (H, W))
        o, d = det._rpn(maps, (H, W))
        props = B.clip(B.decode(d, anchors, legacy_plus_one=lp1), (H, W), legacy_plus_one=lp1)
        top = torch.argsort(o, descending=True)[:POST_NMS_TOPK]
        gt = _to_convention(s.boxes, conv)
        rois = torch.cat([props[top], *_jittered(gt, g), gt]) if len(gt) else props[top]
        rois = B.clip(rois, (H, W), legacy_plus_one=lp1)
        rois = rois[B.nonempty(rois, 2.0, legacy_plus_one=lp1)]
        xs.append(_head_features(det._pool(maps, rois, conv)))
        if len(gt):
            iou = B.pairwise_iou(rois, gt, legacy_plus_one=lp1)
            best, idx = iou.max(1)
            labels.append(torch.where(best >= 0.5, s.labels[idx], torch.full_like(idx, -1)))
            targets.append(B.encode(rois, gt[idx], BOX_WEIGHTS, legacy_plus_one=lp1))
        else:
            labels.append(torch.full((len(rois),), -1, dtype=torch.int64))
            targets.append(torch.zeros(len(rois), 4))
    return torch.cat(xs), torch.cat(labels), torch.cat(targets)


def _fit_head(X: torch.Tensor, y: torch.Tensor, T: torch.Tensor, conv: Convention) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class weights Tensor[P, K + 1] (background at the convention's column) and box weights Tensor[P, 4 (K + 1)] or Tensor[P, 4K]."""
    K = len(CLASS_NAMES)
    col = torch.where(y < 0, 0 if conv.background_first else K, y + 1 if conv.background_first else y)
    cls_w = _fit_softmax(X, col, K + 1)
    width = 4 * (K + 1) if conv.background_first else 4 * K
    first = 4 if conv.background_first else 0
    box_w = torch.zeros(X.shape[1], width)
    for k in range(K):
        sel = y == k
        if sel.sum() >= 5:
            box_w[:, first + 4 * k:first + 4 * k + 4] = _ridge(X[sel], T[sel], lam=1e-3)
    return cls_w, box_w


def _fit_softmax(X: torch.Tensor, y: torch.Tensor, n: int, steps: int = 100, l2: float = 1e-5) -> torch.Tensor:
    """Multinomial logistic regression, weights P x n, by L-BFGS (deterministic)."""
    w = torch.zeros(X.shape[1], n, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(X @ w, y) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()
