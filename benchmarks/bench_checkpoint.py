"""Load, convert and audit the synthetic ResNet-50-FPN Mask R-CNN checkpoint (about 44 M parameters).

Time and peak memory are measured in a fresh process: resident memory is sampled every 2 ms in a thread
(``/proc/self/statm``) while the checkpoint is loaded, converted and audited; the peak minus the resident memory
just before loading (interpreter, torch, numpy) is the memory the operation needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import Row

_CHILD = r"""
import json, os, sys, threading, time
from explainer.checkpoints import checkpoint as Ck
import torch, numpy
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
base = rss()
peak = [base]
done = threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
w = threading.Thread(target=watch, daemon=True)
w.start()
t0 = time.perf_counter()
ck = Ck.load_checkpoint(sys.argv[1])
t1 = time.perf_counter()
sd, report = Ck.convert_detectron_to_detectron2(ck.tensors)
t2 = time.perf_counter()
res = Ck.audit(sd, Ck.detectron2_expected_shapes())
t3 = time.perf_counter()
done.set()
w.join()
peak = max(peak[0], rss())
print(json.dumps({"load": t1 - t0, "convert": t2 - t1, "audit": t3 - t2, "base": base, "peak": peak,
                  "params": ck.n_parameters, "ok": res["ok"]}))
"""


def run(quick: bool = False):
    from explainer.checkpoints.checkpoint import synthetic_detectron_checkpoint, write_detectron_pickle

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "synthetic_R50_FPN_maskrcnn.pkl"
        ck = synthetic_detectron_checkpoint()
        write_detectron_pickle(ck, path)  # as Detectron's Python 2 files are written
        size = path.stat().st_size
        del ck
        best = None
        for _ in range(1 if quick else 3):
            out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if best is None or r["load"] + r["convert"] + r["audit"] < best["load"] + best["convert"] + best["audit"]:
                best = r
    total = best["load"] + best["convert"] + best["audit"]
    extra = best["peak"] - best["base"]
    ratio = extra / size
    return [
        Row("checkpoint", "load + convert + audit, synthetic R50-FPN Mask R-CNN", total, "s", "< 2 s", total < 2.0,
            f"{best['params']:,} parameters, {size / 2**20:.0f} MiB file; load {best['load']:.2f} s, convert {best['convert']:.2f} s, "
            f"audit {best['audit']:.2f} s; audit clean: {best['ok']}"),
        Row("checkpoint", "peak memory / checkpoint size", ratio, "x", "< 3x", ratio < 3.0,
            f"peak resident {best['peak'] / 2**20:.0f} MiB minus {best['base'] / 2**20:.0f} MiB before loading, sampled every 2 ms, "
            f"against a {size / 2**20:.0f} MiB file"),
    ]
