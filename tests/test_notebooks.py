"""Every notebook runs top to bottom in a fresh kernel, and is committed without outputs."""

from __future__ import annotations

import ast
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


def _cell_trees(path):
    """Each code cell parsed (IPython's % and ! lines blanked)."""
    nb = json.loads(path.read_text())
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            src = "".join(c["source"])
            yield ast.parse("\n".join("" if l.lstrip().startswith(("%", "!")) else l for l in src.split("\n")))


def _calls_setup(tree) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "setup_notebook"
               and isinstance(n.func.value, ast.Name) and n.func.value.id == "explainer" for n in ast.walk(tree))


def _imports_explainer(tree) -> bool:
    return any(isinstance(n, ast.Import) and any(a.name.split(".")[0] == "explainer" for a in n.names)
               or isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "explainer" for n in ast.walk(tree))


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_starts_by_seeding_and_loading_the_package(path):
    """Chapters call explainer.setup_notebook() (seeds, style) in the cell that first imports the package, before
    anything else runs; and they define no logic of their own beyond a few lines."""
    trees = list(_cell_trees(path))
    first = next((i for i, t in enumerate(trees) if _imports_explainer(t)), None)
    assert first is not None, f"{path.name} never imports the package"
    assert _calls_setup(trees[first]), f"{path.name}: the first cell that imports explainer must call explainer.setup_notebook()"
    assert not any(_calls_setup(t) for t in trees[:first]), path.name
    big = [n.name for t in trees for n in ast.walk(t) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and len(n.body) > 6]
    assert not big, f"{path.name} defines logic that belongs in the package: {big}"


def test_the_setup_check_sees_a_missing_call():
    assert not _calls_setup(ast.parse("import explainer\n# explainer.setup_notebook()\nx = 'explainer.setup_notebook()'"))
    assert _calls_setup(ast.parse("import explainer\nexplainer.setup_notebook(seed=0)"))


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
