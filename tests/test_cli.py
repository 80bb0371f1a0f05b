"""The command line, run as a user runs it: ``python -m explainer <command>`` in a separate process.

Every command exits 0 on success, 1 when it found problems (audit, diagnose), 2 on bad input with one line
``error: ...`` on stderr (an existing output without ``--force`` included).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from explainer import cli
from explainer.checkpoints import checkpoint as Ck

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explainer", *args], capture_output=True, text=True, cwd=ROOT)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def detectron_pkl(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ckpt") / "model.pkl"
    p.write_bytes(pickle.dumps(Ck.synthetic_detectron_checkpoint(num_classes=3, small=True), protocol=2))
    return p


def test_convert_writes_once_and_refuses_to_overwrite(detectron_pkl, tmp_path):
    out = tmp_path / "model.pth"
    r = run("convert", str(detectron_pkl), str(out))
    assert r.returncode == 0, r.stderr
    assert out.exists() and f"wrote {out}" in r.stdout
    r = run("convert", str(detectron_pkl), str(out))
    assert r.returncode == 2 and "--force" in one_error_line(r)
    r = run("convert", str(tmp_path / "nope.pkl"), str(tmp_path / "x.pth"))
    assert r.returncode == 2 and "nope.pkl" in one_error_line(r)


def test_audit_reports_problems_with_exit_code_1(detectron_pkl, tmp_path):
    good, bad = tmp_path / "three.json", tmp_path / "four.json"
    for path, k in ((good, 3), (bad, 4)):
        path.write_text(json.dumps({n: list(s) for n, s in Ck.detectron2_expected_shapes(num_classes=k, small=True).items()}))
    r = run("audit", str(detectron_pkl), "--expected", str(good))
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr
    r = run("audit", str(detectron_pkl), "--expected", str(bad), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["mismatched"]
    r = run("audit", str(detectron_pkl), "--expected", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "missing.json" in one_error_line(r)


def test_diagnose_exit_codes(tmp_path):
    ref = [{"image_id": i, "category_id": 1 + i % 3, "bbox": [10.0 + 20 * k, 5.0 + 7 * i, 15.0, 30.0 + k],
            "score": 0.9 - 0.05 * k} for i in range(4) for k in range(6)]
    shifted = [{**e, "category_id": e["category_id"] + 1} for e in ref]
    a, b, broken = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "broken.json"
    a.write_text(json.dumps(ref))
    b.write_text(json.dumps(shifted))
    broken.write_text('[{"image_id": 1, ')
    r = run("diagnose", str(a), str(a))
    assert r.returncode == 0 and "identical" in r.stdout, r.stderr
    r = run("diagnose", str(a), str(b), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["causes"][0]["name"] == "label_offset"
    r = run("diagnose", str(a), str(broken))
    assert r.returncode == 2 and "broken.json: not valid JSON" in one_error_line(r)


def test_a_bad_command_line_is_one_line_and_exit_code_2():
    r = run("diagnose", "only-one-file.json")
    assert r.returncode == 2 and "required" in one_error_line(r)
    r = run()
    assert r.returncode == 2 and all(c in r.stdout for c in cli.COMMANDS)


def test_every_entry_point_goes_through_explainer_cli():
    from explainer import __main__

    assert __main__.main is cli.main
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["explainer"] in ("explainer.__main__:main", "explainer.cli:main")
    assert set(cli.COMMANDS) == {"convert", "audit", "diagnose", "trace"}
