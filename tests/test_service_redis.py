"""The service with Redis, end to end: the cache tiers and cold titles on the machine's Redis
(a key prefix of the test's own, deleted afterwards), and a Redis of the test's own that is
paused and stopped mid-run while requests keep coming."""

import json
import signal
import time
import uuid

import httpx
import pytest
import redis

from loadtest.server_metrics import metric_delta
from loadtest.service_process import ServiceProcess

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def server(service_env, small_bundle, redis_prefix):
    env = {
        **service_env,
        "MOERANK_REDIS_URL": SHARED_REDIS,
        "MOERANK_KEY_PREFIX": redis_prefix,
        "MOERANK_LRU_ITEMS": "60",  # small, so a test can push items out of it
        "MOERANK_LRU_PRELOAD_ITEMS": "0",  # the preloaded vectors are in Redis only
    }
    with ServiceProcess(env) as service:
        encoder_id = httpx.get(f"{service.url}/v1/models").json()["text_encoder"]["id"]
        yield service, f"{redis_prefix}:emb:{encoder_id}:"


@pytest.fixture
def example(small_bundle) -> dict:
    return json.loads((small_bundle[1] / "example_request.json").read_text())


def rank(url: str, body: dict) -> dict:
    answer = httpx.post(f"{url}/v1/rank", json={**body, "top_n": None}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def scores(answer: dict) -> dict[str, float]:
    return {item["id"]: item["score"] for item in answer["items"]}


def lookups(before, after, tier, outcome) -> float:
    return metric_delta(
        before, after, "moerank_embedding_lookups_total", tier=tier, outcome=outcome
    )


def test_lru_then_redis_then_cold_titles_never_written(server, example):
    service, key_prefix = server
    url = service.url
    client = redis.Redis.from_url(SHARED_REDIS)
    n = len(example["items"])

    before = service.metrics()  # preloaded into Redis at start, not into the LRU
    first = rank(url, example)
    middle = service.metrics()
    second = rank(url, example)
    after = service.metrics()
    assert first["degraded"]["embedding_cache_misses"] == 0
    assert (lookups(before, middle, "lru", "miss"), lookups(before, middle, "redis", "hit")) == (
        n,
        n,
    )
    assert (lookups(middle, after, "lru", "hit"), lookups(middle, after, "redis", "hit")) == (n, 0)
    assert scores(first) == scores(second)

    fresh = fresh_ids(example)
    encoded = rank(url, fresh)
    assert encoded["degraded"]["embedding_cache_misses"] == n
    assert encoded["degraded"]["online_encodes"] == n
    # The same titles again: from the in-process title cache, not encoded, the same scores.
    before = service.metrics()
    again = rank(url, fresh)
    after = service.metrics()
    assert (again["degraded"]["online_encodes"], again["degraded"]["missing_embeddings"]) == (0, 0)
    assert lookups(before, after, "title_cache", "hit") == n
    assert scores(again) == scores(encoded)
    # A caller's titles never reach the shared store by default.
    assert client.exists(*[f"{key_prefix}{it['id']}" for it in fresh["items"]]) == 0
    # Nor does a title set the vector of the same id sent without one.
    untitled = {**fresh, "items": [{k: v for k, v in it.items() if k != "title"}
                                   for it in fresh["items"]]}  # fmt: skip
    assert rank(url, untitled)["degraded"]["missing_embeddings"] == n


def fresh_ids(body: dict) -> dict:
    tag = uuid.uuid4().hex
    return {**body, "items": [{**it, "id": f"{tag}-{k}"} for k, it in enumerate(body["items"])]}


def test_background_mode_answers_cold_items_now_and_encodes_them_after(
    server, service_env, redis_prefix, example
):
    """The default mode: a cold item ranks with the zero vector (as an item without a title),
    flagged; its title is encoded after the answer, and from then on it ranks exactly as when
    encoded during the request. Nothing is written to the store."""
    inline, key_prefix = server
    client = redis.Redis.from_url(SHARED_REDIS)
    n = len(example["items"])
    env = {**service_env, "MOERANK_REDIS_URL": SHARED_REDIS, "MOERANK_KEY_PREFIX": redis_prefix,
           "MOERANK_LRU_PRELOAD_ITEMS": "0", "MOERANK_COLD_ITEMS": "background"}  # fmt: skip
    cold = fresh_ids(example)
    no_titles = [{k: v for k, v in it.items() if k != "title"} for it in example["items"]]
    untitled = fresh_ids({**example, "items": no_titles})
    with ServiceProcess(env) as service:
        before = service.metrics()
        first = rank(service.url, cold)
        degraded = first["degraded"]
        assert (degraded["deferred_encodes"], degraded["online_encodes"]) == (n, 0)
        assert degraded["embedding_cache_misses"] == n
        without_vectors = rank(inline.url, untitled)
        assert [i["score"] for i in first["items"]] == [
            i["score"] for i in without_vectors["items"]
        ]
        deadline = time.monotonic() + 20
        while metric_delta(before, service.metrics(), "moerank_deferred_encodes_total") < n:
            assert time.monotonic() < deadline, "the deferred titles were never encoded"
            time.sleep(0.05)
        after = service.metrics()
        assert metric_delta(before, after, "moerank_deferred_encodes_total", outcome="ok") == n
        second = rank(service.url, cold)
    assert (second["degraded"]["deferred_encodes"], second["degraded"]["missing_embeddings"]) == (
        0,
        0,
    )
    assert client.exists(*[f"{key_prefix}{it['id']}" for it in cold["items"]]) == 0
    # The same titles on the inline server: encoded there in a request (by an earlier test or
    # now; later calls read them from its title cache).
    encoded_inline = rank(inline.url, fresh_ids(example))
    assert encoded_inline["degraded"]["missing_embeddings"] == 0
    position = {it["id"]: k for k, it in enumerate(cold["items"])}
    mine = {position[i["id"]]: i["score"] for i in second["items"]}
    theirs = {int(i["id"].rsplit("-", 1)[1]): i["score"] for i in encoded_inline["items"]}
    # int8 dynamic quantisation scales activations per batch, and the background encoder batches
    # titles differently from one inline call: equal to float16 rounding, not bit for bit.
    assert mine == pytest.approx(theirs, abs=2e-3)


def test_shutdown_abandons_queued_titles_instead_of_encoding_them_all(
    server, service_env, redis_prefix, example
):
    """SIGTERM with thousands of titles queued: the process exits cleanly after the batch in
    flight; the rest are abandoned (the next process encodes them when asked again). The
    titles are stored (SET NX) here, so the keys count the encodes that happened."""
    _, key_prefix = server
    client = redis.Redis.from_url(SHARED_REDIS)
    env = {**service_env, "MOERANK_REDIS_URL": SHARED_REDIS, "MOERANK_KEY_PREFIX": redis_prefix,
           "MOERANK_LRU_PRELOAD_ITEMS": "0", "MOERANK_COLD_ITEMS": "background",
           "MOERANK_STORE_COLD_TITLES": "true", "MOERANK_MAX_COLD_ENCODES": "1000",
           "MOERANK_MAX_COLD_CHARS": "1000000"}  # fmt: skip
    titled = [it for it in example["items"] if it.get("title")]
    calls, per_call = 5, 1000  # ~5,000 encodes: seconds of CPU even on a fast machine
    bodies = [  # titles unique too: a title encoded once is not queued again (title cache)
        fresh_ids({**example, "items": [
            {**titled[k % len(titled)], "title": f"{titled[k % len(titled)]['title']} {c}-{k}"}
            for k in range(per_call)]})
        for c in range(calls)
    ]  # fmt: skip
    service = ServiceProcess(env).start()
    try:
        for body in bodies:
            assert rank(service.url, body)["degraded"]["deferred_encodes"] == per_call
    finally:
        service.stop(timeout_s=60)
    # uvicorn re-raises the SIGTERM it handled once shut down; -SIGKILL would mean it hung
    assert service.proc.returncode == -signal.SIGTERM
    keys = [f"{key_prefix}{it['id']}" for body in bodies for it in body["items"]]
    written = client.exists(*keys)
    assert written < len(keys) / 2, f"{written} of {len(keys)} titles encoded at shutdown"


def test_a_corrupt_stored_value_is_a_miss_not_an_error(server, example):
    service, key_prefix = server
    url = service.url
    client = redis.Redis.from_url(SHARED_REDIS)
    item = {**example["items"][0], "id": f"corrupt-{uuid.uuid4().hex}"}
    client.set(f"{key_prefix}{item['id']}", b"not a vector")
    before = service.metrics()
    answer = rank(url, {**example, "items": [item]})
    after = service.metrics()
    assert answer["degraded"]["missing_embeddings"] == 0  # its title stands in
    assert lookups(before, after, "redis", "error") == 1
    # Left for the catalog (POST /v1/items) to replace: a ranking call never does.
    assert client.get(f"{key_prefix}{item['id']}") == b"not a vector"


def test_redis_paused_or_stopped_mid_run_answers_keep_coming_and_recover(
    service_env, own_redis, traffic, example
):
    cooldown_s, failures = 0.5, 3
    env = {
        **service_env,
        "MOERANK_REDIS_URL": own_redis.url,
        "MOERANK_KEY_PREFIX": f"moerank-test-{uuid.uuid4().hex}",
        "MOERANK_LRU_ITEMS": "0",  # every call goes to Redis
        "MOERANK_REDIS_TIMEOUT_MS": "20",
        "MOERANK_BREAKER_FAILURES": str(failures),
        "MOERANK_BREAKER_COOLDOWN_S": str(cooldown_s),
        "MOERANK_STORE_CHECK_S": "0.5",
    }
    body = {**example, "items": example["items"][:5]}  # titled, preloaded into Redis

    def ok(answer: dict) -> bool:
        return answer["degraded"]["embedding_store"] == "ok"

    with ServiceProcess(env) as service:
        calls = traffic(service.url, body)
        assert calls.wait_for(ok, 10)
        before = service.metrics()
        calls.phase = "paused"
        own_redis.pause()  # accepts connections, never answers: a slow or lost host
        time.sleep(2.0)
        paused = service.metrics()
        own_redis.resume()
        calls.phase = "resumed"
        assert calls.wait_for(ok, 5)
        calls.phase = "stopped"
        own_redis.stop()
        time.sleep(1.5)
        own_redis.start()  # same port, empty: refilled from the file store
        calls.phase = "restarted"
        assert calls.wait_for(lambda a: ok(a) and a["degraded"]["embedding_cache_misses"] == 0, 10)
        calls.stop()
        after = service.metrics()

    assert {status for _, status, _ in calls.records} == {200}
    for phase in ("paused", "stopped"):
        degraded = [answer["degraded"] for answer in calls.answers(phase)]
        flagged = [d for d in degraded if d["embedding_store"] == "unavailable"]
        assert len(flagged) >= 5, phase
        assert all(d["missing_embeddings"] == 0 for d in flagged)  # titles used, not zeros
    # The breaker, not a timeout per request: while paused, a few calls timed out and the
    # rest did not wait for Redis at all.
    timeouts = metric_delta(before, paused, "moerank_redis_errors_total", error="timeout")
    assert 1 <= timeouts <= failures + 2.0 / cooldown_s + 2
    assert metric_delta(before, paused, "moerank_redis_breaker_skipped_total") >= 5
    assert metric_delta(before, after, "moerank_redis_errors_total", error="connection") >= 1
    assert after[("moerank_redis_breaker_state", ())] == 0
    assert metric_delta(before, after, "moerank_embedding_store_refills_total", outcome="ok") >= 1
