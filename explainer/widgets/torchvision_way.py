"""Chapter 13 dashboards: Detectron, Detectron2 and torchvision side by side (anchors, ROIAlign samples, mask paste)."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap

from explainer import anchors as A
from explainer import roi_align as R
from explainer import torchvision_way as TV
from explainer.conventions import DETECTRON, DETECTRON2, TORCHVISION
from explainer.masks import mask_iou
from explainer.pixels import to_inclusive
from explainer.viz.draw import BoxArtist, PixelGrid, box_segments
from explainer.viz.style import STYLE, convention_style
from explainer.widgets.base import Dashboard, box_sliders, dropdown, html_table, register, slider
from explainer.widgets.masks import MASK

PRESETS = (DETECTRON, DETECTRON2, TORCHVISION)
STYLES = {c.name: convention_style(c.name) for c in PRESETS}
SHORT = {c.name: STYLES[c.name]["short"] for c in PRESETS}
RATIO_SETS = [("0.5, 1, 2 (default)", (0.5, 1.0, 2.0)), ("1 only", (1.0,)), ("0.25, 0.5, 1, 2, 4", (0.25, 0.5, 1.0, 2.0, 4.0))]


@register
class AnchorsThreeWaysDashboard(Dashboard):
    """The cell anchors of one FPN level at one feature location, as each codebase makes them."""

    title = "One location's anchors three ways (dashed: Detectron, solid: Detectron2, dotted: torchvision)"
    figsize = (7.6, 4.4)
    primary = "level"
    torch_threads = 1

    def make_controls(self):
        return {
            "level": dropdown("level", [(f"P{lv} (stride {2 ** lv}, size {32 * 2 ** (lv - 2)})", lv) for lv in range(2, 7)],
                              2, "FPN level: stride 2^level, anchor size 32 * 2^(level - 2) image pixels"),
            "ratios": dropdown("aspect ratios (h/w)", [(n, i) for i, (n, _) in enumerate(RATIO_SETS)], 0,
                               "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS; torchvision's aspect_ratios"),
        }

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        self.lines = {}
        for c in PRESETS:
            st = STYLES[c.name]
            self.lines[c.name] = LineCollection([], colors=st["color"], linestyles=st["linestyle"], linewidths=1.6,
                                                label=st["short"])
            self.ax.add_collection(self.lines[c.name])
        self.centres = {c.name: self.ax.plot([], [], STYLES[c.name]["marker"], color=STYLES[c.name]["color"], ms=6,
                                             mfc="none", mew=1.5)[0] for c in PRESETS}
        (self.cell,) = self.ax.plot([], [], color=STYLE["grid"], lw=1.0, label="the feature cell")
        self.ax.set_aspect("equal")
        self.ax.set(xlabel="x (image pixels from the location's grid point)", ylabel="y (image pixels)")
        self.ax.legend(loc="upper right", fontsize=8.5)

    def compute(self, level, ratios):
        stride = 2.0 ** level
        size = 32.0 * 2.0 ** (level - 2)
        rs = RATIO_SETS[ratios][1]
        out = {}
        for c in PRESETS:
            cell = A.cell_anchors(stride, (size,), rs, c, dtype=torch.float64) + c.anchor_offset * stride
            out[c.name] = cell.numpy()
        return dict(level=level, stride=stride, size=size, ratios=rs, anchors=out)

    def render(self, r):
        s = r["stride"]
        for name, a in r["anchors"].items():
            self.lines[name].set_segments(box_segments(a))
            c = (a[:, :2] + a[:, 2:]) / 2
            self.centres[name].set_data(c[:, 0], c[:, 1])
        self.cell.set_data([0, s, s, 0, 0], [0, 0, s, s, 0])
        half = max(float(np.abs(a).max()) for a in r["anchors"].values()) * 1.08
        self.ax.set(xlim=(-half, half), ylim=(half, -half))
        self.ax.set_title(f"P{r['level']}: stride {s:g} px, size {r['size']:g} px; rows in each codebase's order",
                          fontsize=9.5)

    def describe(self, r):
        rows = []
        for k, ratio in enumerate(r["ratios"]):   # one size: row k is ratio k in both row orders
            cells = [f"{r['size']:g} @ {ratio:g}"]
            for c in PRESETS:
                a = r["anchors"][c.name]
                w, h = a[k, 2] - a[k, 0], a[k, 3] - a[k, 1]
                cx = (a[k, 0] + a[k, 2]) / 2
                cells.append(f"{w:.2f} x {h:.2f}, centre {cx:g}")
            rows.append(cells)
        return html_table(rows, ["size @ ratio"] + [f"{SHORT[c.name]} w x h (px)" for c in PRESETS])


def _levels(box):
    b = torch.tensor([box], dtype=torch.float64)
    d1 = int(R.assign_fpn_levels(to_inclusive(b), legacy_plus_one=True)[0])
    d2 = int(R.assign_fpn_levels(b)[0])
    tv = int(TV.level_mapper(b.float(), 2, 5)[0]) + 2
    return {"detectron": d1, "detectron2": d2, "torchvision": tv}


@register
class RoIAlignThreeWaysDashboard(Dashboard):
    """Where ROIAlign samples one box's 2 x 2 bins on a stride-16 feature map, in each codebase's setting."""

    title = "ROIAlign's sample points three ways (one box, 2 x 2 bins, stride 16)"
    figsize = (7.6, 4.6)
    primary = "x2"
    torch_threads = 1
    STRIDE = 16.0
    FEAT = (6, 8)

    def make_controls(self):
        return box_sliders(self.FEAT[1] * self.STRIDE, self.FEAT[0] * self.STRIDE, (20.0, 14.0, 70.0, 55.0),
                           "box corner in image pixels (continuous coordinates)", step=1.0)

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        PixelGrid(self.ax, self.FEAT[1], self.FEAT[0], centres=True)
        self.box = BoxArtist(self.ax, "detectron2", label="the box / 16", fill_alpha=0.0, linewidth=1.2)
        self.box.rect.set_edgecolor(STYLE["reference"])
        self.points = {}
        for c in PRESETS:
            st = STYLES[c.name]
            size = {"detectron": 9, "detectron2": 5, "torchvision": 4}[c.name]
            (self.points[c.name],) = self.ax.plot([], [], st["marker"], color=st["color"], ms=size, mfc="none", mew=1.4,
                                                  label=f"{st['short']} samples")
        self.ax.set(xlabel="x (feature cells)", ylabel="y (feature cells)")
        self.ax.legend(loc="upper right", fontsize=8)

    def compute(self, x1, y1, x2, y2):
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise ValueError(f"box must be at least 1 px wide and high; got {x2 - x1:g} x {y2 - y1:g}")
        box = [x1, y1, x2, y2]
        pts = {}
        for c in PRESETS:
            sp = R.sampling_points(box, 2, self.FEAT, 1.0 / self.STRIDE, c.sampling_ratio, c.roi_aligned)
            pts[c.name] = sp["points"].numpy()
        same = pts["detectron"].shape == pts["torchvision"].shape and bool(np.allclose(pts["detectron"], pts["torchvision"]))
        return dict(box=box, points=pts, same=same, levels=_levels(box))

    def render(self, r):
        for name, p in r["points"].items():
            self.points[name].set_data(p[:, 0], p[:, 1])
        self.box.set([v / self.STRIDE for v in r["box"]])

    def describe(self, r):
        rows = []
        for c in PRESETS:
            p = np.asarray(r["points"][c.name]) * self.STRIDE           # feature cells to image pixels
            span = f"{p[:, 0].min():.2f} to {p[:, 0].max():.2f}" if len(p) else "none"
            rows.append([SHORT[c.name], f"aligned={c.roi_aligned}, sampling_ratio={c.sampling_ratio}",
                         len(p), span, f"P{r['levels'][c.name]}"])
        x1, y1, x2, y2 = r["box"]
        note = (f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) image pixels; "
                + ("torchvision samples exactly where Detectron does." if r["same"]
                   else "torchvision's samples differ from Detectron's."))
        return (html_table(rows, ["codebase", "ROIAlign", "samples", "samples' x (image px)", "FPN level"])
                + f"<div>{note}</div>")

    def bench_states(self):
        return [{"x2": v} for v in (40.0, 60.0, 80.0, 100.0, 120.0)]


THREE_CMAP = ListedColormap(["#FFFFFF", str(STYLE["grid"])])
H, W = 22, 28


@register
class MaskPasteThreeWaysDashboard(Dashboard):
    """The chapter 6 mask pasted by the three codebases for the same continuous box."""

    title = "One mask pasted three ways (outline: each codebase's pixels; grey: all three agree)"
    figsize = (7.6, 4.8)
    primary = "x2"
    torch_threads = 1

    def make_controls(self):
        c = box_sliders(W, H, (4.3, 3.7, 22.8, 17.2), "box corner in image pixels (continuous coordinates)", step=0.1)
        c["threshold"] = slider("threshold", 0.05, 0.95, 0.05, 0.5, "the mask threshold (0.5 in all three)")
        return c

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        self.im = self.ax.imshow(np.zeros((H, W)), cmap=THREE_CMAP, vmin=0, vmax=1, extent=(0, W, H, 0),
                                 interpolation="nearest", zorder=0)
        PixelGrid(self.ax, W, H, centres=False)
        self.outlines = {}
        for c in PRESETS:
            st = STYLES[c.name]
            self.outlines[c.name] = LineCollection([], colors=st["color"], linestyles=st["linestyle"], linewidths=2.0,
                                                   label=st["short"])
            self.ax.add_collection(self.outlines[c.name])
        self.box = BoxArtist(self.ax, "detectron2", label="the box", fill_alpha=0.0, linewidth=1.0)
        self.box.rect.set_edgecolor(STYLE["reference"])
        self.ax.legend(loc="lower right", fontsize=8)

    def compute(self, x1, y1, x2, y2, threshold):
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise ValueError(f"box must be at least 1 px wide and high; got {x2 - x1:.2g} x {y2 - y1:.2g}")
        box = [x1, y1, x2, y2]
        masks = TV.paste_three_ways(MASK, box, (H, W), threshold)
        agree = (masks["detectron"] & masks["detectron2"] & masks["torchvision"]).numpy()
        return dict(box=box, masks=masks, agree=agree)

    def render(self, r):
        self.im.set_data(r["agree"].astype(float))
        for name, m in r["masks"].items():
            self.outlines[name].set_segments(_outline(m.numpy()))
        self.box.set(r["box"])

    def describe(self, r):
        m = r["masks"]
        rows = [[SHORT[c.name], int(m[c.name].sum()), f"{float(mask_iou(m[c.name], m['detectron2'])):.3f}",
                 f"{float(mask_iou(m[c.name], m['detectron'])):.3f}"] for c in PRESETS]
        return html_table(rows, ["codebase", "pixels on", "IoU with Detectron2", "IoU with Detectron"])

    def bench_states(self):
        return [{"x2": v} for v in np.linspace(15.0, 27.0, 12)]


def _outline(mask: np.ndarray) -> list:
    """The edges between on and off pixels of a boolean mask, as line segments in pixel coordinates."""
    p = np.pad(mask, 1)
    segs = []
    ys, xs = np.nonzero(p[1:, 1:-1] != p[:-1, 1:-1])      # horizontal edges at y
    segs += [[(x, y), (x + 1, y)] for y, x in zip(ys, xs)]
    ys, xs = np.nonzero(p[1:-1, 1:] != p[1:-1, :-1])      # vertical edges at x
    segs += [[(x, y), (x, y + 1)] for y, x in zip(ys, xs)]
    return segs
