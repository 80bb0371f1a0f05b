"""explainer.torchvision_way and the TORCHVISION preset, each computation against torchvision's own, run here."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.models.detection.transform import resize_boxes as tv_resize_boxes
from torchvision.models.detection.transform import resize_keypoints as tv_resize_keypoints
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import nms as tv_nms
from torchvision.ops.poolers import LevelMapper

from explainer import anchors as A
from explainer import masks as Mk
from explainer import torchvision_way as TV
from explainer.conventions import DETECTRON, DETECTRON2, TORCHVISION, get_convention

SIZES = ((32,), (64,), (128,), (256,), (512,))
RATIOS = ((0.5, 1.0, 2.0),) * 5


def _boxes(n, size=200.0, seed=0, min_side=1.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + min_side
    return torch.cat([xy, xy + wh], dim=1)


# -- the preset ----------------------------------------------------------------------------------------------------
def test_the_preset_is_named_and_differs_from_both_where_the_source_says():
    assert get_convention("torchvision") is TORCHVISION and get_convention("TV") is TORCHVISION
    # shared with Detectron
    for knob in ("roi_aligned", "sampling_ratio", "background_first", "mask_paste", "anchor_order",
                 "post_nms_topk_train", "rpn_smooth_l1_beta", "keypoint_half_pixel"):
        assert getattr(TORCHVISION, knob) == getattr(DETECTRON, knob), knob
    # shared with Detectron2
    for knob in ("legacy_plus_one", "anchor_offset", "anchor_rounding", "post_nms_topk_per_image", "hflip_minus_one"):
        assert getattr(TORCHVISION, knob) == getattr(DETECTRON2, knob), knob
    # its own
    own = {k for k in TORCHVISION.knobs() if TORCHVISION.knobs()[k] not in (DETECTRON.knobs()[k], DETECTRON2.knobs()[k])}
    assert own == {"box_smooth_l1_beta", "anchor_round_corners", "input_format", "input_scale", "image_mean",
                   "image_std", "resize"}


def test_the_preset_reads_torchvisions_own_defaults():
    from torchvision.models.detection import FasterRCNN

    t = GeneralizedRCNNTransform(800, 1333, list(TORCHVISION.image_mean), list(TORCHVISION.image_std))
    backbone = torch.nn.Conv2d(3, 4, 1)
    backbone.out_channels = 4
    model = FasterRCNN(backbone, num_classes=3, rpn_anchor_generator=AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),)),
                       box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2))
    assert list(model.transform.image_mean) == list(TORCHVISION.image_mean) == list(t.image_mean)
    assert list(model.transform.image_std) == list(TORCHVISION.image_std)
    assert model.transform.size_divisible == 32
    assert model.roi_heads.box_roi_pool.sampling_ratio == TORCHVISION.sampling_ratio
    assert tuple(model.roi_heads.box_coder.weights) == TV.BOX_HEAD_WEIGHTS
    assert tuple(model.rpn.box_coder.weights) == TV.RPN_WEIGHTS
    assert model.roi_heads.box_coder.bbox_xform_clip == TV.BBOX_XFORM_CLIP
    assert model.rpn._post_nms_top_n["training"] == TORCHVISION.post_nms_topk_train


@pytest.mark.parametrize("bad", [dict(input_format="BRG"), dict(resize="PIL"), dict(input_scale=0.0),
                                 dict(image_std=(1.0, 0.0, 1.0)), dict(image_mean=(1.0, 2.0)),
                                 dict(anchor_rounding=True)])
def test_bad_knob_values_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad)) if "anchor_rounding" not in bad else "anchor_round_corners"):
        TORCHVISION.replace(**bad)


# -- anchors -------------------------------------------------------------------------------------------------------
def test_cell_anchors_are_anchor_generators():
    gen = AnchorGenerator(SIZES, RATIOS)
    for sizes, ratios, theirs in zip(SIZES, RATIOS, gen.cell_anchors):
        assert torch.equal(TV.cell_anchors(sizes, ratios), theirs)
    odd = AnchorGenerator(((20, 45, 91),), ((0.3, 1.0, 1.7, 3.0),))
    assert torch.equal(TV.cell_anchors((20, 45, 91), (0.3, 1.0, 1.7, 3.0)), odd.cell_anchors[0])
    # and the convention's cell anchors follow the knob
    assert torch.equal(A.cell_anchors(4, (32,), (0.5, 1.0, 2.0), TORCHVISION), gen.cell_anchors[0])


def test_the_rounding_differs_from_detectrons_and_the_order_from_detectron2s():
    tv = A.cell_anchors(4, (32,), (0.5, 1.0, 2.0), TORCHVISION)
    d1 = A.cell_anchors(4, (32,), (0.5, 1.0, 2.0), DETECTRON)
    tv_w = tv[:, 2] - tv[:, 0]
    d1_w = d1[:, 2] - d1[:, 0]
    assert (tv_w % 2 == 0).all()
    assert not torch.equal(tv_w, d1_w)
    tv_multi = A.cell_anchors(8, (32, 64), (0.5, 2.0), TORCHVISION)
    assert torch.equal(tv_multi, A.torchvision_cell_anchors((32, 64), (0.5, 2.0)))
    assert not torch.equal(tv_multi, A.ratio_major_to_size_major(tv_multi, 2, 2))


def test_image_anchors_are_anchor_generators_over_a_padded_batch():
    gen = AnchorGenerator(SIZES, RATIOS)
    image = torch.zeros(1, 3, 256, 320)
    feats = [torch.zeros(1, 4, 256 // s, 320 // s) for s in (4, 8, 16, 32, 64)]
    theirs = gen(ImageList(image, [(250, 310)]), feats)[0]
    ours = TV.image_anchors((256, 320), [f.shape[-2:] for f in feats], SIZES, RATIOS)
    assert torch.equal(ours, theirs)


# -- pooling -------------------------------------------------------------------------------------------------------
def test_level_mapper_is_torchvisions_including_boundaries():
    sides = torch.tensor([1.0, 55.9, 56.0, 111.99, 112.0, 112.01, 223.9, 224.0, 447.99, 448.0, 448.01, 2000.0])
    b = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], dim=1)
    b = torch.cat([b, _boxes(300, 900.0, seed=3)])
    theirs = LevelMapper(2, 5)([b])
    assert torch.equal(TV.level_mapper(b, 2, 5), theirs)
    assert torch.equal(TV.level_mapper(b.double(), 2, 5), LevelMapper(2, 5)([b.double()]))


def test_multiscale_roi_align_is_torchvisions():
    g = torch.Generator().manual_seed(1)
    image_sizes = [(200, 256), (180, 240)]
    feats = {str(i): torch.randn(2, 3, 256 // s, 256 // s, generator=g) for i, s in enumerate((4, 8, 16, 32))}
    boxes = [_boxes(40, 180.0, seed=4), _boxes(30, 170.0, seed=5)]
    pool = MultiScaleRoIAlign(list(feats), 7, 2)
    theirs = pool(feats, boxes, image_sizes)
    ours = TV.multiscale_roi_align(list(feats.values()), boxes, image_sizes, 7, 2)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    one = MultiScaleRoIAlign(["0"], 5, 2)({"0": feats["0"]}, boxes, image_sizes)
    torch.testing.assert_close(TV.multiscale_roi_align([feats["0"]], boxes, image_sizes, 5, 2), one, rtol=1e-5, atol=1e-5)


# -- box coder, NMS ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weights", [TV.RPN_WEIGHTS, TV.BOX_HEAD_WEIGHTS])
def test_decode_is_box_coders(weights):
    g = torch.Generator().manual_seed(2)
    boxes = _boxes(50, seed=6)
    deltas = torch.randn(50, 12, generator=g) * 2
    deltas[0, 2] = 20.0  # beyond the clip
    coder = det_utils.BoxCoder(weights)
    theirs = coder.decode_single(deltas, boxes)
    assert torch.equal(TV.decode_boxes(deltas, boxes, weights), theirs)


def test_nms_is_torchvisions_with_score_ties():
    for seed in range(5):
        b = _boxes(120, 150.0, seed=seed)
        s = torch.randint(0, 6, (120,), generator=torch.Generator().manual_seed(seed)).float()  # many equal scores
        for t in (0.3, 0.5, 0.7):
            assert torch.equal(TV.nms(b, s, t), tv_nms(b, s, t)), (seed, t)


def test_nms_at_an_iou_of_exactly_the_threshold_keeps_both():
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])  # IoU 0.5 exactly
    s = torch.tensor([0.9, 0.8])
    assert TV.nms(b, s, 0.5).tolist() == tv_nms(b, s, 0.5).tolist() == [0, 1]


def _offset_tie_case():
    """A pair of boxes whose IoU is the threshold exactly in category 0 and, moved by the coordinate offsets of a
    higher category in float32, is not: found by search, with torchvision deciding."""
    base = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])
    for far in (1000.0, 3000.0, 7000.0, 100000.0, 1e6):
        for c in range(1, 40):
            for dx in (0.1, 0.3, 0.7, 1.3):
                b = torch.cat([base + dx, torch.tensor([[far, far, far + 1, far + 1]])])
                s = torch.tensor([0.9, 0.8, 0.1])
                idx = torch.tensor([c, c, 0])
                keep = tv_batched_nms(b, s, idx, 0.5)
                if len(keep) != 3:
                    return b, s, idx
    raise AssertionError("no float32 tie found")


def test_batched_nms_is_torchvisions_including_float32_ties_from_the_offsets():
    b, s, idx = _offset_tie_case()
    theirs = tv_batched_nms(b, s, idx, 0.5)
    assert torch.equal(TV.batched_nms(b, s, idx, 0.5), theirs)
    # per category, with no offsets, the tie keeps both boxes: the offsets alone changed the decision
    assert len(TV.nms(b[:2] - b[:2].min(), s[:2], 0.5)) == 2 and len(theirs) == 2
    for seed in range(4):
        bb = _boxes(300, 300.0, seed=seed)
        ss = torch.rand(300, generator=torch.Generator().manual_seed(seed))
        ii = torch.randint(0, 7, (300,), generator=torch.Generator().manual_seed(seed + 9))
        assert torch.equal(TV.batched_nms(bb, ss, ii, 0.5), tv_batched_nms(bb, ss, ii, 0.5))
    big = _boxes(1200, 600.0, seed=8)   # > 4000 coordinates: torchvision's per-category loop
    ss = torch.rand(1200, generator=torch.Generator().manual_seed(8))
    ii = torch.randint(0, 5, (1200,), generator=torch.Generator().manual_seed(18))
    assert torch.equal(TV.batched_nms(big, ss, ii, 0.6), tv_batched_nms(big, ss, ii, 0.6))


# -- masks ---------------------------------------------------------------------------------------------------------
def test_paste_masks_in_image_is_torchvisions():
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(25, 1, 28, 28, generator=g)
    boxes = _boxes(25, 90.0, seed=9)
    boxes[0] = torch.tensor([-10.0, -5.0, 40.0, 30.0])      # partly outside
    boxes[1] = torch.tensor([70.0, 80.0, 130.0, 140.0])     # past the far edges
    boxes[2] = torch.tensor([3.2, 4.7, 3.9, 5.1])           # less than a pixel
    theirs = tv_roi_heads.paste_masks_in_image(masks, boxes, (100, 120), padding=1)
    assert torch.equal(TV.paste_masks_in_image(masks, boxes, (100, 120)), theirs)


def test_torchvisions_paste_is_detectrons_on_continuous_boxes():
    # the TORCHVISION preset's mask_paste="segm_results" fed torchvision's continuous boxes
    g = torch.Generator().manual_seed(4)
    masks = torch.rand(20, 28, 28, generator=g)
    boxes = _boxes(20, 90.0, seed=10, min_side=4.0)
    theirs = tv_roi_heads.paste_masks_in_image(masks[:, None], boxes, (100, 120), padding=1)[:, 0]
    ours = Mk.paste_masks(masks, boxes, (100, 120), mask_paste=TORCHVISION.mask_paste, soft=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    binary = Mk.paste_masks(masks, boxes, (100, 120), mask_paste=TORCHVISION.mask_paste)
    assert (binary != (theirs > 0.5)).sum() <= 2


# -- the input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(480, 640), (333, 500), (1000, 700), (600, 2400), (799, 801)])
def test_resized_size_and_image_are_generalized_rcnn_transforms(hw):
    t = GeneralizedRCNNTransform(800, 1333, list(TV.IMAGE_MEAN), list(TV.IMAGE_STD)).eval()
    g = torch.Generator().manual_seed(hw[0])
    image = torch.rand(3, *hw, generator=g)
    theirs, _ = t.resize(t.normalize(image))
    ours = TV.resize_image(TV.normalize(image))
    assert tuple(ours.shape[-2:]) == TV.resized_size(*hw) == tuple(theirs.shape[-2:])
    assert torch.equal(ours, theirs)


def test_transform_batches_like_generalized_rcnn_transform_and_postprocess_maps_back():
    t = GeneralizedRCNNTransform(320, 512, list(TV.IMAGE_MEAN), list(TV.IMAGE_STD)).eval()
    g = torch.Generator().manual_seed(7)
    images = [torch.rand(3, 200, 300, generator=g), torch.rand(3, 257, 190, generator=g)]
    their_list, _ = t(images)
    batch, sizes = TV.transform(images, 320, 512)
    assert torch.equal(batch, their_list.tensors)
    assert sizes == [tuple(s) for s in their_list.image_sizes]
    boxes = _boxes(10, 180.0, seed=11)
    kps = torch.rand(10, 17, 3, generator=g) * 150
    result = [{"boxes": boxes.clone(), "keypoints": kps.clone()}]
    back = t.postprocess(result, [sizes[0]], [(200, 300)])[0]
    assert torch.equal(TV.resize_boxes(boxes, sizes[0], (200, 300)), back["boxes"])
    assert torch.equal(TV.resize_keypoints(kps, sizes[0], (200, 300)), back["keypoints"])
    assert torch.equal(TV.resize_boxes(boxes, (200, 300), sizes[0]), tv_resize_boxes(boxes, [200, 300], list(sizes[0])))
    assert torch.equal(TV.resize_keypoints(kps, (5, 7), (9, 11)), tv_resize_keypoints(kps, [5, 7], [9, 11]))


def test_the_three_input_pipelines_differ_in_size_and_values():
    g = torch.Generator().manual_seed(12)
    image = torch.randint(0, 256, (3, 75, 131), generator=g, dtype=torch.uint8)
    tv = TV.input_pipeline(image, TORCHVISION.resize)
    rgb = image.flip(0).float() / 255
    t = GeneralizedRCNNTransform(800, 1333, list(TV.IMAGE_MEAN), list(TV.IMAGE_STD)).eval()
    assert torch.equal(tv, t.resize(t.normalize(rgb))[0])
    d1, d2 = TV.input_pipeline(image, DETECTRON.resize), TV.input_pipeline(image, DETECTRON2.resize)
    assert d1.shape[-2:] != tv.shape[-2:] or d2.shape[-2:] != tv.shape[-2:] or not torch.equal(d1, d2)
    with pytest.raises(ValueError, match="resize"):
        TV.input_pipeline(image, "bilinear")


# -- keypoints and RetinaNet ---------------------------------------------------------------------------------------
def test_heatmaps_to_keypoints_is_torchvisions():
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(6, 17, 56, 56, generator=g)
    rois = _boxes(6, 200.0, seed=12)
    rois[0] = torch.tensor([10.0, 10.0, 10.4, 10.3])  # thinner than a pixel: clamped to 1
    xy_t, s_t = tv_roi_heads.heatmaps_to_keypoints(maps, rois)
    xy, s = TV.heatmaps_to_keypoints(maps, rois)
    assert torch.equal(xy, xy_t) and torch.equal(s, s_t)


def test_retinanet_decoding_is_torchvisions():
    from torchvision.models.detection import RetinaNet

    torch.manual_seed(0)
    backbone = torch.nn.Conv2d(3, 8, 3, stride=8, padding=1)
    backbone.out_channels = 8
    gen = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),))
    model = RetinaNet(backbone, num_classes=5, anchor_generator=gen, min_size=128, max_size=128).eval()
    g = torch.Generator().manual_seed(6)
    a = 3 * 16 * 16
    logits = [torch.randn(1, a, 5, generator=g) * 3 - 1]
    deltas = [torch.randn(1, a, 4, generator=g) * 0.3]
    anchors = [TV.image_anchors((128, 128), [(16, 16)], ((32,),), ((0.5, 1.0, 2.0),))]
    theirs = model.postprocess_detections({"cls_logits": logits, "bbox_regression": deltas}, [anchors], [(120, 128)])[0]
    ours = TV.retinanet_postprocess([logits[0][0]], [deltas[0][0]], anchors, (120, 128))
    for k in ("boxes", "scores", "labels"):
        assert torch.equal(ours[k], theirs[k]), k
    assert len(ours["boxes"]) > 10
    # the prior-probability bias: every class starts at sigmoid = 0.01, under the score threshold
    assert math.isclose(torch.sigmoid(model.head.classification_head.cls_logits.bias[0]).item(), 0.01, rel_tol=1e-5)


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="k_max"):
        TV.level_mapper(_boxes(3), 5, 2)
    with pytest.raises(ValueError, match="masks"):
        TV.paste_masks_in_image(torch.rand(2, 28, 28), _boxes(2), (50, 50))
    with pytest.raises(ValueError, match="idxs"):
        TV.batched_nms(_boxes(3), torch.rand(3), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="image_size"):
        TV.image_anchors((0, 10), [(2, 2)], ((32,),), ((1.0,),))
    with pytest.raises(ValueError, match="image"):
        TV.normalize(torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_three_pastes_are_each_codebases_own():
    g = torch.Generator().manual_seed(8)
    mask = torch.rand(28, 28, generator=g)
    box = [3.3, 4.6, 20.2, 17.9]
    out = TV.paste_three_ways(mask, box, (24, 30))
    theirs = tv_roi_heads.paste_masks_in_image(mask[None, None], torch.tensor([box]), (24, 30), padding=1)[0, 0] > 0.5
    assert torch.equal(out["torchvision"], theirs)
    inclusive = torch.tensor([box]) - torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(out["detectron"], Mk.paste_masks(mask[None], inclusive, (24, 30), mask_paste="segm_results")[0])
    assert torch.equal(out["detectron2"], Mk.paste_masks(mask[None], [box], (24, 30))[0])


def test_compare_inputs_sizes_and_differences():
    from explainer import deployment as Dep

    g = torch.Generator().manual_seed(9)
    image = torch.randint(0, 256, (3, 61, 97), generator=g, dtype=torch.uint8)
    rows = {r["resize"]: r for r in TV.compare_inputs(image, 90, 500)}
    assert rows["ResizeShortestEdge"]["max_diff_vs_detectron2"] == 0.0
    assert rows["GeneralizedRCNNTransform"]["size"] == TV.resized_size(61, 97, 90, 500)
    assert rows["ResizeShortestEdge"]["size"] == Dep.detectron2_input_size(61, 97, 90, 500)
    assert rows["GeneralizedRCNNTransform"]["channels"] == "RGB" and rows["prep_im_for_blob"]["channels"] == "BGR"
