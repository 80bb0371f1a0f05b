"""Chapter 11 dashboard: PyTorch against ONNX Runtime, stage by stage; the first divergence and its cause.

Every mismatch is a real export of the course network (:mod:`explainer.course.network`), run in ONNX Runtime with all
its stages exposed and compared with :func:`explainer.trace.compare`. Each export and comparison is computed
once per kernel (:func:`explainer.course.network.course_builder`); choosing it again only redraws.
"""

from __future__ import annotations

import html
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from matplotlib.patches import Patch, Rectangle

from explainer.course import network as N
from explainer.trace import causes as TC
from explainer.viz.style import OKABE_ITO, STYLE
from explainer.widgets.base import Dashboard, dropdown, html_table, register

#: Bar chart range, in tolerances: |difference| / (atol + rtol |reference|); 1 is the pass/fail line.
FLOOR, CEIL = 1e-4, 1e6
FIRST = "first divergence"
#: How each kind of stage is drawn: face colour, hatch, legend label.
KINDS = {
    "pass": (OKABE_ITO["green"], "", "passes (identical or numerical noise)"),
    "first": (OKABE_ITO["vermillion"], "//", "first divergence"),
    "root": (OKABE_ITO["orange"], "xx", "another cause of its own"),
    "inherited": (OKABE_ITO["grey"], "..", "inherited from an earlier stage"),
}


def _kind(report, s) -> str:
    if s.passed:
        return "pass"
    if s.name == report.first_divergence:
        return "first"
    return "inherited" if s.cause.name == "inherited" else "root"


def _panel(t: torch.Tensor, pooled: bool) -> Tuple[torch.Tensor, str, str]:
    """The stage as items x channels x H x W, the unit of its grid, and what one item is."""
    if t.dim() >= 3:
        v = t.reshape(-1, *t.shape[-3:]) if t.dim() >= 4 else t.unsqueeze(0)
        return v, ("bins" if pooled else "cells"), ("roi" if pooled else "item")
    if t.dim() == 2:
        return t.reshape(1, 1, *t.shape), "rows x columns", "matrix"
    return t.reshape(1, 1, 1, -1), "values", "vector"


def _choose(d: torch.Tensor) -> Tuple[int, int]:
    """(item, channel) where |difference| is largest (0, 0 for identical tensors)."""
    flat = d.abs().reshape(d.shape[0], d.shape[1], -1).amax(-1)
    k = int(flat.argmax())
    return k // d.shape[1], k % d.shape[1]


@register
class TraceDashboard(Dashboard):
    """Pick a conversion mistake; see where PyTorch and ONNX Runtime part, and why."""

    title = "PyTorch against ONNX Runtime, stage by stage: where do they part, and why?"
    figsize = (8.4, 4.9)
    primary = "mismatch"

    def make_controls(self):
        options = [(label, key) for key, (label, _, _) in N.MISMATCHES.items()]
        return {
            "mismatch": dropdown("mismatch", options, "opset11",
                                 "the conversion mistake: each is a real export run in ONNX Runtime", width="330px"),
            "stage": dropdown("show stage", [FIRST, *N.STAGES], FIRST,
                              "the stage whose maps are drawn on the right (default: the first divergence)",
                              width="330px"),
        }

    def build(self, fig):
        self._cache: Dict[Tuple[str, str], Dict[str, Any]] = {}
        axd = fig.subplot_mosaic([["bars", "ref", "cand"], ["bars", "diff", "resid"]],
                                 width_ratios=[1.5, 1.0, 1.0])
        self.ax_bars = axd["bars"]
        n = len(N.STAGES)
        y = np.arange(n)
        self.bars = self.ax_bars.barh(y, np.full(n, FLOOR), left=FLOOR, height=0.7,
                                      color=KINDS["pass"][0], edgecolor="black", linewidth=0.6)
        self.ax_bars.set_xscale("log")
        self.ax_bars.set_xlim(FLOOR, CEIL)
        self.ax_bars.set_ylim(n - 0.5, -0.5)
        self.ax_bars.set_yticks(y, [s.replace("box_predictor.", "").replace("rpn_head.", "rpn.") for s in N.STAGES],
                                fontsize=8)
        self.ax_bars.set_xticks([1e-4, 1e-2, 1, 1e2, 1e4, 1e6])
        self.ax_bars.tick_params(axis="x", labelsize=8)
        tol_line = self.ax_bars.axvline(1.0, color="black", linestyle="--", linewidth=1.0,
                                        label="tolerance: a stage right of it fails")
        self.ax_bars.set_xlabel("worst |candidate - reference|\n/ (atol + rtol |reference|)", fontsize=8.5)
        self.labels = [self.ax_bars.text(FLOOR * 1.4, i, "", va="center", fontsize=7,
                                         bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=0.5))
                       for i in range(n)]
        # the stage drawn on the right: a frame around its row
        self.shown_row = Rectangle((FLOOR, -0.5), CEIL - FLOOR, 1.0, fill=False, edgecolor="black", linewidth=1.2,
                                   linestyle=":", clip_on=True, label="stage drawn on the right")
        self.ax_bars.set_title("every stage, in network order", fontsize=9)
        self.ax_bars.add_patch(self.shown_row)
        fig.legend(handles=[Patch(facecolor=c, hatch=h, edgecolor="black", label=lab)
                            for c, h, lab in KINDS.values()] + [tol_line, self.shown_row],
                   loc="outside lower center", fontsize=7.5, ncol=3, frameon=False)
        self.ims = {}
        # the panels keep fixed axes and colour bars (a redraw then only repaints images and texts): each image
        # fills [0, W] x [0, H] of its own grid, and is drawn scaled to its range, stated in its title
        for key, cmap, lim, title in (("ref", STYLE["feature_cmap"], (0, 1), "PyTorch (reference)"),
                                      ("cand", STYLE["feature_cmap"], (0, 1), "ONNX Runtime (candidate)"),
                                      ("diff", STYLE["diverging_cmap"], (-1, 1), "candidate - reference"),
                                      ("resid", STYLE["diverging_cmap"], (-1, 1), "left after the fitted cause")):
            ax = axd[key]
            self.ims[key] = ax.imshow(np.zeros((2, 2)), cmap=cmap, vmin=lim[0], vmax=lim[1], interpolation="nearest",
                                      aspect="auto", extent=(0, 1, 1, 0))
            ax.set_xticks([0, 0.5, 1], ["0", "W/2", "W"], fontsize=7)
            ax.set_yticks([0, 0.5, 1], ["0", "H/2", "H"], fontsize=7)
            ax.set_title(title, fontsize=8)
        for key in ("diff", "resid"):
            self.ims[key].axes.set_xlabel("x (W cells, bins or columns)", fontsize=7.5)
        for key in ("ref", "diff"):
            self.ims[key].axes.set_ylabel("y (H rows)", fontsize=7.5)
        self.cb_value = fig.colorbar(self.ims["cand"], ax=[axd["ref"], axd["cand"]], shrink=0.85, pad=0.02)
        self.cb_value.set_ticks([0, 0.5, 1], labels=["min", "", "max"])
        self.cb_value.set_label("value (range in the read-out)", fontsize=7.5)
        self.cb_diff = fig.colorbar(self.ims["resid"], ax=[axd["diff"], axd["resid"]], shrink=0.85, pad=0.02)
        self.cb_diff.set_ticks([-1, 0, 1], labels=["-max", "0", "+max"])
        self.cb_diff.set_label("difference (max |.| in\nthe read-out)", fontsize=7.5)
        for cb in (self.cb_value, self.cb_diff):
            cb.ax.tick_params(labelsize=7)
        self.warm()

    def warm(self) -> None:
        """Export and run every mismatch now (once per process), so that the mismatch menu answers from the cache:
        each first export and ONNX Runtime run takes about half a second."""
        builder = N.course_builder()
        for mismatch in N.MISMATCHES:
            builder.case(mismatch)

    # -- computing ------------------------------------------------------------------------------
    def compute(self, mismatch, stage):
        key = (mismatch, stage)
        if key not in self._cache:
            self._cache[key] = self._compute(mismatch, stage)
        return self._cache[key]

    def _compute(self, mismatch: str, stage: str) -> Dict[str, Any]:
        builder = N.course_builder()
        case = builder.case(mismatch)
        rep = case.report
        name = stage if stage != FIRST else (rep.first_divergence or "box_pooler")
        s = rep.stages[name]
        ref = case.reference[name].double()
        cand = torch.as_tensor(case.candidate[case.name_map[name]]).double().reshape(ref.shape)
        pooler = case.poolers.get(name)
        shown = s.own_cause if s.own_cause is not None else s.cause
        feats = case.reference[pooler.features] if pooler is not None else None
        model = TC.apply_cause(shown, ref, pooler=pooler, pooled_from=feats) if not s.passed else None
        r4, unit, kind = _panel(ref, pooler is not None)
        c4 = _panel(cand, pooler is not None)[0]
        m4 = _panel(model, pooler is not None)[0] if model is not None else None
        item, ch = _choose(c4 - r4)
        rv, cv = r4[item, ch].numpy(), c4[item, ch].numpy()
        resid = cv - m4[item, ch].numpy() if m4 is not None else None
        where = {"roi": f"ROI {item} of {r4.shape[0]}, channel {ch}", "item": f"channel {ch} of {r4.shape[1]}",
                 "matrix": f"all {rv.shape[0]} rows", "vector": "all values"}[kind]
        bars = [(max(min(x.tolerances, CEIL), FLOOR), _kind(rep, x), x) for x in rep.stages.values()]
        return dict(mismatch=mismatch, case=case, report=rep, name=name, stage=s, shown=shown, rv=rv, cv=cv,
                    resid=resid, unit=unit, where=where, bars=bars)

    # -- drawing ---------------------------------------------------------------------------------
    def render(self, r):
        for bar, text, (value, kind, s) in zip(self.bars, self.labels, r["bars"]):
            colour, hatch, _ = KINDS[kind]
            bar.set_width(value - FLOOR)
            bar.set_facecolor(colour)
            bar.set_hatch(hatch)
            # only a stage with a cause of its own is labelled; colour and hatch tell the others apart
            text.set_text("identical" if s.cause.name == "identical" else
                          "" if kind in ("pass", "inherited") else s.cause.name)
            text.set_position((value * 1.4 if value < 1e3 else 1.5, text.get_position()[1]))
        rv, cv, resid = r["rv"], r["cv"], r["resid"]
        lo, hi = float(min(rv.min(), cv.min())), float(max(rv.max(), cv.max()))
        width = hi - lo if hi > lo else 1.0
        diff = cv - rv
        span = float(np.abs(diff).max())
        scale = span if span > 0 else 1.0
        empty = np.full(rv.shape, np.nan)
        self.ims["ref"].set_data((rv - lo) / width)
        self.ims["cand"].set_data((cv - lo) / width)
        self.ims["diff"].set_data(diff / scale)
        self.ims["resid"].set_data(resid / scale if resid is not None else empty)
        self.shown_row.set_y(list(N.STAGES).index(r["name"]) - 0.5)
        r["range"], r["span"], r["shape"] = (lo, hi), span, rv.shape
        r["left"] = float(np.nanmax(np.abs(resid))) if resid is not None and np.isfinite(resid).any() else 0.0

    def describe(self, r):
        rep, case = r["report"], r["case"]
        label, what, _ = N.MISMATCHES[r["mismatch"]]
        parts = [f"<b>{html.escape(label)}</b>: {html.escape(what)}."]
        if rep.first_divergence is None:
            parts.append("<br><b>No divergence</b>: every stage is identical or within the tolerance "
                         f"(atol {rep.atol:g}, rtol {rep.rtol:g}).")
        else:
            f = rep.stages[rep.first_divergence]
            parts.append(f"<br><b>First divergence: {html.escape(f.name)}</b>, cause <b>{html.escape(f.cause.name)}"
                         f"</b>: {html.escape(f.cause.explanation)}.<br>Fix: {html.escape(f.cause.fix)}.")
        others = [x for x in rep.root_causes if x.name != rep.first_divergence]
        if others:
            parts.append("<br>Also a cause of its own: " + "; ".join(
                f"{html.escape(x.name)} ({html.escape(x.cause.name)})" for x in others) + ".")
        n_inh = sum(x.cause.name == "inherited" for x in rep.stages.values())
        t = case.timings
        rows = [["export", f"torch.onnx.export(dynamo=False, opset_version={case.opset_version}): "
                           f"{t['export_s']:.2f} s (once per kernel)"],
                ["exporter warnings", "; ".join(case.export_warnings) or "none"],
                ["ONNX Runtime, every stage exposed", f"{t['onnxruntime_s'] * 1000:.0f} ms"],
                ["comparison of the 13 stages", f"{t['compare_s'] * 1000:.0f} ms; {n_inh} stage(s) inherited"],
                ["drawn on the right (framed row)",
                 f"{html.escape(r['name'])}: {html.escape(r['where'])}, {r['shape'][0]} x {r['shape'][1]} "
                 f"{html.escape(r['unit'])}; values {r['range'][0]:.3g} .. {r['range'][1]:.3g} (colour bar min .. "
                 f"max); largest |difference| {r['span']:.3g}; "
                 + (f"left after {html.escape(r['shown'].name)}: {r['left']:.3g}" if r["resid"] is not None else
                    f"no model of the candidate for {html.escape(r['shown'].name)}")]]
        parts.append(html_table(rows, ["", ""]))
        return "".join(parts)

    def bench_states(self) -> List[Dict[str, Any]]:
        return [{"mismatch": k, "stage": FIRST} for k in N.MISMATCHES]

