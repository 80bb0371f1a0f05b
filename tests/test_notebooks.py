"""Every notebook runs top to bottom in a fresh kernel, and is committed without outputs."""

from __future__ import annotations

import json

import pytest

from tests.conftest import executed_notebook
from tools.notebooks import NOTEBOOK_DIR, clear_outputs, dirty_cells, error_outputs, main, notebook_paths

ALL = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

#: What libraries keep in the temporary folder across runs (one per user, reused), not files a chapter leaves.
SHARED_TEMP = {
    ".ses": "ONNX Runtime's file of session ids, rewritten by every session it starts",
    "torchinductor_": "torch's compile cache folder (torchinductor_<user>), made when torchvision imports "
                      "torch._dynamo",
}


def test_course_has_its_first_notebooks():
    names = {p.name for p in ALL}
    assert "00_start_here.ipynb" in names
    assert "01_pixels_and_coordinates.ipynb" in names


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = dirty_cells(nb)
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts; clear them before committing"


def test_clear_outputs_leaves_a_notebook_that_the_check_accepts(tmp_path, capsys):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", execution_count=3,
                                                                      outputs=[nbformat.v4.new_output("stream", text="2")])])
    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, str(path))
    assert dirty_cells(json.loads(path.read_text())) == [0]
    assert clear_outputs(path) is True
    assert dirty_cells(json.loads(path.read_text())) == []
    assert clear_outputs(path) is False
    assert main(["--check-clean"]) == 0   # the committed notebooks are clean


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_starts_by_seeding_and_loading_the_package(path):
    """Chapters import the package and seed; they define no logic of their own beyond a few lines."""
    nb = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    if path.name == "00_start_here.ipynb" and not code:
        return
    assert "explainer" in code
    assert "setup_notebook" in code, f"{path.name} must call explainer.setup_notebook() (seeds, style)"


@pytest.mark.notebook
@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_executes_in_fresh_kernel(path):
    nb, seconds = executed_notebook(path)
    assert not error_outputs(nb), error_outputs(nb)
    left = [f for f in nb.metadata["temp_files_left"] if not any(f.split("/")[0].startswith(k) for k in SHARED_TEMP)]
    assert left == [], f"{path.name} left temporary files behind when its kernel exited: {left[:10]}"
    # every dashboard leaves a static image for exports without a kernel
    if any(c.cell_type == "code" and "Dashboard(" in "".join(c.get("source", "")) for c in nb.cells):
        images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
        assert images >= 1, f"{path.name} shows no figure"
