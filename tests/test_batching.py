"""Cross-request micro-batching through a real uvicorn process: concurrent calls answered
with batching on equal the same calls with batching off (scores, experts, degradations),
and batches do form (moerank_batch_size)."""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np
import pytest

from contract.manifest import Manifest
from loadtest.rawhttp import RawClient, request_bytes
from loadtest.server_metrics import metric_delta
from loadtest.service_process import ServiceProcess
from service.bundle import Bundle

CALLS = 48
CONCURRENCY = 16


@pytest.fixture(scope="module")
def bodies(small_bundle) -> list[bytes]:
    """Calls of 1-20 items with their own queries and categories (so their own experts),
    some with a missing feature or an unknown category (degraded reports must stay each
    call's own)."""
    bundle, artifacts = small_bundle
    example = json.loads((artifacts / "example_request.json").read_text())
    categories = Manifest.read(bundle).features.request_categorical[0].vocab
    rng = random.Random(3)
    out = []
    for n in range(CALLS):
        items = [dict(item) for item in rng.sample(example["items"], rng.randint(1, 20))]
        if n % 5 == 0:
            items[0] = {**items[0], "features": {}}  # every numeric feature imputed
        if n % 7 == 0:
            items[-1] = {**items[-1], "categorical": {"brand": "no such brand"}}
        query = {**example["query"], "text": f"{example['query']['text']} {n % 9}"}
        query["category"] = rng.choice(categories[:12])
        out.append(json.dumps({"query": query, "items": items}).encode())
    return out


def answers(service: ServiceProcess, bodies: list[bytes]) -> list[dict]:
    """Every body sent once, CONCURRENCY calls in flight at a time."""

    async def run() -> list[dict]:
        client = RawClient("127.0.0.1", service.port, CONCURRENCY)
        host = f"127.0.0.1:{service.port}"

        async def call(body: bytes) -> dict:
            status, answer = await client.send(request_bytes("POST", "/v1/rank", host, body))
            assert status == 200, answer[:300]
            return json.loads(answer)

        try:
            return await asyncio.gather(*(call(body) for body in bodies))
        finally:
            client.close()

    return asyncio.run(run())


def test_the_bundle_scores_a_batch_as_each_call_alone(small_bundle):
    bundle = Bundle(small_bundle[0], provider="cpu")
    assert bundle.batched is not None
    rng = np.random.default_rng(0)
    calls = []
    for n, items in enumerate((5, 1, 100, 17)):
        tensors = list(bundle.example(items))
        tensors[0] = tensors[0] + n  # other request categories: other gates
        tensors[2] = rng.normal(size=tensors[2].shape).astype(np.float32)
        calls.append(tuple(tensors))
    for together, call in zip(bundle.score_requests(calls), calls):
        alone = bundle.score(*call)
        assert [a.shape for a in together] == [a.shape for a in alone]
        assert np.abs(together[0] - alone[0]).max() <= 1e-5
        assert together[1].tolist() == alone[1].tolist()


@pytest.mark.parametrize("model_calls", ["event_loop", "thread_pool"])
def test_concurrent_calls_answer_the_same_with_batching_on_and_off(
    service_env, bodies, model_calls
):
    env = {**service_env, "MOERANK_MODEL_CALLS": model_calls}
    with ServiceProcess({**env, "MOERANK_BATCH_WAIT_MS": "0"}) as off:
        answers(off, bodies)  # query embeddings into the LRU, so both runs see warm calls
        before = off.metrics()
        unbatched = answers(off, bodies)
        assert metric_delta(before, off.metrics(), "moerank_batch_size_count") == 0
    # A long bounded wait, so that calls arriving a few ms apart on a loaded machine batch.
    with ServiceProcess({**env, "MOERANK_BATCH_WAIT_MS": "50"}) as on:
        answers(on, bodies)
        before = on.metrics()
        batched = answers(on, bodies)
        after = on.metrics()

    runs = metric_delta(before, after, "moerank_batch_size_count")
    assert metric_delta(before, after, "moerank_batch_size_sum") == CALLS
    assert runs < CALLS  # some calls ran together
    assert metric_delta(before, after, "moerank_batch_size_bucket", le="1.0") < runs
    assert len({tuple(e["index"] for e in a["experts"]) for a in batched}) > 1
    for one, other in zip(batched, unbatched):
        assert [i["id"] for i in one["items"]] == [i["id"] for i in other["items"]]
        scores = np.array([[i["score"], *i["scores"].values()] for i in one["items"]])
        expected = np.array([[i["score"], *i["scores"].values()] for i in other["items"]])
        assert np.abs(scores - expected).max() <= 1e-5
        assert [e["index"] for e in one["experts"]] == [e["index"] for e in other["experts"]]
        assert one["degraded"] == other["degraded"]
    assert any(a["degraded"]["imputed_features"] for a in batched)
    assert any(a["degraded"]["oov_categories"] for a in batched)


def run_calls(batcher, bundle, calls, hold=None):
    """Each call's outputs through `batcher`, all started in one turn of the loop, the runs
    of the model they took and the seconds until the last was answered; `hold`: seconds
    another call keeps its ticket (on its way to the model) before it fails."""
    import time

    from service import metrics

    def runs_so_far() -> float:
        samples = metrics.BATCH_SIZE.collect()[0].samples
        return next(s.value for s in samples if s.name == "moerank_batch_size_count")

    async def one(tensors):
        with batcher.expecting() as ticket:
            return await batcher.score(bundle, list(tensors), ticket)

    async def failing():
        with batcher.expecting():
            await asyncio.sleep(hold)
            raise ValueError("a call that fails before the model")

    async def run():
        before, started = runs_so_far(), time.perf_counter()
        holder = asyncio.ensure_future(failing()) if hold else None
        results = await asyncio.gather(*(one(c) for c in calls))
        seconds = time.perf_counter() - started
        if holder:
            holder.cancel()
            await asyncio.gather(holder, return_exceptions=True)
        return results, runs_so_far() - before, seconds

    return asyncio.run(run())


def test_the_batcher_runs_waiting_calls_together_within_its_bounds(small_bundle):
    from concurrent.futures import ThreadPoolExecutor

    from service.batcher import Batcher
    from service.embeddings import Calls

    bundle = Bundle(small_bundle[0], provider="cpu")
    calls = [bundle.example(n) for n in (100, 3, 100, 40)]
    alone = [bundle.score(*c) for c in calls]
    on_loop = Calls(ThreadPoolExecutor(1), on_loop=True)

    results, runs, _ = run_calls(Batcher(on_loop, 0.5, 2000), bundle, calls)
    assert runs == 1  # the four calls ready in one turn ran as one
    for result, expected in zip(results, alone):
        assert np.abs(result[0] - expected[0]).max() <= 1e-5
        assert result[1].tolist() == expected[1].tolist()
    _, runs, _ = run_calls(Batcher(on_loop, 0.5, 250), bundle, calls)
    assert runs == 2  # [100, 3] pad to 200 rows (a third 100-item call: 300), then [100, 40]
    # A call on its way holds the batch back, at most the bounded wait ...
    _, runs, seconds = run_calls(Batcher(on_loop, 0.2, 2000), bundle, calls, hold=30.0)
    assert runs == 1 and 0.2 <= seconds < 10.0
    # ... and no longer than until it fails.
    _, runs, seconds = run_calls(Batcher(on_loop, 30.0, 2000), bundle, calls, hold=0.05)
    assert runs == 1 and seconds < 10.0
    # Off: every call alone, none through a batch.
    _, runs, _ = run_calls(Batcher(on_loop, 0, 2000), bundle, calls)
    assert runs == 0


def test_batching_is_off_by_default_on_cpu_and_set_by_its_variable():
    from service.runtime import batch_wait_s
    from service.settings import Settings

    assert batch_wait_s(Settings(provider="cpu", batch_wait_ms=None)) == 0.0
    assert batch_wait_s(Settings(provider="cpu", batch_wait_ms=5)) == 0.005
    assert batch_wait_s(Settings(provider="auto", batch_wait_ms=0)) == 0.0
