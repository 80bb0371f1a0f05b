"""Chapter 6 dashboards: the read-outs state the package's numbers."""

from __future__ import annotations

from explainer import masks as Mk
from explainer.widgets.masks import MASK, MaskPasteDashboard, PasteExperimentDashboard, PasteStepsDashboard


def test_paste_readout_counts_match_the_package():
    d = MaskPasteDashboard()
    text = d.update(x1=4.3, y1=3.7, x2=22.8, y2=17.2, threshold=0.5)
    d2 = Mk.paste_masks(MASK[None], [[4.3, 3.7, 22.8, 17.2]], (22, 28))[0]
    d1 = Mk.paste_masks(MASK[None], [[4.3, 3.7, 21.8, 16.2]], (22, 28), mask_paste="segm_results")[0]
    line = next(x for x in text.splitlines() if x.startswith("pixels on"))
    assert line.split()[-2:] == [str(int(d1.sum())), str(int(d2.sum()))]
    assert d.result["err"]["differ"] == int((d1 ^ d2).sum()) > 0
    d.update(x2=4.5)
    assert d.error and "at least 1 px" in d.error


def test_steps_readout():
    d = PasteStepsDashboard()
    text = d.update(x1=2.3, y1=1.7, x2=20.8, y2=15.2)
    st = Mk.detectron_paste_steps(MASK, [2.3, 1.7, 19.8, 14.2], (22, 28))
    assert str(st["int_box"].tolist()) in text
    assert f"{st['resized'].shape[1]} x {st['resized'].shape[0]}" in text


def test_experiment_shows_the_small_object_gain():
    d = PasteExperimentDashboard()
    d.update(shape="disc", n=10)
    rows = d.result["rows"]
    assert rows[0]["detectron2"] - rows[0]["detectron"] > rows[-1]["detectron2"] - rows[-1]["detectron"]


def test_experiment_reads_out_the_trained_head_too():
    d = PasteExperimentDashboard()
    text = d.update(shape="diamond", n=10)
    assert "trained on its own targets" in text
    first = next(line for line in text.splitlines() if line.startswith("8 "))
    row = d.result["rows"][0]
    assert first.split()[1:4] == [f"{row['detectron']:.3f}", f"{row['detectron_trained']:.3f}", f"{row['detectron2']:.3f}"]
