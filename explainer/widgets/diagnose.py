"""Debugging a converted model: the miniature detector under both conventions, injected mismatches and their
diagnosis, two result files compared pair by pair, and a bisection over the knobs.

Every dashboard here works on detections of the miniature detector of :mod:`explainer.pipeline`, fitted
once per kernel under Detectron's conventions on synthetic scenes (see :func:`course_detector`), or on two
COCO result files the reader uploads.
"""

from __future__ import annotations

import html
import json
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.collections import LineCollection

from .. import diagnose as D
from .. import pipeline as P
from ..conventions import DETECTRON, DETECTRON2, Convention
from ..viz.draw import box_segments
from ..viz.style import OKABE_ITO, STYLE
from .base import Dashboard, checkbox, dropdown, html_table, int_slider, register

REF_COLOR = "#FFFFFF"
CAND_COLOR = STYLE["difference"]
COORD_COLORS = {"dx1": OKABE_ITO["blue"], "dy1": OKABE_ITO["sky"], "dx2": OKABE_ITO["vermillion"], "dy2": OKABE_ITO["orange"]}

#: Post-processing mistakes the reader can inject: control name -> (label, cause, inject parameters, tooltip).
MISTAKES: Dict[str, Tuple[str, str, Dict[str, Any], str]] = {
    "scale": ("boxes not rescaled (x 0.8)", "scale", {"factor": 0.8},
              "the boxes stay in the resized input's frame: every coordinate times 0.8"),
    "anisotropic_scale": ("height and width swapped in the rescale", "anisotropic_scale", {"sx": 0.75, "sy": 4 / 3},
                          "x scaled by H/W and y by W/H, as when (h, w) is passed where (w, h) is expected"),
    "translation": ("padding not removed (+16, +8 px)", "translation", {"dx": 16.0, "dy": 8.0},
                    "boxes keep the offset of the padded input"),
    "half_pixel_shift": ("pixel indices as coordinates (+0.5)", "half_pixel_shift", {},
                         "all four coordinates shifted by half a pixel"),
    "plus_one": ("x2, y2 exported as inclusive (+1)", "plus_one", {}, "x2 and y2 off by exactly one pixel"),
    "xywh_as_xyxy": ("xyxy written into COCO's bbox", "xywh_as_xyxy", {},
                     "x2, y2 written where COCO expects width and height"),
    "label_offset": ("labels shifted by one", "label_offset", {"offset": 1},
                     "background-first labels read as background-last"),
    "coco_category_ids": ("contiguous labels as COCO ids", "coco_category_ids", {},
                          "0..79 labels written where COCO's 1..90 category ids are expected"),
    "threshold_or_topk": ("score threshold 0.9", "threshold_or_topk", {"score_threshold": 0.9},
                          "detections scored 0.9 or less dropped (a different SCORE_THRESH_TEST)"),
}

#: For each inference knob: the value it takes when it is 'changed', shown next to its checkbox.
def _changed_value(knob: str):
    return getattr(DETECTRON2, knob)


# --------------------------------------------------------------------------------------------------
# the course's detector, fitted once per kernel
# --------------------------------------------------------------------------------------------------

N_TRAIN, N_TEST = 8, 6


@lru_cache(maxsize=1)
def course_detector() -> Dict[str, Any]:
    """The miniature detector fitted under Detectron's conventions, its test scenes and reference runs."""
    t0 = time.perf_counter()
    train = P.synthetic_scenes(n=N_TRAIN, seed=0)
    det = P.fit_detector(train, convention=DETECTRON, seed=0)
    fit_s = time.perf_counter() - t0
    test = P.synthetic_scenes(n=N_TEST, seed=1000)
    return dict(detector=det, converted=det.converted(DETECTRON2), train=train, test=test, fit_s=fit_s)


_RUNS: Dict[Tuple[int, Convention, bool], "P.Run"] = {}


def run_scene(index: int, convention: Convention, converted: bool = False) -> "P.Run":
    """One scene through the detector (or its properly converted copy) under ``convention``; cached."""
    key = (index, convention, converted)
    if key not in _RUNS:
        c = course_detector()
        det = c["converted"] if converted else c["detector"]
        _RUNS[key] = det.run(c["test"][index], convention)
    return _RUNS[key]


def detections_over_scenes(convention: Convention, converted: bool = False) -> Dict[int, Dict[str, torch.Tensor]]:
    """{scene index: detections} over the test scenes, as :func:`explainer.diagnose.diagnose` takes them."""
    return {i: dict(run_scene(i, convention, converted).detections) for i in range(N_TEST)}


def stage_differences(a: "P.Run", b: "P.Run") -> List[Dict[str, Any]]:
    """Per stage in pipeline order: the largest absolute difference over its tensors (inf when shapes differ)."""
    out = []
    for stage in a.stages:
        if stage not in b.stages:
            continue
        worst, what = 0.0, ""
        for k, ta in a.stages[stage].items():
            tb = b.stages[stage].get(k)
            if not isinstance(ta, torch.Tensor) or not isinstance(tb, torch.Tensor):
                continue
            if ta.shape != tb.shape:
                worst, what = float("inf"), f"{k}: shape {tuple(ta.shape)} vs {tuple(tb.shape)}"
                break
            if ta.numel():
                d = float((ta.double() - tb.double()).abs().max())
                if d > worst:
                    worst, what = d, k
        out.append(dict(stage=stage, max_diff=worst, tensor=what))
    return out


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


def causes_table(diag: "D.Diagnosis", injected: Optional[List[str]] = None) -> str:
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

CANDIDATES = [("Detectron2, weights converted", "d2_converted"),
              ("Detectron2, weights loaded unconverted", "d2_raw")] + [
    (f"Detectron with {k} = {_changed_value(k)!r}", k) for k in P.INFERENCE_KNOBS]


def _candidate(choice: str) -> Tuple[Convention, bool]:
    if choice == "d2_converted":
        return DETECTRON2, True
    if choice == "d2_raw":
        return DETECTRON2, False
    return DETECTRON.replace(**{choice: _changed_value(choice)}), False


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
            "scene": int_slider("scene", 0, N_TEST - 1, 0, "which synthetic test image"),
        }

    def build(self, fig):
        gs = fig.add_gridspec(1, 2, width_ratios=[1.25, 1])
        self.ax = fig.add_subplot(gs[0])
        self.ax_st = fig.add_subplot(gs[1])
        scene = course_detector()["test"][0]
        H, W = scene.image.shape[-2:]
        self.img = self.ax.imshow(np.zeros((H, W, 3)), extent=(0, W, H, 0), interpolation="nearest")
        self.ref_lines = LineCollection([], colors=REF_COLOR, linewidths=2.0, label="reference: Detectron (as fitted)")
        self.cand_lines = LineCollection([], colors=CAND_COLOR, linewidths=1.6, linestyles="--", label="candidate")
        self.ax.add_collection(self.ref_lines)
        self.ax.add_collection(self.cand_lines)
        self.ref_txt = _pool_text(self.ax, 30, fontsize=7.5, color="black", va="bottom",
                                  bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.8))
        self.cand_txt = _pool_text(self.ax, 30, fontsize=7.5, color="white", va="top",
                                   bbox=dict(facecolor=CAND_COLOR, edgecolor="none", pad=0.5, alpha=0.85))
        self.ax.set_xlim(0, W)
        self.ax.set_ylim(H, 0)
        self.ax.set_xlabel("x (image pixels)")
        self.ax.set_ylabel("y (image pixels)")
        self.ax.legend(handles=[self.ref_lines, self.cand_lines], loc="lower left", fontsize=8, facecolor="#DDDDDD")
        stages = list(P.STAGES)
        self.stages = stages
        self.bars = self.ax_st.barh(np.arange(len(stages)), np.zeros(len(stages)), color=STYLE["agree"])
        self.bar_txt = _pool_text(self.ax_st, len(stages), fontsize=8, va="center")
        self.ax_st.set_yticks(np.arange(len(stages)), stages)
        self.ax_st.invert_yaxis()
        self.ax_st.set_xscale("symlog", linthresh=1e-3)
        self.ax_st.set_xlim(0, 1e4)
        self.ax_st.set_xlabel("largest |difference| in the stage's tensors")
        self.ax_st.set_title("stage by stage (first divergence highlighted)", fontsize=10)

    def compute(self, candidate, scene):
        conv, converted = _candidate(candidate)
        ref = run_scene(scene, DETECTRON)
        cand = run_scene(scene, conv, converted)
        diffs = stage_differences(ref, cand)
        first = P.first_divergence(ref, cand)
        image = course_detector()["test"][scene].image
        return dict(ref=ref, cand=cand, diffs=diffs, first=first, image=image, conv=conv, converted=converted)

    def render(self, r):
        self.img.set_data(r["image"].permute(1, 2, 0).clamp(0, 1).numpy())
        rd, cd = r["ref"].detections, r["cand"].detections
        self.ref_lines.set_segments(box_segments(rd["boxes"]))
        self.cand_lines.set_segments(box_segments(cd["boxes"]))
        label = f"candidate: {r['conv'].name}{', weights converted' if r['converted'] else ''}"
        leg = self.ax.get_legend()
        if leg is not None and leg.get_texts()[1].get_text() != label:
            leg.get_texts()[1].set_text(label)
        _set_labels(self.ref_txt, rd["boxes"], [f"{int(l)} {float(s):.2f}" for l, s in zip(rd["labels"], rd["scores"])])
        _set_labels(self.cand_txt, cd["boxes"], [f"{int(l)} {float(s):.2f}" for l, s in zip(cd["labels"], cd["scores"])],
                    corner="bottom")
        first = r["first"]["stage"] if r["first"] else None
        by_stage = {d["stage"]: d for d in r["diffs"]}
        for i, (bar, txt, st) in enumerate(zip(self.bars, self.bar_txt, self.stages)):
            d = by_stage.get(st, dict(max_diff=0.0, tensor=""))
            v = d["max_diff"]
            shown = 5e3 if not np.isfinite(v) else v
            bar.set_width(shown)
            bar.set_color(STYLE["difference"] if st == first else (STYLE["accent"] if v > 1e-4 else STYLE["agree"]))
            txt.set_position((max(shown, 0) * 1.3 + 2e-4, i))
            txt.set_text("shapes differ" if not np.isfinite(v) else (f"{v:.3g}" if v > 1e-4 else "equal"))
            txt.set_visible(True)

    def describe(self, r):
        first = r["first"]
        if first is None:
            head = "Every stage agrees: the candidate reproduces the reference exactly."
        else:
            head = (f"First divergence: stage <b>{html.escape(first['stage'])}</b> "
                    f"({html.escape(str(first.get('detail', '')))}).")
        rd, cd = r["ref"].detections, r["cand"].detections
        agree = P.compare_detections(rd, cd)
        rows = [[k, f"{v:.3g}" if isinstance(v, float) else v] for k, v in agree.items() if not isinstance(v, (list, dict))]
        return f"<div>{head}</div>" + html_table(rows, ["reference vs candidate", "value"])


# --------------------------------------------------------------------------------------------------
# 2. inject mismatches, read the diagnosis and the residuals it rests on
# --------------------------------------------------------------------------------------------------

HIST_BINS = 41
NICE_SPANS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)


@register
class InjectDashboard(Dashboard):
    """Change knobs of the detector and add post-processing mistakes; the diagnosis names them."""

    title = "Inject mismatches and read the diagnosis"
    figsize = (10.4, 3.6)
    primary = "scale"

    def make_controls(self):
        c = {}
        for k in P.INFERENCE_KNOBS:
            c[f"knob_{k}"] = checkbox(f"{k} = {_changed_value(k)!r}", False,
                                      f"run the Detectron-fitted detector with {k} set as in Detectron2 (weights unconverted)")
        for name, (label, _, _, tip) in MISTAKES.items():
            c[name] = checkbox(label, name == "scale", tip)
        return c

    def layout_controls(self):
        knobs = [self.controls[f"knob_{k}"] for k in P.INFERENCE_KNOBS]
        mistakes = [self.controls[n] for n in MISTAKES]
        row = widgets.Layout(flex_flow="row wrap")
        return widgets.VBox([
            widgets.HTML("<b>Knobs changed in the candidate's inference</b>"), widgets.HBox(knobs, layout=row),
            widgets.HTML("<b>Pre- and post-processing mistakes</b>"), widgets.HBox(mistakes, layout=row)])

    def build(self, fig):
        self.ax_h, self.ax_s, self.ax_l = fig.subplots(1, 3, gridspec_kw=dict(width_ratios=[1.2, 1, 0.8]))
        self.stairs, self.pts, self.lvl = {}, {}, {}
        for i, (k, col) in enumerate(COORD_COLORS.items()):
            self.stairs[k] = self.ax_h.stairs(np.zeros(HIST_BINS), np.linspace(-1, 1, HIST_BINS + 1), color=col,
                                              linewidth=1.6, label=k.replace("d", "\u0394", 1))
            self.pts[k] = self.ax_s.scatter([], [], s=12, color=col, alpha=0.8, label=k.replace("d", "\u0394", 1))
            self.lvl[k] = self.ax_l.scatter([], [], s=12, color=col, alpha=0.8)
        self.ax_h.set_xlabel("candidate - reference (px)")
        self.ax_h.set_ylabel("matched pairs")
        self.ax_h.set_title("per-coordinate differences", fontsize=10)
        self.ax_h.legend(loc="upper left", fontsize=8)
        self.ax_s.set_xscale("log")
        self.ax_s.set_xlim(8, 256)
        self.ax_s.set_xlabel("reference box size sqrt(area) (px)")
        self.ax_s.set_ylabel("difference (px)")
        self.ax_s.set_title("against box size", fontsize=10)
        self.ax_l.set_xlim(1.5, 5.5)
        self.ax_l.set_xticks([2, 3, 4, 5], ["P2", "P3", "P4", "P5"])
        self.ax_l.set_xlabel("FPN level of\nthe reference box")
        self.ax_l.set_title("against FPN level", fontsize=10)
        self.ax_h.axvline(0, color=STYLE["grid"], linewidth=0.8)
        for ax in (self.ax_s, self.ax_l):
            ax.axhline(0, color=STYLE["grid"], linewidth=0.8)
        self.empty = self.ax_h.text(0.5, 0.5, "", transform=self.ax_h.transAxes, ha="center", color=STYLE["neutral"])

    def compute(self, **params):
        knobs = {k: _changed_value(k) for k in P.INFERENCE_KNOBS if params[f"knob_{k}"]}
        conv = DETECTRON.replace(**knobs) if knobs else DETECTRON
        ref = detections_over_scenes(DETECTRON)
        cand = D.load_detections(detections_over_scenes(conv), name="candidate")
        injected = []
        for name, (_, cause, kw, _) in MISTAKES.items():
            if params[name]:
                cand = D.inject(cand, cause, **kw)
                injected.append(cause)
        size = tuple(course_detector()["test"][0].image.shape[-2:])
        diag = D.diagnose(ref, cand, image_size=size)
        return dict(diag=diag, knobs=knobs, injected=injected, conv=conv)

    def render(self, r):
        res = r["diag"].residuals
        vals = {k: res[k].double().numpy() for k in COORD_COLORS}
        allv = np.concatenate([v for v in vals.values()]) if len(vals["dx1"]) else np.zeros(0)
        p99 = float(np.percentile(np.abs(allv), 99)) if allv.size else 0.0
        span = next(s for s in NICE_SPANS if s >= 1.1 * p99 or s == NICE_SPANS[-1])  # limits change in steps
        edges = np.linspace(-span, span, HIST_BINS + 1)
        ymax = 1
        for k, v in vals.items():
            counts, _ = np.histogram(np.clip(v, -span, span), bins=edges)
            self.stairs[k].set_data(counts, edges)
            ymax = max(ymax, int(counts.max()) if counts.size else 1)
        self.ax_h.set_xlim(-span, span)
        self.ax_h.set_ylim(0, ymax * 1.15)
        size = res["size"].double().numpy()
        level = res["level"].double().numpy()
        jit = np.linspace(-0.25, 0.25, max(len(level), 1))[: len(level)]
        for i, (k, v) in enumerate(vals.items()):
            self.pts[k].set_offsets(np.c_[size, np.clip(v, -span, span)] if len(v) else np.zeros((0, 2)))
            self.lvl[k].set_offsets(np.c_[level + jit * 0.5 + (i - 1.5) * 0.12, np.clip(v, -span, span)]
                                    if len(v) else np.zeros((0, 2)))
        for ax in (self.ax_s, self.ax_l):
            ax.set_ylim(-span * 1.05, span * 1.05)
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


def coco_results(dets: Dict[int, Dict[str, torch.Tensor]]) -> List[Dict[str, Any]]:
    """Detections per image as a COCO result list (bbox = [x, y, w, h], continuous coordinates)."""
    out = []
    for image_id, d in dets.items():
        for b, s, l in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist()):
            out.append({"image_id": int(image_id), "category_id": int(l), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                        "score": float(s)})
    return out


EXAMPLES = [
    ("example: boxes not rescaled + labels shifted by one", ("scale", "label_offset")),
    ("example: pixel indices (+0.5) and score threshold", ("half_pixel_shift", "threshold_or_topk")),
    ("example: xyxy written into bbox", ("xywh_as_xyxy",)),
    ("example: Detectron2 run of the converted detector", ()),
    ("the two files uploaded below", "upload"),
]


@lru_cache(maxsize=8)
def _example(mistakes: Tuple[str, ...]) -> Tuple[list, list]:
    ref = detections_over_scenes(DETECTRON)
    if not mistakes:
        return coco_results(ref), coco_results(detections_over_scenes(DETECTRON2, converted=True))
    cand = D.load_detections(ref, name="candidate")
    for m in mistakes:
        _, cause, kw, _ = MISTAKES[m]
        cand = D.inject(cand, cause, **kw)
    cand_d = {i: {"boxes": im.boxes, "scores": im.scores, "labels": im.labels} for i, im in cand.images.items()}
    return coco_results(ref), coco_results(cand_d)


def _uploaded(widget, side: str):
    if not widget.value:
        raise ValueError(f"no {side} file yet: upload a COCO results JSON ([{{'image_id', 'category_id', 'bbox', 'score'}}])")
    f = widget.value[0]
    tmp = Path(tempfile.mkdtemp(prefix="explainer-upload-"))
    path = tmp / Path(str(f["name"])).name
    path.write_bytes(bytes(f["content"]))
    return path


@register
class UploadDashboard(Dashboard):
    """Diagnose two COCO result files and browse their matched pairs drawn over each other."""

    title = "Two result files: diagnosis and matched pairs"
    figsize = (9.6, 4.0)
    primary = "source"

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
            ax.set_xlabel("x (image pixels)")
        self.ax_all.set_ylabel("y (image pixels)")
        self.all_ref = LineCollection([], colors=STYLE["reference"], linewidths=0.8, alpha=0.6)
        self.all_cand = LineCollection([], colors=CAND_COLOR, linewidths=0.8, linestyles="--", alpha=0.6)
        self.sel_all = LineCollection([], colors=STYLE["accent"], linewidths=2.5)
        for lc in (self.all_ref, self.all_cand, self.sel_all):
            self.ax_all.add_collection(lc)
        self.pair_ref = LineCollection([], colors=STYLE["reference"], linewidths=2.2, label="reference")
        self.pair_cand = LineCollection([], colors=CAND_COLOR, linewidths=2.0, linestyles="--", label="candidate")
        self.ax_pair.add_collection(self.pair_ref)
        self.ax_pair.add_collection(self.pair_cand)
        self.ax_pair.legend(handles=[self.pair_ref, self.pair_cand], loc="upper right", fontsize=8)
        self.corner_txt = _pool_text(self.ax_pair, 4, fontsize=8)
        self.ax_all.set_title("all detections of the image", fontsize=10)

    def _sides(self, source):
        kind = EXAMPLES[source][1]
        if kind == "upload":
            return (_uploaded(self.controls["reference"], "reference"), _uploaded(self.controls["candidate"], "candidate"))
        return _example(kind)

    def compute(self, source, reference, candidate, pair):
        ref, cand = self._sides(source)
        diag = D.diagnose(ref, cand)
        p = diag.pairs
        m = len(p["iou"])
        if m:
            worst = (p["cand_boxes"] - p["ref_boxes"]).abs().amax(dim=1)
            order = torch.argsort(worst, descending=True, stable=True)
        else:
            order = torch.zeros(0, dtype=torch.long)
        return dict(diag=diag, order=order, pair=min(pair, max(m - 1, 0)), n_pairs=m)

    def render(self, r):
        s = self.controls["pair"]
        self._holding = True
        try:
            s.max = max(r["n_pairs"] - 1, 0)
        finally:
            self._holding = False
        diag, p = r["diag"], r["diag"].pairs
        if not r["n_pairs"]:
            for lc in (self.all_ref, self.all_cand, self.sel_all, self.pair_ref, self.pair_cand):
                lc.set_segments([])
            for t in self.corner_txt:
                t.set_visible(False)
            self.ax_all.set_title("no matched pairs", fontsize=10)
            return
        k = int(r["order"][r["pair"]])
        img = int(p["image"][k])
        same = p["image"] == img
        rb, cb = p["ref_boxes"][k].tolist(), p["cand_boxes"][k].tolist()
        self.all_ref.set_segments(box_segments(p["ref_boxes"][same]))
        self.all_cand.set_segments(box_segments(p["cand_boxes"][same]))
        self.sel_all.set_segments(box_segments([rb, cb]))
        both = np.r_[p["ref_boxes"][same].numpy().ravel(), p["cand_boxes"][same].numpy().ravel()]
        hi = float(max(both.max(), 1.0)) * 1.05
        self.ax_all.set_xlim(0, hi)
        self.ax_all.set_ylim(hi, 0)
        image_ids = diag.image_ids if hasattr(diag, "image_ids") else None
        name = image_ids[img] if image_ids is not None else img
        self.ax_all.set_title(f"image {name}: matched pairs (selected in orange)", fontsize=10)
        self.pair_ref.set_segments(box_segments([rb]))
        self.pair_cand.set_segments(box_segments([cb]))
        x0, y0 = min(rb[0], cb[0]), min(rb[1], cb[1])
        x1, y1 = max(rb[2], cb[2]), max(rb[3], cb[3])
        m = max(x1 - x0, y1 - y0) * 0.15 + 1.0
        self.ax_pair.set_xlim(x0 - m, x1 + m)
        self.ax_pair.set_ylim(y1 + m, y0 - m)
        d = [c - q for c, q in zip(cb, rb)]
        for t, (x, y, lab) in zip(self.corner_txt, [(cb[0], cb[1], f"\u0394x1 {d[0]:+.2f}\n\u0394y1 {d[1]:+.2f}"),
                                                     (cb[2], cb[3], f"\u0394x2 {d[2]:+.2f}\n\u0394y2 {d[3]:+.2f}")] + [(0, 0, "")] * 2):
            t.set_position((x, y))
            t.set_text(lab)
            t.set_visible(bool(lab))
        self.ax_pair.set_title(f"pair {r['pair'] + 1} of {r['n_pairs']} (largest difference first)", fontsize=10)

    def describe(self, r):
        diag, p = r["diag"], r["diag"].pairs
        out = causes_table(diag)
        if r["n_pairs"]:
            k = int(r["order"][r["pair"]])
            rows = [["reference", [round(v, 2) for v in p["ref_boxes"][k].tolist()], int(p["ref_labels"][k]), f"{float(p['ref_scores'][k]):.3f}"],
                    ["candidate", [round(v, 2) for v in p["cand_boxes"][k].tolist()], int(p["cand_labels"][k]), f"{float(p['cand_scores'][k]):.3f}"]]
            out += html_table(rows, ["selected pair", "box (x1, y1, x2, y2)", "label", "score"],
                              caption=f"IoU {float(p['iou'][k]):.3f}")
        return out

    def bench_states(self):
        return [{"pair": i} for i in range(0, 12)] + [{"source": 0}, {"source": 1}]


# --------------------------------------------------------------------------------------------------
# 4. bisect the knobs
# --------------------------------------------------------------------------------------------------

HIDDEN = [(k, (k,)) for k in P.INFERENCE_KNOBS] + [("anchor_offset + roi_aligned", ("anchor_offset", "roi_aligned"))]


def reference_convention(hidden: Tuple[str, ...]) -> Convention:
    """Detectron2's conventions with the ``hidden`` knobs left at Detectron's values: how the reference ran."""
    return DETECTRON2.replace(**{k: getattr(DETECTRON, k) for k in hidden})


@lru_cache(maxsize=16)
def _bisect(hidden: Tuple[str, ...], scene: int = 0):
    """Bisect from Detectron2's conventions towards Detectron's on the converted detector, against a reference
    that the same converted detector produced with the ``hidden`` knobs at Detectron's values."""
    reference = run_scene(scene, reference_convention(hidden), converted=True)
    report = P.bisect_conventions(lambda conv: run_scene(scene, conv, converted=True), reference,
                                  start=DETECTRON2, towards=DETECTRON)
    return report, reference_convention(hidden)


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
        self.n_max = 12
        self.bars = self.ax.barh(np.arange(self.n_max), np.zeros(self.n_max), color=STYLE["neutral"])
        self.txt = _pool_text(self.ax, self.n_max, fontsize=8, va="center")
        self.base = self.ax.axvline(0, color=STYLE["reference"], linestyle=":", label="agreement before any change")
        self.ax.set_xlim(0, 1.25)
        self.ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        self.ax.set_xlabel("agreement with the reference (fraction of its detections reproduced)")
        self.ax.invert_yaxis()
        self.ax.legend(loc="lower right", fontsize=8)

    def compute(self, hidden):
        report, changed = _bisect(HIDDEN[hidden][1])
        return dict(report=report, changed=changed, hidden=HIDDEN[hidden][1])

    def render(self, r):
        rep = r["report"]
        trials = rep.trials[: self.n_max]
        labels = [" + ".join(t["knobs"]) for t in trials]
        found = tuple(rep.found) if rep.found else None
        for i, (b, t) in enumerate(zip(self.bars, self.txt)):
            if i < len(trials):
                a = float(trials[i]["agreement"])
                b.set_width(a)
                b.set_color(STYLE["agree"] if found and tuple(trials[i]["knobs"]) == found else STYLE["neutral"])
                t.set_position((a + 0.01, i))
                t.set_text(f"{a:.2f}")
                t.set_visible(True)
                b.set_visible(True)
            else:
                b.set_visible(False)
                t.set_visible(False)
        self.ax.set_yticks(np.arange(len(trials)), labels)
        self.ax.set_ylim(max(len(trials), 1) - 0.5, -0.5)
        self.base.set_xdata([rep.baseline, rep.baseline])
        self.ax.set_title(f"found: {' + '.join(found) if found else 'no single knob or pair'}", fontsize=10)

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
