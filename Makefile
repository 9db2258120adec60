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
REDIS_URL ?= redis://127.0.0.1:6379/0
LOADTEST_HOST ?= http://$(MOERANK_HOST):$(MOERANK_PORT)
LOADTEST_USERS ?= 16
LOADTEST_TIME ?= 60s
LOADTEST_ARGS ?=

PODMAN ?= podman
IMAGE ?= moerank:cpu
EMBED_IMAGE ?= moerank-embed:latest
REDIS_IMAGE ?= localhost/moerank-redis:bookworm
RANKER_PORT ?= 8000
PODMAN_COMPOSE ?= $(VENV)/bin/podman-compose

.PHONY: install serve test lint bundle reproduce bench embed-redis loadtest up down clean image \
	podman-up podman-down

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
	$(PY) -m pipelines.default_bundle --artifacts $(ARTIFACTS) --bundle $(BUNDLE)

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
	$(PY) -m pipelines.reproduce --size $(SIZE)

bench: bundle
	$(PY) benchmarks/metrics_speed.py
	$(PY) benchmarks/export_paths.py
	$(PY) benchmarks/text_encoder.py --encoder $(ARTIFACTS)/encoder
	$(PY) benchmarks/serve_latency.py --model default=$(BUNDLE) --artifacts $(ARTIFACTS) \
		--model thread_pool=$(BUNDLE)+MOERANK_MODEL_CALLS=thread_pool
	$(PY) benchmarks/mlpr_table5.py --artifacts $(ARTIFACTS)

# The catalog's embeddings precomputed into Redis: the compose stack's embed-items job.
embed-redis: bundle
	$(PY) -m export.embed_items --catalog $(ARTIFACTS)/data/searchlog/catalog.parquet \
		--encoder $(BUNDLE)/text_encoder --redis $(REDIS_URL) --prefix moerank

# Locust, headless, against a running service (`make serve` in another shell); locust's CSVs
# go to results/loadtest/. LOADTEST_ARGS passes more (--rate 300, --replay auto, --sizes 100).
loadtest: bundle
	$(PY) -m loadtest --host $(LOADTEST_HOST) --users $(LOADTEST_USERS) \
		--run-time $(LOADTEST_TIME) --csv results/loadtest/locust --artifacts $(ARTIFACTS) \
		$(LOADTEST_ARGS)

# The service image (the Dockerfile's cpu target) built with podman from ./artifacts; where
# python:3.11-slim cannot be pulled, on a Python base bootstrapped from Debian
# (deploy/image/build_base.sh: needs root, `apt-get install podman runc debootstrap`).
image: bundle
	PODMAN="$(PODMAN)" IMAGE="$(IMAGE)" deploy/image/build.sh

# The docker-compose stack: Redis, embeddings job, ranker, Prometheus, Grafana.
up:
	docker compose up --build --detach --wait

down:
	docker compose down --volumes

# The same stack's Redis, embeddings job and ranker with podman-compose where no registry
# answers (deploy/podman/compose.yml says what differs): the three images built here first.
podman-up: bundle
	PODMAN="$(PODMAN)" IMAGE="$(IMAGE)" EMBED_IMAGE="$(EMBED_IMAGE)" REDIS_IMAGE="$(REDIS_IMAGE)" \
		TARGETS="cpu embed redis" deploy/image/build.sh
	PODMAN="$(PODMAN)" PODMAN_COMPOSE="$(PODMAN_COMPOSE)" IMAGE="$(IMAGE)" \
		EMBED_IMAGE="$(EMBED_IMAGE)" REDIS_IMAGE="$(REDIS_IMAGE)" RANKER_PORT="$(RANKER_PORT)" \
		deploy/podman/up.sh

podman-down:
	$(PODMAN_COMPOSE) -f docker-compose.yml -f deploy/podman/compose.yml down --volumes

clean:
	rm -rf $(ARTIFACTS) .pytest_cache
