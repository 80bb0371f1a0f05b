"""Checkpoint audit dashboard: inject a conversion mistake and read what the audit finds, and why."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from explainer.checkpoints import checkpoint as Ck
from explainer.viz.style import STYLE
from explainer.widgets.base import Dashboard, dropdown, html_table, register

K = 80
MISTAKES = [("none: converted correctly", "none"), ("config counts background (NUM_CLASSES 81)", "num_classes"),
            ("a layer renamed (fc1 -> fc_one)", "renamed"), ("bbox_pred background rows kept", "bg_rows"),
            ("class-agnostic box head in the config", "agnostic"), ("optimizer state left in", "momentum"),
            ("class-agnostic mask head cut to 0 channels (Detectron2's own loader)", "mask0"),
            ("C4 model, RPN rows left in Detectron's anchor order", "c4_rows")]


@lru_cache(maxsize=1)
def _converted():
    ck = Ck.synthetic_detectron_checkpoint(num_classes=K, small=True)
    sd, report = Ck.convert_detectron_to_detectron2(ck["blobs"])
    return ck["blobs"], sd, report


@lru_cache(maxsize=1)
def _c4_as_detectron2_loads_it():
    """The synthetic C4 checkpoint converted without moving the RPN rows, as Detectron2's own loader leaves them."""
    ck = Ck.synthetic_detectron_checkpoint(num_classes=K, small=True, arch="c4")
    sd, report = Ck.convert_detectron_to_detectron2(ck["blobs"], cfg=ck["cfg"], reorder_anchors=False)
    return sd, report


def _audit_c4_rows():
    sd, report = _c4_as_detectron2_loads_it()
    res = Ck.audit(sd, Ck.detectron2_expected_shapes(num_classes=K, small=True, arch="c4"))
    real_missing = [m for m in res["missing"] if "benign" not in m[2]]
    return dict(res=res, counts=[res["matched"], len(res["mismatched"]), len(real_missing), len(res["unexpected"])],
                real_missing=real_missing, rpn=report["rpn_anchors"])


@lru_cache(maxsize=16)
def _audit_with(mistake: str):
    """Convert the synthetic checkpoint, inject ``mistake`` and audit against Detectron2's model (cached: pure)."""
    if mistake == "c4_rows":
        return _audit_c4_rows()
    blobs, sd, _ = _converted()
    sd = dict(sd)
    n = K
    if mistake == "num_classes":
        n = K + 1
    elif mistake == "renamed":
        sd["box_head.fc_one.weight"] = sd.pop("box_head.fc1.weight")
    elif mistake == "bg_rows":
        sd["bbox_pred.weight"] = torch.from_numpy(blobs["bbox_pred_w"])
        sd["bbox_pred.bias"] = torch.from_numpy(blobs["bbox_pred_b"])
    elif mistake == "momentum":
        sd["conv1_w_momentum"] = torch.from_numpy(blobs["conv1_w_momentum"])
    want = Ck.detectron2_expected_shapes(num_classes=n, small=True)
    if mistake == "mask0":  # a 1-channel mask head through the loader's w[1:], against a CLS_AGNOSTIC_MASK model
        sd["mask_head.predictor.weight"] = sd["mask_head.predictor.weight"][:0]
        sd["mask_head.predictor.bias"] = sd["mask_head.predictor.bias"][:0]
        want["roi_heads.mask_head.predictor.weight"] = (1, *want["roi_heads.mask_head.predictor.weight"][1:])
        want["roi_heads.mask_head.predictor.bias"] = (1,)
    if mistake == "agnostic":
        h = want["roi_heads.box_predictor.bbox_pred.weight"][1]
        want["roi_heads.box_predictor.bbox_pred.weight"] = (4, h)
        want["roi_heads.box_predictor.bbox_pred.bias"] = (4,)
    res = Ck.audit(sd, want)
    real_missing = [m for m in res["missing"] if "benign" not in m[2]]
    return dict(res=res, counts=[res["matched"], len(res["mismatched"]), len(real_missing), len(res["unexpected"])],
                real_missing=real_missing)


@register
class AuditDashboard(Dashboard):
    """Counts of the audit's findings for a converted checkpoint with one injected mistake."""

    title = "Audit a converted checkpoint: inject a mistake"
    figsize = (7.6, 2.8)
    primary = "mistake"

    def make_controls(self):
        return {"mistake": dropdown("mistake", MISTAKES, "num_classes", "what goes wrong between the checkpoint and the model")}

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        self.labels = ["matched", "shape mismatches", "missing (not benign)", "unexpected"]
        colors = [STYLE["agree"], STYLE["difference"], STYLE["accent"], STYLE["neutral"]]
        self.bars = self.ax.barh(np.arange(4), np.zeros(4), color=colors)
        self.txt = [self.ax.text(0, i, "", va="center", fontsize=9) for i in range(4)]
        self.ax.set_yticks(np.arange(4), self.labels)
        self.ax.set_xscale("symlog", linthresh=1)
        self.ax.set_xlim(0, 1000)
        self.ax.invert_yaxis()
        self.ax.set_xlabel("parameters (log scale)")

    def compute(self, mistake):
        return _audit_with(mistake)

    def render(self, r):
        for b, t, v, i in zip(self.bars, self.txt, r["counts"], range(4)):
            b.set_width(v)
            t.set_position((max(v, 0) * 1.15 + 0.3, i))
            t.set_text(str(v))
        self.ax.set_title("OK: everything loads" if r["res"]["ok"] else "problems found", fontsize=10)

    def describe(self, r):
        rows = [["mismatch", e, f"{g} vs {w}", cause] for _, e, g, w, cause in r["res"]["mismatched"]]
        rows += [["missing", e, str(shape), cause] for e, shape, cause in r["real_missing"]]
        rows += [["unexpected", k, str(shape), cause] for k, shape, cause in r["res"]["unexpected"]]
        rows += [["warning (loads)", k, str(shape), note] for k, shape, note in r["res"].get("warnings", [])]
        if "rpn" in r:
            rows += [["conversion", "RPN anchor rows", f"{r['rpn']['rows_moved']} of {r['rpn']['anchors']} moved",
                      f"{r['rpn']['source']}: Detectron2's own loader never moves them"]]
        if not rows:
            rows = [["", "no findings", "", "running statistics of FrozenBatchNorm are filled by Detectron2 (benign)"]]
        return html_table(rows, ["finding", "parameter", "shapes (checkpoint vs model)", "likely cause"])
