"""The course's miniature detector (chapter 10): fitted once per process under Detectron's conventions on
synthetic scenes, its weights converted to Detectron2's layout, and its runs over the test scenes, cached.

Everything here is deterministic (fixed seeds), so every dashboard, test and notebook cell that asks for the
same run gets the same tensors. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Sequence

import torch

from ._threads import single_thread
from ._validate import flag, whole_number
from .conventions import DETECTRON, DETECTRON2, Convention
from .pipeline import MiniDetector, Run, Scene, fit_detector, synthetic_scenes

__all__ = ["N_TRAIN", "N_TEST", "Course", "course_detector", "run_scene", "detections_over_scenes",
           "reference_convention"]

#: Training scenes (seed 0) and test scenes (seed 1000) of the course's detector.
N_TRAIN, N_TEST = 8, 6


@dataclass(frozen=True)
class Course:
    """The fitted ``detector`` (Detectron's layout), its ``converted`` copy (Detectron2's layout), the ``train``
    and ``test`` scenes, and how long the fit took (``fit_s``, seconds)."""

    detector: MiniDetector
    converted: MiniDetector
    train: List[Scene]
    test: List[Scene]
    fit_s: float


@lru_cache(maxsize=1)
def course_detector() -> Course:
    """The miniature detector fitted under Detectron's conventions (once per process), with its test scenes."""
    t0 = time.perf_counter()
    train = synthetic_scenes(n=N_TRAIN, seed=0)
    with single_thread():   # the same weights, to the last digit, whatever the caller's thread count
        det = fit_detector(train, convention=DETECTRON, seed=0)
    fit_s = time.perf_counter() - t0
    return Course(detector=det, converted=det.converted(DETECTRON2), train=train,
                  test=synthetic_scenes(n=N_TEST, seed=1000), fit_s=fit_s)


def run_scene(index: int, convention: Convention, converted: bool = False) -> Run:
    """Test scene ``index`` (0..N_TEST - 1) through the detector (or its properly converted copy) under
    ``convention``; cached."""
    from .pipeline import check_convention

    return _run_scene(whole_number(index, "index", 0, N_TEST - 1), check_convention(convention),
                      flag(converted, "converted"))


@lru_cache(maxsize=256)
def _run_scene(index: int, convention: Convention, converted: bool) -> Run:
    c = course_detector()
    det = c.converted if converted else c.detector
    with single_thread():
        return det.run(c.test[index], convention)


def detections_over_scenes(convention: Convention, converted: bool = False) -> Dict[int, Dict[str, torch.Tensor]]:
    """{scene index: detections} over the test scenes, as :func:`explainer.diagnose.diagnose` takes them."""
    converted = flag(converted, "converted")
    return {i: dict(run_scene(i, convention, converted).detections) for i in range(N_TEST)}


def reference_convention(hidden: Sequence[str]) -> Convention:
    """Detectron2's conventions with the ``hidden`` knobs left at Detectron's values: how a reference ran."""
    return DETECTRON2.replace(**{k: getattr(DETECTRON, k) for k in hidden})
