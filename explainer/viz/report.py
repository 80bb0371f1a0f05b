"""A diagnosis as one self-contained HTML page: the ranked causes with their evidence and fix, and its figures.

:func:`write_report` is what ``python -m explainer diagnose ref.json cand.json --html report.html`` calls. The page
needs no network to be viewed: its CSS is inline and its figures are PNG images inside the page (``data:`` URLs),
drawn with matplotlib's Agg canvas on a :class:`matplotlib.figure.Figure` (no pyplot, so no backend is chosen
or changed). matplotlib is imported inside the functions that draw, so importing this module costs nothing.
The file is written atomically: a temporary file in the same folder, renamed onto the target; on any failure
the temporary file is removed and the target is left as it was.

Figures: the four coordinate residuals (candidate - reference) as histograms on a symmetric log axis; the
residuals against the reference box's size and its FPN level; the pairs that differ most, each in its
reference box's frame, with both masks when the files have them.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import stat
from pathlib import Path
from typing import Any, Dict, Sequence, Union

import numpy as np
import torch

__all__ = ["report_html", "write_report", "WORST_PAIRS"]

#: How many of the most differing pairs the report draws.
WORST_PAIRS = 12
_COORDS = (("dx1", "#0072B2", "-"), ("dy1", "#56B4E9", "--"), ("dx2", "#D55E00", "-."), ("dy2", "#E69F00", ":"))

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;font-size:.92em}th,td{border:1px solid #ccc;padding:.35em .5em;
vertical-align:top;text-align:left}th{background:#f2f2f2}td.n{text-align:right;white-space:nowrap}
.ev{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;color:#333}
.note{color:#555}figure{margin:1em 0}figcaption{color:#444;font-size:.9em}img{max-width:100%;height:auto}
"""


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------
def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _symlog_edges(span: float) -> np.ndarray:
    fine = np.arange(-1.55, 1.5501, 0.1)   # 0.1 px bins centred on 0, +-0.5, +-1
    if span <= 1.55:
        return fine
    coarse = np.geomspace(1.55, span * 1.01, 14)[1:]
    return np.r_[-coarse[::-1], fine, coarse]


def _histograms(res: Dict[str, torch.Tensor]) -> str:
    from matplotlib.figure import Figure

    d = {k: res[k].numpy() for k, _, _ in _COORDS}
    span = max([float(np.abs(v).max()) for v in d.values() if len(v)] + [1.0])
    edges = _symlog_edges(min(span, 1e6))
    fig = Figure(figsize=(9.5, 3.2), layout="constrained")
    ax = fig.subplots()
    for k, colour, ls in _COORDS:
        counts, _ = np.histogram(np.clip(d[k], edges[0], edges[-1]), edges)
        ax.stairs(counts, edges, color=colour, linestyle=ls, linewidth=1.6, label=k.replace("d", "\u0394", 1))
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("candidate - reference (image pixels; linear within \u00b11 px, logarithmic beyond)")
    ax.set_ylabel("matched pairs")
    ax.legend(fontsize=8, ncols=4, loc="upper left")
    ax.set_title("residual of each box coordinate", fontsize=10)
    return _png(fig)


def _against_size(res: Dict[str, torch.Tensor]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 3.4), layout="constrained")
    ax_s, ax_l = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.6, 1]))
    size, level = res["size"].numpy(), res["level"].numpy().astype(float)
    rng = np.random.default_rng(0)  # jitter within a level so that equal levels do not hide each other
    for i, (k, colour, _) in enumerate(_COORDS):
        y = res[k].numpy()
        ax_s.scatter(np.maximum(size, 1e-3), y, s=6, color=colour, alpha=0.5, label=k.replace("d", "\u0394", 1),
                     marker="os^D"[i], linewidths=0)
        ax_l.scatter(level + (i - 1.5) * 0.12 + rng.uniform(-0.04, 0.04, len(y)), y, s=6, color=colour, alpha=0.5,
                     marker="os^D"[i], linewidths=0)
    for ax in (ax_s, ax_l):
        ax.set_yscale("symlog", linthresh=1.0)
        ax.axhline(0, color="#888", linewidth=0.8)
    ax_s.set_xscale("log")
    ax_s.set_xlabel("reference box size, sqrt(area) (image pixels)")
    ax_s.set_ylabel("candidate - reference (px)")
    ax_s.legend(fontsize=8, ncols=4, loc="upper left", markerscale=2)
    ax_l.set_xticks([2, 3, 4, 5], ["P2", "P3", "P4", "P5"])
    ax_l.set_xlabel("FPN level of the reference box (Detectron2's rule)")
    ax_s.set_title("residual against box size", fontsize=10)
    ax_l.set_title("residual against FPN level", fontsize=10)
    return _png(fig)


def _worst_pairs(diag: Any, k: int) -> str:
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from explainer.viz.draw import box_segments

    order = diag.pairs_by_difference()[:k].tolist()
    cols = 4
    rows = max(1, math.ceil(len(order) / cols))
    fig = Figure(figsize=(9.5, 2.5 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    p = diag.pairs
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, order):
        ax.set_axis_on()
        rb, cb = p["ref_boxes"][i].tolist(), p["cand_boxes"][i].tolist()
        w, h = max(rb[2] - rb[0], 1e-9), max(rb[3] - rb[1], 1e-9)
        rel = [(cb[0] - rb[0]) / w, (cb[1] - rb[1]) / h, (cb[2] - rb[0]) / w, (cb[3] - rb[1]) / h]
        title = f"image {str(diag.image_ids[int(p['image'][i])])[:14]}, labels {int(p['ref_labels'][i])}/{int(p['cand_labels'][i])}"
        _draw_masks(ax, diag, i, rb)
        for seg, colour, ls in ((box_segments([[0, 0, 1, 1]]), "#000000", "-"), (box_segments([rel]), "#CC79A7", "--")):
            ax.add_collection(LineCollection(seg, colors=colour, linestyles=ls, linewidths=1.5))
        lo = min(-0.3, *(v for v in rel)) if all(math.isfinite(v) for v in rel) else -0.3
        hi = max(1.3, *(v for v in rel)) if all(math.isfinite(v) for v in rel) else 1.3
        ax.set_xlim(max(lo, -3), min(hi, 4))
        ax.set_ylim(min(hi, 4), max(lo, -3))
        ax.set_aspect("equal", adjustable="box")
        ax.tick_params(labelsize=7)
        d = max(abs(c - r) for c, r in zip(cb, rb))
        ax.set_title(f"{title}\nmax |\u0394| {d:.3g} px, IoU {float(p['iou'][i]):.3f}", fontsize=8)
    if not order:
        axes[0].text(0.5, 0.5, "no matched pairs", ha="center", va="center")
    fig.suptitle("the pairs that differ most, in the reference box's frame (black: reference box; dashed purple: "
                 "candidate; masks: reference blue, candidate orange)", fontsize=9)
    return _png(fig)


def _draw_masks(ax: Any, diag: Any, i: int, rb: Sequence[float]) -> None:
    """Both masks of pair ``i`` (decoded, cropped), in the reference box's frame, when the files have them."""
    if diag.masks is None:
        return
    from explainer.diagnosis.result_masks import pair_evidence

    r, c = diag.masks["ref"][i], diag.masks["cand"][i]
    if r is None or c is None:
        return
    try:
        ev = pair_evidence(r, c)
    except ValueError:
        return
    w, h = max(rb[2] - rb[0], 1e-9), max(rb[3] - rb[1], 1e-9)
    y0, x0 = ev["origin"]
    a, b = ev["ref"].numpy(), ev["cand"].numpy()
    extent = ((x0 - rb[0]) / w, (x0 + a.shape[1] - rb[0]) / w, (y0 + a.shape[0] - rb[1]) / h, (y0 - rb[1]) / h)
    rgba = np.zeros(a.shape + (4,))
    rgba[a] = (0.0, 0.45, 0.70, 0.45)
    rgba[b & ~a] = (0.90, 0.62, 0.0, 0.6)
    rgba[a & ~b] = (0.0, 0.45, 0.70, 0.75)
    ax.imshow(rgba, extent=extent, interpolation="nearest")
    ax.text(0.02, 0.02, f"mask IoU {ev['iou']:.3f}\nboundary F {ev['boundary_f']:.3f}", transform=ax.transAxes,
            fontsize=7, va="bottom", bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))


# --------------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------------
def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, torch.Tensor):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in list(v)[:12]) + (", ..." if len(v) > 12 else "") + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in list(v.items())[:12]) + "}"
    return str(v)


def _figure(b64: str, alt: str, caption: str) -> str:
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def report_html(diag: Any, title: str = "Diagnosis of two result files", worst: int = WORST_PAIRS) -> str:
    """The diagnosis (:class:`explainer.diagnosis.Diagnosis`) as one self-contained HTML page."""
    rows = []
    for k, c in enumerate(diag.causes, 1):
        ev = "<br>".join(f"{html.escape(str(key))} = {html.escape(_value(v))}" for key, v in c.evidence.items())
        rows.append(f'<tr><td class="n">{k}</td><td><b>{html.escape(c.name)}</b></td><td class="n">{c.strength:.2f}</td>'
                    f'<td>{html.escape(c.explanation)}</td><td class="ev">{ev}</td><td>{html.escape(c.fix)}</td></tr>')
    head = (f"{diag.n_reference} reference and {diag.n_candidate} candidate detections over {diag.n_images} image(s); "
            f"{diag.n_matched} matched one to one (IoU \u2265 0.5 after {diag.alignment} alignment).")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style></head><body><main>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(head)}</p>"]
    parts += [f"<p class='note'>note: {html.escape(n)}</p>" for n in diag.notes]
    parts.append("<h2>Causes, strongest first</h2><table><tr><th>#</th><th>cause</th><th>strength</th>"
                 "<th>what the pairs show</th><th>evidence</th><th>fix</th></tr>" + "".join(rows) + "</table>")
    if diag.n_matched:
        parts.append("<h2>Residuals</h2>")
        parts.append(_figure(_histograms(diag.residuals), "histograms of the four coordinate residuals",
                             "Candidate - reference per box coordinate over the matched pairs. A spike at +1 on x2 "
                             "and y2 only is an inclusive corner; all four at +0.5 a half-pixel shift; spread without "
                             "a spike is numerical."))
        parts.append(_figure(_against_size(diag.residuals), "residuals against box size and FPN level",
                             "Residuals that grow with the box size point at a rescale; residuals that change with "
                             "the FPN level (stride) point at anchors or ROIAlign."))
        parts.append("<h2>The pairs that differ most</h2>")
        parts.append(_figure(_worst_pairs(diag, worst), "the most differing pairs with their masks",
                             "Each pair in its reference box's frame (the reference box is the unit square)."))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(diag: Any, path: Union[str, os.PathLike], title: str = "Diagnosis of two result files") -> Path:
    """Write :func:`report_html` to ``path`` atomically (a temporary file in the same folder, then a rename; the
    temporary file is removed on any failure). An existing file is replaced and keeps its permissions; a
    directory or an unwritable folder raises ``ValueError``."""
    from explainer._files import atomic_output

    p = Path(path)
    mode = None
    try:
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{p}: exists and is not a regular file; give the path of an .html file to write")
        mode = stat.S_IMODE(st.st_mode)
    except FileNotFoundError:
        if not p.parent.is_dir():
            raise ValueError(f"{p.parent}: no such folder (the report's folder must exist)") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot be written ({e.strerror})") from None
    page = report_html(diag, title).encode("utf-8")
    with atomic_output(p, mode) as f:
        f.write(page)
    return p
