"""One style for every figure of the course.

Detectron, Detectron2 and torchvision keep the same colour, line style and marker in every chapter;
colour is never the only cue (line style, marker and a direct label go with it). Their three colours
stay apart under simulated protanopia, deuteranopia and tritanopia and also in greyscale, where only
lightness is left, and each has at least 3:1 contrast with the white figure background
(tests/test_palette.py measures all of it). Other colours are from the Okabe-Ito colour-blind-safe
set. Feature maps use ``cividis``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Union

import matplotlib
from cycler import cycler
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

# Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO = {
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "black": "#000000",
    "grey": "#7F7F7F",
}

#: The conventions' colours. Detectron keeps Okabe-Ito's vermillion (lightness L* 54); Detectron2's is a darker
#: shade of Okabe-Ito's blue (L* 39, where the blue itself, L* 46, is too close to the vermillion once printed or
#: projected in grey) and torchvision's a dark wine (L* 22), so that the three also differ in lightness alone.
SIDE_COLORS = {"detectron": OKABE_ITO["vermillion"], "detectron2": "#00609A", "torchvision": "#5E1840"}

#: Style of each convention: the same in every figure of the course.
CONVENTION_STYLES: Dict[str, Dict] = {
    "detectron": dict(color=SIDE_COLORS["detectron"], linestyle="--", marker="s", label="Detectron (+1, pixel indices)",
                      short="Detectron", hatch="//"),
    "detectron2": dict(color=SIDE_COLORS["detectron2"], linestyle="-", marker="o", label="Detectron2 (continuous coordinates)",
                       short="Detectron2", hatch="\\\\"),
    "torchvision": dict(color=SIDE_COLORS["torchvision"], linestyle=":", marker="^", label="torchvision (continuous, its own "
                        "rounding and paste)", short="torchvision", hatch=".."),
}

#: The course's base font size (points): large enough to read from the back of a room.
FONT_SIZE = 11

STYLE = {
    "difference": OKABE_ITO["purple"],
    "agree": OKABE_ITO["green"],
    "reference": OKABE_ITO["black"],
    "neutral": OKABE_ITO["grey"],
    "highlight": OKABE_ITO["yellow"],
    "accent": OKABE_ITO["orange"],
    "grid": "#B0B0B0",
    "centre": OKABE_ITO["green"],
    "feature_cmap": "cividis",
    "diverging_cmap": "RdBu_r",
    "font_size": FONT_SIZE,
}

_RC: Dict[str, Any] = {
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE + 1,
    "axes.labelsize": FONT_SIZE,
    "legend.fontsize": FONT_SIZE - 1,
    "legend.framealpha": 0.9,
    "figure.dpi": 90,
    "savefig.dpi": 90,
    "axes.grid": False,
    "image.cmap": STYLE["feature_cmap"],
    "axes.prop_cycle": cycler(color=[OKABE_ITO[k] for k in ("blue", "vermillion", "green", "orange", "sky", "purple", "black")]),
}


def apply_style() -> None:
    """Apply the course's matplotlib defaults (fonts large enough to read from the back of a room)."""
    # matplotlib's stubs type the keys as literals; the values here are checked by matplotlib when they are set
    rc: Any = matplotlib.rcParams
    rc.update(_RC)


def convention_style(convention) -> Dict:
    """Colour, line style, marker and label for a convention (a name, or an object with ``.name``)."""
    name = convention if isinstance(convention, str) else getattr(convention, "name", str(convention))
    low = name.lower()
    key = ("detectron2" if low.startswith("detectron2") else "detectron" if low.startswith("detectron")
           else "torchvision" if low.startswith("torchvision") else None)
    if key is None:
        raise ValueError(f"convention must be 'detectron', 'detectron2' or 'torchvision', got {name!r}")
    return dict(CONVENTION_STYLES[key])


def legend_handles(*names: str, kind: str = "line"):
    """Legend handles for the named conventions, drawn as lines (default) or filled patches."""
    names = names or ("detectron", "detectron2")
    out: List[Union[Line2D, Patch]] = []
    for n in names:
        s = convention_style(n)
        if kind == "patch":
            out.append(Patch(facecolor="none", edgecolor=s["color"], linestyle=s["linestyle"], hatch=s["hatch"], label=s["label"]))
        else:
            out.append(Line2D([], [], color=s["color"], linestyle=s["linestyle"], marker=s["marker"], label=s["label"]))
    return out
