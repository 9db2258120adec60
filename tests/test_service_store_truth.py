"""What the shared store holds, through a real uvicorn process and a Redis of the test's own:
no ranking call creates or replaces a stored vector by default (Redis healthy or paused);
with cold titles stored, never over a stored vector even when the write lands after a stall;
thousands of unique cold ids add no keys; a Redis restart is detected, reported, and the
vectors come back (from the file store, or by re-running the embeddings job)."""

import time
import uuid

import httpx
import pytest
import redis

from contract.embeddings import load_embedding_store
from loadtest.server_metrics import metric_delta
from loadtest.service_process import ServiceProcess


@pytest.fixture
def example(small_bundle) -> dict:
    import json

    return json.loads((small_bundle[1] / "example_request.json").read_text())


def snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    return {key: client.get(key) for key in client.scan_iter(count=1000)}


def rank(url: str, body: dict) -> dict:
    answer = httpx.post(f"{url}/v1/rank", json={**body, "top_n": None}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def attack(example: dict) -> dict:
    """Stored ids sent with other titles, and new ids with titles of the caller's choosing."""
    items = [{**it, "title": f"buy me {k}"} for k, it in enumerate(example["items"])]
    items += [{**it, "id": f"new-{uuid.uuid4().hex}"} for it in example["items"]]
    return {**example, "items": items}


def wait_for(condition, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def redis_env(service_env: dict, own_redis, **extra) -> dict:
    return {**service_env, "MOERANK_REDIS_URL": own_redis.url, "MOERANK_KEY_PREFIX": "t",
            "MOERANK_LRU_ITEMS": "0", "MOERANK_COLD_ITEMS": "inline", **extra}  # fmt: skip


@pytest.mark.parametrize("store_cold_titles", ["false", "true"])
def test_no_ranking_call_replaces_a_stored_vector_healthy_or_paused(
    service_env, own_redis, example, store_cold_titles
):
    client = redis.Redis.from_url(own_redis.url)
    env = redis_env(service_env, own_redis, MOERANK_STORE_COLD_TITLES=store_cold_titles,
                    MOERANK_BREAKER_COOLDOWN_S="0.2")  # fmt: skip
    with ServiceProcess(env) as service:
        stored = snapshot(client)
        before = service.metrics()
        healthy = rank(service.url, attack(example))
        assert healthy["degraded"]["online_encodes"] == len(example["items"])  # the new ids
        own_redis.pause()  # lookups time out: every title looks cold and is encoded
        paused = rank(service.url, attack(example))
        assert paused["degraded"]["embedding_store"] == "unavailable"
        time.sleep(0.5)
        own_redis.resume()  # write-backs held by the stall land now
        # Encoded, so offered to the store: the new ids' titles (healthy), then the stored
        # ids' other titles (paused; the new ids' titles come from the title cache).
        offered = 2 * len(example["items"])
        if store_cold_titles == "true":
            wait_for(
                lambda: (
                    metric_delta(before, service.metrics(), "moerank_embedding_write_backs_total")
                    >= offered
                ),
                15,
                "write-backs never finished",
            )
        after = snapshot(client)
    for key, value in stored.items():
        if not key.endswith(b":refill"):
            assert after[key] == value, key  # not one stored vector replaced
    new_keys = set(after) - set(stored)
    if store_cold_titles == "false":
        assert new_keys == set()
    else:  # only the first call's new ids
        assert all(b":new-" in key for key in new_keys)
        assert len(new_keys) == len(example["items"])


def test_ten_thousand_unique_cold_ids_add_no_keys(service_env, own_redis, example):
    client = redis.Redis.from_url(own_redis.url)
    env = redis_env(service_env, own_redis, MOERANK_COLD_ITEMS="background")
    template = example["items"][0]
    with ServiceProcess(env) as service:
        keys_before = client.dbsize()
        before = service.metrics()
        queued = 0
        for call in range(10):
            items = [{**template, "id": f"c{call}-{n}-{uuid.uuid4().hex}",
                      "title": f"product {call} {n} {uuid.uuid4().hex[:8]}"}
                     for n in range(1000)]  # fmt: skip
            degraded = rank(service.url, {**example, "items": items})["degraded"]
            assert degraded["deferred_encodes"] + degraded["cold_encodes_skipped"] == 1000
            queued += degraded["deferred_encodes"]
        assert queued <= 10 * 32  # the per-call cap (MOERANK_MAX_COLD_ENCODES)
        wait_for(
            lambda: (
                metric_delta(before, service.metrics(), "moerank_deferred_encodes_total") >= queued
            ),
            180,  # a wait, not a timing assertion: the encoder runs behind the calls
            "the queued titles were never encoded",
        )
        assert client.dbsize() == keys_before


def test_a_restart_is_refilled_from_the_file_store(service_env, own_redis, example):
    client = redis.Redis.from_url(own_redis.url)
    env = redis_env(service_env, own_redis, MOERANK_STORE_CHECK_S="0.5")
    with ServiceProcess(env) as service:
        keys = set(client.scan_iter(count=1000))
        before = service.metrics()
        own_redis.stop()
        own_redis.start()  # same port, no persistence: empty
        wait_for(
            lambda: (
                metric_delta(
                    before, service.metrics(), "moerank_embedding_store_refills_total", outcome="ok"
                )
                >= 1
            ),
            20,
            "the empty store was never refilled",
        )
        assert keys <= set(client.scan_iter(count=1000))  # every vector back, and the marker
        degraded = rank(service.url, example)["degraded"]
        assert (degraded["embedding_store"], degraded["embedding_cache_misses"]) == ("ok", 0)
        assert httpx.get(f"{service.url}/readyz").json()["embedding_store"] == "ok"


def test_a_restart_is_reported_until_the_embeddings_job_runs_again(
    service_env, own_redis, small_bundle, example
):
    """No file store: the catalog was written by the embeddings job (its Redis writer), so
    the service can only report the loss; re-running the job brings the vectors back."""
    from export.embed_items import RedisSink

    saved = load_embedding_store(small_bundle[1] / "item_embeddings.npz")

    def embeddings_job() -> None:
        sink = RedisSink(own_redis.url, "t", saved.encoder_id, "float16")
        sink.write(saved.item_ids.tolist(), saved.embeddings)
        sink.finish()

    embeddings_job()
    env = redis_env(service_env, own_redis, MOERANK_STORE_CHECK_S="0.5",
                    MOERANK_EMBEDDING_STORE_PATH="")  # fmt: skip
    env.pop("MOERANK_EMBEDDING_STORE_PATH")
    with ServiceProcess(env) as service:
        assert rank(service.url, example)["degraded"]["embedding_cache_misses"] == 0
        own_redis.stop()
        own_redis.start()

        def lost() -> bool:
            return httpx.get(f"{service.url}/readyz").json()["embedding_store"] == "lost"

        wait_for(lost, 20, "the loss was never reported")
        degraded = rank(service.url, example)["degraded"]
        assert degraded["embedding_store"] == "lost"
        assert degraded["missing_embeddings"] == 0  # the titles stand in
        assert service.metrics()[("moerank_embedding_store_lost", ())] == 1
        embeddings_job()
        wait_for(lambda: not lost(), 20, "the new generation was never adopted")
        degraded = rank(service.url, example)["degraded"]
        assert (degraded["embedding_store"], degraded["embedding_cache_misses"]) == ("ok", 0)
        assert service.metrics()[("moerank_embedding_store_lost", ())] == 0
