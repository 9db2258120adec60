"""The cpu image built here with podman, by the script `make image` runs
(deploy/image/build.sh: on a Python base bootstrapped from Debian where python:3.11-slim cannot
be pulled), holding the small test bundle; then run: ready, ranking over HTTP, as a non-root
user, without torch. Skipped where podman or debootstrap is absent (`apt-get install podman
runc debootstrap`, as root); podman's layer cache makes a second build take seconds. The
build is conftest's cpu_image, shared with tests/test_compose.py."""

from __future__ import annotations

import json
import subprocess
import uuid

import httpx
import pytest
from conftest import needs_podman, wait_ready

from loadtest.service_process import free_port

pytestmark = needs_podman
# This machine's sandbox refuses the rlimits podman asks for by default, and has no systemd
# for the HEALTHCHECK's timer: run with lower limits and without it.
RUN_HERE = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--no-healthcheck"]


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


@pytest.mark.timeout(1800)  # the first build of a session bootstraps the Debian base
def test_the_image_serves_its_bundle_as_non_root_without_torch(cpu_image, small_bundle):
    image = cpu_image
    port, name = free_port(), f"moerank-test-{uuid.uuid4().hex[:8]}"
    podman("run", "-d", "--rm", "--name", name, "--network", "host", *RUN_HERE,
           "-e", f"MOERANK_PORT={port}", "-e", "MOERANK_WARMUP_CALLS=1", image)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, lambda: podman("logs", name, check=False).stderr[-3000:])
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
