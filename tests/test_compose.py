"""docker-compose.yml's Redis + embeddings job + ranker run with podman-compose, as `make
podman-up` runs them (deploy/podman/up.sh, with deploy/podman/compose.yml: images built here,
the open-files limit): the job fills the stack's Redis with the catalog's vectors and exits, the ranker gets
ready and ranks over HTTP with those vectors; `down --volumes` leaves nothing behind. The
images are conftest's session builds (the cpu one shared with tests/test_image.py). Skipped
without root, podman, debootstrap and podman-compose (the dev extra)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import needs_podman, wait_ready

from contract.embeddings import item_key
from contract.manifest import Manifest
from loadtest.service_process import free_port

ROOT = Path(__file__).resolve().parents[1]
PODMAN_COMPOSE = shutil.which("podman-compose", path=str(Path(sys.executable).parent)) or (
    shutil.which("podman-compose")
)
pytestmark = [
    needs_podman,
    pytest.mark.skipif(PODMAN_COMPOSE is None, reason="needs podman-compose (the dev extra)"),
]
PREFIX = "moerank"  # docker-compose.yml's MOERANK_KEY_PREFIX and the job's --prefix


def run(*argv: str, env=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def podman(*args: str) -> str:
    done = run("podman", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def containers(project: str, service: str | None = None) -> list[str]:
    labels = [f"label=io.podman.compose.project={project}"]
    if service:
        labels.append(f"label=com.docker.compose.service={service}")
    filters = [arg for label in labels for arg in ("--filter", label)]
    return podman("ps", "-a", *filters, "--format", "{{.Names}}").split()


def leftovers(project: str) -> dict[str, str]:
    return {
        "containers": " ".join(containers(project)),
        "pods": podman("pod", "ls", "--filter", f"name={project}", "--format", "{{.Name}}"),
        "networks": podman("network", "ls", "--filter", f"name={project}", "--format", "{{.Name}}"),
        "volumes": podman("volume", "ls", "--filter", f"name={project}", "--format", "{{.Name}}"),
    }


def fresh_request(example: dict, catalog: pd.DataFrame) -> dict:
    """The example request with items its warm-up calls never ranked: their vectors are in no
    LRU yet, so they come from Redis, or (if the job had not stored them) from the encoder."""
    seen = {item["id"] for item in example["items"]}
    others = catalog[~catalog["item_id"].astype(str).isin(seen)].tail(len(example["items"]))
    items = [
        {**item, "id": str(row.item_id), "title": str(row.item_title)}
        for item, row in zip(example["items"], others.itertuples())
    ]
    return {**example, "items": items}


def redis_hits(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    (line,) = [
        line
        for line in text.splitlines()
        if line.startswith("moerank_embedding_lookups_total{")
        and 'tier="redis"' in line
        and 'outcome="hit"' in line
    ] or ["_ 0"]
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.timeout(1800)  # the first image build of a session bootstraps the Debian base
def test_the_compose_stack_ranks_with_the_vectors_its_job_stored(
    stack_images, small_bundle, small_log_dir
):
    project, port = f"moerank-test-{uuid.uuid4().hex[:8]}", free_port()
    env = {
        **os.environ,
        "PROJECT": project,
        "PODMAN_COMPOSE": PODMAN_COMPOSE,
        "IMAGE": stack_images["cpu"],
        "EMBED_IMAGE": stack_images["embed"],
        "REDIS_IMAGE": stack_images["redis"],
        "RANKER_PORT": str(port),
    }
    compose = [PODMAN_COMPOSE, "--project-name", project,
               "-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "deploy/podman/compose.yml")]  # fmt: skip
    catalog = pd.read_parquet(small_log_dir / "catalog.parquet")
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        # Redis until healthy, the job until it exits 0, then the ranker (as `make podman-up`).
        up = run(str(ROOT / "deploy/podman/up.sh"), env=env, timeout=900)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        up_seconds = time.monotonic() - started
        (job,) = containers(project, "embed-items")
        state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", job)
        assert state == "exited 0", podman("logs", job)[-3000:]

        def ranker_logs() -> str:
            (ranker,) = containers(project, "ranker")
            return run("podman", "logs", ranker).stderr[-3000:]

        wait_ready(url, ranker_logs)
        ready_seconds = time.monotonic() - started

        # The job stored a vector for every catalog item, under the ranker's encoder.
        encoder_id = Manifest.read(small_bundle[0]).text_encoder.id
        (redis,) = containers(project, "redis")
        pattern = item_key(PREFIX, encoder_id, "*")
        stored = podman("exec", redis, "redis-cli", "--scan", "--pattern", pattern).split()
        assert len(stored) == catalog["item_id"].nunique()

        example = json.loads((small_bundle[1] / "example_request.json").read_text())
        request = fresh_request(example, catalog)
        hits_before = redis_hits(url)
        answer = httpx.post(f"{url}/v1/rank", json=request, timeout=30)
        assert answer.status_code == 200, answer.text
        ranked = answer.json()
        assert ranked["items"]
        assert {i["id"] for i in ranked["items"]} <= {i["id"] for i in request["items"]}
        degraded = ranked["degraded"]
        assert degraded["embedding_store"] == "ok", degraded
        for name in ("embedding_cache_misses", "online_encodes", "deferred_encodes",
                     "missing_embeddings"):  # fmt: skip
            assert degraded[name] == 0, degraded
        assert redis_hits(url) - hits_before == len(request["items"])
    finally:
        down = run(*compose, "down", "--volumes", env=env, timeout=300)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert not any(leftovers(project).values()), leftovers(project)
    print(f"compose stack: up (Redis healthy, job done, ranker started) in {up_seconds:.0f} s, "
          f"ready in {ready_seconds:.0f} s; {len(stored)} vectors in its Redis")  # fmt: skip
