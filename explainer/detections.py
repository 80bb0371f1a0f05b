"""Detections of one or more images, read from any form a reader may hold them in, and written as COCO results.

One side of a comparison (:func:`explainer.diagnose.diagnose`) is read by :func:`load_detections` from:

* a COCO result list ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score", "keypoints"?}, ...]``,
  the path of a JSON file holding one, or such a file's content (:func:`detections_from_json`);
* ``{"boxes": N x 4 (x1, y1, x2, y2), "scores": N, "labels": N, "masks"?: N x H x W, "keypoints"?: N x K x 3}``
  for one image, or ``{image_id: such a dict}`` / a list of them for several;
* an N x 4, N x 5 (+ score) or N x 6 (+ score, label) tensor or array for one image.

Boxes are kept as given, in float64: (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1, whatever the convention of
the code that wrote them. Malformed input raises ``ValueError`` naming the file (or the side), the entry and
the field. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._validate import as_tensor
from .pixels import xyxy_to_xywh

__all__ = ["ImageDetections", "Detections", "load_detections", "detections_from_json", "to_coco_results"]

COCO_FIELDS = ("image_id", "category_id", "bbox", "score")


@dataclass
class ImageDetections:
    """One image's detections: boxes N x 4 (x1, y1, x2, y2, float64), scores N, labels N (int64),
    and optionally masks N x H x W (bool) and keypoints N x K x 3 (x, y, visibility)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    masks: Optional[torch.Tensor] = None
    keypoints: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def take(self, keep: torch.Tensor) -> "ImageDetections":
        """The detections that ``keep`` (a boolean mask or indices) selects."""
        return ImageDetections(self.boxes[keep], self.scores[keep], self.labels[keep],
                               None if self.masks is None else self.masks[keep],
                               None if self.keypoints is None else self.keypoints[keep])

    @staticmethod
    def empty() -> "ImageDetections":
        """No detections (how an image present on the other side only is read on this one)."""
        return ImageDetections(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
                               torch.zeros(0, dtype=torch.long))


@dataclass
class Detections:
    """Detections of several images: ``images`` maps image id -> :class:`ImageDetections`, in input order."""

    images: Dict[Any, ImageDetections]
    source: str = "detections"

    @property
    def n(self) -> int:
        return sum(len(d) for d in self.images.values())


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def load_detections(x: Any, name: str = "detections") -> Detections:
    """Read one side of a comparison (see the module's docstring for the accepted forms).

    Raises ``ValueError`` naming the file (or ``name``), the entry and the field for malformed input.
    A side with no detections is valid.
    """
    if isinstance(x, Detections):
        return x
    if isinstance(x, (str, Path)):
        return _from_file(Path(x), name)
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return _from_array(x, name)
    if isinstance(x, Mapping):
        return _from_mapping(x, name)
    if isinstance(x, (list, tuple)):
        return _from_list(x, name)
    raise ValueError(f"{name} must be a COCO result list, a JSON file, a dict with 'boxes', or an N x 4 tensor; "
                     f"got {type(x).__name__}")


def detections_from_json(content: Union[bytes, bytearray, memoryview, str], name: str) -> Detections:
    """Detections from the content of a JSON file (bytes as uploaded, or text), never from a path.

    ``name`` (a file name, say) is what error messages call the input.
    """
    try:
        text = bytes(content).decode("utf-8") if isinstance(content, (bytes, bytearray, memoryview)) else content
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name}: not a text file (expected COCO results JSON)") from None
    if isinstance(data, str):  # content is never read as the path of another file
        raise ValueError(f"{name}: holds a JSON string, not detections (expected a COCO result list)")
    return load_detections(data, name=name)


def _from_file(p: Path, name: str) -> Detections:
    if not p.is_file():
        raise ValueError(f"{name}: file {str(p)!r} does not exist (expected a COCO results JSON file)")
    return detections_from_json(p.read_bytes(), name=str(p))


def _from_array(x: Union[torch.Tensor, np.ndarray], name: str) -> Detections:
    t = as_tensor(x, name, dtype=torch.float64)
    if t.dim() != 2 or t.shape[1] not in (4, 5, 6):
        raise ValueError(f"{name} must be N x 4 boxes (or N x 5 with scores, N x 6 with scores and labels), "
                         f"got shape {tuple(t.shape)}")
    d = {"boxes": t[:, :4]}
    if t.shape[1] >= 5:
        d["scores"] = t[:, 4]
    if t.shape[1] == 6:
        d["labels"] = t[:, 5]
    return Detections({0: _from_dict(d, f"{name}: image 0")}, name)


def _from_mapping(x: Mapping, name: str) -> Detections:
    if "boxes" in x:
        return Detections({0: _from_dict(x, f"{name}: image 0")}, name)
    if "annotations" in x and isinstance(x["annotations"], list):
        return _from_coco(x["annotations"], name)
    images = {}
    for k, v in x.items():
        key = _image_key(k, f"{name}: key {k!r}")
        if not isinstance(v, Mapping) or "boxes" not in v:
            raise ValueError(f"{name}: image {k!r} must be a dict with 'boxes' (and 'scores', 'labels'); "
                             f"got {type(v).__name__}")
        images[key] = _from_dict(v, f"{name}: image {k!r}")
    return Detections(images, name)


def _from_list(x: Sequence[Any], name: str) -> Detections:
    if not x:
        return Detections({}, name)
    if all(isinstance(e, Mapping) and "boxes" in e for e in x):
        return Detections({i: _from_dict(e, f"{name}: image {i}") for i, e in enumerate(x)}, name)
    return _from_coco(x, name)


def _number(v: Any, where: str, field_: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ValueError(f"{where}: field '{field_}' must be a finite number, got {v!r}")
    return float(v)


def _image_key(v: Any, where: str) -> Union[int, str]:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"{where}: field 'image_id' must be an integer or a string, got {v!r}")
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return v


# -- COCO result lists ---------------------------------------------------------------------------
@dataclass
class _CocoResult:
    image: Union[int, str]
    box: Tuple[float, float, float, float]   # x1, y1, x2, y2
    score: float
    label: int
    keypoints: Optional[List[float]]


def _coco_result(e: Any, i: int, source: str) -> _CocoResult:
    """Entry ``i`` of a COCO result list, checked field by field."""
    where = f"{source}: entry {i}"
    if not isinstance(e, dict):
        raise ValueError(f"{where} must be an object with image_id, category_id, bbox and score; got {type(e).__name__}")
    for f_ in COCO_FIELDS:
        if f_ not in e:
            raise ValueError(f"{where}: missing field '{f_}' (a COCO result needs image_id, category_id, "
                             f"bbox [x, y, width, height] and score)")
    img = _image_key(e["image_id"], where)
    where = f"{source}: entry {i} (image_id {img})"
    b = e["bbox"]
    if not isinstance(b, (list, tuple)) or len(b) != 4:
        raise ValueError(f"{where}: field 'bbox' must be [x, y, width, height], got {b!r}")
    x, y, w, h = (_number(v, where, "bbox") for v in b)
    if w < 0 or h < 0:
        raise ValueError(f"{where}: field 'bbox' has a negative {'width' if w < 0 else 'height'} "
                         f"([x, y, width, height] = {list(b)}); is it (x1, y1, x2, y2)?")
    cat = e["category_id"]
    if isinstance(cat, bool) or not isinstance(cat, (int, float)) or float(cat) != int(cat):
        raise ValueError(f"{where}: field 'category_id' must be an integer, got {cat!r}")
    score = _number(e["score"], where, "score")
    kp = e.get("keypoints")
    if kp is not None:
        if not isinstance(kp, (list, tuple)) or len(kp) % 3 or not kp:
            raise ValueError(f"{where}: field 'keypoints' must be a flat list [x1, y1, v1, x2, y2, v2, ...]")
        kp = [_number(v, where, "keypoints") for v in kp]
    return _CocoResult(img, (x, y, x + w, y + h), score, int(cat), kp)


def _from_coco(entries: Sequence[Any], source: str) -> Detections:
    per: Dict[Any, List[_CocoResult]] = {}
    for i, e in enumerate(entries):
        r = _coco_result(e, i, source)
        per.setdefault(r.image, []).append(r)
    return Detections({img: _coco_image(rs, f"{source}: image {img}") for img, rs in per.items()}, source)


def _coco_image(results: List[_CocoResult], where: str) -> ImageDetections:
    kps = [r.keypoints for r in results if r.keypoints is not None]
    keypoints = None
    if kps:
        if len(kps) != len(results) or len({len(k) for k in kps}) != 1:
            raise ValueError(f"{where}: field 'keypoints' must be given for every result, "
                             f"with the same number of keypoints")
        keypoints = torch.tensor(kps, dtype=torch.float64).reshape(len(results), -1, 3)
    return ImageDetections(torch.tensor([r.box for r in results], dtype=torch.float64).reshape(-1, 4),
                           torch.tensor([r.score for r in results], dtype=torch.float64),
                           torch.tensor([r.label for r in results], dtype=torch.long), None, keypoints)


# -- dicts of tensors ----------------------------------------------------------------------------
def _from_dict(d: Mapping, where: str) -> ImageDetections:
    boxes = _boxes_field(d["boxes"], where)
    n = boxes.shape[0]
    scores = _vector_field(d, "scores", n, where)
    labels = _vector_field(d, "labels", n, where)
    return ImageDetections(boxes,
                           torch.ones(n, dtype=torch.float64) if scores is None else scores,
                           torch.zeros(n, dtype=torch.long) if labels is None else labels.to(torch.long),
                           _masks_field(d.get("masks"), n, where), _keypoints_field(d.get("keypoints"), n, where))


def _boxes_field(v: Any, where: str) -> torch.Tensor:
    t = as_tensor(v, f"{where}: field 'boxes'", dtype=torch.float64)
    if t.dim() == 1 and t.numel() == 0:
        t = t.reshape(0, 4)
    if t.dim() != 2 or t.shape[1] != 4:
        raise ValueError(f"{where}: field 'boxes' must be N x 4 (x1, y1, x2, y2), got shape {tuple(t.shape)}")
    if t.numel() and not torch.isfinite(t).all():
        raise ValueError(f"{where}: field 'boxes' must be finite")
    bad = (t[:, 2] < t[:, 0]) | (t[:, 3] < t[:, 1])
    if bad.any():
        r = int(bad.nonzero()[0])
        raise ValueError(f"{where}: field 'boxes' row {r} has a negative width or height: {t[r].tolist()} "
                         f"(boxes must be x1, y1, x2, y2 with x2 >= x1, y2 >= y1)")
    return t


def _vector_field(d: Mapping, key: str, n: int, where: str) -> Optional[torch.Tensor]:
    """``d[key]`` as n finite float64 values, or None when absent."""
    if key not in d or d[key] is None:
        return None
    v = as_tensor(d[key], f"{where}: field '{key}'", dtype=torch.float64).reshape(-1)
    if v.numel() != n:
        raise ValueError(f"{where}: field '{key}' has {v.numel()} values for {n} boxes")
    if not torch.isfinite(v).all():
        raise ValueError(f"{where}: field '{key}' must be finite")
    return v


def _masks_field(masks: Any, n: int, where: str) -> Optional[torch.Tensor]:
    if masks is None:
        return None
    masks = torch.as_tensor(masks) if not isinstance(masks, np.ndarray) else torch.from_numpy(masks)
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[0] != n:
        raise ValueError(f"{where}: field 'masks' must be N x H x W for {n} boxes, got shape {tuple(masks.shape)}")
    return masks > 0.5 if masks.is_floating_point() else masks.bool()


def _keypoints_field(kps: Any, n: int, where: str) -> Optional[torch.Tensor]:
    if kps is None:
        return None
    kps = as_tensor(kps, f"{where}: field 'keypoints'", dtype=torch.float64)
    if kps.dim() != 3 or kps.shape[0] != n or kps.shape[2] not in (2, 3):
        raise ValueError(f"{where}: field 'keypoints' must be N x K x 3 (x, y, visibility) for {n} boxes, "
                         f"got shape {tuple(kps.shape)}")
    if kps.shape[2] == 2:
        kps = torch.cat([kps, torch.full_like(kps[..., :1], 2.0)], dim=2)
    return kps


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def to_coco_results(detections: Any, *, legacy_plus_one: bool = False) -> List[Dict[str, Any]]:
    """Detections (any form :func:`load_detections` reads) as a COCO result list, ready for ``json.dump``.

    ``bbox`` is [x, y, w, h] by :func:`explainer.pixels.xyxy_to_xywh`: w = x2 - x1, or x2 - x1 + 1 under
    ``legacy_plus_one`` (Detectron's export of inclusive boxes). Keypoints, when present, are written flat.
    """
    dets = load_detections(detections, name="detections")
    out = []
    for image_id, d in dets.images.items():
        xywh = xyxy_to_xywh(d.boxes, legacy_plus_one=legacy_plus_one).tolist()
        kps = d.keypoints.reshape(len(d), -1).tolist() if d.keypoints is not None else None
        for k, (b, s, l) in enumerate(zip(xywh, d.scores.tolist(), d.labels.tolist())):
            r = {"image_id": image_id, "category_id": int(l), "bbox": b, "score": float(s)}
            if kps is not None:
                r["keypoints"] = kps[k]
            out.append(r)
    return out
