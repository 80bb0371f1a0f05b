# The course's entry points. `make lab` and `make test` create the environment when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision pinned to the pair that these machines serve from local disk (CPU use).
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
LAB_PORT ?= 8888

.PHONY: env lab lint test test-fast bench html present cheatsheet course clean

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

# no notebooks, no browser, and the diagnosis measured over 50 seeds instead of 200
test-fast: lint
	$(PY) -m pytest -m "not notebook and not browser and not slow"

bench: env
	$(PY) -m benchmarks.run

html: env
	$(PY) -m tools.build_html

# the course as slides: Voila, code hidden, one chapter per page (port: make PRESENT_PORT=9000 present)
PRESENT_PORT ?= 8866
present: env
	PRESENT_PORT=$(PRESENT_PORT) $(PY) -m tools.present

# the course on one page: build/cheatsheet.html and build/cheatsheet.pdf, from the package's tables
cheatsheet: env
	$(PY) -m tools.cheatsheet

# rewrite every chapter's navigation and self-check cells from the table in tools/chapters.py
course: env
	$(PY) -m tools.chapters

clean:
	rm -rf build
