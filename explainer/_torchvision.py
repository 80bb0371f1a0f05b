"""torchvision's compiled operators (``torch.ops.torchvision.*``) without the cost of ``import torchvision``.

``import torchvision`` takes seconds (the package imports ``torch._dynamo``); the operators themselves live in
one compiled library beside it, which loads in milliseconds. :func:`torchvision_op` loads that library when
torchvision is not imported yet, and falls back to importing torchvision when the library cannot be found.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from typing import Any

import torch

__all__ = ["torchvision_op"]


def _load_compiled_library() -> None:
    spec = importlib.util.find_spec("torchvision")
    folder = os.path.dirname(spec.origin) if spec and spec.origin else ""
    for lib in sorted(glob.glob(os.path.join(folder, "_C*.so")))[:1]:
        torch.ops.load_library(lib)


def torchvision_op(name: str) -> Any:
    """The operator ``torch.ops.torchvision.<name>`` (for example ``"roi_align"``): torchvision's C++ kernel,
    with the operator's own signature (see torchvision's ``ops/roi_align.py`` for how its wrapper calls it)."""
    ops = torch.ops.torchvision
    if not hasattr(ops, name) and "torchvision" not in sys.modules:
        try:
            _load_compiled_library()
        except (OSError, RuntimeError, ImportError):
            pass
    if not hasattr(ops, name):
        import torchvision  # noqa: F401  (registers the operators)
    return getattr(ops, name)
