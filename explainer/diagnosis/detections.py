"""Detections of one or more images, read from any form a reader may hold them in, and written as COCO results.

One side of a comparison (:func:`explainer.diagnosis.diagnose`) is read by :func:`load_detections` from:

* a COCO result list ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score", "keypoints"?,
  "segmentation"?}, ...]`` (``segmentation``: compressed RLE as pycocotools writes it, uncompressed RLE, or
  polygons), the path of a JSON file holding one, or such a file's content (:func:`detections_from_json`);
* ``{"boxes": N x 4 (x1, y1, x2, y2), "scores": N, "labels": N, "masks"?: N x H x W, "keypoints"?: N x K x 3}``
  for one image, or ``{image_id: such a dict}`` / a list of them for several;
* an N x 4, N x 5 (+ score) or N x 6 (+ score, label) tensor or array for one image.

Boxes are kept as given, in float64: (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1, whatever the convention of
the code that wrote them. Boxes, scores and keypoints may hold NaN or infinity: the diagnosis reports them (its
``non_finite`` finding) rather than refusing the file. Anything else malformed raises ``ValueError`` naming the
file (or the side), the entry and the field. A file is read only if it is a regular file of at most
:data:`MAX_RESULTS_BYTES`; JSON content is never taken for the path of another file.

A side is held image by image (:attr:`Detections.images`) or as one stack of every detection
(:meth:`Detections.flat`, what the diagnosis computes on); each form is built from the other on demand. Nothing
here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import orjson
import torch

from explainer import _bounds
from explainer._validate import as_tensor
from explainer.diagnosis.result_masks import check_segmentation, segmentation_for_json
from explainer.pixels import xyxy_to_xywh

__all__ = ["ImageDetections", "Detections", "FlatDetections", "load_detections", "detections_from_json",
           "to_coco_results", "MAX_RESULTS_BYTES"]

COCO_FIELDS = ("image_id", "category_id", "bbox", "score")
#: Result files larger than this are refused before reading (a JSON file of this size needs ~10x in memory).
MAX_RESULTS_BYTES = _bounds.MAX_RESULTS_BYTES   # 512 MiB; every reader's bounds are in explainer._bounds
#: Image ids and labels are held as int64.
_INT64 = 2 ** 63


@dataclass
class ImageDetections:
    """One image's detections: boxes Tensor[N, 4] (x1, y1, x2, y2, float64), scores N, labels N (int64), and optionally
    masks Tensor[N, H, W] (bool), keypoints Tensor[N, K, 3] (x, y, visibility), ``segmentations`` (N COCO segmentations
    as read from a results file, None where a result has none) and ``has_keypoints`` (N bools, where only some
    results carry keypoints)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    masks: Optional[torch.Tensor] = None
    keypoints: Optional[torch.Tensor] = None
    segmentations: Optional[List[Any]] = None
    has_keypoints: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def take(self, keep: torch.Tensor) -> "ImageDetections":
        """The detections that ``keep`` (a boolean mask or indices) selects."""
        rows = torch.arange(len(self))[keep].tolist()
        return ImageDetections(self.boxes[keep], self.scores[keep], self.labels[keep],
                               None if self.masks is None else self.masks[keep],
                               None if self.keypoints is None else self.keypoints[keep],
                               None if self.segmentations is None else [self.segmentations[i] for i in rows],
                               None if self.has_keypoints is None else self.has_keypoints[keep])

    @staticmethod
    def empty() -> "ImageDetections":
        """No detections (how an image present on the other side only is read on this one)."""
        return ImageDetections(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
                               torch.zeros(0, dtype=torch.long))


@dataclass
class FlatDetections:
    """Every detection of one side in one stack, image after image.

    ``image_ids``: the images in input order; ``image``: N indices into it, non-decreasing; ``boxes`` Tensor[N, 4],
    ``scores``, ``labels``; ``keypoints`` Tensor[N, K, 3] with ``has_keypoints`` (N bools) or None; ``masks``: N
    entries (a COCO segmentation, a Tensor[H, W] bool tensor, or None) or None when no detection has a mask;
    ``index``: each detection's position within its image as it was read (None: its row within the image).
    """

    image_ids: List[Any]
    image: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    keypoints: Optional[torch.Tensor] = None
    has_keypoints: Optional[torch.Tensor] = None
    masks: Optional[List[Any]] = None
    index: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def counts(self) -> torch.Tensor:
        """Detections per image, in the order of ``image_ids``."""
        return torch.bincount(self.image, minlength=len(self.image_ids))

    def within_image(self) -> torch.Tensor:
        """Each detection's position within its image as it was read."""
        if self.index is not None:
            return self.index
        counts = self.counts()
        return torch.arange(len(self)) - (counts.cumsum(0) - counts)[self.image]

    def rows(self, rows: torch.Tensor, image: Optional[torch.Tensor] = None,
             image_ids: Optional[List[Any]] = None) -> "FlatDetections":
        """The detections at ``rows`` (in that order), optionally with new image indices into new image ids."""
        r = rows.tolist() if self.masks is not None else []
        return FlatDetections(self.image_ids if image_ids is None else image_ids,
                              self.image[rows] if image is None else image, self.boxes[rows], self.scores[rows],
                              self.labels[rows], None if self.keypoints is None else self.keypoints[rows],
                              None if self.has_keypoints is None else self.has_keypoints[rows],
                              None if self.masks is None else [self.masks[i] for i in r], self.within_image()[rows])


class Detections:
    """Detections of several images: ``images`` maps image id -> :class:`ImageDetections`, in input order.

    Built from that dict, or with :meth:`from_flat` from one stack of every detection (how files are read).
    """

    def __init__(self, images: Mapping[Any, ImageDetections], source: str = "detections") -> None:
        self._images: Optional[Dict[Any, ImageDetections]] = dict(images)
        self._flat: Optional[FlatDetections] = None
        self.source = source

    @classmethod
    def from_flat(cls, flat: FlatDetections, source: str) -> "Detections":
        d = cls({}, source)
        d._images, d._flat = None, flat
        return d

    @property
    def images(self) -> Dict[Any, ImageDetections]:
        if self._images is None:
            assert self._flat is not None
            self._images = _split(self._flat)
        return self._images

    def flat(self) -> FlatDetections:
        """Every detection in one stack (built once from :attr:`images` when needed)."""
        if self._flat is None:
            self._flat = _stack(self.images)
        return self._flat

    @property
    def n(self) -> int:
        return len(self._flat) if self._flat is not None else sum(len(d) for d in self.images.values())


def _split(f: FlatDetections) -> Dict[Any, ImageDetections]:
    counts = f.counts().tolist()
    parts = [torch.split(t, counts) for t in (f.boxes, f.scores, f.labels)]
    kp = torch.split(f.keypoints, counts) if f.keypoints is not None else None
    has = torch.split(f.has_keypoints, counts) if f.has_keypoints is not None else None
    out, start = {}, 0
    for k, (img, n) in enumerate(zip(f.image_ids, counts)):
        d = ImageDetections(parts[0][k], parts[1][k], parts[2][k])
        if kp is not None and has is not None:
            full = bool(has[k].all())
            d.keypoints, d.has_keypoints = kp[k], (None if full else has[k])
        if f.masks is not None:
            ms = f.masks[start:start + n]
            if ms and all(isinstance(m, torch.Tensor) for m in ms) and len({tuple(m.shape) for m in ms}) == 1:
                d.masks = torch.stack(ms)
            elif any(m is not None for m in ms):
                d.segmentations = ms
        out[img] = d
        start += n
    return out


def _stack(images: Mapping[Any, ImageDetections]) -> FlatDetections:
    ds = list(images.values())
    counts = torch.tensor([len(d) for d in ds], dtype=torch.long)
    image = torch.repeat_interleave(torch.arange(len(ds)), counts)
    empty = ImageDetections.empty()
    boxes = torch.cat([d.boxes for d in ds]) if ds else empty.boxes
    scores = torch.cat([d.scores for d in ds]) if ds else empty.scores
    labels = torch.cat([d.labels for d in ds]) if ds else empty.labels
    f = FlatDetections(list(images), image, boxes, scores, labels)
    Ks = {int(d.keypoints.shape[1]) for d in ds if d.keypoints is not None and len(d)}
    if len(Ks) > 1:
        raise ValueError(f"keypoints must have the same number per detection on one side; found {sorted(Ks)}")
    if Ks:
        K = Ks.pop()
        f.keypoints = torch.cat([d.keypoints if d.keypoints is not None and len(d) else
                                 torch.zeros(len(d), K, 3, dtype=torch.float64) for d in ds])
        f.has_keypoints = torch.cat([(d.has_keypoints if d.has_keypoints is not None else torch.ones(len(d), dtype=torch.bool))
                                     if d.keypoints is not None else torch.zeros(len(d), dtype=torch.bool) for d in ds])
    if any(d.masks is not None or d.segmentations is not None for d in ds):
        masks: List[Any] = []
        for d in ds:
            masks += list(d.masks.unbind(0)) if d.masks is not None else (d.segmentations or [None] * len(d))
        f.masks = masks
    return f


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def load_detections(x: Any, name: str = "detections") -> Detections:
    """Read one side of a comparison (see the module's docstring for the accepted forms).

    A ``str`` or ``Path`` is the path of a JSON file. Raises ``ValueError`` naming the file (or ``name``), the
    entry and the field for malformed input. A side with no detections is valid.
    """
    if isinstance(x, Detections):
        return x
    if isinstance(x, (str, Path)):
        return detections_from_json(_read_file(Path(x), name), name=str(x))
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

    ``name`` (a file name, say) is what error messages call the input. Python's cycle collector is paused while
    the content is parsed and read into columns: parsed JSON holds no reference cycles, and the collector's passes
    over the hundreds of thousands of new objects would double the time.
    """
    with _collector_paused():
        data = _parse_json(content, name)
        if not isinstance(data, (list, dict)):  # a JSON string is never read as the path of another file
            what = {str: "a JSON string", type(None): "JSON null", bool: "JSON true/false"}.get(type(data),
                                                                                              "a JSON number")
            raise ValueError(f"{name}: holds {what}, not detections (expected a COCO result list "
                             f"[{{'image_id', 'category_id', 'bbox', 'score'}}, ...])")
        return load_detections(data, name=name)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside, restored to its previous state on the way out."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


#: 20 digits in a row: a number orjson would not read as Python's json does (floats written by Python have 17 at most).
#: Found by mapping every digit to "0" and every other byte to " " (one pass in C), then searching for 20 zeros.
_LONG_DIGITS = b"0" * 20
_DIGIT_RUNS = bytes(ord("0") if chr(i).isdigit() and i < 128 else ord(" ") for i in range(256))


def _parse_json(content: Union[bytes, bytearray, memoryview, str], name: str) -> Any:
    """The parsed content: by orjson (several times faster than the standard library on result files), and by
    Python's json wherever orjson refuses it, so that what is accepted and what each message says stay
    Python's (NaN and Infinity, integers beyond 64 bits, lone surrogates, deep nesting)."""
    try:
        raw = bytes(content) if isinstance(content, (bytearray, memoryview)) else content
        if isinstance(raw, bytes) and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]                        # a byte-order mark is not content
        # orjson reads an integer beyond 64 bits as a float: any run of 20 digits goes to Python's json instead
        b = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
        if _LONG_DIGITS not in b.translate(_DIGIT_RUNS):
            return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        text = bytes(content).decode("utf-8") if isinstance(content, (bytes, bytearray, memoryview)) else content
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: not a UTF-8 text file (byte {e.start} is {e.object[e.start:e.start + 1]!r}; "
                         f"expected COCO results JSON)") from None
    if not text.strip():
        raise ValueError(f"{name}: is empty (expected COCO results JSON; was the file written completely?)")
    try:
        return json.loads(text[1:] if text.startswith("\ufeff") else text)  # a byte-order mark is not content
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise ValueError(f"{name}: JSON nested too deeply to be COCO results (a result list is 3 levels deep)") from None
    except ValueError as e:  # Python refuses integers of more than 4300 digits
        what = "a number with more than 4300 digits" if "digits" in str(e) else " ".join(str(e).split())[:100]
        raise ValueError(f"{name}: not readable as JSON ({what}; expected COCO results with ordinary numbers)") from None


def _read_file(p: Path, name: str) -> bytes:
    """The bytes of a regular file of at most MAX_RESULTS_BYTES; a directory, FIFO or device is never opened."""
    try:
        _check_regular(os.stat(p), p)
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file (the {name}; expected a COCO results JSON file, check the path)") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot be read ({e.strerror or type(e).__name__}; check the path and its "
                         f"permissions)") from None
    try:
        _check_regular(os.fstat(fd), p)  # the path may have been swapped for a FIFO after the first look
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = f.read(MAX_RESULTS_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{p}: cannot be read ({e.strerror or type(e).__name__})") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_RESULTS_BYTES:
        raise ValueError(f"{p}: grew beyond {MAX_RESULTS_BYTES >> 20} MiB while being read (expected a results file)")
    return data


def _check_regular(st: os.stat_result, p: Path) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{p}: is a directory (give the COCO results JSON file inside it)")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{p}: is not a regular file but a FIFO, device or socket (save the results to a file first)")
    if st.st_size > MAX_RESULTS_BYTES:
        raise ValueError(f"{p}: is {st.st_size / 2 ** 20:.0f} MiB, over the {MAX_RESULTS_BYTES >> 20} MiB limit for a "
                         f"results file (split it by image, or raise explainer.diagnosis.detections.MAX_RESULTS_BYTES)")


def _from_array(x: Union[torch.Tensor, np.ndarray], name: str) -> Detections:
    t = as_tensor(x, name, dtype=torch.float64, finite=False)
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
    if "annotations" in x:
        if not isinstance(x["annotations"], list):
            raise ValueError(f"{name}: field 'annotations' must be a list of COCO results")
        return _from_coco(x["annotations"], name)
    if not x:
        raise ValueError(f"{name}: an empty JSON object, not detections (expected a COCO result list)")
    fast = _images_fast(x)
    if fast is not None:
        return Detections.from_flat(fast, name)
    images = {}
    for k, v in x.items():
        key = _image_key(k, f"{name}: key {_short(k)}")
        if not isinstance(v, Mapping) or "boxes" not in v:
            raise ValueError(f"{name}: image {_short(k)} must be a dict with 'boxes' (and 'scores', 'labels'); got "
                             f"{type(v).__name__} (is this a COCO results file? expected a list of results)")
        images[key] = _from_dict(v, f"{name}: image {_short(k)}")
    return Detections(images, name)


_FAST_FIELDS = ({"boxes"}, {"boxes", "scores"}, {"boxes", "labels"}, {"boxes", "scores", "labels"})


def _column(arrs: List[Any], ndim: int) -> Optional[np.ndarray]:
    """One field of every image stacked as float64, or None unless each is a real-valued array of ``ndim`` dims."""
    out = []
    for a in arrs:
        if isinstance(a, torch.Tensor):
            if a.device.type != "cpu" or a.requires_grad:
                return None
            a = a.numpy()
        if type(a) is not np.ndarray or a.dtype.kind not in "fiu" or a.ndim != ndim or (ndim == 2 and a.shape[1] != 4):
            return None
        out.append(a)
    return np.concatenate(out).astype(np.float64, copy=False) if out else None


def _images_fast(x: Mapping) -> Optional[FlatDetections]:
    """``{image id: {"boxes", "scores", "labels"}}`` of arrays stacked in one step, checked on the stack, with no
    per-image tensor work: None when anything is unusual (other fields, lists, a check that fails), so that
    :func:`_from_dict` reads it image by image and names the image in its message."""
    vals = list(x.values())
    if not all(type(v) is dict for v in vals) or len({frozenset(v) for v in vals}) != 1:
        return None
    fields = set(vals[0])
    if fields not in _FAST_FIELDS:
        return None
    try:
        ids = [_image_key(k, "") for k in x]
    except ValueError:
        return None
    boxes = _column([v["boxes"] for v in vals], 2)
    if boxes is None or len(set(ids)) != len(ids):
        return None
    counts = np.fromiter((len(v["boxes"]) for v in vals), dtype=np.int64, count=len(vals))
    cols = {}
    for f in fields - {"boxes"}:
        col = _column([v[f] for v in vals], 1)
        if col is None or not np.array_equal(np.fromiter((len(v[f]) for v in vals), np.int64, len(vals)), counts):
            return None
        cols[f] = col
    with np.errstate(invalid="ignore"):
        if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
            return None
    labels = cols.get("labels", np.zeros(len(boxes)))
    if not (np.isfinite(labels).all() and (labels == np.round(labels)).all() and (np.abs(labels) < 2 ** 53).all()):
        return None
    n = len(boxes)
    image = torch.repeat_interleave(torch.arange(len(vals)), torch.from_numpy(counts))
    scores = torch.from_numpy(cols["scores"]) if "scores" in cols else torch.ones(n, dtype=torch.float64)
    return FlatDetections(ids, image, torch.from_numpy(boxes), scores, torch.from_numpy(labels.astype(np.int64)))


def _from_list(x: Sequence[Any], name: str) -> Detections:
    if not x:
        return Detections({}, name)
    if all(isinstance(e, Mapping) and "boxes" in e for e in x):
        return Detections({i: _from_dict(e, f"{name}: image {i}") for i, e in enumerate(x)}, name)
    return _from_coco(x, name)


def _short(v: Any, n: int = 40) -> str:
    r = repr(v) if not isinstance(v, int) or v.bit_length() < 128 else f"<an integer of {len(str(v))} digits>"
    return r if len(r) <= n else r[: n - 3] + "..."


def _number(v: Any, where: str, field_: str) -> float:
    """A JSON number as float64; NaN and infinity pass (the diagnosis reports them), text and huge integers do not."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{where}: field '{field_}' must be a number, got {_short(v)}")
    try:
        return float(v)
    except OverflowError:
        raise ValueError(f"{where}: field '{field_}' holds an integer of {len(str(v))} digits, beyond float64's range "
                         f"(write coordinates and scores as ordinary numbers)") from None


#: An image id given as text that is read as its integer: an optional minus and ASCII digits.
_DIGITS = re.compile(r"\s*-?[0-9]+\s*")


def _image_key(v: Any, where: str) -> Union[int, str]:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"{where}: field 'image_id' must be an integer or a string, got {_short(v)}")
    if isinstance(v, str) and len(v) < 20 and _DIGITS.fullmatch(v):   # ASCII digits only: not "--5" nor "²"
        return int(v)
    if isinstance(v, int) and not -_INT64 <= v < _INT64:
        raise ValueError(f"{where}: field 'image_id' is {_short(v)}, beyond a 64-bit integer")
    return v


def _category(v: Any, where: str) -> int:
    if isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < 2 ** 53:
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: field 'category_id' must be an integer, got {_short(v)} (NaN and infinity are "
                         f"not category ids)")
    if not -_INT64 <= v < _INT64:
        raise ValueError(f"{where}: field 'category_id' is {_short(v)}, beyond a 64-bit integer")
    return v


# -- COCO result lists ---------------------------------------------------------------------------
@dataclass
class _Columns:
    """A COCO result list column by column, in input order."""

    image: Union[List[Any], np.ndarray]   # image ids; an int64 array when every id is an integer
    boxes: np.ndarray     # N x 4 (x1, y1, x2, y2)
    scores: np.ndarray
    labels: np.ndarray
    keypoints: Optional[List[Optional[List[float]]]] = None
    masks: Optional[List[Any]] = None


def _from_coco(entries: Sequence[Any], source: str) -> Detections:
    cols = _coco_fast(entries)
    if cols is None:  # something the fast path does not take: entry by entry, for the exact message
        cols = _coco_each(entries, source)
    return Detections.from_flat(_group(cols, source), source)


def _coco_fast(entries: Sequence[Any]) -> Optional[_Columns]:
    """The common case column by column (a few list passes and numpy): None when anything is unusual."""
    try:
        if not all(type(e) is dict for e in entries):
            return None
        img = [e["image_id"] for e in entries]
        cat = [e["category_id"] for e in entries]
        bb = [e["bbox"] for e in entries]
        sc = [e["score"] for e in entries]
        if (set(map(type, img)) != {int} or set(map(type, cat)) != {int} or not set(map(type, sc)) <= {int, float}
                or set(map(type, bb)) != {list} or set(map(len, bb)) != {4}
                or not set(map(type, chain.from_iterable(bb))) <= {int, float}):
            return None
        if any(("keypoints" in e or "segmentation" in e) for e in entries):
            return None
        ids = np.array(img, dtype=np.int64)
        labels = np.array(cat, dtype=np.int64)
        xywh = np.array(bb, dtype=np.float64).reshape(-1, 4)
        scores = np.array(sc, dtype=np.float64)
    except (KeyError, OverflowError, TypeError, ValueError):
        return None
    if (xywh[:, 2:] < 0).any():
        return None
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    return _Columns(ids, boxes, scores, labels)


def _coco_each(entries: Sequence[Any], source: str) -> _Columns:
    n = len(entries)
    boxes, scores, labels = np.zeros((n, 4)), np.zeros(n), np.zeros(n, dtype=np.int64)
    image: List[Any] = []
    kps: List[Optional[List[float]]] = []
    masks: List[Any] = []
    k_len: Optional[Tuple[int, int]] = None  # (number of values, first entry that had them)
    for i, e in enumerate(entries):
        img, box, score, label, kp, seg = _coco_result(e, i, source)
        image.append(img)
        boxes[i], scores[i], labels[i] = box, score, label
        if kp is not None:
            if k_len is None:
                k_len = (len(kp), i)
            elif len(kp) != k_len[0]:
                raise ValueError(f"{source}: entry {i} (image_id {_short(img)}): field 'keypoints' has {len(kp) // 3} "
                                 f"keypoints where entry {k_len[1]} has {k_len[0] // 3} (one keypoint set per file)")
        kps.append(kp)
        masks.append(seg)
    return _Columns(image, boxes, scores, labels, kps if k_len is not None else None,
                    masks if any(m is not None for m in masks) else None)


def _coco_result(e: Any, i: int, source: str) -> Tuple[Any, Tuple[float, ...], float, int, Optional[List[float]], Any]:
    """Entry ``i`` of a COCO result list, checked field by field."""
    where = f"{source}: entry {i}"
    if not isinstance(e, dict):
        raise ValueError(f"{where} must be an object with image_id, category_id, bbox and score; got "
                         f"{type(e).__name__} (is this a COCO results file?)")
    for f_ in COCO_FIELDS:
        if f_ not in e:
            raise ValueError(f"{where}: missing field '{f_}' (a COCO result needs image_id, category_id, "
                             f"bbox [x, y, width, height] and score)")
    img = _image_key(e["image_id"], where)
    where = f"{source}: entry {i} (image_id {_short(img)})"
    b = e["bbox"]
    if not isinstance(b, (list, tuple)) or len(b) != 4:
        raise ValueError(f"{where}: field 'bbox' must be [x, y, width, height], got {_short(b)}")
    x, y, w, h = (_number(v, where, "bbox") for v in b)
    if w < 0 or h < 0:
        raise ValueError(f"{where}: field 'bbox' has a negative {'width' if w < 0 else 'height'} "
                         f"([x, y, width, height] = {[x, y, w, h]}); is it (x1, y1, x2, y2)?")
    label = _category(e["category_id"], where)
    score = _number(e["score"], where, "score")
    kp = e.get("keypoints")
    if kp is not None:
        if not isinstance(kp, (list, tuple)) or len(kp) % 3 or not kp:
            raise ValueError(f"{where}: field 'keypoints' must be a flat list [x1, y1, v1, x2, y2, v2, ...]")
        kp = [_number(v, where, "keypoints") for v in kp]
    seg = e.get("segmentation")
    if seg is not None:
        seg = check_segmentation(seg, where)
    return img, (x, y, x + w, y + h), score, label, kp, seg


def _group(c: _Columns, source: str) -> FlatDetections:
    """Columns in input order -> a stack grouped by image (images in order of first appearance)."""
    n = len(c.image)
    if n == 0:
        return FlatDetections([], torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, dtype=torch.float64),
                              torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
    if isinstance(c.image, np.ndarray):  # integer ids: numbered in order of first appearance, in C
        uniq, first, inv = np.unique(c.image, return_index=True, return_inverse=True)
        by_first = np.argsort(first)
        number = np.empty(len(uniq), dtype=np.int64)
        number[by_first] = np.arange(len(uniq))
        inv, ids = number[inv.reshape(-1)], uniq[by_first].tolist()
    else:
        index: Dict[Any, int] = {}
        inv = np.fromiter((index.setdefault(v, len(index)) for v in c.image), dtype=np.int64, count=n)
        ids = list(index)
    order = np.argsort(inv, kind="stable")
    f = FlatDetections(ids, torch.from_numpy(inv[order]), torch.from_numpy(c.boxes[order]),
                       torch.from_numpy(c.scores[order]), torch.from_numpy(c.labels[order]))
    if c.keypoints is not None:
        K = next(len(k) for k in c.keypoints if k is not None) // 3
        kp = np.zeros((n, K * 3))
        has = np.array([k is not None for k in c.keypoints])
        if has.any():
            kp[has] = np.array([k for k in c.keypoints if k is not None], dtype=np.float64)
        f.keypoints = torch.from_numpy(kp[order].reshape(n, K, 3))
        f.has_keypoints = torch.from_numpy(has[order])
    if c.masks is not None:
        f.masks = [c.masks[i] for i in order.tolist()]
    return f


# -- dicts of tensors ----------------------------------------------------------------------------
def _from_dict(d: Mapping, where: str) -> ImageDetections:
    boxes = _boxes_field(d["boxes"], where)
    n = boxes.shape[0]
    scores = _vector_field(d, "scores", n, where)
    labels = _vector_field(d, "labels", n, where)
    if labels is not None:
        if not torch.isfinite(labels).all() or (labels != labels.round()).any() or (labels.abs() >= 2 ** 53).any():
            raise ValueError(f"{where}: field 'labels' must be whole numbers (class indices), finite")
    return ImageDetections(boxes,
                           torch.ones(n, dtype=torch.float64) if scores is None else scores,
                           torch.zeros(n, dtype=torch.long) if labels is None else labels.to(torch.long),
                           _masks_field(d.get("masks"), n, where), _keypoints_field(d.get("keypoints"), n, where))


def _boxes_field(v: Any, where: str) -> torch.Tensor:
    t = as_tensor(v, f"{where}: field 'boxes'", dtype=torch.float64, finite=False)
    if t.dim() == 1 and t.numel() == 0:
        t = t.reshape(0, 4)
    if t.dim() != 2 or t.shape[1] != 4:
        raise ValueError(f"{where}: field 'boxes' must be N x 4 (x1, y1, x2, y2), got shape {tuple(t.shape)}")
    bad = (t[:, 2] < t[:, 0]) | (t[:, 3] < t[:, 1])  # NaN compares false: reported by the diagnosis instead
    if bad.any():
        r = int(bad.nonzero()[0])
        raise ValueError(f"{where}: field 'boxes' row {r} has a negative width or height: {t[r].tolist()} "
                         f"(boxes must be x1, y1, x2, y2 with x2 >= x1, y2 >= y1)")
    return t


def _vector_field(d: Mapping, key: str, n: int, where: str) -> Optional[torch.Tensor]:
    """``d[key]`` as n float64 values, or None when absent."""
    if key not in d or d[key] is None:
        return None
    v = as_tensor(d[key], f"{where}: field '{key}'", dtype=torch.float64, finite=False).reshape(-1)
    if v.numel() != n:
        raise ValueError(f"{where}: field '{key}' has {v.numel()} values for {n} boxes")
    return v


def _masks_field(masks: Any, n: int, where: str) -> Optional[torch.Tensor]:
    if masks is None:
        return None
    if isinstance(masks, (str, bytes, Mapping)):
        raise ValueError(f"{where}: field 'masks' must be N x H x W (numbers or booleans), got {type(masks).__name__}")
    try:
        masks = torch.from_numpy(np.asarray(masks)) if not isinstance(masks, torch.Tensor) else masks
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{where}: field 'masks' must be N x H x W (numbers or booleans): {e}") from None
    if masks.dtype not in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                           torch.float16, torch.float32, torch.float64):
        raise ValueError(f"{where}: field 'masks' must hold numbers or booleans, got {masks.dtype}")
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[0] != n:
        raise ValueError(f"{where}: field 'masks' must be N x H x W for {n} boxes, got shape {tuple(masks.shape)}")
    return masks > 0.5 if masks.is_floating_point() else masks.bool()


def _keypoints_field(kps: Any, n: int, where: str) -> Optional[torch.Tensor]:
    if kps is None:
        return None
    kps = as_tensor(kps, f"{where}: field 'keypoints'", dtype=torch.float64, finite=False)
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
    ``legacy_plus_one`` (Detectron's export of inclusive boxes). Keypoints, when present, are written flat; masks
    as ``segmentation``, compressed RLE with its counts as text (as Detectron2's ``instances_to_coco_json`` does
    with pycocotools); segmentations read from a file are written back as they were read.
    """
    dets = load_detections(detections, name="detections")
    out = []
    for image_id, d in dets.images.items():
        xywh = xyxy_to_xywh(d.boxes, legacy_plus_one=legacy_plus_one).tolist()
        kps = d.keypoints.reshape(len(d), -1).tolist() if d.keypoints is not None else None
        segs = segmentation_for_json(d.masks if d.masks is not None else d.segmentations)
        for k, (b, s, l) in enumerate(zip(xywh, d.scores.tolist(), d.labels.tolist())):
            r: Dict[str, Any] = {"image_id": image_id, "category_id": int(l), "bbox": b, "score": float(s)}
            if kps is not None and (d.has_keypoints is None or bool(d.has_keypoints[k])):
                r["keypoints"] = kps[k]
            if segs is not None and segs[k] is not None:
                r["segmentation"] = segs[k]
            out.append(r)
    return out
