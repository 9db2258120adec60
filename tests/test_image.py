"""The cpu image built here with podman, by the script `make image` runs
(deploy/image/build.sh: on a Python base bootstrapped from Debian where python:3.11-slim cannot
be pulled), holding the small test bundle; then run: ready, ranking over HTTP, as a non-root
user, without torch. Skipped where podman or debootstrap is absent (`apt-get install podman
runc debootstrap`, as root); podman's layer cache makes a second build take seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest

from loadtest.service_process import free_port

ROOT = Path(__file__).resolve().parents[1]
MISSING = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING) or os.geteuid() != 0,
    reason=f"needs root and {', '.join(MISSING) or 'podman, debootstrap'} "
    "(apt-get install podman runc debootstrap)",
)
TAG = "localhost/moerank-test:cpu"
# This machine's sandbox refuses the rlimits podman asks for by default, and has no systemd
# for the HEALTHCHECK's timer: run with lower limits and without it.
RUN_HERE = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--no-healthcheck"]


@pytest.fixture(scope="module")
def image(small_bundle, tmp_path_factory):
    """The build context: what the cpu stage copies, and the small bundle as ./artifacts."""
    bundle, artifacts = small_bundle
    context = tmp_path_factory.mktemp("context")
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    for name in ("contract", "service", "deploy/image"):
        shutil.copytree(ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(bundle, context / "artifacts/bundles/default", symlinks=False)
    for name in ("item_embeddings.npz", "example_request.json"):
        shutil.copy(artifacts / name, context / "artifacts" / name)
    started = time.monotonic()
    built = subprocess.run(
        [str(context / "deploy/image/build.sh")],
        env={**os.environ, "CONTEXT": str(context), "IMAGE": TAG},
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(
        f"{built.stdout.strip().splitlines()[-1]} (this test: {time.monotonic() - started:.0f} s)"
    )
    return TAG


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


def test_the_image_serves_its_bundle_as_non_root_without_torch(image, small_bundle):
    port, name = free_port(), f"moerank-test-{uuid.uuid4().hex[:8]}"
    podman("run", "-d", "--rm", "--name", name, "--network", "host", *RUN_HERE,
           "-e", f"MOERANK_PORT={port}", "-e", "MOERANK_WARMUP_CALLS=1", image)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, podman("logs", name, check=False).stderr[-3000:]
            time.sleep(0.5)
        example = json.loads((small_bundle[1] / "example_request.json").read_text())
        answer = httpx.post(f"{url}/v1/rank", json=example, timeout=30)
        assert answer.status_code == 200, answer.text
        ranked = answer.json()
        assert ranked["items"] and ranked["degraded"]["embedding_cache_misses"] == 0
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        no_torch = podman("exec", name, "python", "-c", "import torch", check=False)
        assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    finally:
        podman("rm", "-f", name, check=False)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"image {image}: {size / 1e6:.0f} MB")
