# steerlab: two commands do everything on a fresh machine.
#   make demo   set up .venv and run the main job on the embedded model
#   make test   set up .venv, type-check, and run the test suite (slow tests on the embedded model included)
#   make test-floor  the hook and training-arm tests on the LOWEST transformers / peft / nnsight that
#               pyproject.toml declares, in a separate .venv-floor (torch stays at the tested pin)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.steerlab-installed
# The tested torch; this pin installs the CPU build (an unpinned torch pulls a multi-GB CUDA build).
TORCH := torch==2.13.0
# The local judge server of the tests, llama-cpp-python, built from its sdist once (28-51 minutes on this
# 2-core machine, depending on its load) into a wheelhouse in the steerlab cache, so later installs take
# seconds. Portable: GGML_NATIVE=OFF (AVX2/FMA, no AMX: a -march=native build dies of SIGILL in AMX tile
# code on CPUs whose AMX the VM does not enable), without the multimodal library (LLAVA_BUILD=OFF).
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
STEERLAB_CACHE ?= $(HOME)/.cache/steerlab
LLAMA_WHEELHOUSE := $(STEERLAB_CACHE)/wheelhouse
JUDGE_STAMP := $(VENV)/.judge-server-installed

# The dependency floors: libraries the hook layer and the training arms touch, installed at the lowest
# version pyproject.toml declares (read by .ci/floor_pins.py), and the tests that run on them.
FLOOR_VENV := .venv-floor
FLOOR_STAMP := $(FLOOR_VENV)/.steerlab-floor-installed
FLOOR_PACKAGES := transformers peft nnsight
FLOOR_TESTS := tests/test_hooks_core.py tests/test_hooks_parity.py tests/test_hooks_sequences.py tests/test_train_arms.py

.PHONY: setup test test-fast test-floor typecheck demo lint format bench clean judge-server-deps

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]" "$(TORCH)"
	touch $(STAMP)

# llama.cpp's OpenAI-compatible server and the two small judge GGUFs (Qwen2.5 0.5B, SmolLM2 135M) that the
# judge tests serve with it; `.ci/run` calls this, so those tests run (not skip) in CI.
judge-server-deps: $(JUDGE_STAMP)

$(JUDGE_STAMP): $(STAMP)
	ls $(LLAMA_WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel -q --no-deps --no-cache-dir \
	  -w $(LLAMA_WHEELHOUSE) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	$(BIN)/python -m pip install -q --no-deps --force-reinstall \
	  $(LLAMA_WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/python -m pip install -q --find-links $(LLAMA_WHEELHOUSE) --only-binary llama-cpp-python \
	  "llama-cpp-python[server]==$(LLAMA_CPP_VERSION)"
	$(BIN)/steerlab judge gguf qwen2.5-coder-0.5b-instruct
	$(BIN)/steerlab judge gguf smollm2-135m-instruct
	touch $(JUDGE_STAMP)

test: setup typecheck
	$(BIN)/ruff check steerlab tests benchmarks
	$(BIN)/python -m pytest -q

# mypy on the packages listed in pyproject.toml's [tool.mypy] files (persona/, models/, io.py so far)
typecheck: setup
	$(BIN)/mypy

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
