"""Input checks shared by every module: the one boundary between a caller's values and the computations.

Every public computation converts and checks its arguments here, so that bad input is refused the same way
everywhere: a ``ValueError`` naming the argument and what was expected. A value of the wrong kind (a string, None,
a boolean or a complex number where numbers are meant) raises :class:`WrongType`, which is both a ``TypeError``
and a ``ValueError``, so that ``except ValueError`` (the dashboards' read-out, the command line) catches every
refusal.

What is refused:

* non-numbers: strings (also inside lists: ``"32"`` is never read as the sizes 3 and 2), None, dicts, booleans
  and complex numbers where real numbers are meant; flags that are not ``True`` or ``False``;
* NaN and infinity, in tensors and in every scalar (sizes and levels included), unless a function documents that
  it carries them through (:func:`as_tensor` with ``finite=False``);
* non-integers where integers are meant (``1.7`` as a label, ``2.5`` as a size): never truncated;
* half precision is never computed in: float16 and bfloat16 tensors are converted to float32, the type the
  original code computes in, so that areas and sums cannot overflow float16's range of 65504;
* sizes whose results would allocate absurd memory, before anything is allocated: at most
  :data:`MAX_VALUES` = 2**28 (268,435,456) values in one result or intermediate, which is 1 GiB of float32;
* box and point coordinates beyond :data:`MAX_COORDINATE` = 2**500 pixels in magnitude, whose areas would overflow
  float64. Boxes and points beyond :data:`FLOAT32_SAFE` = 2**60 pixels, whose areas would overflow float32 (about
  3.4e38), are converted to float64, so that two identical boxes 1e20 wide still have IoU 1.

:func:`finite_result` guards what the checks above cannot foresee: a computation whose finite inputs overflow
(exp of a large delta, a quotient by a tiny width) raises instead of returning inf or NaN.

:func:`read_json` reads a small JSON file from the command line: regular files only, at most
:data:`MAX_JSON_BYTES`, no NaN or Infinity, at most :data:`MAX_JSON_DEPTH` levels of nesting.
"""

from __future__ import annotations

import functools
import json
import math
import os
import stat
from numbers import Real
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import torch

from explainer import _bounds

__all__ = [
    "ArrayLike",
    "WrongType",
    "MAX_VALUES",
    "MAX_COORDINATE",
    "FLOAT32_SAFE",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "as_tensor",
    "all_finite",
    "as_boxes",
    "as_box",
    "as_points",
    "flag",
    "image_size",
    "whole_number",
    "seed",
    "as_mask",
    "positive_int",
    "positive_number",
    "finite_number",
    "probability",
    "numbers",
    "positive_numbers",
    "one_of",
    "size_pair",
    "check_values",
    "check_sampling",
    "finite_result",
    "read_json",
]

#: What the package accepts wherever it takes numbers: a tensor, a numpy array, (nested) lists or tuples of
#: numbers, or one number. Every function converts it with :func:`as_tensor` and checks its shape.
ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[Any], float]

#: The most values one result (or one intermediate) may hold: 2**28, 1 GiB of float32.
MAX_VALUES = 1 << 28
#: The largest coordinate magnitude computed in float32, in pixels: 2**60. The area of a box within it, and the sum
#: of two such areas, stay below float32's largest value (about 3.4e38); boxes beyond are computed in float64.
FLOAT32_SAFE = float(1 << 60)
#: The largest magnitude of a box or point coordinate, in pixels: 2**500, whose areas (and their sums) stay below
#: float64's largest value (about 1.8e308).
MAX_COORDINATE = 2.0 ** 500
#: The largest JSON file :func:`read_json` reads (64 MiB), and the deepest nesting it accepts (64 levels); see
#: :mod:`explainer._bounds`.
MAX_JSON_BYTES, MAX_JSON_DEPTH = _bounds.MAX_JSON_BYTES, _bounds.MAX_JSON_DEPTH

_F = TypeVar("_F", bound=Callable[..., Any])


class WrongType(TypeError, ValueError):
    """A value of the wrong kind (a string, None, a boolean, a complex number ...): a ``TypeError`` that is also a
    ``ValueError``, so that code catching either one catches it."""


def _shown(v: Any, n: int = 60) -> str:
    """A short description of a value for a message: its repr when short, else its type (and shape)."""
    if isinstance(v, (torch.Tensor, np.ndarray)):
        n = v.numel() if isinstance(v, torch.Tensor) else v.size
        if n == 1:
            return repr(v.item())
        return f"a {type(v).__name__} of shape {tuple(v.shape)} and dtype {v.dtype}"
    try:
        r = repr(v)
    except Exception:  # a repr that fails is still an input we can name by its type
        r = f"<a {type(v).__name__}>"
    return r if len(r) <= n else f"a {type(v).__name__} ({r[: n - 3]}...)"


def _element_kinds(x: Any, limit: int = 10_000) -> str:
    """The kinds of the leaves of a nested list (for a message): e.g. ``'str'`` or ``'NoneType, float'``."""
    kinds, stack, seen = set(), [x], 0
    while stack and seen < limit:
        v = stack.pop()
        seen += 1
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        else:
            kinds.add(type(v).__name__)
    return ", ".join(sorted(kinds)) or "nothing"


def _kind_error(name: str, expected: str, v: Any) -> WrongType:
    return WrongType(f"{name} must be {expected}, got {type(v).__name__}: {_shown(v)}")


def _index_text(t: torch.Tensor, mask: torch.Tensor) -> str:
    idx = tuple(int(i) for i in mask.nonzero()[0])
    return "[" + ", ".join(str(i) for i in idx) + "]" if idx else ""


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------
def _numpy_to_tensor(x: np.ndarray, name: str) -> torch.Tensor:
    kind = x.dtype.kind
    if kind == "b":
        raise WrongType(f"{name} must be numbers, got an array of booleans (convert it with .astype(float) if meant)")
    if kind == "c":
        raise WrongType(f"{name} must be real numbers, got an array of complex numbers")
    if kind not in "iuf":
        raise WrongType(f"{name} must be numbers, got a numpy array of dtype {x.dtype}")
    if kind == "u" and x.dtype.itemsize > 1:  # torch has few unsigned types: read them as int64
        if x.size and int(x.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds integers too large to represent: {int(x.max())}")
        x = x.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(x))


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return _numpy_to_tensor(x, name)
    if x is None or isinstance(x, (str, bytes, bytearray, dict, set, frozenset)):
        raise _kind_error(name, "a tensor, an array or a list of numbers", x)
    if isinstance(x, (bool, np.bool_)):
        raise _kind_error(name, "numbers, not True or False", x)
    if isinstance(x, np.generic):
        return _numpy_to_tensor(np.asarray(x), name)
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        kinds = _element_kinds(x) if isinstance(x, (list, tuple)) else type(x).__name__
        if isinstance(x, (list, tuple)) and kinds in ("int", "float", "float, int", "int, float"):
            what = "numbers in a rectangular layout (every row the same length) within float64's range"
            raise ValueError(f"{name} must be {what}: {e}") from None
        raise WrongType(f"{name} must be a tensor, an array or a (nested) list of numbers, got "
                        f"{type(x).__name__} holding {kinds}") from None


def as_tensor(x: ArrayLike, name: str, dtype: Optional[torch.dtype] = None, *, finite: bool = True,
              integer: bool = False) -> torch.Tensor:
    """``x`` as a tensor of real numbers, checked.

    Floating tensors keep their type (float32 or float64), except half precision, which becomes float32; integers
    become float32 (Python lists follow torch: floats become float32). ``dtype`` converts the result. With
    ``integer=True`` the values must be whole numbers and the result is int64 (``1.7`` is refused, never
    truncated). Booleans, complex numbers, strings, None and other non-numbers raise :class:`WrongType`; NaN and
    infinity raise ``ValueError`` naming the first one, unless ``finite=False``.
    """
    t = _to_tensor(x, name)
    if t.dtype == torch.bool:
        raise WrongType(f"{name} must be numbers, got booleans (convert with .float() if that is meant)")
    if t.is_complex():
        raise WrongType(f"{name} must be real numbers, got complex numbers ({t.dtype})")
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise WrongType(f"{name} must be real numbers, got a tensor of dtype {t.dtype}")
    if integer:
        return _whole_tensor(t, name)
    if dtype is not None and dtype.is_floating_point and not isinstance(x, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(x, dtype=dtype)  # Python numbers straight to ``dtype`` (not through float32)
    if t.dtype in (torch.float16, torch.bfloat16) or not t.is_floating_point():
        t = t.to(torch.float32)
    if dtype is not None:
        t = t.to(dtype)
    if finite and t.numel() and not all_finite(t):
        bad = ~torch.isfinite(t)
        raise ValueError(f"{name} must be finite; {name}{_index_text(t, bad)} is {t[bad][0].item()}")
    return t


def _whole_tensor(t: torch.Tensor, name: str) -> torch.Tensor:
    if not t.is_floating_point():
        return t.to(torch.int64)
    if t.numel():
        bad = ~torch.isfinite(t)
        if bad.any():
            raise ValueError(f"{name} must be whole numbers; {name}{_index_text(t, bad)} is {t[bad][0].item()}")
        frac = t != torch.round(t)
        if frac.any():
            raise ValueError(f"{name} must be whole numbers (they are not rounded); {name}{_index_text(t, frac)} is "
                             f"{t[frac][0].item()}")
        if t.abs().max() >= 2.0 ** 63:
            raise ValueError(f"{name} holds values too large for an integer: {t.abs().max().item():g}")
    return t.to(torch.int64)


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite. The sum is finite whenever they all are, unless it overflows: only then
    are the values looked at one by one (the quick test costs a twentieth of ``isfinite(t).all()``)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _coordinates_in_range(t: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` itself, or as float64 when a coordinate is beyond :data:`FLOAT32_SAFE`; refuses beyond
    :data:`MAX_COORDINATE`."""
    if not t.numel():
        return t
    m = float(t.abs().max())
    if m > MAX_COORDINATE:
        bad = t.abs() > MAX_COORDINATE
        row = int(bad.nonzero()[0][0])
        raise ValueError(f"{name} must lie within +-2**500 pixels (areas beyond overflow float64); row {row} is "
                         f"{t[row].tolist()}")
    if m > FLOAT32_SAFE and t.dtype != torch.float64:
        return t.to(torch.float64)
    return t


def as_boxes(boxes: ArrayLike, name: str = "boxes", *, allow_inverted: bool = False, legacy_plus_one: bool = False) -> torch.Tensor:
    """Check a Tensor[N, 4] (x1, y1, x2, y2) box tensor: finite values within +-:data:`MAX_COORDINATE` and x2 >= x1,
    y2 >= y1 (float16 becomes float32; beyond :data:`FLOAT32_SAFE`, float64).

    Under ``legacy_plus_one`` a box may have x2 = x1 - 1 (an empty box in inclusive indices).
    """
    flag(legacy_plus_one, "legacy_plus_one")
    flag(allow_inverted, "allow_inverted")
    t = as_tensor(boxes, name, finite=False)
    if t.dim() == 1 and t.numel() == 0:
        t = t.reshape(0, 4)
    if t.dim() != 2 or t.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as (x1, y1, x2, y2), got shape {tuple(t.shape)}")
    if t.numel() and not all_finite(t):
        bad = int((~torch.isfinite(t)).any(dim=1).nonzero()[0])
        raise ValueError(f"{name} must be finite; row {bad} is {t[bad].tolist()}")
    t = _coordinates_in_range(t, name)
    if not allow_inverted and t.numel():
        slack = 1.0 if legacy_plus_one else 0.0
        inv = (t[:, 2] + slack < t[:, 0]) | (t[:, 3] + slack < t[:, 1])
        if inv.any():
            bad = int(inv.nonzero()[0])
            need = "x2 >= x1 - 1 and y2 >= y1 - 1" if legacy_plus_one else "x2 >= x1 and y2 >= y1"
            raise ValueError(f"{name} must satisfy {need}; row {bad} is {t[bad].tolist()}")
    return t


def as_box(box: ArrayLike, name: str = "box", *, allow_inverted: bool = False, legacy_plus_one: bool = False,
           dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """One box given as four numbers (x1, y1, x2, y2), checked as :func:`as_boxes` does: a 1 x 4 tensor (float64 by
    default)."""
    t = as_tensor(box, name, dtype=dtype, finite=False)
    if t.numel() != 4:
        raise ValueError(f"{name} must be four numbers (x1, y1, x2, y2), got shape {tuple(t.shape)}")
    return as_boxes(t.reshape(1, 4), name, allow_inverted=allow_inverted, legacy_plus_one=legacy_plus_one)


def as_points(points: ArrayLike, name: str = "points", dim: int = 2) -> torch.Tensor:
    """Check an N x dim tensor of finite coordinates within +-:data:`MAX_COORDINATE` (dim=2: x, y; dim=3: x, y,
    visibility)."""
    t = as_tensor(points, name, finite=False)
    if t.dim() == 1 and t.numel() == 0:
        t = t.reshape(0, dim)
    if t.dim() != 2 or t.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got shape {tuple(t.shape)}")
    if t.numel() and not all_finite(t):
        bad = int((~torch.isfinite(t)).any(dim=1).nonzero()[0])
        raise ValueError(f"{name} must be finite; row {bad} is {t[bad].tolist()}")
    t = _coordinates_in_range(t, name)
    return t


def as_mask(x: ArrayLike, name: str) -> torch.Tensor:
    """A boolean mask: booleans, or numbers that are all 0 or 1 (a soft mask such as 0.3 is refused, not rounded)."""
    if isinstance(x, (torch.Tensor, np.ndarray)) and x.dtype in (torch.bool, np.bool_):
        return torch.as_tensor(x).bool()
    t = as_tensor(x, name)
    if t.numel() and not bool(((t == 0) | (t == 1)).all()):
        bad = (t != 0) & (t != 1)
        raise ValueError(f"{name} must be a boolean mask (or 0 and 1); {name}{_index_text(t, bad)} is "
                         f"{t[bad][0].item()} (threshold soft masks first)")
    return t.bool()


# --------------------------------------------------------------------------------------------
# Scalars
# --------------------------------------------------------------------------------------------
def _scalar(v: Any, name: str) -> Any:
    """A one-element tensor or array as its Python value; anything else unchanged."""
    if isinstance(v, (torch.Tensor, np.ndarray)):
        n = v.numel() if isinstance(v, torch.Tensor) else v.size
        if n != 1:
            raise WrongType(f"{name} must be one number, got {_shown(v)}")
        return v.item()
    if isinstance(v, np.generic):
        return v.item()
    return v


def flag(v: Any, name: str) -> bool:
    """``True`` or ``False`` (numpy's booleans too); anything else (a string such as ``"False"``, 0, None) raises
    :class:`WrongType` instead of being read by its truth value."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, torch.Tensor) and v.dtype == torch.bool and v.numel() == 1:
        return bool(v.item())
    raise _kind_error(name, "True or False", v)


def finite_number(v: object, name: str, *, minimum: Optional[float] = None, maximum: Optional[float] = None) -> float:
    """A real, finite number as a float, within [minimum, maximum] when given; booleans, strings, None and complex
    numbers raise :class:`WrongType`."""
    v = _scalar(v, name)
    if isinstance(v, bool) or not isinstance(v, Real):
        raise _kind_error(name, "a finite number", v)
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"{name} must be a finite number, got {_shown(v)}")
    if minimum is not None and f < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {_shown(v)}")
    if maximum is not None and f > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {_shown(v)}")
    return f


def seed(v: object, name: str = "seed") -> int:
    """A random seed: a whole number in [0, 2**63 - 1] (what ``torch.Generator.manual_seed`` and numpy take)."""
    return whole_number(v, name, 0, (1 << 63) - 1)


def whole_number(v: object, name: str, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """A whole number as an int (``3.0`` is 3; ``2.5``, NaN and infinity are refused, never truncated), within
    [minimum, maximum] when given."""
    v = _scalar(v, name)
    if isinstance(v, bool) or not isinstance(v, Real):
        raise _kind_error(name, "a whole number", v)
    if isinstance(v, int):
        n = v
    else:
        f = float(v)
        if not math.isfinite(f) or f != math.floor(f):
            raise ValueError(f"{name} must be a whole number (it is not rounded), got {_shown(v)}")
        n = int(f)
    if minimum is not None and n < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {n}")
    if maximum is not None and n > maximum:
        raise ValueError(f"{name} must be a whole number <= {maximum:,}, got {n:,}")
    return n


def positive_int(v: object, name: str, minimum: int = 1, maximum: int = MAX_VALUES) -> int:
    """A whole number in [minimum, maximum] (by default at most :data:`MAX_VALUES`: a count or a size)."""
    return whole_number(v, name, minimum, maximum)


def positive_number(v: object, name: str, maximum: Optional[float] = None) -> float:
    f = finite_number(v, name, maximum=maximum)
    if f <= 0:
        raise ValueError(f"{name} must be > 0, got {_shown(v)}")
    return f


#: The largest ``spatial_scale`` (feature cells per image pixel) accepted: beyond it, sample positions overflow
#: the integer indices of any feature map.
MAX_SPATIAL_SCALE = 1e6


def probability(v: object, name: str) -> float:
    f = finite_number(v, name)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {_shown(v)}")
    return f


def as_image(x: ArrayLike, name: str = "image") -> torch.Tensor:
    """An image as a tensor, checked: uint8 stays uint8 (pixel values as read from a file); anything else goes
    through :func:`as_tensor` (real, finite, float32 or float64). Shapes are the caller's to check."""
    t = _to_tensor(x, name)
    return t if t.dtype == torch.uint8 else as_tensor(t, name)


def numbers(values: Any, name: str, *, positive: bool = False, allow_empty: bool = False) -> List[float]:
    """A sequence of finite numbers (each > 0 with ``positive``) as a list of floats.

    A string is refused rather than read character by character; so is a single number where a sequence is meant.
    """
    if isinstance(values, (str, bytes, bytearray, dict, set, frozenset)) or values is None:
        raise _kind_error(name, "a sequence of numbers", values)
    if isinstance(values, (torch.Tensor, np.ndarray)):
        values = as_tensor(values, name, dtype=torch.float64).reshape(-1).tolist()
    try:
        items = list(values)
    except TypeError:
        raise _kind_error(name, "a sequence of numbers", values) from None
    what = "a non-empty sequence of positive numbers" if positive else "a sequence of finite numbers"
    out = []
    for i, v in enumerate(items):
        try:
            out.append(positive_number(v, f"{name}[{i}]") if positive else finite_number(v, f"{name}[{i}]"))
            if abs(out[-1]) > MAX_COORDINATE:   # squared, it must stay within float64
                raise ValueError(f"{name}[{i}] must be at most 2**500 in magnitude, got {_shown(v)}")
        except ValueError as e:
            error = WrongType if isinstance(e, WrongType) else ValueError
            raise error(f"{name} must be {what}; {e}") from None
    if not out and not allow_empty:
        raise ValueError(f"{name} must be {what}, got an empty sequence")
    return out


def positive_numbers(values: Any, name: str) -> List[float]:
    """A non-empty sequence of finite numbers > 0 as a list of floats (sizes, aspect ratios)."""
    return numbers(values, name, positive=True)


def one_of(v: object, name: str, allowed: Sequence[str]) -> str:
    if not isinstance(v, str):
        raise _kind_error(name, "one of " + ", ".join(repr(a) for a in allowed), v)
    if v not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {v!r}")
    return v


def _pair(v: Any, name: str, what: str) -> Tuple[Any, Any]:
    if isinstance(v, (str, bytes, bytearray)) or v is None:
        raise _kind_error(name, what, v)
    try:
        h, w = v
    except (TypeError, ValueError):
        raise _kind_error(name, what, v) from None
    return h, w


def image_size(size: Any, name: str = "image_size") -> Tuple[int, int]:
    """Check an image size given as (height, width) of positive integers, at most :data:`MAX_VALUES` pixels."""
    h, w = _pair(size, name, "(height, width)")
    out = []
    for label, v in (("height", h), ("width", w)):
        try:
            out.append(positive_int(v, f"{name} {label}"))
        except ValueError as e:
            error = WrongType if isinstance(e, WrongType) else ValueError
            raise error(f"{name} must be (height, width) with positive whole numbers (at most {MAX_VALUES:,}); "
                        f"{label} is {_shown(v)}") from None
    check_values(out[0] * out[1], name, f"an image of {out[0]:,} x {out[1]:,} pixels")
    return out[0], out[1]


def size_pair(v: Any, name: str) -> Tuple[int, int]:
    """A (height, width) pair of whole numbers >= 1 (feature sizes, output sizes), at most :data:`MAX_VALUES`
    cells."""
    h, w = _pair(v, name, "(height, width)")
    out = (positive_int(h, f"{name} height"), positive_int(w, f"{name} width"))
    check_values(out[0] * out[1], name, f"a grid of {out[0]:,} x {out[1]:,} cells")
    return out


def check_values(n: Union[int, float], name: str, what: str, hint: str = "", limit: int = MAX_VALUES) -> None:
    """Refuse, before allocating, a result or intermediate of more than ``limit`` values (:data:`MAX_VALUES`).

    ``what`` says what would be allocated ("a grid of 100,000 x 100,000 cells"), ``hint`` what to do instead.
    """
    if n > limit:
        gib = float(n) * 4 / (1 << 30)
        raise ValueError(f"{name}: {what} would hold {float(n):,.0f} values ({gib:,.1f} GiB as float32), over the "
                         f"limit of {limit:,}" + (f"; {hint}" if hint else ""))


def check_sampling(widths: torch.Tensor, heights: torch.Tensor, output_size: Tuple[int, int], sampling_ratio: int,
                   channels: int, name: str = "boxes") -> None:
    """Refuse ROIAlign geometry whose sampling grid would be absurd, before anything is gathered.

    ``widths``, ``heights``: the RoIs' sizes in feature cells; a bin of an RoI is sampled on ``sampling_ratio`` x
    ``sampling_ratio`` points, or ceil(size / bins) per side when ``sampling_ratio`` <= 0 (adaptive). An RoI's
    gathered neighbours, (2 out_h g_h) x (2 out_w g_w) x channels values, must stay within :data:`MAX_VALUES`.
    """
    ph, pw = output_size
    if widths.numel() == 0:
        return
    if sampling_ratio > 0:
        gh = gw = float(sampling_ratio)
        who, hint = "sampling_ratio", "use a smaller sampling_ratio (Detectron uses 2)"
    else:
        gh = math.ceil(float(heights.double().max()) / ph)
        gw = math.ceil(float(widths.double().max()) / pw)
        who = name
        hint = ("pass a positive sampling_ratio (Detectron uses 2), or boxes that fit the feature map; "
                "torchvision.ops.roi_align samples such boxes without gathering them")
    n = (2.0 * ph * max(gh, 1)) * (2.0 * pw * max(gw, 1)) * max(channels, 1)
    check_values(n, who, f"one RoI sampled on {gh:,.0f} x {gw:,.0f} points per bin over {ph} x {pw} bins and "
                 f"{channels} channels", hint)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
def _tensors(x: Any, depth: int = 0) -> Iterable[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, float):
        yield torch.tensor(x, dtype=torch.float64)
    elif depth < 4 and isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v, depth + 1)
    elif depth < 4 and isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v, depth + 1)


def finite_result(fn: _F) -> _F:
    """Decorate a computation whose inputs are checked finite: when its result would nevertheless hold inf or NaN
    (an overflow of finite values: a huge delta through exp, a quotient by a subnormal width, a product beyond the
    float range), raise ``ValueError`` instead of returning it."""
    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        for t in _tensors(out):
            if t.is_floating_point() and t.numel() and not all_finite(t):
                raise ValueError(f"{fn.__name__}: these finite inputs overflow {t.dtype} (the result would hold "
                                 f"{'NaN' if torch.isnan(t).any() else 'inf'}); use smaller magnitudes, larger "
                                 "widths, or float64")
        return out
    return checked  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# JSON files
# --------------------------------------------------------------------------------------------
def _json_constant(c: str) -> Any:
    raise ValueError(f"holds {c}, which is not a number in JSON (write a finite number)")


def _json_float(s: str) -> float:
    f = float(s)
    if not math.isfinite(f):
        raise ValueError(f"holds {s}, too large for a float64 (write a finite number)")
    return f


def _json_depth(data: Any) -> int:
    depth, stack = 0, [(data, 1)]
    while stack:
        v, d = stack.pop()
        depth = max(depth, d)
        if depth > MAX_JSON_DEPTH:
            break
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return depth


def regular_file(path: Union[str, os.PathLike], what: str) -> None:
    """Refuse, before anything opens it, an input that is missing, not a regular file (a directory, a FIFO, which
    would block, a device such as ``/dev/zero``, which never ends) or unreadable: one ``ValueError`` naming the
    file, what is wrong and what to do (``what`` names what the file should hold)."""
    p = os.fspath(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file (give the path of {what})") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot be read: {e.strerror} (give the path of {what})") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{p}: is a directory (give the path of {what})")
    if not stat.S_ISREG(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise ValueError(f"{p}: is {kind}, not a regular file (save {what} to a file and give its path)")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{p}: cannot be read: permission denied (make it readable, or give another copy)")


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    d: Dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"gives the key {str(k)[:60]!r} twice (give each key once)")
        d[k] = v
    return d


def read_json(path: Union[str, os.PathLike], what: str, unique_keys: bool = False) -> Any:
    """Read a JSON file given on a command line; ``what`` says what it should hold (for the messages).

    Refuses, with a ``ValueError`` that starts with the path: what is not a regular file (a directory, a FIFO,
    ``/dev/zero``), a file over :data:`MAX_JSON_BYTES`, bytes that are not UTF-8 JSON, ``NaN`` / ``Infinity`` and
    numbers beyond float64, nesting deeper than :data:`MAX_JSON_DEPTH`, and with ``unique_keys`` an object that
    gives a key twice.
    """
    from explainer._bounds import Limits, open_untrusted

    p = os.fspath(path)
    regular_file(p, what)
    try:
        with open_untrusted(p, Limits(max_file_bytes=MAX_JSON_BYTES)) as (f, size):
            raw = f.read(MAX_JSON_BYTES + 1)
    except ValueError as e:  # the loader's refusals: what went wrong, without the file's name
        raise ValueError(f"{p}: {e} ({what} is expected)") from None
    try:
        text = raw.decode("utf-8-sig")
        data = json.loads(text, parse_constant=_json_constant, parse_float=_json_float,
                          object_pairs_hook=_unique_keys if unique_keys else None)
    except RecursionError:
        raise ValueError(f"{p}: nested too deeply (more than {MAX_JSON_DEPTH} levels; {what} is expected)") from None
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not UTF-8 text ({what} is expected)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno} ({what} is expected)") \
            from None
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None
    if _json_depth(data) > MAX_JSON_DEPTH:
        raise ValueError(f"{p}: nested too deeply (more than {MAX_JSON_DEPTH} levels; {what} is expected)")
    return data
