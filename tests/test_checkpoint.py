"""Checkpoint tools: safe loading, the name map, conversion, audit and the command line."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from explainer import anchors as A
from explainer.checkpoints import checkpoint as Ck
from explainer.checkpoints import maskrcnn_benchmark as MB
from explainer.cli import main
from explainer.conventions import DETECTRON, DETECTRON2
from tests.conftest import load_golden

NAMES = load_golden("checkpoint/name_map.json")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small():
    return Ck.synthetic_detectron_checkpoint(num_classes=3, small=True)


def _write_pkl(path: Path, obj, protocol=2) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("table", ["fpn", "non_fpn", "densepose_keypoint"])
def test_name_map_equals_detectron2_loader(table):
    for d2, c2 in NAMES[table].items():
        assert Ck.detectron_to_detectron2_name(c2)[0] == d2, c2


def test_every_family_of_the_synthetic_checkpoint_is_mapped(small):
    sd, report = Ck.convert_detectron_to_detectron2(small["blobs"])
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
    sd, _ = Ck.convert_detectron_to_detectron2(small["blobs"])
    back = Ck.convert_detectron2_to_detectron_predictor({f"roi_heads.box_predictor.{k}": v for k, v in sd.items()})
    assert torch.equal(back["cls_score_w"], torch.from_numpy(small["blobs"]["cls_score_w"]))
    assert torch.equal(back["bbox_pred_w"][4:], torch.from_numpy(small["blobs"]["bbox_pred_w"][4:]))


def test_load_detectron_pickle_written_like_python2(tmp_path, small):
    p = Ck.write_detectron_pickle(small, tmp_path / "model_final.pkl")
    assert b"numpy" in p.read_bytes()[:4000] and pickle.SHORT_BINSTRING in p.read_bytes()
    ck = Ck.load_checkpoint(p)
    assert ck.format == "detectron (pkl)"
    assert set(ck.tensors) == set(small["blobs"])
    assert Ck.detectron_cfg_values(ck.extra["cfg"])["FPN.FPN_ON"] is True  # the cfg, as Detectron stores it
    assert np.array_equal(ck.tensors["fc6_w"].numpy(), small["blobs"]["fc6_w"])


def test_load_detectron2_pkl_and_pth(tmp_path, small):
    sd, _ = Ck.convert_detectron_to_detectron2(small["blobs"])
    for name in ("out.pkl", "out.pth"):
        Ck.save_checkpoint(sd, tmp_path / name)
        ck = Ck.load_checkpoint(tmp_path / name)
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
        Ck.load_checkpoint(p)
    assert "builtins.open" in str(e.value) or "io.open" in str(e.value)
    assert not target.exists()
    # the same with a class that does not exist here, and with os.system
    p2 = tmp_path / "evil2.pkl"
    p2.write_bytes(b"cos\nsystem\n(S'touch " + str(target).encode() + b"'\ntR.")
    with pytest.raises(ValueError, match="refused global 'os.system'"):
        Ck.load_checkpoint(p2)
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
        Ck.load_checkpoint(make(tmp_path))
    assert needle in str(e.value)


def test_audit_explains_each_finding(small):
    sd, _ = Ck.convert_detectron_to_detectron2(small["blobs"])
    want = Ck.detectron2_expected_shapes(num_classes=3, small=True)
    clean = Ck.audit(sd, want)
    assert clean["ok"] and not clean["mismatched"] and all("benign" in m[2] for m in clean["missing"])
    # NUM_CLASSES counted with background in the model config
    off = Ck.audit(sd, Ck.detectron2_expected_shapes(num_classes=4, small=True))
    causes = {m[1]: m[4] for m in off["mismatched"]}
    assert "NUM_CLASSES counted differently" in causes["roi_heads.box_predictor.cls_score.weight"]
    assert not off["ok"]
    # a renamed layer: the checkpoint calls fc1 "fc_one"
    renamed = dict(sd)
    renamed["box_head.fc_one.weight"] = renamed.pop("box_head.fc1.weight")
    res = Ck.audit(renamed, want)
    miss = {m[0]: m[2] for m in res["missing"]}
    assert "renamed" in miss["roi_heads.box_head.fc1.weight"] and "fc_one" in miss["roi_heads.box_head.fc1.weight"]
    # background box rows kept: 4(K+1) rows against 4K
    kept = dict(sd)
    kept["bbox_pred.weight"] = torch.from_numpy(small["blobs"]["bbox_pred_w"])
    cause = {m[1]: m[4] for m in Ck.audit(kept, want)["mismatched"]}["roi_heads.box_predictor.bbox_pred.weight"]
    assert "background box rows not dropped" in cause


def test_audit_accepts_module_and_json(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(4, 3))
    res = Ck.audit({"0.weight": torch.zeros(3, 4), "0.bias": torch.zeros(3)}, m)
    assert res["ok"] and res["matched"] == 2
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"shapes": {"layer.0.weight": [3, 4]}}))
    res = Ck.audit({"0.weight": torch.zeros(3, 5)}, str(spec))
    assert res["mismatched"][0][1] == "layer.0.weight"
    with pytest.raises(ValueError, match="not valid JSON"):
        (tmp_path / "bad.json").write_text("{")
        Ck.audit({}, str(tmp_path / "bad.json"))


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
    spec.write_text(json.dumps({k: list(v) for k, v in Ck.detectron2_expected_shapes(num_classes=3, small=True).items()}))
    assert main(["audit", str(out), "--expected", str(spec)]) == 0
    bad_spec = tmp_path / "spec4.json"
    bad_spec.write_text(json.dumps({k: list(v) for k, v in Ck.detectron2_expected_shapes(num_classes=4, small=True).items()}))
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


# ---------------------------------------------------------------- the checkpoint's cfg
@pytest.mark.parametrize("style", ["block", "flow"])
def test_cfg_text_as_yaml_dump_writes_it(style):
    text = (Path(__file__).parent / "data" / "checkpoint" / f"detectron_cfg_{style}.yaml").read_text()
    v = Ck.detectron_cfg_values(text)
    assert v["RPN.SIZES"] == [32, 64, 128, 256, 512]
    assert v["RPN.ASPECT_RATIOS"] == [0.5, 1, 2]          # an alias (*id001) of FPN.RPN_ASPECT_RATIOS
    assert v["FPN.FPN_ON"] is False and v["MODEL.NUM_CLASSES"] == 81 and v["TEST.BBOX_AUG.SCALES"] == []
    assert Ck.detectron_cfg_values({"RPN": {"SIZES": (32, 64)}}) == {"RPN.SIZES": [32, 64]}
    assert Ck.detectron_cfg_values("synthetic: not yaml") == {} and Ck.detectron_cfg_values(None) == {}


# ---------------------------------------------------------------- RPN anchor rows
# Detectron's generate_anchors is ratio-major (row = r * S + s), Detectron2's generate_cell_anchors size-major
# (row = s * R + r): Detectron2 row k = (s, r) = divmod(k, 3) takes Detectron row r * 5 + s.
C4_PERM = [r * 5 + s for s, r in (divmod(k, 3) for k in range(15))]


@pytest.fixture(scope="module")
def c4():
    return Ck.synthetic_detectron_checkpoint(num_classes=3, small=True, arch="c4")


def test_c4_rpn_rows_move_to_detectron2s_order(c4):
    assert C4_PERM == [0, 5, 10, 1, 6, 11, 2, 7, 12, 3, 8, 13, 4, 9, 14]
    b = {k: torch.from_numpy(v) for k, v in c4["blobs"].items() if isinstance(v, np.ndarray)}
    sd, report = Ck.convert_detectron_to_detectron2(c4["blobs"], cfg=c4["cfg"])
    r = report["rpn_anchors"]
    assert r["reordered"] and r["permutation"] == C4_PERM and r["rows_moved"] == 12 and (r["sizes"], r["ratios"]) == (5, 3)
    assert "cfg" in r["source"] and "RPN.SIZES [32, 64, 128, 256, 512]" in r["source"]
    w = sd["proposal_generator.rpn_head.objectness_logits.weight"]
    d = sd["proposal_generator.rpn_head.anchor_deltas.weight"]
    for k, j in enumerate(C4_PERM):
        assert torch.equal(w[k], b["rpn_cls_logits_w"][j])
        for c in range(4):  # anchor-major, then coordinate, in both codebases
            assert torch.equal(d[4 * k + c], b["rpn_bbox_pred_w"][4 * j + c])
            assert torch.equal(sd["proposal_generator.rpn_head.anchor_deltas.bias"][4 * k + c], b["rpn_bbox_pred_b"][4 * j + c])
    # off: the rows stay where Detectron2's own loader leaves them (convert_c2_detectron_names never moves them)
    sd0, rep0 = Ck.convert_detectron_to_detectron2(c4["blobs"], cfg=c4["cfg"], reorder_anchors=False)
    assert torch.equal(sd0["proposal_generator.rpn_head.objectness_logits.weight"], b["rpn_cls_logits_w"])
    assert torch.equal(sd0["proposal_generator.rpn_head.anchor_deltas.weight"], b["rpn_bbox_pred_w"])
    assert not rep0["rpn_anchors"]["reordered"] and "turned off" in rep0["rpn_anchors"]["source"]


def _by_anchor(out):
    return {(float(s), float(r)): (float(lg), p.tolist()) for s, r, lg, p in zip(out["size"], out["ratio"], out["logits"], out["proposals"])}


def test_reordered_rpn_predicts_for_each_anchor_what_detectron_predicted(c4):
    b = c4["blobs"]
    rpn = A.object_answering_rpn(b["rpn_cls_logits_w"].shape[1], Ck.C4_RPN_STRIDE, Ck.C4_RPN_SIZES, Ck.C4_RPN_RATIOS)
    probe = rpn["feature"]
    args = (Ck.C4_RPN_STRIDE, Ck.C4_RPN_SIZES, Ck.C4_RPN_RATIOS)
    det = _by_anchor(A.rpn_outputs_per_anchor(b["rpn_cls_logits_w"], b["rpn_cls_logits_b"], b["rpn_bbox_pred_w"],
                                               b["rpn_bbox_pred_b"], probe, *args, convention=DETECTRON))
    # Detectron's own reading: every anchor's proposal is the object (96 x 192 centred on the anchors' centre 8, 8)
    for _logit, prop in det.values():
        assert prop == pytest.approx([8 - 48, 8 - 96, 8 + 48, 8 + 96], abs=1e-4)
    d2 = DETECTRON2.replace(anchor_offset=0.5)  # Detectron's grid: only the row order differs
    for reorder, same in ((True, 15), (False, 3)):
        sd, _ = Ck.convert_detectron_to_detectron2(b, cfg=c4["cfg"], reorder_anchors=reorder)
        p = "proposal_generator.rpn_head."
        got = _by_anchor(A.rpn_outputs_per_anchor(sd[p + "objectness_logits.weight"], sd[p + "objectness_logits.bias"],
                                                   sd[p + "anchor_deltas.weight"], sd[p + "anchor_deltas.bias"], probe, *args,
                                                   convention=d2))
        assert sum(abs(got[key][0] - det[key][0]) < 1e-5 for key in det) == same
    assert max(det.values())[0] == det[(128.0, 2.0)][0]  # the anchor most like the object scores highest


def test_where_the_anchor_counts_come_from(c4):
    blobs = c4["blobs"]
    assert "argument" in Ck.convert_detectron_to_detectron2(blobs, rpn_anchors=(5, 3))[1]["rpn_anchors"]["source"]
    rep = Ck.convert_detectron_to_detectron2(blobs)[1]["rpn_anchors"]  # no cfg: Detectron's 3 default ratios assumed
    assert rep["source"].startswith("assumed") and rep["permutation"] == C4_PERM
    # 3 sizes x 5 ratios: another permutation
    other = Ck.convert_detectron_to_detectron2(blobs, rpn_anchors=(3, 5))[1]["rpn_anchors"]["permutation"]
    assert other == [r * 3 + s for s, r in (divmod(k, 5) for k in range(15))]
    with pytest.raises(ValueError, match="gives 4 sizes x 3 ratios = 12"):
        Ck.convert_detectron_to_detectron2(blobs, rpn_anchors=(4, 3))
    bad = dict(blobs, rpn_cls_logits_w=blobs["rpn_cls_logits_w"][:14], rpn_cls_logits_b=blobs["rpn_cls_logits_b"][:14],
               rpn_bbox_pred_w=blobs["rpn_bbox_pred_w"][:56], rpn_bbox_pred_b=blobs["rpn_bbox_pred_b"][:56])
    with pytest.raises(ValueError, match="pass rpn_anchors"):
        Ck.convert_detectron_to_detectron2(bad)
    with pytest.raises(ValueError, match="do not fit one another"):
        Ck.convert_detectron_to_detectron2(dict(blobs, rpn_bbox_pred_b=blobs["rpn_bbox_pred_b"][:4]))
    fpn = Ck.synthetic_detectron_checkpoint(num_classes=3, small=True)
    rep = Ck.convert_detectron_to_detectron2(fpn["blobs"], cfg=fpn["cfg"])[1]["rpn_anchors"]
    assert not rep["reordered"] and rep["sizes"] == 1 and "FPN" in rep["source"]


def test_audit_warns_about_rpn_rows_that_shapes_cannot_check(c4):
    want = Ck.detectron2_expected_shapes(num_classes=3, small=True, arch="c4")
    for reorder in (True, False):  # both load: the audit cannot tell them apart, so it warns either way
        sd, _ = Ck.convert_detectron_to_detectron2(c4["blobs"], cfg=c4["cfg"], reorder_anchors=reorder)
        res = Ck.audit(sd, want)
        assert res["ok"] and not res["mismatched"]
        (name, shape, note), = res["warnings"]
        assert name == "proposal_generator.rpn_head.objectness_logits.weight" and shape[0] == 15
        assert "12 of 15" in note and "ratio-major" in note and "size-major" in note
    fpn = Ck.synthetic_detectron_checkpoint(num_classes=3, small=True)
    assert Ck.audit(Ck.convert_detectron_to_detectron2(fpn["blobs"])[0], Ck.detectron2_expected_shapes(num_classes=3, small=True))["warnings"] == []


def test_class_agnostic_mask_head_is_kept_and_its_zero_channel_version_explained(small):
    blobs = dict(small["blobs"])
    blobs["mask_fcn_logits_w"], blobs["mask_fcn_logits_b"] = blobs["mask_fcn_logits_w"][:1], blobs["mask_fcn_logits_b"][:1]
    sd, report = Ck.convert_detectron_to_detectron2(blobs)
    assert sd["mask_head.predictor.weight"].shape[0] == 1
    assert "CLS_AGNOSTIC_MASK" in dict((r[0], r[2]) for r in report["predictor"])["mask_fcn_logits"]
    # what Detectron2's own loader would hand the model: 0 channels, explained by the audit
    cut = dict(sd, **{"mask_head.predictor.weight": sd["mask_head.predictor.weight"][1:],
                      "mask_head.predictor.bias": sd["mask_head.predictor.bias"][1:]})
    want = Ck.detectron2_expected_shapes(num_classes=3, small=True)
    want["roi_heads.mask_head.predictor.weight"] = (1, *want["roi_heads.mask_head.predictor.weight"][1:])
    want["roi_heads.mask_head.predictor.bias"] = (1,)
    causes = {m[1]: m[4] for m in Ck.audit(cut, want)["mismatched"]}
    assert "0 channels" in causes["roi_heads.mask_head.predictor.weight"] and "stays random" in causes["roi_heads.mask_head.predictor.weight"]
    assert Ck.audit(sd, want)["ok"]


def test_densepose_and_keypoint_blobs_are_renamed_as_detectron2_does():
    for d2, c2 in NAMES["densepose_keypoint"].items():
        assert Ck.detectron_to_detectron2_name(c2)[0] == d2, c2
    assert Ck.detectron_to_detectron2_name("body_conv_fcn1_w") == ("body_conv_fcn1.weight", "densepose")
    assert Ck.detectron_to_detectron2_name("Index_UV_lowres_b") == ("index_uv_lowres.bias", "densepose")


def test_cli_convert_reorders_unless_told_not_to(tmp_path, c4, capsys):
    src = Ck.write_detectron_pickle(c4, tmp_path / "c4.pkl")
    w = torch.from_numpy(c4["blobs"]["rpn_cls_logits_w"])
    capsys.readouterr()
    assert main(["convert", str(src), str(tmp_path / "re.pth")]) == 0
    out = capsys.readouterr().out
    assert "RPN anchor rows: 12 of 15 rows moved" in out and "RPN.SIZES" in out
    assert main(["convert", str(src), str(tmp_path / "no.pth"), "--no-reorder-anchors", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["rpn_anchors"]["reordered"] is False
    key = "proposal_generator.rpn_head.objectness_logits.weight"
    assert torch.equal(Ck.load_checkpoint(tmp_path / "re.pth").tensors[key], w[C4_PERM])
    assert torch.equal(Ck.load_checkpoint(tmp_path / "no.pth").tensors[key], w)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({k: list(v) for k, v in Ck.detectron2_expected_shapes(num_classes=3, small=True, arch="c4").items()}))
    assert main(["audit", str(tmp_path / "re.pth"), "--expected", str(spec)]) == 0
    assert "WARNING  proposal_generator.rpn_head.objectness_logits.weight" in capsys.readouterr().out


# ---------------------------------------------------------------- maskrcnn-benchmark
@pytest.mark.parametrize("arch", ["c4", "fpn"])
def test_maskrcnn_benchmark_state_dict_converts_and_audits_clean(arch):
    sd = MB.synthetic_maskrcnn_benchmark_state_dict(num_classes=3, arch=arch)
    assert MB.is_maskrcnn_benchmark_state_dict(sd)
    out, report = MB.convert_maskrcnn_benchmark_to_detectron2(sd)
    assert not report["unmapped"]
    res = Ck.audit(out, Ck.detectron2_expected_shapes(num_classes=3, small=True, arch=arch))
    assert res["ok"] and not res["missing"] and not res["mismatched"]  # FrozenBatchNorm statistics included
    # background first, as in Detectron: row 0 of cls_score goes last, 4 box rows and 1 mask channel are dropped
    cls = sd["roi_heads.box.predictor.cls_score.weight"]
    assert torch.equal(out["cls_score.weight"], torch.cat([cls[1:], cls[:1]]))
    assert torch.equal(out["bbox_pred.bias"], sd["roi_heads.box.predictor.bbox_pred.bias"][4:])
    assert torch.equal(out["mask_head.predictor.weight"], sd["roi_heads.mask.predictor.mask_fcn_logits.weight"][1:])
    ignored = dict(report["ignored"])
    assert all("anchor buffer" in ignored[k] for k in sd if "cell_anchors" in k)


# maskrcnn-benchmark module paths (modeling/backbone/resnet.py, fpn.py, rpn/rpn.py, roi_heads/*) -> the names
# Detectron2's loader gives the same layers of a Detectron checkpoint ("other": no rule, kept as it is)
MB_NAMES = [
    ("backbone.body.stem.conv1.weight", "stem.conv1.weight", "stem"),
    ("backbone.body.stem.bn1.running_var", "stem.conv1.norm.running_var", "stem"),
    ("module.backbone.body.layer1.0.downsample.0.weight", "res2.0.shortcut.weight", "res stages"),
    ("backbone.body.layer3.5.bn2.bias", "res4.5.conv2.norm.bias", "res stages"),
    ("backbone.fpn.fpn_inner4.weight", "fpn_lateral5.weight", "fpn"),
    ("backbone.fpn.fpn_layer1.bias", "fpn_output2.bias", "fpn"),
    ("roi_heads.box.feature_extractor.head.layer4.2.conv3.weight", "res5.2.conv3.weight", "res stages"),
    ("roi_heads.box.feature_extractor.fc7.bias", "box_head.fc2.bias", "box head"),
    ("rpn.head.bbox_pred.weight", "proposal_generator.rpn_head.anchor_deltas.weight", "rpn"),
    ("roi_heads.mask.predictor.conv5_mask.weight", "mask_head.deconv.weight", "mask head"),
    ("roi_heads.keypoint.feature_extractor.conv_fcn3.weight", "roi_heads.keypoint_head.conv_fcn3.weight", "keypoint head"),
    ("roi_heads.keypoint.predictor.kps_score_lowres.bias", "roi_heads.keypoint_head.score_lowres.bias", "keypoint head"),
    ("roi_heads.mask.feature_extractor.head.layer4.0.conv1.weight", "roi_heads.mask.feature_extractor.head.layer4.0.conv1.weight", "other"),
    ("backbone.fpn.top_blocks.p6.weight", "backbone.fpn.top_blocks.p6.weight", "other"),
]


@pytest.mark.parametrize("name, d2, family", MB_NAMES)
def test_maskrcnn_benchmark_names_by_hand(name, d2, family):
    assert MB.maskrcnn_benchmark_to_detectron2_name(name) == (d2, family)


def test_maskrcnn_benchmark_rpn_rows_follow_its_anchor_buffer():
    sd = MB.synthetic_maskrcnn_benchmark_state_dict(num_classes=3, arch="c4")
    out, report = MB.convert_maskrcnn_benchmark_to_detectron2({"module." + k: v for k, v in sd.items()})
    r = report["rpn_anchors"]
    assert r["permutation"] == C4_PERM and "cell_anchors.0" in r["source"]
    assert torch.equal(out["proposal_generator.rpn_head.objectness_logits.weight"], sd["rpn.head.cls_logits.weight"][C4_PERM])
    no_buffer = {k: v for k, v in sd.items() if "cell_anchors" not in k}
    assert "maskrcnn-benchmark's default" in MB.convert_maskrcnn_benchmark_to_detectron2(no_buffer)[1]["rpn_anchors"]["source"]
    fpn = MB.convert_maskrcnn_benchmark_to_detectron2(MB.synthetic_maskrcnn_benchmark_state_dict(arch="fpn"))[1]["rpn_anchors"]
    assert not fpn["reordered"] and "5 levels" in fpn["source"]


def test_cli_converts_a_maskrcnn_benchmark_file(tmp_path, capsys):
    sd = MB.synthetic_maskrcnn_benchmark_state_dict(num_classes=3, arch="c4")
    src = tmp_path / "model_final.pth"
    torch.save({"model": sd, "iteration": 90000}, src)
    ck = Ck.load_checkpoint(src)
    assert Ck.convert_checkpoint(ck)[1]["source"] == "maskrcnn-benchmark"
    capsys.readouterr()
    assert main(["convert", str(src), str(tmp_path / "d2.pth")]) == 0
    assert "12 of 15 rows moved" in capsys.readouterr().out
    d2 = Ck.load_checkpoint(tmp_path / "d2.pth").tensors
    assert torch.equal(d2["cls_score.bias"], torch.cat([sd["roi_heads.box.predictor.cls_score.bias"][1:],
                                                        sd["roi_heads.box.predictor.cls_score.bias"][:1]]))
    # a Detectron2 checkpoint is neither: nothing to convert
    Ck.save_checkpoint(d2, tmp_path / "again.pth")
    assert main(["convert", str(tmp_path / "again.pth"), str(tmp_path / "x.pth")]) == 2
    assert "nothing to convert" in capsys.readouterr().err


def test_the_chapters_example_checkpoint_is_a_c4_model_whose_rpn_rows_move():
    ck = Ck.example_c4_checkpoint()
    same = Ck.synthetic_detectron_checkpoint(num_classes=80, small=True, arch="c4")
    assert ck["blobs"].keys() == same["blobs"].keys()
    assert all(np.array_equal(ck["blobs"][k], same["blobs"][k]) for k in ck["blobs"])
    assert ck["blobs"]["cls_score_w"].shape[0] == 81
    _, report = Ck.convert_detectron_to_detectron2(ck["blobs"], cfg=ck["cfg"])
    r = report["rpn_anchors"]
    assert r["anchors"] == 15 and r["rows_moved"] > 0


# --------------------------------------------------------------------------------------------------
# RetinaNet
# --------------------------------------------------------------------------------------------------
def _retinanet_blobs(num_classes: int = 80, anchors: int = 9) -> dict:
    """A Detectron RetinaNet's head and extra levels as modeling/retinanet_heads.py and FPN.py name them: each tower's
    convolutions and the predictors stored once, at the finest level (fpn3); fpn_6 from res5 (2048 channels)."""
    f = np.float32
    b = {}
    for tower in ("cls", "bbox"):
        for n in range(4):
            b[f"retnet_{tower}_conv_n{n}_fpn3_w"] = np.zeros((256, 256, 3, 3), f)
            b[f"retnet_{tower}_conv_n{n}_fpn3_b"] = np.zeros(256, f)
    b["retnet_cls_pred_fpn3_w"] = np.zeros((anchors * num_classes, 256, 3, 3), f)
    b["retnet_cls_pred_fpn3_b"] = np.full(anchors * num_classes, -4.59512, f)
    b["retnet_bbox_pred_fpn3_w"] = np.zeros((anchors * 4, 256, 3, 3), f)
    b["retnet_bbox_pred_fpn3_b"] = np.zeros(anchors * 4, f)
    b["fpn_6_w"], b["fpn_6_b"] = np.zeros((256, 2048, 3, 3), f), np.zeros(256, f)
    b["fpn_7_w"], b["fpn_7_b"] = np.zeros((256, 256, 3, 3), f), np.zeros(256, f)
    return b


def test_retinanet_blobs_become_detectron2s_retinanet_head():
    sd, report = Ck.convert_detectron_to_detectron2(_retinanet_blobs())
    # Detectron2 @ 02b5c4e, modeling/meta_arch/retinanet.py: RetinaNetHead builds cls_subnet and bbox_subnet as
    # Sequential(Conv2d, ReLU) x 4 (no norm by default: convolutions at 0, 2, 4, 6), then cls_score and bbox_pred;
    # backbone/fpn.py: LastLevelP6P7 holds p6 and p7 (the loader aligns these names by suffix with the model's)
    expected = {f"head.{t}_subnet.{i}.{p}" for t in ("cls", "bbox") for i in (0, 2, 4, 6) for p in ("weight", "bias")}
    expected |= {f"head.{h}.{p}" for h in ("cls_score", "bbox_pred") for p in ("weight", "bias")}
    expected |= {f"top_block.p{k}.{p}" for k in (6, 7) for p in ("weight", "bias")}
    assert set(sd) == expected and not report["unmapped"]
    # sigmoid classes: 9 anchors x 80 classes, no background row to move, the bias kept as trained
    assert sd["head.cls_score.weight"].shape == (720, 256, 3, 3) and report["predictor"] == []
    assert torch.all(sd["head.cls_score.bias"] == torch.tensor(-4.59512))
    assert sd["top_block.p6.weight"].shape[1] == 2048 and report["rpn_anchors"]["anchors"] == 0


def test_retinanet_prior_bias_and_anchor_order():
    from explainer import labels as L

    # -log((1 - 0.01) / 0.01) = -log(99), both codebases' PRIOR_PROB 0.01
    assert L.retinanet_prior_bias(0.01) == pytest.approx(-math.log(99.0))
    assert 1 / (1 + math.exp(-L.retinanet_prior_bias(0.2))) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="prior_prob"):
        L.retinanet_prior_bias(1.0)
    # Detectron's RetinaNet cell anchors at stride 8 (test_retinanet.py's loop, octave-major): the first row is
    # generate_anchors(8, (32,), (0.5,)): base 8 x 8, round(sqrt(128)) = 11 and round(5.5) = 6 (half to even),
    # times 4 -> 44 x 24 around 3.5: [-18, -8, 25, 15]
    d1 = A.detectron_retinanet_cell_anchors(8)
    assert d1[0].tolist() == [-18.0, -8.0, 25.0, 15.0] and d1.shape == (9, 4)
    assert A.retinanet_sizes(8) == pytest.approx([32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)])
    # in continuous coordinates, centred, each row's nearest Detectron2 cell anchor (Base-RetinaNet.yaml's sizes,
    # size-major) is the row of the same index: the orders already agree, unlike the C4 RPN's
    cont = d1 + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64) - 4.0
    d2 = A.d2_cell_anchors(A.retinanet_sizes(8), [0.5, 1.0, 2.0], torch.float64)
    assert torch.equal(torch.cdist(cont, d2).argmin(1), torch.arange(9))
    assert float((cont - d2).abs().max()) < 2.5          # what remains is Detectron's rounding


def test_the_synthetic_retinanet_blobs_are_detectrons_names_and_shapes():
    from explainer.checkpoints import conversion

    built, by_hand = conversion.synthetic_retinanet_blobs(), _retinanet_blobs()
    assert {k: v.shape for k, v in built.items()} == {k: v.shape for k, v in by_hand.items()}
    assert np.allclose(built["retnet_cls_pred_fpn3_b"], -math.log(99.0))
    with pytest.raises(ValueError, match="prior_prob"):
        conversion.synthetic_retinanet_blobs(prior_prob=0.0)
