"""Chapter 1 dashboards: a box on a pixel grid, resizing, and flipping, under both pixel models."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.patches import Polygon

from explainer import pixels
from explainer.viz.draw import BoxArtist, PixelGrid
from explainer.viz.style import STYLE, convention_style
from explainer.widgets.base import Dashboard, box_sliders, checkbox, dropdown, html_table, int_slider, register

D1 = convention_style("detectron")
D2 = convention_style("detectron2")


@register
class PixelBoxDashboard(Dashboard):
    """One set of four numbers (x1, y1, x2, y2) read as Detectron's pixel indices and as Detectron2's coordinates."""

    title = "The same four numbers, two pixel models"
    figsize = (7.6, 4.6)
    primary = "x2"

    def make_controls(self):
        return {
            **box_sliders(12, 9, (2.0, 2.0, 6.0, 5.0),
                          "corner of the box, in image pixels; Detectron reads it as a pixel index, Detectron2 as a coordinate"),
            "zoom": dropdown("view", [("whole image (12 x 9 px)", 0), ("zoom on the box", 1)], 0,
                             "zoom the view on the box (the toolbar's magnifier also zooms)"),
        }

    def build(self, fig):
        ax = self.ax = fig.add_subplot(1, 1, 1)
        self.W, self.H = 12, 9
        self.grid = PixelGrid(ax, self.W, self.H)
        self.cover = ax.imshow(np.zeros((self.H, self.W)), extent=(0, self.W, self.H, 0), cmap="Greys", vmin=0, vmax=2.5,
                               alpha=0.6, zorder=0, interpolation="nearest")
        self.b1 = BoxArtist(ax, "detectron", inclusive=True, label="Detectron: pixels x1..x2 (width x2-x1+1)")
        self.b2 = BoxArtist(ax, "detectron2", inclusive=False, label="Detectron2: [x1, x2) (width x2-x1)")
        (self.c1,) = ax.plot([], [], linestyle="none", marker="s", markersize=8, color=D1["color"], label="Detectron centre")
        (self.c2,) = ax.plot([], [], linestyle="none", marker="o", markersize=7, color=D2["color"], mfc="none", mew=2,
                             label="Detectron2 centre")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
        ax.set_title("grey: pixels covered by the Detectron2 box (darker = more)", fontsize=10)

    def compute(self, x1, y1, x2, y2, zoom):
        box = [x1, y1, x2, y2]
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box must have x2 >= x1 and y2 >= y1; got x1={x1}, x2={x2}, y1={y1}, y2={y2}")
        both = pixels.compare_box(box)
        cov = pixels.pixel_coverage(box, (self.H, self.W)).numpy()
        inc = pixels.pixel_coverage(box, (self.H, self.W), inclusive=True).numpy()
        return {"box": box, "both": both, "coverage": cov, "inclusive_coverage": inc, "zoom": zoom}

    def render(self, r):
        box = r["box"]
        self.b1.set(box)
        self.b2.set(box)
        self.cover.set_data(r["coverage"])
        self.c1.set_data([r["both"]["detectron"]["centre"][0]], [r["both"]["detectron"]["centre"][1]])
        self.c2.set_data([r["both"]["detectron2"]["centre"][0]], [r["both"]["detectron2"]["centre"][1]])
        if r["zoom"]:
            x1, y1, x2, y2 = box
            self.grid.set_view(x1 - 1.5, x2 + 2.5, y1 - 1.5, y2 + 2.5)
        else:
            self.grid.set_view(-0.5, self.W + 0.5, -0.5, self.H + 0.5)

    def describe(self, r):
        d1, d2 = r["both"]["detectron"], r["both"]["detectron2"]
        n_inc = int(r["inclusive_coverage"].sum())
        rows = [
            ["width (px)", d1["width"], d2["width"], d1["width"] - d2["width"]],
            ["height (px)", d1["height"], d2["height"], d1["height"] - d2["height"]],
            ["area (px²)", d1["area"], d2["area"], d1["area"] - d2["area"]],
            ["centre x", d1["centre"][0], d2["centre"][0], d1["centre"][0] - d2["centre"][0]],
            ["centre y", d1["centre"][1], d2["centre"][1], d1["centre"][1] - d2["centre"][1]],
            ["covers (continuous)", "[{:g}, {:g}) x [{:g}, {:g})".format(*[d1["continuous_extent"][i] for i in (0, 2, 1, 3)]),
             "[{:g}, {:g}) x [{:g}, {:g})".format(*[d2["continuous_extent"][i] for i in (0, 2, 1, 3)]), ""],
        ]
        note = (f"Box ({', '.join(f'{v:g}' for v in r['box'])}). Detectron covers {n_inc} whole pixels; "
                f"Detectron2's box covers {float(r['coverage'].sum()):g} px² of the grid.")
        return html_table(rows, ["", "Detectron", "Detectron2", "difference"]) + f"<div>{note}</div>"

    def bench_states(self):
        return [{"x2": v} for v in np.linspace(3.0, 11.0, 12)]


@register
class ResizeDashboard(Dashboard):
    """Where input pixels land after a resize, per coordinate mode, and what happens to a box's far edge."""

    title = "Resizing: where each input pixel centre lands"
    figsize = (8.4, 4.2)
    primary = "out_size"

    def make_controls(self):
        return {
            "in_size": int_slider("input width (px)", 2, 12, 6, "width of the input row, in pixels"),
            "out_size": int_slider("output width (px)", 2, 16, 9, "width of the resized row, in pixels"),
            "mode": dropdown("mode", [("half_pixel (align_corners=False, PIL, OpenCV)", "half_pixel"),
                                      ("align_corners=True", "align_corners"),
                                      ("asymmetric (TF1 default)", "asymmetric")], "half_pixel",
                             "how output pixel centres are mapped to input coordinates"),
            "box_x1": int_slider("box first pixel", 0, 11, 1, "the box's first input pixel (inclusive index)"),
            "box_x2": int_slider("box last pixel", 0, 11, 3, "the box's last input pixel (inclusive index)"),
        }

    def build(self, fig):
        ax = self.ax = fig.add_subplot(1, 1, 1)
        self.cells_in = LineCollection([], colors=STYLE["grid"], linewidths=1.0)
        self.cells_out = LineCollection([], colors=STYLE["grid"], linewidths=1.0)
        self.links = LineCollection([], colors=STYLE["accent"], linewidths=1.4, label="input centre -> where the mode puts it")
        for c in (self.cells_in, self.cells_out, self.links):
            ax.add_collection(c)
        (self.cin,) = ax.plot([], [], "o", color=STYLE["reference"], ms=5, label="input pixel centres (i + 0.5) s")
        (self.cout,) = ax.plot([], [], "|", color=STYLE["reference"], ms=12, mew=2, label="output pixel centres")
        self.box_d1 = BoxArtist(ax, "detectron", inclusive=False, label="Detectron box: inclusive indices x im_scale")
        self.box_d2 = BoxArtist(ax, "detectron2", inclusive=False, label="Detectron2 box: coordinates x scale")
        self.box_in = BoxArtist(ax, "detectron2", inclusive=False, label="_nolegend_", linewidth=1.0, fill_alpha=0.05)
        self.box_in.rect.set_linestyle(":")
        ax.set_yticks([-0.7, -0.25, 0.5, 2.5], ["Detectron box", "Detectron2 box", "output row", "input row (x s)"])
        ax.set_xlabel("x in output pixels (continuous: output pixel j covers [j, j+1))")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8.5)
        self.ax.set_ylim(3.3, -1.1)

    def compute(self, in_size, out_size, mode, box_x1, box_x2):
        if box_x2 < box_x1:
            raise ValueError(f"box last pixel ({box_x2}) must be >= box first pixel ({box_x1})")
        if box_x2 >= in_size:
            raise ValueError(f"box last pixel ({box_x2}) must be inside the input row (0..{in_size - 1})")
        s = out_size / in_size
        idx = torch.arange(in_size, dtype=torch.float64)
        lands = pixels.resize_index(idx, in_size, out_size, mode=mode).numpy()
        # the same box under both models, resized
        inc = torch.tensor([[box_x1, 0.0, box_x2, 0.0]], dtype=torch.float64)
        d1 = pixels.to_continuous(pixels.scale_boxes(inc, s, legacy_plus_one=True))[0].numpy()
        d2 = pixels.scale_boxes(pixels.to_continuous(inc), s)[0].numpy()
        shift = lands - ((idx.numpy() + 0.5) * s - 0.5)
        return {"in": in_size, "out": out_size, "s": s, "lands": lands, "d1": d1, "d2": d2, "shift": shift, "mode": mode,
                "box": (box_x1, box_x2)}

    def render(self, r):
        n, m, s = r["in"], r["out"], r["s"]
        yi, yo = 2.0, 0.0  # rows: input at y in [2, 3], output at [0, 1]
        self.cells_in.set_segments([((i * s, yi), (i * s, yi + 1)) for i in range(n + 1)] + [((0, yi), (n * s, yi)), ((0, yi + 1), (n * s, yi + 1))])
        self.cells_out.set_segments([((j, yo), (j, yo + 1)) for j in range(m + 1)] + [((0, yo), (m, yo)), ((0, yo + 1), (m, yo + 1))])
        centres_in = (np.arange(n) + 0.5) * s
        self.cin.set_data(centres_in, np.full(n, yi + 0.5))
        self.cout.set_data(np.arange(m) + 0.5, np.full(m, yo + 0.5))
        self.links.set_segments([((ci, yi + 0.5), (l + 0.5, yo + 0.5)) for ci, l in zip(centres_in, r["lands"])])
        d1, d2 = r["d1"], r["d2"]
        self.box_d1.set([d1[0], -0.9, d1[2], -0.5])
        self.box_d2.set([d2[0], -0.45, d2[2], -0.05])
        self.box_in.set([d2[0], yi, d2[2], yi + 1])  # the input pixels b1..b2 scaled: Detectron2's box
        self.ax.set_xlim(-0.3, 16.3)  # fixed: a limit change would force a full redraw
        self.ax.set_title(f"scale s = {m}/{n} = {s:.3g}; mode {r['mode']}", fontsize=10)

    def describe(self, r):
        sh = r["shift"]
        d1, d2 = r["d1"], r["d2"]
        rows = [
            ["content shift vs half_pixel (output px)", f"{sh.min():+.3g} .. {sh.max():+.3g}"],
            ["Detectron box after resize (covers)", f"[{d1[0]:.4g}, {d1[2]:.4g})"],
            ["Detectron2 box after resize", f"[{d2[0]:.4g}, {d2[2]:.4g})"],
            ["far-edge error of Detectron (px) = 1 - s", f"{d1[2] - d2[2]:+.4g}"],
        ]
        return html_table(rows, ["", "value"])

    def bench_states(self):
        return [{"out_size": v} for v in range(3, 17)]


@register
class FlipDashboard(Dashboard):
    """Horizontal flip of a box, a polygon and a keypoint under W - x and W - x - 1."""

    title = "Horizontal flip: W - x (coordinates) against W - x - 1 (pixel indices)"
    figsize = (8.4, 4.4)
    primary = "kp_x"

    def make_controls(self):
        return {
            "width": int_slider("image width W (px)", 8, 20, 12, "width of the image in pixels"),
            "box_x1": int_slider("box first pixel", 0, 19, 1, "first pixel column of the box (inclusive index)"),
            "box_x2": int_slider("box last pixel", 0, 19, 3, "last pixel column of the box (inclusive index)"),
            "kp_x": int_slider("keypoint pixel", 0, 19, 2, "pixel column of the keypoint (COCO stores pixel indices)"),
            "show_original": checkbox("show the unflipped objects", True, "draw the objects before flipping (dotted)"),
        }

    def build(self, fig):
        ax = self.ax = fig.add_subplot(1, 1, 1)
        self.H = 7
        self.grid = PixelGrid(ax, 12, self.H, centres=False)
        self.orig_box = BoxArtist(ax, "detectron2", inclusive=False, label="original box / polygon / keypoint (dotted)",
                                  linewidth=1.0, fill_alpha=0.0)
        self.orig_box.rect.set_edgecolor(STYLE["neutral"])
        self.orig_box.rect.set_linestyle(":")
        # compute() returns both flipped boxes as continuous extents, so neither adds +1 when drawn
        self.box1 = BoxArtist(ax, "detectron", inclusive=False, label="Detectron flip, box (W-1-x on indices)")
        self.box2 = BoxArtist(ax, "detectron2", inclusive=False, label="Detectron2 flip, box (W-x on coordinates)")
        kw = dict(fill=False, linewidth=2)
        self.orig_poly = Polygon(np.zeros((3, 2)), closed=True, fill=False, edgecolor=STYLE["neutral"], linestyle=":", linewidth=1)
        self.poly1 = Polygon(np.zeros((3, 2)), closed=True, edgecolor=D1["color"], linestyle=D1["linestyle"],
                             label="Detectron flip, polygon (W-1-x: 1 px off)", **kw)
        self.poly2 = Polygon(np.zeros((3, 2)), closed=True, edgecolor=D2["color"], linestyle=D2["linestyle"],
                             label="Detectron2 flip, polygon (W-x)", **kw)
        for p in (self.orig_poly, self.poly1, self.poly2):
            ax.add_patch(p)
        (self.kp0,) = ax.plot([], [], "x", color=STYLE["neutral"], ms=9)
        (self.kp1,) = ax.plot([], [], "s", color=D1["color"], ms=10, mfc="none", mew=2, label="Detectron keypoint (W-1-x)")
        (self.kp2,) = ax.plot([], [], "o", color=D2["color"], ms=6, label="Detectron2 keypoint (+0.5, W-x, -0.5)")
        (self.mirror,) = ax.plot([], [], color=STYLE["reference"], lw=1, ls="-.", label="mirror axis x = W/2")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8.5)

    def compute(self, width, box_x1, box_x2, kp_x, show_original):
        if box_x2 < box_x1:
            raise ValueError(f"box last pixel ({box_x2}) must be >= box first pixel ({box_x1})")
        if box_x2 >= width or kp_x >= width:
            raise ValueError(f"box and keypoint must lie inside the image: pixel columns 0..{width - 1}")
        box_inc = torch.tensor([[box_x1, 1.0, box_x2, 3.0]], dtype=torch.float64)
        box_cont = pixels.to_continuous(box_inc)
        d1_box = pixels.to_continuous(pixels.hflip_boxes(box_inc, width, minus_one=True))[0].numpy()
        d2_box = pixels.hflip_boxes(box_cont, width)[0].numpy()
        # a triangle in continuous coordinates, drawn under the box
        poly = torch.tensor([[box_x1, 4.0], [box_x2 + 1.0, 4.0], [box_x1, 6.5]], dtype=torch.float64)
        d1_poly = pixels.hflip_polygon(poly, width, minus_one=True).numpy()
        d2_poly = pixels.hflip_polygon(poly, width).numpy()
        kp = torch.tensor([[kp_x, 5.0]], dtype=torch.float64)
        d1_kp = pixels.hflip_points(kp, width, minus_one=True)[0].numpy()
        d2_kp = pixels.continuous_keypoints_to_coco(pixels.hflip_points(pixels.coco_keypoints_to_continuous(kp), width))[0].numpy()
        return dict(width=width, box_cont=box_cont[0].numpy(), d1_box=d1_box, d2_box=d2_box, poly=poly.numpy(),
                    d1_poly=d1_poly, d2_poly=d2_poly, kp=kp[0].numpy(), d1_kp=d1_kp, d2_kp=d2_kp, show=show_original)

    def render(self, r):
        W = r["width"]
        self.grid.set_size(W, self.H)
        self.orig_box.set(r["box_cont"])
        self.box1.set(r["d1_box"])
        self.box2.set(r["d2_box"])
        self.orig_poly.set_xy(r["poly"])
        self.poly1.set_xy(r["d1_poly"])
        self.poly2.set_xy(r["d2_poly"])
        # keypoints are pixel indices: draw them at the pixel centre
        self.kp0.set_data([r["kp"][0] + 0.5], [r["kp"][1] + 0.5])
        self.kp1.set_data([r["d1_kp"][0] + 0.5], [r["d1_kp"][1] + 0.5])
        self.kp2.set_data([r["d2_kp"][0] + 0.5], [r["d2_kp"][1] + 0.5])
        for a in (self.orig_box.rect, self.orig_poly, self.kp0):
            a.set_visible(r["show"])
        self.mirror.set_data([W / 2, W / 2], [0, self.H])

    def describe(self, r):
        rows = [
            ["box (as continuous extent)", f"[{r['d1_box'][0]:g}, {r['d1_box'][2]:g})", f"[{r['d2_box'][0]:g}, {r['d2_box'][2]:g})",
             f"{r['d1_box'][0] - r['d2_box'][0]:+g}"],
            ["polygon first vertex x", f"{r['d1_poly'][0, 0]:g}", f"{r['d2_poly'][0, 0]:g}", f"{r['d1_poly'][0, 0] - r['d2_poly'][0, 0]:+g}"],
            ["keypoint pixel index", f"{r['d1_kp'][0]:g}", f"{r['d2_kp'][0]:g}", f"{r['d1_kp'][0] - r['d2_kp'][0]:+g}"],
        ]
        return html_table(rows, ["flipped object (W = %d)" % r["width"], "Detectron", "Detectron2", "difference"])

    def bench_states(self):
        return [{"kp_x": v} for v in range(0, 12)]
