"""The conventions' colours stay apart for readers with a colour vision deficiency, in greyscale, and on white.

Colour vision deficiencies are simulated with the matrices of Machado, Oliveira & Fernandes (2009), "A
Physiologically-based Model for Simulation of Color Vision Deficiency", IEEE TVCG 15(6), 1291-1298, severity 1.0
(full dichromacy), applied to linear sRGB as the paper prescribes. Differences are measured in CIELAB (D65 white),
where a Euclidean distance (CIE76 Delta E*ab) of about 2.3 is the just noticeable difference (Sharma, Digital Color
Imaging Handbook, 2003).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from explainer.viz.style import CONVENTION_STYLES, legend_handles

#: Machado et al. (2009), table of simulation matrices, severity 1.0; rows give the simulated linear R, G, B.
MACHADO_2009 = {
    "protanopia": [[0.152286, 1.052583, -0.204868],
                   [0.114503, 0.786281, 0.099216],
                   [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968],
                     [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779],
                   [-0.078411, 0.930809, 0.147602],
                   [0.004733, 0.691367, 0.303900]],
}

#: Smallest Delta E*ab between two sides under each simulation: 20, about nine just noticeable differences. The
#: sides are thin lines and small markers, often on a projector, and the difference needed to tell two colours apart
#: grows several-fold as marks get thinner (Stone, Szafir & Setlur, "An Engineering Model for Color Difference as a
#: Function of Size", Color and Imaging Conference 2014), hence a wide margin over the 2.3 of large patches.
MIN_DELTA_E = 20.0
#: Smallest difference of lightness L* between two sides in greyscale (printed, or a washed-out projector), where
#: lightness is all that is left: 10, about four just noticeable differences, so that the two greys are told apart
#: without being set side by side.
MIN_DELTA_L = 10.0
#: WCAG 2.1, success criterion 1.4.11 (non-text contrast): graphical objects needed to understand the content have
#: at least 3:1 contrast with adjacent colours, here the figures' white background.
MIN_CONTRAST_ON_WHITE = 3.0

#: sRGB to CIE XYZ (IEC 61966-2-1, D65), and the D65 white point.
SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
D65 = np.array([0.95047, 1.0, 1.08883])

SIDES = sorted(CONVENTION_STYLES)
PAIRS = list(itertools.combinations(SIDES, 2))


def linear_rgb(color: str) -> np.ndarray:
    """A '#RRGGBB' colour as linear sRGB in [0, 1] (the sRGB transfer function undone)."""
    c = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def lab(rgb_linear: np.ndarray) -> np.ndarray:
    """CIELAB (L*, a*, b*) of a linear sRGB colour (clipped to the gamut, as a screen would show it)."""
    t = SRGB_TO_XYZ @ np.clip(rgb_linear, 0.0, 1.0) / D65
    d = 6.0 / 29.0
    f = np.where(t > d ** 3, np.cbrt(t), t / (3 * d * d) + 4.0 / 29.0)
    return np.array([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])])


def relative_luminance(rgb_linear: np.ndarray) -> float:
    """WCAG 2.1's relative luminance of a linear sRGB colour."""
    return float(np.array([0.2126, 0.7152, 0.0722]) @ np.clip(rgb_linear, 0.0, 1.0))


def contrast_ratio(y1: float, y2: float) -> float:
    """WCAG 2.1's contrast ratio of two relative luminances (1 to 21)."""
    hi, lo = max(y1, y2), min(y1, y2)
    return (hi + 0.05) / (lo + 0.05)


def side_color(name: str) -> str:
    return CONVENTION_STYLES[name]["color"]


def test_the_simulation_is_the_published_one():
    # each matrix keeps white white (its rows sum to 1, to the paper's six decimals) ...
    for name, m in MACHADO_2009.items():
        np.testing.assert_allclose(np.array(m).sum(axis=1), 1.0, atol=2e-6, err_msg=name)
    # ... and makes the colours a dichromat confuses equal: pure red and a green of the same simulated colour are
    # far apart for normal vision and much closer for a protanope
    red, green = linear_rgb("#FF0000"), linear_rgb("#00FF00")
    normal = np.linalg.norm(lab(red) - lab(green))
    protan = np.array(MACHADO_2009["protanopia"])
    assert np.linalg.norm(lab(protan @ red) - lab(protan @ green)) < normal / 2


def test_the_measures_catch_a_pair_that_a_dichromat_cannot_tell_apart():
    # the classic confusion: Okabe-Ito's vermillion and green differ for normal vision and not for a deuteranope
    # once the green's lightness matches; and two colours of equal lightness are one grey
    deutan = np.array(MACHADO_2009["deuteranopia"])
    a, b = linear_rgb("#D55E00"), linear_rgb("#009E73")
    assert np.linalg.norm(lab(a) - lab(b)) > 100
    assert abs(lab(deutan @ a)[0] - lab(deutan @ b)[0]) < MIN_DELTA_L
    assert abs(lab(a)[0] - lab(b)[0]) < MIN_DELTA_L     # so the greyscale check would refuse it


@pytest.mark.parametrize("deficiency", sorted(MACHADO_2009))
def test_sides_stay_apart_under_simulated_colour_vision_deficiency(deficiency):
    m = np.array(MACHADO_2009[deficiency])
    for a, b in PAIRS:
        de = float(np.linalg.norm(lab(m @ linear_rgb(side_color(a))) - lab(m @ linear_rgb(side_color(b)))))
        assert de >= MIN_DELTA_E, f"{deficiency}: {a} and {b} are only Delta E*ab {de:.1f} apart"


def test_sides_stay_apart_in_greyscale():
    for a, b in PAIRS:
        dl = abs(lab(linear_rgb(side_color(a)))[0] - lab(linear_rgb(side_color(b)))[0])
        assert dl >= MIN_DELTA_L, f"greyscale: {a} and {b} differ by only {dl:.1f} in lightness L*"


def test_sides_contrast_with_the_white_background():
    for side in SIDES:
        ratio = contrast_ratio(relative_luminance(linear_rgb(side_color(side))), 1.0)
        assert ratio >= MIN_CONTRAST_ON_WHITE, f"{side}'s colour has {ratio:.2f}:1 contrast with white"


def test_line_styles_and_markers_still_tell_the_sides_apart():
    # colour is never the only cue: each side keeps a line style, a marker and a hatch of its own
    for key in ("linestyle", "marker", "hatch"):
        values = [CONVENTION_STYLES[s][key] for s in SIDES]
        assert len(set(values)) == len(values), f"two sides share the {key} {values}"
    assert [CONVENTION_STYLES[s]["linestyle"] for s in ("detectron", "detectron2", "torchvision")] == ["--", "-", ":"]
    handles = legend_handles("detectron", "detectron2", "torchvision")
    assert [h.get_color() for h in handles] == [side_color(s) for s in ("detectron", "detectron2", "torchvision")]
