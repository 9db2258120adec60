"""Memory stays flat under mixed traffic, through a real uvicorn process: two callers send
good calls, bad ones (4xx), long texts with cold titles, and /v1/items upserts of 64 titles of
2,048 characters (what once took RSS from 245 MB to 1 GB for good) for SOAK_S seconds; the
service's RSS over the last third (median of 1 s samples: an encode's working set comes and
goes) may exceed the first third's by at most RSS_GROWTH_MB (the caches' share of that
traffic is a few MB)."""

import json
import os
import random
import statistics
import threading
import time
import uuid

import httpx
import psutil
import pytest

from loadtest.service_process import ServiceProcess

SOAK_S = float(os.environ.get("MOERANK_SOAK_S", "75"))
RSS_GROWTH_MB = 64
TOKEN = "test-soak-admin"


@pytest.fixture
def example(small_bundle) -> dict:
    return json.loads((small_bundle[1] / "example_request.json").read_text())


def calls(example: dict, rng: random.Random):
    """(path, body bytes, expected status) forever, mixed."""
    good = json.dumps(example).encode()
    while True:
        kind = rng.choices(["good", "bad", "long", "upsert"], [6, 2, 2, 0.3])[0]
        if kind == "good":
            yield "/v1/rank", good, 200
        elif kind == "bad":
            body = {**example, "items": [{"id": "x", "features": {"nope": 1.0}}]}
            yield "/v1/rank", rng.choice([b"{", json.dumps(body).encode()]), (400, 422)
        elif kind == "long":
            tag = uuid.uuid4().hex
            query = {**example["query"], "text": f"{tag} " + "wool socks " * rng.randint(50, 350)}
            items = [{**it, "id": f"{tag}-{k}", "title": f"{tag} " + "merino " * rng.randint(100, 2000)}
                     for k, it in enumerate(example["items"])]  # fmt: skip
            yield "/v1/rank", json.dumps({**example, "query": query, "items": items}).encode(), 200
        else:
            titles = [{"id": f"u-{uuid.uuid4().hex}", "title": "".join(
                rng.choice("abcdefghij klmnop") for _ in range(2048))} for _ in range(64)]  # fmt: skip
            yield "/v1/items", json.dumps({"items": titles}).encode(), 200


def caller(url: str, example: dict, seed: int, stop: threading.Event, failures: list) -> None:
    headers = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        for path, body, expected in calls(example, random.Random(seed)):
            if stop.is_set():
                return
            status = client.post(path, content=body).status_code
            if status != expected and status not in (
                expected if isinstance(expected, tuple) else ()
            ):
                failures.append((path, status))


def test_rss_stays_flat_under_mixed_long_text_traffic(service_env, example):
    env = {**service_env, "MOERANK_COLD_ITEMS": "background", "MOERANK_ADMIN_TOKENS": TOKEN}
    with ServiceProcess(env) as service:
        process = psutil.Process(service.proc.pid)
        stop, failures, samples = threading.Event(), [], []
        threads = [threading.Thread(target=caller, args=(service.url, example, seed, stop, failures))
                   for seed in (1, 2)]  # fmt: skip
        for thread in threads:
            thread.start()
        start = time.monotonic()
        while time.monotonic() - start < SOAK_S:
            samples.append((time.monotonic() - start, process.memory_info().rss / 2**20))
            time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join(120)
    warm = statistics.median(rss for t, rss in samples if t <= SOAK_S / 3)
    end = statistics.median(rss for t, rss in samples if t >= SOAK_S * 2 / 3)
    peak = max(rss for _, rss in samples)
    print(f"RSS median first third {warm:.0f} MB, last third {end:.0f} MB, peak {peak:.0f} MB")
    assert not failures, failures[:10]
    assert end - warm <= RSS_GROWTH_MB, samples
