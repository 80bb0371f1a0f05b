"""Detectron against Detectron2, computed both ways.

Computations (``explainer.pixels``, ``explainer.boxes``, ...) are pure torch/numpy and import
neither matplotlib nor ipywidgets; drawing lives in ``explainer.viz`` and dashboards in
``explainer.widgets``. ``explainer.conventions`` holds the knobs and the two presets.
"""

from .conventions import DETECTRON, DETECTRON2, Convention, get_convention  # noqa: F401

__version__ = "0.1.0"


def setup_notebook(seed: int = 0) -> None:
    """Seed every generator and apply the course's figure style (first cell of each chapter)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        from .viz.style import apply_style
    except ImportError:  # matplotlib missing: computations still work
        return
    apply_style()
