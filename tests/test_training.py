"""Chapter 7: post-NMS top-k selection, smooth L1 against L1, and flip augmentation under both conventions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from explainer import pixels, training
from explainer.conventions import DETECTRON, DETECTRON2
from tests.conftest import load_golden

G = load_golden("training/training_goldens.json")


def _boxes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 50 + 1
    return torch.cat([xy, xy + wh], 1)


# ------------------------------------------------------------------ POST_NMS_TOPK_TRAIN
def test_per_batch_selection_starves_the_sparse_image():
    # image 0: 10 proposals scoring 0.9..0.99; image 1: 10 proposals scoring 0.1..0.19
    s0 = torch.linspace(0.9, 0.99, 10)
    s1 = torch.linspace(0.1, 0.19, 10)
    b0, b1 = _boxes(10, 0), _boxes(10, 1)
    per_image = training.select_post_nms_topk([b0, b1], [s0, s1], k=6, per_image=True)
    per_batch = training.select_post_nms_topk([b0, b1], [s0, s1], k=6, per_image=False)
    assert [len(x) for x in per_image] == [6, 6]
    assert [len(x) for x in per_batch] == [6, 0]  # Detectron: the crowded image takes all 6
    # kept proposals are the highest-scoring ones, in descending score order
    assert torch.equal(per_image[0], b0[[9, 8, 7, 6, 5, 4]])
    assert torch.equal(per_batch[0], b0[[9, 8, 7, 6, 5, 4]])
    assert torch.equal(per_image[1], b1[[9, 8, 7, 6, 5, 4]])


def test_per_batch_split_follows_the_global_ranking():
    s0 = torch.tensor([0.9, 0.5, 0.1])
    s1 = torch.tensor([0.8, 0.6, 0.4])
    b0, b1 = _boxes(3, 2), _boxes(3, 3)
    out = training.select_post_nms_topk([b0, b1], [s0, s1], k=4, per_image=False)
    # global order: 0.9 (img0), 0.8 (img1), 0.6 (img1), 0.5 (img0)
    assert torch.equal(out[0], b0[[0, 1]]) and torch.equal(out[1], b1[[0, 1]])


@given(st.lists(st.integers(0, 30), min_size=1, max_size=4), st.integers(1, 80), st.integers(0, 10_000))
def test_selection_counts(sizes, k, seed):
    g = torch.Generator().manual_seed(seed)
    scores = [torch.rand(n, generator=g) for n in sizes]
    boxes = [_boxes(n, seed + i) for i, n in enumerate(sizes)]
    per_image = training.select_post_nms_topk(boxes, scores, k, per_image=True)
    per_batch = training.select_post_nms_topk(boxes, scores, k, per_image=False)
    assert [len(x) for x in per_image] == [min(k, n) for n in sizes]
    assert sum(len(x) for x in per_batch) == min(k, sum(sizes))
    # the per-batch survivors are exactly the global top k scores
    kept_scores = sorted(torch.cat([s[torch.isin(b, kb).all(1)] if len(kb) else s[:0] for s, b, kb in zip(scores, boxes, per_batch)]).tolist(), reverse=True)
    assert kept_scores == pytest.approx(sorted(torch.cat(scores).tolist(), reverse=True)[: min(k, sum(sizes))])


@pytest.mark.parametrize("call, needle", [
    (lambda: training.select_post_nms_topk([_boxes(2)], [torch.rand(2)], 0, True), "k must be a whole number >= 1"),
    (lambda: training.select_post_nms_topk([], [], 5, True), "batch is empty"),
    (lambda: training.select_post_nms_topk([_boxes(2)], [torch.rand(3)], 5, True), "3 scores for 2 proposals"),
    (lambda: training.select_post_nms_topk([_boxes(2)], [], 5, True), "has 1 images but scores_per_image has 0"),
])
def test_selection_bad_input(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value)


# ------------------------------------------------------------------ smooth L1
def test_reference_point_of_the_chapter():
    # residual 0.05: L1 0.05, beta 1/9 -> 0.5*0.05^2*9 = 0.01125, beta 1 -> 0.00125 (by hand)
    x = torch.tensor([0.05], dtype=torch.float64)
    assert training.smooth_l1(x, 0.0).item() == pytest.approx(0.05)
    assert training.smooth_l1(x, 1 / 9).item() == pytest.approx(0.01125)
    assert training.smooth_l1(x, 1.0).item() == pytest.approx(0.00125)


@pytest.mark.parametrize("key, beta", [
    ("beta_0.0_(D2 default, == L1)", 0.0),
    ("beta_1/9_(Detectron RPN)", 1 / 9),
    ("beta_0.1111_(D2 Detectron1-Comparisons RPN)", 0.1111),
    ("beta_1.0_(Detectron Fast R-CNN head)", 1.0),
])
def test_smooth_l1_matches_fvcore(key, beta):
    ex = G["smooth_l1_examples"]
    got = training.smooth_l1(torch.tensor(ex["residuals"]), beta)
    torch.testing.assert_close(got, torch.tensor(ex[key]), rtol=1e-5, atol=1e-7)


@given(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=1, max_size=20), st.floats(0.01, 3))
def test_smooth_l1_and_gradient_equal_torch(xs, beta):
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    ref = F.smooth_l1_loss(x, torch.zeros_like(x), beta=beta, reduction="none")
    torch.testing.assert_close(training.smooth_l1(x.detach(), beta), ref.detach())
    ref.sum().backward()
    torch.testing.assert_close(training.smooth_l1_grad(x.detach(), beta), x.grad)


@given(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=1, max_size=20))
def test_beta_zero_is_l1(xs):
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    ref = F.l1_loss(x, torch.zeros_like(x), reduction="none")
    torch.testing.assert_close(training.smooth_l1(x.detach(), 0.0), ref.detach())
    ref.sum().backward()
    torch.testing.assert_close(training.smooth_l1_grad(x.detach(), 0.0), x.grad)


def test_l1_has_larger_gradient_for_small_residuals():
    x = torch.tensor([0.01, 0.05, 0.1])
    assert (training.smooth_l1_grad(x, 0.0) > training.smooth_l1_grad(x, 1.0)).all()


def test_negative_beta_is_rejected():
    with pytest.raises(ValueError, match="beta must be >= 0"):
        training.smooth_l1([0.1], -0.5)


# ------------------------------------------------------------------ flips
def test_box_flips_match_the_original_code():
    w = G["legacy_flip"]["image_width"]
    torch.testing.assert_close(pixels.hflip_boxes(G["legacy_flip"]["boxes"], w, minus_one=DETECTRON.hflip_minus_one),
                               torch.tensor(G["legacy_flip"]["flip_boxes"]), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(pixels.hflip_boxes(G["d2_flip"]["boxes"], w, minus_one=DETECTRON2.hflip_minus_one),
                               torch.tensor(G["d2_flip"]["HFlipTransform.apply_box"]), rtol=1e-5, atol=1e-4)


def test_keypoint_pipelines_agree_with_the_original_code_and_each_other():
    legacy = G["legacy_keypoint_flip"]
    names = legacy["keypoint_names"]
    perm = training.keypoint_flip_indices(names, legacy["flip_map"])
    assert perm == G["d2_keypoint_flip"]["hflip_indices"]
    kp = torch.tensor(legacy["input_xyv_per_keypoint"])
    d1 = training.hflip_keypoints(kp, legacy["image_width"], perm, minus_one=DETECTRON.hflip_minus_one,
                                  keypoint_half_pixel=DETECTRON.keypoint_half_pixel)
    d2 = training.hflip_keypoints(kp, legacy["image_width"], perm)  # the defaults are Detectron2's
    torch.testing.assert_close(d2, training.hflip_keypoints(kp, legacy["image_width"], perm, minus_one=DETECTRON2.hflip_minus_one,
                                                            keypoint_half_pixel=DETECTRON2.keypoint_half_pixel))
    torch.testing.assert_close(d1, torch.tensor(legacy["flipped_xyv_per_keypoint"]))
    torch.testing.assert_close(d2, torch.tensor(G["d2_keypoint_flip"]["after_export_minus_0.5_in_coco_pixel_index_space"]))
    torch.testing.assert_close(d1, d2)


@given(st.integers(1, 500), st.integers(0, 10_000))
def test_flips_twice_are_identity(width, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = _boxes(5, seed).double()  # float64: W - (W - x) is exact to rounding we can state
    poly = torch.rand(8, generator=g, dtype=torch.float64) * width
    kp = torch.cat([torch.rand(2, 4, 2, generator=g, dtype=torch.float64) * width, torch.ones(2, 4, 1, dtype=torch.float64)], -1)
    perm = [1, 0, 3, 2]
    for conv in (DETECTRON, DETECTRON2):
        m, half = conv.hflip_minus_one, conv.keypoint_half_pixel
        torch.testing.assert_close(pixels.hflip_boxes(pixels.hflip_boxes(boxes, width, minus_one=m), width, minus_one=m), boxes)
        twice = training.hflip_polygons(training.hflip_polygons([poly], width, minus_one=m), width, minus_one=m)
        torch.testing.assert_close(twice[0], poly)
        once = training.hflip_keypoints(kp, width, perm, minus_one=m, keypoint_half_pixel=half)
        torch.testing.assert_close(training.hflip_keypoints(once, width, perm, minus_one=m, keypoint_half_pixel=half), kp)


@given(st.integers(1, 500), st.integers(0, 10_000))
def test_detectron_polygon_flip_is_one_pixel_left(width, seed):
    poly = torch.rand(10, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * width
    d1 = training.hflip_polygons([poly], width, minus_one=DETECTRON.hflip_minus_one)[0].reshape(-1, 2)
    d2 = training.hflip_polygons([poly], width, minus_one=DETECTRON2.hflip_minus_one)[0].reshape(-1, 2)
    torch.testing.assert_close(d2[:, 0] - d1[:, 0], torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(d2[:, 1], d1[:, 1])


@given(st.integers(2, 500), st.integers(0, 10_000))
def test_box_flips_cover_the_same_pixels(width, seed):
    inc = torch.floor(_boxes(4, seed)).clamp(max=width - 1)
    inc[:, 2:] = torch.maximum(inc[:, 2:], inc[:, :2])
    legacy = pixels.to_continuous(pixels.hflip_boxes(inc, width, minus_one=DETECTRON.hflip_minus_one))
    d2 = pixels.hflip_boxes(pixels.to_continuous(inc), width, minus_one=DETECTRON2.hflip_minus_one)
    torch.testing.assert_close(legacy, d2)


@pytest.mark.parametrize("flip_map, needle", [
    ([0, 0, 1], "permutation"),
    ([1, 2, 0], "swap pairs"),
    ([0, 1], "permutation of 0..2"),
])
def test_flip_map_must_be_a_swap_permutation(flip_map, needle):
    with pytest.raises(ValueError) as e:
        training.hflip_keypoints(torch.zeros(3, 3), 10, flip_map)
    assert needle in str(e.value)


def test_flip_map_names_must_exist_and_pair_once():
    with pytest.raises(ValueError, match="not one of the keypoint names"):
        training.keypoint_flip_indices(["a", "b"], {"a": "c"})
    with pytest.raises(ValueError, match="not a permutation"):
        training.keypoint_flip_indices(["a", "b", "c"], [("a", "b"), ("a", "c")])
