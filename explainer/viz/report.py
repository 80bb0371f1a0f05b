"""A diagnosis as one self-contained HTML page: the ranked causes with their evidence and fix, and its figures.

:func:`write_report` is what ``python -m explainer diagnose ref.json cand.json --html report.html`` calls. The page
needs no network to be viewed: its CSS is inline and its figures are PNG images inside the page (``data:`` URLs),
drawn with matplotlib's Agg canvas on a :class:`matplotlib.figure.Figure` (no pyplot, so no backend is chosen
or changed). matplotlib is imported inside the functions that draw, so importing this module costs nothing.
The file is written atomically: a temporary file in the same folder, renamed onto the target; on any failure
the temporary file is removed and the target is left as it was.

Figures: the four coordinate residuals (candidate - reference) as histograms on a symmetric log axis; the
residuals against the reference box's size and its FPN level; the pairs that differ most, each in its
reference box's frame, with both masks when the files have them. With an AP cost (``diagnose(..., gt=...)``, or
agreement AP): per task a table of AP for every variant, the dAP of each cause as a bar chart, the precision-recall
curves of the reference, the candidate and all fixed, a per-class table, and a gallery of the images that lose the
most, drawn over the image files (``images``: their folder) or over a blank canvas.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import stat
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

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


def _figure(b64: str, alt: str, caption: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return (f'<figure{klass}><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


# -- what each cause costs in AP ------------------------------------------------------------------------------------
#: The variants' colours and line styles, the same in the curves and the gallery (never colour alone).
_VARIANTS = (("reference", "#0072B2", "-"), ("candidate", "#D55E00", "--"), ("all_fixed", "#009E73", ":"))


def _dap_bars(tc: Any, label: str) -> str:
    from matplotlib.figure import Figure

    dap = tc.dap()
    names = list(dap) + ["all_fixed"]
    vals = [100 * v for v in dap.values()] + [100 * tc.explained()["recovered"]]
    fig = Figure(figsize=(8.5, 0.5 + 0.42 * len(names)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(names))[::-1]
    ax.barh(y, vals, color=["#0072B2"] * (len(names) - 1) + ["#009E73"], hatch=[""] * (len(names) - 1) + ["//"])
    for yi, v in zip(y, vals):
        ax.text(v, yi, f" {v:+.1f}", va="center", ha="left" if v >= 0 else "right", fontsize=8)
    ax.set_yticks(y, [n.replace("all_fixed", "all causes undone") for n in names])
    ax.axvline(0, color="#444", linewidth=0.8)
    ax.set_xlabel(f"d{label} (points, 0-100): the candidate's {label} gained by undoing the cause")
    return _png(fig)


def _pr_figure(tc: Any) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    recall = np.linspace(0, 1, 101)
    for v, colour, ls in _VARIANTS:
        ax.plot(recall, tc.pr_curves()[v], color=colour, linestyle=ls, linewidth=1.8,
                label=f"{v.replace('_', ' ')} (AP50 {100 * (tc.metrics(v)['AP50'] or 0):.1f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (IoU 0.5, mean over categories)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    return _png(fig)


def _read_image(folder: Any, name: Any) -> Any:
    if folder is None or not name:
        return None
    p = Path(folder) / str(name)
    if not p.is_file():
        return None
    import matplotlib.image as mpimg

    try:
        return mpimg.imread(p)
    except (OSError, ValueError, SyntaxError):
        return None


def _gallery(rows: Sequence[Dict[str, Any]], images: Any) -> str:
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    cols = min(4, len(rows))
    nrows = (len(rows) + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 2.8 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols)).reshape(-1)
    for ax, row in zip(axes, rows):
        h, w = row["height"], row["width"]
        img = _read_image(images, row["file_name"])
        if img is not None:
            ax.imshow(img, extent=(0, img.shape[1], img.shape[0], 0), interpolation="nearest")
        else:
            ax.imshow(np.full((2, 2, 3), 0.96), extent=(0, w, h, 0))
        for b in row["gt"].tolist():
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="#444", linewidth=2.2,
                                   alpha=0.5))
        for v, colour, ls in _VARIANTS[:2]:
            for b in row[v].tolist():
                if all(math.isfinite(x) for x in b):
                    ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color=colour,
                                           linestyle=ls, linewidth=1.0))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(f"image {str(row['image_id'])[:24]}: {row['lost']} lost", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    return _png(fig)


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _ap_section(ap: Any, images: Any) -> List[str]:
    label = ap.label
    parts = [f"<h2 id='ap'>What each cause costs ({html.escape(label)})</h2>",
             f"<p>Measured with COCOeval (pycocotools) against {html.escape(ap.truth)}"
             + (": <b>agreement AP</b>, how well the candidate reproduces the reference, not accuracy."
                if ap.agreement else ".") + " Points are AP x 100.</p>"]
    for task, tc in ap.tasks.items():
        rows = "".join(f"<tr><td>{html.escape(v.replace('_', ' '))}</td>"
                       + "".join(f"<td class='n'>{_num(tc.metrics(v)[m])}</td>" for m in ("AP", "AP50", "AP75", "APs",
                                                                                        "APm", "APl")) + "</tr>"
                       for v in ["reference", "candidate"] + tc.causes + ["all_fixed"])
        parts.append(f"<h3>{html.escape(task)}</h3><table class='ap'><tr><th>variant</th><th>{html.escape(label)}</th>"
                     f"<th>50</th><th>75</th><th>small</th><th>medium</th><th>large</th></tr>{rows}</table>")
        e = tc.explained()
        if e["share"] is not None:
            parts.append(f"<p>The causes undone explain {e['share']:.0%} of the {100 * e['gap']:.1f}-point gap; "
                         f"{100 * e['unexplained']:.1f} points remain unexplained.</p>")
        parts += [f"<p class='note'>{html.escape(k)} cannot be undone: {html.escape(why)}</p>"
                  for k, why in tc.cannot_undo.items()]
        parts.append(_figure(_dap_bars(tc, label), f"d{label} of each cause, a bar chart",
                             f"The {label} the candidate gains when each cause alone is undone from its fitted "
                             f"parameters, and when all are (hatched)."))
        parts.append(_figure(_pr_figure(tc), "precision-recall curves of the reference, the candidate and all fixed",
                             "Precision against recall at IoU 0.5, averaged over the categories."))
        cats = tc.by_category()
        body = "".join(f"<tr><td>{html.escape(str(r['name']))}</td><td class='n'>{_num(r['reference'])}</td>"
                       f"<td class='n'>{_num(r['candidate'])}</td><td class='n'>{_num(r['all_fixed'])}</td>"
                       f"<td class='n'>{100 * r['loss']:+.1f}</td><td class='n'>{100 * r['dAP']['all_fixed']:+.1f}</td>"
                       f"</tr>" for r in cats)
        parts.append(f"<table class='per-class'><tr><th>category</th><th>reference</th><th>candidate</th>"
                     f"<th>all fixed</th><th>lost</th><th>recovered</th></tr>{body}</table>")
        if task == "bbox":
            rows_g = ap.gallery(task)
            if rows_g:
                parts.append("<h3>The images that lose the most</h3>")
                parts.append(_figure(_gallery(rows_g, images), "gallery of the images that lose the most",
                                     "Ground truth thick grey, reference solid blue, candidate dashed orange; over the "
                                     "image when its file is given, a blank canvas otherwise. 'lost': objects the "
                                     "reference finds at IoU 0.5 and the candidate does not.", cls="gallery"))
    parts += [f"<p class='note'>{html.escape(t)}: not measured ({html.escape(w)})</p>" for t, w in ap.skipped.items()]
    return parts


def report_html(diag: Any, title: str = "Diagnosis of two result files", worst: int = WORST_PAIRS,
                images: Any = None) -> str:
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
    if getattr(diag, "ap", None) is not None:
        parts += _ap_section(diag.ap, images)
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(diag: Any, path: Union[str, os.PathLike], title: str = "Diagnosis of two result files",
                 images: Union[str, os.PathLike, None] = None) -> Path:
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
    page = report_html(diag, title, images=images).encode("utf-8")
    with atomic_output(p, mode) as f:
        f.write(page)
    return p
