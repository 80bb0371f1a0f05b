"""Diagnosing two sets of detections: 100 images with 100 detections each."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from .common import Row, best_of

N_IMAGES, PER_IMAGE = 100, 100


def _side(seed: int):
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(N_IMAGES):
        w = np.exp(rng.uniform(np.log(8), np.log(300), PER_IMAGE))
        h = np.minimum(w * np.exp(rng.uniform(-0.7, 0.7, PER_IMAGE)), 400)
        x1, y1 = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
        out[k] = {"boxes": np.stack([x1, y1, x1 + w, y1 + h], 1), "scores": rng.uniform(0.05, 1, PER_IMAGE),
                  "labels": rng.integers(0, 80, PER_IMAGE)}
    return out


def run(quick: bool = False):
    from explainer import diagnose as D

    ref = _side(0)
    rng = np.random.default_rng(1)
    plus = {k: {**d, "boxes": d["boxes"] + np.r_[0, 0, 1, 1] + rng.normal(0, 0.02, d["boxes"].shape)}
            for k, d in ref.items()}
    scaled = {k: {**d, "boxes": d["boxes"] * 0.8, "labels": d["labels"] + 1} for k, d in ref.items()}
    rows = []
    n = N_IMAGES * PER_IMAGE
    for name, cand, expect in (("x2, y2 + 1 and noise (aligned as given)", plus, {"plus_one"}),
                               ("x 0.8 and labels + 1 (robust alignment first)", scaled, {"scale", "label_offset"})):
        got = set(D.diagnose(ref, cand).names)
        t = best_of(lambda cand=cand: D.diagnose(ref, cand), repeat=3 if quick else 7)
        rows.append(Row("diagnose", f"diagnose {N_IMAGES} images x {PER_IMAGE} detections: {name}", t, "s", "< 1 s",
                        t < 1.0, f"{n} vs {n} detections as arrays; found {', '.join(sorted(got))}"
                                 f"{'' if expect <= got else ' (EXPECTED ' + ', '.join(sorted(expect)) + ')'}; best of runs"))
    with tempfile.TemporaryDirectory() as tmp:
        r, c = Path(tmp) / "reference.json", Path(tmp) / "candidate.json"
        r.write_text(json.dumps(D.to_coco_results(ref)))
        c.write_text(json.dumps(D.to_coco_results(scaled)))
        t = best_of(lambda: D.diagnose(str(r), str(c)), repeat=3 if quick else 5)
        rows.append(Row("diagnose", f"diagnose two COCO result files ({n} results each), read and parsed", t, "s",
                        "< 1 s", t < 1.0, "x 0.8 and labels + 1; JSON parsing and validation included; best of runs"))
    return rows
