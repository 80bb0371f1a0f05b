"""The miniature detector of chapter 10: fitting it, one inference, its ROIAlign, and the cost of importing it."""

from __future__ import annotations

import subprocess
import sys

from .common import Row, best_of

IMPORT = ("import sys, time; t = time.perf_counter(); import torch; t1 = time.perf_counter(); "
          "import explainer.course.pipeline, explainer.course.compare, explainer.course.cache; t2 = time.perf_counter(); "
          "print(t1 - t, t2 - t1, 'torchvision' in sys.modules)")


def _import_seconds(repeat: int) -> tuple:
    """(import torch, then the detector's modules, torchvision imported?) in a fresh process; the fastest run."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True, check=True).stdout.split()
        runs.append((float(out[0]), float(out[1]), out[2] == "True"))
    return min(runs, key=lambda r: r[1])


def run(quick: bool = False):
    import torch

    from explainer.conventions import DETECTRON, DETECTRON2
    from explainer.course import pipeline as P
    from explainer.roi_align import roi_align

    train = P.synthetic_scenes(8, seed=0)
    scene = P.synthetic_scenes(1, seed=1000)[0]
    det = P.fit_detector(train, DETECTRON)
    t_fit = best_of(lambda: P.fit_detector(train, DETECTRON), repeat=2 if quick else 3, warmup=0)
    h, w = scene.image_size
    rows = [Row("pipeline", "miniature detector: fit", t_fit, "s", "< 5 s", t_fit < 5.0,
                f"8 scenes of {h}x{w}; RPN ridge per anchor type, box head L-BFGS + ridge; best of runs")]
    conv = det.converted(DETECTRON2)
    for name, d, c in (("Detectron", det, DETECTRON), ("Detectron2, converted", conv, DETECTRON2)):
        t = best_of(lambda d=d, c=c: d.run(scene, c), repeat=5 if quick else 20)
        rows.append(Row("pipeline", f"miniature detector: one inference ({name})", t * 1000, "ms", "< 100 ms", t < 0.1,
                        f"{h}x{w} image, {P.PRE_NMS_TOPK}/{P.POST_NMS_TOPK} proposals before/after NMS, "
                        f"masks pasted; best of runs"))
    # the head's ROIAlign: torchvision's compiled op (what the detector calls) against chapter 4's transparent one
    props = det.run(scene, DETECTRON).stages["proposals_nms"]["boxes"]
    feats = torch.nn.functional.avg_pool2d(P.colour_maps(scene.image)[None], P.HEAD_STRIDE)
    rois = torch.cat([torch.zeros(len(props), 1), props], 1)
    args = (feats, rois, P.POOL, 1.0 / P.HEAD_STRIDE, -1, False)
    t_op = best_of(lambda: P._roi_align(*args), repeat=5 if quick else 20)
    t_py = best_of(lambda: roi_align(*args), repeat=3 if quick else 10)
    diff = float((P._roi_align(*args) - roi_align(*args)).abs().max())
    detail = f"{len(rois)} proposals of one inference, {P.POOL}x{P.POOL}, {feats.shape[1]} channels; best of runs"
    rows.append(Row("pipeline", "head ROIAlign: torchvision's compiled op (used)", t_op * 1000, "ms", "", None, detail))
    rows.append(Row("pipeline", "head ROIAlign: explainer.roi_align.roi_align", t_py * 1000, "ms", "", None,
                    f"{detail}; largest difference from the compiled op {diff:.1e}"))
    t_torch, t_mods, tv = _import_seconds(2 if quick else 3)
    rows.append(Row("pipeline", "import explainer.course.pipeline, .compare, .course (after torch)", t_mods, "s", "", None,
                    f"fresh process, fastest of runs; import torch itself {t_torch:.2f} s; torchvision imported: {tv}"))
    return rows
