"""Chapter 7 dashboards: read-outs state the package's numbers; bad settings keep the last drawing."""

from __future__ import annotations

from explainer import training
from explainer.widgets.training import FlipAugmentationDashboard, SmoothL1Dashboard, TopKDashboard, _batch


def test_topk_readout_matches_the_package():
    d = TopKDashboard()
    text = d.update(k=1000, images=2, d2_halved=False)
    e = training.topk_effect(_batch(2), 1000)
    row1 = next(line for line in text.splitlines() if line.startswith("image 1"))
    assert row1.split()[-4:] == [str(e["per_batch_kept"][1]), str(e["per_batch_positives"][1]),
                                 str(e["per_image_kept"][1]), str(e["per_image_positives"][1])]
    # per batch the crowded image takes most of the budget; per image both keep k
    assert e["per_batch_kept"][0] > 5 * e["per_batch_kept"][1]
    assert e["per_image_kept"] == [1000, 1000]


def test_topk_halving_gives_detectron2_k_over_images():
    d = TopKDashboard()
    d.update(k=2000, images=4, d2_halved=True)
    assert d.result["k2"] == 500 and d.result["per_image_kept"] == [500] * 4
    assert sum(d.result["per_batch_kept"]) == 2000


def test_smooth_l1_readout_reference_point():
    d = SmoothL1Dashboard()
    text = d.update(beta=0.0, residual=0.05)
    lines = {line.split(" (")[0]: line for line in text.splitlines()}
    assert lines["L1"].split()[-2:] == ["0.05", "1"]
    assert lines["beta 1/9"].split()[-2:] == ["0.01125", "0.45"]
    assert lines["beta 1"].split()[-2:] == ["0.00125", "0.05"]


def test_flip_readout_polygon_off_by_one_keypoints_agree():
    d = FlipAugmentationDashboard()
    text = d.update(shift=0)
    assert "-1 px" in next(line for line in text.splitlines() if line.startswith("polygon"))
    assert all(line.endswith("agree") for line in text.splitlines() if "pixel index" in line or line.startswith("box"))


def test_flip_annotations_outside_the_image_go_to_the_readout():
    d = FlipAugmentationDashboard()
    d.update(shift=0)
    good = d.result
    d.controls["shift"].max = 20
    d.update(shift=20)
    assert d.error and "inside the image" in d.error
    assert d.result is good
