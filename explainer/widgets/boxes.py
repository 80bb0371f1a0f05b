"""Chapter 2 dashboards: IoU of two boxes, IoU against box size, box regression and NMS, with and without +1."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullLocator

from explainer import boxes as B
from explainer.conventions import DETECTRON, DETECTRON2
from explainer.viz.draw import BoxArtist, PixelGrid, set_box
from explainer.viz.style import STYLE, convention_style
from explainer.widgets.base import Dashboard, checkbox, dropdown, html_table, register, slider

D1 = convention_style("detectron")
D2 = convention_style("detectron2")
#: each panel's key in the results and the convention whose knobs it computes with
SIDES = (("detectron", DETECTRON), ("detectron2", DETECTRON2))


def _fmt_box(b) -> str:
    return "[" + ", ".join(f"{float(v):.3f}".rstrip("0").rstrip(".") for v in b) + "]"


@register
class BoxPairDashboard(Dashboard):
    """Two boxes given as the same four numbers each: area, intersection and IoU read by each codebase."""

    title = "Two boxes: area and IoU with +1 (Detectron) and without (Detectron2)"
    figsize = (7.8, 4.2)
    primary = "b_x1"
    W, H = 24, 13

    def make_controls(self):
        return {
            "b_x1": slider("box B x1", 1.0, 14.0, 0.5, 11.0, "left edge of box B, in image pixels (box A is fixed at x1 = 1)"),
            "b_y1": slider("box B y1", 0.0, 4.0, 0.5, 1.0, "top edge of box B, in image pixels (box A is fixed at y1 = 1)"),
            "size": slider("side of both boxes (x2 - x1)", 1.0, 10.0, 1.0, 10.0,
                           "x2 - x1 = y2 - y1 of both boxes, in image pixels; Detectron's width is one more"),
        }

    def build(self, fig):
        ax = self.ax = fig.add_subplot(1, 1, 1)
        PixelGrid(ax, self.W, self.H, centres=False)
        self.a1 = BoxArtist(ax, "detectron", inclusive=True, label="Detectron: pixels x1..x2 (width x2 - x1 + 1)", fill_alpha=0.0)
        self.b1 = BoxArtist(ax, "detectron", inclusive=True, label="_nolegend_", fill_alpha=0.0)
        self.a2 = BoxArtist(ax, "detectron2", inclusive=False, label="Detectron2: [x1, x2) (width x2 - x1)", fill_alpha=0.0)
        self.b2 = BoxArtist(ax, "detectron2", inclusive=False, label="_nolegend_", fill_alpha=0.0)
        self.i1 = Rectangle((0, 0), 0, 0, facecolor=D1["color"], alpha=0.35, hatch="//", edgecolor=D1["color"], lw=0, zorder=2,
                            label="Detectron intersection")
        self.i2 = Rectangle((0, 0), 0, 0, facecolor=D2["color"], alpha=0.35, edgecolor="none", zorder=2,
                            label="Detectron2 intersection")
        ax.add_patch(self.i1)
        ax.add_patch(self.i2)
        self.ta = ax.text(0, 0, "A", fontsize=11, fontweight="bold", ha="left", va="bottom", color=STYLE["reference"])
        self.tb = ax.text(0, 0, "B", fontsize=11, fontweight="bold", ha="left", va="bottom", color=STYLE["reference"])
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8.5)

    def compute(self, b_x1, b_y1, size):
        a = torch.tensor([[1.0, 1.0, 1.0 + size, 1.0 + size]], dtype=torch.float64)
        b = torch.tensor([[b_x1, b_y1, b_x1 + size, b_y1 + size]], dtype=torch.float64)
        out = {"a": a[0].numpy(), "b": b[0].numpy()}
        for key, plus in (("detectron", True), ("detectron2", False)):
            pa = B.to_continuous(a) if plus else a
            pb = B.to_continuous(b) if plus else b
            lo = torch.maximum(pa[0, :2], pb[0, :2])
            hi = torch.minimum(pa[0, 2:], pb[0, 2:])
            inter_wh = (hi - lo).clamp(min=0)
            out[key] = {
                "area_a": float(B.area(a, legacy_plus_one=plus)[0]),
                "area_b": float(B.area(b, legacy_plus_one=plus)[0]),
                "iou": float(B.pairwise_iou(a, b, legacy_plus_one=plus)[0, 0]),
                "inter_box": [float(lo[0]), float(lo[1]), float(lo[0] + inter_wh[0]), float(lo[1] + inter_wh[1])],
                "inter": float(inter_wh[0] * inter_wh[1]),
            }
        return out

    def render(self, r):
        for art, box in ((self.a1, r["a"]), (self.b1, r["b"]), (self.a2, r["a"]), (self.b2, r["b"])):
            art.set(box)
        set_box(self.i1, r["detectron"]["inter_box"])
        set_box(self.i2, r["detectron2"]["inter_box"])
        self.ta.set_position((r["a"][0] + 0.1, r["a"][1] - 0.1))
        self.tb.set_position((r["b"][0] + 0.1, r["b"][1] - 0.1))

    def describe(self, r):
        d1, d2 = r["detectron"], r["detectron2"]
        rows = [
            ["area A (px²)", d1["area_a"], d2["area_a"]],
            ["area B (px²)", d1["area_b"], d2["area_b"]],
            ["intersection (px²)", d1["inter"], d2["inter"]],
            ["union (px²)", d1["area_a"] + d1["area_b"] - d1["inter"], d2["area_a"] + d2["area_b"] - d2["inter"]],
            ["IoU", round(d1["iou"], 5), round(d2["iou"], 5)],
        ]
        note = f"A = {_fmt_box(r['a'])}, B = {_fmt_box(r['b'])}."
        if d2["iou"] == 0 and d1["iou"] > 0:
            note += " The boxes touch: Detectron counts the shared pixel column or row as overlap, Detectron2 does not."
        return html_table(rows, ["", "Detectron (+1)", "Detectron2"]) + f"<div>{note}</div>"

    def bench_states(self):
        return [{"b_x1": v} for v in np.arange(4.0, 14.0, 1.0)]


@register
class IoUBySizeDashboard(Dashboard):
    """IoU of a square box with a copy moved by a few pixels, against the box size, under both conventions."""

    title = "Why +1 matters for small boxes and not for large ones"
    figsize = (8.4, 3.6)
    primary = "shift"
    MARKS = (4, 16, 64, 256)
    SIZES = np.unique(np.concatenate([np.round(np.geomspace(1, 1024, 120), 2), MARKS]))

    def make_controls(self):
        return {
            "shift": slider("shift of the copy (px)", 0.5, 8.0, 0.5, 1.0,
                            "how far the second box is moved, in image pixels"),
            "diagonal": checkbox("shift along both axes", False, "move the copy right and down instead of only right"),
        }

    def build(self, fig):
        ax, bx = self.ax, self.bx = fig.subplots(1, 2)
        (self.l1,) = ax.plot([], [], color=D1["color"], ls=D1["linestyle"], lw=2, label="Detectron (+1)")
        (self.l2,) = ax.plot([], [], color=D2["color"], ls=D2["linestyle"], lw=2, label="Detectron2")
        ax.set_xscale("log")
        ax.set_xlim(1, 1024)
        ax.set_ylim(0, 1)
        ax.set_xlabel("box side x2 - x1 (image pixels)")
        ax.set_ylabel("IoU with the shifted copy")
        ax.legend(loc="lower right", fontsize=9)
        (self.rel,) = bx.plot([], [], color=STYLE["difference"], lw=2, label="(IoU Detectron - IoU Detectron2) / IoU Detectron2")
        (self.marks,) = bx.plot([], [], "o", color=STYLE["difference"], ms=5)
        bx.set_xscale("log")
        bx.set_yscale("log")
        bx.set_xlim(1, 1024)
        bx.set_ylim(1e-3, 1e3)
        bx.set_xlabel("box side x2 - x1 (image pixels)")
        bx.set_ylabel("relative IoU difference (%)")
        # plain tick labels: log axes would otherwise typeset every label with mathtext (slow to build)
        xt = [1, 4, 16, 64, 256, 1024]
        yt = [1e-3, 1e-2, 1e-1, 1, 10, 100, 1000]
        for a in (ax, bx):
            a.set_xticks(xt, [str(v) for v in xt])
            a.xaxis.set_minor_locator(NullLocator())
        bx.set_yticks(yt, ["0.001", "0.01", "0.1", "1", "10", "100", "1000"])
        bx.yaxis.set_minor_locator(NullLocator())
        bx.legend(loc="upper right", fontsize=8)

    def compute(self, shift, diagonal):
        got = B.iou_by_size(self.SIZES, shift, diagonal=diagonal)
        return {k: v.numpy() for k, v in got.items()} | {"shift": shift, "diagonal": diagonal}

    def render(self, r):
        self.l1.set_data(self.SIZES, r["detectron"])
        self.l2.set_data(self.SIZES, r["detectron2"])
        rel = 100 * r["relative_difference"]
        rel = np.where(np.isfinite(rel), rel, np.nan)
        self.rel.set_data(self.SIZES, rel)
        idx = [int(np.argmin(np.abs(self.SIZES - m))) for m in self.MARKS]
        self.marks.set_data(self.SIZES[idx], rel[idx])

    def describe(self, r):
        rows = []
        for m in self.MARKS:
            i = int(np.argmin(np.abs(self.SIZES - m)))
            rd = r["relative_difference"][i]
            rows.append([f"{self.SIZES[i]:g}", round(float(r["detectron"][i]), 5), round(float(r["detectron2"][i]), 5),
                         "infinite (Detectron2 IoU is 0)" if not np.isfinite(rd) else f"{100 * rd:.3g} %"])
        where = "right and down" if r["diagonal"] else "right"
        return html_table(rows, ["box side (px)", "IoU Detectron", "IoU Detectron2", "relative difference"],
                          caption=f"a square box and a copy moved {r['shift']:g} px {where}")

    def bench_states(self):
        return [{"shift": v} for v in np.arange(0.5, 8.01, 0.5)]


@register
class RegressionDashboard(Dashboard):
    """The same regression deltas decoded by Detectron's formula and by Detectron2's, over the same proposal."""

    title = "Box regression: one set of deltas, two decoders"
    figsize = (7.6, 4.4)
    primary = "dx"
    W, H = 34, 22
    WEIGHTS = (10.0, 10.0, 5.0, 5.0)

    def make_controls(self):
        tip = "regression output of the box head (weights 10, 10, 5, 5 are divided out when decoding)"
        return {
            "dx": slider("dx", -5.0, 5.0, 0.25, 1.0, tip + "; dx/10 moves the centre by that fraction of the width"),
            "dy": slider("dy", -5.0, 5.0, 0.25, -0.5, tip + "; dy/10 moves the centre by that fraction of the height"),
            "dw": slider("dw", -2.5, 2.5, 0.25, 1.0, tip + "; the width is multiplied by exp(dw/5)"),
            "dh": slider("dh", -2.5, 2.5, 0.25, 0.5, tip + "; the height is multiplied by exp(dh/5)"),
            "size": dropdown("proposal", [("small: 6 x 6 pixels", 6), ("medium: 12 x 12 pixels", 12), ("large: 20 x 20 pixels", 20)], 6,
                             "the proposal the deltas apply to, as Detectron's inclusive pixel indices"),
            "handover": dropdown("Detectron2 decodes", [("the same four numbers", "same"),
                                                       ("the mapped proposal [x1, y1, x2+1, y2+1]", "mapped")], "same",
                                 "what Detectron2's decoder receives as the proposal"),
        }

    def build(self, fig):
        ax = self.ax = fig.add_subplot(1, 1, 1)
        PixelGrid(ax, self.W, self.H, centres=False)
        self.prop = BoxArtist(ax, "detectron", inclusive=True, label="proposal (Detectron pixels)", fill_alpha=0.0, linewidth=1.2)
        self.prop.rect.set_edgecolor(STYLE["neutral"])
        self.prop.rect.set_linestyle(":")
        self.b1 = BoxArtist(ax, "detectron", inclusive=True, label="Detectron decode (bbox_transform, '- 1')")
        self.b2 = BoxArtist(ax, "detectron2", inclusive=False, label="Detectron2 decode (apply_deltas)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8.5)

    def compute(self, dx, dy, dw, dh, size, handover):
        c = self.W / 2 - 2
        x1, y1 = math.floor(c - size / 2), math.floor(self.H / 2 - size / 2)
        prop = torch.tensor([[x1, y1, x1 + size - 1, y1 + size - 1]], dtype=torch.float64)
        deltas = torch.tensor([[dx, dy, dw, dh]], dtype=torch.float64)
        legacy = B.decode(deltas, prop, self.WEIGHTS, legacy_plus_one=True)[0]
        if handover == "same":
            d2 = B.decode(deltas, prop, self.WEIGHTS)[0]
        else:
            d2 = B.decode(deltas, B.to_continuous(prop), self.WEIGHTS)[0]
        legacy_cover = B.to_continuous(legacy[None])[0]
        return {"prop": prop[0].numpy(), "legacy": legacy.numpy(), "d2": d2.numpy(), "legacy_cover": legacy_cover.numpy(),
                "handover": handover, "deltas": (dx, dy, dw, dh)}

    def render(self, r):
        self.prop.set(r["prop"])
        self.b1.set(r["legacy"])
        self.b2.set(r["d2"])

    def describe(self, r):
        names = ["x1", "y1", "x2", "y2"]
        rows = []
        for i, n in enumerate(names):
            rows.append([n, round(float(r["legacy"][i]), 4), round(float(r["d2"][i]), 4), round(float(r["d2"][i] - r["legacy"][i]), 4),
                         round(float(r["d2"][i] - r["legacy_cover"][i]), 4)])
        hand = "the same four numbers" if r["handover"] == "same" else "the mapped proposal"
        cap = f"deltas {list(r['deltas'])} on proposal {_fmt_box(r['prop'])}; Detectron2 decodes {hand}"
        return html_table(rows, ["", "Detectron output", "Detectron2 output", "difference of the numbers (px)",
                                 "difference of the covered area's edge (px)"], caption=cap)

    def bench_states(self):
        return [{"dx": v} for v in np.arange(-4.0, 4.01, 0.75)]


@register
class NMSDashboard(Dashboard):
    """A cluster of scored boxes: which ones each codebase's NMS keeps as the threshold moves."""

    title = "NMS: Detectron (+1, IoU >= t) against Detectron2 (torchvision, IoU > t)"
    figsize = (8.6, 4.6)
    primary = "threshold"
    W, H = 30, 27
    BOXES = torch.tensor([
        [4, 4, 13, 13], [4, 4, 13, 8],          # legacy IoU exactly 0.5 (a tie), Detectron2 36/81
        [16, 6, 24, 10], [18, 4, 24, 11],       # legacy 35/66 = 0.53, Detectron2 24/50 = 0.48
        [6, 16, 16, 24], [8, 17, 18, 25],       # legacy 72/126 = 0.57, Detectron2 56/104 = 0.54
        [20, 16, 27, 23], [21, 17, 28, 24],     # legacy 49/79 = 0.62, Detectron2 36/62 = 0.58
    ], dtype=torch.float32)
    SCORES = torch.tensor([0.95, 0.6, 0.7, 0.9, 0.85, 0.5, 0.4, 0.3])

    def make_controls(self):
        return {
            "threshold": slider("IoU threshold (NMS_THRESH_TEST)", 0.3, 0.8, 0.01, 0.5,
                                "boxes overlapping a kept, higher-scoring box by more than this IoU are suppressed"),
        }

    def build(self, fig):
        self.axes = fig.subplots(1, 2, sharey=True)
        self.rects = {}
        for ax, (key, conv) in zip(self.axes, SIDES):
            st = convention_style(key)
            PixelGrid(ax, self.W, self.H, centres=False, labels=False)
            ax.set_title(st["short"] + (": pixels x1..x2, IoU >= t" if conv.nms_suppresses_ties else ": [x1, x2), IoU > t"),
                         fontsize=10)
            rs = []
            for i, b in enumerate(self.BOXES.tolist()):
                r = Rectangle((0, 0), 0, 0, fill=False, lw=2, edgecolor=st["color"], linestyle=st["linestyle"], zorder=3)
                set_box(r, b, inclusive=conv.legacy_plus_one)
                ax.add_patch(r)
                if i % 2 == 0:  # label pairs at opposite corners so that they never overlap
                    ax.text(b[0] + 0.2, b[1] - 0.2, f"#{i} {self.SCORES[i]:.2f}", fontsize=7, color=STYLE["reference"], va="bottom")
                else:
                    ax.text(b[2] + 0.8, b[3] + 1.2, f"#{i} {self.SCORES[i]:.2f}", fontsize=7, color=STYLE["reference"],
                            va="top", ha="right")
                rs.append(r)
            self.rects[key] = rs
            ax.set_xticks([0, 10, 20, 30])
            ax.set_yticks([0, 10, 20])
        from matplotlib.lines import Line2D

        self.axes[0].legend(handles=[Line2D([], [], color=D1["color"], ls=D1["linestyle"], lw=2, label="kept"),
                                     Line2D([], [], color=STYLE["neutral"], ls=":", lw=1, label="suppressed")],
                            loc="lower left", fontsize=8)
        self.axes[1].legend(handles=[Line2D([], [], color=D2["color"], ls=D2["linestyle"], lw=2, label="kept"),
                                     Line2D([], [], color=STYLE["neutral"], ls=":", lw=1, label="suppressed")],
                            loc="lower left", fontsize=8)
        self.ious = {key: B.pairwise_iou(self.BOXES, self.BOXES, legacy_plus_one=conv.legacy_plus_one) for key, conv in SIDES}

    def compute(self, threshold):
        out = {"threshold": threshold}
        for key, conv in SIDES:
            kept = B.nms(self.BOXES, self.SCORES, threshold, legacy_plus_one=conv.legacy_plus_one).tolist()
            iou = self.ious[key]
            # for each box, its largest IoU with a kept box of higher score (what decided its fate)
            worst = []
            for i in range(len(self.BOXES)):
                higher = [j for j in kept if self.SCORES[j] > self.SCORES[i]]
                worst.append(max((float(iou[i, j]) for j in higher), default=0.0))
            out[key] = {"kept": kept, "max_iou": worst}
        return out

    def render(self, r):
        for key in ("detectron", "detectron2"):
            st = convention_style(key)
            kept = set(r[key]["kept"])
            for i, rect in enumerate(self.rects[key]):
                if i in kept:
                    rect.set_edgecolor(st["color"])
                    rect.set_linestyle(st["linestyle"])
                    rect.set_linewidth(2.2)
                else:
                    rect.set_edgecolor(STYLE["neutral"])
                    rect.set_linestyle(":")
                    rect.set_linewidth(1.0)

    def describe(self, r):
        rows = []
        k1, k2 = set(r["detectron"]["kept"]), set(r["detectron2"]["kept"])
        for i in range(len(self.BOXES)):
            def cell(key, kept, i=i):
                m = r[key]["max_iou"][i]
                return ("kept" if i in kept else "suppressed") + (f" (IoU {m:.4f})" if m > 0 else "")
            rows.append([i, f"{float(self.SCORES[i]):.2f}", cell("detectron", k1), cell("detectron2", k2),
                         "differs" if (i in k1) != (i in k2) else ""])
        t = r["threshold"]
        cap = (f"threshold {t:.2f}: Detectron keeps {len(k1)} boxes {sorted(k1)}, Detectron2 keeps {len(k2)} {sorted(k2)} "
               "(IoU: the largest with a kept, higher-scoring box)")
        return html_table(rows, ["box", "score", "Detectron", "Detectron2", ""], caption=cap)

    def bench_states(self):
        return [{"threshold": v} for v in np.round(np.arange(0.40, 0.66, 0.02), 2)]
