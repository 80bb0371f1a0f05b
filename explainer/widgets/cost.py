"""What each cause costs: inject post-processing mistakes into the course detector's detections and watch the AP
that undoing each one gives back (dAP), measured against the test scenes' ground truth.

The reference is the converted detector run under Detectron2's conventions; the candidate is the same run with the
ticked mistakes of :data:`explainer.diagnosis.injection.MISTAKES`. :func:`explainer.diagnosis.diagnose` names the
causes, and with ``gt`` (:func:`explainer.course.cache.scene_ground_truth`) measures each one's cost with COCOeval
(:mod:`explainer.diagnosis.cost`). This module only draws the result.
"""

from __future__ import annotations

import html
from functools import lru_cache
from typing import Any, Dict, Tuple

import ipywidgets as widgets
import numpy as np

from explainer.conventions import DETECTRON2
from explainer.course import cache as CC
from explainer.diagnosis import report as Dx
from explainer.diagnosis.injection import MISTAKES, inject_mistakes
from explainer.viz.style import OKABE_ITO, STYLE
from explainer.widgets.base import Dashboard, checkbox, html_table, register

#: The mistakes ticked when the dashboard opens: a rescale missed and the "+1" on x2, y2, two costs of different size.
DEFAULT = ("scale", "plus_one")
#: The three AP bars: reference, candidate, all causes undone (colour, hatch: never colour alone).
_AP_BARS = (("reference", OKABE_ITO["blue"], ""), ("candidate", OKABE_ITO["vermillion"], "xx"),
            ("all causes undone", OKABE_ITO["green"], "//"))


@lru_cache(maxsize=64)
def cost_of(mistakes: Tuple[str, ...]) -> Dict[str, Any]:
    """The diagnosis, with its AP cost against the scenes' ground truth, of the converted detector's detections
    with ``mistakes`` (names of :data:`MISTAKES`) injected; cached per set of mistakes."""
    ref = Dx.load_detections(CC.detections_over_scenes(DETECTRON2, converted=True), name="reference")
    cand, injected = inject_mistakes(ref, list(mistakes))
    diag = Dx.diagnose(ref, cand, gt=CC.scene_ground_truth())
    return {"diag": diag, "injected": injected, "injected_names": mistakes,
            "task": diag.ap.tasks["bbox"] if diag.ap is not None else None}


@register
class CostDashboard(Dashboard):
    """Tick mistakes; the bars show the AP each found cause costs (dAP when it alone is undone)."""

    title = "What each cause costs in AP"
    figsize = (10.0, 3.6)
    primary = "scale"

    def make_controls(self):
        return {name: checkbox(label, name in DEFAULT, tip) for name, (label, _, _, tip) in MISTAKES.items()}

    def layout_controls(self):
        row = widgets.Layout(flex_flow="row wrap")
        return widgets.VBox([widgets.HTML("<b>Post-processing mistakes injected into the candidate</b>"),
                             widgets.HBox([self.controls[n] for n in MISTAKES], layout=row)])

    def build(self, fig):
        self.ax_d, self.ax_a = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.7, 1]))
        self.names = list(MISTAKES)
        y = np.arange(len(self.names))[::-1]
        self.bars = self.ax_d.barh(y, np.zeros(len(y)), color=OKABE_ITO["blue"], height=0.7)
        self.texts = [self.ax_d.text(0, yi, "", va="center", fontsize=8) for yi in y]
        self.ax_d.set_yticks(y, [MISTAKES[n][0] for n in self.names], fontsize=8)
        self.ax_d.set_xlim(-5, 100)
        self.ax_d.axvline(0, color=STYLE["grid"], linewidth=0.8)
        self.ax_d.set_xlabel("dAP (AP points gained by undoing the cause alone)")
        self.ax_d.set_title("cost of each injected cause", fontsize=10)
        ya = np.arange(3)[::-1]
        self.ap_bars = self.ax_a.barh(ya, np.zeros(3), color=[c for _, c, _ in _AP_BARS],
                                      hatch=[h for _, _, h in _AP_BARS], height=0.6)
        self.ap_texts = [self.ax_a.text(0, yi, "", va="center", fontsize=8) for yi in ya]
        self.ax_a.set_yticks(ya, [n for n, _, _ in _AP_BARS], fontsize=8)
        self.ax_a.set_xlim(0, 115)
        self.ax_a.set_xlabel("box AP (0-100)")
        self.ax_a.set_title("AP", fontsize=10)

    def compute(self, **params):
        return cost_of(tuple(n for n in MISTAKES if params[n]))

    def render(self, r):
        tc = r["task"]
        dap = tc.dap() if tc is not None else {}
        for name, bar, text in zip(self.names, self.bars, self.texts):
            cause = MISTAKES[name][1]
            v = 100 * dap[cause] if name in r["injected_names"] and cause in dap else None
            bar.set_width(0.0 if v is None else v)
            text.set_x(max(v or 0.0, 0.0))
            text.set_text("" if v is None else f" {v:+.1f}")
        for (variant, _, _), bar, text in zip(_AP_BARS, self.ap_bars, self.ap_texts):
            key = variant if variant != "all causes undone" else "all_fixed"
            v = 100 * (tc.metrics(key)["AP"] or 0.0) if tc is not None else 0.0
            bar.set_width(v)
            text.set_x(v)
            text.set_text(f" {v:.1f}")

    def describe(self, r):
        tc = r["task"]
        if tc is None:
            return "<div>No AP measured.</div>"
        ap = {v: 100 * (tc.metrics(v)["AP"] or 0.0) for v in ("reference", "candidate", "all_fixed")}
        e = tc.explained()
        share = "" if e["share"] is None else (f" Undoing them explains {e['share']:.0%} of the gap; "
                                                f"{100 * (e['unexplained'] or 0):.1f} points stay unexplained.")
        head = (f"<div>Box AP against the scenes' ground truth: reference {ap['reference']:.1f}, candidate "
                f"{ap['candidate']:.1f}, all causes undone {ap['all_fixed']:.1f}.{html.escape(share)}</div>")
        rows = [[name, f"{100 * v:+.1f}"] for name, v in tc.dap().items()]
        rows += [[name, f"cannot be undone: {why}"] for name, why in tc.cannot_undo.items()]
        return head + html_table(rows, ["cause found", "dAP (points)"])

    def bench_states(self):
        return [{"scale": v} for v in (False, True)] + [{"label_offset": v} for v in (True, False)]
