# camegrad_jax developer commands. `make demo` and `make test` are all a new user needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rewritten whenever pyproject.toml changes, so the install reruns only then.
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help demo demo-quick toy toy-quick test test-fast lint docs clean

help:
	@echo "make demo        set up $(VENV) and run the main job: the RRG demo, LS vs CAME-Grad (runs/demo)"
	@echo "make demo-quick  the RRG demo at CI size (a couple of minutes)"
	@echo "make toy         CAGrad's two-objective toy, full size (outputs/toy)"
	@echo "make toy-quick   the toy with 2000 steps"
	@echo "make test        the whole test suite (slow tests and doctests included)"
	@echo "make test-fast   the fast tests, stopping at the first failure"
	@echo "make lint        ruff check, ruff format --check, mypy"
	@echo "make docs        mkdocs build --strict into site/ (figures and MathJax need no network)"
	@echo "make clean       remove $(VENV), site/ and caches (keeps outputs/)"

# `make .venv` creates the environment and installs the package with its dev extras.
.PHONY: $(VENV)
$(VENV): $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[dev]"
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

lint: $(VENV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The figures are committed under docs/img/ (python -m examples.docs_figures redraws them), so a
# bare `mkdocs build` works too; `python docs/check_pages.py` then checks the pages in Chromium.
docs: $(VENV)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site build dist *.egg-info
	rm -rf .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
