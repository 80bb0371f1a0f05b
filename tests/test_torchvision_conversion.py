"""torchvision's detectors' state dicts to Detectron2's and back (explainer.checkpoints.torchvision_detection), on the
real torchvision models (weights=None, seeded): exact round trips, Detectron2's names and shapes, the same detections."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torchvision.models import detection as TD

from explainer import anchors as A
from explainer import checkpoints as Ck
from explainer.checkpoints import torchvision_detection as TVD
from tools.notebooks import ROOT

SIZE = dict(min_size=160, max_size=160)


def _model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(weights=None, weights_backbone=None, **SIZE)
    if arch == "faster":
        return TD.fasterrcnn_resnet50_fpn(num_classes=81, box_score_thresh=0.0, **common).eval()
    if arch == "mask":
        return TD.maskrcnn_resnet50_fpn(num_classes=81, box_score_thresh=0.0, **common).eval()
    if arch == "keypoint":
        return TD.keypointrcnn_resnet50_fpn(num_classes=2, box_score_thresh=0.0, **common).eval()
    return TD.retinanet_resnet50_fpn(num_classes=80, score_thresh=0.0, **common).eval()


@pytest.fixture(scope="module", params=["faster", "mask", "keypoint", "retinanet"])
def model(request):
    m = _model(request.param)
    # a trained-looking model: non-trivial normalisation statistics, so that a moved row or statistic shows
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return request.param, m


def _image():
    return [torch.rand(3, 150, 170, generator=torch.Generator().manual_seed(3))]


def test_round_trip_is_exact(model):
    arch, m = model
    sd = m.state_dict()
    d2, report = TVD.convert_torchvision_to_detectron2(sd)
    assert not report["unmapped"] and report["source"] == "torchvision"
    back, back_report = TVD.convert_detectron2_to_torchvision(d2, dropped=report["dropped"])
    assert set(back) == set(sd) and not back_report["unmapped"] and not back_report["filled"]
    for k in sd:
        assert back[k].dtype == sd[k].dtype and torch.equal(back[k], sd[k]), k


def _expected(arch: str):
    """Detectron2's parameter names and shapes for the architecture (its model's state_dict names)."""
    rcnn = Ck.detectron2_expected_shapes(num_classes=1 if arch == "keypoint" else 80)
    backbone = {k: v for k, v in rcnn.items() if k.startswith("backbone.bottom_up.")}
    if arch in ("faster", "keypoint"):
        out = {k: v for k, v in rcnn.items() if "mask_head" not in k}
        if arch == "keypoint":   # detectron2/modeling/roi_heads/keypoint_head.py: conv_fcn1..8, score_lowres
            for i in range(1, 9):
                out[f"roi_heads.keypoint_head.conv_fcn{i}.weight"] = (512, 256 if i == 1 else 512, 3, 3)
                out[f"roi_heads.keypoint_head.conv_fcn{i}.bias"] = (512,)
            out["roi_heads.keypoint_head.score_lowres.weight"] = (512, 17, 4, 4)
            out["roi_heads.keypoint_head.score_lowres.bias"] = (17,)
        return out
    if arch == "mask":
        return rcnn
    # detectron2/modeling/meta_arch/retinanet.py (RetinaNetHead) and backbone/fpn.py (res3..res5, LastLevelP6P7 on res5)
    out = dict(backbone)
    for lvl, cin in ((3, 512), (4, 1024), (5, 2048)):
        out.update({f"backbone.fpn_lateral{lvl}.weight": (256, cin, 1, 1), f"backbone.fpn_lateral{lvl}.bias": (256,),
                    f"backbone.fpn_output{lvl}.weight": (256, 256, 3, 3), f"backbone.fpn_output{lvl}.bias": (256,)})
    out.update({"backbone.top_block.p6.weight": (256, 2048, 3, 3), "backbone.top_block.p6.bias": (256,),
                "backbone.top_block.p7.weight": (256, 256, 3, 3), "backbone.top_block.p7.bias": (256,)})
    for sub in ("cls_subnet", "bbox_subnet"):
        for i in (0, 2, 4, 6):
            out[f"head.{sub}.{i}.weight"] = (256, 256, 3, 3)
            out[f"head.{sub}.{i}.bias"] = (256,)
    out.update({"head.cls_score.weight": (9 * 80, 256, 3, 3), "head.cls_score.bias": (9 * 80,),
                "head.bbox_pred.weight": (36, 256, 3, 3), "head.bbox_pred.bias": (36,)})
    return out


def test_converted_names_and_shapes_are_detectron2s(model):
    arch, m = model
    d2, report = TVD.convert_torchvision_to_detectron2(m.state_dict())
    expected = _expected(arch)
    assert set(d2) == set(expected), (sorted(set(d2) - set(expected))[:5], sorted(set(expected) - set(d2))[:5])
    res = Ck.audit(d2, expected)
    if arch == "retinanet":
        # torchvision computes P6 from P5 (256 channels); Detectron2's LastLevelP6P7 defaults to res5 (2048)
        assert [x[0] for x in res["mismatched"]] == ["backbone.top_block.p6.weight"]
        assert any("P6 from P5" in n for n in report["notes"])
    else:
        assert res["ok"] and res["matched"] == len(expected), res["mismatched"][:3]
    assert report["architecture"] == {"faster": "Faster R-CNN", "mask": "Mask R-CNN", "keypoint": "Keypoint R-CNN",
                                      "retinanet": "RetinaNet"}[arch]


def test_a_model_loaded_from_the_dict_converted_and_back_gives_the_same_detections(model):
    arch, m = model
    with torch.no_grad():
        ref = m(_image())[0]
        d2, report = TVD.convert_torchvision_to_detectron2(m.state_dict())
        back, _ = TVD.convert_detectron2_to_torchvision(d2, dropped=report["dropped"])
        other = _model(arch, seed=5)
        other.load_state_dict(back, strict=True)
        got = other(_image())[0]
        # without the report's dropped tensors: background rows are zeros, torchvision never reads them
        bare, bare_report = TVD.convert_detectron2_to_torchvision(d2)
        third = _model(arch, seed=6)
        missing, unexpected = third.load_state_dict(bare, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
        got_bare = third(_image())[0]
    assert len(ref["boxes"]) > 0
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
        assert torch.equal(got_bare[k], ref[k]), k
    if arch in ("faster", "mask", "keypoint"):
        assert bare_report["filled"]


def test_retinanet_rows_follow_detectron2s_size_major_anchors():
    m = _model("retinanet")
    d2, report = TVD.convert_torchvision_to_detectron2(m.state_dict())
    cell = m.anchor_generator.cell_anchors[0]          # torchvision's 9 anchors of P3, ratio-major
    moved = A.permute_anchor_rows(cell, 3, 3, "ratio_major", "size_major")
    areas = ((moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])).reshape(3, 3)
    assert (areas.max(1).values / areas.min(1).values < 1.1).all()   # each block of three: one size
    assert report["rpn_anchors"]["reordered"] and report["rpn_anchors"]["rows_moved"] == 6   # a 3 x 3 transpose keeps its diagonal
    k = 80
    w = m.state_dict()["head.classification_head.cls_logits.weight"]
    perm = report["rpn_anchors"]["permutation"]
    for a in range(9):
        assert torch.equal(d2["head.cls_score.weight"][a * k:(a + 1) * k], w[perm[a] * k:(perm[a] + 1) * k])


def test_rcnn_predictors_move_the_background_row_last():
    m = _model("mask")
    sd = m.state_dict()
    d2, report = TVD.convert_torchvision_to_detectron2(sd)
    assert torch.equal(d2["roi_heads.box_predictor.cls_score.weight"][-1], sd["roi_heads.box_predictor.cls_score.weight"][0])
    assert torch.equal(d2["roi_heads.box_predictor.bbox_pred.weight"], sd["roi_heads.box_predictor.bbox_pred.weight"][4:])
    assert torch.equal(d2["roi_heads.mask_head.predictor.weight"], sd["roi_heads.mask_predictor.mask_fcn_logits.weight"][1:])
    assert report["K"] == 80 and report["detectron2_settings"]["MODEL.ROI_HEADS.NUM_CLASSES"] == 80
    assert report["rpn_anchors"]["rows_moved"] == 0   # FPN: one size per level


def test_load_audit_and_the_command_line_recognise_a_torchvision_file(tmp_path):
    m = _model("faster")
    path = tmp_path / "fasterrcnn.pth"
    torch.save(m.state_dict(), path)
    ck = Ck.load_checkpoint(path)
    assert ck.format.startswith("torchvision")
    sd, report = Ck.convert_checkpoint(ck)
    assert report["source"] == "torchvision" and "backbone.fpn_lateral2.weight" in sd
    raw = Ck.audit(ck.tensors, _expected("faster"))
    assert raw["source"] == "torchvision" and not raw["ok"] and "convert it first" in raw["warnings"][0][2]
    out = tmp_path / "d2.pth"
    run = subprocess.run([sys.executable, "-m", "explainer", "convert", str(path), str(out), "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["format_in"].startswith("torchvision") and printed["counts"]["tensors out"] == len(sd)
    written = Ck.load_checkpoint(out).tensors
    assert set(written) == set(sd) and all(torch.equal(written[k], sd[k]) for k in sd)
    spec = tmp_path / "expected.json"
    spec.write_text(json.dumps({k: list(v) for k, v in _expected("faster").items()}))
    run = subprocess.run([sys.executable, "-m", "explainer", "audit", str(path), "--expected", str(spec)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="state_dict"):
        TVD.convert_torchvision_to_detectron2({"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="state_dict"):
        TVD.convert_torchvision_to_detectron2([1, 2])
    with pytest.raises(ValueError, match="dropped"):
        TVD.convert_detectron2_to_torchvision({}, dropped=[1])
    with pytest.raises(ValueError, match="name"):
        TVD.torchvision_to_detectron2_name(3)
