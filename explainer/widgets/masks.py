"""Chapter 6 dashboards: one mask pasted both ways on a pixel grid, Detectron's steps, and the size experiment."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from matplotlib.colors import ListedColormap

from explainer import masks as Mk
from explainer.pixels import to_inclusive
from explainer.viz.draw import BoxArtist, PixelGrid
from explainer.viz.style import STYLE, convention_style
from explainer.widgets.base import Dashboard, box_sliders, dropdown, html_table, int_slider, register, slider

D1 = convention_style("detectron")
D2 = convention_style("detectron2")
H, W = 22, 28
_i, _j = np.mgrid[0:28, 0:28].astype(np.float32)
#: the chapter's predicted mask: a soft blob, off-centre, 28 x 28
MASK = torch.from_numpy(1.0 / (1.0 + np.exp(-(10.0 - np.hypot(_i - 13.2, _j - 14.7)) / 1.5)))
# 0 none, 1 both, 2 Detectron only, 3 Detectron2 only
AGREE_CMAP = ListedColormap(["#FFFFFF", "#BBBBBB", D1["color"], D2["color"]])


def _inclusive(x1: float, y1: float, x2: float, y2: float) -> torch.Tensor:
    """The slider box (continuous) as Detectron's box head gives it: inclusive indices x2 - 1, y2 - 1 (1 x 4, float64)."""
    return to_inclusive(torch.tensor([[x1, y1, x2, y2]], dtype=torch.float64))


def _box_controls(defaults):
    return box_sliders(W, H, defaults, "box corner in image pixels (continuous; Detectron receives x2 - 1 and y2 - 1 as "
                                       "its inclusive indices)", step=0.1)


@register
class MaskPasteDashboard(Dashboard):
    """The same 28 x 28 mask pasted by Detectron and by Detectron2 on a zoomed pixel grid; differing pixels coloured."""

    title = "One mask, pasted both ways (grey: both; vermillion: Detectron only; blue: Detectron2 only)"
    figsize = (7.6, 5.0)
    primary = "x2"

    def make_controls(self):
        c = _box_controls((4.3, 3.7, 22.8, 17.2))
        c["threshold"] = slider("threshold", 0.05, 0.95, 0.05, 0.5, "MRCNN.THRESH_BINARIZE (Detectron: > t; Detectron2: >= t)")
        return c

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        self.im = self.ax.imshow(np.zeros((H, W)), cmap=AGREE_CMAP, vmin=-0.5, vmax=3.5, extent=(0, W, H, 0), interpolation="nearest", zorder=0)
        PixelGrid(self.ax, W, H, centres=False)
        self.box = BoxArtist(self.ax, "detectron2", label="the box (continuous)", fill_alpha=0.0, linewidth=1.5)
        self.box.rect.set_edgecolor(STYLE["reference"])
        from matplotlib.patches import Patch

        handles = [self.box.rect, Patch(color="#BBBBBB", label="on in both"), Patch(color=D1["color"], label="Detectron only"),
                   Patch(color=D2["color"], label="Detectron2 only")]
        fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8.5)

    def compute(self, x1, y1, x2, y2, threshold):
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise ValueError(f"box must be at least 1 px wide and high; got {x2 - x1:.2g} x {y2 - y1:.2g}")
        box = [x1, y1, x2, y2]
        d2 = Mk.paste_masks(MASK[None], [box], (H, W), threshold, mask_paste="paste_masks_in_image")[0]
        # float32, as the Detectron2 box given as a list
        d1 = Mk.paste_masks(MASK[None], _inclusive(x1, y1, x2, y2).float(), (H, W), threshold, mask_paste="segm_results")[0]
        cat = (d1 & d2).int() * 1 + (d1 & ~d2).int() * 2 + (~d1 & d2).int() * 3
        return dict(box=box, d1=d1, d2=d2, cat=cat.numpy(), iou=float(Mk.mask_iou(d1, d2)), err=Mk.boundary_error(d2, d1),
                    threshold=threshold)

    def render(self, r):
        self.im.set_data(r["cat"])
        self.box.set(r["box"])

    def describe(self, r):
        rows = [["pixels on", int(r["d1"].sum()), int(r["d2"].sum())],
                ["mask IoU between them", f"{r['iou']:.3f}", ""],
                ["pixels that differ (within 1 / 2 px of the contour)", f"{r['err']['differ']} ({r['err']['within_1px']} / {r['err']['within_2px']})", ""]]
        return html_table(rows, [f"box {[round(v, 1) for v in r['box']]}, threshold {r['threshold']:g}", "Detectron", "Detectron2"])

    def bench_states(self):
        return [{"x2": v} for v in np.linspace(15.0, 27.0, 12)]


@register
class PasteStepsDashboard(Dashboard):
    """Detectron's steps (padded mask, expanded box, integer box, resize) beside Detectron2's sampling grid."""

    title = "Detectron's steps against Detectron2's sampling"
    figsize = (9.2, 5.0)
    primary = "x2"

    def make_controls(self):
        return _box_controls((4.3, 3.7, 22.8, 17.2))

    def build(self, fig):
        self.a0, self.a1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
        pad = np.zeros((30, 30), np.float32)
        pad[1:-1, 1:-1] = MASK.numpy()
        self.a0.imshow(pad, cmap=STYLE["feature_cmap"], vmin=0, vmax=1, extent=(0, 30, 30, 0), interpolation="nearest")
        self.a0.set_title("1. the 28 x 28 mask, zero-padded to 30 x 30", fontsize=9)
        self.a0.set_xlabel("mask cells")
        self.soft = self.a1.imshow(np.zeros((2, 2)), cmap=STYLE["feature_cmap"], vmin=0, vmax=1, extent=(0, 1, 1, 0),
                                   interpolation="nearest", alpha=0.85, zorder=0)
        PixelGrid(self.a1, W, H, centres=False)
        self.box = BoxArtist(self.a1, "detectron2", label="the box", fill_alpha=0.0, linewidth=1.5)
        self.box.rect.set_edgecolor(STYLE["reference"])
        self.ebox = BoxArtist(self.a1, "detectron", inclusive=True, label="2. expanded by 30/28", fill_alpha=0.0, linewidth=1.2)
        self.ibox = BoxArtist(self.a1, "detectron", inclusive=True, label="3. truncated to int, +1 size: 4. resized here", fill_alpha=0.0,
                              linewidth=2.0)
        self.ibox.rect.set_linestyle(":")
        (self.cells,) = self.a1.plot([], [], ".", color=D2["color"], ms=3, label="Detectron2: mask cell centres in the image")
        self.a1.set_title("Detectron's resized soft mask; Detectron2's cell centres", fontsize=9)
        fig.legend(handles=[self.box.rect, self.ebox.rect, self.ibox.rect, self.cells], loc="outside lower center", ncol=2, fontsize=8)

    def compute(self, x1, y1, x2, y2):
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise ValueError(f"box must be at least 1 px wide and high; got {x2 - x1:.2g} x {y2 - y1:.2g}")
        inc = _inclusive(x1, y1, x2, y2)
        st = Mk.detectron_paste_steps(MASK, inc, (H, W))
        cw, ch = (x2 - x1) / 28, (y2 - y1) / 28
        cx = x1 + (np.arange(28) + 0.5) * cw
        cy = y1 + (np.arange(28) + 0.5) * ch
        gx, gy = np.meshgrid(cx, cy)
        return dict(box=[x1, y1, x2, y2], inc=inc[0].tolist(), st=st, gx=gx.ravel(), gy=gy.ravel())

    def render(self, r):
        st = r["st"]
        ix1, iy1, ix2, iy2 = (int(v) for v in st["int_box"])
        self.soft.set_data(st["resized"].numpy())
        self.soft.set_extent((ix1, ix2 + 1, iy2 + 1, iy1))
        self.box.set(r["box"])
        self.ebox.set(st["expanded_box"].tolist())  # drawn as the pixels its inclusive corners name
        self.ibox.set([ix1, iy1, ix2, iy2])
        self.cells.set_data(r["gx"], r["gy"])

    def describe(self, r):
        st = r["st"]
        rows = [["Detectron's box (inclusive: x2 - 1)", [round(v, 2) for v in r["inc"]]],
                ["2. expanded (x 30/28, half-widths without +1)", [round(v, 2) for v in st["expanded_box"].tolist()]],
                ["3. truncated to int32", st["int_box"].tolist()],
                ["4. resized to (w x h)", f"{st['resized'].shape[1]} x {st['resized'].shape[0]}"],
                ["Detectron2: one mask cell (px)", f"{(r['box'][2] - r['box'][0]) / 28:.3f} x {(r['box'][3] - r['box'][1]) / 28:.3f}"]]
        return html_table(rows, ["step", "value"])

    def bench_states(self):
        return [{"x2": v} for v in np.linspace(15.0, 27.0, 12)]


@lru_cache(maxsize=8)
def _experiment(n: int, shape: str):
    return Mk.synthetic_paste_experiment(sizes=(8, 16, 32, 64, 128), n=n, shape=shape)


@register
class PasteExperimentDashboard(Dashboard):
    """Mask IoU against exact ground truth, by object size, for both paste methods."""

    title = "Where the mask AP gain comes from: IoU with the exact shape, by object size"
    figsize = (7.6, 3.6)
    primary = "shape"

    def make_controls(self):
        return {"shape": dropdown("object", [("discs", "disc"), ("diamonds (polygons)", "diamond")], "disc", "the shape of the objects"),
                "n": int_slider("objects per size", 10, 60, 20, "random sub-pixel positions averaged per size", step=10, continuous=False)}

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        x = np.arange(5)
        (self.l1,) = self.ax.plot(x, np.zeros(5), color=D1["color"], ls=D1["linestyle"], marker=D1["marker"], label="Detectron paste")
        (self.l1t,) = self.ax.plot(x, np.zeros(5), color=D1["color"], ls=":", marker="s", mfc="none",
                                   label="Detectron paste, head trained on Detectron's inclusive-box targets")
        (self.l2,) = self.ax.plot(x, np.zeros(5), color=D2["color"], ls=D2["linestyle"], marker=D2["marker"], label="Detectron2 paste")
        self.ax.set_xticks(x, ["8", "16", "32", "64", "128"])
        self.ax.set_xlabel("object diameter (image pixels)")
        self.ax.set_ylabel("mean mask IoU with ground truth")
        self.ax.set_ylim(0.6, 1.01)
        self.ax.grid(True, alpha=0.3)
        self.ax.legend(loc="lower right", fontsize=8)

    def compute(self, shape, n):
        return {"rows": _experiment(int(n), shape), "shape": shape, "n": n}

    def render(self, r):
        self.l1.set_ydata([row["detectron"] for row in r["rows"]])
        self.l1t.set_ydata([row["detectron_trained"] for row in r["rows"]])
        self.l2.set_ydata([row["detectron2"] for row in r["rows"]])

    def describe(self, r):
        return html_table([[f"{row['size']:g}", f"{row['detectron']:.3f}", f"{row['detectron_trained']:.3f}", f"{row['detectron2']:.3f}",
                            f"{row['detectron2'] - row['detectron']:+.3f}"] for row in r["rows"]],
                          [f"{r['shape']}s, {r['n']} per size", "Detectron", "Detectron, trained on its own targets",
                           "Detectron2", "gain (Detectron2 - Detectron)"])

    def bench_states(self):
        return [{"shape": s} for s in ("disc", "diamond")]
