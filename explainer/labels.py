"""Class-label order: background first (Detectron) or last (Detectron2), in logits and in weights.

Conventions
-----------
* Detectron: label 0 is background and labels 1..K are the objects; ``NUM_CLASSES`` counts the background
  (81 for COCO). ``cls_score`` has K+1 outputs, ``bbox_pred`` 4(K+1) (or 2 x 4 with
  ``MODEL.CLS_AGNOSTIC_BBOX_REG``), ``mask_fcn_logits`` K+1 channels (or 1 when
  ``MRCNN.CLS_SPECIFIC_MASK`` is False).
* Detectron2: labels 0..K-1 are the objects and label K is background; ``MODEL.ROI_HEADS.NUM_CLASSES`` is K.
  ``cls_score`` has K+1 outputs, ``bbox_pred`` 4K (4 when class-agnostic), the mask predictor K channels.

Detectron2's loader (``detectron2/checkpoint/c2_model_loading.py:convert_c2_detectron_names``) moves the
background row of ``cls_score`` last (``cat([w[1:], w[:1]])``), drops the 4 background rows of
``bbox_pred`` (``w[4:]``) and the background channel of the mask predictor (``w[1:]``). Its output names
are ``cls_score.*``, ``bbox_pred.*`` and ``mask_head.predictor.*``, which ``align_and_update_state_dicts``
then matches by suffix to ``roi_heads.box_predictor.*`` and ``roi_heads.mask_head.predictor.*``.

Tensors are torch; weights are (rows x D) for linear layers and (channels x C x 1 x 1) for the mask
predictor. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from explainer import _validate as _v
from explainer._validate import ArrayLike, as_tensor, one_of, positive_int

__all__ = [
    "retinanet_prior_bias",
    "background_first_to_last",
    "background_last_to_first",
    "detectron_to_d2_labels",
    "d2_to_detectron_labels",
    "convert_box_predictor",
    "detectron2_loads_mask_predictor",
    "guess_class_order",
    "COCO_CATEGORY_IDS",
    "COCO_CLASS_NAMES",
    "coco_id_to_contiguous",
    "contiguous_to_coco_id",
    "synthetic_region_features",
    "train_box_classifier",
    "load_into_background_last_head",
    "confusion_matrix",
]


# --------------------------------------------------------------------------------------------
# Logits, probabilities and labels
# --------------------------------------------------------------------------------------------
def _dim_tensor(x: ArrayLike, dim: int, name: str = "x") -> Tuple[torch.Tensor, int]:
    as_tensor(x, name)  # refuses non-numbers, booleans, complex numbers, NaN and inf; the dtype is kept below
    dim = _v.whole_number(dim, "dim")
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    if t.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (the class dimension)")
    if not -t.dim() <= dim < t.dim():
        raise ValueError(f"dim must be in [{-t.dim()}, {t.dim() - 1}] for {name} of shape {tuple(t.shape)}, got {dim}")
    if t.shape[dim] < 2:
        raise ValueError(f"{name} needs at least 2 entries along dim {dim} (background and one class), got {t.shape[dim]}")
    return t, dim


def background_first_to_last(x: ArrayLike, dim: int = -1) -> torch.Tensor:
    """Detectron order [bg, c1..cK] -> Detectron2 order [c1..cK, bg] along ``dim`` (logits, probabilities, rows)."""
    t, dim = _dim_tensor(x, dim)
    return torch.cat([t.narrow(dim, 1, t.shape[dim] - 1), t.narrow(dim, 0, 1)], dim=dim)


def background_last_to_first(x: ArrayLike, dim: int = -1) -> torch.Tensor:
    """Detectron2 order [c1..cK, bg] -> Detectron order [bg, c1..cK] along ``dim``."""
    t, dim = _dim_tensor(x, dim)
    n = t.shape[dim]
    return torch.cat([t.narrow(dim, n - 1, 1), t.narrow(dim, 0, n - 1)], dim=dim)


def _labels(labels: ArrayLike, num_classes: int, name: str) -> torch.Tensor:
    k = positive_int(num_classes, "num_classes")
    t = as_tensor(labels, name, integer=True)
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"{name} must be integer class labels")
    t = t.long()
    if t.numel() and (t.min() < 0 or t.max() > k):
        raise ValueError(f"{name} must be in 0..{k} for num_classes={k} (K foreground classes plus background), "
                         f"found {int(t.min())}..{int(t.max())}")
    return t


def detectron_to_d2_labels(labels: ArrayLike, num_classes: int) -> torch.Tensor:
    """Detectron labels (0 = background, 1..K) to Detectron2 labels (0..K-1, K = background); K = ``num_classes``."""
    t = _labels(labels, num_classes, "labels")
    return torch.where(t == 0, torch.full_like(t, num_classes), t - 1)


def d2_to_detectron_labels(labels: ArrayLike, num_classes: int) -> torch.Tensor:
    """Detectron2 labels (0..K-1, K = background) to Detectron labels (0 = background, 1..K)."""
    t = _labels(labels, num_classes, "labels")
    return torch.where(t == num_classes, torch.zeros_like(t), t + 1)


# --------------------------------------------------------------------------------------------
# Predictor weights
# --------------------------------------------------------------------------------------------
_DETECTRON_KEYS = ("cls_score_w", "cls_score_b", "bbox_pred_w", "bbox_pred_b")
_D2_KEYS = ("cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias")


def _get(params: Mapping, key: str) -> torch.Tensor:
    if key not in params:
        raise ValueError(f"params is missing {key!r}; it has {sorted(params)}")
    return as_tensor(params[key], key)


def _shapes(params: Mapping) -> str:
    return ", ".join(f"{k} {tuple(as_tensor(v, k).shape)}" for k, v in params.items())


def _has_mask(params: Mapping, weight: str, bias: str) -> bool:
    return weight in params or bias in params


def _to_background_last(params: Mapping) -> Dict[str, torch.Tensor]:
    """Detectron names and layout to what Detectron2's loader (``convert_c2_detectron_names``) produces."""
    cw, cb, bw, bb = (_get(params, k) for k in _DETECTRON_KEYS)
    n = cw.shape[0]
    if cw.dim() != 2 or cb.shape != (n,) or n < 2:
        raise ValueError(f"cls_score_w must be (K+1) x D with K >= 1 and cls_score_b (K+1,); found {_shapes(params)}")
    if bw.dim() != 2 or bb.shape != (bw.shape[0],) or bw.shape[1] != cw.shape[1]:
        raise ValueError(f"bbox_pred_w must be rows x D (D = {cw.shape[1]}) with a matching bbox_pred_b; found {_shapes(params)}")
    if bw.shape[0] not in (4 * n, 8):
        raise ValueError(f"bbox_pred_w has {bw.shape[0]} rows: for cls_score's {n} rows (K = {n - 1}) expected "
                         f"4(K+1) = {4 * n} (class-specific) or 8 (class-agnostic); found {_shapes(params)}")
    out = {"cls_score.weight": background_first_to_last(cw, 0), "cls_score.bias": background_first_to_last(cb, 0),
           "bbox_pred.weight": bw[4:], "bbox_pred.bias": bb[4:]}
    if _has_mask(params, "mask_fcn_logits_w", "mask_fcn_logits_b"):
        mw, mb = _get(params, "mask_fcn_logits_w"), _get(params, "mask_fcn_logits_b")
        if mw.shape[0] == 1 and mb.shape == (1,):
            # class-agnostic (MRCNN.CLS_SPECIFIC_MASK False): no background channel to drop; renamed only, for a
            # Detectron2 head with MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True
            out["mask_head.predictor.weight"] = mw.clone()
            out["mask_head.predictor.bias"] = mb.clone()
            return out
        if mw.shape[0] != n or mb.shape != (n,):
            raise ValueError(f"mask_fcn_logits_w must have K+1 = {n} channels like cls_score (or 1, class-agnostic); "
                             f"found {_shapes(params)}")
        out["mask_head.predictor.weight"] = mw[1:]
        out["mask_head.predictor.bias"] = mb[1:]
    return out


def _to_background_first(params: Mapping, bg_box_rows: str) -> Dict[str, torch.Tensor]:
    """Detectron2 names and layout back to Detectron's, re-inserting the background rows and channel."""
    cw, cb, bw, bb = (_get(params, k) for k in _D2_KEYS)
    n = cw.shape[0]
    if cw.dim() != 2 or cb.shape != (n,) or n < 2:
        raise ValueError(f"cls_score.weight must be (K+1) x D with K >= 1 and cls_score.bias (K+1,); found {_shapes(params)}")
    k = n - 1
    if bw.dim() != 2 or bb.shape != (bw.shape[0],) or bw.shape[0] not in (4 * k, 4):
        raise ValueError(f"bbox_pred.weight has {bw.shape[0]} rows: for K = {k} expected 4K = {4 * k} (class-specific) "
                         f"or 4 (class-agnostic); found {_shapes(params)}")
    copy = bg_box_rows == "copy"
    bg_w = bw[:4].clone() if copy else torch.zeros_like(bw[:4])
    bg_b = bb[:4].clone() if copy else torch.zeros_like(bb[:4])
    out = {"cls_score_w": background_last_to_first(cw, 0), "cls_score_b": background_last_to_first(cb, 0),
           "bbox_pred_w": torch.cat([bg_w, bw]), "bbox_pred_b": torch.cat([bg_b, bb])}
    if _has_mask(params, "mask_head.predictor.weight", "mask_head.predictor.bias"):
        mw, mb = _get(params, "mask_head.predictor.weight"), _get(params, "mask_head.predictor.bias")
        if mw.shape[0] != k or mb.shape != (k,):
            raise ValueError(f"mask_head.predictor.weight must have K = {k} channels; found {_shapes(params)}")
        out["mask_fcn_logits_w"] = torch.cat([torch.zeros_like(mw[:1]), mw])
        out["mask_fcn_logits_b"] = torch.cat([torch.zeros_like(mb[:1]), mb])
    return out


def convert_box_predictor(params: Mapping[str, ArrayLike], *, background_first: bool = False,
                          bg_box_rows: str = "copy") -> Dict[str, torch.Tensor]:
    """Convert box (and mask) predictor weights between the two layouts; ``background_first`` is the layout produced.

    ``background_first=False`` (Detectron2's layout, the default): ``params`` in Detectron's names (``cls_score_w/_b``,
    ``bbox_pred_w/_b`` and optionally ``mask_fcn_logits_w/_b``), background first. Returns exactly what Detectron2's
    loader produces: ``cls_score.*`` with the background row moved last, ``bbox_pred.*`` without the 4 background
    rows (8 -> 4 rows when class-agnostic), ``mask_head.predictor.*`` without the background channel.

    One exception: a class-agnostic Detectron mask head (``MRCNN.CLS_SPECIFIC_MASK: False``, 1 channel and no
    background channel) is kept as it is, for a Detectron2 head with ``MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK: True``.
    Detectron2's loader cuts it like every mask predictor (``w[1:]``) to 0 channels; ``align_and_update_state_dicts``
    then warns that the shapes differ ("... will not be loaded") and skips it, so the model's mask predictor keeps its
    random initialisation (:func:`detectron2_loads_mask_predictor` shows it).

    ``background_first=True`` (Detectron's layout): ``params`` in those Detectron2 names; background moved first and 4
    background box rows re-inserted at the front (``bg_box_rows="copy"`` repeats class 0's rows, as tensorpack's
    ``convert_d2.py`` does; ``"zeros"`` fills zeros), and a zero background mask channel re-inserted. From a
    convention: ``background_first=conv.background_first`` gives the layout that convention's model loads.
    """
    if not isinstance(background_first, bool):
        raise _v.WrongType(f"background_first must be True or False (the layout produced), got {background_first!r}")
    one_of(bg_box_rows, "bg_box_rows", ("copy", "zeros"))
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a dict of name -> tensor, got {type(params).__name__}")
    return _to_background_first(params, bg_box_rows) if background_first else _to_background_last(params)


def detectron2_loads_mask_predictor(weight: ArrayLike, bias: ArrayLike, model_channels: int, seed: int = 0) -> Dict[str, object]:
    """What a Detectron2 model's mask predictor holds after its loader reads a Detectron ``mask_fcn_logits``.

    ``weight`` (channels x C x 1 x 1) and ``bias``: the Detectron blobs; ``model_channels``: the predictor's channels in
    the Detectron2 model (K, or 1 with ``MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK``). The loader
    (``convert_c2_detectron_names``) drops channel 0 of every mask predictor, ``w[1:]``;
    ``align_and_update_state_dicts`` loads the result only if its shape is the model's, and otherwise logs "Shape of
    ... in checkpoint is ..., while shape of ... in model is ..." and "... will not be loaded", and the predictor
    keeps its initialisation (``mask_head.py``: weights normal with std 0.001, bias 0; seeded here).

    Returns ``checkpoint_shape`` (after ``w[1:]``), ``model_shape``, ``loaded`` (bool), ``warning`` (the text the
    loader logs, or ""), and the ``weight`` and ``bias`` the model ends up with.
    """
    w, b = as_tensor(weight, "weight"), as_tensor(bias, "bias")
    _v.seed(seed)
    if w.dim() != 4 or w.shape[2:] != (1, 1) or b.shape != (w.shape[0],) or w.shape[0] < 1:
        raise ValueError(f"weight must be channels x C x 1 x 1 with one bias per channel; got weight {tuple(w.shape)}, "
                         f"bias {tuple(b.shape)}")
    k = positive_int(model_channels, "model_channels")
    cut_w, cut_b = w[1:], b[1:]
    model_shape = (k, w.shape[1], 1, 1)
    if tuple(cut_w.shape) == model_shape:
        return {"checkpoint_shape": tuple(cut_w.shape), "model_shape": model_shape, "loaded": True, "warning": "",
                "weight": cut_w.clone(), "bias": cut_b.clone()}
    g = torch.Generator().manual_seed(_v.seed(seed))
    warning = (f"Shape of mask_head.predictor.weight in checkpoint is torch.Size({list(cut_w.shape)}), while shape of "
               f"roi_heads.mask_head.predictor.weight in model is torch.Size({list(model_shape)}). "
               "mask_head.predictor.weight will not be loaded. Please double check and see if this is desired.")
    return {"checkpoint_shape": tuple(cut_w.shape), "model_shape": model_shape, "loaded": False, "warning": warning,
            "weight": torch.randn(model_shape, generator=g) * 0.001, "bias": torch.zeros(k)}


def _find(params: Mapping, *suffixes: str) -> Tuple[Optional[str], Optional[torch.Tensor]]:
    """The first entry whose name ends with one of ``suffixes`` (with or without a module prefix)."""
    for key, v in params.items():
        if any(key == s or key.endswith("." + s) or key.endswith(s) for s in suffixes):
            return key, as_tensor(v, key)
    return None, None


def _box_rows_vote(key: str, rows: int, n: int) -> Tuple[str, str]:
    """(vote, evidence) from bbox_pred's row count for a classifier with n = K + 1 rows; vote "" is no evidence."""
    if rows == 4 * n:
        return "detectron", f"{key}: {rows} rows = 4 x {n}: includes background boxes (Detectron)"
    if rows == 8 and n == 3:
        return "", (f"{key}: 8 rows: Detectron2 class-specific with K = 2, or Detectron class-agnostic (bg, fg): "
                    "shapes cannot tell")
    if rows == 4 * (n - 1):
        return "detectron2", f"{key}: {rows} rows = 4 x {n - 1}: no background boxes (Detectron2)"
    if rows == 8:
        return "detectron", f"{key}: 8 rows: class-agnostic with a background box (Detectron CLS_AGNOSTIC_BBOX_REG)"
    if rows == 4:
        return "detectron2", f"{key}: 4 rows: class-agnostic without a background box (Detectron2)"
    return "", f"{key}: {rows} rows fits neither 4(K+1) = {4 * n} nor 4K = {4 * (n - 1)}"


def _mask_channels_vote(key: str, channels: int, n: int) -> Tuple[str, Optional[str]]:
    """(vote, evidence) from the mask predictor's channel count; evidence None says nothing at all."""
    if channels == n:
        return "detectron", f"{key}: {channels} channels = K+1: includes a background channel (Detectron)"
    if channels == n - 1:
        return "detectron2", f"{key}: {channels} channels = K: no background channel (Detectron2)"
    if channels == 1:
        return "", f"{key}: 1 channel: a class-agnostic mask head (no evidence of order)"
    return "", None


def _bias_vote(bias: torch.Tensor, n: int) -> Tuple[str, str]:
    """(vote, evidence) from the position of the largest classifier bias (a trained background prior): weak."""
    top = int(torch.argmax(bias))
    if top == 0:
        return "detectron", "largest classifier bias at row 0: background first? (weak evidence: a trained background prior)"
    if top == n - 1:
        return "detectron2", f"largest classifier bias at row {n - 1}: background last? (weak evidence)"
    return "", f"largest classifier bias at row {top}: not a background row; no evidence of order"


def guess_class_order(params: Mapping[str, ArrayLike]) -> Dict[str, object]:
    """Whether predictor weights are in Detectron or Detectron2 layout, and K, with the evidence.

    ``params`` may use either codebase's names (Detectron ``cls_score_w``..., Detectron2 ``cls_score.weight``...,
    with or without a ``roi_heads.box_predictor.`` prefix). Shapes decide when they can: ``bbox_pred`` with
    4(K+1) rows or a mask predictor with K+1 channels means background is included (Detectron); 4K rows or K
    channels means Detectron2. When shapes cannot tell (class-agnostic box regression and no mask head), the
    classifier bias is used: a trained detector's background logit has the largest prior, so the position of
    the largest bias (first or last) is reported as weaker evidence. Returns {"layout", "K", "evidence"} with
    layout "detectron", "detectron2" or "cannot tell".
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a dict of name -> tensor, got {type(params).__name__}")
    ck, cw = _find(params, "cls_score_w", "cls_score.weight")
    bk, bw = _find(params, "bbox_pred_w", "bbox_pred.weight")
    _, cb = _find(params, "cls_score_b", "cls_score.bias")
    mk, mw = _find(params, "mask_fcn_logits_w", "mask_head.predictor.weight", "predictor.weight")
    if cw is None:
        raise ValueError(f"params has no classifier weight (cls_score_w or cls_score.weight); keys: {sorted(params)}")
    n = cw.shape[0]
    evidence: List[str] = [f"{ck}: {n} rows, so K = {n - 1} foreground classes plus background"]
    votes = {"detectron": 0, "detectron2": 0, "": 0}
    shape_votes: List[Tuple[str, Optional[str]]] = []
    if bk is not None and bw is not None:
        shape_votes.append(_box_rows_vote(bk, bw.shape[0], n))
    if mk is not None and mw is not None:
        shape_votes.append(_mask_channels_vote(mk, mw.shape[0], n))
    for vote, note in shape_votes:
        votes[vote] += 2
        if note is not None:
            evidence.append(note)
    if cb is not None and votes["detectron"] == votes["detectron2"]:
        vote, note = _bias_vote(cb, n)
        votes[vote] += 1
        evidence.append(note)
    if votes["detectron"] == votes["detectron2"]:
        layout = "cannot tell"
    else:
        layout = "detectron" if votes["detectron"] > votes["detectron2"] else "detectron2"
    return {"layout": layout, "K": n - 1, "evidence": evidence}


# --------------------------------------------------------------------------------------------
# COCO: 80 contiguous labels against category ids 1..90 with gaps
# --------------------------------------------------------------------------------------------
#: COCO's 80 category ids, in order (ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are unused).
COCO_CATEGORY_IDS: List[int] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
]
COCO_CLASS_NAMES: List[str] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light", "fire hydrant",
    "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
_ID_TO_INDEX = {cid: i for i, cid in enumerate(COCO_CATEGORY_IDS)}


def coco_id_to_contiguous(ids: ArrayLike) -> torch.Tensor:
    """COCO category ids (1..90 with gaps) to contiguous labels 0..79 (Detectron2's dataset mapping)."""
    t = as_tensor(ids, "ids", integer=True).reshape(-1)
    bad = [int(v) for v in t if int(v) not in _ID_TO_INDEX]
    if bad:
        raise ValueError(f"ids must be COCO category ids (1..90 without {sorted(set(range(1, 91)) - set(COCO_CATEGORY_IDS))}); got {bad[:5]}")
    return torch.tensor([_ID_TO_INDEX[int(v)] for v in t], dtype=torch.long).reshape(torch.as_tensor(ids).shape)


def contiguous_to_coco_id(labels: ArrayLike) -> torch.Tensor:
    """Contiguous labels 0..79 to COCO category ids."""
    t = as_tensor(labels, "labels", integer=True)
    if t.numel() and (t.min() < 0 or t.max() > 79):
        raise ValueError(f"labels must be contiguous COCO labels in 0..79, found {int(t.min())}..{int(t.max())}")
    return torch.tensor(COCO_CATEGORY_IDS, dtype=torch.long)[t]


# --------------------------------------------------------------------------------------------
# A tiny box classifier for the chapter: trained background-first, loaded background-last
# --------------------------------------------------------------------------------------------
def synthetic_region_features(num_classes: int = 5, per_class: int = 200, dim: int = 16, seed: int = 0,
                              background_fraction: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pooled region features with Detectron labels (0 = background, 1..K): one Gaussian cluster per class.

    Background regions are the most frequent, as in a detector's sampled RoIs. Returns (N x dim, N).
    """
    k = positive_int(num_classes, "num_classes")
    per_class, dim = positive_int(per_class, "per_class"), positive_int(dim, "dim")
    background_fraction = _v.finite_number(background_fraction, "background_fraction", minimum=0.0, maximum=0.99)
    _v.check_values(per_class * k / (1 - background_fraction) * dim, "per_class", f"{k} classes x {per_class:,} regions")
    g = torch.Generator().manual_seed(_v.seed(seed))
    centres = torch.randn(k + 1, dim, generator=g) * 2.0
    n_bg = int(per_class * k * background_fraction / (1 - background_fraction))
    counts = [n_bg] + [per_class] * k
    feats, labels = [], []
    for c, n in enumerate(counts):
        feats.append(centres[c] + torch.randn(n, dim, generator=g) * 0.9)
        labels.append(torch.full((n,), c, dtype=torch.long))
    return torch.cat(feats), torch.cat(labels)


def train_box_classifier(features: ArrayLike, labels: ArrayLike, num_outputs: int, steps: int = 300, lr: float = 0.5,
                         seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fit a linear softmax classifier (a ``cls_score`` layer) by full-batch gradient descent; returns (W, b).

    The steps are those of ``torch.optim.SGD(lr=lr, momentum=0.9)``, written out (buffer = gradient at the first
    step, then 0.9 buffer + gradient; parameter -= lr buffer): the same numbers, without the seconds that
    ``torch.optim`` spends importing ``torch._dynamo`` the first time an optimizer is made.
    """
    x = as_tensor(features, "features")
    y = as_tensor(labels, "labels", integer=True)
    n_out = positive_int(num_outputs, "num_outputs", minimum=2)
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be N x D and labels N, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if y.numel() and (y.min() < 0 or y.max() >= n_out):
        raise ValueError(f"labels must be in 0..{n_out - 1} for num_outputs={n_out}, found {int(y.min())}..{int(y.max())}")
    lr, steps = _v.positive_number(lr, "lr", maximum=1e6), positive_int(steps, "steps", maximum=100_000)
    g = torch.Generator().manual_seed(_v.seed(seed))
    w = (torch.randn(n_out, x.shape[1], generator=g) * 0.01).requires_grad_()
    b = torch.zeros(n_out, requires_grad=True)
    params = (w, b)
    buffers: List[Optional[torch.Tensor]] = [None, None]
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x @ w.t() + b, y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for i, (param, grad) in enumerate(zip(params, grads)):
                buf = buffers[i]
                if buf is None:
                    buf = buffers[i] = grad.clone()
                else:
                    buf.mul_(0.9).add_(grad)
                param.add_(buf, alpha=-lr)
    return w.detach(), b.detach()


def load_into_background_last_head(w: ArrayLike, b: ArrayLike, mode: str, seed: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """A Detectron2 head (K+1 outputs, background last) loaded from background-first weights, three ways.

    * ``"converted"``: the background row moved last, as Detectron2's loader does.
    * ``"naive"``: copied as they are: every class k is read as class k-1 and background as class 0.
    * ``"num_classes_off_by_one"``: the config counts background in ``NUM_CLASSES`` (K+1), so the head has K+2
      outputs; the checkpoint's K+1 rows do not fit and the loader skips them with a warning, leaving the
      head's random initialisation (what fvcore's checkpointer does on a shape mismatch).
    """
    one_of(mode, "mode", ("converted", "naive", "num_classes_off_by_one"))
    w, b = as_tensor(w, "w"), as_tensor(b, "b")
    if w.dim() != 2 or b.dim() != 1 or w.shape[0] != b.shape[0] or w.shape[0] < 1:
        raise ValueError(f"w must be (K+1) x D and b K+1 values, one row per class with background first; got w "
                         f"{tuple(w.shape)}, b {tuple(b.shape)}")
    if mode == "converted":
        return background_first_to_last(w, 0), background_first_to_last(b, 0)
    if mode == "naive":
        return w.clone(), b.clone()
    g = torch.Generator().manual_seed(_v.seed(seed))
    n = w.shape[0] + 1
    return torch.randn(n, w.shape[1], generator=g) * 0.01, torch.zeros(n)


def confusion_matrix(pred: ArrayLike, true: ArrayLike, num_labels: int) -> torch.Tensor:
    """Counts[t, p]: how often true label t was predicted as p (labels 0..num_labels-1)."""
    p, t = as_tensor(pred, "pred", integer=True).reshape(-1), as_tensor(true, "true", integer=True).reshape(-1)
    n = positive_int(num_labels, "num_labels", maximum=1 << 14)
    if p.numel() != t.numel():
        raise ValueError(f"pred and true must have the same length, got {p.numel()} and {t.numel()}")
    if p.numel() and (min(int(p.min()), int(t.min())) < 0 or max(int(p.max()), int(t.max())) >= n):
        raise ValueError(f"pred and true must be labels in 0..{n - 1}")
    return torch.bincount(t * n + p, minlength=n * n).reshape(n, n)


def retinanet_prior_bias(prior_prob: float = 0.01) -> float:
    """The bias a RetinaNet classifier starts from: -log((1 - p) / p), so that every anchor begins with probability p
    of each class under the sigmoid (Detectron ``modeling/retinanet_heads.py:get_retinanet_bias_init`` with
    ``RETINANET.SOFTMAX`` False, Detectron2 ``RetinaNetHead``; ``PRIOR_PROB`` 0.01 in both). RetinaNet has no
    background row: K sigmoid outputs per anchor, background is every output low, so converting it moves no row."""
    p = _v.finite_number(prior_prob, "prior_prob")
    if not 0.0 < p < 1.0:
        raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob!r}")
    return -math.log((1.0 - p) / p)
