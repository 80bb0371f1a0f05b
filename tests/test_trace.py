"""Layer-by-layer comparison: each cause recovered from tensors where it was put on purpose, the stages paired and
reported, and real exports of the course network run in ONNX Runtime.

Expected values come from how each difference was made (the shift given to ``grid_sample``, the permutation
drawn, the padding chosen, the pixel means of Detectron2's config), never from running the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from explainer.conventions import DETECTRON2
from explainer.course import network as N
from explainer.course import pipeline as P
from explainer.trace import causes as TC
from explainer.trace import divergence as T

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------------
# generated tensors
# --------------------------------------------------------------------------------------------------
def smooth_maps(seed: int, n: int = 2, c: int = 6, h: int = 48, w: int = 64, sigma: float = 2.0) -> torch.Tensor:
    """Random feature maps blurred by a Gaussian of ``sigma`` cells: smooth, like a network's features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n * c, 1, h, w, generator=g)
    k = torch.exp(-torch.arange(-6, 7.0) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, 6)), k.view(1, 1, -1, 1), padding=(6, 0))
    return (x / x.std()).reshape(n, c, h, w)


def grid_sample_shift(x: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """x read at (y + dy, x + dx) pixels by torch's grid_sample (bilinear, zeros outside, align_corners=False)."""
    n, _, h, w = x.shape
    gy = (2 * (torch.arange(h, dtype=torch.float32) + dy) + 1) / h - 1
    gx = (2 * (torch.arange(w, dtype=torch.float32) + dx) + 1) / w - 1
    yy, xx = torch.meshgrid(gy, gx, indexing="ij")
    grid = torch.stack([xx, yy], -1)[None].expand(n, -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def one(ref, cand, **kw) -> T.StageComparison:
    return T.compare({"stage": ref}, {"stage": cand}, **kw).stages["stage"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dy, dx", [(0.25, 0.25), (0.5, -0.5), (1.0, 0.5), (-0.25, 1.0), (0.5, 0.0)])
def test_shift_by_grid_sample_is_estimated_within_0_05_cell(seed, dy, dx):
    x = smooth_maps(seed)
    s = one(x, grid_sample_shift(x, dy, dx))
    assert not s.passed and s.cause.name == "shift", s.cause
    assert abs(s.cause.evidence["dy"] - dy) <= 0.05 and abs(s.cause.evidence["dx"] - dx) <= 0.05, s.cause.evidence


@pytest.mark.parametrize("dy, dx", [(2.5, -1.25), (-3.5, 3.0)])
def test_shifts_of_several_cells_are_found(dy, dx):
    x = smooth_maps(7, sigma=3.0)
    s = one(x, grid_sample_shift(x, dy, dx))
    assert s.cause.name == "shift"
    assert abs(s.cause.evidence["dy"] - dy) <= 0.05 and abs(s.cause.evidence["dx"] - dx) <= 0.05


def test_estimate_shift_on_a_single_map():
    x = smooth_maps(3, n=1, c=1)
    est = TC.estimate_shift(x[0], grid_sample_shift(x, 0.25, -0.75)[0])
    assert abs(est["dy"] - 0.25) <= 0.05 and abs(est["dx"] + 0.75) <= 0.05 and est["explained"] > 0.99


def test_shift_map_is_what_the_shift_predicts():
    x = smooth_maps(4, n=1, c=2)
    cand = grid_sample_shift(x, 0.5, 0.25)
    pred = TC.shift_map(x, 0.5, 0.25)
    ok = torch.isfinite(pred)
    assert ok.float().mean() > 0.9
    assert torch.allclose(pred[ok], cand[ok], atol=1e-5)


@given(st.integers(2, 12), st.integers(0, 10_000))
def test_channel_permutation_is_recovered(n_ch, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n_ch, 9, 11, generator=g)
    perm = torch.randperm(n_ch, generator=g)
    if bool((perm == torch.arange(n_ch)).all()):
        perm = perm.roll(1)
    s = one(x, x[:, perm])
    assert s.cause.name == "channel_permutation", s.cause
    assert s.cause.evidence["permutation"] == perm.tolist()


def test_permutation_of_class_logits_columns():
    logits = torch.randn(50, 81, generator=torch.Generator().manual_seed(1))
    moved = torch.cat([logits[:, 80:], logits[:, :80]], 1)           # background column moved from last to first
    s = one(logits, moved)
    assert s.cause.name == "channel_permutation"
    assert s.cause.evidence["permutation"] == [80] + list(range(80))


def test_permutation_then_affine_is_one_cause():
    """BGR fed as RGB, then a per-channel mean subtracted: a permutation plus a bias per channel."""
    x = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(2)) * 255
    mean = torch.tensor([103.53, 116.28, 123.675]).view(1, 3, 1, 1)
    s = one(x - mean, x.flip(1) - mean)
    assert s.cause.name == "channel_permutation" and s.cause.evidence["permutation"] == [2, 1, 0]
    expected_bias = (mean.flip(1) - mean).view(-1).tolist()          # cand_c = ref_{2-c} + mean_{2-c} - mean_c
    assert np.allclose(s.cause.evidence["then_bias"], expected_bias, atol=1e-3)


@given(st.integers(1, 8), st.integers(0, 10_000))
def test_channel_affine_scale_and_bias_are_recovered(n_ch, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n_ch, 10, 12, generator=g)
    scale = 0.5 + 1.5 * torch.rand(n_ch, generator=g)
    # a scale within 1% of 1 on one channel is, within the tolerance, a constant offset: keep away from it
    scale = torch.where((scale - 1).abs() < 0.01, scale + 0.02, scale)
    bias = 4 * torch.rand(n_ch, generator=g) - 2
    s = one(x, x * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1))
    assert s.cause.name == "channel_affine", s.cause
    assert np.allclose(s.cause.evidence["scale"], scale.tolist(), rtol=1e-4, atol=1e-5)
    assert np.allclose(s.cause.evidence["bias"], bias.tolist(), rtol=1e-4, atol=1e-5)


def test_batchnorm_folded_with_another_eps_is_a_channel_affine():
    bn = torch.nn.BatchNorm2d(8).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        bn.running_var.copy_(torch.rand(8, generator=g) * 1e-3 + 1e-4)  # small variances: eps matters
        bn.running_mean.copy_(torch.randn(8, generator=g))
        bn.weight.copy_(torch.rand(8, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(8, generator=g))
    x = torch.randn(2, 8, 12, 12, generator=g)
    ref = bn(x).detach()
    bn.eps = 1e-3
    cand = bn(x).detach()
    s = one(ref, cand)
    assert s.cause.name == "channel_affine"
    # BatchNorm: y = w (x - m) / sqrt(v + eps) + b, so cand - b = (ref - b) sqrt(v + 1e-5) / sqrt(v + 1e-3)
    k = ((bn.running_var + 1e-5) / (bn.running_var + 1e-3)).sqrt()
    assert np.allclose(s.cause.evidence["scale"], k.tolist(), rtol=1e-4)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_border_width_is_recovered_from_padding(k):
    """A (2k+1) x (2k+1) conv with zero padding against reflect padding differs in a k-cell frame only."""
    x = smooth_maps(5, n=1, c=3, h=40, w=40)
    conv = torch.nn.Conv2d(3, 4, 2 * k + 1, padding=k, bias=False)
    torch.nn.init.normal_(conv.weight, generator=torch.Generator().manual_seed(k))
    with torch.no_grad():
        ref = conv(x)
        cand = F.conv2d(F.pad(x, (k, k, k, k), mode="reflect"), conv.weight)
    s = one(ref, cand)
    assert s.cause.name == "border", s.cause
    assert s.cause.evidence["k"] == k
    assert s.cause.evidence["sides"] == {"top": k, "bottom": k, "left": k, "right": k}


def test_border_on_two_sides_only():
    """TF's 'SAME' padding of an even-sized input pads bottom and right: only those edges differ."""
    x = smooth_maps(6, n=1, c=2, h=32, w=32)
    cand = x.clone()
    cand[..., -1:, :] += 1.0
    cand[..., :, -1:] += 1.0
    s = one(x, cand)
    assert s.cause.name == "border"
    assert s.cause.evidence["sides"] == {"top": 0, "bottom": 1, "left": 0, "right": 1}


def test_constant_offset_on_boxes():
    boxes = torch.rand(30, 4, generator=torch.Generator().manual_seed(4)) * 100
    s = one(boxes, boxes + 1.0)
    assert s.cause.name == "constant_offset" and abs(s.cause.evidence["offset"] - 1.0) < 1e-6


def test_non_finite_is_the_cause_and_errors_stay_finite():
    x = torch.randn(1, 4, 8, 8)
    cand = x.clone()
    cand[0, 2, 3, 5] = float("nan")
    cand[0, 1, 0, 0] = float("inf")
    s = one(x, cand)
    assert not s.passed and s.cause.name == "non_finite"
    assert s.cause.evidence["nan_in_candidate"] == 1 and s.cause.evidence["inf_in_candidate"] == 1
    assert s.cause.evidence["first_index"] == [0, 1, 0, 0]
    assert np.isfinite(s.max_abs) and np.isfinite(s.rel_error)
    json.dumps(T.compare({"a": x}, {"a": cand}).to_dict())       # NaN never leaks into the report


def test_non_finite_in_the_reference_is_reported_too():
    x = torch.randn(10)
    x[3] = float("-inf")
    s = one(x, x.clone())
    assert not s.passed and s.cause.name == "non_finite" and s.cause.evidence["inf_in_reference"] == 1


def test_identical_and_numerical_noise_pass():
    x = smooth_maps(8)
    assert one(x, x.clone()).cause.name == "identical"
    noisy = x + 1e-6 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    s = one(x, noisy)
    assert s.passed and s.cause.name == "numerical_noise" and s.max_abs < 1e-5
    assert T.compare({"a": x}, {"a": noisy}).ok


def test_unexplained_difference():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 3, 16, 16, generator=g)
    s = one(x, torch.randn(1, 3, 16, 16, generator=g))
    assert not s.passed and s.cause.name == "unexplained"


def test_tolerance_is_the_rule_of_numpy_allclose():
    r = torch.tensor([1.0, 100.0])
    c = r + torch.tensor([0.0, 0.05])              # |diff| = 0.05 <= 1e-4 + 1e-3 * 100
    assert one(r, c).passed
    assert not one(r, c, rtol=1e-4).passed
    assert np.allclose(c.numpy(), r.numpy(), rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# several stages: first divergence, inherited, pairing
# --------------------------------------------------------------------------------------------------
def _chain(x: torch.Tensor, perm=None):
    """input -> conv -> relu -> pooled; optionally the input's channels permuted."""
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    torch.nn.init.normal_(conv.weight, generator=torch.Generator().manual_seed(0))
    inp = x[:, perm] if perm is not None else x
    with torch.no_grad():
        a = conv(inp)
        b = torch.relu(a)
        c = F.avg_pool2d(b, 2)
    return {"input": inp, "conv": a, "relu": b, "pool": c}


def test_stages_after_the_first_divergence_are_inherited():
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    rep = T.compare(_chain(x), _chain(x, perm=[2, 1, 0]))
    assert rep.first_divergence == "input"
    assert rep.stages["input"].cause.name == "channel_permutation"
    for name in ("conv", "relu", "pool"):
        s = rep.stages[name]
        assert not s.passed and s.cause.name == "inherited" and s.inherited_from == "input"
    assert [s.name for s in rep.root_causes] == ["input"]


def test_the_same_shift_carried_along_is_inherited_and_a_new_cause_is_not():
    x = smooth_maps(10, n=1, c=3)
    shifted = grid_sample_shift(x, 0.5, 0.5)
    ref = {"a": x, "b": 2 * x, "c": torch.randn(5, 4, generator=torch.Generator().manual_seed(0))}
    cand = {"a": shifted, "b": 2 * shifted, "c": ref["c"] + 3.0}
    rep = T.compare(ref, cand)
    assert rep.first_divergence == "a" and rep.stages["a"].cause.name == "shift"
    assert rep.stages["b"].cause.name == "inherited" and rep.stages["b"].own_cause.name == "shift"
    assert rep.stages["c"].cause.name == "constant_offset"                  # a second root cause
    assert [s.name for s in rep.root_causes] == ["a", "c"]


def test_pairing_by_map_then_name_then_order():
    x, y, z = torch.randn(2, 3), torch.randn(4), torch.randn(5, 5)
    rep = T.compare({"x": x, "y": y, "z": z}, {"onnx::x": x, "y": y, "other": z}, name_map={"x": "onnx::x"})
    how = {k: s.pairing for k, s in rep.stages.items()}
    assert how == {"x": "name_map", "y": "name", "z": "order"}
    assert rep.stages["z"].candidate == "other"


def test_order_pairing_skips_candidates_of_another_shape_and_reports_leftovers():
    ref = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    cand = {"p": torch.zeros(2, 2), "q": torch.zeros(7), "r": torch.zeros(3)}
    rep = T.compare(ref, cand)
    # a pairs with the first later candidate of its shape (r); b cannot pair after it in order
    assert rep.stages["a"].candidate == "r"
    assert rep.unpaired_reference == ["b"] and rep.unpaired_candidate == ["p", "q"]
    assert "not compared" in rep.summary()


def test_axes_of_size_one_are_dropped_when_pairing():
    x = torch.randn(3, 8, 8)
    s = T.compare({"a": x}, {"a": x[None].numpy()}).stages["a"]
    assert s.pairing == "name (reshaped)" and s.cause.name == "identical"


def test_nothing_pairs_is_a_value_error_listing_the_names():
    with pytest.raises(ValueError, match=r"no stage pairs up.*\['a', 'b'\].*\['p', 'q'\]"):
        T.compare({"a": torch.zeros(3), "b": torch.zeros(4)}, {"p": torch.zeros(5), "q": torch.zeros(6)})


def test_name_paired_shapes_that_differ_are_shape_changed_not_an_error():
    rep = T.compare({"x": torch.zeros(2), "a": torch.zeros(3)}, {"x": torch.ones(2), "a": torch.zeros(4)})
    a = rep.stages["a"]
    assert not a.passed and a.candidate_shape == (4,) and a.shape == (3,)
    assert a.cause.name == "inherited" and a.own_cause.name == "shape_changed" and a.inherited_from == "x"
    assert a.to_dict()["candidate_shape"] == [4]
    alone = T.compare({"a": torch.zeros(3)}, {"a": torch.zeros(4)})       # nothing upstream: its own divergence
    assert alone.first_divergence == "a" and alone.stages["a"].cause.name == "shape_changed"
    assert alone.stages["a"].cause.evidence == {"reference_shape": [3], "candidate_shape": [4]}


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="name_map names stages that are not in the dumps"):
        T.compare({"a": torch.zeros(3)}, {"a": torch.zeros(3)}, name_map={"zz": "a"})
    with pytest.raises(ValueError, match="reference must be a non-empty dict"):
        T.compare({}, {"a": torch.zeros(3)})
    with pytest.raises(ValueError, match="atol"):
        T.compare({"a": torch.zeros(3)}, {"a": torch.zeros(3)}, atol=-1)
    with pytest.raises(ValueError, match="not numeric"):
        T.compare({"a": np.array(["x"])}, {"a": torch.zeros(1)})


def test_report_summary_and_json():
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    rep = T.compare(_chain(x), _chain(x, perm=[1, 0, 2]))
    text = rep.summary()
    assert "first divergence: input (channel_permutation)" in text and "fix:" in text
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["first_divergence"] == "input" and d["root_causes"] == ["input"]
    assert d["stages"][0]["cause"]["evidence"]["permutation"] == [1, 0, 2]
    assert {s["pairing"] for s in d["stages"]} == {"name"}


def test_vocabulary_has_the_form_of_the_diagnosis_vocabulary():
    from explainer.diagnosis.report import CauseInfo

    expected = {"identical", "numerical_noise", "shift", "channel_permutation", "channel_affine", "border",
                "constant_offset", "non_finite", "unexplained", "inherited", "shape_changed", "row_order", "resample"}
    assert set(TC.CAUSES) == expected
    assert all(isinstance(c, CauseInfo) and c.meaning and c.fingerprint and c.fix for c in TC.CAUSES.values())


# --------------------------------------------------------------------------------------------------
# record
# --------------------------------------------------------------------------------------------------
class _Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        self.act = torch.nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.act(self.conv(x))
        return y, {"sum": y.sum()}


class _Outer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.two = _Two()
        self.shared = torch.nn.Identity()

    def forward(self, x):
        a, _ = self.two(self.shared(x))
        return self.shared(a * 2)


def test_record_names_flattening_and_order():
    m = _Outer()
    x = torch.randn(1, 1, 4, 4)
    out = T.record(m, x)
    assert list(out) == ["shared", "two.conv", "two.act", "two.0", "two.1.sum", "shared:1"]
    assert torch.equal(out["shared"], x)
    assert torch.equal(out["shared:1"], out["two.0"] * 2)


def test_record_keeps_outputs_that_a_later_inplace_op_changes():
    m = _Two()
    x = -torch.ones(1, 1, 3, 3)
    with torch.no_grad():
        torch.nn.init.constant_(m.conv.weight, 1.0)
        torch.nn.init.constant_(m.conv.bias, 0.0)
    out = T.record(m, x, names=["conv", "act"])
    assert float(out["conv"].max()) == -1.0 and float(out["act"].max()) == 0.0


def test_record_removes_its_hooks_even_on_error():
    m = _Two()
    with pytest.raises(RuntimeError):
        T.record(m, torch.randn(1, 3, 4, 4))                           # wrong channel count
    assert not m.conv._forward_hooks and not m.act._forward_hooks and not m._forward_hooks


def test_record_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"no module \['nope'\]"):
        T.record(_Two(), torch.randn(1, 1, 2, 2), names=["nope"])
    with pytest.raises(TypeError):
        T.record(lambda x: x, torch.zeros(1))


# --------------------------------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------------------------------
class _Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    torch.manual_seed(0)
    m = _Small().eval()
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=16, input_names=["x"], output_names=["y"])
    return m, x, path


def test_onnx_intermediates_match_pytorch_and_leave_the_file_alone(small_onnx):
    m, x, path = small_onnx
    before = path.read_bytes()
    files_before = sorted(p.name for p in path.parent.iterdir())
    names = T.onnx_module_outputs(path)
    assert set(names) >= {"conv", "head"}
    got = T.onnx_intermediates(path, {"x": x}, names=[names["conv"][0], "x"])
    assert list(got) == ["x", names["conv"][0]]                          # graph order, inputs first
    with torch.no_grad():
        assert np.allclose(got[names["conv"][0]], m.conv(x).numpy(), atol=1e-5)
    everything = T.onnx_intermediates(path, {"x": x.numpy().astype(np.float64)})
    assert "y" in everything and len(everything) >= 4
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == files_before


def test_onnx_intermediates_bad_input(small_onnx, tmp_path):
    _, x, path = small_onnx
    with pytest.raises(ValueError, match=r"missing \['x'\]"):
        T.onnx_intermediates(path, {"image": x})
    with pytest.raises(ValueError, match=r"no value \['nope'\]"):
        T.onnx_intermediates(path, {"x": x}, names=["nope"])
    with pytest.raises(ValueError, match="does not exist"):
        T.onnx_intermediates(tmp_path / "missing.onnx", {"x": x})
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="not an ONNX model"):
        T.onnx_intermediates(junk, {"x": x})
    with pytest.raises(ValueError, match="expects float32"):
        T.onnx_intermediates(path, {"x": np.zeros((1, 3, 8, 8), dtype=np.int64)})


# --------------------------------------------------------------------------------------------------
# the course network, exported for real
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def course(tmp_path_factory):
    det = P.fit_detector(P.synthetic_scenes(8, seed=0), DETECTRON2, seed=0)
    scene = P.synthetic_scenes(1, seed=1000)[0]
    boxes = N.course_boxes(det, scene, 32)
    builder = N.CaseBuilder(det, scene.image, boxes, tmp_path_factory.mktemp("exports"))
    return det, scene, boxes, builder


def test_network_computes_what_the_detector_computes(course):
    det, scene, _, _ = course
    run = det.run(scene, DETECTRON2)
    props = run.stages["proposals_nms"]["boxes"]
    net = N.CourseNetwork(det)
    out = T.record(net, N.image_to_bgr(scene.image), props, names=list(N.STAGES))
    assert torch.allclose(out["backbone"][0], P.colour_maps(scene.image), atol=1e-5)
    objectness = out["rpn_head.objectness_logits"][0].permute(1, 2, 0).reshape(-1)   # location-major, as run()
    assert torch.allclose(objectness, run.stages["rpn"]["objectness"], atol=1e-4)
    k = det.num_classes
    probs = torch.softmax(out["box_predictor.cls_score"], 1)[:, :k]   # background last (DETECTRON2)
    assert torch.allclose(probs, run.stages["head"]["class_probs"], atol=1e-4)


def test_opset_16_is_identical_up_to_numerical_noise(course):
    case = course[3].case("none")
    rep = case.report
    assert rep.ok, rep.summary()
    assert {s.cause.name for s in rep.stages.values()} <= {"identical", "numerical_noise"}
    assert all(s.pairing == "name_map" for s in rep.stages.values()) and len(rep.stages) == len(N.STAGES)
    assert not case.export_warnings


def test_opset_11_drops_aligned_and_roialign_shifts_by_half_a_cell(course):
    _, _, boxes, builder = course
    case = builder.case("opset11")
    rep = case.report
    assert any("aligned=True" in w for w in case.export_warnings), case.export_warnings
    assert rep.first_divergence == "box_pooler", rep.summary()
    ev = rep.stages["box_pooler"].cause.evidence
    assert rep.stages["box_pooler"].cause.name == "shift" and ev["unit"] == "feature cells"
    # aligned=True subtracts 0.5 from the scaled box corners; ONNX RoiAlign before opset 16 does not
    assert abs(ev["dy"] - 0.5) <= 0.02 and abs(ev["dx"] - 0.5) <= 0.02
    for later in ("box_head", "box_predictor.cls_score", "box_predictor.bbox_pred"):
        assert rep.stages[later].cause.name == "inherited" and rep.stages[later].inherited_from == "box_pooler"
    # cross-check: what ONNX Runtime computed equals torchvision's roi_align with aligned=False
    from torchvision.ops import roi_align

    spec = N.box_pooler_spec(boxes)
    legacy = roi_align(case.reference["head_pool"], spec.rois, spec.output_size, spec.spatial_scale,
                       spec.sampling_ratio, aligned=False)
    assert np.allclose(case.candidate[case.name_map["box_pooler"]], legacy.numpy(), atol=1e-5)


def test_rgb_fed_to_a_bgr_model_is_a_permutation_at_the_input(course):
    rep = course[3].case("rgb_input").report
    assert rep.first_divergence == "input"
    assert rep.stages["input"].cause.name == "channel_permutation"
    assert rep.stages["input"].cause.evidence["permutation"] == [2, 1, 0]
    assert rep.stages["preprocess"].cause.name == "inherited"
    assert [s.name for s in rep.root_causes] == ["input"]


def test_another_pixel_mean_is_a_channel_affine_at_the_input(course):
    rep = course[3].case("pixel_mean").report
    assert rep.first_divergence == "preprocess"
    c = rep.stages["preprocess"].cause
    assert c.name == "channel_affine"
    # (x - m_rgb) - (x - m_bgr) = m_bgr - m_rgb, Detectron2's PIXEL_MEAN against its reverse
    bgr = np.array([103.530, 116.280, 123.675])
    assert np.allclose(c.evidence["bias"], bgr - bgr[::-1], atol=1e-3)
    assert np.allclose(c.evidence["scale"], 1.0, atol=1e-5)
    assert all(s.cause.name == "inherited" for s in list(rep.stages.values())[2:] if not s.passed)


def test_moved_background_row_is_a_permutation_of_the_class_logits(course):
    rep = course[3].case("background_row").report
    assert rep.first_divergence == "box_predictor.cls_score"
    c = rep.stages["box_predictor.cls_score"].cause
    k = course[0].num_classes
    assert c.name == "channel_permutation" and c.evidence["permutation"] == [k] + list(range(k))
    assert rep.stages["box_predictor.bbox_pred"].passed


def test_anchor_rows_in_another_order_permute_the_objectness(course):
    rep = course[3].case("anchor_order").report
    assert rep.first_divergence == "rpn_head.objectness_logits"
    # size-major row s * 3 + r read where ratio-major row r * 3 + s is stored (3 sizes, 3 ratios)
    expected = [(i % 3) * 3 + i // 3 for i in range(9)]
    assert rep.stages["rpn_head.objectness_logits"].cause.evidence["permutation"] == expected


def test_resize_with_another_coordinate_mode_is_a_shift_at_the_upsampling(course):
    rep = course[3].case("resize_mode").report
    assert rep.first_divergence == "upsample", rep.summary()
    ev = rep.stages["upsample"].cause.evidence
    # factor s = 8: half_pixel reads x_in = (x + 0.5) / s - 0.5, asymmetric x_in = x / s; equal when the
    # half-pixel output index is x + (s - 1) / 2 = x + 3.5
    assert rep.stages["upsample"].cause.name == "shift"
    assert abs(ev["dy"] - 3.5) <= 0.05 and abs(ev["dx"] - 3.5) <= 0.05
    assert all(s.passed for n, s in rep.stages.items() if n != "upsample")


def test_set_resize_mode_writes_the_attribute(course):
    import onnx

    path, _, _ = course[3].export("base", 16)
    m = N.set_resize_mode(path, "asymmetric")
    modes = [onnx.helper.get_attribute_value(a) for n in m.graph.node if n.op_type == "Resize" for a in n.attribute
             if a.name == "coordinate_transformation_mode"]
    assert modes == [b"asymmetric"]
    with pytest.raises(ValueError, match="mode must be one of"):
        N.set_resize_mode(path, "bogus")


def test_exported_roialign_attribute_at_each_opset(course):
    """torchvision's symbolic for opset 16 writes coordinate_transformation_mode; the one for opset 11 cannot."""
    import onnx

    for opset, expected in ((16, [b"half_pixel"]), (11, [])):
        path, _, _ = course[3].export("base", opset)
        m = onnx.load(str(path))
        nodes = [n for n in m.graph.node if n.op_type == "RoiAlign"]
        assert len(nodes) == 1
        assert [onnx.helper.get_attribute_value(a) for a in nodes[0].attribute
                if a.name == "coordinate_transformation_mode"] == expected


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------
class _NotATensor:
    pass


def test_trace_command_exit_codes_and_output(tmp_path, capsys):
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    ref, cand = _chain(x), _chain(x, perm=[2, 1, 0])
    np.savez(tmp_path / "ref.npz", **{k: v.numpy() for k, v in ref.items()})
    torch.save(cand, tmp_path / "cand.pt")
    torch.save(ref, tmp_path / "same.pt")
    assert T.trace_command(tmp_path / "ref.npz", tmp_path / "same.pt") == 0
    assert "no divergence" in capsys.readouterr().out
    assert T.trace_command(tmp_path / "ref.npz", tmp_path / "cand.pt") == 1
    assert "first divergence: input (channel_permutation)" in capsys.readouterr().out
    (tmp_path / "map.json").write_text(json.dumps({"conv": "conv"}))
    assert T.trace_command(tmp_path / "ref.npz", tmp_path / "cand.pt", tmp_path / "map.json", as_json=True) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["first_divergence"] == "input" and d["stages"][1]["pairing"] == "name_map"


@pytest.mark.parametrize("case", ["missing", "pickle", "junk_pt", "not_dict", "bad_suffix", "bad_map", "no_pair",
                                  "npz_pickle"])
def test_trace_command_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    good = tmp_path / "good.npz"
    np.savez(good, a=np.zeros(3, dtype=np.float32))
    args = [good, good, None]
    if case == "missing":
        args[1] = tmp_path / "nope.npz"
    elif case == "pickle":
        torch.save({"a": _NotATensor()}, tmp_path / "evil.pt")
        args[1] = tmp_path / "evil.pt"
    elif case == "junk_pt":
        (tmp_path / "junk.pt").write_bytes(b"these bytes are not a torch file")
        args[1] = tmp_path / "junk.pt"
    elif case == "not_dict":
        torch.save(torch.zeros(3), tmp_path / "t.pt")
        args[1] = tmp_path / "t.pt"
    elif case == "bad_suffix":
        (tmp_path / "x.txt").write_text("1 2 3")
        args[1] = tmp_path / "x.txt"
    elif case == "bad_map":
        (tmp_path / "map.json").write_text("[1, 2")
        args[2] = tmp_path / "map.json"
    elif case == "no_pair":
        np.savez(tmp_path / "other.npz", b=np.zeros(7, dtype=np.float32))
        args[1] = tmp_path / "other.npz"
    else:
        np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
        args[1] = tmp_path / "obj.npz"
    assert T.trace_command(*args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    bad_file = str(args[2] if case == "bad_map" else args[1])
    assert lines[0].startswith(f"error: {bad_file}: ")
    assert "(" in lines[0] and lines[0].endswith(")")
    assert "weights_only=False" not in err
    expected = {"pickle": "refused to load", "junk_pt": "not a readable torch file", "npz_pickle": "pickled objects",
                "no_pair": "no stage pairs up", "bad_suffix": "unknown dump format", "missing": "no such file",
                "not_dict": "not a dict of tensors", "bad_map": "not valid JSON"}[case]
    assert expected in lines[0]


def test_trace_subcommand_of_the_command_line(tmp_path, capsys):
    from explainer import cli

    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    np.savez(tmp_path / "ref.npz", **{k: v.numpy() for k, v in _chain(x).items()})
    np.savez(tmp_path / "cand.npz", **{k: v.numpy() for k, v in _chain(x, perm=[2, 1, 0]).items()})
    assert cli.main(["trace", str(tmp_path / "ref.npz"), str(tmp_path / "cand.npz"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["first_divergence"] == "input"
    assert cli.main(["trace", str(tmp_path / "ref.npz"), str(tmp_path / "ref.npz")]) == 0


def test_trace_command_in_a_subprocess(tmp_path):
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    np.savez(tmp_path / "ref.npz", **{k: v.numpy() for k, v in _chain(x).items()})
    np.savez(tmp_path / "cand.npz", **{k: v.numpy() for k, v in _chain(x, perm=[2, 1, 0]).items()})
    torch.save({"a": _NotATensor()}, tmp_path / "evil.pt")

    def run(*paths):
        return subprocess.run([sys.executable, "-m", "explainer", "trace", *map(str, paths)], capture_output=True,
                              text=True, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)

    ok = run(tmp_path / "ref.npz", tmp_path / "ref.npz")
    assert ok.returncode == 0 and "no divergence" in ok.stdout
    diff = run(tmp_path / "ref.npz", tmp_path / "cand.npz")
    assert diff.returncode == 1 and "channel_permutation" in diff.stdout
    bad = run(tmp_path / "ref.npz", tmp_path / "evil.pt")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith(f"error: {tmp_path / 'evil.pt'}: ") and len(bad.stderr.strip().splitlines()) == 1


def test_single_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with T.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with T.single_thread():
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


# --------------------------------------------------------------------------------------------------
# the measured errors, and the stages compared on several cores
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_errors_are_those_of_the_definitions_over_chunks(monkeypatch, dtype):
    """Every statistic against its definition in float64 numpy, over chunks of three kinds (equal, within atol,
    beyond the tolerance) and a short last chunk."""
    monkeypatch.setattr(T, "_CHUNK", 1000)
    g = torch.Generator().manual_seed(3)
    r = torch.randn(4500, generator=g, dtype=torch.float64).to(dtype)
    c = r.clone()
    c[1000:2000] += 0.5e-4 * torch.rand(1000, generator=g, dtype=torch.float64).to(dtype)      # within atol
    c[2000:4500] += 0.01 * torch.randn(2500, generator=g, dtype=torch.float64).to(dtype)
    atol, rtol = 1e-4, 1e-3
    s = T.compare({"x": r}, {"x": c}, atol=atol, rtol=rtol).stages["x"]
    rn, cn = r.double().numpy(), c.double().numpy()
    d = (c - r).double().numpy()                                       # the difference as the dtype computes it
    ratio = np.abs(d) / (atol + rtol * np.abs(rn))
    assert s.max_abs == pytest.approx(np.abs(d).max(), rel=1e-12)
    assert s.mean_abs == pytest.approx(np.abs(d).mean(), rel=1e-5)
    assert s.rel_error == pytest.approx(np.linalg.norm(d) / np.linalg.norm(rn), rel=1e-4)
    assert s.cosine == pytest.approx(rn @ cn / (np.linalg.norm(rn) * np.linalg.norm(cn)), abs=1e-6)
    assert s.failing == int((ratio > 1).sum()) > 0
    assert s.tolerances == pytest.approx(ratio.max(), rel=1e-5)
    assert not s.passed


def test_non_finite_values_raise_no_floating_point_warning():
    x = torch.tensor([1.0, float("inf"), 3.0, float("-inf")])
    cand = torch.tensor([1.0, float("inf"), float("nan"), 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = T.compare({"x": x}, {"x": cand}).stages["x"]
    assert s.cause.name == "non_finite" and s.failing == 3


def test_stages_compared_on_several_cores_give_the_same_report(monkeypatch):
    g = torch.Generator().manual_seed(5)
    ref = {f"s{i}": torch.randn(2, 8, 16 + i, 20, generator=g) for i in range(9)}
    cand = {k: v + 1e-5 * torch.randn(v.shape, generator=g) for k, v in ref.items()}
    cand["s3"] = ref["s3"][:, torch.randperm(8, generator=g)]
    for k in list(ref)[4:]:
        cand[k] = torch.randn(ref[k].shape, generator=g)
    serial = T.compare(ref, cand).to_dict()                            # 9 small stages: one worker
    before = torch.get_num_threads()
    monkeypatch.setattr(T, "_PARALLEL_VALUES", 0)
    monkeypatch.setattr(T, "_workers", lambda: 3)
    parallel = T.compare(ref, cand)
    assert torch.get_num_threads() == before
    assert parallel.to_dict() == serial
    assert list(parallel.stages) == list(ref) and parallel.first_divergence == "s3"


def _smooth(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random image Tensor[1, 3, h, w] (noise blurred by a 9-tap box filter, twice)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, h + 16, w + 16, generator=g, dtype=torch.float64)
    for _ in range(2):
        x = torch.nn.functional.avg_pool2d(x, 9, stride=1, padding=4)
    return x[..., 8:8 + h, 8:8 + w]


def test_a_resize_with_another_align_corners_is_a_resample_with_the_mapping_derived_by_hand():
    big = _smooth(300, 240)
    ref = torch.nn.functional.interpolate(big, size=(200, 160), mode="bilinear", align_corners=False)
    cand = torch.nn.functional.interpolate(big, size=(200, 160), mode="bilinear", align_corners=True)
    rep = T.compare({"image": ref}, {"image": cand})
    found = rep.stages["image"].cause
    assert found.name == "resample"
    # candidate row y reads big at y (300 - 1) / (200 - 1); the reference's row y' reads big at (y' + 0.5) 1.5 - 0.5,
    # so y' = y (299 / 199) / 1.5 + 0.5 / 1.5 - 0.5 (columns alike with 239 / 159 and 240 / 160)
    ev = found.evidence
    assert ev["scale_y"] == pytest.approx(299 / 199 / 1.5, abs=2e-4)
    assert ev["offset_y"] == pytest.approx(0.5 / 1.5 - 0.5, abs=0.02)
    assert ev["scale_x"] == pytest.approx(239 / 159 / 1.5, abs=2e-4)
    assert ev["offset_x"] == pytest.approx(0.5 / 1.5 - 0.5, abs=0.02)
    assert ev["explained"] > 0.75                   # interpolating the resampled reference loses a little


def test_a_plain_shift_stays_a_shift_and_noise_is_no_resample():
    from explainer.trace import causes as TC

    img = _smooth(64, 64, seed=1)
    moved = TC.shift_map(img, 0.3, -0.2)
    assert T.compare({"a": img[..., 2:-2, 2:-2]}, {"a": moved[..., 2:-2, 2:-2]}).stages["a"].cause.name == "shift"
    g = torch.Generator().manual_seed(2)
    noisy = img + 0.3 * torch.randn(img.shape, generator=g, dtype=torch.float64)
    assert TC.resample(TC.Stage(img, noisy, 1e-4, 1e-3)) is None
