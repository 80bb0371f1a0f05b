"""Chapter 3 dashboards: anchor grids over a photo per FPN level, and the quantization error."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from matplotlib.collections import LineCollection

from explainer import anchors as A
from explainer._validate import finite_number
from explainer.pixels import to_continuous
from explainer.viz.draw import box_segments, sample_photo
from explainer.viz.style import STYLE, convention_style
from explainer.widgets.base import Dashboard, dropdown, html_table, register, slider

D1 = convention_style("detectron")
D2 = convention_style("detectron2")
RATIO_SETS = [("0.5, 1, 2 (default)", (0.5, 1.0, 2.0)), ("1 only", (1.0,)), ("0.25, 0.5, 1, 2, 4", (0.25, 0.5, 1.0, 2.0, 4.0))]
SIZES = [("level default (32 at P2 ... 512 at P6)", 0.0), ("32", 32.0), ("64", 64.0), ("128", 128.0), ("256", 256.0), ("512", 512.0)]
ZOOM_CELLS = 9.0  # half-width of the zoom panel, in feature cells


@register
class AnchorGridDashboard(Dashboard):
    """Both anchor grids of one FPN level over a photo, and a zoom on one feature cell."""

    title = "Anchors of one level: Detectron (quantized, pixel indices) and Detectron2 (exact, OFFSET)"
    figsize = (9.2, 4.6)
    primary = "level"
    torch_threads = 1

    def make_controls(self):
        return {
            "level": dropdown("level", [(f"P{l} (stride {2 ** l})", l) for l in range(2, 7)], 4,
                              "FPN level: stride 2^level in image pixels"),
            "size": dropdown("anchor size (px)", SIZES, 0.0, "anchor size; by default the FPN size of the level"),
            "ratios": dropdown("aspect ratios (h/w)", [(n, i) for i, (n, _) in enumerate(RATIO_SETS)], 0,
                               "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS / FPN.RPN_ASPECT_RATIOS"),
            "offset": slider("Detectron2 OFFSET", 0.0, 0.95, 0.05, 0.0, "MODEL.ANCHOR_GENERATOR.OFFSET (config default 0.0)"),
        }

    def build(self, fig):
        img = sample_photo()
        self.H, self.W = img.shape[:2]
        self.centre_px = (300.0, 210.0)  # the face, in image pixels (x, y)
        self.ax, self.zx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1.0]})
        self.ax.imshow(img, extent=(0, self.W, self.H, 0), interpolation="nearest")
        self.grid = LineCollection([], colors="w", linewidths=0.4, alpha=0.55)
        self.ax.add_collection(self.grid)
        self.a1 = LineCollection([], colors=D1["color"], linestyles="--", linewidths=1.1, label="Detectron anchors")
        self.a2 = LineCollection([], colors=D2["color"], linestyles="-", linewidths=1.1, label="Detectron2 anchors")
        for c in (self.a1, self.a2):
            self.ax.add_collection(c)
        (self.c1,) = self.ax.plot([], [], "s", color=D1["color"], ms=4, label="Detectron centres")
        (self.c2,) = self.ax.plot([], [], "o", color=D2["color"], ms=3, label="Detectron2 centres")
        self.ax.set(xlim=(0, self.W), ylim=(self.H, 0), xlabel="x (image pixels)", ylabel="y (image pixels)")
        self.ax.set_title("3 x 3 feature locations over the photo; white: feature grid", fontsize=9.5)
        # zoom on one cell, in feature cells relative to the cell's top-left corner
        self.cell = LineCollection([], colors=STYLE["grid"], linewidths=0.8)
        self.zx.add_collection(self.cell)
        self.z1 = LineCollection([], colors=D1["color"], linestyles="--", linewidths=2, label="Detectron (rounded sizes)")
        self.z2 = LineCollection([], colors=D2["color"], linestyles="-", linewidths=1.6, label="Detectron2 (exact sizes)")
        for c in (self.z1, self.z2):
            self.zx.add_collection(c)
        (self.zc1,) = self.zx.plot([], [], "s", color=D1["color"], ms=8, mfc="none", mew=2, label="Detectron centre")
        (self.zc2,) = self.zx.plot([], [], "o", color=D2["color"], ms=6, label="Detectron2 centre")
        self.zx.set(xlim=(-ZOOM_CELLS + 0.5, ZOOM_CELLS + 0.5), ylim=(ZOOM_CELLS + 0.5, -ZOOM_CELLS + 0.5), aspect="equal",
                    xlabel="x (feature cells from the location; 1 cell = stride px)", ylabel="y (feature cells)")
        handles = [self.a1, self.a2, self.zc1, self.zc2]
        labels = ["Detectron (rounded sizes, pixel indices drawn as the pixels they cover)", "Detectron2 (exact sizes)",
                  "Detectron centre", "Detectron2 centre"]
        fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8.5)
        self.ztitle = self.zx.text(0.5, 0.02, "", transform=self.zx.transAxes, ha="center", fontsize=9,
                                   bbox=dict(facecolor="w", alpha=0.8, edgecolor="none"))

    def compute(self, level, size, ratios, offset):
        offset = finite_number(offset, "offset", minimum=0.0, maximum=0.95)
        size = finite_number(size, "size", minimum=0.0)
        stride = 2.0 ** level
        size = size or 32.0 * 2.0 ** (level - 2)
        rs = RATIO_SETS[ratios][1]
        det = to_continuous(A.detectron_cell_anchors(stride, (size,), rs)).numpy()
        d2 = A.d2_cell_anchors((size,), rs, dtype=torch.float64).numpy()
        # 3 x 3 feature locations around the face
        jx = int(self.centre_px[0] // stride)
        iy = int(self.centre_px[1] // stride)
        locs = [(iy + di, jx + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)]
        shifts = np.array([[j * stride, i * stride] * 2 for i, j in locs], dtype=np.float64)
        g1 = (shifts[:, None, :] + det[None]).reshape(-1, 4)  # Detectron: arange(W) * stride, no offset
        g2 = (shifts[:, None, :] + offset * stride + d2[None]).reshape(-1, 4)
        report = A.anchor_report(stride, (size,), rs)
        return dict(level=level, stride=stride, size=size, ratios=rs, offset=offset, det=det, d2=d2, g1=g1, g2=g2,
                    shifts=shifts, report=report, loc=(iy, jx))

    def render(self, r):
        s = r["stride"]
        xs = np.arange(0, self.W + 1, s)
        ys = np.arange(0, self.H + 1, s)
        if len(xs) + len(ys) > 400:  # very fine grids: every other line keeps the photo visible
            xs, ys = xs[::2], ys[::2]
        self.grid.set_segments([[(x, 0), (x, self.H)] for x in xs] + [[(0, y), (self.W, y)] for y in ys])
        self.a1.set_segments(box_segments(r["g1"]))
        self.a2.set_segments(box_segments(r["g2"]))
        c1 = (r["g1"][:, :2] + r["g1"][:, 2:]) / 2
        c2 = (r["g2"][:, :2] + r["g2"][:, 2:]) / 2
        self.c1.set_data(c1[:, 0], c1[:, 1])
        self.c2.set_data(c2[:, 0], c2[:, 1])
        # zoom: in feature cells, origin at the location's grid point (top-left corner of its cell)
        det, d2 = r["det"] / s, (r["d2"] + r["offset"] * s) / s
        self.z1.set_segments(box_segments(det))
        self.z2.set_segments(box_segments(d2))
        k = np.arange(-int(ZOOM_CELLS) - 1, int(ZOOM_CELLS) + 2)
        self.cell.set_segments([[(x, k[0]), (x, k[-1])] for x in k] + [[(k[0], y), (k[-1], y)] for y in k])
        cd = (det[:, :2] + det[:, 2:]) / 2
        cc = (d2[:, :2] + d2[:, 2:]) / 2
        self.zc1.set_data(cd[:, 0], cd[:, 1])
        self.zc2.set_data(cc[:, 0], cc[:, 1])
        too_big = r["size"] / s / 2 * max(max(np.sqrt(1 / a), np.sqrt(a)) for a in r["ratios"]) > ZOOM_CELLS
        self.ztitle.set_text(f"P{r['level']}: 1 cell = {s:g} px; size {r['size']:g} px" + ("  (anchors exceed the view)" if too_big else ""))

    def describe(self, r):
        rows = []
        for rep in r["report"]:
            d, e = rep["detectron"], rep["detectron2"]
            rows.append([f"{rep['size']:g} @ {rep['ratio']:g}", f"{d['w']:g} x {d['h']:g}", f"{e['w']:.2f} x {e['h']:.2f}",
                         f"{100 * (d['area'] / e['area'] - 1):+.2f} %", f"{d['aspect']:.4f} / {rep['ratio']:g}"])
        s = r["stride"]
        shift = 0.5 * s - r["offset"] * s
        note = (f"Centre of location (0, 0): Detectron pixel index {(s - 1) / 2:g} = continuous {s / 2:g}; Detectron2 "
                f"{r['offset'] * s:g} (OFFSET {r['offset']:g}). Detectron's centres lie {shift:+g} px in x and y from "
                f"Detectron2's" + (" (the same point)." if abs(shift) < 1e-9 else "."))
        return html_table(rows, ["size @ ratio", "Detectron w x h (px)", "Detectron2 w x h", "area error", "h/w actual / intended"]) + f"<div>{note}</div>"

    def bench_states(self):
        states = []
        for lv in (2, 3, 4, 5, 6):
            states += [{"level": lv, "offset": 0.0}, {"level": lv, "offset": 0.5}]
        return states


FPN = A.fpn_level_configs()
C4 = [A.c4_config()]


@lru_cache(maxsize=4)
def _quantization_rows(metric: str):
    """(name, relative error %, Detectron's value, intended value) for every FPN and C4 anchor."""
    rows = []
    for c in FPN + C4:
        for rep in A.anchor_report(c["stride"], c["sizes"], c["aspect_ratios"]):
            d, i = rep["detectron"], rep["intended"]
            rows.append((f"{c['name']} {rep['size']:g}@{rep['ratio']:g}", 100 * (d[metric] / i[metric] - 1), d[metric], i[metric]))
    return tuple(rows)


@register
class QuantizationDashboard(Dashboard):
    """Relative error of Detectron's anchor areas or aspect ratios, for every anchor of the FPN and C4 configurations."""

    title = "How far Detectron's rounded anchors are from their intended size and shape (FPN P2-P6 and C4)"
    figsize = (9.0, 3.9)
    primary = "metric"
    N_BARS = 30

    def make_controls(self):
        return {"metric": dropdown("measure", [("area", "area"), ("aspect ratio h/w", "aspect")], "area",
                                   "the quantity whose relative error is shown")}

    def build(self, fig):
        ax = self.ax = fig.add_subplot(1, 1, 1)
        names = [row[0] for row in _quantization_rows("area")]
        x = np.arange(len(names))
        self.bars = ax.bar(x, np.zeros(len(names)), 0.7, color=D1["color"], alpha=0.6, hatch=D1["hatch"],
                           edgecolor=D1["color"], label="Detectron (rounded)")
        ax.axhline(0, color=D2["color"], lw=2, label="Detectron2 (exact: 0 %)")
        ax.axvline(14.5, color=STYLE["neutral"], lw=1, ls=":")
        ax.set_xticks(x, names, rotation=90, fontsize=7.5)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylim(-8, 14)
        ax.set_ylabel("relative error (%)")
        ax.set_xlabel("anchor (level or C4, size in px @ aspect ratio h/w)")
        ax.legend(loc="upper right", fontsize=8.5)

    def compute(self, metric):
        return {"rows": _quantization_rows(metric), "metric": metric}

    def render(self, r):
        for b, row in zip(self.bars, r["rows"]):
            b.set_height(row[1])
        self.ax.set_title(f"relative error of the {'area' if r['metric'] == 'area' else 'aspect ratio h/w'} of each anchor",
                          fontsize=9.5)

    def describe(self, r):
        key = r["metric"]
        rows = [[name, f"{i:.4g}", f"{d:.4g}", f"{err:+.2f} %"] for name, err, d, i in r["rows"]]
        return html_table(rows, ["anchor", f"intended {key}", f"Detectron {key}", "error"])
