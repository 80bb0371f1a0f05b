"""Dashboards: ipywidgets controls wired to a figure that is built once and updated in place.

Each chapter's dashboards live in their own module here and are registered with
:func:`explainer.widgets.base.register`; :func:`load_all` imports every module so that the
benchmark and the tests see all of them.
"""

from __future__ import annotations

import importlib
import pkgutil

from explainer.widgets.base import DASHBOARDS, Dashboard, register  # noqa: F401


def load_all():
    """Import every dashboard module and return the registry {class name: class}."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    return dict(DASHBOARDS)
