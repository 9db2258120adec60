"""Shadow scoring, asserted on counts: answers never wait for it (every request answered over
HTTP by uvicorn while the shadow work is held back), its queue is bounded (drops counted exactly), and the
agreement measures are the ones defined."""

import asyncio
import json
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import uvicorn
from prometheus_client import REGISTRY

from loadtest.service_process import free_port
from service.app import create_app
from service.settings import Settings
from service.shadow import ShadowScorer, agreement


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_agreement_measures():
    scores = np.arange(20, dtype=np.float32)
    assert agreement(scores, scores * 2) == {"top10_overlap": 1.0, "kendall_tau": 1.0}
    reverse = agreement(scores, -scores)
    assert reverse["kendall_tau"] == pytest.approx(-1.0) and reverse["top10_overlap"] == 0.0
    swapped = scores.copy()
    swapped[[19, 0]] = swapped[[0, 19]]  # the best and the worst trade places
    assert agreement(scores, swapped)["top10_overlap"] == 0.9
    assert agreement(scores[:3], scores[:3])["top10_overlap"] == 1.0  # a list shorter than 10
    assert set(agreement(scores[:1], scores[:1])) == {"top10_overlap"}  # no tau for one item


def fake_answer(shadow: str) -> SimpleNamespace:
    route = SimpleNamespace(model="primary", shadows=((shadow, None),))
    return SimpleNamespace(route=route, request_id="r", scores=np.zeros(3))


def test_the_queue_is_bounded_and_drops_are_counted(monkeypatch):
    gate = asyncio.Event()

    async def held(self, ranked, bundle):
        await gate.wait()
        return {"top10_overlap": 1.0}

    monkeypatch.setattr(ShadowScorer, "_score", held)

    async def scenario() -> None:
        scorer = ShadowScorer(3, embeddings=None)
        dropped = lambda: sample("moerank_shadow_dropped_total", shadow="bounded")  # noqa: E731
        scored = lambda: sample("moerank_shadow_scored_total", shadow="bounded", outcome="ok")  # noqa: E731
        start_dropped, start_scored = dropped(), scored()
        for _ in range(10):
            scorer.offer(fake_answer("bounded"))
        assert dropped() - start_dropped == 7  # three queued
        await asyncio.sleep(0.01)  # the worker takes one and waits on the gate
        for _ in range(5):
            scorer.offer(fake_answer("bounded"))
        assert dropped() - start_dropped == 7 + 4
        assert scored() == start_scored
        gate.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
        assert scored() - start_scored == 4
        await scorer.stop()

    asyncio.run(scenario())


@contextmanager
def uvicorn_in_thread(app):
    """A real uvicorn server (HTTP over TCP) in a thread of this process, so a test can hold
    back the shadow scorer it runs."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                           log_level="warning", lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(60)


def test_answers_never_wait_for_shadow_work(small_bundle, service_env, tmp_path, monkeypatch):
    """Through uvicorn, the shadow scorer held until every answer is in: all answered, nothing
    scored, the queue's overflow dropped; released, the queued ones are scored."""
    gate = threading.Event()

    async def held(self, ranked, bundle):
        await asyncio.to_thread(gate.wait)
        return {"top10_overlap": 1.0}

    monkeypatch.setattr(ShadowScorer, "_score", held)
    bundle, artifacts = small_bundle
    models = tmp_path / "models.toml"
    models.write_text(
        f'default = "e"\n[models]\nserved = "{bundle}"\nheld = "{bundle}"\n[experiments.e]\n'
        'unit = "request_id"\nvariants = [{name = "only", model = "served", share = 1.0}]\n'
        'shadows = ["held"]\n'
    )
    for name, value in {**service_env, "MOERANK_MODELS_FILE": str(models)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MOERANK_SHADOW_QUEUE", "4")
    example = json.loads((artifacts / "example_request.json").read_text())
    scored = lambda: sample("moerank_shadow_scored_total", shadow="held", outcome="ok")  # noqa: E731
    dropped = lambda: sample("moerank_shadow_dropped_total", shadow="held")  # noqa: E731
    try:
        with uvicorn_in_thread(create_app(Settings())) as url, httpx.Client(base_url=url) as client:
            start_scored, start_dropped = scored(), dropped()
            statuses = [client.post("/v1/rank", json=example).status_code for _ in range(20)]
            assert statuses == [200] * 20
            assert scored() == start_scored  # every answer sent, no shadow work done
            assert dropped() - start_dropped == 20 - 4 - 1  # 4 queued, 1 being scored
            gate.set()
            deadline = time.monotonic() + 30
            while scored() - start_scored < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert scored() - start_scored == 5
    finally:
        gate.set()
