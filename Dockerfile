# syntax=docker/dockerfile:1
# moerank images (BuildKit: only the stages a target needs are built).
#
#   docker build --target cpu -t moerank:cpu .       the service on onnxruntime (CPU), default
#   docker build --target gpu -t moerank:gpu .       the service on onnxruntime-gpu (CUDA 12)
#   docker build --target embed -t moerank-embed .   the embeddings job (`make embed-redis`)
#                                                    on the cpu runtime: no torch
#   docker build --target bundle -t moerank-tools .  torch and the training code: builds the
#                                                    bundle; runs locust
#   --build-arg ARTIFACTS_FROM=local                 take ./artifacts (`make bundle`) instead of
#                                                    building them in the bundle stage
#
# The service images hold the serve extras only (no torch) and run as a non-root user. Every
# command a stage runs is the command of the Makefile target its org.moerank.make label names
# (with the variables given there): tests/test_deploy_files.py holds the two together.

ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG ARTIFACTS_FROM=bundle

# ---- bundle: `make bundle` inside the image (and the tools image for jobs and locust) ------
FROM ${PYTHON_IMAGE} AS bundle
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
LABEL org.moerank.make="bundle"
RUN useradd --create-home --uid 10001 moerank
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contract contract
COPY training training
COPY export export
COPY service service
COPY loadtest loadtest
COPY pipelines pipelines
# torch first, from the CPU index, as the Makefile does (TORCH_SPEC); then the extras.
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}" \
 && pip install ".[serve,cpu,train,loadtest]"
RUN python -m pipelines.default_bundle --artifacts artifacts --bundle artifacts/bundles/default \
 && mkdir -p results/loadtest && chown -R moerank artifacts results
USER moerank

# ---- local: the artifacts `make bundle` left in ./artifacts ----------------------------------
FROM scratch AS local
COPY artifacts /app/artifacts

FROM ${ARTIFACTS_FROM} AS artifacts

# ---- gpu: the same service on CUDA: onnxruntime-gpu, the fp16 text encoder ------------------
FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
LABEL org.moerank.make="serve MOERANK_HOST=0.0.0.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && useradd --create-home --uid 10001 moerank
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contract contract
COPY service service
RUN pip install ".[serve,gpu]"
COPY --from=artifacts /app/artifacts/bundles/default artifacts/bundles/default
COPY --from=artifacts /app/artifacts/item_embeddings.npz /app/artifacts/example_request.json \
     artifacts/
ENV MOERANK_HOST=0.0.0.0 \
    MOERANK_PORT=8000 \
    MOERANK_BUNDLE_PATH=artifacts/bundles/default \
    MOERANK_EMBEDDING_STORE_PATH=artifacts/item_embeddings.npz \
    MOERANK_EXAMPLE_REQUEST_PATH=artifacts/example_request.json \
    MOERANK_PROVIDER=cuda \
    MOERANK_ENCODER_VARIANT=fp16
USER moerank
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MOERANK_PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "service"]

# ---- cpu-runtime: what the cpu service and the embeddings job share (serve extras, no torch) -
FROM ${PYTHON_IMAGE} AS cpu-runtime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 moerank
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contract contract
COPY service service
RUN pip install ".[serve,cpu]"

# ---- embed: the catalog's embeddings into Redis, `make embed-redis` (the compose stack's job) -
# The service's own ONNX text encoder plus the catalog reader (pandas, pyarrow): no torch.
FROM cpu-runtime AS embed
LABEL org.moerank.make="embed-redis REDIS_URL=redis://redis:6379/0"
RUN pip install ".[embed]"
COPY export export
COPY training/__init__.py training/
COPY training/data/__init__.py training/data/catalog_file.py training/data/spec.py training/data/
COPY training/data/real/__init__.py training/data/real/readers.py training/data/real/
# The encoder's fp32 variant only: the one the job encodes with (its --variant default).
COPY --from=artifacts /app/artifacts/bundles/default/text_encoder/encoder.json \
     /app/artifacts/bundles/default/text_encoder/tokenizer.json \
     /app/artifacts/bundles/default/text_encoder/text_encoder.onnx \
     artifacts/bundles/default/text_encoder/
COPY --from=artifacts /app/artifacts/data/searchlog/catalog.parquet artifacts/data/searchlog/
USER moerank
CMD ["python", "-m", "export.embed_items", \
     "--catalog", "artifacts/data/searchlog/catalog.parquet", \
     "--encoder", "artifacts/bundles/default/text_encoder", \
     "--redis", "redis://redis:6379/0", "--prefix", "moerank"]

# ---- cpu, the default (last) target: the service, `make serve MOERANK_HOST=0.0.0.0` -----
FROM cpu-runtime AS cpu
LABEL org.moerank.make="serve MOERANK_HOST=0.0.0.0"
COPY --from=artifacts /app/artifacts/bundles/default artifacts/bundles/default
COPY --from=artifacts /app/artifacts/item_embeddings.npz /app/artifacts/example_request.json \
     artifacts/
ENV MOERANK_HOST=0.0.0.0 \
    MOERANK_PORT=8000 \
    MOERANK_BUNDLE_PATH=artifacts/bundles/default \
    MOERANK_EMBEDDING_STORE_PATH=artifacts/item_embeddings.npz \
    MOERANK_EXAMPLE_REQUEST_PATH=artifacts/example_request.json
USER moerank
EXPOSE 8000
# Liveness; the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MOERANK_PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "service"]
