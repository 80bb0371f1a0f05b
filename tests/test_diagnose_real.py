"""The diagnosis on result files written from real detectors: torchvision's Mask R-CNN and Keypoint R-CNN (ResNet-50
FPN, random weights, seeded) run on matplotlib's bundled photos, converted to COCO results here, and candidates
derived from the same outputs with the conversion mistakes users make.

How the random-weight detectors are made to give confident detections (written down once, used by both models):

* ``torch.manual_seed(0)`` before building, ``weights=None, weights_backbone=None``, ``.eval()``;
* the photos resized to 320 px on the long side and the model's transform set to ``min_size=max_size=320`` (no
  further resize), ``rpn_post_nms_top_n_test=200`` proposals;
* the box predictor's ``cls_score`` bias: Mask R-CNN, -8 for every class and +8 for COCO ids 1, 3, 18, 27, 44, 62,
  88 (so one of those classes takes nearly all of each box's softmax; which one follows the random weights: 1, 18,
  27, 44, 62 and 88 here); Keypoint R-CNN, -8 for the background and +8 for the person;
* the weights of the two box regressors (``rpn.head.bbox_pred`` and ``roi_heads.box_predictor.bbox_pred``)
  multiplied by 0.05: at their random initialisation they turn every proposal into a sliver under 2 px wide; so
  scaled, the boxes are 30 to 290 px, their anchors moved and resized by the random deltas;
* ``roi_heads.score_thresh = 0.05`` and ``detections_per_img`` 50 (masks) or 30 (keypoints), so every image has
  that many detections, scored above 0.6.

The COCO conversion is this file's own (boxes as [x, y, w, h], masks thresholded at 0.5 and encoded with
``pycocotools.mask.encode``, keypoints as flat (x, y, v) triples), independent of the package's
``to_coco_results``. Each model is built and run once per module (``scope="module"``), on one batch that holds
the photos and Grace Hopper's photo flipped (a test-time flip whose detections are mapped back to the photo).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from matplotlib import cbook
from PIL import Image

from explainer.cli import main as cli
from explainer.diagnosis import report as Dx
from tests.test_diagnose import COCO_IDS

PHOTOS = {1: "grace_hopper.jpg", 2: "Minduka_Present_Blue_Pack.png"}
#: The test-time flip's image: Grace Hopper's photo flipped, its detections mapped back to the photo's frame.
FLIPPED = 3
LONG_SIDE = 320
FAVOURED = [1, 3, 18, 27, 44, 62, 88]
#: COCO's keypoints swap left and right under a flip: nose stays, left eye <-> right eye, ... (COCO's keypoint
#: order: nose, then left/right pairs of eye, ear, shoulder, elbow, wrist, hip, knee, ankle).
KEYPOINT_FLIP = [0] + [i + 1 if i % 2 else i - 1 for i in range(1, 17)]


def photo(name: str) -> torch.Tensor:
    """A bundled photo as a float Tensor[3, H, W] in [0, 1], resized to LONG_SIDE px on its long side."""
    with cbook.get_sample_data(name) as f:
        im = Image.open(f).convert("RGB")
    s = LONG_SIDE / max(im.size)
    im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255


def run(model: torch.nn.Module) -> dict:
    """The model on both photos and on the first one flipped: {image id: output}, the flipped output as is (in
    the flipped frame), with the photos' widths."""
    images = {k: photo(n) for k, n in PHOTOS.items()}
    images[FLIPPED] = images[1].flip(-1)
    with torch.no_grad():
        outs = model(list(images.values()))
    return {"outputs": dict(zip(images, outs)), "width": {k: int(v.shape[-1]) for k, v in images.items()}}


def flip_back(out: dict, width: int, minus_one: bool, keypoints_minus_one=None) -> dict:
    """A flipped image's detections mapped back: x -> W - x (continuous coordinates) or W - 1 - x (``minus_one``,
    pixel indices). Boxes: the new x1 is the mapped x2 and the new x2 the mapped x1. Masks: the pixel columns
    reversed (the same under either rule). Keypoints: x mapped (by ``keypoints_minus_one`` when given) and left and
    right swapped back."""
    m = 1.0 if minus_one else 0.0
    b = out["boxes"]
    back = {**out, "boxes": torch.stack([width - m - b[:, 2], b[:, 1], width - m - b[:, 0], b[:, 3]], 1)}
    if "masks" in out:
        back["masks"] = out["masks"].flip(-1)
    if "keypoints" in out:
        mk = m if keypoints_minus_one is None else (1.0 if keypoints_minus_one else 0.0)
        kp = out["keypoints"].clone()
        kp[..., 0] = width - mk - kp[..., 0]
        back["keypoints"] = kp[:, KEYPOINT_FLIP]
    return back


def coco(image_id: int, out: dict, *, plus_one=False, shift=0.0, labels=None, keypoint_shift=0.0) -> list:
    """One image's output as COCO results; the keyword arguments are the conversion mistakes: ``plus_one``
    (Detectron's w + 1, h + 1), ``shift`` added to x and y, ``labels`` (a function of the label tensor) for
    category_id, ``keypoint_shift`` added to the keypoints' x and y."""
    b = out["boxes"].double()
    xywh = torch.cat([b[:, :2] + shift, b[:, 2:] - b[:, :2] + (1.0 if plus_one else 0.0)], 1).tolist()
    cats = (labels(out["labels"]) if labels is not None else out["labels"]).tolist()
    res = [{"image_id": image_id, "category_id": int(c), "bbox": bb, "score": float(s)}
           for bb, c, s in zip(xywh, cats, out["scores"].tolist())]
    if "masks" in out:
        m = (out["masks"][:, 0] > 0.5).numpy().astype(np.uint8)
        rles = mask_util.encode(np.asfortranarray(m.transpose(1, 2, 0)))
        for r, rle in zip(res, rles):
            r["segmentation"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    if "keypoints" in out:
        kp = out["keypoints"].double().clone()
        kp[..., :2] += keypoint_shift
        kp[..., 2] = 1.0
        for r, k in zip(res, kp.reshape(len(kp), -1).tolist()):
            r["keypoints"] = k
    return res


def results(real: dict, *, flip_minus_one=False, flip_keypoints_minus_one=None, **mistake) -> list:
    """A COCO results file for the three images: the flipped one mapped back with W - x (or the other rule)."""
    outs, width = real["outputs"], real["width"]
    out = []
    for k in PHOTOS:
        out += coco(k, outs[k], **mistake)
    back = flip_back(outs[FLIPPED], width[FLIPPED], flip_minus_one, flip_keypoints_minus_one)
    return out + coco(FLIPPED, back, **mistake)


def confident(model: torch.nn.Module, winners: list, detections: int) -> torch.nn.Module:
    """The settings of the module docstring: ``winners`` favoured by the classifier's bias, tamer box deltas."""
    model.eval()
    with torch.no_grad():
        model.rpn.head.bbox_pred.weight.mul_(0.05)
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(0.05)
        bias = model.roi_heads.box_predictor.cls_score.bias
        bias.fill_(-8.0)
        bias[winners] = 8.0
    model.roi_heads.score_thresh = 0.05
    model.roi_heads.detections_per_img = detections
    return model


@pytest.fixture(scope="module")
def maskrcnn():
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    t = time.perf_counter()
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=LONG_SIDE, max_size=LONG_SIDE,
                                  rpn_post_nms_top_n_test=200)
    real = run(confident(model, FAVOURED, 50))
    real["seconds"] = time.perf_counter() - t
    return real


@pytest.fixture(scope="module")
def keypointrcnn():
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    torch.manual_seed(0)
    t = time.perf_counter()
    model = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=LONG_SIDE, max_size=LONG_SIDE,
                                      rpn_post_nms_top_n_test=200)
    real = run(confident(model, [1], 30))
    real["seconds"] = time.perf_counter() - t
    return real


def contiguous(labels: torch.Tensor) -> torch.Tensor:
    """COCO category ids as Detectron2's contiguous class indices (0..79): what is written when the mapping back to
    COCO's ids is forgotten."""
    return torch.tensor([COCO_IDS.index(int(v)) for v in labels], dtype=torch.long)


#: Each conversion mistake: the candidate's arguments to :func:`results` and the cause it must be diagnosed as.
MASK_MISTAKES = {
    "flip_off_by_one": (dict(flip_minus_one=True), "flip_off_by_one"),
    "plus_one_widths": (dict(plus_one=True), "plus_one"),
    "label_offset": (dict(labels=lambda v: v + 1), "label_offset"),
    "coco_id_mix_up": (dict(labels=contiguous), "coco_category_ids"),
    "half_pixel_shift": (dict(shift=0.5), "half_pixel_shift"),
}


@pytest.mark.slow
def test_the_real_mask_rcnn_gives_confident_detections_with_masks(maskrcnn):
    ref = results(maskrcnn)
    per_image = {k: sum(r["image_id"] == k for r in ref) for k in (1, 2, FLIPPED)}
    assert per_image == {1: 50, 2: 50, FLIPPED: 50}
    assert min(r["score"] for r in ref) > 0.6
    assert min(min(r["bbox"][2:]) for r in ref) > 10                # boxes, not slivers
    assert len({r["category_id"] for r in ref}) >= 2                  # several classes, past COCO's id gaps
    assert all(mask_util.area(r["segmentation"]) > 0 for r in ref)   # one RLE per call (see the 10,000-mask test)
    d = Dx.diagnose(ref, results(maskrcnn))
    assert d.names == ["identical"] and d.n_matched == 150


@pytest.mark.slow
@pytest.mark.parametrize("mistake", sorted(MASK_MISTAKES))
def test_each_conversion_mistake_on_real_mask_rcnn_results_is_named(maskrcnn, mistake, tmp_path, capsys):
    kwargs, want = MASK_MISTAKES[mistake]
    ref, cand = results(maskrcnn), results(maskrcnn, **kwargs)
    d = Dx.diagnose(ref, cand)
    assert d.top.name == want, d.summary()
    assert "inference_difference" not in d.names and "unrelated" not in d.names, d.summary()
    r, c = tmp_path / "ref.json", tmp_path / "cand.json"
    r.write_text(json.dumps(ref))
    c.write_text(json.dumps(cand))
    assert cli(["diagnose", str(r), str(c), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["causes"][0]["name"] == want and out["n_matched"] == d.n_matched


@pytest.mark.slow
def test_a_real_flip_off_by_one_on_every_image_ranks_translation_second(maskrcnn):
    # only the test-time flip's image, mapped back by each rule: every box moved by the same (-1, 0), which a
    # translation also fits; the flip is ranked first and both say what tells them apart
    outs, width = maskrcnn["outputs"], maskrcnn["width"][FLIPPED]
    ref = coco(FLIPPED, flip_back(outs[FLIPPED], width, minus_one=False))
    cand = coco(FLIPPED, flip_back(outs[FLIPPED], width, minus_one=True))
    d = Dx.diagnose(ref, cand)
    assert d.names[:2] == ["flip_off_by_one", "translation"], d.summary()
    flip, translation = d.causes[:2]
    assert flip.evidence["dx"] == pytest.approx(-1.0, abs=1e-4) and abs(flip.evidence["dy"]) < 1e-4
    assert translation.evidence["flip_off_by_one_fits"] is True
    assert translation.evidence["tells_apart_from_flip_off_by_one"] == flip.evidence["tells_apart_from_translation"]
    assert d.masks is not None and d.masks["compare"]["n_differing"] == 0  # masks flip by their pixel columns


def tiled(res: list, copies: int) -> list:
    """``res`` repeated over ``copies`` sets of image ids (image k of copy j is 1000 j + k): a results file over
    many images, each with the masks of one real image."""
    return [{**r, "image_id": 1000 * j + r["image_id"]} for j in range(copies) for r in res]


@pytest.mark.slow
def test_a_results_file_with_ten_thousand_masks_is_diagnosed(maskrcnn, tmp_path, capsys):
    # 70 copies of the three images' 150 masks: 10,500 masks over 210 images, 50 per image; the masks of all matched
    # pairs are measured together, far more than the 255 that pycocotools' area() can count in one call
    ref, cand = tiled(results(maskrcnn), 70), tiled(results(maskrcnn, plus_one=True), 70)
    assert len(ref) == 10_500 and len({r["image_id"] for r in ref}) == 210
    t = time.perf_counter()
    d = Dx.diagnose(ref, cand)
    seconds = time.perf_counter() - t
    assert d.top.name == "plus_one" and d.n_matched == 10_500, d.summary()
    assert d.masks is not None and d.masks["compare"]["n_compared"] == 10_500
    assert d.masks["compare"]["n_differing"] == 0                      # the masks themselves are the same
    assert seconds < 60, seconds
    r, c = tmp_path / "ref.json", tmp_path / "cand.json"
    r.write_text(json.dumps(ref))
    c.write_text(json.dumps(cand))
    assert cli(["diagnose", str(r), str(c), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["causes"][0]["name"] == "plus_one"


#: Keypoint conversion mistakes: the candidate's arguments to :func:`results` and the cause to be named.
KEYPOINT_MISTAKES = {
    # Detectron2's COCO writer subtracts 0.5 from its continuous keypoints; one side without it: keypoints only move
    "keypoint_half_pixel": (dict(keypoint_shift=0.5), "keypoint_half_pixel"),
    # the test-time flip's keypoints mapped back with W - 1 - x, its boxes with W - x (x - 1 on keypoints only)
    "flip_keypoints_by_the_index_rule": (dict(flip_keypoints_minus_one=True), "flip_off_by_one"),
    # the whole flipped detection mapped back with W - 1 - x: boxes and keypoints 1 px left, on that image only
    "flip_detections_by_the_index_rule": (dict(flip_minus_one=True), "flip_off_by_one"),
}


@pytest.mark.slow
def test_the_real_keypoint_rcnn_gives_people_with_17_keypoints(keypointrcnn):
    ref = results(keypointrcnn)
    assert len(ref) == 90 and {r["category_id"] for r in ref} == {1} and min(r["score"] for r in ref) > 0.6
    assert all(len(r["keypoints"]) == 17 * 3 for r in ref)
    back = Dx.load_detections(json.loads(json.dumps(ref)))
    first = keypointrcnn["outputs"][1]["keypoints"][0].double()
    torch.testing.assert_close(back.images[1].keypoints[0, :, :2], first[:, :2])
    assert Dx.diagnose(ref, results(keypointrcnn)).names == ["identical"]


@pytest.mark.slow
@pytest.mark.parametrize("mistake", sorted(KEYPOINT_MISTAKES))
def test_keypoint_mistakes_on_real_keypoint_rcnn_results_are_named(keypointrcnn, mistake, tmp_path, capsys):
    kwargs, want = KEYPOINT_MISTAKES[mistake]
    ref, cand = results(keypointrcnn), results(keypointrcnn, **kwargs)
    d = Dx.diagnose(ref, cand)
    assert d.top.name == want, d.summary()
    assert "inference_difference" not in d.names, d.summary()
    if want == "flip_off_by_one":
        # only the flipped image moved, by exactly -1 px in x (W - 1 - (W - x) = x - 1)
        ev = d.top.evidence
        assert "arbitrary (dx, dy)" in ev["tells_apart_from_translation"], ev
        if mistake == "flip_keypoints_by_the_index_rule":  # the boxes agree: found on the keypoints
            assert ev["median_dx"] == pytest.approx(-1.0, abs=1e-3) and ev["fraction_dx_1px"] == 1.0, ev
        else:  # found on the boxes, on the flipped image only; the keypoints moved with them
            assert ev["dx"] == pytest.approx(-1.0, abs=1e-3) and (ev["images_shifted"], ev["images"]) == (1, 3), ev
            assert d.names == ["flip_off_by_one"], d.names
    r, c = tmp_path / "ref.json", tmp_path / "cand.json"
    r.write_text(json.dumps(ref))
    c.write_text(json.dumps(cand))
    assert cli(["diagnose", str(r), str(c), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["causes"][0]["name"] == want
