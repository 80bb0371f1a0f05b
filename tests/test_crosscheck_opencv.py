"""Detectron's resizes against OpenCV itself: ``deployment.cv2_resize`` (the image resize of
``utils/blob.py:prep_im_for_blob`` and the mask resize of ``core/test.py:segm_results``) against ``cv2.resize``.

OpenCV's own INTER_LINEAR code is compared bit for bit (``cv2.ipp.setUseIPP(False)``); with Intel IPP enabled (the
opencv-python wheels' default) OpenCV hands float32 resizes to IPP, whose results are compared within a few float32
units of the image's range. The check needs the ``crosscheck`` extra; without it the test is skipped with the reason, and
fails under CI=true.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainer import deployment as Dep
from explainer import masks as Mk
from tests.crosscheck import require

cv2 = require("cv2", module_level=True)


@pytest.fixture
def opencv_own_code():
    """OpenCV's own resize code (no IPP) for the duration of a test."""
    before = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    yield
    cv2.ipp.setUseIPP(before)


def _cases(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for k in range(n):
        H, W = (int(v) for v in rng.integers(1, 40, 2))
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        if k % 5 == 0:                                   # exact 2x reductions (OpenCV's area code), odd edges too
            h, w = max(H // 2, 1), max(W // 2, 1)
            H, W = 2 * h + int(rng.integers(0, 2)), 2 * w + int(rng.integers(0, 2))
        c = int(rng.choice([1, 2, 3, 4]))
        yield rng.standard_normal((H, W, c)).astype(np.float32) * 50, (h, w)


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def test_cv2_resize_dsize_bit_for_bit(opencv_own_code):
    for img, (h, w) in _cases(0, 300):
        ref = cv2.resize(img, (w, h))
        ref = ref[:, :, None] if ref.ndim == 2 else ref
        assert np.array_equal(_hwc(Dep.cv2_resize(_chw(img), (h, w))), ref), (img.shape, (h, w))


@pytest.mark.parametrize("fx", [0.5, 0.75, 1.5625, 5 / 3, 2.0, 0.3333, 1.001])
def test_cv2_resize_fx_bit_for_bit(opencv_own_code, fx):
    rng = np.random.default_rng(int(fx * 1000))
    for _ in range(25):
        H, W = (int(v) for v in rng.integers(1, 60, 2))
        if round(W * fx) < 1 or round(H * fx) < 1:
            continue
        img = rng.standard_normal((H, W, 3)).astype(np.float32) * 50
        ref = cv2.resize(img, None, None, fx=fx, fy=fx, interpolation=cv2.INTER_LINEAR)
        got = _hwc(Dep.cv2_resize(_chw(img), fx=fx))
        assert got.shape == ref.shape and np.array_equal(got, ref), (img.shape, fx)


def test_cv2_resize_within_ipp_rounding():
    if not cv2.ipp.useIPP():
        pytest.skip("this OpenCV build has no Intel IPP: its own code is checked bit for bit above")
    worst = 0.0
    for img, (h, w) in _cases(1, 200):
        ref = cv2.resize(img, (w, h))
        ref = ref[:, :, None] if ref.ndim == 2 else ref
        got = _hwc(Dep.cv2_resize(_chw(img), (h, w)))
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(img).max()))
    assert worst < 1e-5        # a few float32 units of the image's range (measured: about 1e-6)


def test_detectron_image_preprocessing_equals_opencv(opencv_own_code):
    # prep_im_for_blob: float32 image, minus the float64 PIXEL_MEANS in place, cv2.resize with fx = fy = im_scale
    rng = np.random.default_rng(7)
    bgr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    blob, scale = Dep.detectron_preprocess(torch.from_numpy(bgr).permute(2, 0, 1), target_size=60, max_size=100)
    im = bgr.astype(np.float32, copy=True)
    im -= np.array([[[102.9801, 115.9465, 122.7717]]])
    ref = cv2.resize(im, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    assert scale == 60 / 37 and np.array_equal(_hwc(blob), ref)


@pytest.mark.parametrize("M", [14, 28])
def test_mask_resizes_equal_opencv(opencv_own_code, M):
    # the padded M x M mask of segm_results, to every output size from 1 to 50 (both axes)
    i, j = np.mgrid[0:M, 0:M].astype(np.float32)
    padded = np.zeros((M + 2, M + 2), np.float32)
    padded[1:-1, 1:-1] = 1.0 / (1.0 + np.exp(-(M * 0.36 - np.hypot(i - M / 2, j - M / 2)) / 1.5))
    for h in range(1, 51, 3):
        for w in range(1, 51, 2):
            ref = cv2.resize(padded, (w, h))
            assert np.array_equal(Dep.cv2_resize(torch.from_numpy(padded), (h, w)).numpy(), ref), (h, w)


def test_paste_of_pinned_box_equals_opencv_pipeline(opencv_own_code):
    # the same steps with numpy and cv2: expand_boxes in float32, int32, cv2.resize, > 0.5 in float32
    box = np.array([[5, 6, 33, 48]], np.float32)
    w_half, h_half = (box[:, 2] - box[:, 0]) * .5, (box[:, 3] - box[:, 1]) * .5
    x_c, y_c = (box[:, 2] + box[:, 0]) * .5, (box[:, 3] + box[:, 1]) * .5
    w_half *= 16.0 / 14.0
    h_half *= 16.0 / 14.0
    ref_box = np.array([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half]).T.astype(np.int32)[0]
    padded = np.zeros((16, 16), np.float32)
    padded[1:-1, 1:-1] = 1.0
    mask = cv2.resize(padded, (int(ref_box[2] - ref_box[0] + 1), int(ref_box[3] - ref_box[1] + 1))) > 0.5
    im = np.zeros((64, 64), bool)
    im[ref_box[1]:ref_box[3] + 1, ref_box[0]:ref_box[2] + 1] = mask
    st = Mk.detectron_paste_steps(torch.ones(14, 14), [5, 6, 33, 48], (64, 64))
    assert ref_box.tolist() == st["int_box"].tolist() == [3, 2, 35, 51]
    assert np.array_equal(st["pasted"].numpy(), im)
