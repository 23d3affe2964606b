# steerlab: two commands do everything on a fresh machine.
#   make demo   set up .venv and run the main job on the embedded model
#   make test   set up .venv and run the test suite (slow tests on the embedded model included)
#   make test-floor  the hook and training-arm tests on the LOWEST transformers / peft / nnsight that
#               pyproject.toml declares, in a separate .venv-floor (torch stays at the tested pin)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.steerlab-installed
# The tested torch; this pin installs the CPU build (an unpinned torch pulls a multi-GB CUDA build).
TORCH := torch==2.13.0

# The dependency floors: libraries the hook layer and the training arms touch, installed at the lowest
# version pyproject.toml declares (read by .ci/floor_pins.py), and the tests that run on them.
FLOOR_VENV := .venv-floor
FLOOR_STAMP := $(FLOOR_VENV)/.steerlab-floor-installed
FLOOR_PACKAGES := transformers peft nnsight
FLOOR_TESTS := tests/test_hooks_core.py tests/test_hooks_parity.py tests/test_hooks_sequences.py tests/test_train_arms.py

.PHONY: setup test test-fast test-floor demo lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]" "$(TORCH)"
	touch $(STAMP)

test: setup
	$(BIN)/ruff check steerlab tests benchmarks
	$(BIN)/python -m pytest -q

$(FLOOR_STAMP): pyproject.toml .ci/floor_pins.py
	test -x $(FLOOR_VENV)/bin/python || $(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(FLOOR_VENV)/bin/python -m pip install -q -e ".[dev]" "$(TORCH)" $$($(FLOOR_VENV)/bin/python .ci/floor_pins.py $(FLOOR_PACKAGES))
	$(FLOOR_VENV)/bin/python -m pip show $(FLOOR_PACKAGES) torch | grep -E '^(Name|Version):'
	touch $(FLOOR_STAMP)

test-floor: $(FLOOR_STAMP)
	$(FLOOR_VENV)/bin/python -m pytest -q -m "not slow" -p no:cacheprovider $(FLOOR_TESTS)

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
	rm -rf $(VENV) $(FLOOR_VENV) .pytest_cache .ruff_cache
