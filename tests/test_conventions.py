"""The presets and knobs of explainer.conventions."""

from __future__ import annotations

import dataclasses

import pytest

from explainer.conventions import DETECTRON, DETECTRON2, KNOB_DOCS, MASK_PASTES, TORCHVISION, Convention, get_convention

#: The knobs torchvision's preset needed: Detectron and Detectron2 share their values.
TORCHVISION_ONLY = {"anchor_round_corners", "input_format", "input_scale", "image_std"}


def test_presets_differ_in_every_knob_but_none_else():
    diff = DETECTRON.diff(DETECTRON2)
    assert set(diff) == set(DETECTRON.knobs()) - TORCHVISION_ONLY
    assert TORCHVISION_ONLY <= set(TORCHVISION.diff(DETECTRON2))
    assert diff["legacy_plus_one"] == (True, False)
    assert diff["anchor_offset"] == (0.5, 0.0)


def test_every_knob_is_documented():
    assert set(KNOB_DOCS) == set(DETECTRON.knobs())


def test_replace_one_knob_and_name_it():
    c = DETECTRON2.replace(legacy_plus_one=True)
    assert c.legacy_plus_one and not DETECTRON2.legacy_plus_one
    assert c.diff(DETECTRON2) == {"legacy_plus_one": (True, False)}
    assert "legacy_plus_one=True" in c.name
    assert c.pooler_type == "ROIAlignV2" and DETECTRON.pooler_type == "ROIAlign"
    assert DETECTRON2.replace().name == "detectron2"


def test_derived_views_follow_the_knobs():
    assert DETECTRON.nms_suppresses_ties and not DETECTRON2.nms_suppresses_ties
    assert DETECTRON.clip_max_offset == 1 and DETECTRON2.clip_max_offset == 0


def test_one_mapping_joins_the_knobs_to_the_operators_flags():
    from explainer.conventions import OPERATOR_FLAGS

    # each operator flag is fed by exactly one knob, and every target is a real field
    assert len(set(OPERATOR_FLAGS.values())) == len(OPERATOR_FLAGS)
    assert set(OPERATOR_FLAGS.values()) <= set(DETECTRON.knobs())
    for conv in (DETECTRON, DETECTRON2, DETECTRON2.replace(roi_aligned=False, anchor_offset=0.25, hflip_minus_one=True)):
        flags = conv.operator_flags()
        assert flags == {"legacy_plus_one": conv.legacy_plus_one, "aligned": conv.roi_aligned,
                         "sampling_ratio": conv.sampling_ratio, "offset": conv.anchor_offset,
                         "minus_one": conv.hflip_minus_one}
        assert conv.operator_flag("aligned") is conv.roi_aligned
    assert DETECTRON.operator_flags("aligned", "offset", "minus_one") == {"aligned": False, "offset": 0.5, "minus_one": True}
    assert DETECTRON2.operator_flags("aligned", "offset", "minus_one") == {"aligned": True, "offset": 0.0, "minus_one": False}
    with pytest.raises(ValueError, match="flags must be operator flags"):
        DETECTRON2.operator_flags("roi_aligned")


def test_one_name_per_knob_in_each_layer():
    # the bundle has no second name for a knob, and replace() names the knob to use for an operator's flag
    for twin in ("aligned", "offset", "minus_one"):
        assert not hasattr(DETECTRON2, twin), twin
    with pytest.raises(ValueError, match=r"aligned is an operator's flag; the Convention's knob for it is roi_aligned"):
        DETECTRON2.replace(aligned=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DETECTRON2.anchor_offset = 0.5  # type: ignore[misc]


def test_the_operators_take_the_flags_the_mapping_gives():
    # every operator flag is a keyword of a real function of the package, under that exact name
    import inspect

    from explainer import anchors as A
    from explainer import boxes as B
    from explainer import pixels
    from explainer import roi_align as R

    takes = {"legacy_plus_one": B.pairwise_iou, "aligned": R.roi_align, "sampling_ratio": R.roi_align,
             "offset": A.grid_anchors, "minus_one": pixels.hflip_boxes}
    from explainer.conventions import OPERATOR_FLAGS

    assert set(takes) == set(OPERATOR_FLAGS)
    for flag, fn in takes.items():
        assert flag in inspect.signature(fn).parameters, (flag, fn.__name__)


def test_mask_paste_is_named_after_the_original_functions():
    assert DETECTRON.mask_paste == "segm_results" and DETECTRON2.mask_paste == "paste_masks_in_image"
    assert set(MASK_PASTES) == {"segm_results", "paste_masks_in_image"}


@pytest.mark.parametrize(
    "knobs, needle",
    [
        ({"anchor_offset": 1.0}, "anchor_offset must be a number in [0, 1)"),
        ({"legacy_plus_one": 1}, "legacy_plus_one must be True or False"),
        ({"mask_paste": "opencv"}, "mask_paste must be one of"),
        ({"mask_paste": "detectron2"}, "mask_paste must be one of"),
        ({"anchor_order": "random"}, "anchor_order must be one of"),
        ({"sampling_ratio": -1}, "sampling_ratio must be an integer >= 0"),
        ({"post_nms_topk_train": 0}, "post_nms_topk_train must be an integer >= 1"),
        ({"box_smooth_l1_beta": -0.1}, "box_smooth_l1_beta must be a number >= 0"),
        ({"not_a_knob": 1}, "unknown convention knob"),
    ],
)
def test_bad_knobs_are_value_errors(knobs, needle):
    with pytest.raises(ValueError) as e:
        DETECTRON2.replace(**knobs)
    assert needle in str(e.value)


def test_get_convention_by_name():
    assert get_convention("Detectron2") is DETECTRON2
    assert get_convention("d1") is DETECTRON
    assert get_convention(DETECTRON) is DETECTRON
    with pytest.raises(ValueError, match="convention must be"):
        get_convention("mmdet")


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DETECTRON.legacy_plus_one = False  # type: ignore[misc]
    assert isinstance(DETECTRON, Convention)
