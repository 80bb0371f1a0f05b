"""README's "Debug your own Detectron2 model" recipe, run as written on a real detector.

Detectron2 is not installed here, so its one import in the recipe, ``detectron2.export.TracingAdapter``, is a
stand-in written in this file with the same contract (``TracingAdapter(model, inputs)``; called with the
flattened inputs, returns the outputs flattened into tensors). The model is torchvision's Mask R-CNN R50-FPN with
Detectron2's poolers (:mod:`tests.real_detectors`): ``ROIAlign`` per level with ``aligned=True``, as
``POOLER_TYPE: ROIAlignV2`` builds them.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

from tests.real_detectors import maskrcnn
from tests.test_diagnose_real import photo

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"


class TracingAdapter(torch.nn.Module):
    """The contract of Detectron2's ``TracingAdapter`` for a model that takes a list of images: the image in,
    the first image's outputs out, as a tuple of tensors."""

    def __init__(self, model: torch.nn.Module, inputs):
        super().__init__()
        self.model = model
        self.flattened_inputs = tuple(inputs)

    def forward(self, image: torch.Tensor):
        out = self.model([image])[0]
        return tuple(out[k] for k in sorted(out))


def recipe() -> str:
    text = README.read_text()
    block = re.search(r"<!-- recipe: begin -->\n```python\n(.*?)```\n<!-- recipe: end -->", text, re.S)
    assert block, "README.md lost its recipe block"
    return block.group(1)


@pytest.fixture
def detectron2_stand_in(monkeypatch):
    d2 = types.ModuleType("detectron2")
    export = types.ModuleType("detectron2.export")
    export.TracingAdapter = TracingAdapter
    d2.export = export
    monkeypatch.setitem(sys.modules, "detectron2", d2)
    monkeypatch.setitem(sys.modules, "detectron2.export", export)


def run_recipe(code: str, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    image = photo("grace_hopper.jpg")
    namespace = {"model": maskrcnn(aligned_poolers=True), "image": image, "inputs": [image], "torch": torch}
    exec(compile(code, "README.md recipe", "exec"), namespace)
    return namespace


def test_the_recipe_as_written_traces_a_correct_export_clean(detectron2_stand_in, tmp_path, monkeypatch, capsys):
    ns = run_recipe(recipe(), tmp_path, monkeypatch)
    report = ns["report"]
    assert report.ok, report.summary()
    assert "no divergence" in capsys.readouterr().out
    assert "model.backbone:input" in report.stages                    # found inside the adapter
    assert {"model.roi_heads.box_roi_pool", "model.roi_heads.box_roi_pool.level_poolers.0"} <= set(ns["reference"].poolers)
    assert {s.pairing for s in report.stages.values()} == {"scope"}
    assert not ns["model"].training


def test_the_recipe_at_detectron2s_pinned_opset_names_the_roialign_shift(detectron2_stand_in, tmp_path, monkeypatch):
    code = recipe()
    assert "opset_version=16" in code
    ns = run_recipe(code.replace("opset_version=16", "opset_version=11"), tmp_path, monkeypatch)
    report = ns["report"]
    first = report.stages[report.first_divergence]
    assert first.name.startswith("model.roi_heads.box_roi_pool.level_poolers.")
    assert first.cause.name == "shift"
    assert (first.cause.evidence["dy"], first.cause.evidence["dx"]) == pytest.approx((0.5, 0.5), abs=0.02)
