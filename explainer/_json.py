"""Values made ready for ``json.dumps``: the reports of the diagnosis and of the layer-by-layer comparison."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch


def jsonable(v: Any, digits: Optional[int] = None) -> Any:
    """``v`` with tensors and arrays as lists, numpy scalars as Python numbers, dict keys as strings, floats rounded
    to ``digits`` decimals (kept whole when None), and NaN or infinity written as the strings "nan", "inf", "-inf"
    (JSON has no such numbers)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x, digits) for x in v]
    if isinstance(v, (torch.Tensor, np.ndarray)):
        return jsonable(v.tolist(), digits)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return str(f)
        return f if digits is None else round(f, digits)
    if isinstance(v, np.integer):
        return int(v)
    return v
