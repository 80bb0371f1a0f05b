"""environment.yml (conda-forge, Binder) and pyproject.toml (pip) describe the same environment."""

from __future__ import annotations

import re

import pytest
import tomllib

from tools.notebooks import ROOT

# pip name -> conda-forge name, where they differ
CONDA_NAME = {"torch": "pytorch", "opencv-python-headless": "opencv"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[;]", spec.strip(), maxsplit=1)[0].lower()


def _pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    specs = list(project["dependencies"])
    for extra in ("test", "crosscheck"):
        specs += list(project["optional-dependencies"][extra])
    return {CONDA_NAME.get(_name(s), _name(s)): s for s in specs}


def _environment():
    deps, pip_section = {}, []
    lines = (ROOT / "environment.yml").read_text().splitlines()
    in_deps = in_pip = False
    for line in lines:
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped:
            continue
        if re.match(r"^dependencies:", stripped):
            in_deps = True
            continue
        if in_deps and re.match(r"^\S", stripped):
            in_deps = False
        if not in_deps:
            continue
        m = re.match(r"^(\s*)-\s*(.+)$", stripped)
        if not m:
            continue
        indent, item = len(m.group(1)), m.group(2).strip()
        if item == "pip:":
            in_pip = True
            continue
        if in_pip and indent > 2:
            pip_section.append(item)
            if not item.startswith("-"):  # a package conda-forge does not have, installed with pip
                deps[_name(item)] = item
            continue
        in_pip = False
        deps[_name(item)] = item
    return deps, pip_section


def test_same_packages_in_both_files():
    pip_deps = _pyproject()
    conda_deps, _ = _environment()
    conda_names = set(conda_deps) - {"python", "pip"}
    assert conda_names == set(pip_deps), (
        f"only in environment.yml: {sorted(conda_names - set(pip_deps))}; "
        f"only in pyproject.toml: {sorted(set(pip_deps) - conda_names)}")


def test_lower_bounds_agree():
    pip_deps = _pyproject()
    conda_deps, _ = _environment()
    for name, spec in pip_deps.items():
        lo_pip = re.search(r">=\s*([\w.]+)", spec)
        lo_conda = re.search(r">=\s*([\w.]+)", conda_deps[name])
        assert (lo_pip and lo_pip.group(1)) == (lo_conda and lo_conda.group(1)), f"{name}: {spec!r} vs {conda_deps[name]!r}"


def test_binder_installs_the_package():
    _, pip_section = _environment()
    assert "-e ." in pip_section, "environment.yml must install the package itself (pip: [-e .]) for Binder"


def test_make_test_installs_the_crosscheck_extra():
    text = (ROOT / "Makefile").read_text()
    assert "-e '.[test,crosscheck]'" in text, "make env must install the test and crosscheck extras"


def test_a_missing_crosscheck_package_is_skipped_with_its_name_and_fails_in_ci(monkeypatch):
    from tests.crosscheck import require

    missing = "a_package_that_is_not_installed"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{missing} is not installed.*crosscheck"):
        require(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"must run in CI, but {missing} is not installed"):
        require(missing)
    assert require("json").__name__ == "json"
