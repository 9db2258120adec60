# moerank: every entry point a user or CI runs. `make serve` and `make test` work from a
# fresh clone: they create .venv and install what they need first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch first and pinned, so pip takes the CPU wheel on disk here; a GPU machine can set
# TORCH_SPEC to its own build.
TORCH_SPEC ?= torch==2.13.0
RUNTIME ?= cpu
SIZE ?= small
ARTIFACTS ?= artifacts
BUNDLE ?= $(ARTIFACTS)/bundles/default
MOERANK_HOST ?= 127.0.0.1
MOERANK_PORT ?= 8000
export MOERANK_HOST MOERANK_PORT

.PHONY: install serve test lint bundle reproduce bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[serve,$(RUNTIME),train,loadtest,dev]"
	touch $@

# The default bundle: generated search log -> trained ranker -> ONNX bundle + embeddings.
bundle: $(BUNDLE)/manifest.json

$(BUNDLE)/manifest.json: $(VENV)/.installed
	$(PY) -m training.default_bundle --artifacts $(ARTIFACTS) --bundle $(BUNDLE)

serve: bundle
	MOERANK_BUNDLE_PATH=$(BUNDLE) \
	MOERANK_EMBEDDING_STORE_PATH=$(ARTIFACTS)/item_embeddings.npz \
	MOERANK_EXAMPLE_REQUEST_PATH=$(ARTIFACTS)/example_request.json \
	$(PY) -m service

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

reproduce: $(VENV)/.installed
	$(PY) -m training.reproduce --size $(SIZE)

bench: $(VENV)/.installed
	$(PY) benchmarks/metrics_speed.py

clean:
	rm -rf $(ARTIFACTS) .pytest_cache
