"""Chapter 5 dashboards: predictor rows before and after conversion, logits in both orders, a head loaded three ways,
and which class's box regressor decodes a box when the rows are misplaced."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from explainer import boxes as B
from explainer import labels as L
from explainer.viz.draw import BoxArtist
from explainer.viz.style import STYLE, convention_style
from explainer.widgets.base import Dashboard, dropdown, html_table, int_slider, register

D1 = convention_style("detectron")
D2 = convention_style("detectron2")
DEMO_CLASSES = L.COCO_CLASS_NAMES[:5]  # person, bicycle, car, motorcycle, airplane
K = len(DEMO_CLASSES)


@lru_cache(maxsize=1)
def coco_predictor(dim: int = 1024, seed: int = 0):
    """A Detectron-layout COCO box predictor with realistic shapes (81 x 1024, 324 x 1024) and visible row structure."""
    g = torch.Generator().manual_seed(seed)
    n = 81
    t = torch.linspace(0, 1, dim)
    freq = torch.arange(n, dtype=torch.float32)[:, None] % 9 + 1
    w = 0.02 * torch.sin(2 * np.pi * freq * t[None] + torch.rand(n, 1, generator=g) * 6) + 0.004 * torch.randn(n, dim, generator=g)
    w[0] = 0.05 * torch.sign(torch.sin(2 * np.pi * 3 * t))  # the background row stands out
    b = torch.randn(n, generator=g) * 0.05
    b[0] = 2.0  # a trained background prior
    bw = 0.01 * torch.randn(4 * n, dim, generator=g) + 0.02 * torch.sin(2 * np.pi * (torch.arange(4 * n)[:, None] % 4 + 1) * t[None])
    bw[:4] = 0.0  # Detectron's background box rows are never trained
    bb = torch.zeros(4 * n)
    return {"cls_score_w": w, "cls_score_b": b, "bbox_pred_w": bw, "bbox_pred_b": bb}


@lru_cache(maxsize=1)
def converted_coco_predictor():
    """:func:`coco_predictor` converted to Detectron2's layout (once: the class slider only moves a highlight)."""
    return L.convert_box_predictor(coco_predictor())


@register
class PredictorRowsDashboard(Dashboard):
    """Heat maps of a COCO predictor's weight rows before (Detectron) and after (Detectron2) conversion."""

    title = "cls_score and bbox_pred rows: Detectron (background first) -> Detectron2 (background last, box rows dropped)"
    figsize = (8.8, 4.2)
    primary = "cls"
    torch_threads = 1

    def make_controls(self):
        return {
            "param": dropdown("parameter", [("cls_score (81 -> 81 rows)", "cls_score"), ("bbox_pred (324 -> 320 rows)", "bbox_pred")],
                              "cls_score", "which predictor weight matrix to show"),
            "cls": int_slider("follow class (Detectron2 label)", 0, 79, 0, "the foreground class whose rows are highlighted"),
        }

    def build(self, fig):
        axes = fig.subplots(1, 4, sharey=True, gridspec_kw={"width_ratios": [10, 1, 10, 1]})
        self.ax0, self.bx0, self.ax1, self.bx1 = axes
        self.im, self.bias_im = [], []
        self.marks = []
        for ax, bx, name, s in ((self.ax0, self.bx0, "before: Detectron layout", D1), (self.ax1, self.bx1, "after: Detectron2 layout", D2)):
            im = ax.imshow(np.zeros((2, 2)), aspect="auto", cmap=STYLE["diverging_cmap"], vmin=-0.05, vmax=0.05,
                           extent=(0, 1024, 1, 0), interpolation="nearest")
            self.im.append(im)
            self.bias_im.append(bx.imshow(np.zeros((2, 1)), aspect="auto", cmap=STYLE["diverging_cmap"], vmin=-2.0, vmax=2.0,
                                          extent=(0, 1, 1, 0), interpolation="nearest"))
            bx.set_xticks([0.5], ["bias"], fontsize=8)
            ax.set_title(name, fontsize=10, color=s["color"])
            ax.set_xlabel("input feature (of 1024)")
            ax.set_ylim(1, 0)
            ax.set_yticks([])
            bg = ax.axhspan(0, 0, color=STYLE["reference"], alpha=0.0)
            cl = ax.axhspan(0, 0, facecolor="none", edgecolor=STYLE["highlight"], lw=2)
            tb = bx.text(1.15, 0, "", fontsize=8, va="center", clip_on=False, transform=bx.get_yaxis_transform())
            tc = bx.text(1.15, 0, "", fontsize=8, va="center", clip_on=False, transform=bx.get_yaxis_transform())
            self.marks.append((bg, cl, tb, tc))
        self._param_shown = None
        self.ax0.set_ylabel("rows, top to bottom")
        fig.colorbar(self.im[1], ax=list(axes), shrink=0.8, label="weight (bias: x 40)")

    def compute(self, param, cls):
        det = coco_predictor()
        d2 = converted_coco_predictor()
        if param == "cls_score":
            before, after = det["cls_score_w"], d2["cls_score.weight"]
            bias_b, bias_a = det["cls_score_b"], d2["cls_score.bias"]
            per = 1
        else:
            before, after = det["bbox_pred_w"], d2["bbox_pred.weight"]
            bias_b, bias_a = det["bbox_pred_b"], d2["bbox_pred.bias"]
            per = 4
        n_b, n_a = before.shape[0], after.shape[0]
        # rows of class `cls` (Detectron2 label) in each layout, and the background rows
        rb = (per * (cls + 1), per * (cls + 2))
        ra = (per * cls, per * (cls + 1))
        bg_b = (0, per)
        bg_a = (n_a - 1, n_a) if param == "cls_score" else None
        return dict(param=param, cls=cls, before=before.numpy(), after=after.numpy(), n_b=n_b, n_a=n_a, rb=rb, ra=ra,
                    bias_b=bias_b.numpy()[:, None], bias_a=bias_a.numpy()[:, None], bg_bias=float(bias_b[0]),
                    bg_b=bg_b, bg_a=bg_a, same=bool(torch.equal(before[rb[0]:rb[1]], after[ra[0]:ra[1]])))

    def render(self, r):
        # the weight images change with the parameter only: while the class moves they stay in the cached layer
        new_param = self._param_shown != r["param"]
        self._param_shown = r["param"]
        for k, (img, n, rows, bg) in enumerate(((r["before"], r["n_b"], r["rb"], r["bg_b"]), (r["after"], r["n_a"], r["ra"], r["bg_a"]))):
            if new_param:
                self.im[k].set_data(img)
                self.bias_im[k].set_data(r["bias_b"] if k == 0 else r["bias_a"])
            bgp, clp, tb, tc = self.marks[k]
            if bg is not None:
                bgp.set_bounds(0, bg[0] / n, 1, (bg[1] - bg[0]) / n)
                bgp.set_alpha(0.35)
                tb.set_position((1.15, (bg[0] + bg[1]) / 2 / n))
                tb.set_text("background")
            else:
                bgp.set_alpha(0.0)
                tb.set_text("(bg dropped)")
                tb.set_position((1.15, 1.0))
            clp.set_bounds(0, rows[0] / n, 1, (rows[1] - rows[0]) / n)
            tc.set_position((1.15, (rows[0] + rows[1]) / 2 / n + 0.04))
            tc.set_text(L.COCO_CLASS_NAMES[r["cls"]])

    def describe(self, r):
        name = L.COCO_CLASS_NAMES[r["cls"]]
        rows = [
            ["rows", r["n_b"], r["n_a"]],
            [f"rows of '{name}'", f"{r['rb'][0]}..{r['rb'][1] - 1}", f"{r['ra'][0]}..{r['ra'][1] - 1}"],
            ["background rows", f"{r['bg_b'][0]}..{r['bg_b'][1] - 1}", "last row" if r["bg_a"] else "dropped"],
            ["background bias", f"{r['bg_bias']:.3g} (row 0)", (f"{r['bg_bias']:.3g} (last row)" if r["bg_a"] else "dropped")],
        ]
        return html_table(rows, [r["param"], "Detectron", "Detectron2"]) + (
            f"<div>The rows of '{name}' are {'identical' if r['same'] else 'DIFFERENT'} after the move.</div>")

    def bench_states(self):
        return [{"cls": c} for c in range(0, 80, 8)]


@register
class LogitsOrderDashboard(Dashboard):
    """One detection's logits and probabilities in both orders, and what a wrong reading of the index gives."""

    title = "One detection's scores in both orders"
    figsize = (8.6, 3.6)
    primary = "true_class"

    def make_controls(self):
        return {
            "true_class": dropdown("the object is a", [(n, i) for i, n in enumerate(DEMO_CLASSES)] + [("(background)", K)], 2,
                                   "what the region really shows (Detectron2 label)"),
            "confidence": int_slider("logit margin", 0, 8, 4, "how much larger the right class's logit is"),
        }

    def build(self, fig):
        self.ax0, self.ax1 = fig.subplots(1, 2, sharey=True)
        x = np.arange(K + 1)
        self.b0 = self.ax0.bar(x, np.zeros(K + 1), color=D1["color"], alpha=0.75, hatch=D1["hatch"], edgecolor=D1["color"])
        self.b1 = self.ax1.bar(x, np.zeros(K + 1), color=D2["color"], alpha=0.75, hatch=D2["hatch"], edgecolor=D2["color"])
        self.ax0.set_xticks(x, ["bg"] + [n[:6] for n in DEMO_CLASSES], fontsize=8.5)
        self.ax1.set_xticks(x, [n[:6] for n in DEMO_CLASSES] + ["bg"], fontsize=8.5)
        self.ax0.set_title("Detectron order: label 0 = background", fontsize=10)
        self.ax1.set_title(f"Detectron2 order: label {K} = background", fontsize=10)
        self.ax0.set_ylabel("softmax probability")
        self.ax0.set_ylim(0, 1.05)
        for ax in (self.ax0, self.ax1):
            ax.set_xlabel("label index (class)")
        self.t0 = self.ax0.text(0.02, 0.95, "", transform=self.ax0.transAxes, fontsize=8.5, va="top")
        self.t1 = self.ax1.text(0.02, 0.95, "", transform=self.ax1.transAxes, fontsize=8.5, va="top")

    def compute(self, true_class, confidence):
        d2_logits = torch.linspace(-0.5, 0.5, K + 1)
        d2_logits[true_class] += float(confidence)
        det_logits = L.background_last_to_first(d2_logits)
        p_det, p_d2 = torch.softmax(det_logits, 0), torch.softmax(d2_logits, 0)
        i_det, i_d2 = int(torch.argmax(p_det)), int(torch.argmax(p_d2))
        names_d2 = DEMO_CLASSES + ["background"]
        names_det = ["background"] + DEMO_CLASSES
        return dict(p_det=p_det.numpy(), p_d2=p_d2.numpy(), i_det=i_det, i_d2=i_d2, right=names_d2[true_class],
                    det_as_d2=names_d2[i_det], d2_as_det=names_det[i_d2],
                    rolled=bool(torch.allclose(torch.roll(p_det, -1), p_d2)))

    def render(self, r):
        for bar, v in zip(self.b0, r["p_det"]):
            bar.set_height(v)
        for bar, v in zip(self.b1, r["p_d2"]):
            bar.set_height(v)
        self.t0.set_text(f"argmax = label {r['i_det']}; read by Detectron2: '{r['det_as_d2']}'")
        self.t1.set_text(f"argmax = label {r['i_d2']}; read by Detectron: '{r['d2_as_det']}'")

    def describe(self, r):
        rows = [["argmax label", r["i_det"], r["i_d2"]], ["meaning in its own convention", r["right"], r["right"]],
                ["meaning if read by the other codebase", r["det_as_d2"], r["d2_as_det"]]]
        return html_table(rows, ["", "Detectron order", "Detectron2 order"]) + (
            f"<div>Same probabilities rolled by one: {'yes' if r['rolled'] else 'no'}.</div>")


@lru_cache(maxsize=1)
def _trained_head():
    x, y = L.synthetic_region_features(num_classes=K, per_class=150, dim=16, seed=0)
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * 1.4  # some real confusion
    w, b = L.train_box_classifier(x, y, K + 1, steps=200)
    return x, y, w, b


MODES = [("converted (background row moved last)", "converted"), ("copied naively (no conversion)", "naive"),
         ("NUM_CLASSES = K + 1 (counts background)", "num_classes_off_by_one")]


@register
class LoadedHeadDashboard(Dashboard):
    """A classifier trained background-first, loaded into a background-last head three ways: confusion matrices."""

    title = "A box classifier trained with background first, loaded into Detectron2's head"
    figsize = (8.4, 4.2)
    primary = "mode"
    N = K + 2  # the largest head (NUM_CLASSES off by one)

    def make_controls(self):
        return {"mode": dropdown("loaded", MODES, "converted", "how the trained weights reach the Detectron2 head")}

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        self.im = self.ax.imshow(np.full((K + 1, self.N), np.nan), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        self.txt = [[self.ax.text(j, i, "", ha="center", va="center", fontsize=8) for j in range(self.N)] for i in range(K + 1)]
        self.ax.set_yticks(range(K + 1), [f"{i} {n}" for i, n in enumerate(DEMO_CLASSES)] + [f"{K} background"],
                           fontsize=8.5)         # whole names: none is longer than "background"
        self.ax.set_xticks(range(self.N), [str(i) for i in range(self.N)], fontsize=8.5)
        self.ax.set_ylabel("true Detectron2 label")
        self.ax.set_xlabel("predicted label index of the loaded head")
        self.ax.set_ylim(K + 0.5, -0.5)
        fig.colorbar(self.im, ax=self.ax, label="fraction of the true label's regions")

    def compute(self, mode):
        x, y, w, b = _trained_head()
        hw, hb = L.load_into_background_last_head(w, b, mode)
        pred = torch.argmax(x @ hw.t() + hb, 1)
        y2 = L.detectron_to_d2_labels(y, K)
        n_out = hw.shape[0]
        cm = L.confusion_matrix(pred, y2, max(n_out, K + 1)).double()
        frac = (cm / cm.sum(1, keepdim=True).clamp(min=1))[: K + 1]
        fg = y2 < K
        names = DEMO_CLASSES + ["background"]
        examples = []
        for lab in (K, 0, 2, 4):  # one background region and three objects
            i = int(torch.nonzero(y2 == lab)[0])
            p = int(pred[i])
            said = names[p] if p < K else ("background" if p == n_out - 1 else f"label {p} (no such class)")
            examples.append((names[lab], p, said))
        return dict(mode=mode, frac=frac.numpy(), n_out=n_out, acc=float((pred == y2).double().mean()), examples=examples,
                    neighbour=float((pred[fg] == y2[fg] + 1).double().mean()),
                    bg_as_class0=float((pred[~fg] == 0).double().mean()), n=len(y))

    def render(self, r):
        data = np.full((K + 1, self.N), np.nan)
        data[:, : r["frac"].shape[1]] = r["frac"]
        self.im.set_data(data)
        for i in range(K + 1):
            for j in range(self.N):
                v = data[i, j]
                self.txt[i][j].set_text("" if np.isnan(v) or v < 0.1 else f"{v:.2f}")  # the read-out has the rest
                self.txt[i][j].set_color("w" if not np.isnan(v) and v > 0.6 else "k")
        self.ax.set_title(f"head with {r['n_out']} outputs; accuracy {100 * r['acc']:.0f} %", fontsize=10)

    def describe(self, r):
        rows = [["accuracy (Detectron2 labels)", f"{100 * r['acc']:.1f} %"],
                ["objects predicted as the next label (k -> k+1)", f"{100 * r['neighbour']:.1f} %"],
                ["background regions predicted as label 0", f"{100 * r['bg_as_class0']:.1f} %"],
                ["outputs of the loaded head", r["n_out"]]]
        ex = html_table([[t, p, said] for t, p, said in r["examples"]], ["example region (truth)", "head's label", "reported as"])
        return html_table(rows, [r["mode"], f"over {r['n']} regions"]) + ex

    def bench_states(self):
        return [{"mode": m} for _, m in MODES]


@register
class BoxRegressorRowsDashboard(Dashboard):
    """Which class's regressor decodes a box when bbox_pred's background rows are not dropped."""

    title = "bbox_pred rows: the right regressor against the neighbour's"
    figsize = (6.4, 4.6)
    primary = "cls"

    def make_controls(self):
        return {"cls": dropdown("predicted class", [(n, i) for i, n in enumerate(DEMO_CLASSES)], 2,
                                "the class whose box is decoded (Detectron2 label)")}

    def build(self, fig):
        self.ax = fig.add_subplot(1, 1, 1)
        self.ax.set(xlim=(0, 200), ylim=(160, 0), aspect="equal", xlabel="x (image pixels)", ylabel="y (image pixels)")
        self.prop = BoxArtist(self.ax, "detectron2", label="proposal", fill_alpha=0.0, linewidth=1.2)
        self.prop.rect.set_edgecolor(STYLE["neutral"])
        self.prop.rect.set_linestyle(":")
        self.right = BoxArtist(self.ax, "detectron2", label="decoded with the class's own rows (w[4:])")
        self.wrong = BoxArtist(self.ax, "detectron", inclusive=False, label="decoded with rows w[:4K] (background kept)")
        fig.legend(loc="outside lower center", ncol=2, fontsize=8.5)
        self.note = self.ax.text(4, 154, "", fontsize=8.5)
        # per-class deltas of one RoI: each class regresses to its own typical shape (Detectron order: row 0 = bg)
        shapes = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -0.05, -0.25, 0.35], [0.05, 0.0, 0.3, -0.2], [0.0, 0.05, 0.4, -0.1],
                               [0.0, 0.0, 0.2, 0.0], [-0.05, 0.0, 0.5, -0.3]])
        self.det_deltas = shapes.reshape(-1)  # 4(K+1) outputs of bbox_pred for this RoI, Detectron layout
        self.proposal = torch.tensor([[60.0, 40.0, 140.0, 120.0]])

    def compute(self, cls):
        right_rows = self.det_deltas[4:]          # what Detectron2's loader keeps
        wrong_rows = self.det_deltas[: 4 * K]     # background rows kept, last class cut off
        dr = right_rows[4 * cls: 4 * cls + 4][None]
        dw = wrong_rows[4 * cls: 4 * cls + 4][None]
        w = (1.0, 1.0, 1.0, 1.0)
        right = B.decode(dr, self.proposal, w)[0]
        wrong = B.decode(dw, self.proposal, w)[0]
        used = "background" if cls == 0 else DEMO_CLASSES[cls - 1]
        return dict(cls=cls, right=right.numpy(), wrong=wrong.numpy(), used=used,
                    iou=float(B.pairwise_iou(right[None], wrong[None])[0, 0]))

    def render(self, r):
        self.prop.set(self.proposal[0].numpy())
        self.right.set(r["right"])
        self.wrong.set(r["wrong"])
        self.note.set_text(f"'{DEMO_CLASSES[r['cls']]}' decoded with the rows of '{r['used']}'")

    def describe(self, r):
        rows = [["right rows", DEMO_CLASSES[r["cls"]], [round(float(v), 1) for v in r["right"]]],
                ["misplaced rows", r["used"], [round(float(v), 1) for v in r["wrong"]]]]
        return html_table(rows, ["decoding with", "regressor of", "box (x1, y1, x2, y2)"]) + f"<div>IoU between them: {r['iou']:.3f}</div>"

    def bench_states(self):
        return [{"cls": c} for c in range(K)]
