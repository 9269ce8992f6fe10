# One command to set up and run the showcase, one to set up and run every check.
# torch is pinned here, not in pyproject: on these machines torch==2.13.0 is a CPU wheel on local disk;
# elsewhere the same pin takes PyPI's default build (CUDA on Linux x86-64). Override with TORCH=...
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: setup run test test-slow lint typecheck pytest browser-deps bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
# open_clip's own tokenizer is the tests' reference for CLIP token ids; --no-deps: it would pull torchvision
	$(BIN)/python -m pip install -q --no-deps open-clip-torch==3.3.0
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/guidegraph run workflows/showcase.api.json

# Debian's chromium drives the end-to-end editor test (never a browser download).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# The everyday suite; the few tests marked slow (minutes each on a CPU) run with test-slow, and in CI.
pytest: setup browser-deps
	$(BIN)/pytest -m "not slow"

test-slow: setup
	$(BIN)/pytest -m slow

test: lint typecheck pytest

bench: setup
	$(BIN)/python -m benchmarks.runtime
	$(BIN)/python -m benchmarks.guidance
	$(BIN)/python -m benchmarks.server
	$(BIN)/python -m benchmarks.vs_comfyui  # side by side with ComfyUI when COMFYUI_DIR names a checkout
	$(BIN)/python -m benchmarks.ray_scale

clean:
	rm -rf $(VENV) output temp .mypy_cache .pytest_cache .ruff_cache
