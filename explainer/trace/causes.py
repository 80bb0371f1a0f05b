"""Why one stage of two runs differs: the fingerprints :func:`explainer.trace.compare` fits, and their vocabulary.

Each fit takes the reference and candidate tensors of one stage (same shape) and returns a
:class:`explainer.diagnosis.Cause` when its hypothesis explains the difference, else ``None``. A hypothesis
explains a difference when undoing it leaves the stage within the tolerance, or removes at least
:data:`EXPLAINED` of the squared difference (a shift is an interpolation, so its bar is :data:`SHIFT_EXPLAINED`).

Layout conventions: a tensor of 4 or more dimensions is N x C x ... x H x W (a batch of feature maps; extra
middle axes are folded into the batch), 3 dimensions C x H x W, 2 dimensions rows x channels (class logits,
boxes: N x 4), 1 dimension a vector. Channels are axis C (the columns of a 2-D tensor); the two last axes of a
tensor of 3 or more dimensions are its grid (y, x). Fits run on a deterministic sample of at most
:data:`SAMPLE` values, so that a stage of 17 million values costs a few milliseconds; the pass/fail test and
the errors are computed on every value by the caller.

A shift is reported in cells of the stage's grid; for a ROI-pooled stage given a :class:`Pooler`, as the shift
of its boxes in cells of the feature map it was pooled from.

The module is a little over 600 lines because the vocabulary and the fit of each of its entries belong together
(a fit fills its entry's evidence, :func:`apply_cause` reads it back); the shift fit, the longest, keeps its
interpolation and search helpers beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from explainer._validate import as_tensor, finite_number, one_of, whole_number
from explainer.diagnosis.causes import Cause, CauseInfo

__all__ = ["CAUSES", "EXPLAINED", "SHIFT_EXPLAINED", "RESAMPLE_EXPLAINED", "SAMPLE", "Stage", "Pooler", "LevelPooler", "fit_cause",
           "same_cause", "cause", "estimate_shift", "shift_map", "apply_cause", "content_region"]

#: A structured cause must remove at least this fraction of the squared difference ...
EXPLAINED = 0.999
#: ... a shift (fitted by bilinear interpolation of the reference) at least this fraction.
SHIFT_EXPLAINED = 0.9
#: Fits read at most this many values of a stage.
SAMPLE = 1 << 17
#: Shifts smaller than this (in the reported unit) are not called shifts.
MIN_SHIFT = 0.02

#: Every cause :func:`explainer.trace.compare` can report for a stage, in the order they are tried.
CAUSES: Dict[str, CauseInfo] = {
    "identical": CauseInfo(
        "the stage is bit for bit the same in both runs",
        "every value equal",
        "nothing to fix"),
    "numerical_noise": CauseInfo(
        "floating-point differences (another kernel, operation order, fused operations, another runtime)",
        "every value within the tolerance |candidate - reference| <= atol + rtol |reference|",
        "nothing, if the size is acceptable"),
    "non_finite": CauseInfo(
        "NaN or infinity in the stage (a division by zero, log of 0, an overflow in float16)",
        "a non-finite value on either side",
        "find the operation that produces it in this stage: a missing epsilon, a clamp, an overflowing dtype"),
    "constant_offset": CauseInfo(
        "one constant added to every value (e.g. +1 on box coordinates: inclusive against continuous corners)",
        "candidate - reference is the same number everywhere",
        "find the +1 (legacy_plus_one, TO_REMOVE, an inclusive width) or the offset in this stage's code"),
    "channel_affine": CauseInfo(
        "each channel scaled and shifted: another pixel mean or std, a BatchNorm folded or frozen with another eps",
        "candidate channel c = scale_c x reference channel c + bias_c",
        "use the same MODEL.PIXEL_MEAN / PIXEL_STD (and channel order) on both sides; fold BatchNorm with the "
        "eps it was trained with"),
    "channel_permutation": CauseInfo(
        "channels in another order: BGR against RGB at the input, the classifier's background row moved "
        "(first in Detectron, last in Detectron2), anchor rows in another order (ratio- or size-major)",
        "each candidate channel equals one reference channel (up to a scale and bias), in another order",
        "feed the channel order the model expects (INPUT.FORMAT); convert the classifier and box rows "
        "(background first vs last); reorder the RPN rows between ratio-major and size-major"),
    "border": CauseInfo(
        "differences confined to a frame along the edges: another padding (zero vs reflect, TF 'SAME' vs "
        "symmetric) or a border mode",
        "the differing values all lie within k cells of an edge",
        "use the same padding on both sides (explicit symmetric padding and 'VALID' instead of TF's 'SAME'); "
        "the side widths show which edges are padded"),
    "shift": CauseInfo(
        "the grid sampled at positions shifted by a constant (dy, dx): half a pixel from ROIAlign aligned or "
        "a resize's coordinate mode, a stride's worth from padding",
        "candidate(y, x) = reference(y + dy, x + dx) for one (dy, dx), fitted to 0.01 cell",
        "align the coordinate conventions: ROIAlign aligned=True (POOLER_TYPE ROIAlignV2; ONNX RoiAlign "
        "coordinate_transformation_mode='half_pixel', opset >= 16), the same Resize coordinate mode "
        "(PyTorch align_corners=False is ONNX 'half_pixel' / 'pytorch_half_pixel'), the same padding"),
    "shape_changed": CauseInfo(
        "the stage has another shape in the candidate: a count that depends on the data (proposals kept by the "
        "RPN's top-k and NMS, detections above a score threshold) changed because an earlier stage differs",
        "the paired stages' shapes differ (both are given); no value can be compared",
        "fix the first divergence upstream; if there is none, the two runs keep a different number of boxes "
        "(compare PRE_NMS_TOPK / POST_NMS_TOPK, the NMS threshold and the score threshold)"),
    "resample": CauseInfo(
        "the grid read at positions scaled and shifted along each axis: another resize coordinate mode "
        "(align_corners, half-pixel or asymmetric), another rounding of the output size, a resize on one side only",
        "candidate(y, x) = reference(a_y y + b_y, a_x x + b_x) with a scale a other than 1, fitted by "
        "interpolating the reference (which, already resampled, cannot explain every detail)",
        "resize with the same function and coordinate mode on both sides (PyTorch's align_corners=False is ONNX's "
        "'half_pixel', cv2.INTER_LINEAR's mapping; Pillow antialiases when it shrinks), to the same size"),
    "row_order": CauseInfo(
        "the same rows (boxes, proposals, detections) in another order, or nearly the same set: a sort or a "
        "top-k among scores that tie or differ by rounding, another NMS or top-k implementation",
        "each candidate row equals a reference row (within the tolerance) at another index; a few rows may have "
        "no partner (the ones that crossed a top-k or score threshold)",
        "nothing, if the scores tie (the runs agree on the set); otherwise make the scores agree first, and "
        "compare sets of boxes (the diagnosis matches detections by IoU) rather than rows by index"),
    "unexplained": CauseInfo(
        "the stage computes something else, with no fingerprint of a convention",
        "fails the tolerance; no cause above explains it",
        "compare this stage's code, weights and attributes on both sides; split it into smaller stages"),
    "inherited": CauseInfo(
        "the difference comes from an earlier stage",
        "fails after an earlier divergence, with no cause of its own or the same cause as that divergence",
        "fix the earlier divergence first"),
}


def cause(name: str, strength: float, evidence: Dict[str, Any], explanation: str) -> Cause:
    """A :class:`explainer.diagnosis.Cause` of this vocabulary."""
    name, strength = one_of(name, "name", tuple(CAUSES)), finite_number(strength, "strength")
    return Cause(name, float(min(max(strength, 0.0), 1.0)), evidence, CAUSES[name].fix, explanation)


# --------------------------------------------------------------------------------------------------
# a stage's tensors, laid out for the fits
# --------------------------------------------------------------------------------------------------
class Stage:
    """The two tensors of one stage as Tensor[N, C, H, W] (see the module's layout conventions), with samples."""

    def __init__(self, ref: torch.Tensor, cand: torch.Tensor, atol: float, rtol: float,
                 pooler: Optional[Any] = None, pooled_from: Optional[Any] = None,
                 region: Optional[Tuple[int, int]] = None):
        self.shape = tuple(ref.shape)
        self.atol, self.rtol = float(atol), float(rtol)
        self.r, self.spatial, self.channels = _layout(ref)
        self.c, _, _ = _layout(cand)
        self.region: Optional[Tuple[int, int]] = None
        if self.spatial and pooler is None:
            found = content_region(self.r, self.c) if region is None else region
            h, w = self.r.shape[-2:]
            if found is not None and tuple(found) != (h, w):
                self.region = (min(int(found[0]), h), min(int(found[1]), w))
                self.r = self.r[..., :self.region[0], :self.region[1]]
                self.c = self.c[..., :self.region[0], :self.region[1]]
        self.ref, self.cand = ref, cand
        self.pooler, self.pooled_from = pooler, pooled_from
        self._flat: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None

    def tol(self, ref: torch.Tensor) -> torch.Tensor:
        return self.atol + self.rtol * ref.abs()

    def flat_sample(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ref Tensor[C, P], cand Tensor[C, P], positions P as flat indices into Tensor[N, H, W]), float64; P evenly spaced."""
        if self._flat is None:
            n, c, h, w = self.r.shape
            total = n * h * w
            p = min(total, max(64, SAMPLE // max(c, 1)))
            pos = torch.arange(p, dtype=torch.int64) * total // p        # distinct, evenly spaced
            if n == 1:                                                # the same values, read faster
                r = self.r.reshape(c, h * w).index_select(1, pos).double()
                cd = self.c.reshape(c, h * w).index_select(1, pos).double()
            else:
                b, s = pos // (h * w), pos % (h * w)
                r = self.r.reshape(n, c, h * w)[b, :, s].T.double()
                cd = self.c.reshape(n, c, h * w)[b, :, s].T.double()
            self._flat = (r, cd, pos)
        return self._flat


def _layout(t: torch.Tensor) -> Tuple[torch.Tensor, bool, bool]:
    """(Tensor[N, C, H, W] view, has a grid, has channels)."""
    if t.dim() >= 5:
        t = t.movedim(1, -3).reshape(-1, t.shape[1], t.shape[-2], t.shape[-1])
    if t.dim() == 4:
        return t, True, True
    if t.dim() == 3:
        return t.unsqueeze(0), True, True
    if t.dim() == 2:
        return t.T.unsqueeze(0).unsqueeze(-1), False, True      # 1 x C x rows x 1
    return t.reshape(1, 1, -1, 1), False, False


def content_region(ref: torch.Tensor, cand: torch.Tensor) -> Optional[Tuple[int, int]]:
    """(height, width) of the image inside a batch padded at the bottom and right, or None when nothing is padded.

    ``ref``, ``cand``: Tensor[N, C, H, W]. Padding is the trailing rows and columns that are exactly zero in both
    runs, in every item and channel: a batch padded to a multiple of the stride (Detectron2's ``ImageList``,
    torchvision's ``size_divisible``) pads the normalised image with zeros, so a mistake in the image (another
    pixel mean, another channel order) leaves the padding as it was. A fit over the padding would fail; the
    fits run on the image. None also when what remains would be under 4 x 4 cells.
    """
    if ref.dim() != 4 or ref.shape != cand.shape or ref.shape[-1] < 4 or ref.shape[-2] < 4:
        return None
    zero = (ref == 0) & (cand == 0)
    rows = zero.all(dim=(0, 1, 3))
    cols = zero.all(dim=(0, 1, 2))
    h, w = int(rows.shape[0]), int(cols.shape[0])
    live_rows = torch.nonzero(~rows)
    live_cols = torch.nonzero(~cols)
    if live_rows.numel() == 0 or live_cols.numel() == 0:
        return None
    hh, ww = int(live_rows[-1]) + 1, int(live_cols[-1]) + 1
    if (hh, ww) == (h, w) or hh < 4 or ww < 4:
        return None
    return hh, ww


def _explained(resid: torch.Tensor, diff: torch.Tensor, target: torch.Tensor, st: Stage) -> Tuple[bool, float]:
    """(explained, fraction of the squared difference removed) for a residual left after undoing a cause."""
    dd = float((diff * diff).sum())
    rr = float((resid * resid).sum())
    frac = 1.0 - rr / dd if dd > 0 else 1.0
    within = bool((resid.abs() <= st.tol(target)).all())
    return within or frac >= EXPLAINED, frac


def _rounded(v, digits: int = 4):
    if isinstance(v, (list, tuple)):
        return [_rounded(x, digits) for x in v]
    return round(float(v), digits)


def _short(values: List[Any], limit: int = 8) -> str:
    body = ", ".join(str(v) for v in values[:limit])
    return f"[{body}{f', ... ({len(values)} in all)' if len(values) > limit else ''}]"


# --------------------------------------------------------------------------------------------------
# the fits, cheapest first
# --------------------------------------------------------------------------------------------------
def non_finite(ref: torch.Tensor, cand: torch.Tensor, shape: Optional[Tuple[int, ...]] = None) -> Optional[Cause]:
    """NaN or infinity on either side (counted on every value); the first one's index in ``shape``."""
    bad_r, bad_c = ~torch.isfinite(ref), ~torch.isfinite(cand)
    nr, nc = int(bad_r.sum()), int(bad_c.sum())
    if nr == 0 and nc == 0:
        return None
    first = torch.nonzero((bad_r | bad_c).reshape(shape if shape is not None else ref.shape))[0].tolist()
    ev = {"nan_in_reference": int(torch.isnan(ref).sum()), "inf_in_reference": nr - int(torch.isnan(ref).sum()),
          "nan_in_candidate": int(torch.isnan(cand).sum()), "inf_in_candidate": nc - int(torch.isnan(cand).sum()),
          "first_index": first}
    side = "both runs" if nr and nc else "the reference" if nr else "the candidate"
    return cause("non_finite", 1.0, ev, f"{nr + nc} non-finite values in {side}, the first at index {first}")


def constant_offset(st: Stage, d_min: float, d_max: float, c_absmax: float) -> Optional[Cause]:
    """candidate - reference is one constant (read from the minimum and maximum difference over every value)."""
    off, spread = 0.5 * (d_min + d_max), 0.5 * (d_max - d_min)
    if abs(off) <= st.atol or spread > st.atol + st.rtol * c_absmax:
        return None
    r, c, _ = st.flat_sample()
    resid = c - r - off
    ok, frac = _explained(resid, c - r, c, st)
    if not ok:
        return None
    return cause("constant_offset", frac, {"offset": _rounded(off, 6), "spread": _rounded(spread, 8)},
                 f"candidate = reference {'+' if off >= 0 else '-'} {abs(off):.4g} everywhere")


def _affine_fit(r: torch.Tensor, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per row least squares c = a r + b (a = 1 where a reference row is constant)."""
    mr, mc = r.mean(1, keepdim=True), c.mean(1, keepdim=True)
    vr = ((r - mr) ** 2).mean(1, keepdim=True)
    cov = ((r - mr) * (c - mc)).mean(1, keepdim=True)
    flat = vr <= 1e-12 * (1.0 + mr * mr)
    a = torch.where(flat, torch.ones_like(vr), cov / torch.where(flat, torch.ones_like(vr), vr))
    return a, mc - a * mr


def channel_affine(st: Stage) -> Optional[Cause]:
    """Each channel c' = scale_c c + bias_c (needs at least 8 sampled values per channel)."""
    if not st.channels:
        return None
    r, c, _ = st.flat_sample()
    if r.shape[1] < 8:
        return None
    if len(r) > 16 and not _explained(*_affine_residual(r[:16], c[:16]), c[:16], st)[0]:
        return None                                                   # the first channels already refute it
    a, b = _affine_fit(r, c)
    if torch.allclose(a, torch.ones_like(a), atol=1e-6) and float(b.abs().max()) <= st.atol:
        return None
    ok, frac = _explained(c - (a * r + b), c - r, c, st)
    if not ok:
        return None
    scale, bias = _rounded(a.view(-1).tolist(), 6), _rounded(b.view(-1).tolist(), 6)
    ev = {"channels": len(scale), "scale": scale, "bias": bias}
    return cause("channel_affine", frac, ev, f"each of the {len(scale)} channels scaled and shifted: scale "
                 f"{_fmt_list(scale)}, bias {_fmt_list(bias)}")


def _affine_residual(r: torch.Tensor, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    a, b = _affine_fit(r, c)
    return c - (a * r + b), c - r


def _fmt_list(v: List[float], limit: int = 6) -> str:
    body = ", ".join(f"{x:.4g}" for x in v[:limit])
    return f"[{body}{', ...' if len(v) > limit else ''}]"


def channel_permutation(st: Stage) -> Optional[Cause]:
    """Candidate channel i = reference channel p[i] (up to a scale and bias), p not the identity.

    Channels are matched by correlation on the sample; the match must be one to one and, once undone,
    explain the difference.
    """
    if not st.channels:
        return None
    r, c, _ = st.flat_sample()
    n_ch, n = r.shape
    if n_ch < 2 or n < 4:
        return None
    zr = r - r.mean(1, keepdim=True)
    zc = c - c.mean(1, keepdim=True)
    nr, nc = zr.norm(dim=1, keepdim=True), zc.norm(dim=1, keepdim=True)
    if bool((nr <= 1e-12).any() or (nc <= 1e-12).any()):
        return None                                                     # constant channels cannot be matched
    ur, uc = (zr / nr).float(), (zc / nc).float()
    if n_ch > 16 and float((uc[:16] @ ur.T).amax(dim=1).min()) < 0.9:
        return None                                                     # a channel with no counterpart
    corr = uc @ ur.T                                                    # C x C, candidate rows
    best = corr.argmax(dim=1)
    if len(set(best.tolist())) != n_ch or bool((best == torch.arange(n_ch)).all()):
        return None
    if float(corr[torch.arange(n_ch), best].min()) < 0.9:
        return None
    rp = r[best]
    a, b = _affine_fit(rp, c)
    pure = torch.allclose(a, torch.ones_like(a), atol=1e-4) and float(b.abs().max()) <= st.atol
    model = rp if pure else a * rp + b
    ok, frac = _explained(c - model, c - r, c, st)
    if not ok:
        return None
    perm = best.tolist()
    moved = sum(int(p != i) for i, p in enumerate(perm))
    ev: Dict[str, Any] = {"permutation": perm, "channels_moved": moved, "channels": n_ch}
    text = f"candidate channel i = reference channel p[i] with p = {_short(perm, 16)}"
    if not pure:
        ev["then_scale"] = _rounded(a.view(-1).tolist(), 6)
        ev["then_bias"] = _rounded(b.view(-1).tolist(), 6)
        text += f", then scaled {_fmt_list(ev['then_scale'])} and shifted {_fmt_list(ev['then_bias'])}"
    return cause("channel_permutation", frac, ev, text)


def border(st: Stage) -> Optional[Cause]:
    """Every failing value within k cells of an edge of the grid (k at most a quarter of the grid)."""
    if not st.spatial:
        return None
    n, ch, h, w = st.r.shape
    k_max = min(h, w) // 4
    if k_max < 1:
        return None
    r, c, pos = st.flat_sample()                                      # a cheap look first
    fail = ((c - r).abs() > st.tol(c)).any(0)
    s = pos % (h * w)
    ys, xs = s // w, s % w
    depth = torch.minimum(torch.minimum(ys, h - 1 - ys), torch.minimum(xs, w - 1 - xs))
    if bool((fail & (depth >= k_max)).any()):
        return None
    over = ((st.c - st.r).abs() - st.tol(st.c)).amax(dim=(0, 1)) > 0     # H x W: any failing value there
    if not bool(over.any()):
        return None
    yy, xx = torch.nonzero(over, as_tuple=True)
    depth = torch.minimum(torch.minimum(yy, h - 1 - yy), torch.minimum(xx, w - 1 - xx))
    k = int(depth.max()) + 1
    if k > k_max:
        return None
    mid_x, mid_y = (xx >= k) & (xx < w - k), (yy >= k) & (yy < h - k)   # away from the other sides' frames
    sides = {"top": _width(yy[mid_x & (yy < k)] + 1), "bottom": _width(h - yy[mid_x & (yy >= h - k)]),
             "left": _width(xx[mid_y & (xx < k)] + 1), "right": _width(w - xx[mid_y & (xx >= w - k)])}
    inner = (st.c - st.r)[..., k:h - k, k:w - k]
    ev = {"k": k, "sides": sides, "grid": [h, w],
          "max_abs_in_frame": _rounded(float((st.c - st.r).abs().max()), 6),
          "max_abs_inside": _rounded(float(inner.abs().max()) if inner.numel() else 0.0, 8)}
    return cause("border", 1.0, ev, f"every difference lies within {k} cell(s) of an edge of the {h} x {w} grid "
                 f"(widths: top {sides['top']}, bottom {sides['bottom']}, left {sides['left']}, right {sides['right']})")


def _width(v: torch.Tensor) -> int:
    return int(v.max()) if v.numel() else 0


# --------------------------------------------------------------------------------------------------
# shift
# --------------------------------------------------------------------------------------------------
def _shifted(r: torch.Tensor, dy: float, dx: float):
    """r (Tensor[N, C, H, W]) read at (y + dy, x + dx) by bilinear interpolation, where both neighbours exist.

    The shift is the same at every position, so the four neighbours are slices of ``r``. Returns (values,
    d/dy, d/dx, (y slice, x slice) of the output positions they belong to), or None when nothing is left.
    """
    h, w = r.shape[-2:]
    ky, kx = math.floor(dy), math.floor(dx)
    fy, fx = dy - ky, dx - kx
    y0, y1 = max(0, -ky), min(h, h - 1 - ky)
    x0, x1 = max(0, -kx), min(w, w - 1 - kx)
    if y1 <= y0 or x1 <= x0:
        return None
    a = r[..., y0 + ky:y1 + ky, x0 + kx:x1 + kx]
    b = r[..., y0 + ky:y1 + ky, x0 + kx + 1:x1 + kx + 1]
    c = r[..., y0 + ky + 1:y1 + ky + 1, x0 + kx:x1 + kx]
    d = r[..., y0 + ky + 1:y1 + ky + 1, x0 + kx + 1:x1 + kx + 1]
    top, bot = a + fx * (b - a), c + fx * (d - c)
    return top + fy * (bot - top), bot - top, (b - a) + fy * ((d - c) - (b - a)), (slice(y0, y1), slice(x0, x1))


def shift_map(ref: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """The reference read at (y + dy, x + dx) by bilinear interpolation (NaN where that leaves the grid).

    ``ref`` is Tensor[N, C, H, W] or Tensor[C, H, W]. What :func:`estimate_shift` fits, and what a dashboard shows as the
    explanation of a shift. ``ref`` must be finite; the NaN of the result mark only what lies outside the grid.
    """
    ref, dy, dx = as_tensor(ref, "ref"), finite_number(dy, "dy"), finite_number(dx, "dx")
    if ref.dim() not in (3, 4):
        raise ValueError(f"ref must be C x H x W or N x C x H x W, got shape {tuple(ref.shape)}")
    out = torch.full_like(ref, float("nan"))
    got = _shifted(ref, float(dy), float(dx))
    if got is not None:
        out[..., got[3][0], got[3][1]] = got[0]
    return out


def _gauss_newton(residual, d0: Tuple[float, float], iters: int = 12):
    """Minimise ||residual(d)||^2 over d = (dy, dx); ``residual(d)`` returns (e, J_y, J_x, baseline ||.||^2).

    Gives up early when, after 4 steps, less than half of the squared difference is explained (no shift).
    Returns (d, squared error, baseline).
    """
    d = torch.tensor(d0, dtype=torch.float64)
    e, jy, jx, base = residual(d)
    err = float((e * e).sum())
    for it in range(iters):
        a11, a12, a22 = float((jy * jy).sum()), float((jy * jx).sum()), float((jx * jx).sum())
        g1, g2 = float((jy * e).sum()), float((jx * e).sum())
        det = a11 * a22 - a12 * a12
        if det <= 1e-300 * max(a11 * a22, 1.0):
            break
        step = torch.tensor([(a22 * g1 - a12 * g2) / det, (a11 * g2 - a12 * g1) / det], dtype=torch.float64)
        lam, moved = 1.0, False
        while lam > 1e-2:
            t_e, t_jy, t_jx, t_base = residual(d + lam * step)
            t_err = float((t_e * t_e).sum())
            if t_base > 0 and t_err / t_base <= err / max(base, 1e-300):
                d, e, jy, jx, base, err, moved = d + lam * step, t_e, t_jy, t_jx, t_base, t_err, True
                break
            lam *= 0.5
        if not moved or float((lam * step).abs().max()) < 1e-5:
            break
        if it >= 3 and base > 0 and err / base > 0.5:
            break
    return d, err, base


def estimate_shift(ref: torch.Tensor, cand: torch.Tensor, search: int = 4) -> Dict[str, float]:
    """Fit cand(y, x) = ref(y + dy, x + dx), ref read by bilinear interpolation, to Tensor[N, C, H, W] tensors.

    (dy, dx) is in cells of the grid. Gauss-Newton from (0, 0); when that explains less than
    :data:`SHIFT_EXPLAINED`, a search over whole cells (up to ``search``) finds another start. Only positions
    whose shifted sample stays inside the grid count. Returns ``dy``, ``dx``, ``explained`` (the fraction of the
    squared difference removed, on those positions) and ``positions``.
    """
    r, c = as_tensor(ref, "ref", dtype=torch.float64), as_tensor(cand, "cand", dtype=torch.float64)
    search = whole_number(search, "search", 0, 64)
    if r.dim() not in (3, 4) or r.shape != c.shape:
        raise ValueError(f"ref and cand must be C x H x W or N x C x H x W of the same shape, got {tuple(r.shape)} and "
                         f"{tuple(c.shape)}")
    if r.dim() == 3:
        r, c = r.unsqueeze(0), c.unsqueeze(0)
    count = [0]
    empty = torch.zeros(1, dtype=torch.float64)

    def residual(d: torch.Tensor):
        got = _shifted(r, float(d[0]), float(d[1]))
        if got is None:
            return empty, empty, empty, 0.0
        val, gy, gx, (ys, xs) = got
        cc = c[..., ys, xs]
        count[0] = int(val[0, 0].numel() * val.shape[0])
        return cc - val, gy, gx, float(((cc - r[..., ys, xs]) ** 2).sum())

    d, err, base = _gauss_newton(residual, (0.0, 0.0))
    if search > 0 and not (base > 0 and 1.0 - err / base >= SHIFT_EXPLAINED):
        start = _integer_search(r, c, search)
        at_start, _, _, base_start = residual(torch.tensor(start, dtype=torch.float64))
        if start != (0.0, 0.0) and float((at_start * at_start).sum()) < 0.5 * base_start:
            d2, err2, base2 = _gauss_newton(residual, start)
            if base2 > 0 and err2 / base2 < (err / base if base > 0 else math.inf):
                d, err, base = d2, err2, base2
    residual(d)
    return {"dy": float(d[0]), "dx": float(d[1]), "explained": 1.0 - err / base if base > 0 else 0.0,
            "positions": count[0]}


def _integer_search(r: torch.Tensor, c: torch.Tensor, search: int) -> Tuple[float, float]:
    """The whole-cell shift (within +-search) that best aligns c with r, by cross-correlation (FFT) on a few
    items and channels; each map is centred, so the peak is where c(y, x) best matches r(y + ky, x + kx)."""
    h, w = r.shape[-2:]
    y0, x0 = max(0, (h - 32) // 2), max(0, (w - 32) // 2)
    r, c = r[:2, :2, y0:y0 + 32, x0:x0 + 32], c[:2, :2, y0:y0 + 32, x0:x0 + 32]
    h, w = r.shape[-2:]
    r = r - r.mean(dim=(-2, -1), keepdim=True)
    c = c - c.mean(dim=(-2, -1), keepdim=True)
    size = (2 * h, 2 * w)                                             # zero padding: no wrap-around
    corr = torch.fft.irfft2(torch.fft.rfft2(r, s=size) * torch.fft.rfft2(c, s=size).conj(), s=size).sum(dim=(0, 1))
    ky = min(search, h - 2)
    kx = min(search, w - 2)
    best, best_val = (0.0, 0.0), -math.inf
    for iy in range(-ky, ky + 1):
        for ix in range(-kx, kx + 1):
            overlap = (h - abs(iy)) * (w - abs(ix))
            v = float(corr[iy % size[0], ix % size[1]]) / overlap
            if v > best_val:
                best, best_val = (float(iy), float(ix)), v
    return best


def shift(st: Stage) -> Optional[Cause]:
    """A constant (dy, dx) shift of the grid, fitted on a window of a few items and channels.

    For a stage given a :class:`Pooler`, the shift is the pooling boxes' instead (:func:`pooled_shift`).
    """
    if st.pooler is not None and st.pooled_from is not None:
        return pooled_shift(st)
    if not st.spatial:
        return None
    n, ch, h, w = st.r.shape
    if h < 3 or w < 3:
        return None
    items = torch.arange(min(n, 8)) * n // min(n, 8)
    r, c = st.r, st.c
    if ch > 4:                                                        # the channels that differ most, on the sample
        sr, sc, _ = st.flat_sample()
        pick = (sc - sr).abs().amax(dim=1).topk(4).indices.sort().values
        r, c = r.index_select(1, pick), c.index_select(1, pick)
    r, c = r.index_select(0, items), c.index_select(0, items)
    win, margin = 32, 6
    if h > win + 2 * margin or w > win + 2 * margin:                  # the window where they differ most
        e = (c - r).abs().float().sum(dim=(0, 1))[None, None]
        kh, kw = min(win, h), min(win, w)
        stride = max(1, min(kh, kw) // 4)
        e = torch.nn.functional.avg_pool2d(e, (kh, kw), stride=stride)[0, 0]
        iy, ix = divmod(int(e.argmax()), e.shape[1])
        y0, x0 = iy * stride, ix * stride
        ya, yb = max(y0 - margin, 0), min(y0 + kh + margin, h)
        xa, xb = max(x0 - margin, 0), min(x0 + kw + margin, w)
        r, c = r[..., ya:yb, xa:xb], c[..., ya:yb, xa:xb]
    est = estimate_shift(r, c)
    return _shift_cause(est, "cells of the stage's grid", {"items": len(items), "channels": int(r.shape[1]),
                                                           "window": [int(r.shape[2]), int(r.shape[3])]})


def _shift_cause(est: Dict[str, float], unit: str, extra: Dict[str, Any]) -> Optional[Cause]:
    if est["explained"] < SHIFT_EXPLAINED or max(abs(est["dy"]), abs(est["dx"])) < MIN_SHIFT:
        return None
    dy, dx = round(est["dy"], 3), round(est["dx"], 3)
    ev = {"dy": dy, "dx": dx, "unit": unit, "explained": _rounded(est["explained"], 4), **extra}
    return cause("shift", est["explained"], ev,
                 f"the candidate reads its input at (y {dy:+.2f}, x {dx:+.2f}) {unit} where the reference reads "
                 f"(y, x); this explains {est['explained']:.1%} of the squared difference")


# --------------------------------------------------------------------------------------------------
# shift of a ROI-pooled stage
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pooler:
    """How a stage was pooled with torchvision's ``roi_align``, so that a shift of its boxes can be fitted.

    ``features``: the name of the reference stage that was pooled (Tensor[N, C, H, W]); ``rois``: Tensor[R, 5] (batch index,
    x1, y1, x2, y2) in the coordinates ``spatial_scale`` maps to the feature map (image pixels); and the op's
    ``output_size``, ``spatial_scale``, ``sampling_ratio`` and ``aligned``, as the reference ran it.

    A pooled map alone cannot show a shift smaller than its bins (a 7 x 7 bin of a 40-pixel box spans several
    feature cells); the features it was pooled from can.
    """

    features: str
    rois: torch.Tensor
    output_size: Tuple[int, int]
    spatial_scale: float
    sampling_ratio: int
    aligned: bool

    def pool(self, features: torch.Tensor, dy: float = 0.0, dx: float = 0.0) -> torch.Tensor:
        """The reference's pooling with every box moved by (dy, dx) feature cells."""
        from torchvision.ops import roi_align

        move = torch.tensor([0.0, dx, dy, dx, dy], dtype=torch.float64) / self.spatial_scale
        rois = (self.rois.double() + move).to(features.dtype)
        return roi_align(features, rois, self.output_size, spatial_scale=self.spatial_scale,
                         sampling_ratio=self.sampling_ratio, aligned=self.aligned)


@dataclass(frozen=True)
class LevelPooler:
    """How an FPN pooler pooled a stage: several feature maps, each box from the level assigned to it.

    The pooler of a real detector (Detectron2's ``ROIPooler`` with ``level_poolers``, torchvision's
    ``MultiScaleRoIAlign``) assigns each box to a level by its size, ``floor(canonical_level + log2(sqrt(area) /
    canonical_scale))`` clamped to the levels there are (Detectron2's ``assign_boxes_to_levels``, torchvision's
    ``LevelMapper``), and pools it from that level's map with ``roi_align``.

    ``features``: the reference stages of the levels, finest first (Tensor[N, C, H, W] each); ``rois``:
    Tensor[R, 5] (batch index, x1, y1, x2, y2) in image pixels; ``levels``: Tensor[R], each box's index into
    ``features``, as the pooler assigned it; ``spatial_scales``: 1 / stride of each level; ``output_size``,
    ``sampling_ratio``, ``aligned``: ``roi_align``'s arguments. ``canonical_level`` and ``canonical_scale``
    describe the assignment (224 and 4 in both libraries' defaults).
    """

    features: Tuple[str, ...]
    rois: torch.Tensor
    levels: torch.Tensor
    spatial_scales: Tuple[float, ...]
    output_size: Tuple[int, int]
    sampling_ratio: int
    aligned: bool
    canonical_level: int = 4
    canonical_scale: float = 224.0

    def pool(self, features: Any, dy: float = 0.0, dx: float = 0.0,
             rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The reference's pooling (Tensor[R, C, h, w]) with every box moved by (dy, dx) cells of its own level's
        map; ``rows``: only these boxes, in this order."""
        from torchvision.ops import roi_align

        maps = list(features)
        rois = self.rois if rows is None else self.rois[rows]
        levels = self.levels if rows is None else self.levels[rows]
        c = maps[0].shape[1]
        out = torch.zeros((len(rois), c, *self.output_size), dtype=maps[0].dtype)
        for k, (f, scale) in enumerate(zip(maps, self.spatial_scales)):
            idx = torch.nonzero(levels == k).view(-1)
            if idx.numel() == 0:
                continue
            move = torch.tensor([0.0, dx, dy, dx, dy], dtype=torch.float64) / scale
            boxes = (rois[idx].double() + move).to(f.dtype)
            out[idx] = roi_align(f, boxes, self.output_size, spatial_scale=scale,
                                 sampling_ratio=self.sampling_ratio, aligned=self.aligned)
        return out


#: A pooled shift is fitted on at most this many boxes, evenly spread over the stage, ...
POOLED_FIT_BOXES = 64
#: ... and on at most this many channels (the first ones): a shift moves every channel alike.
POOLED_FIT_CHANNELS = 32


def pooled_shift(st: Stage) -> Optional[Cause]:
    """Fit cand = pool(reference features, boxes moved by (dy, dx) feature cells) by Gauss-Newton.

    The derivatives are finite differences of ``roi_align`` (1e-3 cell). Needs the pooler to reproduce the
    reference stage at (0, 0); otherwise no shift is claimed. For a :class:`LevelPooler` the cells are those of
    each box's own level, so one (dy, dx) is half a cell on every level when ``aligned`` differs. The fit reads
    at most :data:`POOLED_FIT_BOXES` boxes and :data:`POOLED_FIT_CHANNELS` channels.
    """
    pooler = st.pooler
    if pooler is None or st.pooled_from is None:
        return None
    multi = isinstance(pooler, LevelPooler)
    k = POOLED_FIT_CHANNELS
    feats: Any = [f[:, :k].double() for f in st.pooled_from] if multi else st.pooled_from[:, :k].double()
    r, c = st.ref[:, :k].double(), st.cand[:, :k].double()
    if r.dim() != 4 or len(r) != len(pooler.rois):
        return None
    n = len(r)
    rows = torch.arange(min(n, POOLED_FIT_BOXES)) * n // max(min(n, POOLED_FIT_BOXES), 1)
    r, c = r[rows], c[rows]

    def pool(dy: float = 0.0, dx: float = 0.0) -> torch.Tensor:
        if multi:
            return pooler.pool(feats, dy, dx, rows=rows)
        return Pooler(pooler.features, pooler.rois[rows], pooler.output_size, pooler.spatial_scale,
                      pooler.sampling_ratio, pooler.aligned).pool(feats, dy, dx)

    at_zero = pool()
    if tuple(at_zero.shape) != tuple(r.shape):
        return None
    if float((at_zero - r).abs().max()) > st.atol + st.rtol * float(r.abs().max()):
        return None
    h = 1e-3

    def residual(d: torch.Tensor):
        dy, dx = float(d[0]), float(d[1])
        val = pool(dy, dx)
        jy = (pool(dy + h, dx) - pool(dy - h, dx)) / (2 * h)
        jx = (pool(dy, dx + h) - pool(dy, dx - h)) / (2 * h)
        return c - val, jy, jx, float(((c - r) ** 2).sum())

    d, err, base = _gauss_newton(residual, (0.0, 0.0), iters=20)
    est = {"dy": float(d[0]), "dx": float(d[1]), "explained": 1.0 - err / base if base > 0 else 0.0}
    if multi:
        strides = [1.0 / s for s in pooler.spatial_scales]
        extra: Dict[str, Any] = {"in_image_pixels_per_level": {f"stride {_rounded(s, 3):g}": [
            _rounded(est["dy"] * s, 3), _rounded(est["dx"] * s, 3)] for s in strides},
            "pooled_from": list(pooler.features), "boxes": int(len(pooler.rois)), "boxes_fitted": int(len(rows)),
            "levels": [int((pooler.levels == k).sum()) for k in range(len(strides))]}
        return _shift_cause(est, "feature cells of each box's level", extra)
    scale = 1.0 / pooler.spatial_scale
    return _shift_cause(est, "feature cells", {"in_image_pixels": [_rounded(est["dy"] * scale, 3),
                                                                   _rounded(est["dx"] * scale, 3)],
                                               "pooled_from": pooler.features, "boxes": int(len(pooler.rois)),
                                               "boxes_fitted": int(len(rows))})


#: A resample (scale and shift per axis) must remove at least this fraction of the squared difference: the
#: reference it interpolates was itself resampled from a finer image, so detail is lost.
RESAMPLE_EXPLAINED = 0.5
#: Positions per axis the resample fit reads at most (a central window).
RESAMPLE_POSITIONS = 384


def _sample_at(t: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Tensor[N, C, len(ys), len(xs)]: ``t`` (Tensor[N, C, H, W]) read bilinearly at rows ``ys`` and columns ``xs``
    (cell centres at whole numbers; border values outside)."""
    h, w = t.shape[-2:]
    gy = 2 * ys / max(h - 1, 1) - 1
    gx = 2 * xs / max(w - 1, 1) - 1
    grid = torch.stack([gx[None, :].expand(len(ys), len(xs)), gy[:, None].expand(len(ys), len(xs))], -1)
    return torch.nn.functional.grid_sample(t, grid[None].expand(len(t), -1, -1, -1).to(t.dtype), mode="bilinear",
                                           align_corners=True, padding_mode="border")


def resample(st: Stage) -> Optional[Cause]:
    """Fit candidate(y, x) = reference(a_y y + b_y, a_x x + b_x) by Gauss-Newton (finite-difference gradients of
    the bilinearly read reference) on at most 2 items, 3 channels and a central window of
    :data:`RESAMPLE_POSITIONS` cells per axis. Tried on stages of at most 4 channels (an image: a resize mistake
    is made on the image, and a feature map downstream of another cause fits a warp partly by chance). Found when
    a scale differs from 1 by more than 1e-4 and the fit removes :data:`RESAMPLE_EXPLAINED`."""
    if not st.spatial:
        return None
    n, ch, h, w = st.r.shape
    if h < 8 or w < 8 or ch > 4:                  # images (a resize mistake is made on the image), not features
        return None
    r = st.r[:2, :3].double()
    c = st.c[:2, :3].double()
    y0, x0 = max(0, (h - RESAMPLE_POSITIONS) // 2), max(0, (w - RESAMPLE_POSITIONS) // 2)
    ys = torch.arange(y0, min(h, y0 + RESAMPLE_POSITIONS), dtype=torch.float64)   # every cell of a central window:
    xs = torch.arange(x0, min(w, x0 + RESAMPLE_POSITIONS), dtype=torch.float64)   # striding would alias the resize
    c = c[..., ys.long(), :][..., xs.long()]
    base = float(((c - r[..., ys.long(), :][..., xs.long()]) ** 2).sum())
    if base <= 0:
        return None
    p = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    step_h, err = 1e-3, base
    for _ in range(15):
        yy, xx = p[0] * ys + p[1], p[2] * xs + p[3]
        inside = (((yy >= 0) & (yy <= h - 1))[:, None] & ((xx >= 0) & (xx <= w - 1))[None, :]).expand_as(c)
        val = _sample_at(r, yy, xx)
        gy = (_sample_at(r, yy + step_h, xx) - _sample_at(r, yy - step_h, xx)) / (2 * step_h)
        gx = (_sample_at(r, yy, xx + step_h) - _sample_at(r, yy, xx - step_h)) / (2 * step_h)
        res = (c - val)[inside]
        if res.numel() < 16:
            return None
        err = float((res * res).sum())
        jac = torch.stack([(gy * ys[:, None])[inside], gy[inside], (gx * xs[None, :])[inside], gx[inside]], 1)
        step = torch.linalg.lstsq(jac, res[:, None]).solution[:, 0]
        if not bool(torch.isfinite(step).all()):
            return None
        p = p + step
        if float(step.abs().max()) < 1e-7:
            break
    explained = 1.0 - err / base
    if explained < RESAMPLE_EXPLAINED or max(abs(float(p[0]) - 1), abs(float(p[2]) - 1)) <= 1e-4:
        return None
    ev = {"scale_y": _rounded(p[0], 6), "offset_y": _rounded(p[1], 4), "scale_x": _rounded(p[2], 6),
          "offset_x": _rounded(p[3], 4), "explained": _rounded(explained, 4)}
    return cause("resample", explained, ev,
                 f"the candidate reads the grid at y' = {ev['scale_y']:.5f} y {ev['offset_y']:+.3f}, x' = "
                 f"{ev['scale_x']:.5f} x {ev['offset_x']:+.3f}: another resize mapping; this explains "
                 f"{explained:.0%} of the squared difference (the rest is detail the resampled reference lost)")


#: Rows compared pairwise by :func:`row_order` at most (a 2-D stage of more rows is not tried).
ROW_ORDER_ROWS = 8192


def row_order(st: Stage) -> Optional[Cause]:
    """Rows of a 2-D stage (Tensor[R, K]) that are the reference's rows in another order.

    Each candidate row is matched to the nearest reference row not taken yet (largest difference within the
    tolerance). Found when at least 90% of the rows find a partner and some sit at another index.
    """
    if st.ref.dim() != 2 or len(st.ref) < 2 or len(st.ref) > ROW_ORDER_ROWS:
        return None
    r, c = st.ref.double(), st.cand.double()
    dist = torch.cdist(c, r, p=float("inf"))                         # R x R: the largest coordinate difference
    tol = st.atol + st.rtol * r.abs().amax(dim=1)
    order = torch.argsort(dist, dim=1)
    taken = torch.zeros(len(r), dtype=torch.bool)
    partner = torch.full((len(r),), -1, dtype=torch.int64)
    for i in range(len(c)):
        for j in order[i, :8].tolist():
            if not taken[j] and float(dist[i, j]) <= float(tol[j]):
                taken[j] = True
                partner[i] = j
                break
    matched = int((partner >= 0).sum())
    moved = int(((partner >= 0) & (partner != torch.arange(len(r)))).sum())
    if matched < 0.9 * len(r) or moved == 0:
        return None
    first = [int(i) for i in torch.nonzero((partner >= 0) & (partner != torch.arange(len(r)))).view(-1)[:8]]
    ev: Dict[str, Any] = {"rows": len(r), "rows_moved": moved, "rows_without_partner": len(r) - matched,
          "first_moved": [[i, int(partner[i])] for i in first]}
    return cause("row_order", matched / len(r),
                 ev, f"{moved} of {len(r)} rows sit at another index (candidate row, reference row: "
                     f"{ev['first_moved'][:3]}), {len(r) - matched} have no partner")


def fit_cause(st: Stage, d_min: float, d_max: float, c_absmax: float) -> Cause:
    """The first cause that explains a failing stage, cheapest first; ``unexplained`` when none does.

    ``d_min``, ``d_max``: the smallest and largest candidate - reference over every value; ``c_absmax`` the
    largest |candidate|.
    """
    for fit in (lambda: constant_offset(st, d_min, d_max, c_absmax), lambda: channel_affine(st),
                lambda: channel_permutation(st), lambda: border(st), lambda: shift(st), lambda: resample(st),
                lambda: row_order(st)):
        found = fit()
        if found is not None:
            if st.region is not None:
                found.evidence["fitted_on_image"] = list(st.region)
                found.evidence["padding_ignored"] = [st.shape[-2] - st.region[0], st.shape[-1] - st.region[1]]
            return found
    return cause("unexplained", 0.0, {}, "no fingerprint (offset, channel scale, channel order, border, shift, "
                 "resample, row order) explains the difference")


def apply_cause(found: Cause, reference: torch.Tensor, pooler: Optional[Any] = None,
                pooled_from: Optional[Any] = None) -> Optional[torch.Tensor]:
    """The reference with a fitted cause applied: what the cause predicts the candidate to be (its shape).

    Defined for ``constant_offset``, ``channel_affine``, ``channel_permutation`` and ``shift`` (NaN where a
    shifted sample leaves the grid); None for the others, which have no model of the candidate.
    """
    ev = found.evidence
    r = reference.double()
    if found.name == "constant_offset":
        return r + float(ev["offset"])
    if found.name in ("channel_affine", "channel_permutation"):
        v, _, _ = _layout(r)                                          # N x C x H x W view
        n_ch = v.shape[1]
        if found.name == "channel_permutation":
            perm = ev.get("permutation", [])
            if len(perm) != n_ch:                                     # shortened in the evidence: not applicable
                return None
            v = v[:, perm]
        scale = ev.get("scale", ev.get("then_scale"))
        bias = ev.get("bias", ev.get("then_bias"))
        if scale is not None and bias is not None:
            if len(scale) != n_ch or len(bias) != n_ch:
                return None
            v = v * torch.tensor(scale, dtype=v.dtype).view(1, -1, 1, 1) + torch.tensor(bias, dtype=v.dtype).view(1, -1, 1, 1)
        return _unlayout(v, reference.shape)
    if found.name == "shift":
        if isinstance(pooler, LevelPooler) and pooled_from is not None:
            return pooler.pool([f.double() for f in pooled_from], float(ev["dy"]), float(ev["dx"]))
        if isinstance(pooler, Pooler) and isinstance(pooled_from, torch.Tensor):
            return pooler.pool(pooled_from.double(), float(ev["dy"]), float(ev["dx"]))
        v, spatial, _ = _layout(r)
        if not spatial:
            return None
        return _unlayout(shift_map(v, float(ev["dy"]), float(ev["dx"])), reference.shape)
    return None


def _unlayout(v: torch.Tensor, shape) -> torch.Tensor:
    """Back from the Tensor[N, C, H, W] view of :func:`_layout` to the stage's own shape."""
    shape = tuple(shape)
    if len(shape) >= 5:
        moved = list(shape)
        c = moved.pop(1)
        moved.insert(len(moved) - 2, c)
        return v.reshape(moved).movedim(-3, 1)
    if len(shape) == 4:
        return v
    if len(shape) == 3:
        return v[0]
    if len(shape) == 2:
        return v[0, :, :, 0].T
    return v.reshape(shape)


def same_cause(a: Cause, b: Cause) -> bool:
    """Whether two stages show the same cause with the same parameters (a divergence carried along)."""
    if a.name != b.name:
        return False
    ea, eb = a.evidence, b.evidence
    if a.name == "channel_permutation":
        return ea.get("permutation") == eb.get("permutation")
    if a.name == "shift":
        return ea.get("unit") == eb.get("unit") and math.hypot(ea["dy"] - eb["dy"], ea["dx"] - eb["dx"]) <= 0.1
    if a.name == "constant_offset":
        return abs(ea["offset"] - eb["offset"]) <= 1e-3 * max(1.0, abs(ea["offset"]))
    if a.name == "row_order":
        return True
    if a.name == "resample":
        return all(abs(ea[k] - eb[k]) <= 0.01 for k in ("scale_y", "offset_y", "scale_x", "offset_x"))
    if a.name == "border":
        return ea.get("k") == eb.get("k")
    return a.name == "non_finite"
