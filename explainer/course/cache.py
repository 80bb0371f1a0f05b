"""The course's miniature detector (chapter 10): fitted under Detectron's conventions on synthetic scenes, its
weights converted to Detectron2's layout, and its runs over the test scenes, cached.

Everything here is deterministic (fixed seeds), so every dashboard, test and notebook cell that asks for the
same run gets the same tensors. Nothing here imports matplotlib or ipywidgets.

Fitting takes a few seconds, and four chapters need the detector, each in its own kernel. So the fitted weights
are kept on disk (:func:`fitted_detector`): in ``$EXPLAINER_CACHE``, else ``$XDG_CACHE_HOME/detectron-explainer``,
else ``~/.cache/detectron-explainer``; ``EXPLAINER_CACHE=off`` (or ``0``, ``no``, ``false``) turns that off, and
``on`` (or ``1``, ``yes``, ``true``) keeps the default folder. A file is named after a hash of
everything the fit depends on (the package's computation sources, torch's version, the convention, the scenes'
count and the seed), so an edited fit never reads an old file. It holds tensors, strings and numbers only, read
within :data:`CACHE_LIMITS` by the checkpoint loader's checks (a regular file opened without blocking, its
archive and pickle scanned before torch reads it) and then ``torch.load(weights_only=True)``, and is refitted and
replaced when it does not read back as weights of the expected shapes. A file that cannot be written is not an
error: the next kernel fits again.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from explainer._bounds import CACHE_FILE_BYTES, Limits, open_untrusted
from explainer._threads import single_thread
from explainer._validate import flag, whole_number
from explainer.checkpoints.safe_load import load_torch_zip
from explainer.conventions import DETECTRON, DETECTRON2, Convention
from explainer.course.pipeline import (
    CLASS_NAMES,
    RATIOS,
    SIZES,
    MiniDetector,
    Run,
    Scene,
    fit_detector,
    synthetic_scenes,
)

__all__ = ["N_TRAIN", "N_TEST", "Course", "course_detector", "fitted_detector", "cache_folder", "run_scene",
           "detections_over_scenes", "reference_convention", "scene_ground_truth"]

#: Training scenes (seed 0) and test scenes (seed 1000) of the course's detector.
N_TRAIN, N_TEST = 8, 6


@dataclass(frozen=True)
class Course:
    """The fitted ``detector`` (Detectron's layout), its ``converted`` copy (Detectron2's layout), the ``train``
    and ``test`` scenes, how long the fit took (``fit_s``, seconds; when read from the cache, how long it took
    when it was fitted) and whether the weights were read from the cache (``cached``)."""

    detector: MiniDetector
    converted: MiniDetector
    train: List[Scene]
    test: List[Scene]
    fit_s: float
    cached: bool = False


@lru_cache(maxsize=1)
def course_detector() -> Course:
    """The miniature detector fitted under Detectron's conventions, with its test scenes (once per process;
    the weights come from the cache when an earlier kernel fitted them, see :func:`fitted_detector`)."""
    train = synthetic_scenes(n=N_TRAIN, seed=0)
    det, fit_s, cached = _fitted(train, DETECTRON, N_TRAIN, 0)
    return Course(detector=det, converted=det.converted(DETECTRON2), train=train,
                  test=synthetic_scenes(n=N_TEST, seed=1000), fit_s=fit_s, cached=cached)


def fitted_detector(convention: Convention, n_train: int = N_TRAIN, seed: int = 0) -> MiniDetector:
    """:func:`explainer.course.pipeline.fit_detector` on ``synthetic_scenes(n_train, seed=0)`` under ``convention``,
    fitted on one thread, or read back from the cache (see the module's text) when it was fitted before."""
    from explainer.conventions import check_convention

    conv = check_convention(convention)
    n_train, seed = whole_number(n_train, "n_train", 1, 64), whole_number(seed, "seed", 0, 2 ** 31 - 1)
    return _fitted(synthetic_scenes(n=n_train, seed=0), conv, n_train, seed)[0]


def cache_folder() -> Optional[Path]:
    """Where fitted weights are kept (see the module's text); None when ``EXPLAINER_CACHE`` is ``off``; the
    default folder when it is ``on``."""
    env = os.environ.get("EXPLAINER_CACHE", "").strip()
    if env.lower() in ("off", "0", "no", "false"):
        return None
    if env and env.lower() not in ("on", "1", "yes", "true"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "detectron-explainer"


_FORMAT = 1
#: The bounds a cache file is read within: the weights take about 100 KiB, so a file over 16 MiB is not one.
CACHE_LIMITS = Limits(max_file_bytes=CACHE_FILE_BYTES)


def _fingerprint(conv: Convention, n_train: int, seed: int) -> str:
    """A hash of what a fit depends on: the computation modules' sources, torch's version, the arguments."""
    h = hashlib.sha256(f"{_FORMAT}|{torch.__version__}|{conv!r}|{n_train}|{seed}".encode())
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:32]


def _fitted(train: List[Scene], conv: Convention, n_train: int, seed: int):
    """(detector, fit seconds, read from the cache)."""
    folder = cache_folder()
    path = folder / f"detector-{_fingerprint(conv, n_train, seed)}.pt" if folder is not None else None
    if path is not None:
        got = _read(path, conv, train[0])
        if got is not None:
            return got[0], got[1], True
    t0 = time.perf_counter()
    with single_thread():   # the same weights, to the last digit, whatever the caller's thread count
        det = fit_detector(train, convention=conv, seed=seed)
    fit_s = time.perf_counter() - t0
    if path is not None:
        _write(path, det, fit_s)
    return det, fit_s, False


def _read(path: Path, conv: Convention, scene: Scene):
    """(detector, fit seconds) from a cache file, or None when it is missing or does not read back as weights
    that run on ``scene``."""
    try:
        if not path.is_file():
            return None
        with warnings.catch_warnings():   # torch's note on a foreign pickle protocol: the file is refitted anyway
            warnings.simplefilter("ignore")
            with open_untrusted(path, CACHE_LIMITS) as (f, size):   # never blocks, even if swapped for a FIFO
                data = load_torch_zip(f, size, CACHE_LIMITS)             # sizes checked before anything inflates
    except Exception:                  # unreadable, truncated, not a torch file: fitted again and replaced
        return None
    k = len(CLASS_NAMES)
    try:
        rpn_w, cls_w, box_w = data["rpn_w"], data["cls_w"], data["box_w"]
        report = {str(name): int(v) for name, v in data["fit_report"].items()}
        fit_s = float(data["fit_s"])
        ok = (all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 and bool(torch.isfinite(t).all())
                  for t in (rpn_w, cls_w, box_w))
              and rpn_w.dim() == 3 and rpn_w.shape[0] == len(SIZES) * len(RATIOS) and rpn_w.shape[2] == 5
              and cls_w.dim() == 2 and cls_w.shape[1] == k + 1
              and box_w.dim() == 2 and box_w.shape[1] == 4 * (k + 1 if conv.background_first else k)
              and cls_w.shape[0] == box_w.shape[0] and math.isfinite(fit_s)
              and data["anchor_order"] == conv.anchor_order and data["background_first"] is conv.background_first)
    except Exception:
        return None
    if not ok:
        return None
    det = MiniDetector(fitted_under=conv, rpn_w=rpn_w, cls_w=cls_w, box_w=box_w, anchor_order=conv.anchor_order,
                       background_first=conv.background_first, fit_report=report)
    try:
        with single_thread():
            det.run(scene, conv)                # the feature sizes fit (a matrix product would refuse them)
    except Exception:
        return None
    return det, fit_s


def _write(path: Path, det: MiniDetector, fit_s: float) -> None:
    from explainer._files import atomic_output

    data = {"rpn_w": det.rpn_w, "cls_w": det.cls_w, "box_w": det.box_w, "fit_s": float(fit_s),
            "fit_report": {str(name): int(v) for name, v in det.fit_report.items()},
            "anchor_order": det.anchor_order, "background_first": bool(det.background_first)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, None) as f:
            torch.save(data, f)
    except (OSError, ValueError):      # a read-only or full disk: the next kernel fits again
        pass


def run_scene(index: int, convention: Convention, converted: bool = False) -> Run:
    """Test scene ``index`` (0..N_TEST - 1) through the detector (or its properly converted copy) under
    ``convention``; cached."""
    from explainer.conventions import check_convention

    return _run_scene(whole_number(index, "index", 0, N_TEST - 1), check_convention(convention),
                      flag(converted, "converted"))


@lru_cache(maxsize=256)
def _run_scene(index: int, convention: Convention, converted: bool) -> Run:
    c = course_detector()
    det = c.converted if converted else c.detector
    with single_thread():
        return det.run(c.test[index], convention)


def detections_over_scenes(convention: Convention, converted: bool = False) -> Dict[int, Dict[str, torch.Tensor]]:
    """{scene index: detections} over the test scenes, as :func:`explainer.diagnosis.diagnose` takes them."""
    converted = flag(converted, "converted")
    return {i: dict(run_scene(i, convention, converted).detections) for i in range(N_TEST)}


def reference_convention(hidden: Sequence[str]) -> Convention:
    """Detectron2's conventions with the ``hidden`` knobs left at Detectron's values: how a reference ran."""
    return DETECTRON2.replace(**{k: getattr(DETECTRON, k) for k in hidden})


@lru_cache(maxsize=1)
def scene_ground_truth() -> Dict[str, Any]:
    """The test scenes' ground truth as COCO instances annotations: one image per scene (id = its index), each
    object's tight box as ``bbox`` [x, y, width, height], its mask as a compressed RLE ``segmentation`` (area = the
    mask's pixels), category ids the contiguous labels 0..K-1 named by :data:`CLASS_NAMES`. What
    ``Dx.diagnose(..., gt=...)`` measures the course detector's AP against."""
    from explainer.diagnosis.detections import to_coco_results

    test = course_detector().test
    objects = {i: {"boxes": s.boxes, "labels": s.labels, "masks": s.masks} for i, s in enumerate(test)}
    anns: List[Dict[str, Any]] = []
    seen: Dict[int, int] = {}
    for r in to_coco_results(objects):   # image after image, each image's objects in order
        k = seen[r["image_id"]] = seen.get(r["image_id"], -1) + 1
        anns.append({"id": len(anns) + 1, "image_id": r["image_id"], "category_id": r["category_id"],
                     "bbox": r["bbox"], "segmentation": r["segmentation"],
                     "area": float(test[r["image_id"]].masks[k].sum()), "iscrowd": 0})
    images = [{"id": i, "height": s.image_size[0], "width": s.image_size[1]} for i, s in enumerate(test)]
    return {"images": images, "annotations": anns,
            "categories": [{"id": k, "name": n} for k, n in enumerate(CLASS_NAMES)]}
