"""The self-checks: every question's live answer against an independent value, and the widget answered right and
wrong through its own buttons."""

from __future__ import annotations

import re

import pytest

from explainer.course import selfcheck as S
from explainer.widgets.selfcheck import SelfCheck, _QuestionView
from tools.chapters import CHAPTERS

REF = "/work/shared/reference/conventions.md"  # the source-backed reference the worked examples come from
#: question -> (right answer, a wrong answer, where the right answer comes from). Independent of the package: worked
#: examples of the reference (produced by running the original code) or a derivation written out here.
EXPECTED = {
    "ch00.same_pixels": ("[x1, y1, x2 + 1, y2 + 1]", "[x1 - 0.5, y1 - 0.5, x2 + 0.5, y2 + 0.5]",
                         "reference section 0: the inclusive box [x1, x2] is the continuous interval [x1, x2 + 1)"),
    "ch00.not_notation": ("clipping a box that lies beyond the right border", "the IoU of two boxes",
                          "reference section 0: legacy clip also clamps x1 to W - 1; area, IoU, encode match"),
    "ch01.last_pixel": (7, 6, "pixel 6 covers [6, 7)"),
    "ch01.flip": ("polygons", "boxes", "reference section 6: Detectron's polygon flip W - x - 1 is 1 px off"),
    "ch01.resize_edge": (-1, 0, "s * 49 + 1 = 99 against s * 50 = 100"),
    "ch02.touching_iou": (1 / 21, 0, "reference section 1: touching boxes, legacy IoU 0.0476 = 11 / 231"),
    "ch02.nms_tie": ("Detectron2", "Detectron", "reference section 1: tie case, legacy suppresses, torchvision keeps"),
    "ch02.clip_beyond": ("Detectron2", "both", "clamp 125..141 to [0, 120] gives width 0; to 119 inclusive width 1"),
    "ch03.offset": (0.5, 0, "reference section 2: Detectron's grid is Detectron2 OFFSET=0.5"),
    "ch03.rounding_trend": ("it shrinks as the stride grows", "it grows with the stride",
                            "reference section 2: P2 48x24 for 45.25x22.63 (+12.5 %), P6 728x368 for 724.1x362 (+2.2 %)"),
    "ch03.row_order": ("only when a level has more than one size and more than one aspect ratio", "always",
                       "ratio-major and size-major list a 1 x n or n x 1 table the same way"),
    "ch04.aligned_box": ("[1, 1, 3, 3]", "[1, 1, 2, 2]", "reference section 3: aligned=True on [1, 1, 3, 3] gives 11, 12, 21, 22"),
    "ch04.fpn_level": (3, 2, "reference section 3: a 111 x 111 box goes to level 3 in Detectron, 2 in Detectron2"),
    "ch04.shift_p4": (8, 16, "half a cell of stride 16"),
    "ch05.label_zero": ("background in Detectron, 'person' in Detectron2", "background in both",
                        "reference section 4; COCO's first category is person"),
    "ch05.car_label": (2, 3, "COCO: person 1, bicycle 2, car 3 are Detectron labels; Detectron2 labels are one lower"),
    "ch05.box_rows": (320, 324, "convert_c2_detectron_names: bbox_pred w[4:]"),
    "ch06.half_mask": ("Detectron2's paste_masks_in_image", "both", "reference section 5: > 0.5 against >= 0.5"),
    "ch06.where_differ": ("only near the contour, within 2 px", "everywhere inside the object",
                          "reference section 5: the two pastes differ on the boundary (IoU 0.87 .. 0.99)"),
    "ch06.who_loses": ("small objects (8 px)", "the same for both", "one pixel is 1/8 of an 8 px object, 1/128 of 128 px"),
    "ch07.sparse_share": (0, 3, "the 6 best of the 20 scores are all >= 0.90"),
    "ch07.push": ("L1 (Detectron2's default, beta 0)", "smooth L1, beta 1 (Detectron's box head)",
                  "gradient 1 for L1 against x / beta = 0.45 and 0.05 below beta"),
    "ch08.same_pad": (0, 1, "reference section 7: 3x3 stride-2 on 224, TF pads (0, 1)"),
    "ch08.same_agree": ("225", "224", "SAME total on 225: (113 - 1) * 2 + 3 - 225 = 2, split (1, 1)"),
    "ch08.asymmetric": ("towards the top-left", "it does not move", "x / s - ((x + 0.5) / s - 0.5) = 0.5 - 0.5 / s > 0"),
    "ch09.cls_rows": (81, 80, "convert_c2_detectron_names: cls_score torch.cat([w[1:], w[:1]])"),
    "ch09.agnostic_rows": (4, 8, "reference section 4: class-agnostic 8 rows become 4"),
    "ch09.unsafe_pickle": ("loading is refused before anything runs", "the payload is skipped and the rest loads",
                           "the restricted unpickler refuses io.open (tests/test_attacks_checkpoint.py)"),
    "ch10.plus_one": ("plus_one", "translation", "the plus_one fingerprint: x1, y1 agree; x2, y2 differ by 1"),
    "ch10.half_pixel": ("half_pixel_shift", "scale", "all four coordinates shifted by 0.5"),
    "ch10.labels_up": ("label_offset", "coco_category_ids", "one constant label shift on 30 classes"),
    "ch11.bgr": ("channel_permutation", "channel_affine", "RGB for BGR swaps channels 0 and 2"),
    "ch11.later_stages": ("inherited", "unexplained", "stages after the first divergence carry it along"),
    "ch11.asymmetric_shift": (3.5, 4, "chapter 11: asymmetric reads half_pixel's output x + (s - 1) / 2, s = 8"),
    "ch12.remaining": ("the mask paste", "the anchor centres (offset)",
                       "reference: OFFSET, POOLER_TYPE and POOLER_SAMPLING_RATIO are config keys; Detectron2's "
                       "paste_masks_in_image has no option for Detectron's segm_results paste"),
    "ch12.masks_only": ("the mask paste", "the sampling ratio",
                        "the paste runs after the boxes are final (Detectron2 mask_ops.paste_masks_in_image takes "
                        "the final boxes), so it cannot move a box; the others act on features or proposals"),
    "ch12.published_sampling": ("it does not significantly affect AP", "it was never measured",
                                "detectron2 configs/Detectron1-Comparisons/README.md: POOLER_SAMPLING_RATIO=0 "
                                "\"does not significantly affect AP\""),
    "ch13.anchor_width": (46, 45, "torchvision anchor_utils.py: w = 32 / sqrt(0.5) = 45.25, corners +-22.63 round "
                                  "to +-23"),
    "ch13.pooler": ("Detectron's", "Detectron2's", "torchvision faster_rcnn.py: MultiScaleRoIAlign(..., sampling_ratio=2) "
                                                   "calls roi_align with aligned=False, Detectron's ROIAlign"),
    "ch13.paste": ("Detectron's segm_results, on continuous boxes", "Detectron2's paste_masks_in_image",
                   "torchvision roi_heads.py: expand_masks(padding=1), expand_boxes, +1 sizes as in Detectron's "
                   "core/test.py:segm_results"),
}


def test_every_question_has_an_independent_answer():
    assert set(EXPECTED) == set(S.QUESTIONS), "add the new questions (or remove the old ones) here, with a source"


@pytest.mark.parametrize("ch", CHAPTERS, ids=lambda c: f"chapter{c.number}")
def test_every_chapter_ends_with_two_to_four_questions(ch):
    qs = S.questions(ch.number)
    assert 2 <= len(qs) <= 4, f"chapter {ch.number} has {len(qs)} questions"
    for q in qs:
        assert q.prompt.endswith("?") or "?" in q.prompt, q.key
        assert q.hint and q.hint != q.prompt, q.key
        if q.choices:
            assert len(set(q.choices)) == len(q.choices) >= 2, q.key


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_live_answer_matches_the_independent_one(key):
    q = S.question(key)
    right, _, _source = EXPECTED[key]
    sol = q.solution()
    if q.choices:
        assert sol.answer == right
    else:
        assert abs(float(sol.answer) - right) <= max(q.tolerance, 1e-6), (sol.answer, right)
    assert len(sol.explanation) > 40


def _mentions(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def _hint_gives_away(q: S.Question, text: str, answer) -> bool:
    """A hint gives the answer away when it names the right choice and no other, or states the right number."""
    if q.choices:
        return _mentions(text, answer) and not any(_mentions(text, c) for c in q.choices if c != answer)
    a = float(answer)
    forms = {f"{a:g}", f"{a:.4g}", f"{a:.3f}".rstrip("0").rstrip(".")}
    return any(re.search(rf"(?<![\d.]){re.escape(f)}(?![\d])", text) for f in forms)


@pytest.mark.parametrize("ch", [c.number for c in CHAPTERS])
def test_widget_answers_right_and_wrong(ch):
    sc = SelfCheck(ch)
    for i, q in enumerate(sc.questions):
        right, wrong, _ = EXPECTED[q.key]
        said = sc.check(i, wrong)
        assert said.startswith("\u2717 Not quite. Hint:"), (q.key, said)
        assert not _hint_gives_away(q, said, right), f"{q.key}: the hint gives the answer away: {said}"
        assert sc.items[i].correct is False
        again = sc.check(q.key, wrong)
        assert "Show the answer" in again, "a second wrong answer points to the reveal button"
        said = sc.check(i, right if q.choices else str(right))
        assert said.startswith("\u2713 Right."), (q.key, said)
        assert sc.items[i].correct is True
        shown = sc.reveal(q.key)
        assert shown.startswith("The answer: "), shown
        assert (right in shown) if q.choices else re.search(rf"The answer: {float(right):.4g}\b", shown), shown


def test_numbers_are_accepted_in_the_forms_people_type():
    sc = SelfCheck(2)
    assert sc.check("ch02.touching_iou", "1/21").startswith("\u2713")
    assert sc.check("ch02.touching_iou", "0,0476").startswith("\u2713")
    assert sc.check("ch02.touching_iou", " 0.048 ").startswith("\u2713")
    assert sc.check("ch02.touching_iou", "0.05").startswith("\u2717"), "tolerance is tight enough to tell 0.05"


def test_bad_responses_get_a_message_not_an_exception():
    sc = SelfCheck(4)
    assert sc.check("ch04.fpn_level", "three") == "The answer must be a number such as 3, 0.5 or 1/21, got 'three'"
    assert sc.check("ch04.fpn_level", "") == "Type a number first."
    assert sc.items[0].input.value is None
    sc.items[0].check_button.click()
    assert "Pick one of the answers first." in sc.items[0].feedback.value
    assert sc.items[1].correct is None, "an unreadable answer is not counted"


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="chapter 99 has no self-check questions"):
        SelfCheck(99)
    with pytest.raises(ValueError, match="which must be"):
        SelfCheck(1).check(7, "1")
    with pytest.raises(ValueError, match="question 'ch04.fpn_level' is not in chapter 1"):
        SelfCheck(1).check("ch04.fpn_level", "3")
    with pytest.raises(ValueError, match="response must be one of the choices"):
        S.question("ch02.nms_tie").check("Detectron 2")
    with pytest.raises(ValueError, match="unknown question"):
        S.question("ch02.nothing")
    for bad in ("", "1/0", "nan", "inf", True, None, "3 4"):
        with pytest.raises(ValueError, match="response must be"):
            S.parse_number(bad)
    assert S.parse_number("-1e-3") == -0.001 and S.parse_number(" 1 / 4 ") == 0.25 and S.parse_number(2) == 2.0


def test_a_failing_computation_is_reported_in_the_widget():
    def broken() -> S.Solution:
        raise RuntimeError("no data")

    view = _QuestionView(1, S.Question("test.broken", 1, "What?", "Think.", broken, tolerance=0.1))
    view.input.value = "1"
    view.check_button.click()
    assert "Could not compute the answer (RuntimeError: no data)" in view.feedback.value
    view.show_button.click()
    assert "Could not compute the answer" in view.feedback.value


def test_static_export_lists_the_questions_without_answers():
    sc = SelfCheck(4)
    bundle = sc._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    static = bundle["text/html"]
    for q in sc.questions:
        assert q.prompt.split(" (")[0][:40].replace("'", "&#x27;") in static
        assert q.solution().explanation[:40] not in static
    assert "Run the notebook to check your answers" in static
