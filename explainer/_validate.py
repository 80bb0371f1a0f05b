"""Input checks shared by every module: each raises ``ValueError`` naming the argument and the expected form."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "ArrayLike",
    "as_tensor",
    "all_finite",
    "as_boxes",
    "as_points",
    "image_size",
    "positive_int",
    "positive_number",
    "finite_number",
    "probability",
    "one_of",
    "size_pair",
]

#: What the package accepts wherever it takes numbers: a tensor, a numpy array, (nested) lists or tuples of
#: numbers, or one number. Every function converts it with :func:`as_tensor` and checks its shape.
ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[Any], float]


def as_tensor(x: ArrayLike, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Convert lists, numpy arrays and tensors to a float tensor (integers become float32; float64 stays float64)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            # numpy arrays keep their dtype; Python lists follow torch (floats become float32)
            t = torch.as_tensor(x) if not isinstance(x, np.ndarray) else torch.from_numpy(np.ascontiguousarray(x))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}: {e}") from None
    if dtype is not None:
        t = t.to(dtype)
    elif not t.is_floating_point():
        t = t.to(torch.float32)
    return t


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite. The sum is finite whenever they all are, unless it overflows: only then
    are the values looked at one by one (the quick test costs a twentieth of ``isfinite(t).all()``)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def as_boxes(boxes: ArrayLike, name: str = "boxes", *, allow_inverted: bool = False, legacy_plus_one: bool = False) -> torch.Tensor:
    """Check an N x 4 (x1, y1, x2, y2) box tensor: finite values and x2 >= x1, y2 >= y1.

    Under ``legacy_plus_one`` a box may have x2 = x1 - 1 (an empty box in inclusive indices).
    """
    t = as_tensor(boxes, name)
    if t.dim() == 1 and t.numel() == 0:
        t = t.reshape(0, 4)
    if t.dim() != 2 or t.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as (x1, y1, x2, y2), got shape {tuple(t.shape)}")
    if t.numel() and not all_finite(t):
        bad = int((~torch.isfinite(t)).any(dim=1).nonzero()[0])
        raise ValueError(f"{name} must be finite; row {bad} is {t[bad].tolist()}")
    if not allow_inverted and t.numel():
        slack = 1.0 if legacy_plus_one else 0.0
        inv = (t[:, 2] + slack < t[:, 0]) | (t[:, 3] + slack < t[:, 1])
        if inv.any():
            bad = int(inv.nonzero()[0])
            need = "x2 >= x1 - 1 and y2 >= y1 - 1" if legacy_plus_one else "x2 >= x1 and y2 >= y1"
            raise ValueError(f"{name} must satisfy {need}; row {bad} is {t[bad].tolist()}")
    return t


def as_points(points: ArrayLike, name: str = "points", dim: int = 2) -> torch.Tensor:
    """Check an N x dim tensor of finite coordinates (dim=2: x, y; dim=3: x, y, visibility)."""
    t = as_tensor(points, name)
    if t.dim() == 1 and t.numel() == 0:
        t = t.reshape(0, dim)
    if t.dim() != 2 or t.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got shape {tuple(t.shape)}")
    if t.numel() and not all_finite(t):
        raise ValueError(f"{name} must be finite")
    return t


def _whole_number(v: object) -> Optional[int]:
    """``v`` as an int when it is a whole, finite real number (not a bool; a one-element tensor counts), else None."""
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (Real, np.integer)):
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    return int(f) if math.isfinite(f) and f == math.floor(f) else None


def image_size(size: Any, name: str = "image_size") -> Tuple[int, int]:
    """Check an image size given as (height, width) of positive integers."""
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {size!r}") from None
    out = []
    for label, v in (("height", h), ("width", w)):
        n = _whole_number(v)
        if n is None or n <= 0:
            shown = v.item() if isinstance(v, torch.Tensor) else v
            raise ValueError(f"{name} must be (height, width) with positive whole numbers; {label} is {shown!r}")
        out.append(n)
    return out[0], out[1]


def positive_int(v: object, name: str, minimum: int = 1) -> int:
    n = _whole_number(v)
    if n is None or n < minimum:
        shown = v.item() if isinstance(v, torch.Tensor) else v
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {shown!r}")
    return n


def finite_number(v: object, name: str) -> float:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (Real, np.floating, np.integer)) or not math.isfinite(float(v)):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def positive_number(v: object, name: str) -> float:
    f = finite_number(v, name)
    if f <= 0:
        raise ValueError(f"{name} must be > 0, got {v!r}")
    return f


def probability(v: object, name: str) -> float:
    f = finite_number(v, name)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {v!r}")
    return f


def one_of(v: object, name: str, allowed: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {v!r}")
    return v


def size_pair(v: Any, name: str) -> Tuple[int, int]:
    """A (height, width) pair of whole numbers >= 1 (feature sizes, output sizes)."""
    try:
        h, w = v
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {v!r}") from None
    return positive_int(h, f"{name} height"), positive_int(w, f"{name} width")
