# steerlab: two commands do everything on a fresh machine.
#   make demo   set up .venv and run the main job on the embedded model
#   make test   set up .venv, type-check, and run the test suite (slow tests on the embedded model included)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.steerlab-installed
# The tested torch; this pin installs the CPU build (an unpinned torch pulls a multi-GB CUDA build).
TORCH := torch==2.13.0

.PHONY: setup test test-fast typecheck demo lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]" "$(TORCH)"
	touch $(STAMP)

test: setup typecheck
	$(BIN)/ruff check steerlab tests benchmarks
	$(BIN)/python -m pytest -q

# mypy on the packages listed in pyproject.toml's [tool.mypy] files (persona/, models/, io.py so far)
typecheck: setup
	$(BIN)/mypy

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/steerlab demo

lint: setup
	$(BIN)/ruff check steerlab tests benchmarks
	$(BIN)/ruff format --check steerlab tests benchmarks

format: setup
	$(BIN)/ruff format steerlab tests benchmarks
	$(BIN)/ruff check --fix steerlab tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_hooks.py
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_arms.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
