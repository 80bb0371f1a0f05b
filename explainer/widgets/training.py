"""Chapter 7 dashboards: post-NMS top-k per batch or per image, smooth L1 against L1, flip augmentation."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from matplotlib.patches import Polygon

from explainer import pixels, training
from explainer.conventions import DETECTRON, DETECTRON2
from explainer.viz.draw import BoxArtist, sample_photo
from explainer.viz.style import STYLE, convention_style
from explainer.widgets.base import Dashboard, checkbox, dropdown, html_table, int_slider, register, slider

D1 = convention_style("detectron")
D2 = convention_style("detectron2")
MAX_IMAGES = 4
N_PROPOSALS = 2000


@lru_cache(maxsize=8)
def _batch(n_images: int):
    return training.synthetic_proposal_batch(n_images, n_proposals=N_PROPOSALS, seed=0)


@register
class TopKDashboard(Dashboard):
    """How many proposals each image of a batch keeps under Detectron's per-batch and Detectron2's per-image top-k."""

    title = "POST_NMS_TOPK_TRAIN: per batch (Detectron) or per image (Detectron2)"
    figsize = (8.4, 4.0)
    primary = "k"
    torch_threads = 1

    def make_controls(self):
        return {
            "k": int_slider("k (POST_NMS_TOPK_TRAIN)", 100, 4000, 2000, "proposals kept after NMS in training", step=100),
            "images": int_slider("images per batch", 1, MAX_IMAGES, 2, "images per GPU batch; even ones are crowded, odd ones sparse"),
            "d2_halved": checkbox("Detectron2 uses k / images (as Base-RCNN-FPN.yaml)", True,
                                  "give Detectron2 k divided by the batch size per image, which Detectron2's FPN configs do"),
        }

    def build(self, fig):
        ax = self.ax = fig.add_subplot(1, 1, 1)
        x = np.arange(MAX_IMAGES)
        w = 0.38
        self.kept = {}
        self.pos = {}
        for j, (rule, s) in enumerate((("per_batch", D1), ("per_image", D2))):
            off = (j - 0.5) * w
            self.kept[rule] = ax.bar(x + off, np.zeros(MAX_IMAGES), w * 0.95, facecolor="none", edgecolor=s["color"],
                                     linestyle=s["linestyle"], linewidth=2,
                                     label=("Detectron: top k of the whole batch" if j == 0 else "Detectron2: top k of each image"))
            self.pos[rule] = ax.bar(x + off, np.zeros(MAX_IMAGES), w * 0.95, color=s["color"], alpha=0.45, hatch=s["hatch"],
                                    label=("positives (IoU >= 0.5), Detectron" if j == 0 else "positives (IoU >= 0.5), Detectron2"))
        self.labels = [ax.text(i, N_PROPOSALS * 1.02, "", ha="center", fontsize=9) for i in range(MAX_IMAGES)]
        ax.set_xticks(x, [f"image {i}" for i in range(MAX_IMAGES)])
        ax.set_xlim(-0.6, MAX_IMAGES - 0.4)
        ax.set_ylim(0, N_PROPOSALS * 1.12)
        ax.set_ylabel(f"proposals kept (of {N_PROPOSALS} after NMS)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5)

    def compute(self, k, images, d2_halved):
        batch = _batch(images)
        det = training.topk_effect(batch, k)
        k2 = max(1, k // images) if d2_halved else k
        d2 = training.topk_effect(batch, k2) if k2 != k else det
        return {"images": images, "k": k, "k2": k2, "kind": batch["kind"],
                "per_batch_kept": det["per_batch_kept"], "per_batch_positives": det["per_batch_positives"],
                "per_image_kept": d2["per_image_kept"], "per_image_positives": d2["per_image_positives"]}

    def render(self, r):
        n = r["images"]
        for rule in ("per_batch", "per_image"):
            for i in range(MAX_IMAGES):
                on = i < n
                self.kept[rule][i].set_height(r[f"{rule}_kept"][i] if on else 0)
                self.pos[rule][i].set_height(r[f"{rule}_positives"][i] if on else 0)
        for i, t in enumerate(self.labels):
            t.set_text(r["kind"][i].split(" ")[0] if i < n else "")
        self.ax.set_title(f"Detectron k = {r['k']} per batch; Detectron2 k = {r['k2']} per image", fontsize=10)

    def describe(self, r):
        rows = [[f"image {i} ({r['kind'][i]})", r["per_batch_kept"][i], r["per_batch_positives"][i],
                 r["per_image_kept"][i], r["per_image_positives"][i]] for i in range(r["images"])]
        rows.append(["batch total", sum(r["per_batch_kept"]), sum(r["per_batch_positives"]),
                     sum(r["per_image_kept"]), sum(r["per_image_positives"])])
        return html_table(rows, ["", "Detectron kept", "positives", "Detectron2 kept", "positives"])

    def bench_states(self):
        return [{"k": k} for k in range(200, 4001, 400)]


@register
class SmoothL1Dashboard(Dashboard):
    """Smooth L1 loss and its gradient for Detectron's betas and Detectron2's L1, with a beta slider."""

    title = "Smooth L1 (Detectron: beta 1/9 RPN, 1 box head) against L1 (Detectron2: beta 0)"
    figsize = (8.4, 3.8)
    primary = "beta"
    FIXED = ((0.0, "L1 (beta 0, Detectron2)", D2, "-"), (1 / 9, "beta 1/9 (Detectron RPN)", D1, "--"),
             (1.0, "beta 1 (Detectron box head)", D1, ":"))

    def make_controls(self):
        return {
            "beta": slider("beta (SMOOTH_L1_BETA)", 0.0, 1.5, 0.01, 0.5, "the beta of the highlighted curve; 0 is L1"),
            "residual": slider("residual", -1.0, 1.0, 0.01, 0.05, "the residual (target - prediction) read out below"),
        }

    def build(self, fig):
        self.ax_l, self.ax_g = fig.subplots(1, 2)
        self.xs = np.linspace(-1.2, 1.2, 481)
        for beta, label, s, ls in self.FIXED:
            y = training.smooth_l1(torch.from_numpy(self.xs), beta).numpy()
            gy = training.smooth_l1_grad(torch.from_numpy(self.xs), beta).numpy()
            self.ax_l.plot(self.xs, y, color=s["color"], linestyle=ls, lw=1.6, label=label)
            self.ax_g.plot(self.xs, gy, color=s["color"], linestyle=ls, lw=1.6, label=label)
        (self.custom_l,) = self.ax_l.plot([], [], color=STYLE["accent"], lw=3, alpha=0.8, label="beta from the slider")
        (self.custom_g,) = self.ax_g.plot([], [], color=STYLE["accent"], lw=3, alpha=0.8)
        self.mark_l = self.ax_l.axvline(0.05, color=STYLE["neutral"], lw=1, ls="-.")
        self.mark_g = self.ax_g.axvline(0.05, color=STYLE["neutral"], lw=1, ls="-.")
        self.ax_l.set(xlim=(-1.2, 1.2), ylim=(0, 1.2), xlabel="residual (box delta units)", ylabel="loss", title="loss")
        self.ax_g.set(xlim=(-1.2, 1.2), ylim=(-1.15, 1.15), xlabel="residual (box delta units)", ylabel="d loss / d residual",
                      title="gradient")
        self.ax_l.legend(loc="upper center", fontsize=8)

    def compute(self, beta, residual):
        xs = torch.from_numpy(self.xs)
        r = torch.tensor([residual], dtype=torch.float64)
        vals = [(label, float(training.smooth_l1(r, b)), float(training.smooth_l1_grad(r, b))) for b, label, _, _ in self.FIXED]
        vals.append((f"beta {beta:g} (slider)", float(training.smooth_l1(r, beta)), float(training.smooth_l1_grad(r, beta))))
        return {"beta": beta, "residual": residual, "loss": training.smooth_l1(xs, beta).numpy(),
                "grad": training.smooth_l1_grad(xs, beta).numpy(), "values": vals}

    def render(self, r):
        self.custom_l.set_data(self.xs, r["loss"])
        self.custom_g.set_data(self.xs, r["grad"])
        self.mark_l.set_xdata([r["residual"], r["residual"]])
        self.mark_g.set_xdata([r["residual"], r["residual"]])

    def describe(self, r):
        return html_table([[lbl, f"{v:.6g}", f"{g:.4g}"] for lbl, v, g in r["values"]],
                          [f"at residual {r['residual']:g}", "loss", "gradient"])

    def bench_states(self):
        return [{"beta": b} for b in np.linspace(0.0, 1.5, 12)]


KEYPOINT_NAMES = ["nose", "left_eye", "right_eye"]
KEYPOINT_LABELS = ["nose", "L eye", "R eye"]
FLIP_INDICES = training.keypoint_flip_indices(KEYPOINT_NAMES, {"left_eye": "right_eye"})


@register
class FlipAugmentationDashboard(Dashboard):
    """A box, a polygon and named keypoints on a photo and on its mirror, flipped by each codebase's rule."""

    title = "Flip augmentation: the same annotations flipped by Detectron (W - x - 1) and Detectron2 (W - x)"
    figsize = (8.6, 4.4)
    primary = "shift"

    def make_controls(self):
        return {
            "shift": int_slider("move annotations (px)", -8, 8, 0, "shift the annotations horizontally, in image pixels"),
            "zoom": dropdown("view", [("whole images", "all"), ("zoom on the polygon's tip", "polygon"),
                                      ("zoom on the eyes", "eyes")], "all",
                             "zoom both panels; pixel borders become visible"),
        }

    def build(self, fig):
        img = sample_photo(48)
        self.H, self.W = img.shape[:2]
        self.ax0, self.ax1 = fig.subplots(1, 2)
        for ax, im, title in ((self.ax0, img, "original"), (self.ax1, img[:, ::-1], "flipped image")):
            ax.imshow(im, extent=(0, self.W, self.H, 0), interpolation="nearest")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("x (image pixels)")
        self.ax0.set_ylabel("y (image pixels)")
        self.orig_box = BoxArtist(self.ax0, "detectron2", inclusive=False, label="annotations", fill_alpha=0.0)
        self.orig_box.rect.set_edgecolor(STYLE["highlight"])
        self.orig_poly = Polygon(np.zeros((3, 2)), closed=True, fill=False, edgecolor=STYLE["highlight"], lw=2)
        self.ax0.add_patch(self.orig_poly)
        (self.orig_kp,) = self.ax0.plot([], [], "o", color=STYLE["highlight"], mec="k", ms=7)
        self.orig_txt = [self.ax0.text(0, 0, "", fontsize=7, color="w") for _ in KEYPOINT_NAMES]
        self.box = {}
        self.poly = {}
        self.kp = {}
        for key, s, lab in (("detectron", D1, "Detectron"), ("detectron2", D2, "Detectron2")):
            self.box[key] = BoxArtist(self.ax1, key, inclusive=False, label=f"{lab}: box", fill_alpha=0.0)
            self.poly[key] = Polygon(np.zeros((3, 2)), closed=True, fill=False, edgecolor=s["color"], linestyle=s["linestyle"],
                                     lw=2, label=f"{lab}: polygon")
            self.ax1.add_patch(self.poly[key])
            (self.kp[key],) = self.ax1.plot([], [], s["marker"], color=s["color"], mfc="none" if key == "detectron" else s["color"],
                                            mew=2, ms=8 if key == "detectron" else 5, label=f"{lab}: keypoints")
        self.kp_txt = [self.ax1.text(0, 0, "", fontsize=7, color="w") for _ in KEYPOINT_NAMES]
        self.ax1.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)

    def compute(self, shift, zoom):
        W = self.W
        box = torch.tensor([[14.0 + shift, 8.0, 34.0 + shift, 40.0]], dtype=torch.float64)  # continuous coordinates
        poly = torch.tensor([16.0 + shift, 44.0, 30.0 + shift, 44.0, 22.0 + shift, 52.0], dtype=torch.float64)
        kp = torch.tensor([[24.0 + shift, 27.0, 2.0], [20.0 + shift, 22.0, 2.0], [28.0 + shift, 22.0, 2.0]], dtype=torch.float64)
        if box[0, 0] < 0 or box[0, 2] > W:
            raise ValueError("the annotations must stay inside the image; move them back")
        res = {"box": box[0].numpy(), "poly": poly.reshape(-1, 2).numpy(), "kp": kp.numpy(), "zoom": zoom}
        for key, conv in (("detectron", DETECTRON), ("detectron2", DETECTRON2)):
            if conv.legacy_plus_one:  # Detectron's boxes are inclusive indices: convert, flip, convert back to draw
                fb = pixels.to_continuous(pixels.hflip_boxes(pixels.to_inclusive(box), W, **conv.operator_flags("minus_one")))
            else:
                fb = pixels.hflip_boxes(box, W, **conv.operator_flags("minus_one"))
            res[f"{key}_box"] = fb[0].numpy()
            res[f"{key}_poly"] = training.hflip_polygons([poly], W, **conv.operator_flags("minus_one"))[0].reshape(-1, 2).numpy()
            res[f"{key}_kp"] = training.hflip_keypoints(kp, W, FLIP_INDICES, **conv.operator_flags("minus_one"),
                                                        keypoint_half_pixel=conv.keypoint_half_pixel).numpy()
        return res

    def render(self, r):
        self.orig_box.set(r["box"])
        self.orig_poly.set_xy(r["poly"])
        self.orig_kp.set_data(r["kp"][:, 0] + 0.5, r["kp"][:, 1] + 0.5)  # keypoints are pixel indices: centre
        for t, (x, y, _), name in zip(self.orig_txt, r["kp"], KEYPOINT_LABELS):
            t.set_position((x + 1.2, y - 0.6))
            t.set_text(name)
        for key in ("detectron", "detectron2"):
            self.box[key].set(r[f"{key}_box"])
            self.poly[key].set_xy(r[f"{key}_poly"])
            self.kp[key].set_data(r[f"{key}_kp"][:, 0] + 0.5, r[f"{key}_kp"][:, 1] + 0.5)
        for t, (x, y, _), name in zip(self.kp_txt, r["detectron2_kp"], KEYPOINT_LABELS):
            t.set_position((x + 1.2, y - 0.6))
            t.set_text(name)
        z = r["zoom"]
        if z == "all":
            views = [(0, self.W, 0, self.H)] * 2
        else:
            (cx, cy) = (r["poly"][2] if z == "polygon" else r["kp"][1:, :2].mean(0))
            fx = self.W - cx
            views = [(cx - 6, cx + 6, cy - 5, cy + 5), (fx - 6, fx + 6, cy - 5, cy + 5)]
        for ax, (x0, x1, y0, y1) in zip((self.ax0, self.ax1), views):
            ax.set_xlim(x0, x1)
            ax.set_ylim(y1, y0)

    def describe(self, r):
        rows = [
            ["box x1, x2 (continuous)", f"{r['detectron_box'][0]:g}, {r['detectron_box'][2]:g}",
             f"{r['detectron2_box'][0]:g}, {r['detectron2_box'][2]:g}", "agree" if np.allclose(r["detectron_box"], r["detectron2_box"]) else "differ"],
            ["polygon x of each vertex", ", ".join(f"{v:g}" for v in r["detectron_poly"][:, 0]),
             ", ".join(f"{v:g}" for v in r["detectron2_poly"][:, 0]), f"{r['detectron_poly'][0, 0] - r['detectron2_poly'][0, 0]:+g} px"],
        ]
        for i, name in enumerate(KEYPOINT_NAMES):
            rows.append([f"{name} x (pixel index)", f"{r['detectron_kp'][i, 0]:g}", f"{r['detectron2_kp'][i, 0]:g}",
                         "agree" if r["detectron_kp"][i, 0] == r["detectron2_kp"][i, 0] else "differ"])
        return html_table(rows, [f"after the flip (W = {self.W})", "Detectron", "Detectron2", ""])

    def bench_states(self):
        return [{"shift": s} for s in range(-8, 9, 2)]
