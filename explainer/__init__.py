"""Detectron against Detectron2 (and torchvision's detectors), computed each way.

Computations (``explainer.pixels``, ``explainer.boxes``, ...) are pure torch/numpy and import
neither matplotlib nor ipywidgets; drawing lives in ``explainer.viz`` and dashboards in
``explainer.widgets``. ``explainer.conventions`` holds the knobs and the presets (Detectron, Detectron2,
torchvision).
"""

from pathlib import Path

from explainer.conventions import DETECTRON, DETECTRON2, TORCHVISION, Convention, get_convention  # noqa: F401

__version__ = "0.1.0"


def setup_notebook(seed: int = 0, threads: int = 1) -> None:
    """Seed every generator, set torch's thread count and apply the course's figure style (first cell of a chapter).

    ``threads=1`` by default: the course's tensors are small, so a pool of threads mostly waits and wakes; with
    several kernels on a 2-core machine (``make test`` runs three) the pools also compete. On this machine chapter
    10 ran about 3x faster in wall time with one thread than with torch's default. The course's detector is fitted
    and run on one thread whatever this says (:func:`explainer.course.cache.course_detector`), so its numbers do not
    depend on it.

    Last, everything imported so far (torch's thousands of modules) is moved out of the garbage collector's
    reach with ``gc.freeze()``: no collection scans it again, and the kernel exits in a fraction of the time.
    """
    import gc
    import random

    import numpy as np
    import torch

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    try:
        from explainer.viz.style import apply_style
    except ImportError:  # matplotlib missing: computations still work
        pass
    else:
        apply_style()
    gc.freeze()


def scratch_folder(prefix: str = "explainer-") -> Path:
    """A new empty temporary folder for a chapter's files, removed with its contents when the process (the
    kernel) exits, so that running the course leaves nothing behind."""
    import atexit
    import shutil
    import tempfile

    if not isinstance(prefix, str) or not prefix or "/" in prefix or "\\" in prefix or "\0" in prefix:
        raise ValueError(f"prefix must be a non-empty folder name without slashes, got {prefix!r}")
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path
