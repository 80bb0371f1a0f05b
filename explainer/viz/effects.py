"""Chapter 12's figure: how much each difference changes a converted model, against what its authors published about
trained models. The points come from :func:`explainer.course.measured.effect_points`; this module only draws them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from explainer.viz.draw import DescribedFigure
from explainer.viz.style import OKABE_ITO, STYLE

__all__ = ["effects_figure", "effects_description", "described_effects_figure", "NO_FIGURE"]

#: The label of the column for differences whose source gives no figure.
NO_FIGURE = "no figure\npublished"


def _columns(points: Sequence[Dict[str, Any]]) -> List[Any]:
    """The x columns in order: each published value, smallest first, then the rows without one."""
    values = sorted({p["published"] for p in points if p["published"] is not None})
    return [*values, None] if any(p["published"] is None for p in points) else values


def effects_figure(points: Sequence[Dict[str, Any]], num: str = "effects"):
    """A scatter of the measured change (share of the converted detector's detections whose box, or mask, is no longer
    reproduced, in %) against the published change in trained AP (AP points), one column per published value and
    one for "no figure", a labelled point per difference. Returns the matplotlib Figure (built under ``plt.ioff()``,
    named ``num``)."""
    import matplotlib.pyplot as plt

    if not points:
        raise ValueError("points must hold at least one measured difference (measured.effect_points)")
    columns = _columns(points)
    plt.close(num)
    with plt.ioff():
        fig, ax = plt.subplots(num=num, figsize=(10.5, 5.4), layout="constrained")
    for c, value in enumerate(columns):
        members = [p for p in points if p["published"] == value]
        for j, p in enumerate(members):
            x = c + (j - (len(members) - 1) / 2) * 0.17
            box, mask = 100 * p["boxes_changed"], 100 * p["masks_changed"]
            ax.plot([x, x], [box, mask], color=STYLE["neutral"], linewidth=1, zorder=1)
            ax.scatter([x], [box], marker="o", s=55, color=OKABE_ITO["blue"], zorder=3,
                       label="boxes changed" if c == j == 0 else None)
            ax.scatter([x], [mask], marker="^", s=55, facecolor="none", edgecolor=OKABE_ITO["vermillion"], zorder=3,
                       label="masks changed" if c == j == 0 else None)
            top = max(box, mask)
            ax.annotate(p["key"], (x, top), xytext=(0, 8 + 11 * (j % 2)), textcoords="offset points", fontsize=8,
                        ha="center")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([NO_FIGURE if v is None else f"{v:g} AP" + (" (not significant,\nnegligible or same)"
                                                                     if v == 0 else "") for v in columns])
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylim(-5, 122)
    ax.set_xlabel("published change in AP of models trained each way (AP points)")
    ax.set_ylabel("converted detector: detections\nnot reproduced (%, IoU < 0.99)")
    ax.set_title("Published effect on trained models, and the change in a converted one")
    ax.grid(axis="y", color=STYLE["grid"], linewidth=0.5)
    ax.legend(loc="center", bbox_to_anchor=(0.5, 0.35))
    return fig


def effects_description(points: Sequence[Dict[str, Any]]) -> str:
    """What :func:`effects_figure` shows, in words (its text alternative): every point's published change and measured
    shares, in the figure's column order."""
    if not points:
        raise ValueError("points must hold at least one measured difference (measured.effect_points)")
    parts = []
    for value in _columns(points):
        where = "no published figure" if value is None else f"published change {value:g} AP"
        members = ", ".join(f"{p['key']} (boxes {100 * p['boxes_changed']:.0f} %, masks {100 * p['masks_changed']:.0f} %)"
                            for p in points if p["published"] == value)
        parts.append(f"{where}: {members}")
    return (f"Scatter of {len(points)} differences: the share of the converted detector's detections no longer "
            "reproduced, boxes as circles and masks as triangles (y, %), against the published change in AP of models "
            "trained each way (x). " + "; ".join(parts) + ".")


def described_effects_figure(points: Sequence[Dict[str, Any]], num: str = "effects") -> DescribedFigure:
    """:func:`effects_figure` with :func:`effects_description` as its text alternative, for display in a notebook."""
    return DescribedFigure(effects_figure(points, num=num), effects_description(points))

