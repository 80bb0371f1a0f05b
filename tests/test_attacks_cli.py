"""Misuse of the command line, as a careless user or a broken file presents it: every case ends with exit code 2 and
one line ``error: <file>: <what> (<what to do>)`` on stderr, never a traceback and never a hang; signals end a
command quietly and leave no temporary file; written files get the umask's permissions.

Each case runs ``python -m explainer`` in its own process, with a timeout (a FIFO opened for reading would block
forever, ``/dev/zero`` never ends).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from explainer import cli
from explainer.checkpoints import checkpoint as Ck

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path, umask: int | None = None) -> subprocess.CompletedProcess:
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "explainer", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, preexec_fn=pre, env={**os.environ, "PYTHONPATH": str(ROOT)})


def assert_refused(r: subprocess.CompletedProcess, *names: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "weights_only" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in names:   # the file the message is about
        assert n in lines[0], (n, lines[0])
    # "<what to do>" in parentheses, or after a colon/semicolon for the loader's messages
    assert "(" in lines[0] or ";" in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "model.pkl").write_bytes(pickle.dumps(Ck.synthetic_detectron_checkpoint(num_classes=3, small=True), protocol=2))
    shapes = {n: list(s) for n, s in Ck.detectron2_expected_shapes(num_classes=3, small=True).items()}
    (d / "expected.json").write_text(json.dumps(shapes))
    (d / "results.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9}]))
    os.mkfifo(d / "fifo")
    (d / "folder").mkdir()
    (d / "bad.json").write_text("{bad")
    (d / "infinity.json").write_text("[Infinity]")
    (d / "nan.json").write_text('{"x": NaN}')
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "huge_number.json").write_text(json.dumps({"x": [1]}).replace("1", "1" + "0" * 400 + ".0"))
    (d / "string.json").write_text('"results.json"')
    (d / "not_a_file_path.txt").write_text("plain text")
    np.savez(d / "dump.npz", x=np.ones((2, 3), np.float32))
    return d


CASES = [
    # convert: inputs
    (("convert", "missing.pkl", "out.pth"), ["missing.pkl"]),
    (("convert", "fifo", "out.pth"), ["fifo"]),
    (("convert", "/dev/zero", "out.pth"), ["/dev/zero"]),
    (("convert", "folder", "out.pth"), ["folder"]),
    (("convert", "bad.json", "out.pth"), ["bad.json"]),
    # convert: outputs
    (("convert", "model.pkl", "folder"), ["folder"]),
    (("convert", "model.pkl", "model.pkl"), ["model.pkl"]),
    (("convert", "model.pkl", "no_such_folder/out.pth"), ["no_such_folder"]),
    (("convert", "model.pkl", "bad.json/out.pth"), ["bad.json"]),
    (("convert", "model.pkl", "out.txt"), ["out.txt"]),
    (("convert", "model.pkl", "/proc/out.pth"), ["/proc/out.pth"]),
    # audit
    (("audit", "model.pkl", "--expected", "folder"), ["folder"]),
    (("audit", "model.pkl", "--expected", "infinity.json"), ["infinity.json", "Infinity"]),
    (("audit", "model.pkl", "--expected", "nan.json"), ["nan.json", "NaN"]),
    (("audit", "model.pkl", "--expected", "deep.json"), ["deep.json", "nested"]),
    (("audit", "model.pkl", "--expected", "huge_number.json"), ["huge_number.json"]),
    (("audit", "model.pkl", "--expected", "fifo"), ["fifo"]),
    (("audit", "model.pkl", "--expected", "/dev/zero"), ["/dev/zero"]),
    (("audit", "model.pkl", "--expected", "missing.json"), ["missing.json"]),
    (("audit", "model.pkl", "--expected", "bad.json"), ["bad.json"]),
    (("audit", "fifo", "--expected", "expected.json"), ["fifo"]),
    (("audit", "/dev/zero", "--expected", "expected.json"), ["/dev/zero"]),
    (("audit", "folder", "--expected", "expected.json"), ["folder"]),
    # diagnose
    (("diagnose", "fifo", "results.json"), ["fifo"]),
    (("diagnose", "results.json", "/dev/zero"), ["/dev/zero"]),
    (("diagnose", "folder", "results.json"), ["folder"]),
    (("diagnose", "missing.json", "results.json"), ["missing.json"]),
    (("diagnose", "bad.json", "results.json"), ["bad.json"]),
    (("diagnose", "deep.json", "results.json"), ["deep.json"]),
    (("diagnose", "results.json", "string.json"), ["string.json"]),
    # trace
    (("trace", "fifo", "dump.npz"), ["fifo"]),
    (("trace", "dump.npz", "/dev/zero"), ["/dev/zero"]),
    (("trace", "folder", "dump.npz"), ["folder"]),
    (("trace", "dump.npz", "missing.npz"), ["missing.npz"]),
    (("trace", "dump.npz", "dump.npz", "--map", "folder"), ["folder"]),
    (("trace", "dump.npz", "dump.npz", "--map", "fifo"), ["fifo"]),
]


@pytest.mark.parametrize("args, names", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_misuse_is_one_error_line_and_exit_code_2(files, args, names):
    before = sorted(p.name for p in files.iterdir())
    r = run(*args, cwd=files)
    assert_refused(r, *names)
    assert sorted(p.name for p in files.iterdir()) == before   # nothing written, nothing left behind


def test_an_existing_output_is_refused_with_exit_code_2_and_kept(files, tmp_path):
    out = tmp_path / "out.pth"
    out.write_bytes(b"keep me")
    line = assert_refused(run("convert", str(files / "model.pkl"), str(out), cwd=files), str(out))
    assert "--force" in line and out.read_bytes() == b"keep me"
    r = run("convert", str(files / "model.pkl"), str(out), "--force", cwd=files)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() != b"keep me"


def test_the_exit_codes_are_documented_in_help():
    r = subprocess.run([sys.executable, "-m", "explainer", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "exits 2 on bad input" in r.stdout and "130" in r.stdout
    r = subprocess.run([sys.executable, "-m", "explainer", "convert", "--help"], capture_output=True, text=True,
                       cwd=ROOT)
    assert "an existing output without --force" in " ".join(r.stdout.split())
    readme = (ROOT / "README.md").read_text()
    assert "refusing to overwrite an existing" in " ".join(readme.split())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_checkpoint_gets_the_umask_mode(files, tmp_path, umask, mode):
    out = tmp_path / "out.pth"
    r = run("convert", str(files / "model.pkl"), str(out), umask=umask, cwd=files)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == mode


def test_unwritable_folder_and_unreadable_input_are_one_line(files, tmp_path, monkeypatch, capsys):
    # as root every folder is writable and every file readable: os.access answers for a normal user
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)
    code = cli.main(["convert", str(files / "model.pkl"), str(tmp_path / "out.pth")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "model.pkl" in err[0] and "cannot be read" in err[0]
    code = cli.main(["diagnose", str(files / "results.json"), str(files / "results.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot be read" in err[0]


def test_output_folder_not_writable_is_one_line(files, tmp_path, monkeypatch, capsys):
    real = os.access
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False if Path(path) == tmp_path else real(path, mode))
    code = cli.main(["convert", str(files / "model.pkl"), str(tmp_path / "out.pth")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "permission denied" in err[0] and str(tmp_path) in err[0]
    assert not list(tmp_path.iterdir())


#: A driver that runs the command line with torch.save slowed down after writing: the signal arrives while the
#: temporary file exists, before it is renamed into place.
#: SIGINT is set to Python's own handler first: a process started in the background by a non-interactive shell
#: inherits SIGINT ignored, and Python then installs no handler (Ctrl-C from a terminal never reaches it either).
_DRIVER = textwrap.dedent("""
    import signal, sys, time, torch
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _save = torch.save
    def slow_save(obj, f, *a, **k):
        _save(obj, f, *a, **k)
        f.flush()
        print("WRITING", flush=True)
        time.sleep(60)
    torch.save = slow_save
    from explainer.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_writing_removes_the_temporary_file(files, tmp_path, sig, code):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    p = subprocess.Popen([sys.executable, "-c", _DRIVER, "convert", str(files / "model.pkl"), str(out_dir / "m.pth")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "WRITING"
        assert list(out_dir.iterdir()), "the temporary file should exist while writing"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == code, err
    assert "Traceback" not in err and "RuntimeError" not in err
    assert not list(out_dir.iterdir()), [f.name for f in out_dir.iterdir()]


def test_a_refused_checkpoint_never_suggests_weights_only_false(files, tmp_path):
    # a .pth holding a pickle that calls a function: refused by the restricted loader
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "MARKER"),))

    import torch

    bad = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, bad)
    r = run("audit", str(bad), "--expected", str(files / "expected.json"), cwd=files)
    line = assert_refused(r, "evil.pth")
    assert "weights_only" not in line
    assert not (tmp_path / "MARKER").exists()
