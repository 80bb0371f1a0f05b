"""The diagnosis on results of torchvision's way against Detectron2's: each difference of
explainer.diagnosis.causes.TORCHVISION_FINGERPRINTS, produced for real, is named by the causes the table lists."""

from __future__ import annotations

import pytest
import torch

from explainer import diagnosis as Dx
from explainer import labels as L
from explainer.conventions import DETECTRON2, TORCHVISION
from explainer.course.cache import N_TEST, course_detector, run_scene
from explainer.course.measured import INPUT_CHANGES
from explainer.diagnosis.causes import CAUSES, TORCHVISION_FINGERPRINTS, torchvision_suspects


def _dets(run):
    return {k: run.detections[k] for k in ("boxes", "scores", "labels", "masks")}


def _files(ds):
    return [dict(d, image_id=i) for i, d in enumerate(ds)]


@pytest.fixture(scope="module")
def reference():
    return [_dets(run_scene(i, DETECTRON2, converted=True)) for i in range(N_TEST)]


def _first(reference, candidate):
    return Dx.diagnose(_files(reference), _files(candidate)).causes[0].name


def test_torchvisions_pooling_is_named(reference):
    tv_pool = DETECTRON2.replace(roi_aligned=TORCHVISION.roi_aligned, sampling_ratio=TORCHVISION.sampling_ratio)
    cand = [_dets(run_scene(i, tv_pool, converted=True)) for i in range(N_TEST)]
    assert _first(reference, cand) in TORCHVISION_FINGERPRINTS["ROIAlign shift"][0]


def test_torchvisions_mask_paste_is_named(reference):
    # the preset's paste on continuous boxes is torchvision's roi_heads.paste_masks_in_image (test_torchvision_conventions)
    cand = [_dets(run_scene(i, DETECTRON2.replace(mask_paste=TORCHVISION.mask_paste), converted=True)) for i in range(N_TEST)]
    assert _first(reference, cand) in TORCHVISION_FINGERPRINTS["mask paste"][0]


def test_torchvisions_input_normalisation_is_named(reference):
    c = course_detector()
    cand = [_dets(c.converted.run(INPUT_CHANGES["tv_input"](c.test[i].image), DETECTRON2)) for i in range(N_TEST)]
    assert _first(reference, cand) in TORCHVISION_FINGERPRINTS["input normalisation"][0]


@pytest.mark.parametrize("n_classes", [3, 80])
def test_torchvisions_category_ids_are_named(reference, n_classes):
    if n_classes == 3:
        ref = reference
    else:   # COCO's 80 classes: one detection per class, on a grid
        xy = torch.stack(torch.meshgrid(torch.arange(10.0), torch.arange(8.0), indexing="ij"), -1).reshape(-1, 2) * 40
        ref = [{"boxes": torch.cat([xy, xy + 30], 1), "scores": torch.linspace(0.9, 0.3, 80),
                "labels": torch.arange(80)}]
    cand = [dict(d, labels=L.contiguous_to_coco_id(d["labels"])) for d in ref]   # torchvision's labels: COCO ids
    name = _first(ref, cand)
    assert name in TORCHVISION_FINGERPRINTS["category ids"][0]
    assert name == ("label_offset" if n_classes == 3 else "coco_category_ids")
    assert "category ids" in torchvision_suspects([name])


def test_the_table_names_causes_of_the_vocabulary():
    for causes, fix in TORCHVISION_FINGERPRINTS.values():
        assert set(causes) <= set(CAUSES) and fix
    assert list(torchvision_suspects(["mask_paste", "identical"])) == ["mask paste"]
    with pytest.raises(ValueError, match="cause_names"):
        torchvision_suspects(["no_such_cause"])
