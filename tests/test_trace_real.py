"""The trace on real detectors: torchvision's Mask R-CNN R50-FPN (random weights, made confident as
:mod:`tests.real_detectors` writes down) on a bundled photo, recorded in PyTorch and run in ONNX Runtime from
its real exports (TorchScript route at opsets 11, 16 and 17; the dynamo route where torch.export succeeds).

Each mistake is made the way a user makes it: the image fed to the export in BGR or moved, a model exported with
another pixel mean or std, a Detectron2-style aligned pooler exported at Detectron2's pinned opset 11. The
expected causes come from the mistake itself (the permutation, the means and stds, the number of pixels moved,
half a feature cell), never from running the code under test.
"""

from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from explainer import trace
from explainer.cli import main as cli
from tests.real_detectors import OPSETS, export, maskrcnn
from tests.test_diagnose_real import photo

pytestmark = pytest.mark.slow

#: torchvision's ImageNet normalisation (GeneralizedRCNNTransform's defaults).
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
_EXPORTS: dict = {}


@pytest.fixture(scope="module")
def image():
    return photo("grace_hopper.jpg")                       # Tensor[3, 320, 273]


@pytest.fixture(scope="module")
def base():
    return maskrcnn()


@pytest.fixture(scope="module")
def recorded(base, image):
    return trace.record(base, [image])


def onnx_of(key: str, opset: int, **kwargs) -> bytes:
    """The export of ``maskrcnn(**kwargs)``, made once per test session."""
    if (key, opset) not in _EXPORTS:
        _EXPORTS[key, opset] = export(maskrcnn(**kwargs), [photo("grace_hopper.jpg")], opset)
    return _EXPORTS[key, opset]


def traced(reference, model: bytes, feed: torch.Tensor):
    names = trace.onnx_names(reference, model)
    cand = trace.onnx_intermediates(model, {"image": feed}, names=names)
    return trace.compare(reference, cand, onnx_model=model), cand


def padded_width(width: int) -> int:
    return int(math.ceil(width / 32) * 32)


# ----------------------------------------------------------------------------------------------------------
# ONNX Runtime through If, Loop, TopK and NonZero
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", OPSETS)
def test_every_stage_of_a_real_export_is_computed_in_the_original_order(opset, recorded, image):
    model = onnx_of("base", opset)
    graph = onnx.load_from_string(model).graph
    ops = {n.op_type for n in graph.node}
    assert {"If", "Loop", "TopK", "NonZero", "RoiAlign"} <= ops
    after = [n.output[0] for n in graph.node if n.op_type in ("RoiAlign", "ConvTranspose")]
    last_if = max(i for i, n in enumerate(graph.node) if n.op_type == "If")
    late = [v for n in list(graph.node)[last_if + 1:] for v in n.output if v][:5]
    got = trace.onnx_intermediates(model, {"image": image}, names=after + late)
    assert list(got) == [v for n in graph.node for v in n.output if v in set(after + late)]
    # the graph's own outputs, read as extra outputs, equal a plain ONNX Runtime run of the file
    finals = [o.name for o in graph.output]
    plain = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"image": image.numpy()})
    exposed = trace.onnx_intermediates(model, {"image": image}, names=finals + after)
    for name, value in zip(finals, plain):
        np.testing.assert_array_equal(exposed[name], value)


def test_a_value_inside_a_subgraph_is_refused_by_name(image):
    model = onnx_of("base", 11)
    graph = onnx.load_from_string(model).graph
    holder = next(n for n in graph.node if n.op_type == "Loop")
    inner = next(v for a in holder.attribute if a.HasField("g") for n in a.g.node for v in n.output if v)
    with pytest.raises(ValueError, match=rf"cannot be exposed: {inner} \(computed inside {holder.name}'s subgraph"):
        trace.onnx_intermediates(model, {"image": image}, names=[inner])


# ----------------------------------------------------------------------------------------------------------
# automatic pairing
# ----------------------------------------------------------------------------------------------------------
def test_the_same_model_traces_clean_with_every_stage_paired_by_scope(recorded, image):
    report, cand = traced(recorded, onnx_of("base", 16), image)
    assert report.ok, report.summary()
    assert {s.pairing for s in report.stages.values()} == {"scope"}
    stage = report.stages
    # FPN levels as dict outputs, a module called once per level, a ReLU called three times per block
    assert stage["backbone.fpn.0"].candidate == "/backbone/fpn/layer_blocks.0/layer_blocks.0.0/Conv_output_0"
    assert stage["backbone.0"].candidate == stage["backbone.fpn.0"].candidate
    assert stage["rpn.head.cls_logits:2"].candidate == "/rpn/head/cls_logits_2/Conv_output_0"
    assert stage["backbone.body.layer1.0.relu:2"].candidate == "/backbone/body/layer1/layer1.0/relu_2/Relu_output_0"
    assert stage["backbone:input"].shape == (1, 3, 320, padded_width(image.shape[-1]))
    # the exporter folds every FrozenBatchNorm into its convolution: those stages have no value of their own
    assert "backbone.body.layer1.0.bn3" in report.unpaired_reference
    for name in ("roi_heads.box_roi_pool", "roi_heads.mask_roi_pool", "roi_heads.0.0.boxes", "roi_heads.0.0.labels"):
        assert name in stage and stage[name].passed
    # labels pair with an integer value, scores with a floating one
    assert cand[stage["roi_heads.0.0.labels"].candidate].dtype.kind == "i"
    assert cand[stage["roi_heads.0.0.scores"].candidate].dtype.kind == "f"


def test_a_map_overrides_the_automatic_pairing(recorded, image):
    model = onnx_of("base", 16)
    report, cand = traced(recorded, model, image)
    other = report.stages["backbone.fpn.1"].candidate
    forced = trace.compare(recorded, cand, onnx_model=model, name_map={"backbone.fpn.0": other})
    s = forced.stages["backbone.fpn.0"]
    assert s.pairing == "name_map" and s.candidate == other
    assert not s.passed and s.cause.name in ("shape_changed", "inherited")


def test_the_dynamo_route_pairs_by_its_scope_metadata_where_torch_export_succeeds(base):
    torch.manual_seed(1)
    x = torch.rand(1, 3, 320, 288)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(base.backbone, (x,), dynamo=True, verbose=False)
    model = program.model_proto
    assert any(p.key == "pkg.torch.onnx.name_scopes" for n in model.graph.node for p in n.metadata_props)
    ref = trace.record(base.backbone, x)
    cand = trace.onnx_intermediates(model, {model.graph.input[0].name: x}, names=trace.onnx_names(ref, model))
    report = trace.compare(ref, cand, onnx_model=model)
    assert report.ok, report.summary()
    # every call of a module shares one scope there: calls pair in order
    relu = [report.stages[f"body.layer1.0.relu{k}"].candidate for k in ("", ":1", ":2")]
    assert len(set(relu)) == 3
    assert report.stages["fpn.0"].passed and report.stages["fpn.pool"].passed


def test_the_dynamo_route_cannot_export_a_whole_detector_in_this_torch(base, image):
    """torch.export (the dynamo route's first step) stops at the detectors' data-dependent control flow; the
    README tells users to export them with dynamo=False. If a later torch succeeds, this test says so."""
    with warnings.catch_warnings(), pytest.raises(Exception, match="torch.export"):
        warnings.simplefilter("ignore")
        torch.onnx.export(base, ([image],), io.BytesIO(), dynamo=True, verbose=False)


# ----------------------------------------------------------------------------------------------------------
# input mistakes, named at the input (the batch's padding left out of the fits)
# ----------------------------------------------------------------------------------------------------------
def test_bgr_input_is_a_channel_permutation_at_the_input(recorded, image):
    report, _ = traced(recorded, onnx_of("base", 16), image.flip(0))
    first = report.stages[report.first_divergence]
    assert first.name == "backbone:input" and first.cause.name == "channel_permutation"
    assert first.cause.evidence["permutation"] == [2, 1, 0]
    assert first.cause.evidence["padding_ignored"] == [0, padded_width(image.shape[-1]) - image.shape[-1]]


def test_another_pixel_mean_is_a_channel_affine_at_the_input_despite_the_padding(recorded, image):
    wrong = MEAN[::-1]
    report, _ = traced(recorded, onnx_of("mean", 16, image_mean=wrong), image)
    first = report.stages[report.first_divergence]
    assert first.name == "backbone:input" and first.cause.name == "channel_affine"
    # (x - wrong) / std = (x - mean) / std + (mean - wrong) / std
    expected = [(m - w) / s for m, w, s in zip(MEAN, wrong, STD)]
    np.testing.assert_allclose(first.cause.evidence["bias"], expected, atol=1e-5)
    np.testing.assert_allclose(first.cause.evidence["scale"], [1, 1, 1], atol=1e-5)
    assert report.root_causes == [first]


def test_another_pixel_std_is_a_channel_scale_at_the_input(recorded, image):
    report, _ = traced(recorded, onnx_of("std", 16, image_std=[1.0, 1.0, 1.0]), image)
    first = report.stages[report.first_divergence]
    assert first.name == "backbone:input" and first.cause.name == "channel_affine"
    np.testing.assert_allclose(first.cause.evidence["scale"], STD, atol=1e-5)   # (x - m) / 1 = std (x - m) / std
    assert report.root_causes == [first]                                        # downstream: carried along


def test_a_translated_input_is_a_shift_at_the_input(recorded, image):
    moved = torch.zeros_like(image)
    moved[:, 3:, 2:] = image[:, :-3, :-2]                     # the picture moved 3 px down and 2 px right
    report, _ = traced(recorded, onnx_of("base", 16), moved)
    first = report.stages[report.first_divergence]
    assert first.name == "backbone:input" and first.cause.name == "shift"
    assert (first.cause.evidence["dy"], first.cause.evidence["dx"]) == pytest.approx((-3.0, -2.0), abs=0.02)


def test_a_resize_with_align_corners_is_a_resample_at_the_input(base, image):
    big = torch.nn.functional.interpolate(image[None], scale_factor=1.5, mode="bilinear", align_corners=False)
    size = tuple(image.shape[-2:])
    ref_image = torch.nn.functional.interpolate(big, size=size, mode="bilinear", align_corners=False)[0].clamp(0, 1)
    cand_image = torch.nn.functional.interpolate(big, size=size, mode="bilinear", align_corners=True)[0].clamp(0, 1)
    ref = trace.record(base, [ref_image])
    report, _ = traced(ref, onnx_of("base", 16), cand_image)
    first = report.stages[report.first_divergence]
    assert first.name == "backbone:input" and first.cause.name == "resample"
    # a candidate row y reads the large image at y (H' - 1) / (H - 1), the reference row y' at (y' + 0.5) H' / H - 0.5
    h, big_h = size[0], big.shape[-2]
    assert first.cause.evidence["scale_y"] == pytest.approx((big_h - 1) / (h - 1) * h / big_h, abs=1e-3)


def test_without_the_padding_found_the_same_mean_mistake_is_not_explained(recorded, image):
    """The fit over the padded rows fails: what the padding search is for."""
    model = onnx_of("mean", 16, image_mean=MEAN[::-1])
    names = trace.onnx_names(recorded, model)
    cand = trace.onnx_intermediates(model, {"image": image}, names=names)
    full = recorded["backbone:input"].shape[-2:]
    whole = trace.compare(recorded, cand, onnx_model=model, padding={"backbone:input": tuple(full)})
    assert whole.stages["backbone:input"].cause.name != "channel_affine"


# ----------------------------------------------------------------------------------------------------------
# ROIAlign at Detectron2's pinned opset
# ----------------------------------------------------------------------------------------------------------
def test_an_aligned_pooler_exported_at_opset_11_is_a_half_cell_shift_found_without_help(image):
    model = maskrcnn(aligned_poolers=True)
    ref = trace.record(model, [image])
    assert set(ref.poolers) >= {"roi_heads.box_roi_pool", "roi_heads.box_roi_pool.level_poolers.0"}
    report, _ = traced(ref, onnx_of("aligned", 11, aligned_poolers=True), image)
    first = report.stages[report.first_divergence]
    assert first.name.startswith("roi_heads.box_roi_pool.level_poolers.") and first.cause.name == "shift"
    # opset 11's RoiAlign has no half-pixel mode: it samples half a cell further than aligned=True
    assert (first.cause.evidence["dy"], first.cause.evidence["dx"]) == pytest.approx((0.5, 0.5), abs=0.02)
    whole = report.stages["roi_heads.box_roi_pool"]
    assert whole.cause.name == "inherited"
    assert whole.own_cause.name == "shift" and whole.own_cause.evidence["unit"] == "feature cells of each box's level"
    assert (whole.own_cause.evidence["dy"], whole.own_cause.evidence["dx"]) == pytest.approx((0.5, 0.5), abs=0.02)
    fixed, _ = traced(ref, onnx_of("aligned", 16, aligned_poolers=True), image)
    assert fixed.ok, fixed.summary()


# ----------------------------------------------------------------------------------------------------------
# a count that changes downstream
# ----------------------------------------------------------------------------------------------------------
def test_a_changed_detection_count_is_shape_changed_and_the_first_divergence_survives(image):
    model, bad = maskrcnn(), maskrcnn(image_mean=MEAN[::-1])
    for m in (model, bad):                                    # the number of detections now depends on the data
        m.roi_heads.score_thresh, m.roi_heads.detections_per_img = 0.9, 1000
    ref = trace.record(model, [image])
    onnx_model = export(bad, [image], 16)
    report, _ = traced(ref, onnx_model, image)
    assert report.first_divergence == "backbone:input"
    changed = [s for s in report.stages.values() if s.own_cause is not None and s.own_cause.name == "shape_changed"]
    assert changed, "the mistake kept every count: raise score_thresh"
    for s in changed:
        assert s.inherited_from is not None and s.candidate_shape != s.shape
        assert s.own_cause.evidence == {"reference_shape": list(s.shape), "candidate_shape": list(s.candidate_shape)}


def test_the_command_line_reports_and_exits_1_when_a_count_changed(tmp_path, image, capsys):
    model, bad = maskrcnn(), maskrcnn(image_mean=MEAN[::-1])
    for m in (model, bad):
        m.roi_heads.score_thresh, m.roi_heads.detections_per_img = 0.9, 1000
    ref = trace.record(model, [image])
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(export(bad, [image], 16))
    cand = trace.onnx_intermediates(onnx_path, {"image": image}, names=trace.onnx_names(ref, onnx_path))
    torch.save(dict(ref), tmp_path / "ref.pt")
    np.savez(tmp_path / "cand.npz", **cand)
    code = cli(["trace", str(tmp_path / "ref.pt"), str(tmp_path / "cand.npz"), "--onnx", str(onnx_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["first_divergence"] == "backbone:input"
    assert any(s.get("own_cause", {}).get("name") == "shape_changed" for s in out["stages"])
    # a dump keeps no module paths: a folded BatchNorm is left unpaired all the same
    assert "backbone.body.layer1.0.bn3" in out["unpaired_reference"]


# ----------------------------------------------------------------------------------------------------------
# record's mode
# ----------------------------------------------------------------------------------------------------------
def test_record_runs_in_eval_mode_restores_every_mode_and_says_so(image):
    model = maskrcnn()
    model.train()
    model.backbone.body.layer1.eval()                         # a caller's mixed modes come back as they were
    got = trace.record(model, [image], names=["rpn.head.cls_logits"])
    assert "rpn.head.cls_logits" in got and any("training mode" in n for n in got.notes)
    assert model.training and model.rpn.training and not model.backbone.body.layer1.training
    assert model.backbone.body.layer2.training


# ----------------------------------------------------------------------------------------------------------
# the other detectors
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("builder", ["fasterrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn",
                                     "retinanet_resnet50_fpn"])
def test_other_detectors_trace_clean_from_their_opset_11_exports(builder, image):
    import torchvision.models.detection as D

    torch.manual_seed(0)
    model = getattr(D, builder)(weights=None, weights_backbone=None, min_size=320, max_size=320).eval()
    ref = trace.record(model, [image])
    report, _ = traced(ref, export(model, [image], 11), image)
    # ONNX Runtime and PyTorch may order proposals whose scores tie differently (a random model's objectness
    # ties often); nothing else may differ
    assert all(s.cause.name == "row_order" for s in report.root_causes), report.summary()
    assert "backbone:input" in report.stages and "backbone.fpn.0" in report.stages
    assert len(report.stages) > 100
