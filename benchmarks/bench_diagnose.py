"""Diagnosing two sets of detections: 100 images with 100 detections each, and at scale (many images).

The scale rows run in a fresh interpreter each (``python -m benchmarks.bench_diagnose N_IMAGES PER_SIDE``) so
that the peak resident memory they report (``ru_maxrss``) is the diagnosis's own, the interpreter and torch
included.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import Row, best_of

N_IMAGES, PER_IMAGE = 100, 100
ROOT = Path(__file__).resolve().parent.parent
#: (images, detections per side, time target s, peak memory target GB)
SCALE = ((2_000, 100_000, 2.0, 1.0), (20_000, 200_000, 5.0, 2.0))


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
    from explainer.diagnosis import report as Dx

    ref = _side(0)
    rng = np.random.default_rng(1)
    plus = {k: {**d, "boxes": d["boxes"] + np.r_[0, 0, 1, 1] + rng.normal(0, 0.02, d["boxes"].shape)}
            for k, d in ref.items()}
    scaled = {k: {**d, "boxes": d["boxes"] * 0.8, "labels": d["labels"] + 1} for k, d in ref.items()}
    rows = []
    n = N_IMAGES * PER_IMAGE
    for name, cand, expect in (("x2, y2 + 1 and noise (aligned as given)", plus, {"plus_one"}),
                               ("x 0.8 and labels + 1 (robust alignment first)", scaled, {"scale", "label_offset"})):
        got = set(Dx.diagnose(ref, cand).names)
        t = best_of(lambda cand=cand: Dx.diagnose(ref, cand), repeat=3 if quick else 7)
        rows.append(Row("diagnose", f"diagnose {N_IMAGES} images x {PER_IMAGE} detections: {name}", t, "s", "< 1 s",
                        t < 1.0, f"{n} vs {n} detections as arrays; found {', '.join(sorted(got))}"
                                 f"{'' if expect <= got else ' (EXPECTED ' + ', '.join(sorted(expect)) + ')'}; best of runs"))
    with tempfile.TemporaryDirectory() as tmp:
        r, c = Path(tmp) / "reference.json", Path(tmp) / "candidate.json"
        r.write_text(json.dumps(Dx.to_coco_results(ref)))
        c.write_text(json.dumps(Dx.to_coco_results(scaled)))
        t = best_of(lambda: Dx.diagnose(str(r), str(c)), repeat=3 if quick else 5)
        rows.append(Row("diagnose", f"diagnose two COCO result files ({n} results each), read and parsed", t, "s",
                        "< 1 s", t < 1.0, "x 0.8 and labels + 1; JSON parsing and validation included; best of runs"))
    return rows + _scale_rows(quick)


def scale_sides(n_images: int, n: int, seed: int = 0):
    """Two sides of ``n`` detections each over ``n_images`` images, as stacks (image id per row): the candidate
    with half a pixel added to every coordinate, labels moved to the next class (contiguous 0..79) and Gaussian
    noise of 0.003 px on its boxes, the float noise two frameworks leave."""
    rng = np.random.default_rng(seed)
    image = np.sort(rng.integers(0, n_images, n))
    w = np.exp(rng.uniform(np.log(8), np.log(300), n))
    h = np.minimum(w * np.exp(rng.uniform(-0.7, 0.7, n)), 400)
    x1, y1 = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1)
    scores, labels = rng.uniform(0.05, 1, n), rng.integers(0, 79, n)
    cand = boxes + 0.5 + rng.normal(0, 0.003, boxes.shape)
    return image, (boxes, scores, labels), (cand, scores + rng.normal(0, 1e-6, n), labels + 1)


def _measure(n_images: int, n: int, repeat: int, files: bool = False) -> dict:
    """In this process: build the two sides (as the per-image dict a user passes), diagnose ``repeat`` times."""
    from explainer.diagnosis import report as Dx

    image, ref, cand = scale_sides(n_images, n)
    cuts = np.flatnonzero(np.diff(image)) + 1
    ids = image[np.r_[0, cuts]].tolist()

    def side(b, s, l):
        return {k: {"boxes": bb, "scores": ss, "labels": ll}
                for k, bb, ss, ll in zip(ids, np.split(b, cuts), np.split(s, cuts), np.split(l, cuts))}

    r, c = side(*ref), side(*cand)
    times, names = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        d = Dx.diagnose(r, c)
        times.append(time.perf_counter() - t0)
        names = d.names
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"best_s": min(times), "peak_gb": rss_kb / 2 ** 20, "names": names, "matched": d.n_matched,
           "images": len(ids)}
    if files:  # after the memory reading: the same two sides as COCO result files, read, parsed and diagnosed
        with tempfile.TemporaryDirectory() as tmp:
            paths = [Path(tmp) / "reference.json", Path(tmp) / "candidate.json"]
            for path, s in zip(paths, (r, c)):
                path.write_text(json.dumps(Dx.to_coco_results(s)))
            file_times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                Dx.diagnose(str(paths[0]), str(paths[1]))
                file_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for path in paths:
                json.loads(path.read_bytes())
            out.update(files_s=min(file_times), json_s=time.perf_counter() - t0)
    return out


def _scale_rows(quick: bool):
    rows = []
    for n_images, n, t_max, gb_max in SCALE:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_diagnose", str(n_images), str(n),
                              str(2 if quick else 3)] + (["files"] if n_images == SCALE[0][0] else []), capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(f"scale benchmark failed: {out.stderr[-2000:]}")
        m = json.loads(out.stdout.strip().splitlines()[-1])
        found = set(m["names"][:3])
        rows.append(Row("diagnose", f"diagnose {n:,} vs {n:,} detections over {n_images:,} images", m["best_s"], "s",
                        f"< {t_max:g} s", m["best_s"] < t_max,
                        f"half pixel + label + 1 under 0.003 px noise; top 3: {', '.join(m['names'][:3])}"
                        f"{'' if {'half_pixel_shift', 'label_offset'} <= found else ' (EXPECTED both)'}; "
                        f"{m['matched']:,} pairs; dicts of arrays per image; best of runs, own process"))
        rows.append(Row("diagnose", f"peak memory, {n:,} per side over {n_images:,} images", m["peak_gb"], "GB",
                        f"< {gb_max:g} GB", m["peak_gb"] < gb_max, "ru_maxrss of that process (Python and torch "
                        "included)"))
        if "files_s" in m:
            rows.append(Row("diagnose", f"the same from two COCO result files ({n:,} results each), read and parsed",
                            m["files_s"], "s", "", None, f"of which about {m['json_s']:.2f} s is Python's json.loads of "
                            f"the two files; best of runs"))
    return rows


if __name__ == "__main__":
    print(json.dumps(_measure(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:] == ["files"])))
