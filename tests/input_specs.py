"""One valid call of every public computation, with the kind of each argument: what the input attack suite mutates.

``SPECS["module.function"]`` is a dict {argument name: Arg}. An ``Arg`` holds a valid value and the argument's
kind, which decides the hostile values tried in its place (:data:`MUTATIONS`). Arguments of kind ``"fixed"`` are
passed unchanged (a Convention, a Run, a callable). ``EXEMPT`` names the public callables that are not mutated
here and why; the attack suite checks that every callable of ``__all__`` is in one of the two.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch

NAN, INF = math.nan, math.inf


@dataclass
class Arg:
    kind: str            # array, boxes, number, int, flag, choice, pair, numbers, mask, fixed
    value: Any
    optional: bool = False   # None is a valid value (so it is not a mutation)


def arr(v, **kw) -> Arg:
    return Arg("array", v, **kw)


def boxes(v, **kw) -> Arg:
    return Arg("boxes", v, **kw)


def num(v, **kw) -> Arg:
    return Arg("number", v, **kw)


def whole(v, **kw) -> Arg:
    return Arg("int", v, **kw)


def flag(v) -> Arg:
    return Arg("flag", v)


def choice(v) -> Arg:
    return Arg("choice", v)


def pair(v) -> Arg:
    return Arg("pair", v)


def nums(v, **kw) -> Arg:
    return Arg("numbers", v, **kw)


def mask(v) -> Arg:
    return Arg("mask", v)


def fixed(v) -> Arg:
    return Arg("fixed", v)


def _with_first(v: Any, x: float) -> Any:
    """``v`` (a tensor, an array or nested lists) as float64 with its first value replaced by ``x``."""
    t = torch.as_tensor(v).to(torch.float64).clone()
    if t.numel() == 0:
        return t
    t.view(-1)[0] = x
    return t


def _as_strings(v: Any) -> Any:
    return np.asarray(torch.as_tensor(v).tolist(), dtype=object).astype(str).tolist()


#: kind -> [(mutation name, function of the valid value)]
MUTATIONS: Dict[str, List[Tuple[str, Callable[[Any], Any]]]] = {
    "array": [("nan", lambda v: _with_first(v, NAN)), ("inf", lambda v: _with_first(v, -INF)),
              ("strings", _as_strings), ("none", lambda v: None),
              ("bool", lambda v: torch.as_tensor(v) > 0), ("complex", lambda v: torch.as_tensor(v).to(torch.complex64))],
    "boxes": [("nan", lambda v: _with_first(v, NAN)), ("inf", lambda v: _with_first(v, INF)),
              ("strings", _as_strings), ("none", lambda v: None),
              ("bool", lambda v: torch.as_tensor(v) > 0), ("complex", lambda v: torch.as_tensor(v).to(torch.complex64)),
              ("huge", lambda v: _with_first(v, -1e300))],
    "mask": [("nan", lambda v: _with_first(v, NAN)), ("strings", _as_strings), ("none", lambda v: None),
             ("fraction", lambda v: _with_first(v, 0.3)), ("complex", lambda v: torch.as_tensor(v).to(torch.complex64))],
    "number": [("nan", lambda v: NAN), ("inf", lambda v: INF), ("string", lambda v: str(v)), ("none", lambda v: None),
               ("bool", lambda v: True), ("complex", lambda v: complex(v, 1.0)), ("tensor", lambda v: torch.ones(3))],
    "int": [("fraction", lambda v: v + 0.5), ("nan", lambda v: NAN), ("inf", lambda v: INF),
            ("string", lambda v: str(v)), ("none", lambda v: None), ("bool", lambda v: True)],
    "flag": [("string", lambda v: str(v)), ("none", lambda v: None)],
    "choice": [("none", lambda v: None), ("number", lambda v: 3), ("unknown", lambda v: v + "_unknown")],
    "pair": [("string", lambda v: "".join(str(x) for x in v)), ("string_item", lambda v: (str(v[0]), v[1])),
             ("nan_item", lambda v: (NAN, v[1])), ("fraction_item", lambda v: (v[0] + 0.5, v[1])),
             ("none", lambda v: None), ("bool_item", lambda v: (True, v[1]))],
    "numbers": [("string", lambda v: "".join(str(int(x)) for x in v)), ("nan", lambda v: [NAN, *list(v)[1:]]),
                ("inf", lambda v: [INF, *list(v)[1:]]), ("none", lambda v: None), ("strings", lambda v: [str(x) for x in v]),
                ("bool", lambda v: [True for _ in v])],
    "text": [("none", lambda v: None), ("number", lambda v: 3), ("bytes", lambda v: v.encode())],
    "fixed": [],
}


@functools.lru_cache(maxsize=1)
def _scene_run():
    from explainer.conventions import DETECTRON2
    from explainer.course.cache import run_scene

    return run_scene(0, DETECTRON2, True)


BOX2 = [[1.0, 2.0, 5.0, 7.0], [2.0, 2.0, 9.0, 6.0]]
BOX1 = [1.0, 2.0, 5.0, 7.0]
FEAT = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8) / 10
ROIS = torch.tensor([[0.0, 1.0, 1.0, 5.0, 6.0]])
IMAGE_BGR = (torch.arange(3 * 6 * 8) % 251).to(torch.uint8).reshape(3, 6, 8)   # a 3 x 6 x 8 BGR uint8 image


def _specs() -> Dict[str, Dict[str, Arg]]:
    from explainer.conventions import DETECTRON, DETECTRON2

    pred = {"cls_score_w": torch.ones(3, 4), "cls_score_b": torch.zeros(3), "bbox_pred_w": torch.ones(12, 4),
            "bbox_pred_b": torch.zeros(12)}
    s = {
        # pixels
        "pixels.to_continuous": {"boxes": boxes(BOX2)},
        "pixels.to_inclusive": {"boxes": boxes(BOX2)},
        "pixels.pixel_centre": {"index": arr([0.0, 3.0])},
        "pixels.pixel_index": {"coordinate": arr([0.2, 3.7])},
        "pixels.box_size": {"boxes": boxes(BOX2), "legacy_plus_one": flag(True)},
        "pixels.box_centre": {"boxes": boxes(BOX2), "legacy_plus_one": flag(True)},
        "pixels.pixel_coverage": {"box": boxes(BOX1), "image_size_hw": pair((8, 9)), "inclusive": flag(False)},
        "pixels.flip_x": {"x": arr([1.0, 2.5]), "width": num(10.0), "minus_one": flag(True)},
        "pixels.hflip_boxes": {"boxes": boxes(BOX2), "width": num(10.0), "minus_one": flag(True)},
        "pixels.hflip_points": {"points": arr([[1.0, 2.0], [3.0, 4.0]]), "width": num(10.0), "minus_one": flag(False)},
        "pixels.hflip_polygon": {"polygon": arr([1.0, 2.0, 3.0, 4.0, 5.0, 1.0]), "width": num(10.0), "minus_one": flag(False)},
        "pixels.coco_keypoints_to_continuous": {"keypoints": arr([[1.0, 2.0, 2.0]])},
        "pixels.continuous_keypoints_to_coco": {"keypoints": arr([[1.5, 2.5, 2.0]])},
        "anchors.detectron_retinanet_cell_anchors": {"stride": num(8.0), "scales_per_octave": whole(3),
                                                     "aspect_ratios": nums([0.5, 1.0, 2.0]), "anchor_scale": num(4.0)},
        "anchors.retinanet_sizes": {"stride": num(8.0), "scales_per_octave": whole(3), "anchor_scale": num(4.0)},
        "labels.retinanet_prior_bias": {"prior_prob": num(0.01)},
        "pixels.keypoint_heatmap_cell": {"x": arr([15.0, 20.0]), "roi_start": num(10.0), "roi_size": num(56.0),
                                         "heatmap_size": whole(56)},
        "pixels.heatmap_cell_to_keypoint": {"cell": arr([5.0, 0.0]), "roi_start": num(10.0), "roi_size": num(56.0),
                                            "map_size": whole(56)},
        "pixels.exported_keypoints": {"keypoints": arr([[15.5, 2.5, 2.0]]), "keypoint_half_pixel": flag(True)},
        "pixels.bilinear_deconv_kernel": {"up_scale": whole(2)},
        "pixels.upsample_heatmaps": {"maps": arr(torch.arange(9.0).reshape(1, 1, 3, 3)), "up_scale": whole(2),
                                     "fixed_deconv": flag(True)},
        "pixels.xywh_to_xyxy": {"boxes": arr([[1.0, 2.0, 3.0, 4.0]]), "legacy_plus_one": flag(True)},
        "pixels.xyxy_to_xywh": {"boxes": boxes(BOX2), "legacy_plus_one": flag(True)},
        "pixels.resize_index": {"index": arr([0.0, 1.0]), "in_size": whole(4), "out_size": whole(8), "mode": choice("half_pixel")},
        "pixels.scale_boxes": {"boxes": boxes(BOX2), "scale": num(1.5), "legacy_plus_one": flag(True)},
        "pixels.compare_box": {"box": boxes(BOX1)},
        # boxes
        "boxes.area": {"boxes": boxes(BOX2), "legacy_plus_one": flag(True)},
        "boxes.pairwise_iou": {"a": boxes(BOX2), "b": boxes(BOX2), "legacy_plus_one": flag(False)},
        "boxes.greedy_match": {"iou": arr(torch.tensor([[0.9, 0.1], [0.2, 0.7]])), "threshold": num(0.5)},
        "boxes.encode": {"boxes": boxes(BOX2), "targets": boxes(BOX2), "weights": nums((10.0, 10.0, 5.0, 5.0)),
                         "legacy_plus_one": flag(True)},
        "boxes.decode": {"deltas": arr([[0.1, 0.2, 0.1, 0.0], [0.0, 0.0, 0.0, 0.1]]), "boxes": boxes(BOX2),
                         "weights": nums((10.0, 10.0, 5.0, 5.0)), "scale_clamp": num(4.0), "legacy_plus_one": flag(True)},
        "boxes.clip": {"boxes": boxes(BOX2), "image_size_hw": pair((6, 8)), "legacy_plus_one": flag(True)},
        "boxes.nonempty": {"boxes": boxes(BOX2), "min_size": num(1.0), "legacy_plus_one": flag(True)},
        "boxes.nms": {"boxes": boxes(BOX2), "scores": arr([0.9, 0.8]), "iou_threshold": num(0.5), "legacy_plus_one": flag(True)},
        "boxes.nms_threshold_as_strict": {"iou_threshold": num(0.5)},
        "boxes.iou_by_size": {"sizes": arr([4.0, 8.0]), "shift": num(1.0), "diagonal": flag(False)},
        "boxes.nms_disagreement_by_size": {"sizes": nums([8.0]), "n_boxes": whole(20), "iou_threshold": num(0.5),
                                           "jitter": num(0.25), "seed": whole(0)},
        "boxes.regression_drift": {"proposals": boxes(BOX2), "targets": boxes(BOX2), "weights": nums((10.0, 10.0, 5.0, 5.0))},
        "boxes.to_continuous": {"boxes": boxes(BOX2)},
        "boxes.to_inclusive": {"boxes": boxes(BOX2)},
        # anchors
        "anchors.detectron_cell_anchors": {"stride": num(16.0), "sizes": nums([32.0, 64.0]), "aspect_ratios": nums([0.5, 1.0])},
        "anchors.d2_cell_anchors": {"sizes": nums([32.0, 64.0]), "aspect_ratios": nums([0.5, 1.0])},
        "anchors.torchvision_cell_anchors": {"sizes": nums([32.0, 64.0]), "aspect_ratios": nums([0.5, 1.0])},
        "anchors.grid_anchors": {"cell_anchors": arr([[-8.0, -8.0, 8.0, 8.0]]), "feature_size": pair((3, 4)),
                                 "stride": num(16.0), "offset": num(0.5)},
        "anchors.cell_anchors": {"stride": num(16.0), "sizes": nums([32.0]), "aspect_ratios": nums([0.5, 1.0]),
                                 "convention": fixed(DETECTRON)},
        "anchors.ratio_major_to_size_major": {"anchors": arr(torch.ones(4, 4)), "n_sizes": whole(2), "n_ratios": whole(2)},
        "anchors.anchor_order_permutation": {"n_sizes": whole(2), "n_ratios": whole(3), "src": choice("ratio_major"),
                                             "dst": choice("size_major")},
        "anchors.anchor_report": {"stride": num(16.0), "sizes": nums([32.0]), "aspect_ratios": nums([0.5, 2.0])},
        "anchors.fpn_level_configs": {"levels": nums([2, 3]), "start_size": num(32.0), "aspect_ratios": nums([1.0])},
        "anchors.c4_config": {"sizes": nums([32.0]), "aspect_ratios": nums([1.0])},
        "anchors.all_level_anchors": {"image_size": pair((64, 96)), "convention": fixed(DETECTRON)},
        "anchors.permute_anchor_rows": {"rows": arr(torch.arange(6.0)), "n_sizes": whole(2), "n_ratios": whole(3),
                                        "src": choice("ratio_major"), "dst": choice("size_major"), "per_anchor": whole(1)},
        "anchors.rpn_outputs_per_anchor": {"objectness_weight": arr(torch.ones(2, 3, 1, 1)), "objectness_bias": arr(torch.zeros(2)),
                                           "deltas_weight": arr(torch.ones(8, 3, 1, 1) / 10), "deltas_bias": arr(torch.zeros(8)),
                                           "feature": arr([1.0, 0.0, 0.0]), "stride": num(16.0), "sizes": nums([32.0]),
                                           "aspect_ratios": nums([0.5, 1.0]), "convention": fixed(DETECTRON)},
        "anchors.object_answering_rpn": {"channels": whole(3), "stride": num(16.0), "sizes": nums([32.0]),
                                         "aspect_ratios": nums([0.5, 1.0]), "object_size": nums((96.0, 192.0)), "seed": whole(0)},
        "anchors.proposal_shift": {"deltas": arr([0.1, 0.0, 0.0, 0.1], optional=True), "offset": num(0.5)},
        # roi_align
        "roi_align.roi_align": {"input": arr(FEAT), "boxes": boxes(ROIS), "output_size": pair((2, 2)),
                                "spatial_scale": num(1.0), "sampling_ratio": whole(2), "aligned": flag(True)},
        "roi_align.sampling_points": {"box": boxes(BOX1), "output_size": pair((2, 2)), "feature_size": pair((8, 8)),
                                      "spatial_scale": num(1.0), "sampling_ratio": whole(2), "aligned": flag(True)},
        "roi_align.roi_pool": {"input": arr(FEAT), "boxes": boxes(ROIS), "output_size": pair((2, 2)), "spatial_scale": num(1.0)},
        "roi_align.roi_pool_bins": {"box": boxes(BOX1), "output_size": pair((2, 2)), "feature_size": pair((8, 8)),
                                    "spatial_scale": num(1.0)},
        "roi_align.assign_fpn_levels": {"boxes": boxes(BOX2), "legacy_plus_one": flag(True), "min_level": whole(2),
                                        "max_level": whole(5), "canonical_box_size": num(224.0), "canonical_level": whole(4)},
        "roi_align.convert_boxes_to_rois": {"boxes": boxes(ROIS), "n_images": whole(1)},
        "roi_align.ramp": {"size": whole(4)},
        "roi_align.roi_input_box": {"boxes": boxes(BOX2), "legacy_plus_one": flag(True)},
        "roi_align.sampling_grid_note": {"box": boxes(BOX1), "output_size": pair((2, 2)), "spatial_scale": num(1.0),
                                         "sampling_ratio": whole(-1), "aligned": flag(False)},
        "course.measured.aligned_effect_on_course_detector": {"iou": num(0.5)},
        # masks
        "masks.expanded_box_differences": {"M": whole(6), "max_coord": whole(12)},
        "masks.detectron_mask_target": {"centre": nums((4.0, 4.5)), "radius": num(2.5), "box": nums((1.0, 2.0, 7.0, 7.0)),
                                        "M": whole(6), "supersample": whole(2), "shape": choice("disc")},
        "masks.expand_boxes": {"boxes": boxes(BOX2), "scale": num(1.2)},
        "masks.detectron_paste_steps": {"mask": arr(torch.rand(4, 4, generator=torch.Generator().manual_seed(0))),
                                        "box": boxes(BOX1), "image_size_hw": pair((10, 10)), "threshold": num(0.5)},
        "masks.paste_masks": {"masks": arr(torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))),
                              "boxes": boxes(BOX2), "image_size_hw": pair((10, 12)), "threshold": num(0.5),
                              "mask_paste": choice("segm_results"), "soft": flag(True)},
        "masks.mask_iou": {"a": mask(torch.eye(4, dtype=torch.bool)), "b": mask(torch.ones(4, 4, dtype=torch.bool))},
        "masks.boundary_error": {"a": mask(torch.eye(4, dtype=torch.bool)), "b": mask(torch.ones(4, 4, dtype=torch.bool))},
        "masks.rasterize_disc": {"centre": nums((4.0, 4.5)), "radius": num(2.5), "image_size_hw": pair((9, 9)),
                                 "supersample": whole(2), "shape": choice("disc")},
        "masks.perfect_mask_prediction": {"centre": nums((4.0, 4.5)), "radius": num(2.5), "box": nums((1.0, 2.0, 7.0, 7.0)),
                                          "M": whole(6), "supersample": whole(2), "shape": choice("diamond")},
        "masks.synthetic_paste_experiment": {"sizes": nums((8.0,)), "n": whole(2), "seed": whole(0), "M": whole(6),
                                             "shape": choice("disc")},
        # labels
        "labels.background_first_to_last": {"x": arr([[0.1, 0.2, 0.3]]), "dim": whole(-1)},
        "labels.background_last_to_first": {"x": arr([[0.1, 0.2, 0.3]]), "dim": whole(1)},
        "labels.detectron_to_d2_labels": {"labels": arr([0, 1, 2]), "num_classes": whole(2)},
        "labels.d2_to_detectron_labels": {"labels": arr([0, 1, 2]), "num_classes": whole(2)},
        "labels.convert_box_predictor": {"params": fixed(pred), "background_first": flag(False), "bg_box_rows": choice("copy")},
        "labels.guess_class_order": {"params": fixed(pred)},
        "labels.coco_id_to_contiguous": {"ids": arr([1, 90])},
        "labels.contiguous_to_coco_id": {"labels": arr([0, 79])},
        "labels.synthetic_region_features": {"num_classes": whole(2), "per_class": whole(5), "dim": whole(3), "seed": whole(0),
                                             "background_fraction": num(0.5)},
        "labels.train_box_classifier": {"features": arr(torch.randn(6, 3, generator=torch.Generator().manual_seed(0))),
                                        "labels": arr([0, 1, 2, 0, 1, 2]), "num_outputs": whole(3), "steps": whole(3),
                                        "lr": num(0.1), "seed": whole(0)},
        "labels.load_into_background_last_head": {"w": arr(torch.ones(3, 2)), "b": arr(torch.zeros(3)),
                                                  "mode": choice("num_classes_off_by_one"), "seed": whole(1)},
        "labels.detectron2_loads_mask_predictor": {"weight": arr(torch.ones(4, 2, 1, 1)), "bias": arr(torch.zeros(4)),
                                                   "model_channels": whole(3), "seed": whole(0)},
        "labels.confusion_matrix": {"pred": arr([0, 1, 1]), "true": arr([0, 1, 0]), "num_labels": whole(2)},
        # training
        "training.select_post_nms_topk": {"proposals_per_image": fixed([torch.tensor(BOX2)]),
                                          "scores_per_image": fixed([torch.tensor([0.2, 0.9])]), "k": whole(1),
                                          "per_image": flag(True)},
        "training.smooth_l1": {"x": arr([-2.0, 0.05, 3.0]), "beta": num(0.5)},
        "training.smooth_l1_grad": {"x": arr([-2.0, 0.05, 3.0]), "beta": num(0.5)},
        "training.hflip_polygons": {"polygons": fixed([[1.0, 2.0, 3.0, 4.0]]), "width": num(10.0), "minus_one": flag(True)},
        "training.hflip_keypoints": {"keypoints": arr([[1.0, 2.0, 2.0], [3.0, 4.0, 1.0]]), "width": num(10.0),
                                     "flip_map": nums([1, 0]), "minus_one": flag(False), "keypoint_half_pixel": flag(True)},
        "training.keypoint_flip_indices": {"names": fixed(["left", "right"]), "flip_map": fixed({"left": "right"})},
        "training.synthetic_proposal_batch": {"n_images": whole(2), "n_proposals": whole(20), "image_size": pair((100, 120)),
                                              "seed": whole(0)},
        "training.topk_effect": {"batch": fixed(None), "k": whole(5), "positive_iou": num(0.5)},
        # deployment
        "deployment.resize_coordinate_map": {"in_size": whole(4), "out_size": whole(6), "mode": choice("align_corners")},
        "deployment.resize": {"image": arr(FEAT), "size": pair((4, 5)), "mode": choice("half_pixel"), "antialias": flag(True)},
        "deployment.naive_roi_align_via_crop_and_resize": {"features": arr(FEAT), "boxes": boxes(BOX2), "resolution": whole(2)},
        "deployment.crop_and_resize_grid": {"boxes": arr([[0.1, 0.1, 0.8, 0.9]]), "length": whole(8), "crop": whole(4),
                                            "shift": num(1.0)},
        "deployment.crop_and_resize": {"image": arr(FEAT), "boxes": arr([[0.1, 0.1, 0.8, 0.9]]), "crop_size": pair((3, 3)),
                                       "extrapolation_value": num(0.0)},
        "deployment.roi_align_box_to_crop_and_resize": {"boxes": boxes(BOX2), "feature_size": pair((8, 8)),
                                                         "crop_size": whole(4), "spatial_scale": num(0.5),
                                                         "pad_border": flag(True)},
        "deployment.roi_align_via_crop_and_resize": {"features": arr(FEAT), "boxes": boxes(BOX2), "resolution": whole(2),
                                                     "spatial_scale": num(0.5), "pad_border": flag(True)},
        "deployment.naive_crop_and_resize_boxes": {"boxes": boxes(BOX2), "feature_size": pair((8, 8)), "spatial_scale": num(0.5)},
        "deployment.crop_and_resize_positions": {"start": num(0.1), "end": num(0.8), "crop": whole(3), "length": whole(8)},
        "deployment.backbone_offsets": {"size": whole(64), "stride_in_1x1": flag(False), "padding": choice("tf_same"),
                                        "tf_pad_mode": flag(False)},
        "deployment.cv2_resize": {"image": arr(FEAT[0]), "size": Arg("pair", (4, 5), optional=True)},
        "deployment.pil_resize": {"image": arr(FEAT[0]), "size": pair((4, 5)), "vertical_first": flag(False)},
        "deployment.detectron_input_size": {"height": whole(480), "width": whole(640), "target_size": whole(800),
                                            "max_size": whole(1333)},
        "deployment.detectron2_input_size": {"height": whole(480), "width": whole(640), "short_edge": whole(800),
                                             "max_size": whole(1333)},
        "deployment.detectron_preprocess": {"image": arr(IMAGE_BGR), "target_size": whole(12), "max_size": whole(20),
                                            "pixel_means": nums((102.9801, 115.9465, 122.7717))},
        "deployment.detectron2_preprocess": {"image": arr(IMAGE_BGR), "short_edge": whole(12), "max_size": whole(20),
                                             "pixel_mean": nums((103.53, 116.28, 123.675)),
                                             "pixel_std": nums((1.0, 1.0, 1.0))},
        "deployment.same_padding": {"size": whole(9), "kernel": whole(3), "stride": whole(2)},
        "deployment.conv_output_centres": {"size": whole(9), "kernel": whole(3), "stride": whole(2), "padding": choice("tf_same")},
        # conventions
        "conventions.get_convention": {"name_or_convention": choice("detectron")},
        # checkpoint (loading and writing have their own attack suite)
        "checkpoints.checkpoint.detectron_to_detectron2_name": {"name": Arg("text", "res2_0_branch2a_w")},
        "checkpoints.checkpoint.synthetic_detectron_checkpoint": {"num_classes": whole(3), "small": flag(True), "seed": whole(0),
                                                      "momentum": flag(False)},
        "checkpoints.checkpoint.example_c4_checkpoint": {"seed": whole(0)},
        "checkpoints.checkpoint.detectron2_expected_shapes": {"num_classes": whole(3), "small": flag(True)},
        "checkpoints.checkpoint.audit": {"state_dict": fixed({"w": torch.ones(2)}), "expected": fixed({"w": [2]})},
        "checkpoints.checkpoint.convert_detectron_to_detectron2": {"blobs": fixed({"conv1_w": np.ones((2, 3, 1, 1), np.float32)})},
        "checkpoints.checkpoint.convert_detectron2_to_detectron_predictor": {
            "state_dict": fixed({"roi_heads.box_predictor.cls_score.weight": torch.ones(3, 4),
                                 "roi_heads.box_predictor.cls_score.bias": torch.zeros(3),
                                 "roi_heads.box_predictor.bbox_pred.weight": torch.ones(8, 4),
                                 "roi_heads.box_predictor.bbox_pred.bias": torch.zeros(8)}),
            "bg_box_rows": choice("zeros")},
        # pipeline, course, compare (the miniature detector)
        "course.pipeline.synthetic_scenes": {"n": whole(1), "image_size": pair((64, 64)), "seed": whole(0), "objects": pair((1, 2))},
        "course.pipeline.level_anchors": {"convention": fixed(DETECTRON2), "image_size": pair((64, 64))},
        "course.pipeline.rpn_cell_anchors": {"convention": fixed(DETECTRON2)},
        "conventions.check_convention": {"convention": fixed(DETECTRON2)},
        "course.pipeline.colour_maps": {"image": arr(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)))},
        "course.cache.run_scene": {"index": whole(0), "convention": fixed(DETECTRON2), "converted": flag(True)},
        "course.cache.detections_over_scenes": {"convention": fixed(DETECTRON2), "converted": flag(True)},
        "course.cache.reference_convention": {"hidden": fixed(["roi_aligned"])},
        "course.compare.stage_differences": {"run_a": fixed("run"), "run_b": fixed("run")},
        "course.compare.first_divergence": {"run_a": fixed("run"), "run_b": fixed("run"), "atol": num(1e-4)},
        "course.compare.compare_detections": {"a": fixed("run"), "b": fixed("run"), "iou": num(0.9)},
        "course.compare.same_label_matches": {"a": fixed("run"), "b": fixed("run"), "iou": num(0.9)},
        "course.measured.reproduced": {"reference": fixed("run"), "candidate": fixed("run"), "box_iou": num(0.99),
                                       "mask_iou_at": num(0.99)},
        # trace
        "trace.divergence.compare": {"reference": fixed({"x": torch.ones(2, 3)}), "candidate": fixed({"x": torch.ones(2, 3)}),
                          "atol": num(1e-4), "rtol": num(1e-3)},
        "trace.causes.shift_map": {"ref": arr(FEAT), "dy": num(0.5), "dx": num(-0.25)},
        "trace.causes.estimate_shift": {"ref": arr(FEAT), "cand": arr(FEAT), "search": whole(2)},
        "trace.causes.cause": {"name": choice("shift"), "strength": num(0.5), "evidence": fixed({}),
                               "explanation": fixed("moved")},
        "course.network.image_to_bgr": {"image": arr(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)))},
        "course.network.box_pooler_spec": {"boxes": boxes(BOX2), "aligned": flag(True), "sampling_ratio": whole(2)},
    }
    return s


#: Public callables that are not mutated here, and why.
EXEMPT: Dict[str, str] = {
    "boxes.legacy_plus_one_op_checks": "takes no argument",
    "export_ops.caffe2_ops_rows": "takes no argument",
    "course.cache.course_detector": "takes no argument",
    "course.cache.cache_folder": "takes no argument (reads EXPLAINER_CACHE; tests/test_course_cache.py)",
    "course.cache.fitted_detector": "fits the detector (seconds); its arguments are checked in tests/test_course_cache.py",
    "course.network.course_builder": "takes no argument",
    "checkpoints.checkpoint.load_checkpoint": "files: tests/test_attacks_checkpoint.py",
    "checkpoints.checkpoint.save_checkpoint": "files: tests/test_attacks_checkpoint.py",
    "checkpoints.checkpoint.write_detectron_pickle": "files: tests/test_attacks_checkpoint.py",
    "checkpoints.checkpoint.convert_checkpoint": "takes a loaded Checkpoint: tests/test_attacks_checkpoint.py and test_attacks_cli.py",
    "checkpoints.checkpoint.detectron_cfg_values": "reads a checkpoint's cfg text (tests/test_checkpoint.py)",
    "checkpoints.checkpoint.reorder_rpn_anchor_rows": "takes a checkpoint's tensors (tests/test_checkpoint.py)",
    "checkpoints.checkpoint.exit_on_sigterm": "a context manager: tests/test_attacks_checkpoint.py and tests/test_attacks_cli.py",
    "trace.divergence.load_dump": "files: tests/test_attacks_cli.py (trace)",
    "trace.divergence.trace_command": "files: tests/test_attacks_cli.py (trace)",
    "trace.divergence.single_thread": "a context manager without arguments",
    "trace.divergence.record": "runs a caller's module on the caller's inputs (tests/test_trace.py)",
    "trace.capture.record": "runs a caller's module on the caller's inputs (tests/test_trace.py)",
    "trace.divergence.onnx_intermediates": "runs a caller's ONNX model (tests/test_trace.py)",
    "trace.divergence.onnx_module_outputs": "reads a caller's ONNX model (tests/test_trace.py)",
    "trace.capture.onnx_intermediates": "runs a caller's ONNX model (tests/test_trace.py)",
    "trace.capture.onnx_module_outputs": "reads a caller's ONNX model (tests/test_trace.py)",
    "course.network.export_onnx": "exports a caller's module (tests/test_trace.py)",
    "course.network.set_resize_mode": "edits an ONNX model (tests/test_trace.py)",
    "course.network.onnx_stage_names": "reads an ONNX model (tests/test_trace.py)",
    "course.network.course_boxes": "takes a fitted detector and a scene (tests/test_trace.py)",
    "course.network.first_divergence_rows": "takes a CaseBuilder (tests/test_trace.py)",
    "trace.causes.fit_cause": "takes a Stage built by trace.compare, which checks its inputs",
    "trace.causes.content_region": "takes the Tensor[N, C, H, W] views of a Stage built by trace.compare",
    "trace.capture.module_path": "maps the scope names an exporter wrote (strings) to a module path "
                                 "(tests/test_trace_real.py)",
    "trace.capture.onnx_scopes": "reads a caller's ONNX model (tests/test_trace_real.py)",
    "trace.divergence.onnx_scopes": "reads a caller's ONNX model (tests/test_trace_real.py)",
    "trace.divergence.onnx_names": "reads a caller's recording and ONNX model (tests/test_trace_real.py)",
    "trace.divergence.scope_pairs": "pairs a recording with ONNX values, as trace.compare does after checking "
                                    "them (tests/test_trace_real.py)",
    "checkpoints.checkpoint.convert_torchvision_to_detectron2": "takes a loaded state dict "
                                                                "(tests/test_torchvision_conversion.py)",
    "checkpoints.checkpoint.convert_detectron2_to_torchvision": "takes a loaded state dict "
                                                                "(tests/test_torchvision_conversion.py)",
    "checkpoints.checkpoint.is_torchvision_state_dict": "takes a loaded state dict and answers yes or no "
                                                        "(tests/test_torchvision_conversion.py)",
    "trace.causes.apply_cause": "takes a Cause found by trace.compare",
    "trace.causes.same_cause": "compares two Causes",
    "course.compare.quality": "takes runs and scenes (tests/test_pipeline.py)",
    "course.measured.fingerprint_info": "takes a row of explainer.effects.DIFFERENCES (tests/test_effects.py)",
    "course.measured.measure_on_course_detector": "runs the detector over the test scenes; its scenes are checked in "
                                                  "tests/test_effects.py",
    "course.measured.compare_settings": "runs the detector over the test scenes; its scenes are checked in "
                                        "tests/test_effects.py",
    "course.measured.remaining_differences": "takes a Convention (tests/test_effects.py)",
    "course.measured.effect_points": "takes the dict of measure_on_course_detector (tests/test_effects.py)",
    "roi_align.fpn_level_of_size": "takes sizes computed from checked boxes (assign_fpn_levels, matching.residuals); NaN refused",
    "course.compare.bisect_conventions": "takes a callable (tests/test_pipeline.py)",
    "export_ops.export_roi_align_onnx": "exports a fixed module with torch's two ONNX exporters (seconds each); its "
                                        "flags and opset are checked in tests/test_deployment.py",
    "course.pipeline.fit_detector": "fits the detector (seconds); its scenes and convention are checked (tests/test_pipeline.py)",
}

#: Modules whose public callables are checked: the computations (not widgets/ or viz/). The result-file
#: diagnosis (detections, matching, diagnose, causes, inject) has its own attack suite; ``safe_load`` is the
#: checkpoint loader's (tests/test_attacks_checkpoint.py); ``cli`` is tests/test_attacks_cli.py's.
MODULES = ("pixels", "boxes", "anchors", "roi_align", "masks", "labels", "training", "deployment", "conventions",
           "checkpoints.checkpoint", "course.pipeline", "course.cache", "course.compare", "course.measured",
           "trace.divergence", "trace.causes", "trace.capture", "course.network", "export_ops")

_SPECS: Dict[str, Dict[str, Arg]] = {}


def specs() -> Dict[str, Dict[str, Arg]]:
    if not _SPECS:
        _SPECS.update(_specs())
    return _SPECS


def resolve(value: Any) -> Any:
    """Placeholders that need the course's detector are made on first use."""
    if isinstance(value, str) and value == "run":
        return _scene_run()
    return value


def call(key: str, **override: Any) -> Any:
    """Call ``module.function`` with its valid arguments, some replaced."""
    import importlib

    mod_name, fn_name = key.rsplit(".", 1)
    fn = getattr(importlib.import_module(f"explainer.{mod_name}"), fn_name)
    kwargs = {k: resolve(a.value) for k, a in specs()[key].items()}
    if key == "training.topk_effect" and kwargs.get("batch") is None:
        from explainer.training import synthetic_proposal_batch

        kwargs["batch"] = synthetic_proposal_batch(2, 20, (100, 120))
    kwargs.update(override)
    return fn(**kwargs)
