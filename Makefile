# The course's entry points. `make lab` and `make test` create the environment when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision pinned to the pair that these machines serve from local disk (CPU use).
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
LAB_PORT ?= 8888

.PHONY: env lab lint test test-fast bench html clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[test,crosscheck]'
	touch $(STAMP)

lab: env
	$(VENV)/bin/jupyter lab --notebook-dir=. notebooks/00_start_here.ipynb --ServerApp.port=$(LAB_PORT) $(if $(filter 0,$(shell id -u)),--allow-root,)

lint: env
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest

test-fast: lint
	$(PY) -m pytest -m "not notebook and not browser"

bench: env
	$(PY) -m benchmarks.run

html: env
	$(PY) -m tools.build_html

clean:
	rm -rf build
