# camegrad_jax developer commands. `make demo` and `make test` are all a new user needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rewritten whenever pyproject.toml or the pins change, so the install reruns only then.
STAMP := $(VENV)/.installed
# Pins of the oldest supported line (Python 3.11); the file says how they relate to pyproject.toml.
OLDEST := ci/oldest.txt
# The newest line: Python 3.12 and the newest versions pyproject.toml allows, in its own venv.
VENV_NEWEST := .venv312
STAMP_NEWEST := $(VENV_NEWEST)/.installed
# Empty: .ci/find-python looks for Python 3.12 (PATH, then pyenv) and fails if there is none.
PYTHON_NEWEST ?=

.DEFAULT_GOAL := help
.PHONY: help demo demo-quick toy toy-quick test test-fast test-newest lint docs clean

help:
	@echo "make demo        set up $(VENV) and run the main job: the RRG demo, LS vs CAME-Grad (runs/demo)"
	@echo "make demo-quick  the RRG demo at CI size (a couple of minutes)"
	@echo "make toy         CAGrad's two-objective toy, full size (outputs/toy)"
	@echo "make toy-quick   the toy with 2000 steps"
	@echo "make test        the whole test suite (slow tests and doctests included)"
	@echo "make test-fast   the fast tests, stopping at the first failure"
	@echo "make test-newest the fast tests on Python 3.12 with the newest allowed JAX/Flax/Optax ($(VENV_NEWEST))"
	@echo "make lint        ruff check, ruff format --check, mypy"
	@echo "make docs        mkdocs build --strict into site/ (figures and MathJax need no network)"
	@echo "make clean       remove $(VENV), $(VENV_NEWEST), site/ and caches (keeps outputs/)"

# `make .venv` creates the environment and installs the package with its dev extras, every
# dependency at the version pinned in $(OLDEST) (the oldest supported line).
.PHONY: $(VENV) $(VENV_NEWEST)
$(VENV): $(STAMP)

$(STAMP): pyproject.toml $(OLDEST)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c $(OLDEST) -e ".[dev]"
	touch $@

# `make .venv312`: Python 3.12 and the newest versions allowed (no pins; --upgrade on reinstall).
$(VENV_NEWEST): $(STAMP_NEWEST)

$(STAMP_NEWEST): pyproject.toml
	python="$(PYTHON_NEWEST)"; python="$${python:-$$(.ci/find-python 3.12)}" && \
	  "$$python" -m venv $(VENV_NEWEST)
	$(VENV_NEWEST)/bin/python -m pip install --upgrade --upgrade-strategy eager -e ".[dev]"
	touch $@

demo: $(VENV)
	$(BIN)/python -m examples.rrg.demo

demo-quick: $(VENV)
	$(BIN)/python -m examples.rrg.demo --quick --out runs/demo-quick

toy: $(VENV)
	$(BIN)/python -m examples.toy

toy-quick: $(VENV)
	$(BIN)/python -m examples.toy --quick

test: $(VENV)
	$(BIN)/python -m pytest -n 2 -q

test-fast: $(VENV)
	$(BIN)/python -m pytest -m "not slow" -x -q

test-newest: $(VENV_NEWEST)
	$(VENV_NEWEST)/bin/python -m pytest -n 2 -q -m "not slow"

lint: $(VENV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The figures are committed under docs/img/ (python -m examples.docs_figures redraws them), so a
# bare `mkdocs build` works too; `python docs/check_pages.py` then checks the pages in Chromium.
docs: $(VENV)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(VENV_NEWEST) site build dist *.egg-info
	rm -rf .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
