"""Chapter 4 dashboards: where every ROIAlign sample lands (aligned False/True), the error against box size,
and ROIPool's quantization.

Drawing frame: continuous feature coordinates, feature cell (i, j) is the unit square [j, j+1) x [i, i+1) and
its value sits at its centre. The kernel addresses a cell's value at integer position i; a kernel position s is
therefore drawn at s + 0.5, so aligned=True samples land inside the box and aligned=False ones half a cell off.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.collections import LineCollection

from explainer import roi_align as R
from explainer.conventions import DETECTRON, DETECTRON2
from explainer.viz.draw import BoxArtist, PixelGrid, label_cells
from explainer.viz.style import STYLE, convention_style
from explainer.widgets.base import Dashboard, box_sliders, dropdown, html_table, int_slider, register, slider

D1 = convention_style("detectron")
D2 = convention_style("detectron2")
MAP = 8  # feature map side, in cells
FEATURE = R.ramp(MAP)  # value 10 y + x
SR = [("adaptive (0)", 0), ("1", 1), ("2", 2), ("3", 3)]
MAX_OUT = 4


def _r(a, n: int = 3):
    """A small array as nested lists of rounded Python floats, for read-outs."""
    return [[round(float(v), n) for v in row] for row in np.asarray(a, dtype=np.float64)]


def _cell_segments(x_edges, y_edges):
    return [[(x, y_edges[0]), (x, y_edges[-1])] for x in x_edges] + [[(x_edges[0], y), (x_edges[-1], y)] for y in y_edges]


@register
class ROIAlignSamplingDashboard(Dashboard):
    """A box on a feature map with value 10y + x: bins, samples and bilinear neighbours under both conventions."""

    title = "ROIAlign: where the samples land (feature value = 10 y + x, drawn at each cell's centre)"
    figsize = (9.4, 5.0)
    primary = "x2"
    torch_threads = 1

    def make_controls(self):
        return {
            **box_sliders(MAP, MAP, (1.0, 1.0, 3.0, 3.0), "box corner in feature cells (image pixels = cells x stride)"),
            "out": int_slider("output size", 1, MAX_OUT, 2, "pooled output is out x out bins"),
            "sr": dropdown("sampling_ratio", SR, 2, "samples per bin side; 0 = ceil(roi / output) (Detectron2's default)"),
            "sample": int_slider("selected sample", 0, 63, 0, "the sample whose four bilinear neighbours are drawn"),
            "stride": dropdown("level stride", [("1 (image)", 1), ("4 (P2)", 4), ("8 (P3)", 8), ("16 (P4)", 16)], 1,
                               "spatial_scale = 1 / stride: the box in image pixels is divided by it"),
        }

    def build(self, fig):
        self.panels = {}
        axes = fig.subplots(1, 2)
        for ax, (key, conv, s) in zip(axes, (("detectron", DETECTRON, D1), ("detectron2", DETECTRON2, D2))):
            aligned = conv.operator_flag("aligned")
            PixelGrid(ax, MAP, MAP, centres=False, labels=True, unit="feature cells")
            label_cells(ax, FEATURE[0, 0].numpy())
            box = BoxArtist(ax, "detectron2", label="the box x spatial_scale", fill_alpha=0.06, linewidth=1.5)
            box.rect.set_edgecolor(STYLE["reference"])
            bins = LineCollection([], colors=s["color"], linestyles=s["linestyle"], linewidths=1.3)
            ax.add_collection(bins)
            (pts,) = ax.plot([], [], "o", color=s["color"], ms=4)
            (bad,) = ax.plot([], [], "x", color=STYLE["difference"], ms=6, mew=1.5)
            (sel,) = ax.plot([], [], "o", mfc="none", mec=STYLE["reference"], ms=11, mew=1.5)
            nb = LineCollection([], colors=STYLE["accent"], linewidths=1.8)
            ax.add_collection(nb)
            wt = [ax.text(0, 0, "", fontsize=7.5, color=STYLE["reference"], bbox=dict(fc="w", ec="none", alpha=0.8, pad=0.5)) for _ in range(4)]
            ax.set_title(("aligned=False (Detectron, POOLER_TYPE ROIAlign)" if not aligned else
                          "aligned=True (Detectron2, ROIAlignV2)"), fontsize=9.5, color=s["color"])
            self.panels[key] = dict(ax=ax, box=box, bins=bins, pts=pts, bad=bad, sel=sel, nb=nb, wt=wt, aligned=aligned)
        from matplotlib.lines import Line2D
        handles = [self.panels["detectron2"]["box"].rect,
                   Line2D([], [], color=D1["color"], ls=D1["linestyle"], marker="o", ms=4, label="RoI, bins, samples: aligned=False"),
                   Line2D([], [], color=D2["color"], ls=D2["linestyle"], marker="o", ms=4, label="RoI, bins, samples: aligned=True"),
                   Line2D([], [], color=STYLE["difference"], ls="none", marker="x", label="sample outside the map (counts as 0)"),
                   Line2D([], [], color=STYLE["accent"], lw=1.8, label="bilinear neighbours of the selected sample (weights)")]
        fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)

    def compute(self, x1, y1, x2, y2, out, sr, sample, stride):
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box must have x2 >= x1 and y2 >= y1; got x1={x1}, x2={x2}, y1={y1}, y2={y2}")
        img_box = [v * stride for v in (x1, y1, x2, y2)]  # the box in image pixels
        scale = 1.0 / stride
        rois = torch.tensor([[0.0, *img_box]])
        res = {"img_box": img_box, "box": (x1, y1, x2, y2), "out": out, "sr": sr, "stride": stride, "sample": sample}
        for key, p in self.panels.items():
            sp = R.sampling_points(img_box, out, (MAP, MAP), spatial_scale=scale, sampling_ratio=sr, aligned=p["aligned"])
            pooled = R.roi_align(FEATURE, rois, out, spatial_scale=scale, sampling_ratio=sr, aligned=p["aligned"])[0, 0].numpy()
            note = R.sampling_grid_note(img_box, out, spatial_scale=scale, sampling_ratio=sr, aligned=p["aligned"])
            res[key] = (sp, pooled, note)
        return res

    def render(self, r):
        for key, p in self.panels.items():
            sp, pooled, _ = r[key]
            p["box"].set(r["box"])
            xe, ye = sp["x_edges"].numpy() + 0.5, sp["y_edges"].numpy() + 0.5
            p["bins"].set_segments(_cell_segments(xe, ye))
            pts = sp["points"].numpy() + 0.5
            ok = sp["valid"].numpy()
            p["pts"].set_data(pts[ok, 0], pts[ok, 1])
            p["bad"].set_data(pts[~ok, 0], pts[~ok, 1])
            if len(pts):
                i = min(r["sample"], len(pts) - 1)
                p["sel"].set_data([pts[i, 0]], [pts[i, 1]])
                nbs = sp["neighbours"][i].numpy() + 0.5
                ws = sp["weights"][i].numpy()
                p["nb"].set_segments([[(pts[i, 0], pts[i, 1]), (nx, ny)] for (nx, ny), w in zip(nbs, ws) if w > 0])
                for t, (nx, ny), w in zip(p["wt"], nbs, ws):
                    t.set_position((nx + 0.05, ny - 0.1))
                    t.set_text(f"{w:.2f}" if w > 0 else "")
            else:
                p["sel"].set_data([], [])
                p["nb"].set_segments([])
                for t in p["wt"]:
                    t.set_text("")

    def describe(self, r):
        sp1, p1, n1 = r["detectron"]
        sp2, p2, n2 = r["detectron2"]
        rows = [["RoI as sampled (feature cells)", [round(float(v), 3) for v in sp1["roi"]], [round(float(v), 3) for v in sp2["roi"]]],
                ["samples per bin (h x w), count", f"{sp1['grid'][0]} x {sp1['grid'][1]}, {sp1['count']}",
                 f"{sp2['grid'][0]} x {sp2['grid'][1]}, {sp2['count']}"],
                ["pooled output", _r(p1), _r(p2)],
                ["difference (False - True)", _r(p1 - p2), ""],
                ["why", n1["why"], n2["why"]]]
        head = f"box {[round(v, 2) for v in r['img_box']]} image px, spatial_scale 1/{r['stride']}"
        return html_table(rows, [head, "aligned=False", "aligned=True"])

    def bench_states(self):
        return [{"x2": v} for v in np.linspace(2.0, 7.0, 12)]


@register
class ROIAlignErrorDashboard(Dashboard):
    """How far aligned=False moves the sampling grid, in image pixels and relative to the box, by box size."""

    title = "The half-cell shift of aligned=False, in image pixels, for boxes of every size"
    figsize = (8.4, 3.8)
    primary = "box"

    def make_controls(self):
        return {"box": slider("box side (image px)", 4, 800, 1, 48, "side of a square box; its FPN level follows Detectron2's rule"),
                "levels": dropdown("pooled from", [("its FPN level (P2-P5)", "fpn"), ("P2 only", 2), ("P4 only (C4)", 4)], "fpn",
                                   "which feature map the box is pooled from")}

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        self.sizes = np.geomspace(4, 800, 300)
        self.lines = {}
        for key, label, color, ls in (("fpn", "its FPN level", D2["color"], "-"), (2, "P2 (stride 4)", STYLE["accent"], "--"),
                                      (4, "P4 (stride 16)", STYLE["difference"], ":")):
            y = self._shift_pct(self.sizes, key)
            (self.lines[key],) = self.ax.plot(self.sizes, y, color=color, ls=ls, lw=1.8, label=f"shift / box side, {label}")
        (self.mark,) = self.ax.plot([], [], "o", color=STYLE["reference"], ms=8)
        self.txt = self.ax.text(0, 0, "", fontsize=9)
        self.ax.set_xscale("log")
        self.ax.set_yscale("log")
        self.ax.set_xlim(4, 800)
        self.ax.set_ylim(0.1, 200)
        self.ax.set_xlabel("box side (image pixels)")
        self.ax.set_ylabel("sampling shift / box side (%)")
        self.ax.legend(loc="upper right", fontsize=8.5)
        self.ax.grid(True, which="both", alpha=0.3)

    @staticmethod
    def _levels(sizes, key):
        if key == "fpn":
            boxes = torch.tensor([[0.0, 0.0, float(s), float(s)] for s in np.atleast_1d(sizes)])
            return R.assign_fpn_levels(boxes).numpy()
        return np.full(np.atleast_1d(sizes).shape, key)

    @classmethod
    def _shift_pct(cls, sizes, key):
        stride = 2.0 ** cls._levels(sizes, key)
        return 100 * 0.5 * stride / np.atleast_1d(sizes)

    def compute(self, box, levels):
        lvl = int(self._levels(box, levels)[0])
        stride = 2.0 ** lvl
        shift = 0.5 * stride
        cells = box / stride
        # measured, not assumed: sample positions of both conventions for this box on its level
        b = [0.0, 0.0, float(box), float(box)]
        s_false = R.sampling_points(b, 7, (256, 256), spatial_scale=1.0 / stride, sampling_ratio=2, aligned=False)
        s_true = R.sampling_points(b, 7, (256, 256), spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)
        measured = float((s_false["points"] - s_true["points"]).mean(0)[0]) * stride if len(s_true["points"]) and len(s_false["points"]) else float("nan")
        clamped = cells < 1.0
        return dict(box=box, level=lvl, stride=stride, shift=shift, pct=100 * shift / box, cells=cells, measured=measured,
                    clamped=clamped, levels=levels)

    def render(self, r):
        self.mark.set_data([r["box"]], [r["pct"]])
        self.txt.set_position((r["box"] * 1.08, r["pct"] * 1.1))
        self.txt.set_text(f"P{r['level']}: {r['shift']:g} px = {r['pct']:.2g} %")
        for key, line in self.lines.items():
            line.set_linewidth(3.0 if key == r["levels"] else 1.4)

    def describe(self, r):
        rows = [["level, stride", f"P{r['level']}, {r['stride']:g} px"], ["box on the feature map", f"{r['cells']:.3g} cells"],
                ["grid shift of aligned=False (image px)", f"{r['shift']:g} (measured from the samples: {r['measured']:.3g})"],
                ["shift relative to the box side", f"{r['pct']:.3g} %"],
                ["min-size clamp applies (aligned=False)", "yes: the RoI is widened to 1 cell" if r["clamped"] else "no"]]
        return html_table(rows, [f"square box of side {r['box']:g} px", ""])


@register
class ROIPoolDashboard(Dashboard):
    """ROIPool's rounded box and integer bins against ROIAlign's exact bins on the same box."""

    title = "ROIPool quantizes; ROIAlign does not"
    figsize = (6.4, 5.0)
    primary = "x2"

    def make_controls(self):
        return {**box_sliders(MAP, MAP, (1.3, 1.6, 5.4, 4.7), "box corner in feature cells", step=0.1),
                "out": int_slider("output size", 1, 3, 2, "pooled output is out x out bins")}

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        PixelGrid(self.ax, MAP, MAP, centres=False, unit="feature cells")
        self.box = BoxArtist(self.ax, "detectron2", label="the box", fill_alpha=0.05, linewidth=1.5)
        self.box.rect.set_edgecolor(STYLE["reference"])
        self.pool = LineCollection([], colors=STYLE["difference"], linestyles="--", linewidths=2,
                                   label="ROIPool bins (rounded corners, +1, floor/ceil)")
        self.align = LineCollection([], colors=D2["color"], linewidths=1.5, label="ROIAlignV2 bins (exact)")
        self.ax.add_collection(self.pool)
        self.ax.add_collection(self.align)
        fig.legend(loc="outside lower center", ncol=2, fontsize=8.5)

    def compute(self, x1, y1, x2, y2, out):
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box must have x2 >= x1 and y2 >= y1; got x1={x1}, x2={x2}, y1={y1}, y2={y2}")
        rois = torch.tensor([[0.0, x1, y1, x2, y2]])
        pooled = R.roi_pool(FEATURE, rois, out)[0, 0].numpy()
        aligned = R.roi_align(FEATURE, rois, out, spatial_scale=1.0, sampling_ratio=0, aligned=True)[0, 0].numpy()
        pool = R.roi_pool_bins((x1, y1, x2, y2), out, (MAP, MAP))
        return dict(box=(x1, y1, x2, y2), out=out, pooled=pooled, aligned=aligned, bins=pool["bins"],
                    rounded=pool["rounded"])

    def render(self, r):
        self.box.set(r["box"])
        segs = []
        for a, b, c, d in r["bins"]:
            segs += [[(a, b), (c, b), (c, d), (a, d), (a, b)]]
        self.pool.set_segments(segs)
        x1, y1, x2, y2 = r["box"]
        o = r["out"]
        xe = np.linspace(x1, x2, o + 1)
        ye = np.linspace(y1, y2, o + 1)
        self.align.set_segments(_cell_segments(xe, ye))

    def describe(self, r):
        rows = [["ROIPool (max over whole cells)", _r(r["pooled"], 2), f"rounded box {r['rounded']} (+1 in size)"],
                ["ROIAlignV2 (average of bilinear samples)", _r(r["aligned"], 2), "exact box"]]
        return html_table(rows, ["", "output", "box used"])

    def bench_states(self):
        return [{"x2": v} for v in np.linspace(2.0, 7.9, 12)]
