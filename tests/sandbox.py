"""Run one load (or save) of a hostile file in a child process with a memory cap, a CPU limit and a wall clock.

A server process imports ``explainer.checkpoints`` once (torch takes seconds to import) and runs no torch
operation itself; for each request it forks a child that sets ``RLIMIT_AS`` (its address space at the fork plus
``mem`` bytes), ``RLIMIT_CPU`` and ``RLIMIT_FSIZE``, optionally drops to another user, does one thing and reports
a small JSON: the outcome (``loaded``, ``ValueError``, ``FileExistsError``, the name of any other exception, or
``killed``/``timeout`` from the server), the message (cut to 4000 characters, with its full length), the time
and the growth of the child's peak resident memory. The server kills a child that outlives the wall clock.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

ROOT = Path(__file__).resolve().parent.parent

_SERVER = r"""
import copyreg, json, os, pickle, resource, select, sys, time, traceback
from explainer.checkpoints import checkpoint as Ck
from explainer.checkpoints.safe_load import Limits

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

def act(req):
    mode, path = req["mode"], req["path"]
    if req.get("register_ext"):
        copyreg.add_extension(*req["register_ext"])
    if mode == "load":
        lim = Limits(**req["limits"]) if req.get("limits") else None
        ck = Ck.load_checkpoint(path, limits=lim)
        return {"format": ck.format, "shapes": {k: list(v.shape) for k, v in list(ck.tensors.items())[:50]},
                "sums": {k: float(v.double().sum()) for k, v in list(ck.tensors.items())[:50]},
                "n_parameters": ck.n_parameters}
    if mode == "plain":  # what an unrestricted loader does with the same bytes (for controls)
        with open(path, "rb") as f:
            pickle.load(f, encoding="latin1")
        return {}
    if mode == "torch_unsafe":
        import torch
        torch.load(path, weights_only=False)
        return {}
    if mode == "save":
        import torch
        Ck.save_checkpoint({"w": torch.zeros(2)}, path)
        return {}
    if mode == "cli":
        from explainer.__main__ import main
        return {"exit": main(req["argv"])}
    if mode == "call":  # argv: [module, function, *string arguments]
        import importlib
        module, name, *args = req["argv"]
        return {"result": repr(getattr(importlib.import_module(module), name)(*args))[:200]}
    raise SystemExit("unknown mode " + mode)

def child(req, w):
    out = {}
    try:
        extra = req["mem"]
        vm = status("VmSize")
        resource.setrlimit(resource.RLIMIT_AS, (vm + extra, vm + extra))
        resource.setrlimit(resource.RLIMIT_CPU, (req["cpu"], req["cpu"] + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"]))
        if req.get("user"):
            os.setgid(req["user"])
            os.setuid(req["user"])
        base, t0 = status("VmRSS"), time.perf_counter()
        try:
            out = act(req)
            out["outcome"] = "loaded"
        except BaseException as e:
            msg = str(e) if isinstance(e, (ValueError, FileExistsError)) else traceback.format_exc()
            out = {"outcome": type(e).__name__, "message": msg[:4000], "message_length": len(msg)}
        out["seconds"] = time.perf_counter() - t0
        out["peak_growth"] = status("VmHWM") - base
    finally:
        os.write(w, json.dumps(out).encode())
        os._exit(0)

for line in sys.stdin:
    req = json.loads(line)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        child(req, w)
    os.close(w)
    data, status_, deadline = b"", None, time.monotonic() + req["wall"]
    while status_ is None:
        ready, _, _ = select.select([r], [], [], 0.01)
        if ready:
            data += os.read(r, 1 << 20)
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status_ = st
        elif time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status_ = "timeout"
    while True:
        chunk = os.read(r, 1 << 20)
        if not chunk:
            break
        data += chunk
    os.close(r)
    if status_ == "timeout":
        reply = {"outcome": "timeout"}
    elif not data:
        reply = {"outcome": "killed", "status": status_}
    else:
        reply = json.loads(data)
    print(json.dumps(reply), flush=True)
"""


class Sandbox:
    """``Sandbox().run(path, mode="load", mem=..., cpu=..., wall=...)`` -> the child's report (a dict)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=ROOT, text=True, bufsize=1)

    def run(self, path: Any, mode: str = "load", *, mem: int = 512 << 20, cpu: int = 20, wall: float = 60.0,
            fsize: int = 64 << 20, limits: Optional[Dict[str, int]] = None, user: Optional[int] = None,
            argv: Optional[list] = None, register_ext: Optional[list] = None) -> Dict[str, Any]:
        req = dict(path=str(path), mode=mode, mem=mem, cpu=cpu, wall=wall, fsize=fsize, limits=limits, user=user,
                   argv=argv, register_ext=register_ext)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + wall + 120  # the server enforces `wall`; this only guards the server itself
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                line = self.proc.stdout.readline()
                assert line, "the sandbox server died"
                return json.loads(line)
            if time.monotonic() > deadline:
                raise AssertionError("the sandbox server did not answer")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
