"""Detectron2's resize against Pillow itself: ``deployment.pil_resize`` (what ``ResizeTransform.apply_image`` does
to uint8 images) and ``deployment.resize`` against ``PIL.Image.resize(..., Image.BILINEAR)``, and Detectron2's
preprocessing against the same steps written with Pillow and numpy.

PIL's BILINEAR antialiases when it shrinks (its triangle filter widens by the reduction factor) and is plain
bilinear when it enlarges: ``resize(antialias=True)`` matches it in both cases, ``resize(antialias=False)`` only when
enlarging. The check needs the ``crosscheck`` extra; without it the test is skipped with the reason, and fails under
CI=true.
"""

from __future__ import annotations

import numpy as np
import torch

from explainer import deployment as Dep
from tests.crosscheck import require

Image = require("PIL.Image", module_level=True)
PIL = require("PIL", module_level=True)
PILLOW_MAJOR = int(PIL.__version__.split(".")[0])


def _sizes(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield tuple(int(v) for v in rng.integers(1, 50, 2)), tuple(int(v) for v in rng.integers(1, 90, 2)), rng


def test_uint8_bit_for_bit_in_one_of_the_two_pass_orders():
    # Pillow <= 12 always resizes horizontally first; Pillow 13 goes vertically first for some reductions of the
    # height (PR #9549). Every output must equal one of the two orders exactly, and the horizontal one before 13.
    vertical = 0
    for (H, W), (h, w), rng in _sizes(0, 300):
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        ref = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        x = torch.from_numpy(img).permute(2, 0, 1)
        hv = Dep.pil_resize(x, (h, w)).permute(1, 2, 0).numpy()
        if np.array_equal(hv, ref):
            continue
        vh = Dep.pil_resize(x, (h, w), vertical_first=True).permute(1, 2, 0).numpy()
        assert np.array_equal(vh, ref), ((H, W), (h, w))
        assert np.abs(hv.astype(int) - vh).max() <= 1
        vertical += 1
    assert vertical == 0 or PILLOW_MAJOR >= 13


def test_float_mode_bit_for_bit():
    for (H, W), (h, w), rng in _sizes(1, 200):
        img = rng.random((H, W), dtype=np.float32) * 10
        ref = np.asarray(Image.fromarray(img, mode="F").resize((w, h), Image.BILINEAR))
        hv = Dep.pil_resize(torch.from_numpy(img), (h, w)).numpy()
        assert np.array_equal(hv, ref) or np.array_equal(Dep.pil_resize(torch.from_numpy(img), (h, w), True).numpy(), ref)


def test_resize_antialias_is_pil_bilinear():
    for (H, W), (h, w), rng in _sizes(2, 200):
        img = rng.random((H, W), dtype=np.float32) * 10
        ref = np.asarray(Image.fromarray(img, mode="F").resize((w, h), Image.BILINEAR))
        got = Dep.resize(torch.from_numpy(img)[None].double(), (h, w), "half_pixel", antialias=True)[0].numpy()
        np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)
        if h >= H and w >= W:       # enlarging: PIL's filter is plain bilinear
            plain = Dep.resize(torch.from_numpy(img)[None].double(), (h, w), "half_pixel")[0].numpy()
            np.testing.assert_allclose(plain, ref, atol=2e-5, rtol=0)


def test_plain_bilinear_is_not_pil_when_shrinking():
    img = np.random.default_rng(3).random((40, 40), dtype=np.float32) * 10
    ref = np.asarray(Image.fromarray(img, mode="F").resize((10, 10), Image.BILINEAR))
    plain = Dep.resize(torch.from_numpy(img)[None], (10, 10), "half_pixel")[0].numpy()
    assert np.abs(plain - ref).max() > 0.5


def test_detectron2_preprocessing_equals_pillow_and_numpy():
    # ResizeShortestEdge(60, 100): newh, neww rounded half up; PIL BILINEAR on the uint8 BGR array; then x - PIXEL_MEAN
    rng = np.random.default_rng(5)
    bgr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    got = Dep.detectron2_preprocess(torch.from_numpy(bgr).permute(2, 0, 1), short_edge=60, max_size=100)
    scale = 60 / 37
    h, w = 60, int(53 * scale + 0.5)
    resized = np.asarray(Image.fromarray(bgr).resize((w, h), Image.BILINEAR))
    ref = torch.as_tensor(resized.transpose(2, 0, 1).copy()) - torch.tensor([103.530, 116.280, 123.675]).view(3, 1, 1)
    assert got.shape == (3, h, w) and torch.equal(got, ref)
