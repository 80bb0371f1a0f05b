"""The presets and knobs of explainer.conventions."""

from __future__ import annotations

import dataclasses

import pytest

from explainer.conventions import DETECTRON, DETECTRON2, KNOB_DOCS, MASK_PASTES, Convention, get_convention


def test_presets_differ_in_every_knob_but_none_else():
    diff = DETECTRON.diff(DETECTRON2)
    assert set(diff) == set(DETECTRON.knobs())
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


def test_operator_names_are_read_only_views_of_the_qualified_knobs():
    for conv in (DETECTRON, DETECTRON2, DETECTRON2.replace(roi_aligned=False, anchor_offset=0.25, hflip_minus_one=True)):
        assert conv.aligned is conv.roi_aligned
        assert conv.offset == conv.anchor_offset
        assert conv.minus_one is conv.hflip_minus_one
    assert (DETECTRON.aligned, DETECTRON.offset, DETECTRON.minus_one) == (False, 0.5, True)
    assert (DETECTRON2.aligned, DETECTRON2.offset, DETECTRON2.minus_one) == (True, 0.0, False)
    with pytest.raises(ValueError, match="aligned is a read-only view of the knob roi_aligned"):
        DETECTRON2.replace(aligned=False)
    with pytest.raises(AttributeError):
        DETECTRON2.offset = 0.5  # type: ignore[misc]


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
