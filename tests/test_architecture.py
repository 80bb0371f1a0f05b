"""The package's folders are its architecture, and these rules hold in the source, imports inside functions included.

Layers, from the bottom (a module may import its own layer and the layers below it, never one above):

====  =====================================================  ==============================================
rank  modules                                                 what they are
====  =====================================================  ==============================================
0     ``explainer._*`` (``_validate``, ``_torchvision``, ...)  private base: argument checks, small helpers
0     ``explainer.conventions``                              the knobs and the presets
1     the topic modules at the top of ``explainer/``         what the chapters teach
2     ``explainer.checkpoints``, ``diagnosis``, ``trace``    the three tools; between them only two edges:
                                                              ``diagnosis.causes`` (the vocabulary of causes)
                                                              and ``checkpoints.safe_load`` (the restricted
                                                              reader every untrusted file goes through)
3     ``explainer.course``                                   the miniature detector and what is built on it
4     ``explainer.viz``, then ``explainer.widgets``          drawing, then dashboards
5     ``explainer.cli``, ``explainer.__main__``              the command line
====  =====================================================  ==============================================

Further rules: no private name crosses a module boundary (what two modules share is public in the lower one), and
``viz`` and ``widgets`` compute nothing themselves (no numerical library of their own: they call the package).
The rules are read from the source with ``ast``, so an import inside a function counts like any other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "explainer"
TOPICS = {"pixels", "boxes", "anchors", "roi_align", "labels", "masks", "training", "deployment", "effects", "export_ops",
          "torchvision_way"}
TOOLS = ("checkpoints", "diagnosis", "trace")
#: What one tool may take from another: the vocabulary of causes, and the restricted reader.
SHARED_BY_TOOLS = ("explainer.diagnosis.causes", "explainer.checkpoints.safe_load")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: Dict[str, Path] = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _part(module: str) -> str:
    """The architectural part a module belongs to: its first name below ``explainer``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "explainer"


def rank(module: str) -> int:
    part = _part(module)
    if part.startswith("_") and part != "__main__" or part == "conventions":
        return 0
    if part in TOPICS:
        return 1
    if part in TOOLS:
        return 2
    if part == "course":
        return 3
    if part == "viz":
        return 4
    if part == "widgets":
        return 5
    if part in ("cli", "__main__"):
        return 6
    if part == "explainer":  # the package's own __init__: the presets, and setup_notebook's lazy style import
        return 6
    raise AssertionError(f"{module} belongs to no layer: add it to the table of tests/test_architecture.py")


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str) -> str:
    """The longest prefix of a dotted name that is a module of the package ('' for other packages)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return ""


def imports_of(module: str) -> List[Tuple[str, str, int]]:
    """Every import of a package module in ``module``: (target module, imported name or '', line)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if (target := _known(a.name)):
                    out.append((target, "", node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path.name == "__init__.py", node)
            if not base.startswith("explainer"):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in MODULES:
                    out.append((sub, "", node.lineno))
                elif a.name != "*":
                    out.append((_known(base), a.name, node.lineno))
                else:
                    out.append((_known(base), "", node.lineno))
    return out


EDGES: Dict[str, List[Tuple[str, str, int]]] = {m: imports_of(m) for m in MODULES}


def _allowed(src: str, dst: str) -> bool:
    rs, rd = rank(src), rank(dst)
    if rd > rs:
        return False
    if rs == rd == 2 and _part(src) != _part(dst):
        return dst in SHARED_BY_TOOLS
    if rs == rd == 0 and src == "explainer.conventions":
        return dst == "explainer._validate"
    return True


def test_every_module_is_in_a_layer_and_the_parts_are_packages():
    for m in MODULES:
        rank(m)
    for part in (*TOOLS, "course", "viz", "widgets"):
        assert (PKG / part / "__init__.py").is_file(), part
    top = {p.stem for p in PKG.glob("*.py")} - {"__init__", "__main__", "cli"}
    assert {t for t in top if not t.startswith("_")} == TOPICS | {"conventions"}, "a module at the top is not a topic"


def test_no_import_goes_up_a_layer_or_across_tools():
    bad = [f"{src}:{line} imports {dst} (rank {rank(src)} -> {rank(dst)})"
           for src, edges in EDGES.items() for dst, _, line in edges if dst and not _allowed(src, dst)]
    assert not bad, "\n".join(bad)


def test_topics_import_only_conventions_the_private_base_and_each_other():
    bad = [f"{src}:{line} imports {dst}" for src, edges in EDGES.items() if _part(src) in TOPICS
           for dst, _, line in edges if dst and rank(dst) > 1]
    assert not bad, "\n".join(bad)


def test_the_modules_import_no_cycle():
    graph = {m: {d for d, _, _ in EDGES[m] if d and d != m} for m in MODULES}
    # a package's __init__ re-exporting its own module is the one legitimate back edge of a package
    for m in MODULES:
        if MODULES[m].name == "__init__.py":
            graph[m] = {d for d in graph[m] if not d.startswith(m + ".")}
    seen: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if seen.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in seen:
                visit(d)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)


def test_no_private_name_crosses_a_module_boundary():
    bad = []
    for src, edges in EDGES.items():
        for dst, name, line in edges:
            if name.startswith("_") and not name.startswith("__") and dst != src:
                bad.append(f"{src}:{line} imports {dst}.{name}")
    for src, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases: Dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(src, path.name == "__init__.py", node)
                for a in node.names:
                    if f"{base}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{base}.{a.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{src}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "\n".join(bad)


#: Libraries that compute: a drawing or dashboard module that imports one computes for itself.
COMPUTING = ("torch.nn", "torchvision", "onnx", "onnxruntime", "pycocotools", "cv2", "scipy")


def test_viz_and_widgets_compute_nothing_themselves():
    bad = []
    for m, path in MODULES.items():
        if _part(m) not in ("viz", "widgets"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            bad += [f"{m}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in COMPUTING
                    or any(n == c or n.startswith(c + ".") for c in COMPUTING)]
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "torch" \
                    and node.attr in ("nn", "fft", "linalg", "special"):
                bad.append(f"{m}:{node.lineno} uses torch.{node.attr}")
    assert not bad, "\n".join(bad)


# -- the rules can fail --------------------------------------------------------------------------------------------
def test_the_layer_rules_see_a_violation():
    assert not _allowed("explainer.boxes", "explainer.course.cache")          # a topic importing the course
    assert not _allowed("explainer.diagnosis.report", "explainer.trace.divergence")  # a tool importing another
    assert not _allowed("explainer.trace.divergence", "explainer.checkpoints.checkpoint")
    assert not _allowed("explainer._validate", "explainer.checkpoints.safe_load")   # the base importing a tool
    assert not _allowed("explainer.viz.draw", "explainer.widgets.base")       # drawing importing dashboards
    assert _allowed("explainer.trace.divergence", "explainer.diagnosis.causes")
    assert _allowed("explainer.course.measured", "explainer.trace.causes")
    node = ast.parse("def f():\n    from explainer.checkpoints.checkpoint import _secret\n").body[0].body[0]
    assert _resolve("explainer.boxes", False, node) == "explainer.checkpoints.checkpoint"


# -- the layout is the README's map --------------------------------------------------------------------------------
def _docstring_modules(package: str) -> Set[str]:
    doc = ast.get_docstring(ast.parse((PKG / package / "__init__.py").read_text())) or ""
    return set(re.findall(r"^``([a-z_]+)``", doc, flags=re.M))


@pytest.mark.parametrize("package", [*TOOLS, "course"])
def test_each_package_docstring_lists_exactly_its_modules(package):
    on_disk = {p.stem for p in (PKG / package).glob("*.py")} - {"__init__"}
    assert _docstring_modules(package) == on_disk


def test_the_readme_map_names_every_part_and_module():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The package"):readme.index("## Tests")]
    for package in (*TOOLS, "course"):
        assert f"  {package}/" in section, package
        for module in _docstring_modules(package):
            assert re.search(rf"\b{module}\b", section), f"README's map leaves out {package}/{module}.py"
    for topic in TOPICS | {"conventions"}:
        assert re.search(rf"\b{topic}\b", section), f"README's map leaves out {topic}.py"


# -- docstrings state shapes one way, as torchvision's do: ``boxes (Tensor[N, 4])`` -------------------------------
_OLD_SHAPE = re.compile(r"(?<![\w\[/*])(?<! x )(?:\d*[A-Z]|\d+) x (?:\d*[A-Z]|\d+)(?: x (?:\d*[A-Z]|\d+))*(?![\w\]/*])")
_SIZES = {"R x R", "M x M", "S x S", "2R x 2R"}   # an output's size, not a tensor's shape


def _old_style_shapes(doc: str) -> List[str]:
    return [m.group(0) for m in _OLD_SHAPE.finditer(doc)
            if re.search(r"[A-Z]", m.group(0)) and m.group(0) not in _SIZES]


def test_docstrings_state_shapes_as_tensor_brackets():
    bad = []
    for m, path in MODULES.items():
        if _part(m) in ("viz", "widgets"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and (doc := ast.get_docstring(node)):
                bad += [f"{m}.{node.name}: {s}" for s in _old_style_shapes(doc)]
    assert not bad, "write shapes as Tensor[N, 4]:\n" + "\n".join(bad)


def test_the_shape_check_sees_an_old_style_shape():
    assert _old_style_shapes("boxes (N x 4) and masks N x H x W") == ["N x 4", "N x H x W"]
    assert _old_style_shapes("boxes (Tensor[N, 4]); a 2 x 2 average; R x R bins") == []
