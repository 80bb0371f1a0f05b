"""The one rule for every cross-check against an independent implementation (tests/test_crosscheck_*.py).

The implementations come with the ``crosscheck`` extra (``pip install -e '.[crosscheck]'``, which ``make test``
runs). Without the extra a check is skipped with the reason; in CI (``CI`` set, as ``.ci/run`` does) it fails.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest


def require(module: str, module_level: bool = False) -> Any:
    """Import ``module`` for a cross-check, or skip (fail in CI) saying which package is missing and how to add it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        why = f"{module} is not installed ({e}); the cross-check needs pip install -e '.[crosscheck]'"
        if os.environ.get("CI"):
            pytest.fail(f"the cross-check must run in CI, but {why}", pytrace=False)
        pytest.skip(why, allow_module_level=module_level)
