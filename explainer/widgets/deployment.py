"""Chapter 8 dashboards: resize modes on a photo, crop_and_resize against ROIAlign, and "SAME" padding."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from matplotlib.collections import LineCollection

from explainer import deployment as Dep
from explainer import roi_align as R
from explainer.viz.draw import BoxArtist, PixelGrid, label_cells, sample_photo
from explainer.viz.style import STYLE, convention_style
from explainer.widgets.base import Dashboard, box_sliders, dropdown, html_table, int_slider, register

D2 = convention_style("detectron2")
MODES = [("half_pixel (PyTorch, PIL, OpenCV, TF2)", "half_pixel"), ("align_corners=True", "align_corners"),
         ("asymmetric (TF1 resize_bilinear)", "asymmetric"), ("pytorch_half_pixel", "pytorch_half_pixel")]


@lru_cache(maxsize=1)
def _patch():
    """A 20 x 20 crop of matplotlib's bundled photo (the eyes), grey, as a 1 x 1 x 20 x 20 tensor in [0, 1]."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        im = Image.open(f).convert("L").resize((128, 150), Image.BILINEAR)
    a = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(a[40:60, 54:74].copy())[None, None]


@lru_cache(maxsize=1)
def photo_bgr() -> torch.Tensor:
    """matplotlib's bundled photo (grace_hopper.jpg) as a 3 x H x W uint8 tensor in BGR order: what ``cv2.imread``
    gives Detectron, and what Detectron2 feeds its model with ``INPUT.FORMAT`` "BGR". Decoded once, by Pillow."""
    rgb = sample_photo()
    return torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1).contiguous()


@register
class ResizeModesDashboard(Dashboard):
    """A small photo patch resized under each coordinate mode, against half_pixel, and the shift it causes."""

    title = "The same resize under four coordinate modes (photo patch, 20 x 20 px)"
    figsize = (9.0, 3.6)
    primary = "mode"

    def make_controls(self):
        return {"mode": dropdown("mode", MODES, "asymmetric", "coordinate_transformation_mode of the resize"),
                "out": int_slider("output size (px)", 5, 60, 40, "resize the 20 x 20 patch to out x out")}

    def build(self, fig):
        self.axes = fig.subplots(1, 4)
        titles = ["input (20 x 20)", "half_pixel", "chosen mode", "chosen - half_pixel"]
        self.ims = []
        for ax, t in zip(self.axes, titles):
            cmap, lim = ("RdBu_r", (-0.3, 0.3)) if t.startswith("chosen -") else ("gray", (0, 1))
            self.ims.append(ax.imshow(np.zeros((2, 2)), cmap=cmap, vmin=lim[0], vmax=lim[1], interpolation="nearest", extent=(0, 1, 1, 0)))
            ax.set_title(t, fontsize=9)
            ax.set_xticks([0, 0.5, 1], ["0", "W/2", "W"])
            ax.set_yticks([])
        self.ims[0].set_data(_patch()[0, 0].numpy())
        self.axes[0].set_xlabel("x (fraction of the width)")
        fig.colorbar(self.ims[3], ax=self.axes[3], shrink=0.8, label="difference")

    def compute(self, mode, out):
        p = _patch()
        ref = Dep.resize(p, (out, out), "half_pixel")[0, 0]
        got = Dep.resize(p, (out, out), mode)[0, 0]
        s = out / 20
        shift = (Dep.resize_coordinate_map(20, out, mode) - Dep.resize_coordinate_map(20, out, "half_pixel")) * s  # output px
        return dict(mode=mode, out=out, ref=ref.numpy(), got=got.numpy(), shift=shift.numpy())

    def render(self, r):
        self.ims[1].set_data(r["ref"])
        self.ims[2].set_data(r["got"])
        self.ims[3].set_data(r["got"] - r["ref"])
        self.axes[2].set_title(r["mode"], fontsize=9)

    def describe(self, r):
        sh = r["shift"]
        rows = [["sample shift against half_pixel (output px)", f"{sh.min():+.3f} at the left .. {sh.max():+.3f} at the right"],
                ["mean |difference| of the images", f"{np.abs(r['got'] - r['ref']).mean():.4f}"]]
        return html_table(rows, [f"{r['mode']}, 20 -> {r['out']} px", ""])

    def bench_states(self):
        return [{"mode": m, "out": o} for m in ("half_pixel", "align_corners", "asymmetric") for o in (12, 40)]


MAP = 8
FEATURE = R.ramp(MAP)  # value 10 y + x


@register
class CropAndResizeDashboard(Dashboard):
    """TensorFlow's crop_and_resize, naively and with tensorpack's correction, against ROIAlignV2 (sampling_ratio 2)."""

    title = "crop_and_resize is not ROIAlign, until the boxes are transformed"
    figsize = (9.2, 4.6)
    primary = "x2"
    torch_threads = 1

    def make_controls(self):
        return {**box_sliders(MAP, MAP, (1.0, 1.0, 5.0, 4.0), "box corner in feature cells"),
                "res": int_slider("resolution R", 1, 3, 2, "ROIAlign output R x R (crop_and_resize samples 2R x 2R)")}

    def build(self, fig):
        self.axes = fig.subplots(1, 2)
        self.art = []
        for ax, title in zip(self.axes, ["naive: boxes / map size", "tensorpack: transformed boxes (+ pad)"]):
            PixelGrid(ax, MAP, MAP, centres=False, unit="feature cells")
            label_cells(ax, FEATURE[0, 0].numpy(), fontsize=7)
            box = BoxArtist(ax, "detectron2", label="the box", fill_alpha=0.05, linewidth=1.5)
            box.rect.set_edgecolor(STYLE["reference"])
            (ref,) = ax.plot([], [], "o", color=D2["color"], ms=7, mfc="none", mew=1.5, label="ROIAlignV2 samples (sampling_ratio 2)")
            (tf,) = ax.plot([], [], "x", color=STYLE["difference"], ms=6, mew=1.8, label="crop_and_resize samples")
            ax.set_title(title, fontsize=9.5)
            self.art.append((box, ref, tf))
        fig.legend(handles=[self.art[0][1], self.art[0][2]], loc="outside lower center", ncol=2, fontsize=8.5)

    def compute(self, x1, y1, x2, y2, res):
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"box must have x2 > x1 and y2 > y1; got x1={x1}, x2={x2}, y1={y1}, y2={y2}")
        box = torch.tensor([[x1, y1, x2, y2]], dtype=torch.float64)
        ref = R.roi_align(FEATURE, torch.tensor([[0.0, x1, y1, x2, y2]]), res, spatial_scale=1.0, sampling_ratio=2, aligned=True)[0, 0].numpy()
        sp = R.sampling_points([x1, y1, x2, y2], res, (MAP, MAP), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        n = 2 * res
        naive_b = Dep.naive_crop_and_resize_boxes(box, (MAP, MAP))
        naive = Dep.naive_roi_align_via_crop_and_resize(FEATURE, box, res)[0, 0].numpy()
        tp = Dep.roi_align_via_crop_and_resize(FEATURE, box, res)[0, 0].numpy()
        tb = Dep.roi_align_box_to_crop_and_resize(box, (MAP, MAP), n)
        return dict(box=[x1, y1, x2, y2], ref=ref, naive=naive, tp=tp, ref_pts=sp["points"].numpy(),
                    naive_pts=Dep.crop_and_resize_grid(naive_b, MAP, n).numpy(),
                    tp_pts=Dep.crop_and_resize_grid(tb, MAP + 2, n, 1.0).numpy(), res=res)

    def render(self, r):
        for (box, ref, tf), pts in zip(self.art, (r["naive_pts"], r["tp_pts"])):
            box.set(r["box"])
            ref.set_data(r["ref_pts"][:, 0] + 0.5, r["ref_pts"][:, 1] + 0.5)  # kernel position s is drawn at s + 0.5
            tf.set_data(pts[:, 0] + 0.5, pts[:, 1] + 0.5)

    def describe(self, r):
        rnd = lambda a: [[round(float(v), 3) for v in row] for row in a]  # noqa: E731
        rows = [["ROIAlignV2 (reference)", rnd(r["ref"]), "0"],
                ["crop_and_resize, naive boxes", rnd(r["naive"]), f"{np.abs(r['naive'] - r['ref']).max():.3g}"],
                ["crop_and_resize, tensorpack boxes", rnd(r["tp"]), f"{np.abs(r['tp'] - r['ref']).max():.2g}"]]
        return html_table(rows, ["method", "pooled R x R", "max |diff| to reference"])

    def bench_states(self):
        return [{"x2": v} for v in np.linspace(2.0, 7.5, 12)]


@register
class SamePaddingDashboard(Dashboard):
    """Which input pixel each output of a strided convolution centres on: TF "SAME" against symmetric padding."""

    title = 'Stride-2 convolution: TensorFlow "SAME" against PyTorch/Caffe2 symmetric padding'
    figsize = (8.6, 3.0)
    primary = "size"

    def make_controls(self):
        return {"size": int_slider("input size (px)", 4, 16, 8, "length of the input row"),
                "kernel": dropdown("kernel", [1, 3, 5, 7], 3, "kernel size k"),
                "stride": dropdown("stride", [1, 2], 2, "stride s")}

    def build(self, fig):
        ax = self.ax = fig.add_subplot(1, 1, 1)
        self.cells = LineCollection([], colors=STYLE["grid"], linewidths=1)
        ax.add_collection(self.cells)
        (self.tf,) = ax.plot([], [], "v", color=STYLE["difference"], ms=9, label='TF "SAME": output centres')
        (self.pt,) = ax.plot([], [], "^", color=STYLE["agree"], ms=9, label="symmetric k//2: output centres")
        self.pads = ax.text(0, -0.9, "", fontsize=9)
        ax.set_xlim(-3.5, 19.5)
        ax.set_ylim(-1.2, 1.6)
        ax.set_yticks([])
        ax.set_xlabel("input pixel index (marker at the centre of the output's window)")
        ax.legend(loc="upper right", fontsize=8.5, ncol=2)

    def compute(self, size, kernel, stride):
        tf = Dep.conv_output_centres(size, kernel, stride, "tf_same").numpy()
        pt = Dep.conv_output_centres(size, kernel, stride, "symmetric").numpy()
        return dict(size=size, kernel=kernel, stride=stride, tf=tf, pt=pt, pads=Dep.same_padding(size, kernel, stride))

    def render(self, r):
        n = r["size"]
        self.cells.set_segments([[(i - 0.5, 0), (i - 0.5, 1)] for i in range(n + 1)] + [[(-0.5, 0), (n - 0.5, 0)], [(-0.5, 1), (n - 0.5, 1)]])
        self.tf.set_data(r["tf"], np.full(len(r["tf"]), 1.2))
        self.pt.set_data(r["pt"], np.full(len(r["pt"]), -0.2))
        self.pads.set_text(f"TF pads (before, after) = {r['pads']}; symmetric pads ({r['kernel'] // 2}, {r['kernel'] // 2})")

    def describe(self, r):
        k = min(len(r["tf"]), len(r["pt"]))
        shift = (r["tf"][:k] - r["pt"][:k])
        rows = [["outputs", len(r["tf"]), len(r["pt"])], ["first centres", r["tf"][:4].tolist(), r["pt"][:4].tolist()],
                ["shift of TF's grid (input px)", f"{shift.mean():+g}" if k else "", ""]]
        return html_table(rows, [f"n={r['size']}, k={r['kernel']}, s={r['stride']}", 'TF "SAME"', "symmetric"])


PADDINGS = [('TensorFlow "SAME"', "tf_same"), ("tensorpack, TF_PAD_MODE=True", "tensorpack_tf"),
            ("tensorpack, TF_PAD_MODE=False", "tensorpack"), ("symmetric k // 2 (PyTorch, Caffe2)", "symmetric")]


@register
class BackboneOffsetsDashboard(Dashboard):
    """Where a ResNet-50's feature grid sits under each padding, per stride, for both places of the stride."""

    title = "How far each ResNet-50 stage's grid moves, in image pixels, against symmetric padding"
    figsize = (8.6, 3.6)
    primary = "size"

    def make_controls(self):
        return {"size": int_slider("input side (px)", 224, 1344, 1024, "the image side the backbone sees", step=1),
                "padding": dropdown("padding", PADDINGS, "tf_same", "how the strided layers are padded")}

    def build(self, fig):
        ax = self.ax = fig.add_subplot(1, 1, 1)
        x = np.arange(5)
        (self.a_main,) = ax.plot(x, np.zeros(5), "o-", color=STYLE["difference"], label="stride in the 3x3 (torchvision): main branch")
        (self.a_short,) = ax.plot(x, np.zeros(5), "s--", color=STYLE["difference"], mfc="none",
                                  label="stride in the 3x3: projection shortcut (added to it)")
        (self.b_main,) = ax.plot(x, np.zeros(5), "^:", color=D2["color"], label="stride in the 1x1 (STRIDE_IN_1X1, MSRA): main branch")
        ax.axhline(0, color=STYLE["reference"], lw=0.8)
        ax.set_xticks(x, ["2", "4", "8", "16", "32"])
        ax.set_xlabel("feature stride")
        ax.set_ylabel("offset of output 0 (image px)")
        ax.set_ylim(-2, 34)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)

    def compute(self, size, padding):
        pad, tf_mode = ("tensorpack", True) if padding == "tensorpack_tf" else (padding, False)
        a = Dep.backbone_offsets(size, stride_in_1x1=False, padding=pad, tf_pad_mode=tf_mode)
        b = Dep.backbone_offsets(size, stride_in_1x1=True, padding=pad, tf_pad_mode=tf_mode)
        return dict(size=size, padding=padding, a=a, b=b)

    def render(self, r):
        self.a_main.set_ydata([row["main"] for row in r["a"]])
        self.a_short.set_ydata([row["shortcut"] for row in r["a"]])
        self.b_main.set_ydata([row["main"] for row in r["b"]])

    def describe(self, r):
        rows = [[ra["stride"], ra["size"], f"{ra['main']:g}", f"{ra['shortcut']:g}", f"{rb['main']:g}"] for ra, rb in zip(r["a"], r["b"])]
        label = dict((v, k) for k, v in PADDINGS)[r["padding"]]
        return html_table(rows, [f"{label}, input {r['size']} px: stride", "feature size", "stride in 3x3: main (px)",
                                 "its shortcut (px)", "stride in 1x1: main (px)"])

    def bench_states(self):
        return [{"size": s, "padding": p} for s in (800, 1024, 1333) for _, p in PADDINGS[:2]]
