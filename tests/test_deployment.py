"""Chapter 8: resize modes, crop_and_resize against ROIAlign, SAME padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from explainer import deployment as D
from explainer import pixels


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(0, 1000))
def test_resize_equals_interpolate_where_modes_coincide(h, w, oh, ow, seed):
    x = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(D.resize(x, (oh, ow), "half_pixel"), F.interpolate(x, (oh, ow), mode="bilinear", align_corners=False))
    torch.testing.assert_close(D.resize(x, (oh, ow), "align_corners"), F.interpolate(x, (oh, ow), mode="bilinear", align_corners=True))
    if min(h, w, oh, ow) >= 2:  # torch's antialiased kernel handles a length-1 side differently (not reproduced)
        torch.testing.assert_close(D.resize(x, (oh, ow), "half_pixel", antialias=True),
                                   F.interpolate(x, (oh, ow), mode="bilinear", align_corners=False, antialias=True))


def test_coordinate_maps_by_hand():
    # 4 -> 8: half_pixel x_in = (j + 0.5) / 2 - 0.5; asymmetric j / 2; align_corners j * 3 / 7
    assert D.resize_coordinate_map(4, 8, "half_pixel")[:3].tolist() == [-0.25, 0.25, 0.75]
    assert D.resize_coordinate_map(4, 8, "asymmetric")[:3].tolist() == [0.0, 0.5, 1.0]
    assert D.resize_coordinate_map(4, 8, "align_corners")[-1].item() == pytest.approx(3.0)
    assert D.resize_coordinate_map(4, 1, "pytorch_half_pixel").tolist() == [0.0]
    assert D.resize_coordinate_map(4, 1, "half_pixel").tolist() == [1.5]


@given(st.integers(1, 50), st.integers(1, 50), st.sampled_from(["half_pixel", "align_corners", "asymmetric"]))
def test_coordinate_map_inverts_chapter_one_forward_map(n_in, n_out, mode):
    if mode == "align_corners" and (n_in == 1 or n_out == 1):
        return
    back = pixels.resize_index(D.resize_coordinate_map(n_in, n_out, mode), n_in, n_out, mode=mode)
    torch.testing.assert_close(back, torch.arange(n_out, dtype=torch.float64))


def test_asymmetric_shifts_content_by_half_a_pixel_minus():
    # TF1's default against half_pixel at scale 2: every sample 0.5 - 0.5 / 2 = 0.25 input px to the right
    d = D.resize_coordinate_map(10, 20, "asymmetric") - D.resize_coordinate_map(10, 20, "half_pixel")
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
    got = D.roi_align_via_crop_and_resize(feats, boxes, res, scale)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_naive_crop_and_resize_is_not_roi_align():
    ramp = (torch.arange(8).view(8, 1) * 10 + torch.arange(8).view(1, 8)).float()[None, None]
    box = torch.tensor([[1.0, 1.0, 5.0, 4.0]])
    ref = torchvision.ops.roi_align(ramp, [box], 2, 1.0, 2, True)
    naive = F.avg_pool2d(D.crop_and_resize(ramp, D.naive_crop_and_resize_boxes(box, (8, 8)), 4), 2)
    assert (naive - ref).abs().max() > 1.0


def test_crop_and_resize_by_hand():
    img = torch.arange(12.0).view(1, 1, 3, 4)  # value 4 y + x
    # the whole image at its own size samples every pixel exactly (corner-aligned)
    torch.testing.assert_close(D.crop_and_resize(img, [[0.0, 0.0, 1.0, 1.0]], (3, 4)), img)
    # a box reaching past the image: samples outside [0, H-1] take the extrapolation value
    out = D.crop_and_resize(img, [[0.0, 0.0, 2.0, 1.0]], (3, 2), extrapolation_value=-1.0)
    assert out[0, 0, 0].tolist() == [0.0, 3.0] and out[0, 0, 2].tolist() == [-1.0, -1.0]
    # crop size 1: the box centre
    assert D.crop_and_resize(img, [[0.0, 0.0, 1.0, 1.0]], 1).item() == pytest.approx(4 * 1 + 1.5)


def test_same_padding_by_hand():
    assert D.same_padding(224, 3, 2) == (0, 1)
    assert D.same_padding(224, 7, 2) == (2, 3)
    assert D.same_padding(225, 3, 2) == (1, 1)
    assert D.conv_output_centres(224, 3, 2, "tf_same")[:3].tolist() == [1.0, 3.0, 5.0]   # centred on 2k + 1
    assert D.conv_output_centres(224, 3, 2, "symmetric")[:3].tolist() == [0.0, 2.0, 4.0]  # centred on 2k
    assert D.conv_output_centres(224, 7, 2, "tf_same")[:2].tolist() == [1.0, 3.0]


@given(st.integers(1, 64), st.sampled_from([1, 3, 5, 7]), st.integers(1, 3))
def test_same_padding_gives_ceil_outputs(n, k, s):
    before, after = D.same_padding(n, k, s)
    assert (n + before + after - k) // s + 1 == -(-n // s)
    assert after - before in (0, 1)


def test_onnx_and_caffe2_tables_are_complete():
    ops = {d["op"] for d in D.CAFFE2_LEGACY_PLUS_ONE_OPS}
    assert ops == {"GenerateProposals", "BBoxTransform", "BoxWithNMSLimit", "CollectAndDistributeFpnRpnProposals", "DistributeFpnProposals"}
    modes = {d["attribute"].split(" = ")[1].split(" ")[0] for d in D.ONNX_MODES}
    assert {"half_pixel", "output_half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"} <= modes


@pytest.mark.parametrize("call, needle", [
    (lambda: D.resize_coordinate_map(4, 8, "cubic"), "mode must be one of 'half_pixel', 'pytorch_half_pixel', 'align_corners', 'asymmetric'"),
    (lambda: D.resize(torch.zeros(1, 1, 4, 4), (0, 3)), "size height must be a whole number >= 1"),
    (lambda: D.same_padding(8, 3, 0), "stride must be a whole number >= 1"),
    (lambda: D.crop_and_resize(torch.zeros(1, 1, 4, 4), [[0.0, 0.0, 1.0]], 2), "K x 4 normalised"),
    (lambda: D.crop_and_resize(torch.zeros(2, 1, 4, 4), [[0.0, 0.0, 1.0, 1.0]], 2), "1 x C x H x W"),
    (lambda: D.conv_output_centres(8, 3, 2, "reflect"), "padding must be one of"),
])
def test_bad_input_lists_accepted_values(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)
