"""The miniature detector of chapter 10: fitting it, and one inference."""

from __future__ import annotations

from .common import Row, best_of


def run(quick: bool = False):
    from explainer import pipeline as P
    from explainer.conventions import DETECTRON, DETECTRON2

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
    return rows
