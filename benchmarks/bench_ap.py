"""What each cause costs in AP, at COCO val's size: 5,000 images, 100 detections per image on each side.

Ground truth: about 7 objects per image (COCO val2017 has 36,781 in 5,000 images) of 80 categories, 8..300 px.
The reference finds them with a little noise and fills each image up to 100 detections with low-scored ones; the
candidate is the reference with two causes injected (half a pixel on every coordinate, labels moved by one, the
last class wrapping round to the first, so that its objects cannot be given back: about 1/80 of the AP), and
for the mask rows the masks grown by one pixel. Both sides are written as COCO result files (boxes; boxes and RLE
masks) and read back.

Rows: the two files parsed alone, then parsed and diagnosed (target: within 2x the parse); one plain COCOeval of
the candidate, run here, and the whole dAP report (target: within (number of causes + 3) x that evaluation); and
the 100,000-per-side case parsed and diagnosed (target: under 1 s). The scale rows run in a fresh interpreter
(``python -m benchmarks.bench_ap boxes|masks|100k``) so that one does not inherit the other's memory.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from .common import Row

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES, PER_IMAGE, GT_PER_IMAGE = 5_000, 100, 7
H, W = 480, 640
#: For the mask rows: images of 120 x 160 px, so that 500,000 RLE masks fit in memory and time on two cores.
MH, MW = 120, 160


def _coco(n_images: int, per_image: int, masks: bool, seed: int = 0):
    """Ground truth (dict) and the two sides as COCO result lists."""
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(seed)
    h, w = (MH, MW) if masks else (H, W)
    s = (MW / W) if masks else 1.0
    images, anns, ref, cand = [], [], [], []
    theta = np.linspace(0, 2 * np.pi, 13)[:-1]

    def poly(b):
        cx, cy, rx, ry = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) / 2, (b[3] - b[1]) / 2
        return [np.stack([cx + rx * np.cos(theta), cy + ry * np.sin(theta)], 1).reshape(-1).tolist()]

    def rle(b, grow=0.0):
        r = mask_util.merge(mask_util.frPyObjects(poly([b[0] - grow, b[1] - grow, b[2] + grow, b[3] + grow]), h, w))
        return {"size": r["size"], "counts": r["counts"].decode()}

    for k in range(n_images):
        images.append({"id": k + 1, "height": h, "width": w, "file_name": f"{k + 1:012d}.jpg"})
        n = GT_PER_IMAGE
        bw = np.exp(rng.uniform(np.log(8), np.log(300), n)) * s
        bh = np.minimum(bw * np.exp(rng.uniform(-0.6, 0.6, n)), h - 2)
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        lab = rng.integers(1, 81, n)
        gt = np.stack([x1, y1, x1 + bw, y1 + bh], 1)
        for i in range(n):
            a = {"id": len(anns) + 1, "image_id": k + 1, "category_id": int(lab[i]),
                 "bbox": [float(x1[i]), float(y1[i]), float(bw[i]), float(bh[i])], "area": float(bw[i] * bh[i]),
                 "iscrowd": 0}
            if masks:
                a["segmentation"] = poly(gt[i])
            anns.append(a)
        m = per_image - n
        ew = np.exp(rng.uniform(np.log(8), np.log(300), m)) * s
        eh = np.minimum(ew * np.exp(rng.uniform(-0.6, 0.6, m)), h - 2)
        ex, ey = rng.uniform(0, w - ew), rng.uniform(0, h - eh)
        boxes = np.concatenate([gt + rng.normal(0, 0.03, gt.shape) * np.sqrt(bw * bh)[:, None],
                                np.stack([ex, ey, ex + ew, ey + eh], 1)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([lab, rng.integers(1, 81, m)])
        scores = np.concatenate([rng.uniform(0.5, 1.0, n), rng.uniform(0.01, 0.6, m)])
        for b, l, sc in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
            r = {"image_id": k + 1, "category_id": l, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": sc}
            c = {"image_id": k + 1, "category_id": l + 1 if l < 80 else 1,
                 "bbox": [b[0] + 0.5, b[1] + 0.5, b[2] - b[0], b[3] - b[1]], "score": sc}
            if masks:
                r["segmentation"] = rle(b)
                c["segmentation"] = rle([v + 0.5 for v in b], grow=1.0)
            ref.append(r)
            cand.append(c)
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"class {c}"} for c in range(1, 81)]}
    return gt, ref, cand


def _best(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def _measure(kind: str) -> Dict[str, Any]:
    from pycocotools.cocoeval import COCOeval

    from explainer.diagnosis import cost as DCost
    from explainer.diagnosis import report as Dx

    masks = kind == "masks"
    n_images, per_image = (1_000, 100) if kind == "100k" else (N_IMAGES, PER_IMAGE)
    gt, ref, cand = _coco(n_images, per_image, masks)
    out: Dict[str, Any] = {"n": len(ref), "images": n_images}
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / n for n in ("gt.json", "reference.json", "candidate.json")]
        for p, data in zip(paths, (gt, ref, cand)):
            p.write_text(json.dumps(data))
        del ref, cand
        out["mb"] = sum(p.stat().st_size for p in paths[1:]) / 2 ** 20
        repeat = 3 if kind == "100k" else 1

        def parse():
            return [Dx.load_detections(str(p), name=p.name) for p in paths[1:]]

        out["parse_s"] = _best(parse, repeat)
        d = None

        def both():
            nonlocal d
            r, c = parse()
            d = Dx.diagnose(r, c)

        out["parse_diagnose_s"] = _best(both, repeat)
        out["causes"] = d.names
        if kind == "100k":
            return out
        truth = DCost.ground_truth(str(paths[0]))
        r, c = parse()
        task = "segm" if masks else "bbox"
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints its progress
            for t in (("bbox", "segm") if masks else ("bbox",)):
                E = COCOeval(truth, truth.loadRes(str(paths[2])), t)
                E.evaluate()
                E.accumulate()
        out["plain_eval_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cost = DCost.ap_cost(r, c, d, gt=truth)
        out["report_s"] = time.perf_counter() - t0
        tc = cost.tasks[task]
        out["undone"] = tc.causes
        out["tasks"] = list(cost.tasks)
        out["ap"] = {v: tc.metrics(v)["AP"] for v in ("reference", "candidate", "all_fixed")}
        out["evaluations"] = sum(len(t.evaluations) for t in cost.tasks.values())
    return out


def rows(kind: str, m: Dict[str, Any]) -> List[Row]:
    """The rows of one measurement (what ``python -m benchmarks.bench_ap KIND`` prints)."""
    n = m["n"]
    if kind == "100k":
        return [Row("diagnose ap", f"parse and diagnose two COCO result files, {n:,} results each",
                    m["parse_diagnose_s"], "s", "< 1 s", m["parse_diagnose_s"] < 1.0,
                    f"{m['images']:,} images; parse alone {m['parse_s']:.2f} s ({m['mb']:.0f} MB, orjson); "
                    f"found {', '.join(m['causes'][:3])}; best of 3, own process")]
    what = "boxes and RLE masks" if kind == "masks" else "boxes"
    out = []
    ratio = m["parse_diagnose_s"] / m["parse_s"]
    out.append(Row("diagnose ap", f"{what}: parse + diagnose / parse alone, {n:,} results per side", ratio, "x",
                   "<= 2x", ratio <= 2.0, f"parse {m['parse_s']:.1f} s, parse + diagnose "
                   f"{m['parse_diagnose_s']:.1f} s; {m['images']:,} images x {PER_IMAGE}; {m['mb']:.0f} MB of "
                   f"results; found {', '.join(m['causes'][:3])}; own process"))
    budget = len(m["undone"]) + 3
    ratio = m["report_s"] / m["plain_eval_s"]
    out.append(Row("diagnose ap", f"{what}: whole dAP report / one plain COCOeval", ratio, "x",
                   f"<= {budget}x (causes + 3)", ratio <= budget,
                   f"report {m['report_s']:.0f} s ({m['evaluations']} evaluations over {', '.join(m['tasks'])}), "
                   f"one plain pycocotools COCOeval of the candidate per task {m['plain_eval_s']:.0f} s; causes "
                   f"undone: {', '.join(m['undone'])}; {'segm' if kind == 'masks' else 'bbox'} AP reference "
                   f"{m['ap']['reference']:.3f}, candidate {m['ap']['candidate']:.3f}, all fixed "
                   f"{m['ap']['all_fixed']:.3f}"))
    return out


def run(quick: bool = False) -> List[Row]:
    out = []
    for kind in ("100k", "boxes", "masks"):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        res = subprocess.run([sys.executable, "-m", "benchmarks.bench_ap", kind], capture_output=True, text=True,
                             env=env, cwd=ROOT, timeout=7200)
        if res.returncode != 0:
            raise RuntimeError(f"ap benchmark ({kind}) failed: {res.stderr[-2000:]}")
        out += rows(kind, json.loads(res.stdout.strip().splitlines()[-1]))
    return out


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1])))
