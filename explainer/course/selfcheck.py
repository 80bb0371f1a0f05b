"""Self-checks: the questions that close each chapter, with right answers the package computes now.

Each :class:`Question` belongs to a chapter and asks for a number or for one of a few choices. Its answer is
never typed in: :meth:`Question.solution` calls the chapter's own module (``explainer.boxes``,
``explainer.roi_align``, ...) and returns the answer with an explanation that states the computed numbers.
:meth:`Question.check` turns a learner's response into a :class:`Verdict`: right (with the explanation) or
wrong (with a hint that points at the chapter's idea and does not give the answer away).

The questions ask for the chapter's idea, not for arithmetic: which box reproduces given cells under
``aligned=True``, which FPN level a box goes to, what label 0 means, which cause a fingerprint points to.
Nothing here imports matplotlib or ipywidgets; :mod:`explainer.widgets.selfcheck` is the widget.

Why one module of about 850 lines: a question is a prompt, a hint and a live computation that only makes sense
next to its chapter's other questions, and whoever revises a chapter or prepares a session reads the questions of
every chapter together, in course order. The machinery (:class:`Question`, :func:`parse_number`) is the first 170
lines; each chapter's questions follow under its own heading.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import torch

__all__ = ["Question", "Solution", "Verdict", "QUESTIONS", "questions", "question", "chapters", "parse_number"]

Answer = Union[float, str]


@dataclass(frozen=True)
class Solution:
    """The right answer (a number, or the text of the right choice) and why, with the computed numbers."""

    answer: Answer
    explanation: str


@dataclass(frozen=True)
class Verdict:
    """What a response earns: ``correct``, and a message (the explanation when right, a hint when wrong)."""

    correct: bool
    message: str


@dataclass(frozen=True)
class Question:
    """One self-check question. ``choices`` empty: the answer is a number, right within ``tolerance``."""

    key: str
    chapter: int
    prompt: str
    hint: str
    solve: Callable[[], Solution] = field(repr=False, compare=False)
    choices: Tuple[str, ...] = ()
    tolerance: float = 0.0
    unit: str = ""

    @property
    def kind(self) -> str:
        """``"choice"`` or ``"number"``."""
        return "choice" if self.choices else "number"

    def solution(self) -> Solution:
        """The right answer, computed by the package (once per process, then kept)."""
        if self.key not in _SOLVED:
            got = self.solve()
            if self.choices and got.answer not in self.choices:
                raise RuntimeError(f"{self.key}: the computed answer {got.answer!r} is not one of the choices")
            _SOLVED[self.key] = got
        return _SOLVED[self.key]

    def check(self, response: Union[str, float, int]) -> Verdict:
        """Judge a response: the text of a choice, or a number (also given as text such as ``"0.5"`` or ``"1/21"``).

        Raises ``ValueError`` naming ``response`` when it is not one of the choices or not a number.
        """
        sol = self.solution()
        if self.choices:
            if not isinstance(response, str) or response not in self.choices:
                raise ValueError(f"response must be one of the choices {list(self.choices)}, got {response!r}")
            right = response == sol.answer
        else:
            value = parse_number(response)
            right = abs(value - float(sol.answer)) <= self.tolerance + 1e-9 * max(1.0, abs(float(sol.answer)))
        if right:
            return Verdict(True, "Right. " + sol.explanation)
        return Verdict(False, "Not quite. Hint: " + self.hint)


#: Every question, by key (``"ch04.aligned_box"``), in the order of the chapters.
QUESTIONS: Dict[str, Question] = {}
_SOLVED: Dict[str, Solution] = {}


def questions(chapter: int) -> List[Question]:
    """The questions that close ``chapter`` (0 .. the last chapter), in order."""
    if isinstance(chapter, bool) or not isinstance(chapter, int):
        raise ValueError(f"chapter must be an integer chapter number, got {chapter!r}")
    found = [q for q in QUESTIONS.values() if q.chapter == chapter]
    if not found:
        raise ValueError(f"chapter {chapter} has no self-check questions; chapters with questions: {chapters()}")
    return found


def question(key: str) -> Question:
    """One question by its key."""
    if key not in QUESTIONS:
        raise ValueError(f"unknown question {key!r}; the questions are {sorted(QUESTIONS)}")
    return QUESTIONS[key]


def chapters() -> List[int]:
    """The chapters that have questions."""
    return sorted({q.chapter for q in QUESTIONS.values()})


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


#: The longest response read as a number (characters), and the largest exponent of ten a fraction's parts may
#: have: a fraction is computed exactly, and 1e999999999 would take its ten to the power of a billion.
_MAX_RESPONSE_CHARS, _MAX_EXPONENT = 1000, 400


def _out_of_range(response: Any) -> ValueError:
    text = repr(response) if isinstance(response, str) else "an integer of " + f"{len(str(abs(response)))} digits"
    return ValueError(f"response must be a number within ±1e308 (a fraction's parts with exponents up to "
                      f"{_MAX_EXPONENT}), got {text[:60]}: not a number I can compare with the answer")


def _fraction_part(text: str) -> Fraction:
    exponent = re.search(r"[eE]([+-]?\d+)$", text)
    if exponent is not None and abs(int(exponent.group(1))) > _MAX_EXPONENT:
        raise OverflowError
    return Fraction(text)


def _parse_text(response: str) -> float:
    if len(response) > _MAX_RESPONSE_CHARS:
        raise ValueError(f"response must be a number such as 3, 0.5 or 1/21, got {len(response)} characters")
    text = re.sub(r"\s*/\s*", "/", response.strip())
    if re.fullmatch(r"[+-]?\d+,\d+", text):
        text = text.replace(",", ".")
    try:
        if "/" in text and all(_NUMBER.match(p) for p in text.split("/", 1)):
            value = float(_fraction_part(text.split("/")[0]) / _fraction_part(text.split("/")[1]))
        elif _NUMBER.match(text):
            value = float(text)
        else:
            raise ValueError
    except OverflowError:
        raise _out_of_range(response) from None
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"response must be a number such as 3, 0.5 or 1/21, got {response!r}") from None
    if math.isinf(value):                       # the regular expression admits no "inf": digits beyond the range
        raise _out_of_range(response)
    return value


def parse_number(response: Union[str, float, int]) -> float:
    """A response as a number: ``3``, ``-0.5``, ``1e-3``, a fraction ``1/21``, or a decimal comma ``0,5``.

    Raises ``ValueError`` naming ``response`` when it is not a number, or one beyond float64's range (so it
    cannot be compared with the answer)."""
    if isinstance(response, bool):
        raise ValueError(f"response must be a number, got {response!r}")
    if isinstance(response, (int, float)):
        try:
            value = float(response)
        except OverflowError:
            raise _out_of_range(response) from None
    elif isinstance(response, str):
        value = _parse_text(response)
    else:
        raise ValueError(f"response must be a number or its text, got {type(response).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"response must be a finite number, got {response!r}")
    return value


def _ask(chapter: int, key: str, prompt: str, hint: str, choices: Sequence[str] = (), tolerance: float = 0.0,
         unit: str = "") -> Callable[[Callable[[], Solution]], Callable[[], Solution]]:
    def register(solve: Callable[[], Solution]) -> Callable[[], Solution]:
        q = Question(f"ch{chapter:02d}.{key}", chapter, prompt, hint, solve, tuple(choices), tolerance, unit)
        QUESTIONS[q.key] = q
        return solve
    return register


def _only(truth: Dict[str, bool]) -> str:
    """The one choice that the computation found true."""
    hits = [c for c, ok in truth.items() if ok]
    if len(hits) != 1:
        raise RuntimeError(f"expected exactly one true choice, the computation found {hits}")
    return hits[0]


def _g(x: Union[float, torch.Tensor], digits: int = 4) -> str:
    """A number as a person reads it (no float32 tail, no "-0")."""
    s = f"{float(x):.{digits}g}"
    return "0" if s in ("-0", "-0.0") else s


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a.double(), b.double(), atol=1e-4, rtol=0.0))


# --------------------------------------------------------------------------------------------------
# Chapter 0: the one idea
# --------------------------------------------------------------------------------------------------
_MAPPINGS = {"[x1, y1, x2, y2]": (0.0, 0.0, 0.0, 0.0), "[x1, y1, x2 + 1, y2 + 1]": (0.0, 0.0, 1.0, 1.0),
             "[x1 - 0.5, y1 - 0.5, x2 + 0.5, y2 + 0.5]": (-0.5, -0.5, 0.5, 0.5),
             "[x1 + 1, y1 + 1, x2 + 1, y2 + 1]": (1.0, 1.0, 1.0, 1.0)}


@_ask(0, "same_pixels",
      "A Detectron box [x1, y1, x2, y2] covers the pixels x1..x2 and y1..y2. Which Detectron2 box covers exactly the "
      "same pixels?",
      "In Detectron2, pixel i is the interval [i, i + 1). Where does the last pixel x2 end?", choices=tuple(_MAPPINGS))
def _ch00_same_pixels() -> Solution:
    from explainer import pixels

    box, size = [2.0, 1.0, 6.0, 4.0], (8, 10)
    want = pixels.pixel_coverage(box, size, inclusive=True)
    covers = {text: _same(pixels.pixel_coverage([v + d for v, d in zip(box, shift)], size), want)
              for text, shift in _MAPPINGS.items()}
    n = int(want.sum())
    return Solution(_only(covers), f"Detectron's box [2, 1, 6, 4] covers {n} whole pixels; of the four Detectron2 "
                                   f"boxes only [2, 1, 7, 5] covers exactly those (pixels.to_continuous). The "
                                   f"half-pixel box covers half pixels along its border.")


_NOTATION = ("the area of a box", "the IoU of two boxes", "clipping a box that lies beyond the right border",
             "encoding one box relative to another")


@_ask(0, "not_notation",
      "Most of Detectron's \"+1\" formulas are Detectron2's formulas applied to [x1, y1, x2 + 1, y2 + 1]. For which "
      "of these operations is that mapping NOT enough (the results still disagree)?",
      "Apply each operation both ways to boxes near the image border. Where does Detectron clamp x1, and where does "
      "Detectron2?", choices=_NOTATION)
def _ch00_not_notation() -> Solution:
    from explainer import boxes as B

    a, b = torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[1.0, 1.0, 11.0, 11.0]])
    a_cont, b_cont = B.to_continuous(a), B.to_continuous(b)
    beyond = torch.tensor([[125.0, 10.0, 140.0, 20.0]])
    legacy_clip = B.to_continuous(B.clip(beyond, (100, 120), legacy_plus_one=True))
    modern_clip = B.clip(B.to_continuous(beyond), (100, 120))
    agree = {
        _NOTATION[0]: _same(B.area(a, legacy_plus_one=True), B.area(a_cont)),
        _NOTATION[1]: _same(B.pairwise_iou(a, b, legacy_plus_one=True), B.pairwise_iou(a_cont, b_cont)),
        _NOTATION[2]: _same(legacy_clip, modern_clip),
        _NOTATION[3]: _same(B.encode(a, b, legacy_plus_one=True), B.encode(a_cont, b_cont)),
    }
    lc, mc = legacy_clip[0].tolist(), modern_clip[0].tolist()
    return Solution(_only({k: not v for k, v in agree.items()}),
                    f"Area, IoU and encoding agree exactly on the mapped boxes. Clipping the box of pixels 125..140 "
                    f"to an image 120 wide does not: Detectron's clip_tiled_boxes clamps all four coordinates to "
                    f"W - 1, so the box keeps one pixel ({_g(lc[0])}..{_g(lc[2])} as continuous coordinates), while "
                    f"Detectron2's Boxes.clip gives [{_g(mc[0])}, {_g(mc[2])}], zero width.")


# --------------------------------------------------------------------------------------------------
# Chapter 1: pixels and coordinates
# --------------------------------------------------------------------------------------------------
@_ask(1, "last_pixel",
      "A Detectron box covers the pixels 2 to 6 in x (x1 = 2, x2 = 6, inclusive indices). Handing the same pixels to "
      "Detectron2, what must its x2 be?",
      "Detectron names the last pixel; Detectron2 names where the covered area ends. Pixel i covers [i, i + 1).",
      tolerance=1e-6, unit="px")
def _ch01_last_pixel() -> Solution:
    from explainer import pixels

    box = torch.tensor([[2.0, 0.0, 6.0, 3.0]])
    x2 = float(pixels.to_continuous(box)[0, 2])
    w1 = float(pixels.box_size(box, legacy_plus_one=True)[0][0])
    w2 = float(pixels.box_size(pixels.to_continuous(box))[0][0])
    return Solution(x2, f"Pixel 6 covers [6, 7), so the continuous box ends at x2 = {_g(x2)} "
                        f"(pixels.to_continuous). Both widths are then {_g(w1)}: Detectron's 6 - 2 + 1 and "
                        f"Detectron2's {_g(x2)} - 2 = {_g(w2)}.")


_FLIPPED = ("boxes", "keypoints", "polygons", "none of them")


@_ask(1, "flip",
      "An image of width 48 is mirrored, and each codebase flips its own annotations with its own rule (Detectron "
      "W - 1 - x, Detectron2 W - x, keypoints +0.5 / -0.5 around the flip). Which kind of annotation ends up on "
      "different pixels in the two codebases?",
      "Ask for each kind whether it is stored as pixel indices or as continuous coordinates, and which rule is "
      "right for which.", choices=_FLIPPED)
def _ch01_flip() -> Solution:
    from explainer import pixels

    W = 48
    box = torch.tensor([[10.0, 5.0, 20.0, 15.0]])          # inclusive pixels (Detectron)
    det_box = pixels.to_continuous(pixels.hflip_boxes(box, W, minus_one=True))
    d2_box = pixels.hflip_boxes(pixels.to_continuous(box), W)
    kp = torch.tensor([[20.0, 7.0, 2.0]])                  # a COCO keypoint: pixel indices
    det_kp = pixels.hflip_points(kp, W, minus_one=True)
    d2_kp = pixels.continuous_keypoints_to_coco(pixels.hflip_points(pixels.coco_keypoints_to_continuous(kp), W))
    poly = torch.tensor([16.0, 44.0, 30.0, 44.0, 22.0, 52.0])   # COCO polygons: continuous coordinates
    det_poly = pixels.hflip_polygon(poly, W, minus_one=True)
    d2_poly = pixels.hflip_polygon(poly, W)
    differ = {"boxes": not _same(det_box, d2_box), "keypoints": not _same(det_kp, d2_kp),
              "polygons": not _same(det_poly, d2_poly)}
    differ["none of them"] = not any(differ.values())
    shift = float((d2_poly - det_poly)[0])
    return Solution(_only(differ),
                    f"Boxes and keypoints land on the same pixels (keypoint x {_g(kp[0, 0])} -> "
                    f"{_g(det_kp[0, 0])} both ways). Polygons are continuous coordinates, but Detectron's flip_segms "
                    f"flips them with W - 1 - x: every vertex lands {_g(shift)} px left of Detectron2's W - x.")


@_ask(1, "resize_edge",
      "An image is resized by s = 2. A Detectron box covers pixels 10..49 in x, and Detectron scales it by multiplying "
      "all four numbers by s. By how many pixels does the far edge of what it then covers miss the far edge of the "
      "resized pixels 10..49? (Negative: it stops short.)",
      "In continuous coordinates pixel 49 ends at 50, and continuous coordinates scale exactly. Where does the "
      "scaled x2 = 98 end as a pixel index?", tolerance=0.01, unit="px")
def _ch01_resize_edge() -> Solution:
    from explainer import pixels

    s, inc = 2.0, torch.tensor([[10.0, 10.0, 49.0, 29.0]])
    legacy = pixels.to_continuous(pixels.scale_boxes(inc, s, legacy_plus_one=True))[0]
    exact = pixels.scale_boxes(pixels.to_continuous(inc), s)[0]
    err = float(legacy[2] - exact[2])
    return Solution(err, f"The resized pixels end at s x 50 = {_g(exact[2])}. Detectron's x2 becomes 2 x 49 = 98, "
                         f"the last pixel, which ends at {_g(legacy[2])}: off by {_g(err)} px, which is (1 - s) px.")


# --------------------------------------------------------------------------------------------------
# Chapter 2: boxes, IoU, regression, NMS
# --------------------------------------------------------------------------------------------------
@_ask(2, "touching_iou",
      "Detectron boxes A = [0, 0, 10, 10] and B = [10, 0, 20, 10] touch along x = 10. What IoU does Detectron compute "
      "for them? (Three decimals are enough.)",
      "In Detectron the numbers are inclusive pixel indices. Which pixels do A and B both contain?", tolerance=0.0015)
def _ch02_touching_iou() -> Solution:
    from explainer import boxes as B

    a, b = torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[10.0, 0.0, 20.0, 10.0]])
    legacy = float(B.pairwise_iou(a, b, legacy_plus_one=True))
    modern = float(B.pairwise_iou(a, b))
    inter, area = 11, float(B.area(a, legacy_plus_one=True))
    return Solution(legacy, f"Both boxes contain the pixel column 10 (11 pixels), and each covers {_g(area)} pixels: "
                            f"IoU = 11 / ({_g(area)} + {_g(area)} - {inter}) = {_g(legacy)} (1/21). Detectron2 reads "
                            f"the same numbers as rectangles that only share a line: IoU {_g(modern)}.")


_KEEPER = ("Detectron", "Detectron2", "both", "neither")


@_ask(2, "nms_tie",
      "Two boxes overlap with an IoU of exactly 0.5, each codebase measuring in its own convention, and "
      "NMS_THRESH_TEST is 0.5. Which codebase's NMS keeps both boxes?",
      "Compare the two NMS kernels' suppression test: one is Detectron's cython_nms, the other torchvision's nms.",
      choices=_KEEPER)
def _ch02_nms_tie() -> Solution:
    from explainer import boxes as B

    tie = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 4.0]])    # +1 areas 100 and 50, IoU 50 / 100
    scores = torch.tensor([0.9, 0.8])
    iou1 = float(B.pairwise_iou(tie[:1], tie[1:], legacy_plus_one=True))
    mapped = B.to_continuous(tie)
    iou2 = float(B.pairwise_iou(mapped[:1], mapped[1:]))
    n1 = len(B.nms(tie, scores, 0.5, legacy_plus_one=True))
    n2 = len(B.nms(mapped, scores, 0.5))
    keeps = {"Detectron": n1 == 2 and n2 < 2, "Detectron2": n2 == 2 and n1 < 2, "both": n1 == n2 == 2,
             "neither": n1 < 2 and n2 < 2}
    return Solution(_only(keeps), f"IoU {_g(iou1)} (Detectron) and {_g(iou2)} (Detectron2, same pixels). Detectron "
                                  f"suppresses when IoU >= the threshold and keeps {n1} box; torchvision's nms (which "
                                  f"Detectron2's batched_nms calls) suppresses when IoU > the threshold and keeps {n2}.")


@_ask(2, "clip_beyond",
      "A box lies wholly beyond the right border of an image 120 pixels wide (Detectron pixels 125..140; Detectron2 "
      "gets it as continuous coordinates). After each codebase clips it to the image, which one is left with a box "
      "of zero width?",
      "Detectron clamps every coordinate to the last pixel index W - 1; Detectron2 clamps to the image edge W.",
      choices=_KEEPER)
def _ch02_clip_beyond() -> Solution:
    from explainer import boxes as B
    from explainer import pixels

    box = torch.tensor([[125.0, 10.0, 140.0, 20.0]])
    det = B.clip(box, (100, 120), legacy_plus_one=True)
    d2 = B.clip(B.to_continuous(box), (100, 120))
    w1 = float(pixels.box_size(det, legacy_plus_one=True)[0][0])
    w2 = float(pixels.box_size(d2)[0][0])
    zero = {"Detectron": w1 == 0 and w2 > 0, "Detectron2": w2 == 0 and w1 > 0, "both": w1 == w2 == 0,
            "neither": w1 > 0 and w2 > 0}
    return Solution(_only(zero), f"Detectron's clip gives x1 = x2 = {_g(det[0, 0])}: one pixel column, width {_g(w1)}. "
                                 f"Detectron2's gives x1 = x2 = {_g(d2[0, 0])}: width {_g(w2)}, an empty box that "
                                 f"nonempty() removes. Here the +1 mapping does not hold.")


# --------------------------------------------------------------------------------------------------
# Chapter 3: anchors
# --------------------------------------------------------------------------------------------------
@_ask(3, "offset",
      "Read in continuous coordinates and ignoring the rounding, Detectron's anchor grid equals Detectron2's grid with "
      "which MODEL.ANCHOR_GENERATOR.OFFSET?",
      "Detectron centres its first anchor on pixel index (stride - 1) / 2. Where is that pixel's centre as a "
      "continuous coordinate, in strides?", tolerance=1e-6)
def _ch03_offset() -> Solution:
    from explainer import anchors as A
    from explainer import pixels

    stride = 16.0
    det = pixels.to_continuous(A.grid_anchors(A.detectron_cell_anchors(stride, (32,), (1.0,)), (3, 4), stride))
    gaps = {off: float((det - A.grid_anchors(A.d2_cell_anchors((32,), (1.0,)), (3, 4), stride, off))
                       .abs().max()) for off in (0.0, 0.25, 0.5, 0.75)}
    best = min(gaps, key=gaps.__getitem__)
    return Solution(best, f"Detectron's ratio-1 anchors (no rounding at that ratio) against Detectron2's grid: the "
                          f"largest difference is {_g(gaps[0.0])} px at OFFSET 0 (the config default), "
                          f"{_g(gaps[best])} px at OFFSET {_g(best)}. Pixel index 7.5 is the continuous point 8 = "
                          f"half a stride.")


_TREND = ("it grows with the stride", "it shrinks as the stride grows", "it is the same at every level")


@_ask(3, "rounding_trend",
      "Detectron rounds anchor widths and heights (np.round in _ratio_enum). With the default FPN anchors (size 32 at "
      "P2 up to 512 at P6, ratios 0.5, 1, 2), how does the largest error in anchor area change from P2 to P6?",
      "The rounding happens on the stride x stride base window, before it is scaled up to the anchor size.",
      choices=_TREND)
def _ch03_rounding_trend() -> Solution:
    from explainer import anchors as A

    errors = []
    for cfg in A.fpn_level_configs():
        rep = A.anchor_report(cfg["stride"], cfg["sizes"], cfg["aspect_ratios"])
        errors.append((cfg["name"], max(abs(r["detectron"]["area"] / r["intended"]["area"] - 1) for r in rep)))
    vals = [e for _, e in errors]
    trend = {_TREND[0]: vals[-1] > vals[0] and all(b >= a for a, b in zip(vals, vals[1:])),
             _TREND[1]: vals[-1] < vals[0] and all(b <= a for a, b in zip(vals, vals[1:])),
             _TREND[2]: max(vals) - min(vals) < 1e-9}
    listed = ", ".join(f"{n} {100 * e:.3g} %" for n, e in errors)
    return Solution(_only(trend), f"Largest area error per level: {listed}. A 4 x 4 base window (P2) can only be "
                                  f"rounded coarsely; at P6 the base window is 64 x 64.")


_ORDER = ("always", "only when a level has more than one size and more than one aspect ratio",
          "only when a level has more than one aspect ratio", "never")


@_ask(3, "row_order",
      "Detectron's cell anchors are ratio-major, Detectron2's size-major. When does that change the order of the RPN's "
      "rows (so that converted weights must be reordered)?",
      "Write out the rows of a level with one size and three ratios in both orders; then with two sizes.",
      choices=_ORDER)
def _ch03_row_order() -> Solution:
    from explainer import anchors as A

    def moves(n_sizes: int, n_ratios: int) -> bool:
        p = A.anchor_order_permutation(n_sizes, n_ratios, "ratio_major", "size_major")
        return bool((p != torch.arange(len(p))).any())

    cases = {(s, r): moves(s, r) for s in (1, 3) for r in (1, 3)}
    truth = {_ORDER[0]: all(cases.values()), _ORDER[1]: cases == {k: k[0] > 1 and k[1] > 1 for k in cases},
             _ORDER[2]: cases == {k: k[1] > 1 for k in cases}, _ORDER[3]: not any(cases.values())}
    return Solution(_only(truth), "With one size per level (FPN) or one ratio, both orders list the same rows; with "
                                  "several of both (C4: 5 sizes x 3 ratios on one level) the rows are a transposed "
                                  f"table: anchors.anchor_order_permutation(5, 3, ...) = "
                                  f"{A.anchor_order_permutation(5, 3, 'ratio_major', 'size_major').tolist()}.")


# --------------------------------------------------------------------------------------------------
# Chapter 4: ROIAlign
# --------------------------------------------------------------------------------------------------
_BOXES = ("[1, 1, 2, 2]", "[1, 1, 3, 3]", "[0.5, 0.5, 2.5, 2.5]", "[1.5, 1.5, 3.5, 3.5]")


@_ask(4, "aligned_box",
      "On a feature map whose value is 10 y + x, which box makes roi_align (output 2 x 2, sampling_ratio 2, "
      "aligned=True, spatial_scale 1) return exactly the cells 1..2 in x and y (values 11, 12, 21, 22)?",
      "With aligned=True, box corners are continuous coordinates: cell i covers [i, i + 1) and is sampled at its "
      "centre i + 0.5.", choices=_BOXES)
def _ch04_aligned_box() -> Solution:
    from explainer import roi_align as R

    ramp = (torch.arange(10).view(10, 1) * 10 + torch.arange(10).view(1, 10)).float()[None, None]
    want = torch.tensor([[11.0, 12.0], [21.0, 22.0]])

    def hit(aligned: bool) -> Dict[str, bool]:
        out = {}
        for text in _BOXES:
            box = torch.tensor([[0.0, *[float(v) for v in text.strip("[]").split(",")]]])
            out[text] = _same(R.roi_align(ramp, box, 2, 1.0, 2, aligned)[0, 0], want)
        return out

    legacy = [b for b, ok in hit(False).items() if ok]
    xs = sorted({_g(v) for v in R.sampling_points([1, 1, 3, 3], 2, (10, 10), 1.0, 2, aligned=True)["points"][:, 0].tolist()})
    return Solution(_only(hit(True)), "aligned=True subtracts 0.5 after scaling, so the box [1, 1, 3, 3] is sampled at "
                                      f"{', '.join(xs)} in index space: each bin's two samples average to the index of "
                                      "one cell, 1 or 2 (values 11, 12, 21, 22). With aligned=False the box that does "
                                      f"it is {legacy[0] if legacy else 'none'}.")


@_ask(4, "fpn_level",
      "Which FPN level does Detectron assign a 111 x 111 box to (map_rois_to_fpn_levels: canonical size 224 at level "
      "4, levels 2 to 5)? The box is [0, 0, 111, 111] in each codebase's own numbers.",
      "The level is floor(4 + log2(sqrt(area) / 224)). Which area does Detectron's boxes_area compute for these "
      "numbers?", tolerance=0.0)
def _ch04_fpn_level() -> Solution:
    from explainer import roi_align as R

    box = torch.tensor([[0.0, 0.0, 111.0, 111.0]])
    l1 = int(R.assign_fpn_levels(box, legacy_plus_one=True)[0])
    l2 = int(R.assign_fpn_levels(box)[0])
    return Solution(float(l1), f"Detectron's area has the +1: 112 x 112, whose square root 112 is 224 / 2, so level "
                               f"floor(4 - 1) = {l1}. "
                               f"Detectron2's assign_boxes_to_levels uses 111 x 111, just below 112: level {l2}. "
                               f"The level boundaries fall at sides 112, 224, 448 in Detectron2 and one pixel "
                               f"lower in Detectron's numbers.")


@_ask(4, "shift_p4",
      "On P4 (stride 16, spatial_scale 1/16), by how many image pixels do ROIAlign's samples with aligned=False sit "
      "away from those with aligned=True?",
      "aligned=False omits a shift of half a feature cell. How many image pixels is one cell of P4?",
      tolerance=0.01, unit="px")
def _ch04_shift_p4() -> Solution:
    from explainer import roi_align as R

    stride = 16.0
    x = torch.arange(20, dtype=torch.float32).view(1, 1, 1, 20).expand(1, 1, 20, 20).contiguous()  # value = x cell
    box = torch.tensor([[0.0, 64.0, 64.0, 160.0, 160.0]])
    diff = (R.roi_align(x, box, 7, 1 / stride, 2, False) - R.roi_align(x, box, 7, 1 / stride, 2, True)).mean()
    px = float(diff) * stride
    return Solution(px, f"On a map whose value is the x cell index, the two pooled outputs differ by {_g(diff)} "
                        f"cells everywhere: half a cell, which is {_g(px)} image pixels at stride {_g(stride)} "
                        f"(s / 2 on every level).")


# --------------------------------------------------------------------------------------------------
# Chapter 5: class-label order
# --------------------------------------------------------------------------------------------------
_LABEL0 = ("background in both", "background in Detectron, 'person' in Detectron2",
           "'person' in Detectron, background in Detectron2", "'person' in both")


@_ask(5, "label_zero", "On COCO (80 classes), what does label 0 mean in each codebase?",
      "Detectron's NUM_CLASSES is 81 and counts one more class than Detectron2's 80. Which class is that, and where "
      "does each codebase put it?", choices=_LABEL0)
def _ch05_label_zero() -> Solution:
    from explainer import labels as L

    K = 80
    as_d2 = int(L.detectron_to_d2_labels([0], K)[0])
    name = L.COCO_CLASS_NAMES[0]
    det_bg, d2_bg = as_d2 == K, False
    truth = {_LABEL0[0]: det_bg and d2_bg, _LABEL0[1]: det_bg and not d2_bg and name == "person",
             _LABEL0[2]: not det_bg and name == "person", _LABEL0[3]: not det_bg and not d2_bg}
    return Solution(_only(truth), f"Detectron's label 0 is Detectron2's label {as_d2} = K, the background; "
                                  f"Detectron2's label 0 is the first object class, '{name}' on COCO.")


@_ask(5, "car_label",
      "Detectron labels a car 3 on COCO (background first). Which label does Detectron2 give the same class?",
      "Which label did Detectron spend on the background, and what happens to every object label when the "
      "background moves to the end?", tolerance=0.0)
def _ch05_car_label() -> Solution:
    from explainer import labels as L

    d2 = int(L.detectron_to_d2_labels([3], 80)[0])
    return Solution(float(d2), f"Every object label moves down by one: 3 -> {d2}, '{L.COCO_CLASS_NAMES[d2]}' in "
                               f"Detectron2. Read as a Detectron2 label, 3 would be "
                               f"'{L.COCO_CLASS_NAMES[3]}'.")


@_ask(5, "box_rows",
      "A Detectron COCO box predictor has bbox_pred with 324 rows (4 per class, background included). How many rows "
      "does Detectron2's loader (convert_c2_detectron_names) keep?",
      "Detectron2 has no box regressor for the background class. What does the loader do with those 4 rows?",
      tolerance=0.0)
def _ch05_box_rows() -> Solution:
    from explainer import labels as L

    g = torch.Generator().manual_seed(0)
    params = {"cls_score_w": torch.randn(81, 8, generator=g), "cls_score_b": torch.zeros(81),
              "bbox_pred_w": torch.randn(324, 8, generator=g), "bbox_pred_b": torch.zeros(324)}
    out = L.convert_box_predictor(params)
    rows = int(out["bbox_pred.weight"].shape[0])
    kept = _same(out["bbox_pred.weight"], params["bbox_pred_w"][4:])
    return Solution(float(rows), f"The loader drops the first 4 rows (w[4:]: {kept}), keeping {rows} = 4 x 80, while "
                                 f"cls_score keeps all {out['cls_score.weight'].shape[0]} rows, the background "
                                 f"moved last.")


# --------------------------------------------------------------------------------------------------
# Chapter 6: mask paste
# --------------------------------------------------------------------------------------------------
_PASTERS = ("Detectron's segm_results", "Detectron2's paste_masks_in_image", "both", "neither")


@_ask(6, "half_mask",
      "A predicted soft mask is exactly 0.5 everywhere, and both codebases paste it with their default threshold "
      "0.5. Which method turns on the pixels inside the box?",
      "The two binarisations compare with the threshold differently: one with >, one with >=.", choices=_PASTERS)
def _ch06_half_mask() -> Solution:
    from explainer import masks as Mk
    from explainer import pixels

    half, box = torch.full((1, 28, 28), 0.5), [4.3, 3.7, 22.8, 17.2]
    n2 = int(Mk.paste_masks(half, [box], (22, 28), mask_paste="paste_masks_in_image")[0].sum())
    n1 = int(Mk.paste_masks(half, pixels.to_inclusive([box]), (22, 28), mask_paste="segm_results")[0].sum())
    truth = {_PASTERS[0]: n1 > 0 and n2 == 0, _PASTERS[1]: n2 > 0 and n1 == 0, _PASTERS[2]: n1 > 0 and n2 > 0,
             _PASTERS[3]: n1 == n2 == 0}
    return Solution(_only(truth), f"Detectron keeps values > 0.5 (MRCNN.THRESH_BINARIZE): {n1} pixels. Detectron2 "
                                  f"keeps values >= 0.5: {n2} pixels.")


_WHERE = ("only near the contour, within 2 px", "everywhere inside the object", "nowhere: the masks are identical")


@_ask(6, "where_differ",
      "The same 28 x 28 mask and the same box, pasted once by each method. Where do the two binary masks differ?",
      "Both methods resample the same mask over the same area; they differ in where the samples sit and how the "
      "edge is padded.", choices=_WHERE)
def _ch06_where_differ() -> Solution:
    from explainer import masks as Mk
    from explainer import pixels

    mask = torch.zeros(28, 28)
    yy, xx = torch.meshgrid(torch.arange(28.0) + 0.5, torch.arange(28.0) + 0.5, indexing="ij")
    mask[((xx - 14) ** 2 + (yy - 14) ** 2).sqrt() <= 11] = 1.0
    box = [4.3, 3.7, 22.8, 17.2]
    d2 = Mk.paste_masks(mask[None], [box], (22, 28), mask_paste="paste_masks_in_image")[0]
    d1 = Mk.paste_masks(mask[None], pixels.to_inclusive([box]), (22, 28), mask_paste="segm_results")[0]
    err = Mk.boundary_error(d2, d1)
    truth = {_WHERE[0]: 0 < err["differ"] == err["within_2px"], _WHERE[1]: err["differ"] > err["within_2px"],
             _WHERE[2]: err["differ"] == 0}
    return Solution(_only(truth), f"{err['differ']} pixels differ, {err['within_2px']} of them within 2 px of the "
                                  f"contour; mask IoU {_g(Mk.mask_iou(d1, d2), 3)}.")


_SIZES = ("small objects (8 px)", "large objects (128 px)", "the same for both")


@_ask(6, "who_loses",
      "A perfect mask head predicts discs exactly; the masks are pasted both ways. For which objects does Detectron's "
      "paste lose more IoU against the truth than Detectron2's?",
      "Detectron truncates the box to whole pixels and pads the mask by one cell. How large is one pixel compared "
      "with the object?", choices=_SIZES)
def _ch06_who_loses() -> Solution:
    from explainer import masks as Mk

    rows = Mk.synthetic_paste_experiment(sizes=(8, 128), n=6, shape="disc")
    gap = {int(r["size"]): r["detectron2"] - r["detectron"] for r in rows}
    truth = {_SIZES[0]: gap[8] > gap[128] + 0.005, _SIZES[1]: gap[128] > gap[8] + 0.005,
             _SIZES[2]: abs(gap[8] - gap[128]) <= 0.005}
    told = "; ".join(f"{int(r['size'])} px: {_g(r['detectron'], 3)} against {_g(r['detectron2'], 3)}" for r in rows)
    return Solution(_only(truth), f"Mean IoU with the truth, Detectron against Detectron2 ({rows[0]['n']} discs per "
                                  f"size): {told}.")


# --------------------------------------------------------------------------------------------------
# Chapter 7: training
# --------------------------------------------------------------------------------------------------
@_ask(7, "sparse_share",
      "One training batch of two images after NMS: a crowded image whose 10 proposals score 0.90 .. 0.99 and a sparse "
      "one whose 10 proposals score 0.10 .. 0.19. With POST_NMS_TOPK_TRAIN = 6 counted per batch (Detectron's "
      "rule), how many proposals does the sparse image keep?",
      "Detectron concatenates the proposals of every image in the batch before it takes the top k by score.",
      tolerance=0.0)
def _ch07_sparse_share() -> Solution:
    from explainer import training

    crowded, sparse = torch.linspace(0.90, 0.99, 10), torch.linspace(0.10, 0.19, 10)
    props = [torch.tensor([[0.0, 0.0, 5.0, 5.0]]).repeat(10, 1)] * 2
    batch = [len(k) for k in training.select_post_nms_topk(props, [crowded, sparse], 6, per_image=False)]
    image = [len(k) for k in training.select_post_nms_topk(props, [crowded, sparse], 6, per_image=True)]
    return Solution(float(batch[1]), f"Per batch the 6 best scores are all in the crowded image: kept {batch}. "
                                     f"Detectron2 counts per image: kept {image}.")


_LOSSES = ("L1 (Detectron2's default, beta 0)", "smooth L1, beta 1/9 (Detectron's RPN)",
           "smooth L1, beta 1 (Detectron's box head)")


@_ask(7, "push",
      "A box whose regression residual is 0.05 is almost right. Which loss pushes it hardest (largest gradient)?",
      "Smooth L1 is quadratic below beta: its gradient there is x / beta. What is L1's gradient?", choices=_LOSSES)
def _ch07_push() -> Solution:
    from explainer import training

    r = torch.tensor([0.05])
    grads = {name: float(training.smooth_l1_grad(r, beta)) for name, beta in zip(_LOSSES, (0.0, 1 / 9, 1.0))}
    top = max(grads.values())
    told = ", ".join(f"{name.split(' (')[0]}: {_g(g, 3)}" for name, g in grads.items())
    return Solution(_only({k: v == top for k, v in grads.items()}), f"Gradients at 0.05: {told}. L1 keeps refining "
                                                                    f"boxes that are already nearly right.")


# --------------------------------------------------------------------------------------------------
# Chapter 8: deployment
# --------------------------------------------------------------------------------------------------
@_ask(8, "same_pad",
      "TensorFlow's \"SAME\" padding for a 3 x 3, stride-2 convolution on a 224-pixel input: how many pixels does it "
      "pad before the first row (at the top)?",
      "SAME pads (ceil(n / s) - 1) s + k - n pixels in total and splits them unevenly. Which side gets the extra one?",
      tolerance=0.0, unit="px")
def _ch08_same_pad() -> Solution:
    from explainer import deployment as Dep

    before, after = Dep.same_padding(224, 3, 2)
    c_tf = float(Dep.conv_output_centres(224, 3, 2)[0])
    c_sym = float(Dep.conv_output_centres(224, 3, 2, "symmetric")[0])
    return Solution(float(before), f"TF pads ({before}, {after}); PyTorch and Caffe2 pad (1, 1). Output 0 is then "
                                   f"centred on input {_g(c_tf)} in TF and {_g(c_sym)} in PyTorch: half a stride.")


_SIZES_IN = ("224", "225", "both", "neither")


@_ask(8, "same_agree",
      "For which input size do TF's SAME padding and PyTorch's symmetric k // 2 padding put output 0 of a 3 x 3, "
      "stride-2 convolution on the same input pixel?",
      "Compute SAME's total padding for each size: when is it even?", choices=_SIZES_IN)
def _ch08_same_agree() -> Solution:
    from explainer import deployment as Dep

    agree = {n: float(Dep.conv_output_centres(n, 3, 2)[0]) == float(Dep.conv_output_centres(n, 3, 2, "symmetric")[0])
             for n in (224, 225)}
    truth = {"224": agree[224] and not agree[225], "225": agree[225] and not agree[224],
             "both": agree[224] and agree[225], "neither": not (agree[224] or agree[225])}
    return Solution(_only(truth), f"SAME pads {Dep.same_padding(224, 3, 2)} on 224 and {Dep.same_padding(225, 3, 2)} "
                                  f"on 225: with an odd size the total is even and both sides get k // 2.")


_MOVES = ("towards the top-left", "towards the bottom-right", "it does not move", "it is stretched about the centre")


@_ask(8, "asymmetric",
      "An image is upsampled by 2 with TF1's default resize_bilinear (the asymmetric mode, x_in = x_out / s) instead of "
      "the half-pixel mode of PyTorch, PIL and OpenCV. Which way does the content move?",
      "Compare the input coordinate each mode samples for the same output pixel; an output that samples further "
      "right shows content from further right.", choices=_MOVES)
def _ch08_asymmetric() -> Solution:
    from explainer import deployment as Dep

    d = Dep.resize_coordinate_map(20, 40, "asymmetric") - Dep.resize_coordinate_map(20, 40, "half_pixel")
    lo, hi = float(d.min()), float(d.max())
    truth = {_MOVES[0]: lo > 0, _MOVES[1]: hi < 0, _MOVES[2]: max(abs(lo), abs(hi)) < 1e-9,
             _MOVES[3]: lo < 0 < hi}
    return Solution(_only(truth), f"Every output pixel samples {_g(hi)} input px further right and down (0.5 - 0.5 / "
                                  f"s), so what it shows sits that much towards the top-left.")


# --------------------------------------------------------------------------------------------------
# Chapter 9: checkpoint audit
# --------------------------------------------------------------------------------------------------
@_ask(9, "cls_rows",
      "Detectron's COCO cls_score has 81 rows (background first). After conversion for Detectron2 "
      "(NUM_CLASSES: 80), how many rows does cls_score have?",
      "Detectron2's classifier still scores the background; only bbox_pred loses its background rows.",
      tolerance=0.0)
def _ch09_cls_rows() -> Solution:
    from explainer import labels as L

    params = {"cls_score_w": torch.arange(81.0).view(81, 1), "cls_score_b": torch.arange(81.0),
              "bbox_pred_w": torch.zeros(324, 1), "bbox_pred_b": torch.zeros(324)}
    out = L.convert_box_predictor(params)["cls_score.bias"]
    return Solution(float(out.shape[0]), f"{out.shape[0]} rows (K + 1): the loader moves row 0, the background, to "
                                         f"the end (its last row is Detectron's row {int(out[-1])}); a size mismatch "
                                         f"81 against 82 means NUM_CLASSES counted the background.")


@_ask(9, "agnostic_rows",
      "A class-agnostic Detectron box regressor (MODEL.CLS_AGNOSTIC_BBOX_REG) has 8 rows: background and foreground. "
      "How many rows does it have after Detectron2's loader?",
      "The loader applies one rule to every bbox_pred, whatever its layout: which rows does it drop?", tolerance=0.0)
def _ch09_agnostic_rows() -> Solution:
    from explainer import labels as L

    params = {"cls_score_w": torch.zeros(81, 1), "cls_score_b": torch.zeros(81),
              "bbox_pred_w": torch.arange(8.0).view(8, 1), "bbox_pred_b": torch.zeros(8)}
    out = L.convert_box_predictor(params)["bbox_pred.weight"]
    return Solution(float(out.shape[0]), f"w[4:] keeps the foreground rows {out[:, 0].int().tolist()}: "
                                         f"{out.shape[0]} rows, exactly Detectron2's class-agnostic layout.")


_LOADS = ("the file is created, then loading fails", "loading is refused before anything runs",
          "the payload is skipped and the rest loads")


@_ask(9, "unsafe_pickle",
      "explainer.checkpoints.load_checkpoint is given a pickle whose payload would open a file for writing when "
      "unpickled. What happens?",
      "A checkpoint needs containers, numbers, strings and arrays. What does a restricted unpickler do with "
      "anything else?", choices=_LOADS)
def _ch09_unsafe_pickle() -> Solution:
    from explainer.checkpoints import checkpoint as Ck

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "created_by_pickle.txt"
        evil = Path(tmp) / "evil.pkl"
        # protocol 0 by hand: GLOBAL io.open, MARK, the two arguments, TUPLE, REDUCE, STOP
        evil.write_bytes(b"cio\nopen\n(" + f"V{target}\n".encode() + b"Vw\ntR.")
        try:
            Ck.load_checkpoint(evil)
            refused, message = False, ""
        except ValueError as e:
            refused, message = True, str(e)
        created = target.exists()
    truth = {_LOADS[0]: created and refused, _LOADS[1]: refused and not created, _LOADS[2]: not refused}
    return Solution(_only(truth), f"Refused with: {message.split(': ', 1)[-1]}. The file was "
                                  f"{'created' if created else 'never created'}.")


# --------------------------------------------------------------------------------------------------
# Chapter 10: diagnosing two sets of detections
# --------------------------------------------------------------------------------------------------
def _detections(seed: int = 0) -> Dict[int, Dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for image in range(3):
        wh = torch.rand(20, 2, generator=g) * 120 + 10
        xy = torch.rand(20, 2, generator=g) * 400
        out[image] = {"boxes": torch.cat([xy, xy + wh], 1).double(), "scores": torch.rand(20, generator=g).double(),
                      "labels": torch.randint(0, 30, (20,), generator=g)}
    return out


def _diagnosed(change: Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]) -> str:
    from explainer.diagnosis import report as Dx

    ref = _detections()
    return Dx.diagnose(ref, {k: change(dict(v)) for k, v in ref.items()}).top.name


_CAUSE_CHOICES = ("plus_one", "half_pixel_shift", "scale", "translation")
_LABEL_CHOICES = ("label_offset", "label_permutation", "coco_category_ids", "threshold_or_topk")


@_ask(10, "plus_one",
      "A converted model's detections match the original's, but x1 and y1 agree while x2 and y2 are larger by exactly "
      "1 px on every box. Which cause does explainer.diagnosis name?",
      "Which coordinates moved, and by how much? A shift moves all four, a scale grows with the position.",
      choices=_CAUSE_CHOICES)
def _ch10_plus_one() -> Solution:
    name = _diagnosed(lambda d: {**d, "boxes": d["boxes"] + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)})
    return Solution(name, f"diagnose names {name}: inclusive Detectron corners (x2 = last pixel) against "
                          f"continuous Detectron2 corners (x2 = where the last pixel ends).")


@_ask(10, "half_pixel",
      "Every coordinate of every box (x1, y1, x2, y2) is larger by exactly 0.5 px. Which cause does the diagnosis "
      "name?",
      "Half a pixel is the distance between a pixel's index and its centre as a continuous coordinate.",
      choices=_CAUSE_CHOICES)
def _ch10_half_pixel() -> Solution:
    name = _diagnosed(lambda d: {**d, "boxes": d["boxes"] + 0.5})
    return Solution(name, f"diagnose names {name}: one side converted between pixel indices and continuous "
                          f"coordinates and the other did not (ROIAlign aligned, an exporter's coordinate mode).")


@_ask(10, "labels_up",
      "Boxes and scores match one to one, but every label of the converted model is larger by one. Which cause does "
      "the diagnosis name?",
      "Is the change the same constant for every class, or does it depend on the class?", choices=_LABEL_CHOICES)
def _ch10_labels_up() -> Solution:
    name = _diagnosed(lambda d: {**d, "labels": d["labels"] + 1})
    return Solution(name, f"diagnose names {name}: one constant for every label, the fingerprint of background "
                          f"first (Detectron) against last (Detectron2) when the classifier rows were not moved.")


# --------------------------------------------------------------------------------------------------
# Chapter 11: the first divergence
# --------------------------------------------------------------------------------------------------
_STAGE_CAUSES = ("channel_permutation", "channel_affine", "shift", "constant_offset")


@_ask(11, "bgr",
      "The ONNX run is fed the image in RGB, the PyTorch run in BGR. Which cause does trace.compare name for the "
      "input stage?",
      "Look at what each candidate channel equals in the reference.", choices=_STAGE_CAUSES)
def _ch11_bgr() -> Solution:
    from explainer import trace

    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255
    rep = trace.compare({"input": x}, {"input": x[:, [2, 1, 0]]})
    st = rep.stages["input"]
    return Solution(st.cause.name, f"compare names {st.cause.name}: {st.cause.explanation}")


_LATER = ("inherited", "unexplained", "shift", "identical")


@_ask(11, "later_stages",
      "A model's first stage diverges (its channels are swapped) and every later stage therefore differs too. What "
      "does trace.compare call those later stages?",
      "compare walks the stages in network order and stops naming new causes where the first one explains what "
      "follows.", choices=_LATER)
def _ch11_later_stages() -> Solution:
    from explainer import trace

    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    w = torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)
    ref = {"input": x, "scaled": x * w, "summed": (x * w).sum(1, keepdim=True)}
    y = x[:, [2, 1, 0]]
    cand = {"input": y, "scaled": y * w, "summed": (y * w).sum(1, keepdim=True)}
    rep = trace.compare(ref, cand)
    later = {rep.stages[s].cause.name for s in ("scaled", "summed")}
    name = later.pop() if len(later) == 1 else "unexplained"
    return Solution(name, f"First divergence: {rep.first_divergence} ({rep.stages['input'].cause.name}); the later "
                          f"stages are {name}: fix the first divergence first.")


@_ask(11, "asymmetric_shift",
      "An upsampling by s = 8 (a feature map to the image) is exported with Resize's coordinate_transformation_mode "
      "'asymmetric' instead of 'half_pixel'. By how many output pixels is the content shifted?",
      "half_pixel reads x_in = (x + 0.5) / s - 0.5, asymmetric reads x_in = x / s. Find the output x at which "
      "half_pixel reads what asymmetric reads at 0.", tolerance=0.01, unit="px")
def _ch11_asymmetric_shift() -> Solution:
    from explainer import deployment as Dep

    s = 8
    d = Dep.resize_coordinate_map(10, 10 * s, "asymmetric") - Dep.resize_coordinate_map(10, 10 * s, "half_pixel")
    shift = float(d.mean()) * s
    return Solution(shift, f"asymmetric samples {_g(d.mean())} input px (0.5 - 0.5 / s) further than half_pixel, "
                           f"which is {_g(shift)} output px = (s - 1) / 2.")


# --------------------------------------------------------------------------------------------------
# Chapter 12: how much each difference matters
# --------------------------------------------------------------------------------------------------
_STILL_THERE = {"the anchor centres (offset)": "anchor_offset", "ROIAlign's half-pixel shift": "roi_aligned",
                "the sampling ratio": "sampling_ratio", "the mask paste": "mask_paste"}


@_ask(12, "remaining",
      "A Detectron FPN model is converted and run with the converted-model settings (OFFSET 0.5, POOLER_TYPE "
      "ROIAlign with sampling ratio 2 as its config set, Detectron's pixel means). Which of these differences is "
      "still there?",
      "Which of them does a Detectron2 config key select, and which is written into Detectron2's code with no "
      "option?", choices=tuple(_STILL_THERE))
def _ch12_remaining() -> Solution:
    from explainer import effects as E
    from explainer.course import measured

    left = {d.key for d in measured.remaining_differences(E.PRACTITIONER)}
    answer = _only({text: key in left for text, key in _STILL_THERE.items()})
    rows = ", ".join(sorted(left))
    return Solution(answer, f"remaining_differences(PRACTITIONER) lists {rows}: no config key selects Detectron's "
                            f"+1 widths in Detectron2's own modules, its rounded anchor sizes or its mask paste. "
                            f"OFFSET, POOLER_TYPE and POOLER_SAMPLING_RATIO undo the other three.")


_MASKS_ONLY = {"the mask paste": "mask_paste", "anchor rounding": "anchor_rounding",
               "the sampling ratio": "sampling_ratio", "the pixel means": "pixel_mean"}


@_ask(12, "masks_only",
      "On the course's converted detector, which one of these differences changes the masks but reproduces every "
      "box?",
      "Ask where each difference acts: before the box head (then boxes move too) or after the boxes are final.",
      choices=tuple(_MASKS_ONLY))
def _ch12_masks_only() -> Solution:
    from explainer.course import measured

    m = measured.measure_on_course_detector()
    only = {text: m[key]["boxes"] >= 1.0 - 1e-9 and m[key]["masks"] < 1.0 for text, key in _MASKS_ONLY.items()}
    answer = _only(only)
    key = _MASKS_ONLY[answer]
    return Solution(answer, f"Measured over {m[key]['detections']} detections: {answer} reproduces "
                            f"{100 * m[key]['boxes']:.0f}% of the boxes and {100 * m[key]['masks']:.0f}% of the masks. "
                            f"It acts after the boxes are final, so it can only move mask pixels; the others change "
                            f"features or proposals, and the boxes with them.")


_PUBLISHED = ("it does not significantly affect AP", "about 1 AP better in box AP", "about 0.5 AP worse in mask AP",
              "it was never measured")


@_ask(12, "published_sampling",
      "Detectron2's authors trained models with POOLER_SAMPLING_RATIO 0 instead of the 2 of Detectron's FPN configs. "
      "What did they "
      "publish about its effect on trained AP?",
      "Chapter 12's table cites the Detectron1-Comparisons README for this row: read the quote, not the measured "
      "column.", choices=_PUBLISHED)
def _ch12_published_sampling() -> Solution:
    from explainer import effects as E

    row = next(d for d in E.DIFFERENCES if d.key == "sampling_ratio")
    quoted = " ".join(s.quote for s in row.source).lower()
    says = {_PUBLISHED[0]: "does not significantly affect ap" in quoted,
            _PUBLISHED[1]: "1 ap better in box ap" in quoted,
            _PUBLISHED[2]: "worse" in quoted and "mask ap" in quoted,
            _PUBLISHED[3]: not row.source}
    answer = _only(says)
    return Solution(answer, f"The row cites {row.source[0].where}: \"{row.source[0].quote}\". A converted "
                            f"model's outputs still change with it (chapter 12's measured column): the published "
                            f"figure is about trained models, each trained with its own setting.")


# --------------------------------------------------------------------------------------------------
# Chapter 13: torchvision's detectors
# --------------------------------------------------------------------------------------------------
@_ask(13, "anchor_width",
      "torchvision's AnchorGenerator makes the anchor of size 32 and aspect ratio 0.5 (h/w). How wide is it, in "
      "pixels?",
      "w = size / sqrt(ratio); torchvision rounds the corners -w/2 and +w/2, not the width.", unit="px")
def _ch13_anchor_width() -> Solution:
    from explainer import anchors as A

    a = A.torchvision_cell_anchors((32,), (0.5,))[0]
    exact = A.d2_cell_anchors((32,), (0.5,))[0]
    det = A.detectron_cell_anchors(4, (32,), (0.5,))[0]
    w = float(a[2] - a[0])
    return Solution(w, f"The exact width is {_g(exact[2] - exact[0])} px (Detectron2); torchvision rounds the corners "
                       f"+-{_g(exact[2])} to +-{_g(a[2])}, so {_g(w)} px, always an even number. Detectron, rounding "
                       f"sizes on the stride-4 base window, makes it {_g(det[2] - det[0] + 1)} px.")


_POOLERS = ("Detectron's", "Detectron2's", "neither")


@_ask(13, "pooler",
      "torchvision's MultiScaleRoIAlign samples a box's bins at the same points as which codebase's default "
      "ROIAlign?",
      "Compare the aligned flag and the sampling ratio of the three presets.", choices=_POOLERS)
def _ch13_pooler() -> Solution:
    from explainer import roi_align as R
    from explainer.conventions import DETECTRON, DETECTRON2, TORCHVISION

    box = [13.0, 7.0, 61.0, 50.0]

    def points(c):
        return R.sampling_points(box, 7, (8, 8), 1 / 8, c.sampling_ratio, c.roi_aligned)["points"]

    tv = points(TORCHVISION)
    same = {_POOLERS[0]: _same_points(tv, points(DETECTRON)), _POOLERS[1]: _same_points(tv, points(DETECTRON2))}
    same[_POOLERS[2]] = not any(same.values())
    return Solution(_only(same), f"torchvision calls roi_align with aligned={TORCHVISION.roi_aligned} and "
                                 f"sampling_ratio={TORCHVISION.sampling_ratio}, Detectron's ROIAlign; Detectron2's "
                                 f"ROIAlignV2 shifts every sample by half a feature cell and samples adaptively.")


def _same_points(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and _same(a, b)


_PASTES = ("Detectron's segm_results, on continuous boxes", "Detectron2's paste_masks_in_image", "a method of its own")


@_ask(13, "paste",
      "torchvision's roi_heads.paste_masks_in_image(padding=1) pastes a mask the way of which codebase?",
      "It pads the mask by one cell and expands the box by (M + 2) / M before resizing.", choices=_PASTES)
def _ch13_paste() -> Solution:
    from explainer import masks as Mk
    from explainer import torchvision_way as TV

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 28, 28, generator=g)
    xy = torch.rand(6, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 8 + torch.rand(6, 2, generator=g) * 30], dim=1)
    tv = TV.paste_masks_in_image(masks[:, None], boxes, (80, 80))[:, 0]
    d1 = Mk.paste_masks(masks, boxes, (80, 80), mask_paste="segm_results", soft=True)
    d2 = Mk.paste_masks(masks, boxes, (80, 80), mask_paste="paste_masks_in_image", soft=True)
    gap1, gap2 = float((tv - d1).abs().max()), float((tv - d2).abs().max())
    truth = {_PASTES[0]: gap1 < 1e-4, _PASTES[1]: gap2 < 1e-4}
    truth[_PASTES[2]] = not any(truth.values())
    return Solution(_only(truth), f"On six random masks, the largest difference of torchvision's soft paste from "
                                  f"Detectron's steps on the same continuous boxes is {_g(gap1)}; from Detectron2's "
                                  f"it is {_g(gap2)}. Fed continuous boxes, Detectron's +1 sizes make torchvision's "
                                  f"masks one pixel wider and taller than Detectron's own.")
