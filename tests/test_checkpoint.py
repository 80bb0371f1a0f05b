"""Checkpoint tools: safe loading, the name map, conversion, audit and the command line."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from explainer import checkpoint as C
from explainer.cli import main
from tests.conftest import load_golden

NAMES = load_golden("checkpoint/name_map.json")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small():
    return C.synthetic_detectron_checkpoint(num_classes=3, small=True)


def _write_pkl(path: Path, obj, protocol=2) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("table", ["fpn", "non_fpn"])
def test_name_map_equals_detectron2_loader(table):
    for d2, c2 in NAMES[table].items():
        assert C.detectron_to_detectron2_name(c2)[0] == d2, c2


def test_every_family_of_the_synthetic_checkpoint_is_mapped(small):
    sd, report = C.convert_detectron_to_detectron2(small["blobs"])
    assert not report["unmapped"]
    families = {r[2] for r in report["renamed"]}
    assert {"stem", "res stages", "fpn", "rpn", "box head", "mask head"} <= families
    assert "stem.conv1.weight" in sd and "res2.0.shortcut.weight" in sd and "res5.2.conv3.norm.bias" in sd
    assert "fpn_lateral2.weight" in sd and "fpn_output5.bias" in sd and "proposal_generator.rpn_head.anchor_deltas.weight" in sd
    assert sd["cls_score.weight"].shape[0] == 4 and sd["bbox_pred.weight"].shape[0] == 12 and sd["mask_head.predictor.weight"].shape[0] == 3
    # the background row of cls_score moved last, its box rows dropped
    assert torch.equal(sd["cls_score.weight"][-1], torch.from_numpy(small["blobs"]["cls_score_w"][0]))
    assert torch.equal(sd["bbox_pred.weight"], torch.from_numpy(small["blobs"]["bbox_pred_w"][4:]))
    ignored = dict(report["ignored"])
    assert "conv1_w_momentum" in ignored and "optimizer state" in ignored["conv1_w_momentum"]


def test_round_trip_of_the_predictors(small):
    sd, _ = C.convert_detectron_to_detectron2(small["blobs"])
    back = C.convert_detectron2_to_detectron_predictor({f"roi_heads.box_predictor.{k}": v for k, v in sd.items()})
    assert torch.equal(back["cls_score_w"], torch.from_numpy(small["blobs"]["cls_score_w"]))
    assert torch.equal(back["bbox_pred_w"][4:], torch.from_numpy(small["blobs"]["bbox_pred_w"][4:]))


def test_load_detectron_pickle_written_like_python2(tmp_path, small):
    p = C.write_detectron_pickle(small, tmp_path / "model_final.pkl")
    assert b"numpy" in p.read_bytes()[:4000] and pickle.SHORT_BINSTRING in p.read_bytes()
    ck = C.load_checkpoint(p)
    assert ck.format == "detectron (pkl)"
    assert set(ck.tensors) == set(small["blobs"])
    assert ck.extra["cfg"].startswith("synthetic")
    assert np.array_equal(ck.tensors["fc6_w"].numpy(), small["blobs"]["fc6_w"])


def test_load_detectron2_pkl_and_pth(tmp_path, small):
    sd, _ = C.convert_detectron_to_detectron2(small["blobs"])
    for name in ("out.pkl", "out.pth"):
        C.save_checkpoint(sd, tmp_path / name)
        ck = C.load_checkpoint(tmp_path / name)
        assert ck.format in ("detectron2 (pkl)", "pth (pth)", "detectron2 (pth)")
        assert set(ck.tensors) == set(sd) and all(torch.equal(ck.tensors[k], sd[k]) for k in sd)


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    target = tmp_path / "pwned.txt"
    p = _write_pkl(tmp_path / "evil.pkl", {"blobs": {"conv1_w": np.zeros(3, np.float32), "x": _Payload(str(target))}})
    with pytest.raises(ValueError) as e:
        C.load_checkpoint(p)
    assert "builtins.open" in str(e.value) or "io.open" in str(e.value)
    assert not target.exists()
    # the same with a class that does not exist here, and with os.system
    p2 = tmp_path / "evil2.pkl"
    p2.write_bytes(b"cos\nsystem\n(S'touch " + str(target).encode() + b"'\ntR.")
    with pytest.raises(ValueError, match="refused global 'os.system'"):
        C.load_checkpoint(p2)
    assert not target.exists()


def _file(name, data):
    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name
    return make


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.pkl", "no such file"),
    (lambda d: d, "is a directory"),
    (_file("empty.pkl", b""), "empty"),
    (_file("t.pkl", pickle.dumps({"blobs": {"a": np.zeros(100)}}, protocol=2)[:60]), "truncated or corrupted"),
    (_file("c.pkl", b"\x00\x01garbage" * 10), "truncated or corrupted"),
    (_file("l.pkl", pickle.dumps([1, 2, 3])), "expected a dict of parameters"),
    (_file("n.pkl", pickle.dumps({"a": 1})), "holds no arrays"),
    (_file("bad.pth", b"PK\x03\x04 not a zip"), "not a readable .pth"),
])
def test_bad_files_give_clear_errors(tmp_path, make, needle):
    with pytest.raises(ValueError) as e:
        C.load_checkpoint(make(tmp_path))
    assert needle in str(e.value)


def test_audit_explains_each_finding(small):
    sd, _ = C.convert_detectron_to_detectron2(small["blobs"])
    want = C.detectron2_expected_shapes(num_classes=3, small=True)
    clean = C.audit(sd, want)
    assert clean["ok"] and not clean["mismatched"] and all("benign" in m[2] for m in clean["missing"])
    # NUM_CLASSES counted with background in the model config
    off = C.audit(sd, C.detectron2_expected_shapes(num_classes=4, small=True))
    causes = {m[1]: m[4] for m in off["mismatched"]}
    assert "NUM_CLASSES counted differently" in causes["roi_heads.box_predictor.cls_score.weight"]
    assert not off["ok"]
    # a renamed layer: the checkpoint calls fc1 "fc_one"
    renamed = dict(sd)
    renamed["box_head.fc_one.weight"] = renamed.pop("box_head.fc1.weight")
    res = C.audit(renamed, want)
    miss = {m[0]: m[2] for m in res["missing"]}
    assert "renamed" in miss["roi_heads.box_head.fc1.weight"] and "fc_one" in miss["roi_heads.box_head.fc1.weight"]
    # background box rows kept: 4(K+1) rows against 4K
    kept = dict(sd)
    kept["bbox_pred.weight"] = torch.from_numpy(small["blobs"]["bbox_pred_w"])
    cause = {m[1]: m[4] for m in C.audit(kept, want)["mismatched"]}["roi_heads.box_predictor.bbox_pred.weight"]
    assert "background box rows not dropped" in cause


def test_audit_accepts_module_and_json(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(4, 3))
    res = C.audit({"0.weight": torch.zeros(3, 4), "0.bias": torch.zeros(3)}, m)
    assert res["ok"] and res["matched"] == 2
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"shapes": {"layer.0.weight": [3, 4]}}))
    res = C.audit({"0.weight": torch.zeros(3, 5)}, str(spec))
    assert res["mismatched"][0][1] == "layer.0.weight"
    with pytest.raises(ValueError, match="not valid JSON"):
        (tmp_path / "bad.json").write_text("{")
        C.audit({}, str(tmp_path / "bad.json"))


def test_cli_convert_audit_and_refusals(tmp_path, small, capsys):
    src = _write_pkl(tmp_path / "model.pkl", small)
    before = src.read_bytes()
    out = tmp_path / "model_d2.pth"
    assert main(["convert", str(src), str(out)]) == 0
    assert out.exists() and src.read_bytes() == before  # the input is never modified
    assert main(["convert", str(src), str(out)]) == 2    # refuses to overwrite: bad input
    assert "--force" in capsys.readouterr().err
    assert main(["convert", str(src), str(out), "--force"]) == 0
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({k: list(v) for k, v in C.detectron2_expected_shapes(num_classes=3, small=True).items()}))
    assert main(["audit", str(out), "--expected", str(spec)]) == 0
    bad_spec = tmp_path / "spec4.json"
    bad_spec.write_text(json.dumps({k: list(v) for k, v in C.detectron2_expected_shapes(num_classes=4, small=True).items()}))
    capsys.readouterr()
    assert main(["audit", str(out), "--expected", str(bad_spec), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["mismatched"]
    assert main(["convert", str(tmp_path / "nope.pkl"), str(tmp_path / "x.pth")]) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # no partial files left behind


def test_cli_as_a_process(tmp_path, small):
    src = _write_pkl(tmp_path / "m.pkl", small)
    r = subprocess.run([sys.executable, "-m", "explainer", "convert", str(src), str(tmp_path / "m.pkl.out.pkl"), "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["tensors out"] > 100
    r = subprocess.run([sys.executable, "-m", "explainer", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "convert" in r.stdout and "audit" in r.stdout
