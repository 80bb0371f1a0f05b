"""How much each difference between Detectron and Detectron2 matters: one row per difference, as data.

:data:`DIFFERENCES` holds, for every difference the course covers, what each codebase does, the flag that selects
Detectron's behaviour in Detectron2 (a config key or an operator argument), the fingerprint it leaves (a cause name
of :data:`explainer.diagnosis.causes.CAUSES` or :data:`explainer.trace.causes.CAUSES`), what its authors published about its
effect on trained AP (quoted, with the repository and file), what no flag can set, and the chapter that shows it.
:func:`explainer.course.measured.measure_on_course_detector` adds the live column: how much the difference changes
the outputs of a converted model, measured on the course's miniature detector, and
:func:`explainer.course.measured.compare_settings` scores whole configurations against the original (recall,
precision, box and mask agreement, separately). This module is data and imports no tool and not the course.

The two measures answer different questions. The published figures are for models *trained* under each setting; the
live column is for a model trained under Detectron's conventions and *run* under another setting without retraining,
which is what converting a Detectron model does. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from explainer import deployment as Dep
from explainer.conventions import DETECTRON, DETECTRON2, Convention

__all__ = ["Source", "Difference", "DIFFERENCES", "PRACTITIONER", "PRACTITIONER_CONFIGS", "practitioner_config",
           "ARCHITECTURES", "DETECTRON_SAMPLING_RATIO", "check_architecture", "table_rows"]

D2_REPO = "facebookresearch/detectron2 @ 02b5c4e"
D1_REPO = "facebookresearch/Detectron @ 04155a0"
TV_REPO = "pytorch/vision @ v0.29.1"
TP_REPO = "tensorpack/tensorpack @ 1547a54"
COMPAT = "docs/notes/compatibility.md"
COMPARISONS = "configs/Detectron1-Comparisons/README.md"
D1_CONFIG = "detectron/core/config.py"


@dataclass(frozen=True)
class Source:
    """A citation: the repository (owner/name @ commit), the file, the line the quote starts on, and the quote,
    verbatim up to line breaks and indentation (a quote may run over several lines)."""

    repository: str
    file: str
    line: int
    quote: str

    @property
    def where(self) -> str:
        """Repository, file and line, as a table prints them."""
        return f"{self.repository}, {self.file}, l. {self.line}"

    def __str__(self) -> str:
        return f'{self.where}: "{self.quote}"'


@dataclass(frozen=True)
class Difference:
    """One difference between Detectron and Detectron2, self-described.

    ``key``: a short identifier; ``title``; ``detectron`` and ``detectron2``: what each does; ``flag``: the config
    key or operator argument that gives Detectron's behaviour in Detectron2 (empty when there is none);
    ``fingerprint``: a cause name of :data:`explainer.diagnosis.causes.CAUSES` (detections) or
    :data:`explainer.trace.causes.CAUSES` (a network's stages), see :func:`explainer.course.measured.fingerprint_info`; ``official_effect``:
    what the authors published about its effect on trained AP; ``source``: the citations behind it;
    ``unfixable``: what no flag sets; ``chapter``: the notebook that shows it; ``when``: ``"inference"``,
    ``"input"`` (preprocessing) or ``"training"``; ``knob``: the :class:`~explainer.conventions.Convention` knob
    that switches it in the course's detector (empty when it acts outside it); ``measures``: what the measured
    column compares when it is not the difference set to Detectron's way on a correctly converted model (a layout
    that conversion moves is measured read the wrong way); ``published_ap_change``: the change in trained AP the
    quote states, in AP points (0.0 where it calls the effect not significant, negligible or the same; None where
    it gives no figure); ``torchvision``: what
    torchvision's detectors do, and which of the two it agrees with; ``towards``: the preset whose value of ``knob``
    the live column switches Detectron2 to (``"detectron"``, or ``"torchvision"`` for torchvision's own rows, whose
    ``flag`` then gives torchvision's behaviour in Detectron2 and ``detectron`` and ``detectron2`` say what each does).
    """

    key: str
    title: str
    detectron: str
    detectron2: str
    flag: str
    fingerprint: str
    official_effect: str
    source: Tuple[Source, ...]
    unfixable: str
    chapter: str
    when: str
    knob: str = ""
    measures: str = ""
    published_ap_change: Optional[float] = None
    torchvision: str = ""
    towards: str = "detectron"


DIFFERENCES: Tuple[Difference, ...] = (
    Difference(
        key="legacy_plus_one", title='"+1" box widths: regression, clipping, size filter and NMS',
        detectron="width = x2 - x1 + 1 in box encoding and decoding, clipping to W - 1, the minimum-size filter and "
                  "NMS areas; NMS suppresses at IoU >= threshold; RoIAlign receives the inclusive box [x1, x2] as if "
                  "it were continuous, so the pooled region is one pixel narrower than the object",
        detectron2="width = x2 - x1, clipping to W; torchvision's NMS suppresses at IoU > threshold",
        flag="legacy_plus_one=True on Caffe2's GenerateProposals, BBoxTransform, BoxWithNMSLimit and "
             "DistributeFpnProposals (Detectron2's own PyTorch modules have no such option)",
        fingerprint="plus_one",
        official_effect='No figure for the box coding; on NMS the compatibility notes say "The effect here is very '
                        'negligible, though."',
        source=(Source(D2_REPO, COMPAT, 21, "non-maximum suppression. The effect here is very negligible, though."),),
        unfixable="Detectron2's Box2BoxTransform, Boxes.clip, nonempty and batched_nms cannot be told to add 1: a "
                  "converted model decodes, clips and suppresses without the +1 unless it runs through Caffe2 "
                  "operators with legacy_plus_one; and its ROIPooler pools the continuous box [x1, x2 + 1], one pixel "
                  "more on the right and bottom than the Detectron model's heads were trained on",
        chapter="02_boxes_iou_regression_nms.ipynb", when="inference", knob="legacy_plus_one",
        published_ap_change=0.0),
    Difference(
        key="anchor_offset", title="Anchor centres: half a stride or the grid point",
        detectron="cell anchors centred at (stride - 1) / 2 in pixel indices: stride / 2 in continuous coordinates",
        detectron2="MODEL.ANCHOR_GENERATOR.OFFSET = 0.0: centred on the grid point",
        flag="MODEL.ANCHOR_GENERATOR.OFFSET: 0.5",
        fingerprint="inference_difference",
        official_effect='For models trained with either value: "The value is not expected to affect model accuracy."',
        source=(Source(D2_REPO, "detectron2/config/defaults.py", 193,
                       "Recommend to use 0.5, which means half stride. The value is not expected to affect model "
                       "accuracy."),),
        unfixable="nothing: OFFSET 0.5 puts the centres where Detectron's are",
        chapter="03_anchors.ipynb", when="inference", knob="anchor_offset",
        published_ap_change=0.0),
    Difference(
        key="anchor_rounding", title="Anchor sizes rounded to whole pixels",
        detectron="_ratio_enum rounds widths and heights (np.round): slightly different areas per aspect ratio",
        detectron2="exact sizes (DefaultAnchorGenerator)",
        flag="",
        fingerprint="inference_difference",
        official_effect='For the two anchor generators as a whole (offset and rounding), trained each: "They yield the '
                        'same AP".',
        source=(Source(D2_REPO, "detectron2/modeling/anchor_generator.py", 197,
                       "This is different from the anchor generator defined in the original Faster R-CNN code or "
                       "Detectron. They yield the same AP"),),
        unfixable="DefaultAnchorGenerator has no rounding option: a converted model keeps Detectron2's exact anchor "
                  "sizes unless the cell anchors are replaced by hand",
        chapter="03_anchors.ipynb", when="inference", knob="anchor_rounding",
        published_ap_change=0.0),
    Difference(
        key="anchor_order", title="Order of the RPN's anchor rows: ratio-major or size-major",
        detectron="generate_anchors: for each ratio, every size (_ratio_enum, then _scale_enum)",
        detectron2="generate_cell_anchors: for each size, every ratio",
        flag="none: the rows are permuted when converting (the course's convert_detectron_to_detectron2 with "
             "reorder_anchors=True, the default of explainer convert); Detectron2's loader does not",
        fingerprint="channel_permutation",
        official_effect="No figure: rows in the wrong order are a wrong model, not a small effect.",
        source=(Source(D1_REPO, "detectron/modeling/generate_anchors.py", 73,
                       "anchors = _ratio_enum(anchor, aspect_ratios)"),
                Source(D2_REPO, "detectron2/checkpoint/c2_model_loading.py", 112,
                       'k.replace("rpn.cls.logits", "proposal_generator.rpn_head.objectness_logits")')),
        unfixable="Detectron2's loader (convert_c2_detectron_names) renames the RPN weights without reordering "
                  "their rows: with several sizes per level (Detectron's C4 configs: 5 sizes x 3 ratios) most rows "
                  "land on another anchor shape; the rows must be permuted when converting, as the course's "
                  "converter does (explainer convert; FPN levels have one size each and are unaffected)",
        measures="the RPN's rows read in Detectron's order, as Detectron2's loader leaves them",
        chapter="03_anchors.ipynb", when="inference", knob="anchor_order"),
    Difference(
        key="roi_aligned", title="ROIAlign's half-pixel shift",
        detectron="ROIAlign without the shift (aligned=False); RoIs forced to at least 1 x 1",
        detectron2="POOLER_TYPE ROIAlignV2: boxes shifted by -0.5 after scaling (aligned=True), no minimum size",
        flag="MODEL.ROI_BOX_HEAD.POOLER_TYPE, ROI_MASK_HEAD.POOLER_TYPE, ROI_KEYPOINT_HEAD.POOLER_TYPE: ROIAlign",
        fingerprint="shift",
        official_effect='For trained models: "Use ROIAlignV2. This does not significantly affect AP."; the minimum '
                        'size: "should be negligible".',
        source=(Source(D2_REPO, COMPARISONS, 12, "Use `ROIAlignV2`. This does not significantly affect AP."),
                Source(D2_REPO, COMPAT, 44, "This will lead to tiny differences in the output, but should be "
                                        "negligible.")),
        unfixable="nothing: POOLER_TYPE ROIAlign is Detectron's operator (aligned=False)",
        chapter="04_roialign.ipynb", when="inference", knob="roi_aligned",
        published_ap_change=0.0),
    Difference(
        key="sampling_ratio", title="ROIAlign's sampling points per bin",
        detectron="ROI_XFORM_SAMPLING_RATIO = 0 by default (core/config.py: adaptive, as in Detectron2), which the "
                  "C4 configs of configs/12_2017_baselines keep; the FPN configs set 2 (2 x 2 points per bin)",
        detectron2="POOLER_SAMPLING_RATIO = 0: ceil(roi / output) points per bin",
        flag="MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO, ROI_MASK_HEAD..., ROI_KEYPOINT_HEAD...: 2 for a converted "
             "FPN model; a C4 model keeps the default 0",
        fingerprint="inference_difference",
        official_effect='For trained models: "This does not significantly affect AP."; for a Detectron2 model run '
                        'with 2 instead of 0 (tensorpack\'s conversion): "the final AP may be different by <0.5".',
        source=(Source(D2_REPO, COMPARISONS, 11, "Use `POOLER_SAMPLING_RATIO=0` instead of 2. This does not "
                                             "significantly affect AP."),
                Source(TP_REPO, "examples/FasterRCNN/convert_d2/README.md", 44,
                       "The results are quite similar, and the final AP may be different by <0.5."),
                Source(D1_REPO, D1_CONFIG, 673, "__C.FAST_RCNN.ROI_XFORM_SAMPLING_RATIO = 0"),
                Source(D1_REPO, "configs/12_2017_baselines/e2e_mask_rcnn_R-50-FPN_1x.yaml", 23,
                       "ROI_XFORM_SAMPLING_RATIO: 2")),
        unfixable="nothing: POOLER_SAMPLING_RATIO takes the value the Detectron config used (2 in the FPN configs, "
                  "0 in the C4 ones)",
        chapter="04_roialign.ipynb", when="inference", knob="sampling_ratio",
        published_ap_change=0.0),
    Difference(
        key="background_first", title="Where the background class sits",
        detectron="label 0 is background, classes 1..K",
        detectron2="classes 0..K-1, label K is background",
        flag="none: converting moves the layout (convert_c2_detectron_names puts cls_score's background row last "
             "and drops the background rows of bbox_pred and mask_fcn_logits)",
        measures="the converted weights read as if the background were still first, as when the conversion is "
                 "skipped or done twice",
        fingerprint="label_offset",
        official_effect="No figure: a layout, converted exactly.",
        source=(Source(D2_REPO, "detectron2/checkpoint/c2_model_loading.py", 199,
                       "new_weights[renamed] = torch.cat([weights[orig][1:], weights[orig][:1]])"),),
        unfixable="a class-agnostic Detectron mask head has one channel, which the converter's w[1:] removes: "
                  "Detectron2 then refuses the empty tensor with a warning and keeps a randomly initialised mask "
                  "predictor",
        chapter="05_class_label_order.ipynb", when="inference", knob="background_first"),
    Difference(
        key="mask_paste", title="Pasting the mask into the image",
        detectron="core/test.py:segm_results: pad by one cell, expand the box by (M+2)/M, truncate to integers, "
                  "OpenCV bilinear resize, > 0.5, all in float32",
        detectron2="layers/mask_ops.py:paste_masks_in_image: sample the mask at every pixel centre "
                   "(grid_sample), >= 0.5",
        flag="",
        fingerprint="mask_paste",
        official_effect='"can improve mask AP on COCO by ~0.5% absolute"; the Detectron1-Comparisons Mask R-CNN, '
                        'trained with ROIAlign and sampling ratio 2, is "1 AP better in mask AP, due to more correct '
                        'implementation" (34.9 against Detectron\'s 33.9), a gain the README does not split.',
        source=(Source(D2_REPO, COMPAT, 48, "This change can improve mask AP on COCO by ~0.5% absolute."),
                Source(D2_REPO, COMPARISONS, 81, "We're 1 AP better in mask AP, due to more correct implementation."),
                Source(D2_REPO, COMPARISONS, 68, '<td align="center">34.9</td>')),
        unfixable="no config key selects Detectron's paste (layers/mask_ops.py keeps paste_mask_in_image_old, with "
                  "PIL instead of OpenCV, to call by hand); and a Detectron-trained head learned masks on inclusive "
                  "boxes (roi_data/mask_rcnn.py, utils/segms.py:polys_to_mask_wrt_box with w = x2 - x1)",
        chapter="06_mask_paste.ipynb", when="inference", knob="mask_paste",
        published_ap_change=0.5),
    Difference(
        key="pixel_mean", title="The pixel mean subtracted from the input",
        detectron="PIXEL_MEANS = [102.9801, 115.9465, 122.7717] (BGR), no std",
        detectron2="MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675] (BGR), PIXEL_STD [1, 1, 1]",
        flag="MODEL.PIXEL_MEAN: [102.9801, 115.9465, 122.7717]",
        fingerprint="channel_affine",
        official_effect="No figure. Detectron's config: \"We use the same pixel mean for all networks even though "
                        "it's not exactly what they were trained with\".",
        source=(Source(D1_REPO, "detectron/core/config.py", 949,
                       "We use the same pixel mean for all networks even though it's not exactly what they were "
                       "trained with"),
                Source(D2_REPO, "detectron2/config/defaults.py", 41,
                       "Default values are the mean pixel value from ImageNet: [103.53, 116.28, 123.675]")),
        unfixable="nothing: MODEL.PIXEL_MEAN takes Detectron's values",
        chapter="08_deployment_caffe2_onnx_tensorflow.ipynb", when="input"),
    Difference(
        key="input_resize", title="Resizing the input image",
        detectron="utils/blob.py:prep_im_for_blob: mean subtracted first, float32, cv2.resize with fx = im_scale "
                  "(sizes rounded half to even)",
        detectron2="ResizeShortestEdge: PIL BILINEAR on the uint8 image (antialiased when shrinking), mean "
                   "subtracted later; sizes rounded half up",
        flag="",
        fingerprint="numerical_noise",
        official_effect="No figure.",
        source=(Source(D1_REPO, "detectron/utils/blob.py", 117,
                       "im = cv2.resize( im, None, None, fx=im_scale, fy=im_scale, interpolation=cv2.INTER_LINEAR )"),
                Source(D2_REPO, "detectron2/data/transforms/transform.py", 122,
                       "pil_image = pil_image.resize((self.new_w, self.new_h), interp_method)")),
        unfixable="ResizeTransform resizes uint8 images with PIL after rounding to uint8; the filter, the rounding "
                  "and the .5-tie sizes are not configurable (a custom transform is)",
        chapter="08_deployment_caffe2_onnx_tensorflow.ipynb", when="input"),
    Difference(
        key="channel_order", title="Channel order of the input",
        detectron="BGR (cv2.imread)",
        detectron2='BGR too: INPUT.FORMAT = "BGR" (PIL reads RGB and the channels are flipped)',
        flag='INPUT.FORMAT: "BGR"',
        fingerprint="channel_permutation",
        official_effect="No figure: a swapped order is a wrong input.",
        source=(Source(D2_REPO, "detectron2/config/defaults.py", 84, '_C.INPUT.FORMAT = "BGR"'),),
        unfixable="nothing, as long as the image reaches the model in the order its first layer was trained on",
        chapter="08_deployment_caffe2_onnx_tensorflow.ipynb", when="input"),
    Difference(
        key="pixel_mean_order", title="The order of PIXEL_MEAN in another framework's config",
        detectron="(BGR in both Detectron and Detectron2)",
        detectron2="tensorpack's PREPROC.PIXEL_MEAN is in RGB order: convert_d2 reverses Detectron2's",
        flag="PREPROC.PIXEL_MEAN (tensorpack): cfg.MODEL.PIXEL_MEAN[::-1]",
        fingerprint="channel_affine",
        official_effect="No figure.",
        source=(Source(TP_REPO, "examples/FasterRCNN/convert_d2/convert_d2.py", 25,
                       'ret.append(("PREPROC.PIXEL_MEAN", cfg.MODEL.PIXEL_MEAN[::-1]))'),),
        unfixable="nothing: reverse the mean when the config's order differs",
        chapter="08_deployment_caffe2_onnx_tensorflow.ipynb", when="input"),
    Difference(
        key="post_nms_topk_train", title="RPN proposals kept in training: per batch or per image",
        detectron="TRAIN.RPN_POST_NMS_TOP_N 2000: for the whole batch with FPN (collect_and_distribute_fpn_rpn_proposals), "
                  "per image in C4's GenerateProposals",
        detectron2="MODEL.RPN.POST_NMS_TOPK_TRAIN per image (1000 in Base-RCNN-FPN.yaml)",
        flag="MODEL.RPN.POST_NMS_TOPK_TRAIN (the Keypoint R-CNN comparison config uses 1500 per image)",
        fingerprint="identical",
        official_effect="Keypoint R-CNN box AP 53.6 (Detectron) against 53.1 (Detectron2, keypoint AP 64.2 in both); "
                        '"1000 proposals per-image is found to hurt box AP. Therefore we increase it to 1500 '
                        'per-image."',
        source=(Source(D2_REPO, COMPARISONS, 78, "Keypoint R-CNN: Detectron's AP is box 53.6, keypoint 64.2."),
                Source(D2_REPO, COMPARISONS, 55, '<td align="center">53.1</td> <td align="center"></td> '
                                                 '<td align="center">64.2</td>'),
                Source(D2_REPO, "configs/Detectron1-Comparisons/keypoint_rcnn_R_50_FPN_1x.yaml", 22,
                       "1000 proposals per-image is found to hurt box AP. Therefore we increase it to 1500 "
                       "per-image."),
                Source(D2_REPO, COMPAT, 56, "The fix may lead to a small accuracy drop for a few models (e.g. keypoint "
                                        "detection)")),
        unfixable="a per-batch budget: Detectron2 counts per image",
        chapter="07_training_differences.ipynb", when="training", knob="post_nms_topk_per_image",
        published_ap_change=round(53.6 - 53.1, 1)),
    Difference(
        key="smooth_l1", title="Box regression loss: smooth L1 or L1",
        detectron="smooth L1, beta 1/9 (RPN) and 1 (box head)",
        detectron2="L1: MODEL.RPN.SMOOTH_L1_BETA = 0.0, ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0",
        flag="MODEL.RPN.SMOOTH_L1_BETA: 0.1111, MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA: 1.0",
        fingerprint="identical",
        official_effect='"this tends to slightly decrease box AP50 while improving box AP for higher overlap '
                        'thresholds (and leading to a slight overall improvement in box AP)"',
        source=(Source(D2_REPO, COMPAT, 59, "We have observed that this tends to slightly decrease box AP50 while "
                                        "improving box AP for higher overlap thresholds"),),
        unfixable="nothing",
        chapter="07_training_differences.ipynb", when="training", knob="rpn_smooth_l1_beta"),
    Difference(
        key="hflip", title="Horizontal flip augmentation",
        detectron="x -> W - 1 - x (pixel indices)",
        detectron2="x -> W - x (continuous coordinates; keypoints are indices + 0.5)",
        flag="",
        fingerprint="flip_off_by_one",
        official_effect='No figure; the notes say the coordinate interpretation "affects how flip augmentation is '
                        'implemented".',
        source=(Source(D2_REPO, COMPAT, 64, "Note that this affects how flip augmentation is implemented."),),
        unfixable="HFlipTransform flips continuous coordinates; there is no option for W - 1 - x",
        chapter="07_training_differences.ipynb", when="training", knob="hflip_minus_one"),
    Difference(
        key="retinanet", title="RetinaNet: its weights' names, sigmoid classes, anchor order and box loss",
        detectron="retnet_* blobs, stored once at the finest level (_fpn3) and shared by the others, and fpn_6, fpn_7 "
                  "from res5; sigmoid classes, A x K channels with no background row, whose bias starts at "
                  "-log((1 - p) / p) (RETINANET.PRIOR_PROB 0.01); octave-major cell anchors; smooth L1 with "
                  "RETINANET.BBOX_REG_BETA = 0.11",
        detectron2="RetinaNetHead: head.cls_subnet, head.bbox_subnet, head.cls_score, head.bbox_pred, and "
                   "backbone.top_block.p6, p7; the same sigmoid classes and prior bias; size-major cell anchors, the "
                   "same order; MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.1, set to 0.0 (L1) by Base-RetinaNet.yaml",
        flag="none for the weights: rename them before loading (explainer convert maps retnet_* and fpn_6, fpn_7); "
             "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA: 0.11 for Detectron's loss when training",
        fingerprint="inference_difference",
        official_effect="No figure.",
        source=(Source(D1_REPO, "detectron/modeling/retinanet_heads.py", 121,
                       "weight='retnet_cls_conv_n{}_fpn{}_w'.format(nconv, k_min),"),
                Source(D2_REPO, "detectron2/modeling/meta_arch/retinanet.py", 397,
                       "bias_value = -(math.log((1 - prior_prob) / prior_prob))"),
                Source(D1_REPO, "detectron/core/test_retinanet.py", 54, "for octave in range(scales_per_octave):"),
                Source(D1_REPO, D1_CONFIG, 525, "__C.RETINANET.BBOX_REG_BETA = 0.11"),
                Source(D2_REPO, "detectron2/config/defaults.py", 468, "_C.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.1"),
                Source(D2_REPO, "configs/Base-RetinaNet.yaml", 14, "SMOOTH_L1_LOSS_BETA: 0.0")),
        unfixable="Detectron2's loader (convert_c2_detectron_names) has no rule for retnet_* or fpn_6, fpn_7: a "
                  "Detectron RetinaNet checkpoint loads without its head and extra levels, which keep their "
                  "initialisation, unless it is renamed first (the course's converter does)",
        chapter="09_checkpoint_audit.ipynb", when="inference"),
    Difference(
        key="keypoint_half_pixel", title="Keypoints: pixel indices or continuous coordinates",
        detectron="annotations stay pixel indices (heatmap targets floor(index)); heatmaps_to_keypoints decodes a "
                  "cell d as d + 0.5, and the COCO writer writes that value unchanged",
        detectron2="+0.5 when COCO keypoints are loaded, the same d + 0.5 in decoding, -0.5 when results are "
                   "written (COCOEvaluator's instances_to_coco_json)",
        flag="",
        fingerprint="keypoint_half_pixel",
        official_effect="No figure.",
        source=(Source(D2_REPO, COMPAT, 62, "The coordinates in COCO keypoint annotations are interpreted as pixel "
                                        "indices in range `[0, width - 1]` or `[0, height - 1]`."),
                Source(D1_REPO, "detectron/utils/keypoints.py", 150, "x = (x_int + 0.5) * width_correction"),
                Source(D2_REPO, "detectron2/evaluation/coco_evaluation.py", 448, "keypoints[k][:, :2] -= 0.5")),
        unfixable="the writers: the same heatmap gives exported keypoints 0.5 px apart (Detectron's 0.5 px further "
                  "right and down); and Detectron's keypoint head upsamples with a fixed bilinear ConvTranspose "
                  "(kps_score) where Detectron2's calls interpolate, which differ on the heatmap's border",
        chapter="01_pixels_and_coordinates.ipynb", when="inference", knob="keypoint_half_pixel"),
    Difference(
        key="tv_anchor_corners", title="torchvision: anchors with rounded corners, ratio-major",
        detectron="sizes rounded (np.round in _ratio_enum), ratio-major rows, centres half a stride in",
        detectron2="exact sizes, size-major rows, OFFSET 0.0",
        torchvision="AnchorGenerator.generate_anchors: corners +-w/2, +-h/2 rounded, so every side is even; "
                    "ratio-major rows as in Detectron; grid from 0 as in Detectron2",
        flag="",
        fingerprint="inference_difference",
        official_effect="No published figure isolates it.",
        source=(Source(TV_REPO, "torchvision/models/detection/anchor_utils.py", 74, "return base_anchors.round()"),),
        unfixable="DefaultAnchorGenerator has no rounding; converted RPN rows also need the ratio-major order",
        chapter="13_torchvision_detectors.ipynb", when="inference", knob="anchor_round_corners", towards="torchvision"),
    Difference(
        key="tv_roi_pooling", title="torchvision: MultiScaleRoIAlign without the half pixel",
        detectron="ROIAlign (no -0.5), sampling ratio 2, level floor(4 + log2(sqrt(area + 1) / 224 + 1e-6))",
        detectron2="ROIAlignV2 (-0.5), adaptive sampling, level floor(4 + log2(sqrt(area) / 224 + 1e-8))",
        torchvision="roi_align with aligned=False and sampling_ratio=2, as Detectron; LevelMapper adds its eps "
                    "after the logarithm and has no +1, as Detectron2 in effect",
        flag="MODEL.ROI_*_HEAD.POOLER_TYPE: ROIAlign, POOLER_SAMPLING_RATIO: 2",
        fingerprint="shift",
        official_effect="No published figure isolates it.",
        source=(Source(TV_REPO, "torchvision/models/detection/faster_rcnn.py", 251,
                       'box_roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7, '
                       'sampling_ratio=2)'),
                Source(TV_REPO, "torchvision/ops/poolers.py", 82,
                       "target_lvls = torch.floor(self.lvl0 + torch.log2(s / self.s0) + torch.tensor(self.eps, "
                       "dtype=s.dtype))")),
        unfixable="nothing for the pooling itself: the config keys give torchvision's ROIAlign",
        chapter="13_torchvision_detectors.ipynb", when="inference", knob="roi_aligned", towards="torchvision"),
    Difference(
        key="tv_mask_paste", title="torchvision: Detectron's mask paste on continuous boxes",
        detectron="segm_results: pad 1, expand, int box, size x2 - x1 + 1 on inclusive boxes, > 0.5",
        detectron2="paste_masks_in_image: grid_sample at pixel centres, >= 0.5",
        torchvision="roi_heads.paste_masks_in_image(padding=1): Detectron's steps (bilinear F.interpolate, no "
                    "threshold) on continuous boxes, so the pasted mask is one pixel wider and taller",
        flag="",
        fingerprint="mask_paste",
        official_effect="No published figure isolates it.",
        source=(Source(TV_REPO, "torchvision/models/detection/roi_heads.py", 486,
                       "def paste_masks_in_image(masks, boxes, img_shape, padding=1):"),),
        unfixable="Detectron2 has no option for the padded paste",
        chapter="13_torchvision_detectors.ipynb", when="inference", knob="mask_paste", towards="torchvision"),
    Difference(
        key="tv_labels", title="torchvision: label 0 is the background, labels are COCO ids",
        detectron="label 0 is the background, labels 1..80 contiguous",
        detectron2="label K is the background, labels 0..79 contiguous",
        torchvision="label 0 is the background (the predictor's first row, dropped in postprocess_detections); "
                    "the COCO weights predict 91 ids with gaps, the COCO category ids themselves",
        flag="",
        fingerprint="label_offset",
        official_effect="No figure: the wrong order makes every class another one.",
        source=(Source(TV_REPO, "torchvision/models/detection/roi_heads.py", 709,
                       "remove predictions with the background label"),),
        unfixable="conversion moves the rows; the 91 ids need a map to Detectron2's 80 contiguous ones",
        chapter="13_torchvision_detectors.ipynb", when="inference", knob="background_first", towards="torchvision"),
    Difference(
        key="tv_input", title="torchvision: RGB in [0, 1] with ImageNet's mean and std",
        detectron="BGR 0..255 minus PIXEL_MEANS, no std",
        detectron2="BGR 0..255 minus PIXEL_MEAN, divided by PIXEL_STD (1 for the MSRA weights)",
        torchvision="GeneralizedRCNNTransform: RGB floats in [0, 1], (x - [0.485, 0.456, 0.406]) / "
                    "[0.229, 0.224, 0.225] inside the model",
        flag='INPUT.FORMAT: "RGB", MODEL.PIXEL_MEAN: [123.675, 116.28, 103.53], MODEL.PIXEL_STD: '
             "[58.395, 57.12, 57.375] (ImageNet's, times 255)",
        fingerprint="channel_affine",
        official_effect="No published figure isolates it.",
        source=(Source(TV_REPO, "torchvision/models/detection/faster_rcnn.py", 278,
                       "image_mean = [0.485, 0.456, 0.406]"),),
        unfixable="nothing: the config keys express torchvision's normalisation on 0..255 inputs",
        chapter="13_torchvision_detectors.ipynb", when="input", knob="", towards="torchvision"),
    Difference(
        key="tv_resize", title="torchvision: resizing with F.interpolate",
        detectron="OpenCV's bilinear on the float image, sides rounded half to even",
        detectron2="PIL's bilinear on uint8 (antialiased when shrinking), sides rounded half up",
        torchvision="F.interpolate(bilinear, align_corners=False) on the normalised float image, no antialias, "
                    "sides floor(side * scale)",
        flag="",
        fingerprint="numerical_noise",
        official_effect="No published figure isolates it.",
        source=(Source(TV_REPO, "torchvision/models/detection/transform.py", 69, 'mode="bilinear",'),),
        unfixable="ResizeShortestEdge has no option for torch's interpolation or its rounding",
        chapter="13_torchvision_detectors.ipynb", when="input", knob="", towards="torchvision"),
    Difference(
        key="tv_smooth_l1", title="torchvision: smooth L1 with beta 1/9 in both heads",
        detectron="beta 1/9 in the RPN, 1.0 in the box head",
        detectron2="L1 (beta 0) in both",
        torchvision="beta 1/9 in the RPN and in fastrcnn_loss",
        flag="MODEL.RPN.SMOOTH_L1_BETA and MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA: 0.1111",
        fingerprint="identical",
        official_effect="No published figure isolates it.",
        source=(Source(TV_REPO, "torchvision/models/detection/roi_heads.py", 48, "beta=1 / 9,"),),
        unfixable="nothing: both keys take the value",
        chapter="13_torchvision_detectors.ipynb", when="training", knob="box_smooth_l1_beta", towards="torchvision"),
)

#: The two architectures of Detectron's baselines (``configs/12_2017_baselines``) whose converted settings differ:
#: ``"C4"`` (a ResNet conv4 body and the conv5 head on pooled features) and ``"FPN"`` (feature pyramid).
ARCHITECTURES: Tuple[str, ...] = ("C4", "FPN")
#: Detectron's ``ROI_XFORM_SAMPLING_RATIO`` (``FAST_RCNN``, ``MRCNN`` and ``KRCNN`` alike) per architecture:
#: ``detectron/core/config.py`` sets 0 (adaptive: ceil(roi / output) samples per bin side), which the C4 baselines
#: keep; every FPN baseline of ``configs/12_2017_baselines`` that pools sets 2.
DETECTRON_SAMPLING_RATIO: Dict[str, int] = {"C4": 0, "FPN": 2}


def check_architecture(architecture: Any) -> str:
    """``"C4"`` or ``"FPN"`` (case-insensitive); otherwise a ``ValueError`` naming the argument."""
    if isinstance(architecture, str) and architecture.strip().upper() in ARCHITECTURES:
        return architecture.strip().upper()
    raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")


def practitioner_config(architecture: str) -> Dict[str, Any]:
    """The settings a practitioner gives Detectron2 for a converted Detectron model of ``architecture`` (``"C4"`` or
    ``"FPN"``), as config keys: Detectron's anchor centres, ROIAlign without the half-pixel shift, the sampling ratio
    the Detectron config used (:data:`DETECTRON_SAMPLING_RATIO`: 0 for C4, 2 for FPN) and Detectron's pixel means."""
    ratio = DETECTRON_SAMPLING_RATIO[check_architecture(architecture)]
    out: Dict[str, Any] = {"MODEL.ANCHOR_GENERATOR.OFFSET": 0.5}
    for head in ("BOX", "MASK", "KEYPOINT"):
        out[f"MODEL.ROI_{head}_HEAD.POOLER_TYPE"] = "ROIAlign"
        out[f"MODEL.ROI_{head}_HEAD.POOLER_SAMPLING_RATIO"] = ratio
    out["MODEL.PIXEL_MEAN"] = list(Dep.DETECTRON_PIXEL_MEANS)
    out["MODEL.PIXEL_STD"] = [1.0, 1.0, 1.0]
    return out


#: :func:`practitioner_config` for each architecture.
PRACTITIONER_CONFIGS: Dict[str, Dict[str, Any]] = {a: practitioner_config(a) for a in ARCHITECTURES}
#: The same settings as a :class:`~explainer.conventions.Convention` of the course's detector: Detectron's anchor
#: centres and ROIAlign, and the sampling ratio the detector was fitted with (:data:`DETECTRON`'s 2, the FPN
#: configs' value). It has no pixel mean: its input is already centred the way it was fitted.
PRACTITIONER: Convention = DETECTRON2.replace(anchor_offset=DETECTRON.anchor_offset, roi_aligned=DETECTRON.roi_aligned,
                                              sampling_ratio=DETECTRON.sampling_ratio,
                                              name="detectron2, converted-model settings")


def table_rows(measured: Optional[Mapping[str, Mapping[str, Any]]] = None) -> List[List[str]]:
    """The table as text rows: difference, measured on the course's converted detector, published effect on trained
    AP (with its source), the flag, what no flag sets, chapter. ``measured``: from :func:`measure_on_course_detector`
    (left out: that column says so)."""
    rows = []
    for d in DIFFERENCES:
        m = (measured or {}).get(d.key)
        if d.when == "training":
            live = "none: training only (a converted model's weights are already trained)"
        elif m is None:
            live = {"keypoint_half_pixel": "not measured on the course's detector (it has no keypoints)",
                    "retinanet": "not measured on the course's detector (a two-stage detector)"}.get(d.key,
                                                                                                 "not measured")
        else:
            live = (f"{d.measures}: " if d.measures else "") + (
                    f"boxes {m['boxes']:.0%}, masks {m['masks']:.0%} of {m['detections']} detections reproduced "
                    f"(mean IoU {m['mean_box_iou']:.3f} / {m['mean_mask_iou']:.3f}); recall {m['recall'][0]:.2f} -> "
                    f"{m['recall'][1]:.2f}, precision {m['precision'][0]:.2f} -> {m['precision'][1]:.2f}")
        official = d.official_effect + " [" + "; ".join(s.where for s in d.source) + "]"
        rows.append([d.title, live, official, d.flag or "(none)", d.unfixable, d.chapter])
    return rows
