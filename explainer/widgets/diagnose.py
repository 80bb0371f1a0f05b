"""Debugging a converted model: the miniature detector under both conventions, injected mismatches and their
diagnosis, two result files compared pair by pair, and a bisection over the knobs.

Every dashboard here works on detections of the miniature detector of :mod:`explainer.course.pipeline`, fitted
under Detectron's conventions on synthetic scenes (weights cached on disk by :func:`explainer.course.cache.course_detector`),
or on two COCO result files the reader uploads. The computations live in :mod:`explainer.course.cache`,
:mod:`explainer.course.compare` and :mod:`explainer.diagnosis`; this module only draws them. It holds the chapter's
four dashboards (a little over 600 lines) so that they share one palette, one table of injectable mistakes and
the helpers that label boxes and format the evidence.
"""

from __future__ import annotations

import html
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

import ipywidgets as widgets
import matplotlib.colors
import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from explainer.conventions import DETECTRON, DETECTRON2, Convention
from explainer.course import cache as CC
from explainer.course import compare as CMP
from explainer.course.pipeline import INFERENCE_KNOBS, STAGES
from explainer.diagnosis import report as Dx
from explainer.diagnosis.injection import MISTAKES, inject_mistakes
from explainer.diagnosis.result_masks import pair_evidence
from explainer.viz.draw import box_segments
from explainer.viz.style import OKABE_ITO, STYLE
from explainer.widgets.base import Dashboard, checkbox, dropdown, html_table, int_slider, register

REF_COLOR = "#FFFFFF"
CAND_COLOR = STYLE["difference"]
COORD_COLORS = {"dx1": OKABE_ITO["blue"], "dy1": OKABE_ITO["sky"], "dx2": OKABE_ITO["vermillion"], "dy2": OKABE_ITO["orange"]}


#: For each inference knob: the value it takes when it is 'changed', shown next to its checkbox.
def _changed_value(knob: str):
    return getattr(DETECTRON2, knob)


def _pool_text(ax, n: int, **kw) -> list:
    return [ax.text(0, 0, "", visible=False, **kw) for _ in range(n)]


def _set_labels(pool: list, boxes, texts: List[str], corner: str = "top") -> None:
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    for i, t in enumerate(pool):
        if i < len(b) and i < len(texts):
            x1, y1, x2, y2 = b[i]
            t.set_position((x1, y1 - 1) if corner == "top" else (x1, y2 + 1))
            t.set_text(texts[i])
            t.set_visible(True)
        else:
            t.set_visible(False)


def _fmt_evidence(ev: Dict[str, Any], limit: int = 4) -> str:
    parts = []
    for k, v in list(ev.items())[:limit]:
        if isinstance(v, float):
            parts.append(f"{k} = {v:.3g}")
        else:
            parts.append(f"{k} = {v}")
    return "; ".join(parts)


def causes_table(diag: "Dx.Diagnosis", injected: Optional[List[str]] = None) -> str:
    """The ranked causes as an HTML table (cause, strength, evidence, fix)."""
    rows = []
    for c in diag.causes:
        mark = " (injected)" if injected and c.name in injected else ""
        rows.append([c.name + mark, f"{c.strength:.2f}", c.explanation, _fmt_evidence(c.evidence), c.fix])
    head = (f"{diag.n_reference} reference and {diag.n_candidate} candidate detections over {diag.n_images} image(s); "
            f"{diag.n_matched} matched one to one.")
    return f"<div>{html.escape(head)}</div>" + html_table(rows, ["cause (ranked)", "strength", "what the pairs show", "evidence", "fix"])


# --------------------------------------------------------------------------------------------------
# 1. both conventions over a scene, and the stage where they first diverge
# --------------------------------------------------------------------------------------------------

#: Width of the bar of a stage whose tensors are equal (a stub, so that "equal" stays visible).
EQUAL_STUB = 4e-4
#: Detections labelled per side in the scene panel (the best-scoring ones).
LABELLED = 3

CANDIDATES = [("Detectron2, weights converted", "d2_converted"),
              ("Detectron2, weights loaded unconverted", "d2_raw")] + [
    (f"Detectron with {k} = {_changed_value(k)!r}", k) for k in INFERENCE_KNOBS]


def _candidate(choice: str) -> Tuple[Convention, bool]:
    if choice == "d2_converted":
        return DETECTRON2, True
    if choice == "d2_raw":
        return DETECTRON2, False
    return DETECTRON.replace(**{choice: _changed_value(choice)}), False


@lru_cache(maxsize=64)
def _both(candidate: str, scene: int) -> Dict[str, Any]:
    """The reference and candidate runs of a scene, compared stage by stage (runs and comparisons cached)."""
    conv, converted = _candidate(candidate)
    ref = CC.run_scene(scene, DETECTRON)
    cand = CC.run_scene(scene, conv, converted)
    return dict(ref=ref, cand=cand, diffs=CMP.stage_differences(ref, cand), first=CMP.first_divergence(ref, cand),
                image=CC.course_detector().test[scene].image, conv=conv, converted=converted, scene=scene,
                agree=CMP.compare_detections(ref.detections, cand.detections))


@register
class BothConventionsDashboard(Dashboard):
    """The miniature detector's detections under Detectron and under a candidate, and where they first diverge."""

    title = "The miniature detector under both conventions"
    figsize = (9.6, 4.0)
    primary = "candidate"

    def make_controls(self):
        return {
            "candidate": dropdown("candidate", CANDIDATES, "d2_converted",
                                  "what the reference (Detectron, as fitted) is compared with", width="430px"),
            "scene": int_slider("scene", 0, CC.N_TEST - 1, 0, "which synthetic test image"),
        }

    def build(self, fig):
        gs = fig.add_gridspec(1, 2, width_ratios=[1.25, 1])
        self.ax = fig.add_subplot(gs[0])
        self.ax_st = fig.add_subplot(gs[1])
        scene = CC.course_detector().test[0]
        H, W = scene.image.shape[-2:]
        self.img = self.ax.imshow(np.zeros((H, W, 3)), extent=(0, W, H, 0), interpolation="nearest")
        self.ref_lines = LineCollection([], colors=REF_COLOR, linewidths=2.0, label="reference: Detectron (as fitted)")
        self.cand_lines = LineCollection([], colors=CAND_COLOR, linewidths=1.6, linestyles="--",
                                         label="candidate (chosen below)")
        self.ax.add_collection(self.ref_lines)
        self.ax.add_collection(self.cand_lines)
        # labels ("class score") for the LABELLED best-scoring detections of each side
        self.ref_txt = _pool_text(self.ax, LABELLED, fontsize=7.5, color="black", va="bottom",
                                  bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.8))
        self.cand_txt = _pool_text(self.ax, LABELLED, fontsize=7.5, color="white", va="top",
                                   bbox=dict(facecolor=CAND_COLOR, edgecolor="none", pad=0.5, alpha=0.85))
        self._scene_shown = None
        self.ax.set_xlim(0, W)
        self.ax.set_ylim(H, 0)
        self.ax.set_xlabel("x (image pixels)")
        self.ax.set_ylabel("y (image pixels)")
        self.ax.legend(handles=[self.ref_lines, self.cand_lines], loc="lower left", fontsize=8, facecolor="#DDDDDD")
        stages = list(STAGES)
        self.stages = stages
        self.bars = self.ax_st.barh(np.arange(len(stages)), np.zeros(len(stages)), color=STYLE["agree"])
        self.bar_txt = _pool_text(self.ax_st, len(stages), fontsize=8, va="center")
        self.ax_st.set_yticks(np.arange(len(stages)), stages)
        self.ax_st.invert_yaxis()
        self.ax_st.set_xscale("symlog", linthresh=1e-3)
        self.ax_st.set_xlim(0, 1e4)
        self.ax_st.set_xticks([0, 1e-3, 1e-1, 1e1, 1e3], ["0", "0.001", "0.1", "10", "1000"])
        self.ax_st.xaxis.set_minor_locator(NullLocator())
        self.ax_st.set_xlabel("largest |difference| in the stage's tensors")
        self.ax_st.set_title("stage by stage", fontsize=10)
        # the key sits below the figure, clear of the bars (which can reach the right edge)
        fig.legend(handles=[Patch(color=STYLE["agree"], label="equal (short stub)"),
                            Patch(color=STYLE["difference"], label="first divergence"),
                            Patch(color=STYLE["accent"], label="differs"),
                            Patch(color=STYLE["neutral"], label="shapes differ (bar clipped)")],
                   loc="outside lower right", ncols=4, fontsize=8, title="stage bars", title_fontsize=8)
        self.warm()

    def compute(self, candidate, scene):
        return _both(candidate, scene)

    def warm(self) -> None:
        """Run every candidate on the first scene now, so that the candidate menu answers from the cache (each
        first run of a candidate takes the detector a second or so on a busy machine)."""
        for _, choice in CANDIDATES:
            _both(choice, 0)

    def render(self, r):
        if self._scene_shown != r["scene"]:  # the image stays in the cached layer while only the candidate changes
            self.img.set_data(r["image"].permute(1, 2, 0).clamp(0, 1).numpy())
            self._scene_shown = r["scene"]
        rd, cd = r["ref"].detections, r["cand"].detections
        self.ref_lines.set_segments(box_segments(rd["boxes"]))
        self.cand_lines.set_segments(box_segments(cd["boxes"]))
        for pool, d, corner in ((self.ref_txt, rd, "top"), (self.cand_txt, cd, "bottom")):
            best = torch.argsort(d["scores"], descending=True, stable=True)[:LABELLED]
            _set_labels(pool, d["boxes"][best], [f"{int(d['labels'][i])} {float(d['scores'][i]):.2f}" for i in best],
                        corner=corner)
        first = r["first"]["stage"] if r["first"] else None
        by_stage = {d["stage"]: d for d in r["diffs"]}
        for i, (bar, txt, st) in enumerate(zip(self.bars, self.bar_txt, self.stages)):
            d = by_stage.get(st, dict(max_diff=0.0, tensor=""))
            v = d["max_diff"]
            shown = 5e3 if not np.isfinite(v) else max(v, EQUAL_STUB)  # equal stages keep a short green stub
            bar.set_width(shown)
            bar.set_color(STYLE["difference"] if st == first else
                          (STYLE["neutral"] if not np.isfinite(v) else (STYLE["accent"] if v > 1e-4 else STYLE["agree"])))
            txt.set_position((max(shown, 0) * 1.3 + 2e-4, i))
            txt.set_text(f"{v:.3g}" if np.isfinite(v) else "")
            txt.set_visible(bool(np.isfinite(v) and v > 1e-4))  # equal and reshaped stages speak through colour

    def describe(self, r):
        first = r["first"]
        if first is None:
            head = "Every stage agrees: the candidate reproduces the reference exactly."
        else:
            head = (f"First divergence: stage <b>{html.escape(first['stage'])}</b> "
                    f"({html.escape(str(first.get('detail', '')))}).")
        agree = r["agree"]
        rows = [[k, f"{v:.3g}" if isinstance(v, float) else v] for k, v in agree.items() if not isinstance(v, (list, dict))]
        return f"<div>{head}</div>" + html_table(rows, ["reference vs candidate", "value"])


# --------------------------------------------------------------------------------------------------
# 2. inject mismatches, read the diagnosis and the residuals it rests on
# --------------------------------------------------------------------------------------------------

#: Differences are shown on a symmetric log axis, linear within +-1 px, clipped at +-SPAN px: the axes never
#: move, so a half pixel, a "+1" and a 50 px rescale error all read off the same fixed scale.
SPAN, LINTHRESH = 300.0, 1.0
_FINE = np.arange(-1.55, 1.5501, 0.1)              # 0.1 px bins centred on 0, +-0.5, +-1
_COARSE = np.geomspace(1.55, SPAN, 13)[1:]
HIST_EDGES = np.r_[-_COARSE[::-1], _FINE, _COARSE]


@lru_cache(maxsize=64)
def _injected(settings: Tuple[Tuple[str, bool], ...]) -> Dict[str, Any]:
    """The diagnosis of the candidate that ``settings`` (control name, checked) describe; cached, so that turning a
    checkbox back answers at once (the detector's runs are cached per convention, the diagnosis here)."""
    params = dict(settings)
    knobs = {k: _changed_value(k) for k in INFERENCE_KNOBS if params[f"knob_{k}"]}
    conv = DETECTRON.replace(**knobs) if knobs else DETECTRON
    ref = CC.detections_over_scenes(DETECTRON)
    cand = Dx.load_detections(CC.detections_over_scenes(conv), name="candidate")
    cand, injected = inject_mistakes(cand, [name for name in MISTAKES if params[name]])
    size = tuple(CC.course_detector().test[0].image.shape[-2:])
    diag = Dx.diagnose(ref, cand, image_size=size)
    return dict(diag=diag, knobs=knobs, injected=injected, conv=conv)


@register
class InjectDashboard(Dashboard):
    """Change knobs of the detector and add post-processing mistakes; the diagnosis names them."""

    title = "Inject mismatches and read the diagnosis"
    figsize = (10.4, 3.6)
    primary = "scale"

    def make_controls(self):
        c = {}
        for k in INFERENCE_KNOBS:
            c[f"knob_{k}"] = checkbox(f"{k} = {_changed_value(k)!r}", False,
                                      f"run the Detectron-fitted detector with {k} set as in Detectron2 (weights unconverted)")
        for name, (label, _, _, tip) in MISTAKES.items():
            c[name] = checkbox(label, name == "scale", tip)
        return c

    def layout_controls(self):
        knobs = [self.controls[f"knob_{k}"] for k in INFERENCE_KNOBS]
        mistakes = [self.controls[n] for n in MISTAKES]
        row = widgets.Layout(flex_flow="row wrap")
        return widgets.VBox([
            widgets.HTML("<b>Knobs changed in the candidate's inference</b>"), widgets.HBox(knobs, layout=row),
            widgets.HTML("<b>Pre- and post-processing mistakes</b>"), widgets.HBox(mistakes, layout=row)])

    def build(self, fig):
        self.ax_h, self.ax_s, self.ax_l = fig.subplots(1, 3, gridspec_kw=dict(width_ratios=[1.2, 1, 0.8]))
        self.stairs = {}
        for k, col in COORD_COLORS.items():
            self.stairs[k] = self.ax_h.stairs(np.zeros(len(HIST_EDGES) - 1), HIST_EDGES, color=col,
                                              linewidth=1.6, label=k.replace("d", "\u0394", 1))
        # one scatter per panel, coloured per point by coordinate (fewer artists to draw per update)
        self.pts = self.ax_s.scatter(np.zeros(0), np.zeros(0), s=12, alpha=0.8, marker="s", linewidths=0)
        self.lvl = self.ax_l.scatter(np.zeros(0), np.zeros(0), s=12, alpha=0.8, marker="s", linewidths=0)
        self.ax_h.set_xlabel("candidate - reference (px; log beyond 1 px)")
        self.ax_h.set_ylabel("matched pairs")
        self.ax_h.set_title("per-coordinate differences", fontsize=10)
        self.ax_h.legend(loc="upper left", fontsize=8)
        self.ax_s.set_xscale("log")
        self.ax_s.set_xlim(8, 256)
        self.ax_s.set_xticks([10, 20, 50, 100, 200], ["10", "20", "50", "100", "200"])
        self.ax_s.xaxis.set_minor_locator(NullLocator())
        self.ax_s.set_xlabel("reference box size sqrt(area) (px)")
        self.ax_s.set_ylabel("candidate - reference (px)")
        self.ax_s.set_title("against box size", fontsize=10)
        self.ax_l.set_xlim(1.5, 5.5)
        self.ax_l.set_xticks([2, 3, 4, 5], ["P2", "P3", "P4", "P5"])
        self.ax_l.set_xlabel("FPN level of\nthe reference box")
        self.ax_l.set_title("against FPN level", fontsize=10)
        self.ax_h.axvline(0, color=STYLE["grid"], linewidth=0.8)
        ticks = [-100, -10, -1, 0, 1, 10, 100]
        self.ax_h.set_xscale("symlog", linthresh=LINTHRESH, linscale=1.5)
        self.ax_h.set_xlim(-SPAN, SPAN)
        self.ax_h.set_xticks(ticks, [str(t) for t in ticks])
        n_ref = sum(len(d["boxes"]) for d in CC.detections_over_scenes(DETECTRON).values())
        self.ax_h.set_ylim(0, max(n_ref, 1) * 1.1)   # at most one count per reference detection
        for ax in (self.ax_s, self.ax_l):
            ax.axhline(0, color=STYLE["grid"], linewidth=0.8)
            ax.set_yscale("symlog", linthresh=LINTHRESH, linscale=1.5)
            ax.set_ylim(-SPAN, SPAN)
            ax.set_yticks(ticks, [str(t) for t in ticks])
            ax.yaxis.set_minor_locator(NullLocator())
        self.ax_h.xaxis.set_minor_locator(NullLocator())
        self.empty = self.ax_h.text(0.5, 0.5, "", transform=self.ax_h.transAxes, ha="center", color=STYLE["neutral"])

    def compute(self, **params):
        return _injected(tuple(sorted((k, bool(v)) for k, v in params.items())))

    def render(self, r):
        res = r["diag"].residuals
        vals = {k: np.clip(res[k].double().numpy(), -SPAN, SPAN) for k in COORD_COLORS}
        for k, v in vals.items():
            counts, _ = np.histogram(v, bins=HIST_EDGES)
            self.stairs[k].set_data(counts, HIST_EDGES)
        size = res["size"].double().numpy()
        level = res["level"].double().numpy()
        jit = np.linspace(-0.25, 0.25, max(len(level), 1))[: len(level)]
        n = len(size)
        cols = np.repeat(np.array([matplotlib.colors.to_rgba(c) for c in COORD_COLORS.values()]), n, axis=0)
        ys = np.concatenate(list(vals.values()))
        self.pts.set_offsets(np.c_[np.tile(size, 4), ys])
        self.lvl.set_offsets(np.c_[np.concatenate([level + jit * 0.5 + (i - 1.5) * 0.12 for i in range(4)]), ys])
        for sc in (self.pts, self.lvl):
            sc.set_facecolors(cols)
        self.empty.set_text("" if len(vals["dx1"]) else "no matched pairs")

    def describe(self, r):
        inj = list(r["injected"])
        knobs = ", ".join(f"{k}={v!r}" for k, v in r["knobs"].items()) or "none"
        head = (f"<div>Knobs changed: {html.escape(knobs)}. Mistakes injected: "
                f"{html.escape(', '.join(inj) or 'none')}.</div>")
        return head + causes_table(r["diag"], injected=inj)

    def bench_states(self):
        return [{"scale": v} for v in (True, False)] + [{"label_offset": v} for v in (True, False)] + [
            {"knob_roi_aligned": v} for v in (True, False)]


# --------------------------------------------------------------------------------------------------
# 3. two result files: upload, diagnose, browse matched pairs
# --------------------------------------------------------------------------------------------------


EXAMPLES = [
    ("example: boxes not rescaled + labels shifted by one", ("scale", "label_offset")),
    ("example: pixel indices (+0.5) and score threshold", ("half_pixel_shift", "threshold_or_topk")),
    ("example: xyxy written into bbox", ("xywh_as_xyxy",)),
    ("example: masks pasted Detectron's way and Detectron2's (same boxes)", "paste"),
    ("example: Detectron2 run of the converted detector", ()),
    ("the two files uploaded below", "upload"),
]


@lru_cache(maxsize=8)
def _example(mistakes: Any) -> Tuple[list, list]:
    """A built-in pair of COCO result lists (masks as RLE): the reference with ``mistakes`` injected, the
    reference with Detectron2's mask paste ("paste"), or the converted run (no mistakes)."""
    ref = CC.detections_over_scenes(DETECTRON)
    if mistakes == "paste":
        other = CC.detections_over_scenes(DETECTRON.replace(mask_paste="paste_masks_in_image"))
        return Dx.to_coco_results(ref), Dx.to_coco_results(other)
    if not mistakes:
        return Dx.to_coco_results(ref), Dx.to_coco_results(CC.detections_over_scenes(DETECTRON2, converted=True))
    cand, _ = inject_mistakes(Dx.load_detections(ref, name="candidate"), mistakes)
    return Dx.to_coco_results(ref), Dx.to_coco_results(cand)


def _pair_masks(diag, k: int) -> Optional[Dict[str, Any]]:
    """Pair ``k``'s masks compared (:func:`explainer.diagnosis.result_masks.pair_evidence`), or why they cannot be; None
    when neither file has masks."""
    if diag.masks is None:
        return None
    r, c = diag.masks["ref"][k], diag.masks["cand"][k]
    if r is None or c is None:
        return {"problem": f"no readable mask on the {'reference' if r is None else 'candidate'} side"}
    try:
        return pair_evidence(r, c)
    except ValueError as e:
        return {"problem": f"the masks cannot be decoded ({e})"}


def _uploaded(widget, side: str) -> Dx.Detections:
    """The uploaded file's detections, parsed from the bytes in memory (no file is written)."""
    if not widget.value:
        raise ValueError(f"no {side} file yet: upload a COCO results JSON ([{{'image_id', 'category_id', 'bbox', 'score'}}])")
    f = widget.value[0]
    return Dx.detections_from_json(bytes(f["content"]), name=str(f["name"]))


#: The pair panel shows this much around the reference box (in box widths and heights).
PAIR_MARGIN = 0.6
#: Limits of the image panel: the smallest of these that holds every box.
NICE_EXTENTS = tuple(float(b * m) for b in (2 ** k for k in range(4, 16)) for m in (1.0, 1.5))


@register
class UploadDashboard(Dashboard):
    """Diagnose two COCO result files and browse their matched pairs drawn over each other."""

    title = "Two result files: diagnosis and matched pairs"
    figsize = (9.6, 4.0)
    # the pair slider is what a reader moves most, and every move draws another pair; a move of the source menu
    # onto "the two files uploaded below" before any upload leaves the figure as it was (the read-out says why)
    primary = "pair"

    def make_controls(self):
        return {
            "source": dropdown("detections", [(label, i) for i, (label, _) in enumerate(EXAMPLES)], 0,
                               "a built-in example, or the two files uploaded below", width="470px"),
            "reference": widgets.FileUpload(accept=".json", multiple=False, description="reference.json",
                                            tooltip="the original model's COCO results (JSON list)"),
            "candidate": widgets.FileUpload(accept=".json", multiple=False, description="candidate.json",
                                            tooltip="the converted model's COCO results (JSON list)"),
            "pair": int_slider("pair", 0, 50, 0, "which matched pair to draw (sorted by largest difference)"),
        }

    def build(self, fig):
        self.ax_all, self.ax_pair = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.3, 1]))
        for ax in (self.ax_all, self.ax_pair):
            ax.set_facecolor("#F4F4F4")
            ax.set_aspect("equal")
        self.ax_all.set_xlabel("x (image pixels)")
        self.ax_all.set_ylabel("y (image pixels)")
        self.all_ref = LineCollection([], colors=STYLE["reference"], linewidths=0.8, alpha=0.6)
        self.all_cand = LineCollection([], colors=CAND_COLOR, linewidths=0.8, linestyles="--", alpha=0.6)
        self.sel_all = LineCollection([], colors=STYLE["accent"], linewidths=2.5)
        for lc in (self.all_ref, self.all_cand, self.sel_all):
            self.ax_all.add_collection(lc)
        # the selected pair in its reference box's frame: the reference is always the unit square
        self.pair_ref = LineCollection([], colors=STYLE["reference"], linewidths=2.2, label="reference")
        self.pair_cand = LineCollection([], colors=CAND_COLOR, linewidths=2.0, linestyles="--", label="candidate")
        self.ax_pair.add_collection(self.pair_ref)
        self.ax_pair.add_collection(self.pair_cand)
        # the pair's two masks under the boxes, in the same frame (reference blue, candidate orange, both: dark blue)
        self.pair_masks = self.ax_pair.imshow(np.zeros((1, 1, 4)), extent=(0, 1, 1, 0), interpolation="nearest",
                                              zorder=0, visible=False)
        self.mask_txt = self.ax_pair.text(0.02, 0.02, "", transform=self.ax_pair.transAxes, fontsize=8, va="bottom",
                                          bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1.5),
                                          visible=False)
        self.ax_pair.set_xlim(-PAIR_MARGIN, 1 + PAIR_MARGIN)
        self.ax_pair.set_ylim(1 + PAIR_MARGIN, -PAIR_MARGIN)
        self.ax_pair.set_xlabel("x in reference box widths (0 = its x1, 1 = its x2)")
        self.ax_pair.set_ylabel("y in reference box heights")
        self.ax_pair.legend(handles=[self.pair_ref, self.pair_cand], loc="lower right", fontsize=8)
        # corner differences: above the top-left corner, below the bottom-right one (y points down)
        self.corner_txt = [self.ax_pair.text(0, 0, "", fontsize=8, va="bottom", ha="left", visible=False),
                           self.ax_pair.text(0, 0, "", fontsize=8, va="top", ha="right", visible=False)]
        self.ax_all.set_title("matched pairs of the selected pair's image", fontsize=10)
        self.ax_pair.set_title("the selected pair, in its reference box's frame", fontsize=10)
        self._extent = None
        self._cache: Dict[Any, Any] = {}

    def _sides(self, source):
        kind = EXAMPLES[source][1]
        if kind == "upload":
            return (_uploaded(self.controls["reference"], "reference"), _uploaded(self.controls["candidate"], "candidate"))
        return _example(kind)

    def _key(self, source):
        if EXAMPLES[source][1] != "upload":
            return ("example", source)
        files = []
        for side in ("reference", "candidate"):
            v = self.controls[side].value
            files.append((v[0]["name"], hash(bytes(v[0]["content"]))) if v else None)
        return ("upload", tuple(files))

    def compute(self, source, reference, candidate, pair):
        key = self._key(source)
        if key not in self._cache:  # the pair slider only browses: the diagnosis is computed once per input
            ref, cand = self._sides(source)
            diag = Dx.diagnose(ref, cand)
            p = diag.pairs
            if len(p["iou"]):
                order = diag.pairs_by_difference()
                both = torch.cat([p["ref_boxes"], p["cand_boxes"]])
                # a round extent: inputs of the same image size share the limits (no re-layout between them)
                extent = next(v for v in NICE_EXTENTS if v >= float(both.max()) or v == NICE_EXTENTS[-1])
            else:
                order, extent = torch.zeros(0, dtype=torch.long), 1.0
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (diag, order, extent)
        diag, order, extent = self._cache[key]
        m = len(diag.pairs["iou"])
        pair = min(pair, max(m - 1, 0))
        return dict(diag=diag, order=order, pair=pair, n_pairs=m, extent=extent,
                    mask=_pair_masks(diag, int(order[pair])) if m else None)

    def render(self, r):
        s = self.controls["pair"]
        self._holding = True
        try:
            s.max = max(r["n_pairs"] - 1, 0)
        finally:
            self._holding = False
        p = r["diag"].pairs
        if not r["n_pairs"]:
            for lc in (self.all_ref, self.all_cand, self.sel_all, self.pair_ref, self.pair_cand):
                lc.set_segments([])
            for t in self.corner_txt + [self.mask_txt, self.pair_masks]:
                t.set_visible(False)
            return
        if self._extent != r["extent"]:  # limits change with the input only, not while browsing its pairs
            self.ax_all.set_xlim(0, r["extent"])
            self.ax_all.set_ylim(r["extent"], 0)
            self._extent = r["extent"]
        k = int(r["order"][r["pair"]])
        img = int(p["image"][k])
        same = p["image"] == img
        rb, cb = p["ref_boxes"][k].tolist(), p["cand_boxes"][k].tolist()
        self.all_ref.set_segments(box_segments(p["ref_boxes"][same]))
        self.all_cand.set_segments(box_segments(p["cand_boxes"][same]))
        self.sel_all.set_segments(box_segments([rb, cb]))
        w, h = max(rb[2] - rb[0], 1e-9), max(rb[3] - rb[1], 1e-9)
        rel = [(cb[0] - rb[0]) / w, (cb[1] - rb[1]) / h, (cb[2] - rb[0]) / w, (cb[3] - rb[1]) / h]
        self.pair_ref.set_segments(box_segments([[0.0, 0.0, 1.0, 1.0]]))
        self.pair_cand.set_segments(box_segments([rel]))
        d = [c - q for c, q in zip(cb, rb)]
        lo = -PAIR_MARGIN * 0.95
        hi = 1 + PAIR_MARGIN * 0.95
        corners = [(min(max(rel[0], lo), hi), min(max(rel[1], lo), hi), f"\u0394x1 {d[0]:+.2f} px\n\u0394y1 {d[1]:+.2f} px"),
                   (min(max(rel[2], lo), hi), min(max(rel[3], lo), hi), f"\u0394x2 {d[2]:+.2f} px\n\u0394y2 {d[3]:+.2f} px")]
        for t, (x, y, lab) in zip(self.corner_txt, corners):
            t.set_position((x, y))
            t.set_text(lab)
            t.set_visible(True)
        self._render_masks(r.get("mask"), rb)

    def _render_masks(self, ev, rb) -> None:
        """Both masks of the selected pair (cropped) in its reference box's frame, with their IoU and boundary F."""
        show = isinstance(ev, dict) and "ref" in ev
        self.pair_masks.set_visible(show)
        self.mask_txt.set_visible(ev is not None)
        if ev is None:
            return
        if not show:
            self.mask_txt.set_text(ev["problem"])
            return
        a, b = ev["ref"].numpy(), ev["cand"].numpy()
        rgba = np.zeros(a.shape + (4,))
        rgba[a & b] = (0.0, 0.45, 0.70, 0.35)
        rgba[a & ~b] = (0.0, 0.45, 0.70, 0.8)
        rgba[b & ~a] = (0.90, 0.62, 0.0, 0.8)
        w, h = max(rb[2] - rb[0], 1e-9), max(rb[3] - rb[1], 1e-9)
        y0, x0 = ev["origin"]
        self.pair_masks.set_data(rgba)
        self.pair_masks.set_extent(((x0 - rb[0]) / w, (x0 + a.shape[1] - rb[0]) / w,
                                    (y0 + a.shape[0] - rb[1]) / h, (y0 - rb[1]) / h))
        self.mask_txt.set_text(f"mask IoU {ev['iou']:.3f}, boundary F {ev['boundary_f']:.3f}, "
                               f"area {ev['area_difference']:+d} px\nblue: reference only, orange: candidate only")

    def describe(self, r):
        diag, p = r["diag"], r["diag"].pairs
        out = causes_table(diag)
        if r["n_pairs"]:
            k = int(r["order"][r["pair"]])
            out += (f"<div>Pair {r['pair'] + 1} of {r['n_pairs']} (largest difference first), image "
                    f"{html.escape(str(diag.image_ids[int(p['image'][k])]))}; the orange boxes on the left.</div>")
            rows = [["reference", [round(v, 2) for v in p["ref_boxes"][k].tolist()], int(p["ref_labels"][k]), f"{float(p['ref_scores'][k]):.3f}"],
                    ["candidate", [round(v, 2) for v in p["cand_boxes"][k].tolist()], int(p["cand_labels"][k]), f"{float(p['cand_scores'][k]):.3f}"]]
            out += html_table(rows, ["selected pair", "box (x1, y1, x2, y2)", "label", "score"],
                              caption=f"IoU {float(p['iou'][k]):.3f}")
            ev = r.get("mask")
            if ev is not None and "ref" in ev:
                out += (f"<div>Masks of the selected pair: mask IoU {ev['iou']:.3f}, boundary F-score "
                        f"{ev['boundary_f']:.3f} (contours within 1 px), area candidate - reference "
                        f"{ev['area_difference']:+d} px; {ev['differ']} pixels differ, {ev['within_1px']} of them within "
                        f"1 px and {ev['within_2px']} within 2 px of the reference contour.</div>")
            elif ev is not None:
                out += f"<div>Masks of the selected pair: {html.escape(ev['problem'])}.</div>"
        return out

    def bench_states(self):
        return [{"pair": i} for i in range(0, 12)] + [{"source": 0}, {"source": 1}]


# --------------------------------------------------------------------------------------------------
# 4. bisect the knobs
# --------------------------------------------------------------------------------------------------

HIDDEN = [(k, (k,)) for k in INFERENCE_KNOBS] + [("anchor_offset + roi_aligned", ("anchor_offset", "roi_aligned"))]


@lru_cache(maxsize=16)
def _bisect(hidden: Tuple[str, ...], scene: int = 0):
    """Bisect from Detectron2's conventions towards Detectron's on the converted detector, against a reference
    that the same converted detector produced with the ``hidden`` knobs at Detectron's values."""
    reference = CC.run_scene(scene, CC.reference_convention(hidden), converted=True)
    report = CMP.bisect_conventions(lambda conv: CC.run_scene(scene, conv, converted=True), reference,
                                    start=DETECTRON2, towards=DETECTRON)
    return report, CC.reference_convention(hidden)


@register
class BisectDashboard(Dashboard):
    """The reference run kept some knobs at Detectron's values: bisect the conventions to find which."""

    title = "Bisect the conventions: which knob was changed?"
    figsize = (8.0, 3.4)
    primary = "hidden"

    def make_controls(self):
        return {"hidden": dropdown("left at Detectron's value", [(label, i) for i, (label, _) in enumerate(HIDDEN)], 4,
                                   "the knob(s) the reference run kept at Detectron's value; the bisection does not "
                                   "see this choice", width="420px")}

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        # one fixed row per knob, and a last row for the best combination tried (pairs, then a greedy search)
        self.rows = list(INFERENCE_KNOBS) + ["(combination)"]
        n = len(self.rows)
        self.bars = self.ax.barh(np.arange(n), np.zeros(n), color=STYLE["neutral"])
        self.txt = _pool_text(self.ax, n, fontsize=8, va="center")
        self.combo = self.ax.text(0.02, n - 1, "", fontsize=8, va="center", color="black")
        self.base = self.ax.axvline(0, color=STYLE["reference"], linestyle=":", label="agreement before any change")
        self.ax.set_xlim(0, 1.25)
        self.ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        self.ax.set_yticks(np.arange(n), [f"set back {k}" for k in INFERENCE_KNOBS] + ["best combination"])
        self.ax.set_ylim(n - 0.5, -0.5)
        self.ax.set_xlabel("agreement with the reference (fraction of its detections reproduced)")
        self.ax.set_title("one knob at a time, Detectron2 towards Detectron (green: agrees)", fontsize=10)
        self.ax.legend(loc="upper right", fontsize=8)
        self.warm()

    def warm(self) -> None:
        """Bisect for every choice of the menu now, so that moving it answers from the cache (each bisection runs
        the detector under a dozen conventions: a second or so on a busy machine)."""
        for _, hidden in HIDDEN:
            _bisect(hidden)

    def compute(self, hidden):
        report, changed = _bisect(HIDDEN[hidden][1])
        return dict(report=report, changed=changed, hidden=HIDDEN[hidden][1])

    def render(self, r):
        rep = r["report"]
        found = tuple(rep.found) if rep.found else None
        singles = {t["knobs"][0]: t for t in rep.trials if len(t["knobs"]) == 1}
        combos = [t for t in rep.trials if len(t["knobs"]) > 1]
        best = None
        if combos:
            best = next((t for t in combos if found and tuple(t["knobs"]) == found),
                        max(combos, key=lambda t: (t["agreement"], t["mean_iou"])))
        for i, (row, b, t) in enumerate(zip(self.rows, self.bars, self.txt)):
            trial = singles.get(row) if i < len(self.rows) - 1 else best
            a = float(trial["agreement"]) if trial else 0.0
            b.set_width(a)
            hit = trial is not None and found is not None and tuple(trial["knobs"]) == found
            b.set_color(STYLE["agree"] if hit else STYLE["neutral"])
            t.set_position((a + 0.01, i))
            t.set_text(f"{a:.2f}")
            t.set_visible(trial is not None and a > 0)   # fewer texts to draw: zero bars need no number
        if best:
            label = " + ".join(best["knobs"])
        else:                       # no pair was tried: one knob already agreed, or nothing needed one
            label = "not needed: one knob is enough" if found else "none tried"
        self.combo.set_text(label)
        self.base.set_xdata([rep.baseline, rep.baseline])

    def describe(self, r):
        rep = r["report"]
        hidden = ", ".join(r["hidden"])
        rows = [[" + ".join(t["knobs"]), f"{float(t['agreement']):.3f}", f"{float(t['max_box_diff']):.3g}", t["n_detections"]]
                for t in rep.trials]
        ok = rep.found is not None and set(rep.found) == set(r["hidden"])
        if rep.baseline >= 1.0:
            return (f"<div>The reference kept <b>{html.escape(hidden)}</b> at Detectron's value, and its detections "
                    f"equal Detectron2's run anyway: this knob does not change this detector's output on this image, "
                    f"so there is nothing to find (the bisection did not single out a knob).</div>")
        verdict = "found the changed knob(s)" if ok else "did not single out the changed knob(s)"
        return (f"<div>The reference ran the converted detector under Detectron2's conventions except "
                f"<b>{html.escape(hidden)}</b> (hidden from the bisection). Bisection from Detectron2 towards "
                f"Detectron {verdict}: "
                f"<b>{html.escape(' + '.join(rep.found) if rep.found else 'none')}</b>.</div>"
                + html_table(rows, ["knob(s) set back", "agreement", "max box diff (px)", "detections"]))
