"""Apply one cause of the diagnosis's vocabulary to detections: the mistakes the course injects, and readers' experiments.

:data:`INJECTIONS` holds one entry per cause that can be injected: its parameters with their defaults, and
the function that applies it to one image's detections. :func:`inject` reads the detections, checks the
cause and the parameters, and applies the entry to every image. The causes that describe a comparison
rather than a mistake (``identical``, ``no_detections``, ``unrelated``, ``inference_difference``) are not
injectable. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from explainer._validate import finite_number
from explainer.diagnosis.detections import Detections, ImageDetections, load_detections
from explainer.diagnosis.matching import xyxy_read_as_xywh
from explainer.diagnosis.result_masks import grow_rle
from explainer.labels import COCO_CATEGORY_IDS

__all__ = ["INJECTIONS", "Injection", "inject", "MISTAKES", "inject_mistakes"]


@dataclass
class _Context:
    """What an entry's function may use besides the image: the parameters (defaults filled in), a random
    generator seeded with ``seed`` and shared by all images in order, and every label of the input."""

    params: Dict[str, Any]
    generator: torch.Generator
    labels: List[int]
    permutation: Dict[int, int] = field(default_factory=dict)


#: image id, that image's detections (boxes, scores, labels already copied) and the context -> new detections
Apply = Callable[[Any, ImageDetections, _Context], ImageDetections]


@dataclass(frozen=True)
class Injection:
    """How to inject one cause: ``defaults`` names every parameter it takes (None: optional, no default),
    ``apply`` changes one image's detections, ``prepare`` (optional) runs once before the first image.
    Parameters are finite numbers unless named in ``raw``."""

    defaults: Dict[str, Any]
    apply: Apply
    raw: FrozenSet[str] = frozenset()
    prepare: Optional[Callable[[_Context], None]] = None


# -- the entries -----------------------------------------------------------------------------------
def _plus_one(_k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    d.boxes[:, 2:] += c.params["amount"]
    return d


def _half_pixel_shift(_k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    d.boxes += c.params["shift"]
    return d


def _scale(_k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    d.boxes *= c.params["factor"]
    return d


def _anisotropic_scale(_k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    d.boxes[:, 0::2] *= c.params["sx"]
    d.boxes[:, 1::2] *= c.params["sy"]
    return d


def _translation(_k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    d.boxes[:, 0::2] += c.params["dx"]
    d.boxes[:, 1::2] += c.params["dy"]
    return d


def _xywh_as_xyxy(_k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    d.boxes = xyxy_read_as_xywh(d.boxes)
    return d


def _label_offset(k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    """``space="labels"``: label + offset. ``space="coco_index"``: labels are COCO category ids, each replaced by
    the id ``offset`` places further in COCO's list (``COCO_IDS[i + offset]`` for ``COCO_IDS[i]``: the class order
    off by ``offset`` in a model that writes COCO ids); detections whose class falls off either end of the list
    are dropped, as the background row would take them."""
    off, space = int(c.params["offset"]), c.params["space"]
    if space == "labels":
        d.labels = d.labels + off
        return d
    if space != "coco_index":
        raise ValueError(f"label_offset: space must be 'labels' or 'coco_index'; got {space!r}")
    ids = torch.tensor(COCO_CATEGORY_IDS, dtype=torch.long)
    index = torch.full((int(ids.max()) + 2,), -1, dtype=torch.long)
    index[ids] = torch.arange(len(ids))
    lab = d.labels
    inside = (lab >= 0) & (lab < len(index))
    i = torch.where(inside, index[lab.clamp(0, len(index) - 1)], torch.full_like(lab, -1))
    if bool((i < 0).any()):
        bad = int(lab[i < 0][0])
        raise ValueError(f"label_offset with space='coco_index' needs COCO category ids; image {k} has {bad}")
    j = i + off
    keep = (j >= 0) & (j < len(ids))
    d = d.take(keep)
    d.labels = ids[j[keep]]
    return d


def _label_permutation_prepare(c: _Context) -> None:
    """One permutation for all images: the given mapping, or a random one of every label of the input."""
    m = c.params["mapping"]
    if m is not None:
        if not isinstance(m, Mapping) or not all(isinstance(a, int) and isinstance(b, int) for a, b in m.items()):
            raise ValueError(f"mapping must be a dict of integer labels {{label: new label}}, got {m!r}")
        c.permutation = {a: int(m.get(a, a)) for a in c.labels}
    elif c.labels:
        order = torch.randperm(len(c.labels), generator=c.generator)
        c.permutation = {a: c.labels[int(order[i])] for i, a in enumerate(c.labels)}


def _label_permutation(_k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    d.labels = torch.tensor([c.permutation[int(v)] for v in d.labels.tolist()], dtype=torch.long)
    return d


def _coco_category_ids(k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    labels = d.labels
    if labels.numel() and (labels.min() < 0 or labels.max() > 79):
        raise ValueError(f"coco_category_ids needs contiguous labels 0..79; image {k} has "
                         f"{int(labels.min())}..{int(labels.max())}")
    d.labels = torch.tensor(COCO_CATEGORY_IDS, dtype=torch.long)[labels]
    return d


def _keypoints(cause: str, k: Any, d: ImageDetections) -> torch.Tensor:
    if d.keypoints is None:
        raise ValueError(f"{cause} needs keypoints; image {k} has none")
    return d.keypoints.clone()


def _keypoint_half_pixel(k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    d.keypoints = _keypoints("keypoint_half_pixel", k, d)
    d.keypoints[..., :2] += c.params["shift"]
    return d


def _flip_off_by_one(k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    """x moved by ``shift`` (-1: mapped back with W - 1 - x instead of W - x; +1: the other way round).
    ``field="keypoints"``: the keypoints only (the boxes flipped right). ``field="boxes"``: the whole detection,
    x1, x2 and its keypoints if any (x1' = W - 1 - (W - x1) = x1 - 1, the same for x2). ``images``: the ids of
    the flipped images (default: every image); the others are left unchanged."""
    fld, images = c.params["field"], c.params["images"]
    if fld not in ("keypoints", "boxes"):
        raise ValueError(f"flip_off_by_one: field must be 'keypoints' or 'boxes'; got {fld!r}")
    if images is not None and k not in images:
        return d
    if fld == "keypoints" or d.keypoints is not None:
        d.keypoints = _keypoints("flip_off_by_one", k, d)
        d.keypoints[..., 0] += c.params["shift"]
    if fld == "boxes":
        d.boxes[:, 0::2] += c.params["shift"]
    return d


def _flip_images_prepare(c: _Context) -> None:
    images = c.params["images"]
    if images is not None:
        if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
            raise ValueError(f"flip_off_by_one: images must be a list of image ids, got {images!r}")
        c.params["images"] = set(images)


def _grow(masks: torch.Tensor, g: int) -> torch.Tensor:
    """Tensor[N, H, W] masks dilated (g > 0) or eroded (g < 0) by a (2|g| + 1)-pixel square."""
    mf = masks.float()[:, None]
    return (F.max_pool2d(mf, 2 * g + 1, 1, g) if g > 0 else -F.max_pool2d(-mf, -2 * g + 1, 1, -g))[:, 0] > 0


def _mask_paste(k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    """Masks grown (``grow`` > 0) or shrunk (< 0) by ``|grow|`` px: a square dilation or erosion. Segmentations
    read from a file are decoded (RLE only), changed, and encoded again with pycocotools."""
    g = int(c.params["grow"])
    if d.masks is not None:
        d.masks = _grow(d.masks, g)
        return d
    if d.segmentations is None or not all(isinstance(m, dict) for m in d.segmentations if m is not None):
        raise ValueError(f"mask_paste needs masks; image {k} has none (neither masks nor RLE segmentations)")
    d.segmentations = [None if m is None else grow_rle(m, g) for m in d.segmentations]
    return d


def _non_finite(_k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    """NaN written into ``field`` ("boxes", "scores" or "keypoints") of a ``fraction`` of the detections."""
    hit = torch.rand(len(d), generator=c.generator) < c.params["fraction"]
    fld = c.params["field"]
    if fld == "boxes":
        d.boxes[hit, 2] = float("nan")
    elif fld == "scores":
        d.scores[hit] = float("nan")
    elif fld == "keypoints" and d.keypoints is not None:
        d.keypoints = d.keypoints.clone()
        d.keypoints[hit, 0, 0] = float("nan")
    else:
        raise ValueError(f"non_finite: field must be 'boxes', 'scores' or 'keypoints' (present); got {fld!r}")
    return d


def _missing_field(k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    """``field`` ("masks" or "keypoints") dropped, or with ``empty=True`` masks kept but emptied."""
    fld = c.params["field"]
    if fld == "keypoints":
        d.keypoints, d.has_keypoints = None, None
    elif fld == "masks" and c.params["empty"]:
        if d.masks is None:
            raise ValueError(f"missing_field with empty=True needs masks; image {k} has none")
        d.masks = torch.zeros_like(d.masks)
    elif fld == "masks":
        d.masks, d.segmentations = None, None
    else:
        raise ValueError(f"missing_field: field must be 'masks' or 'keypoints'; got {fld!r}")
    return d


def _threshold_or_topk(_k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    s = d.scores
    keep = torch.ones(len(s), dtype=torch.bool)
    if c.params["score_threshold"] is not None:
        keep &= s > c.params["score_threshold"]
    if c.params["topk"] is not None:
        top = torch.argsort(s, descending=True, stable=True)[:int(c.params["topk"])]
        t = torch.zeros(len(s), dtype=torch.bool)
        t[top] = True
        keep &= t
    return d.take(keep)


def _numerical_noise(_k: Any, d: ImageDetections, c: _Context) -> ImageDetections:
    b = d.boxes + torch.randn(d.boxes.shape, generator=c.generator, dtype=torch.float64) * c.params["sigma"]
    b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2])
    d.boxes = b
    d.scores = d.scores + torch.randn(d.scores.shape, generator=c.generator, dtype=torch.float64) * c.params["score_sigma"]
    return d


#: Every injectable cause, in the order of :data:`explainer.diagnosis.causes.CAUSES`.
INJECTIONS: Dict[str, Injection] = {
    "plus_one": Injection({"amount": 1.0}, _plus_one),
    "half_pixel_shift": Injection({"shift": 0.5}, _half_pixel_shift),
    "scale": Injection({"factor": 0.8}, _scale),
    "anisotropic_scale": Injection({"sx": 0.75, "sy": 4 / 3}, _anisotropic_scale),
    "translation": Injection({"dx": 16.0, "dy": 8.0}, _translation),
    "xywh_as_xyxy": Injection({}, _xywh_as_xyxy),
    "label_offset": Injection({"offset": 1, "space": "labels"}, _label_offset, frozenset({"space"})),
    "label_permutation": Injection({"mapping": None, "seed": 0}, _label_permutation, frozenset({"mapping", "seed"}),
                                   _label_permutation_prepare),
    "coco_category_ids": Injection({}, _coco_category_ids),
    "keypoint_half_pixel": Injection({"shift": 0.5}, _keypoint_half_pixel),
    "flip_off_by_one": Injection({"shift": -1.0, "field": "keypoints", "images": None}, _flip_off_by_one,
                                 frozenset({"field", "images"}), _flip_images_prepare),
    "mask_paste": Injection({"grow": 1}, _mask_paste),
    "non_finite": Injection({"field": "boxes", "fraction": 0.1, "seed": 0}, _non_finite, frozenset({"field", "seed"})),
    "missing_field": Injection({"field": "masks", "empty": False}, _missing_field, frozenset({"field", "empty"})),
    "threshold_or_topk": Injection({"score_threshold": None, "topk": None}, _threshold_or_topk, frozenset({"topk"})),
    "numerical_noise": Injection({"sigma": 0.05, "score_sigma": 1e-3, "seed": 0}, _numerical_noise, frozenset({"seed"})),
}


def inject(detections: Any, cause: str, **params: Any) -> Detections:
    """Apply one cause to detections (any form :func:`explainer.diagnosis.detections.load_detections` reads) and return
    new :class:`~explainer.diagnosis.detections.Detections`; the input is left unchanged.

    Parameters by cause (defaults in :data:`INJECTIONS`): ``plus_one`` (amount=1.0), ``half_pixel_shift``
    (shift=0.5), ``scale`` (factor=0.8), ``anisotropic_scale`` (sx=0.75, sy=4/3), ``translation`` (dx=16, dy=8),
    ``xywh_as_xyxy``, ``label_offset`` (offset=1; space="labels", or "coco_index": COCO ids moved ``offset``
    places in COCO's list), ``label_permutation`` (mapping={label: label} or a random one
    from seed=0), ``coco_category_ids`` (labels 0..79), ``keypoint_half_pixel`` (shift=0.5), ``flip_off_by_one``
    (shift=-1.0; field="keypoints" | "boxes": the whole detection; images=None: every image, or the flipped
    ids), ``mask_paste`` (grow=1 px), ``non_finite`` (field="boxes" | "scores" | "keypoints", fraction=0.1, seed=0), ``missing_field`` (field="masks" | "keypoints", empty=False: with True, masks kept
    but emptied), ``threshold_or_topk`` (score_threshold or topk),
    ``numerical_noise`` (sigma=0.05 px, score_sigma=1e-3, seed=0).
    """
    dets = load_detections(detections, name="detections")
    if cause not in INJECTIONS:
        raise ValueError(f"cause must be one of {', '.join(INJECTIONS)}; got {cause!r}")
    entry = INJECTIONS[cause]
    extra = set(params) - set(entry.defaults)
    if extra:
        raise ValueError(f"{cause} takes {sorted(entry.defaults) or 'no parameters'}; unknown: {sorted(extra)}")
    given = {k: v if k in entry.raw else finite_number(v, k) for k, v in params.items()}
    ctx = _Context({**entry.defaults, **given}, torch.Generator().manual_seed(int(params.get("seed", 0))),
                   sorted({int(l) for d in dets.images.values() for l in d.labels.tolist()}))
    if entry.prepare is not None:
        entry.prepare(ctx)
    out = {}
    for k, d in dets.images.items():
        copy = ImageDetections(d.boxes.clone(), d.scores.clone(), d.labels.clone(), d.masks, d.keypoints,
                               d.segmentations, d.has_keypoints)
        out[k] = entry.apply(k, copy, ctx)
    return Detections(out, dets.source)


#: The post-processing mistakes chapter 10's dashboards let a reader inject, each one cause of :data:`INJECTIONS` with
#: fixed parameters: name -> (label, cause, inject parameters, tooltip).
MISTAKES: Dict[str, Tuple[str, str, Dict[str, Any], str]] = {
    "scale": ("boxes not rescaled (x 0.8)", "scale", {"factor": 0.8},
              "the boxes stay in the resized input's frame: every coordinate times 0.8"),
    "anisotropic_scale": ("height and width swapped in the rescale", "anisotropic_scale", {"sx": 0.75, "sy": 4 / 3},
                          "x scaled by H/W and y by W/H, as when (h, w) is passed where (w, h) is expected"),
    "translation": ("padding not removed (+16, +8 px)", "translation", {"dx": 16.0, "dy": 8.0},
                    "boxes keep the offset of the padded input"),
    "half_pixel_shift": ("pixel indices as coordinates (+0.5)", "half_pixel_shift", {},
                         "all four coordinates shifted by half a pixel"),
    "plus_one": ("x2, y2 exported as inclusive (+1)", "plus_one", {}, "x2 and y2 off by exactly one pixel"),
    "xywh_as_xyxy": ("xyxy written into COCO's bbox", "xywh_as_xyxy", {},
                     "x2, y2 written where COCO expects width and height"),
    "label_offset": ("labels shifted by one", "label_offset", {"offset": 1},
                     "background-first labels read as background-last"),
    "label_permutation": ("class order permuted", "label_permutation", {"mapping": {0: 2, 1: 0, 2: 1}},
                          "square read as triangle, disc as square, triangle as disc: another class list order"),
    "coco_category_ids": ("contiguous labels as COCO ids", "coco_category_ids", {},
                          "0..79 labels written where COCO's 1..90 category ids are expected"),
    "threshold_or_topk": ("score threshold 0.9", "threshold_or_topk", {"score_threshold": 0.9},
                          "detections scored 0.9 or less dropped (a different SCORE_THRESH_TEST)"),
    "numerical_noise": ("numerical jitter (0.05 px)", "numerical_noise", {"sigma": 0.05, "score_sigma": 1e-3},
                        "boxes jittered by 0.05 px and scores by 0.001, as fp16 or another backend would"),
}


def inject_mistakes(detections: Detections, mistakes: Sequence[str]) -> Tuple[Detections, List[str]]:
    """``detections`` with the named :data:`MISTAKES` injected in turn; returns them and the causes injected."""
    unknown = [m for m in mistakes if m not in MISTAKES]
    if unknown:
        raise ValueError(f"mistakes must be names of MISTAKES ({', '.join(MISTAKES)}), got {unknown}")
    causes = []
    for name in mistakes:
        _, cause, params, _ = MISTAKES[name]
        detections = inject(detections, cause, **params)
        causes.append(cause)
    return detections, causes
