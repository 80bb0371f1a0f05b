"""Chapter 8: resize modes, OpenCV's and PIL's resizes, preprocessing, crop_and_resize against ROIAlign and against
TensorFlow, SAME padding through a ResNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from explainer import deployment as Dep
from explainer import pixels
from tests.conftest import load_golden


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(0, 1000))
def test_resize_equals_interpolate_where_modes_coincide(h, w, oh, ow, seed):
    x = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(Dep.resize(x, (oh, ow), "half_pixel"), F.interpolate(x, (oh, ow), mode="bilinear", align_corners=False))
    torch.testing.assert_close(Dep.resize(x, (oh, ow), "align_corners"), F.interpolate(x, (oh, ow), mode="bilinear", align_corners=True))
    if min(h, w, oh, ow) >= 2:  # torch's antialiased kernel handles a length-1 side differently (not reproduced)
        torch.testing.assert_close(Dep.resize(x, (oh, ow), "half_pixel", antialias=True),
                                   F.interpolate(x, (oh, ow), mode="bilinear", align_corners=False, antialias=True))


def test_coordinate_maps_by_hand():
    # 4 -> 8: half_pixel x_in = (j + 0.5) / 2 - 0.5; asymmetric j / 2; align_corners j * 3 / 7
    assert Dep.resize_coordinate_map(4, 8, "half_pixel")[:3].tolist() == [-0.25, 0.25, 0.75]
    assert Dep.resize_coordinate_map(4, 8, "asymmetric")[:3].tolist() == [0.0, 0.5, 1.0]
    assert Dep.resize_coordinate_map(4, 8, "align_corners")[-1].item() == pytest.approx(3.0)
    assert Dep.resize_coordinate_map(4, 1, "pytorch_half_pixel").tolist() == [0.0]
    assert Dep.resize_coordinate_map(4, 1, "half_pixel").tolist() == [1.5]


@given(st.integers(1, 50), st.integers(1, 50), st.sampled_from(["half_pixel", "align_corners", "asymmetric"]))
def test_coordinate_map_inverts_chapter_one_forward_map(n_in, n_out, mode):
    if mode == "align_corners" and (n_in == 1 or n_out == 1):
        return
    back = pixels.resize_index(Dep.resize_coordinate_map(n_in, n_out, mode), n_in, n_out, mode=mode)
    torch.testing.assert_close(back, torch.arange(n_out, dtype=torch.float64))


def test_asymmetric_shifts_content_by_half_a_pixel_minus():
    # TF1's default against half_pixel at scale 2: every sample 0.5 - 0.5 / 2 = 0.25 input px to the right
    d = Dep.resize_coordinate_map(10, 20, "asymmetric") - Dep.resize_coordinate_map(10, 20, "half_pixel")
    torch.testing.assert_close(d, torch.full((20,), 0.25, dtype=torch.float64))


@settings(max_examples=60)
@given(st.integers(2, 20), st.integers(2, 20), st.integers(0, 10_000), st.sampled_from([1.0, 0.5, 0.25]), st.integers(1, 7))
def test_tensorpack_crop_and_resize_equals_roi_align_v2(h, w, seed, scale, res):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(1, 3, h, w, generator=g)
    span = torch.tensor([w / scale, h / scale])
    xy = (torch.rand(6, 2, generator=g) * 1.4 - 0.2) * span
    boxes = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * span * 0.7 + 0.05], 1)
    ref = torchvision.ops.roi_align(feats, [boxes], res, scale, 2, True)
    got = Dep.roi_align_via_crop_and_resize(feats, boxes, res, scale)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_naive_crop_and_resize_is_not_roi_align():
    ramp = (torch.arange(8).view(8, 1) * 10 + torch.arange(8).view(1, 8)).float()[None, None]
    box = torch.tensor([[1.0, 1.0, 5.0, 4.0]])
    ref = torchvision.ops.roi_align(ramp, [box], 2, 1.0, 2, True)
    naive = F.avg_pool2d(Dep.crop_and_resize(ramp, Dep.naive_crop_and_resize_boxes(box, (8, 8)), 4), 2)
    assert (naive - ref).abs().max() > 1.0


def test_crop_and_resize_by_hand():
    img = torch.arange(12.0).view(1, 1, 3, 4)  # value 4 y + x
    # the whole image at its own size samples every pixel exactly (corner-aligned)
    torch.testing.assert_close(Dep.crop_and_resize(img, [[0.0, 0.0, 1.0, 1.0]], (3, 4)), img)
    # a box reaching past the image: samples outside [0, H-1] take the extrapolation value
    out = Dep.crop_and_resize(img, [[0.0, 0.0, 2.0, 1.0]], (3, 2), extrapolation_value=-1.0)
    assert out[0, 0, 0].tolist() == [0.0, 3.0] and out[0, 0, 2].tolist() == [-1.0, -1.0]
    # crop size 1: the box centre
    assert Dep.crop_and_resize(img, [[0.0, 0.0, 1.0, 1.0]], 1).item() == pytest.approx(4 * 1 + 1.5)


def test_same_padding_by_hand():
    assert Dep.same_padding(224, 3, 2) == (0, 1)
    assert Dep.same_padding(224, 7, 2) == (2, 3)
    assert Dep.same_padding(225, 3, 2) == (1, 1)
    assert Dep.conv_output_centres(224, 3, 2, "tf_same")[:3].tolist() == [1.0, 3.0, 5.0]   # centred on 2k + 1
    assert Dep.conv_output_centres(224, 3, 2, "symmetric")[:3].tolist() == [0.0, 2.0, 4.0]  # centred on 2k
    assert Dep.conv_output_centres(224, 7, 2, "tf_same")[:2].tolist() == [1.0, 3.0]


@given(st.integers(1, 64), st.sampled_from([1, 3, 5, 7]), st.integers(1, 3))
def test_same_padding_gives_ceil_outputs(n, k, s):
    before, after = Dep.same_padding(n, k, s)
    assert (n + before + after - k) // s + 1 == -(-n // s)
    assert after - before in (0, 1)


def test_onnx_and_caffe2_tables_are_complete():
    ops = {d["op"] for d in Dep.CAFFE2_LEGACY_PLUS_ONE_OPS}
    assert ops == {"GenerateProposals", "BBoxTransform", "BoxWithNMSLimit", "CollectAndDistributeFpnRpnProposals", "DistributeFpnProposals"}
    modes = {d["attribute"].split(" = ")[1].split(" ")[0] for d in Dep.ONNX_MODES}
    assert {"half_pixel", "output_half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"} <= modes


@pytest.mark.parametrize("call, needle", [
    (lambda: Dep.resize_coordinate_map(4, 8, "cubic"), "mode must be one of 'half_pixel', 'pytorch_half_pixel', 'align_corners', 'asymmetric'"),
    (lambda: Dep.resize(torch.zeros(1, 1, 4, 4), (0, 3)), "size height must be a whole number >= 1"),
    (lambda: Dep.same_padding(8, 3, 0), "stride must be a whole number >= 1"),
    (lambda: Dep.crop_and_resize(torch.zeros(1, 1, 4, 4), [[0.0, 0.0, 1.0]], 2), "K x 4 normalised"),
    (lambda: Dep.crop_and_resize(torch.zeros(2, 1, 4, 4), [[0.0, 0.0, 1.0, 1.0]], 2), "1 x C x H x W"),
    (lambda: Dep.conv_output_centres(8, 3, 2, "reflect"), "padding must be one of"),
])
def test_bad_input_lists_accepted_values(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)


# --------------------------------------------------------------------------------------------
# TensorFlow's crop_and_resize in float32 (golden: real TensorFlow, tests/data/deployment/README.md)
# --------------------------------------------------------------------------------------------
TF = load_golden("deployment/tf_crop_and_resize.json")


def test_crop_and_resize_last_row_extrapolates_in_float32():
    img = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    out = Dep.crop_and_resize(img, [[0.0, 0.0, 1.0, 1.0]], (14, 5), extrapolation_value=-1.0)[0, 0]
    ref = torch.tensor(TF["image_8x8_box_0011_crop_14x5"]["crop"], dtype=torch.float32)
    assert torch.equal(out, ref)
    assert out[-1].tolist() == [-1.0] * 5                   # position 13 * float32(7 / 13) = 7.0000005 > 7
    scale = np.float32(np.float32(1.0) * np.float32(7.0)) / np.float32(13.0)
    assert np.float32(np.float32(13.0) * scale) > 7.0 and 13 * (7 / 13) == 7.0   # float64 would be exactly 7


def test_crop_and_resize_full_image_extrapolation_set():
    # n x n images, n = 2..32, box [0, 0, 1, 1], c x c crops, c = 2..40 (1,209 configurations)
    expected = {(e["n"], e["c"]): (e["rows"], e["cols"]) for e in TF["full_image_extrapolates"]["configurations"]}
    got = {}
    for n in range(2, 33):
        for c in range(2, 41):
            o = Dep.crop_and_resize(torch.ones(1, 1, n, n), [[0.0, 0.0, 1.0, 1.0]], c, extrapolation_value=-1.0)[0, 0]
            if (o == -1).any():
                got[(n, c)] = (torch.nonzero((o == -1).all(1)).flatten().tolist(), torch.nonzero((o == -1).all(0)).flatten().tolist())
    assert got == expected and len(got) == 35


@pytest.mark.parametrize("k", range(12))
def test_crop_and_resize_equals_tensorflow_bit_for_bit(k):
    case = TF["random"][k]
    out = Dep.crop_and_resize(torch.tensor(case["image"], dtype=torch.float32)[None], case["boxes"], case["crop_size"])
    assert torch.equal(out, torch.tensor(case["crops"], dtype=torch.float32))


# --------------------------------------------------------------------------------------------
# "SAME" padding through a ResNet-50
# --------------------------------------------------------------------------------------------
def _chain_centres(n: int, layers, padding: str):
    """Independent derivation: pad + conv1d with all-ones kernels (float64), one layer after another; the centre of an
    interior output o (index n_out // 2 of the symmetric chain) is the centroid of d y[o] / d x, in input pixels,
    minus S o (where symmetric padding puts it)."""
    x = torch.zeros(1, 1, n, dtype=torch.float64, requires_grad=True)
    y, stride, out = x, 1, []
    sym_len = n
    for k, s in layers:
        before, after = Dep.same_padding(y.shape[-1], k, s) if padding == "tf_same" else (k // 2, k // 2)
        y = F.conv1d(F.pad(y, (before, after)), torch.ones(1, 1, k, dtype=torch.float64), stride=s)
        stride *= s
        sym_len = (sym_len + 2 * (k // 2) - k) // s + 1
        o = sym_len // 2
        (g,) = torch.autograd.grad(y[0, 0, o], x, retain_graph=True)
        w = g[0, 0]
        out.append(float((w * torch.arange(n, dtype=torch.float64)).sum() / w.sum()) - stride * o)
    return out


@pytest.mark.parametrize("size", [1024, 800, 1000, 1333])
@pytest.mark.parametrize("stride_in_1x1", [False, True])
def test_backbone_offsets_against_a_conv_chain(size, stride_in_1x1):
    stem = [(7, 2), (3, 2)]
    main = stem + ([(1, 2)] * 3 if stride_in_1x1 else [(3, 2)] * 3)
    short = stem + [(1, 2)] * 3
    assert _chain_centres(size, main, "symmetric") == pytest.approx([0.0] * 5, abs=1e-9)   # the reference grid: S o
    got = Dep.backbone_offsets(size, stride_in_1x1=stride_in_1x1)
    assert [r["stride"] for r in got] == [2, 4, 8, 16, 32]
    assert [r["main"] for r in got] == pytest.approx(_chain_centres(size, main, "tf_same"), abs=1e-9)
    assert [r["shortcut"] for r in got] == pytest.approx(_chain_centres(size, short, "tf_same"), abs=1e-9)


def test_backbone_offsets_pinned():
    # inputs divisible by 32: 1, 3, 7, 15, 31 px with the stride in the 3 x 3; 1, then 3 from stride 4 on, in the 1 x 1
    assert [r["main"] for r in Dep.backbone_offsets(1024)] == [1, 3, 7, 15, 31]
    assert [r["shortcut"] for r in Dep.backbone_offsets(1024)] == [1, 3, 3, 3, 3]
    assert [r["main"] for r in Dep.backbone_offsets(1024, stride_in_1x1=True)] == [1, 3, 3, 3, 3]
    # a 1333 px side: odd lengths get symmetric "SAME" pads, so the chain is 0, 0, 4, 4, 20
    assert [r["main"] for r in Dep.backbone_offsets(1333)] == [0, 0, 4, 4, 20]
    assert [r["main"] for r in Dep.backbone_offsets(1333, padding="symmetric")] == [0, 0, 0, 0, 0]
    # tensorpack: TF_PAD_MODE=False pads (3, 2) and (1, 0): no shift; True pads (2, 3) and (0, 1) at any size
    assert [r["main"] for r in Dep.backbone_offsets(1333, padding="tensorpack")] == [0, 0, 0, 0, 0]
    assert [r["main"] for r in Dep.backbone_offsets(1333, padding="tensorpack", tf_pad_mode=True)] == [1, 3, 7, 15, 31]


# --------------------------------------------------------------------------------------------
# OpenCV's and PIL's resize, preprocessing (the libraries themselves: tests/test_crosscheck_*.py)
# --------------------------------------------------------------------------------------------
@given(st.integers(2, 30), st.integers(2, 30), st.integers(2, 60), st.integers(2, 60), st.integers(0, 1000))
def test_cv2_resize_is_half_pixel_bilinear_inside(h, w, oh, ow, seed):
    # away from OpenCV's border rules and rounding, INTER_LINEAR is half_pixel bilinear: F.interpolate
    x = torch.rand(1, h, w, generator=torch.Generator().manual_seed(seed))
    if (oh, ow) == (h, w) or (h == 2 * oh and w == 2 * ow):
        return
    got = Dep.cv2_resize(x, (oh, ow))
    ref = F.interpolate(x[None].double(), (oh, ow), mode="bilinear", align_corners=False)[0].float()
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=0)


def test_cv2_resize_fx_maps_by_fx_itself():
    # 640 -> fx = 5/3: output width round(1066.67) = 1067, and output column j reads (j + 0.5) / fx - 0.5, not
    # (j + 0.5) * 640 / 1067 - 0.5 (Detectron's im_scale is exactly the mapping applied)
    ramp = torch.arange(640, dtype=torch.float32).view(1, 640)
    out = Dep.cv2_resize(ramp, fx=5 / 3, fy=1.0)
    assert out.shape == (1, 1067)
    assert out[0, 1000].item() == pytest.approx((1000 + 0.5) / (5 / 3) - 0.5, abs=1e-3)
    assert abs(out[0, 1000].item() - ((1000 + 0.5) * 640 / 1067 - 0.5)) > 0.15


def test_pil_resize_is_a_triangle_filter():
    # enlarging: plain half_pixel bilinear; shrinking: the filter widened by the factor (F.interpolate antialias)
    x = torch.rand(1, 9, 13, generator=torch.Generator().manual_seed(3)) * 100
    torch.testing.assert_close(Dep.pil_resize(x, (20, 31)).double(),
                               F.interpolate(x[None].double(), (20, 31), mode="bilinear", align_corners=False)[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(Dep.pil_resize(x, (4, 5)).double(),
                               F.interpolate(x[None].double(), (4, 5), mode="bilinear", align_corners=False, antialias=True)[0],
                               atol=1e-4, rtol=0)
    u8 = (x * 2.5).round().to(torch.uint8)
    diff = Dep.pil_resize(u8, (4, 5)).int() - Dep.resize(u8.float(), (4, 5), antialias=True).round().int()
    assert diff.abs().max() <= 1        # uint8 arithmetic: rounding in each of the two passes


def test_input_sizes_differ_on_half_ties():
    # 256 x 340 to 800: Detectron's OpenCV rounds 1062.5 half to even (1062), Detectron2 rounds half up (1063)
    assert Dep.detectron_input_size(256, 340) == (800 / 256, (800, 1062))
    assert Dep.detectron2_input_size(256, 340) == (800, 1063)
    # the longer side capped at 1333
    scale, size = Dep.detectron_input_size(270, 620)
    assert scale == 1333 / 620 and size == (580, 1333)
    assert Dep.detectron2_input_size(270, 620) == (581, 1333)


def test_preprocessing_means_and_order():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 30, 40), generator=g, dtype=torch.uint8)
    d1, scale = Dep.detectron_preprocess(img, target_size=30, max_size=100)
    d2 = Dep.detectron2_preprocess(img, short_edge=30, max_size=100)
    assert scale == 1.0 and d1.shape == d2.shape == (3, 30, 40)      # same size: no resize on either side
    # with no resize the inputs differ by the means alone: D2's mean minus Detectron's, per BGR channel
    want = torch.tensor(Dep.DETECTRON2_PIXEL_MEAN) - torch.tensor(Dep.DETECTRON_PIXEL_MEANS)
    torch.testing.assert_close((d1 - d2).mean((1, 2)), want.float(), atol=1e-4, rtol=0)
    assert Dep.DETECTRON_PIXEL_MEANS == (102.9801, 115.9465, 122.7717)
    assert Dep.DETECTRON2_PIXEL_MEAN == (103.530, 116.280, 123.675)


@pytest.mark.parametrize("call, needle", [
    (lambda: Dep.cv2_resize(torch.zeros(4, 4)), "give size"),
    (lambda: Dep.cv2_resize(torch.zeros(4, 4), (2, 2), fx=0.5), "not both"),
    (lambda: Dep.cv2_resize(torch.zeros(4, 4, dtype=torch.uint8), (2, 2)), "float image"),
    (lambda: Dep.cv2_resize(torch.zeros(4, 4), fx=0.01), "empty output"),
    (lambda: Dep.pil_resize(torch.zeros(4, 4, dtype=torch.float64), (2, 2)), "uint8"),
    (lambda: Dep.detectron_preprocess(torch.zeros(3, 4, 4)), "3 x H x W uint8"),
    (lambda: Dep.backbone_offsets(224, padding="reflect"), "padding must be one of"),
    (lambda: Dep.backbone_offsets(0), "size must be a whole number >= 1"),
])
def test_bad_input_new_functions(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)


def test_crop_and_resize_grid_is_where_crop_and_resize_samples():
    # the drawing's float64 grid against the float32 positions that crop_and_resize itself samples at
    box = torch.tensor([[0.1, 0.2, 0.7, 0.9]])
    grid = Dep.crop_and_resize_grid(box, 8, 4)
    ys, _ = Dep.crop_and_resize_positions(0.1, 0.7, 4, 8)
    xs, _ = Dep.crop_and_resize_positions(0.2, 0.9, 4, 8)
    want = torch.stack(torch.meshgrid(ys.double(), xs.double(), indexing="ij")[::-1], -1).reshape(-1, 2)
    torch.testing.assert_close(grid, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(Dep.crop_and_resize_grid(box, 8, 4, 1.0), want - 1.0, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="crop"):
        Dep.crop_and_resize_grid(box, 8, 1)


def test_naive_roi_align_is_crop_and_resize_on_naive_boxes_then_averaged():
    f = torch.arange(64.0).view(1, 1, 8, 8)
    box = torch.tensor([[1.0, 1.0, 5.0, 4.0]])
    got = Dep.naive_roi_align_via_crop_and_resize(f, box, 2)
    crops = Dep.crop_and_resize(f, Dep.naive_crop_and_resize_boxes(box, (8, 8)), 4)
    want = crops.view(1, 1, 2, 2, 2, 2).mean((3, 5))
    torch.testing.assert_close(got, want)
    # the naive boxes are misaligned: the average differs from tensorpack's transformed ROIAlign
    assert not torch.allclose(got, Dep.roi_align_via_crop_and_resize(f, box, 2))


@pytest.mark.parametrize("n,shift", [(224, 1.0), (225, 0.0), (8, 1.0), (7, 0.0)])
def test_same_padding_moves_the_outputs_half_a_stride_only_on_even_lengths(n, shift):
    # 3 x 3, stride 2: total = (ceil(n / 2) - 1) 2 + 3 - n is 1 for even n (before 0, PyTorch 1: output 0 centred on
    # input 1 against 0) and 2 for odd n (before 1, as PyTorch: the same centres)
    tf = Dep.conv_output_centres(n, 3, 2)
    sym = Dep.conv_output_centres(n, 3, 2, "symmetric")
    assert Dep.same_padding(n, 3, 2)[0] == (0 if n % 2 == 0 else 1)
    assert torch.all(tf[: len(sym)] - sym[: len(tf)] == shift)


# --------------------------------------------------------------------------------------------------
# what torch's two ONNX exporters write for ROIAlign (torch 2.14, torchvision 0.29.1, onnxruntime)
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_torchscript_exporter_at_opset_11_turns_roialignv2_into_roialign():
    from explainer import export_ops as X

    # Detectron2's export_model.py asks for STABLE_ONNX_OPSET_VERSION = 11 (detectron2/export/__init__.py)
    assert X.STABLE_ONNX_OPSET_VERSION == 11
    out = X.export_roi_align_onnx(True, dynamo=False, opset_version=X.STABLE_ONNX_OPSET_VERSION)
    assert out["written_opset"] == 11 and out["mode"] == "output_half_pixel"
    # ONNX Runtime computes aligned=False: on the map 10 y + x, half a cell in x and y is 0.5 * 10 + 0.5 = 5.5
    assert not out["computes_aligned"] and out["ort_vs_unaligned"] < 1e-4
    assert out["ort_vs_aligned"] == pytest.approx(5.5, abs=1e-4)
    at16 = X.export_roi_align_onnx(True, dynamo=False, opset_version=16)
    assert at16["written_opset"] == 16 and at16["mode"] == "half_pixel" and at16["computes_aligned"]


@pytest.mark.slow
def test_the_dynamo_exporter_asked_for_opset_11_writes_opset_18_with_half_pixel():
    from explainer import export_ops as X

    # torch 2.14: torch.onnx.export defaults to dynamo=True; it has no RoiAlign below opset 18 and cannot convert
    # RoiAlign-16 down to 11, so the model keeps opset 18, and aligned=True survives as half_pixel
    out = X.export_roi_align_onnx(True, dynamo=True, opset_version=11)
    assert out["written_opset"] == 18 and out["mode"] == "half_pixel" and out["computes_aligned"]
    assert out["ort_vs_unaligned"] == pytest.approx(5.5, abs=1e-4)
    with pytest.raises(ValueError, match="opset_version"):
        X.export_roi_align_onnx(True, dynamo=True, opset_version=3)
    with pytest.raises(ValueError, match="dynamo"):
        X.export_roi_align_onnx(True, dynamo="yes")
