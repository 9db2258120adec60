"""The service on a real Redis Cluster (3 masters, a replica each, local processes): the
embeddings job fills it, a ranking asks each node it touches once, and a master killed mid-run
costs degraded answers, never failed ones, until its replica takes over."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import redis

from contract.embeddings import item_key
from export.embed_items import main as embed_items_main
from infra.redis_cluster import LocalRedisCluster, available
from loadtest.server_metrics import metric_delta
from loadtest.service_process import ServiceProcess
from service.redis_url import parse_cluster_url

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))
PREFIX = "moerank-test-cluster"


def test_cluster_urls_parse_and_refuse_what_a_cluster_cannot_honour():
    parsed = parse_cluster_url("rediss+cluster://app:s%40crt@10.0.0.1:7000,[::1]:7001")
    assert parsed.nodes == (("10.0.0.1", 7000), ("::1", 7001))
    assert parsed.options == {"ssl": True, "username": "app", "password": "s@crt"}
    assert parse_cluster_url("redis+cluster://h:1/0").nodes == (("h", 1),)
    for bad in ("redis+cluster://h:1/2", "redis+cluster://h:1?timeout=1", "redis+cluster://h",
                "redis://h:1"):  # fmt: skip
        with pytest.raises(ValueError):
            parse_cluster_url(bad)


@pytest.fixture
def cluster(tmp_path):
    with LocalRedisCluster(tmp_path / "cluster", masters=3, replicas=1) as local:
        yield local


@pytest.fixture
def example(small_bundle) -> dict:
    return json.loads((small_bundle[1] / "example_request.json").read_text())


def fill(cluster: LocalRedisCluster, small_bundle, example: dict, tmp_path) -> None:
    """The compose stack's embeddings job, pointed at the cluster, over the example's items
    and 300 more of the catalog (enough to reach every master; encoding is the slow part)."""
    bundle, artifacts = small_bundle
    catalog = pd.read_parquet(artifacts / "data" / "searchlog" / "catalog.parquet")
    wanted = {item["id"] for item in example["items"]}
    ids = catalog["item_id"].astype(str)
    subset = catalog[ids.isin(wanted) | (np.arange(len(catalog)) < 300)]
    subset.to_parquet(tmp_path / "catalog.parquet")
    embed_items_main(
        ["--catalog", str(tmp_path / "catalog.parquet"),
         "--encoder", str(bundle / "text_encoder"), "--redis", cluster.url, "--prefix", PREFIX,
         "--threads", "1"]
    )  # fmt: skip


def cluster_env(service_env, cluster) -> dict[str, str]:
    return {
        **service_env,
        "MOERANK_REDIS_URL": cluster.url,
        "MOERANK_KEY_PREFIX": PREFIX,
        "MOERANK_EMBEDDING_STORE_PATH": "",  # the vectors are in the cluster only
        "MOERANK_LRU_ITEMS": "0",  # every call asks the cluster
        "MOERANK_BREAKER_COOLDOWN_S": "0.3",
        # A busy test machine must not time calls out: these tests are about the topology.
        "MOERANK_REDIS_TIMEOUT_MS": "250",
    }


def rank(url: str, body: dict) -> dict:
    answer = httpx.post(f"{url}/v1/rank", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def script_calls(cluster: LocalRedisCluster) -> dict[int, int]:
    """Per running master: the lookup scripts it has run, and any MGET."""
    calls = {}
    for port in cluster.running():
        client = redis.Redis(port=port)
        if client.info("replication")["role"] != "master":
            continue
        stats = client.info("commandstats")
        calls[port] = sum(
            stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval", "mget")
        )
    return calls


def test_embeddings_job_fills_the_cluster_and_a_ranking_asks_each_node_once(
    cluster, small_bundle, service_env, example, tmp_path
):
    fill(cluster, small_bundle, example, tmp_path)
    masters = script_calls(cluster)
    assert len(masters) == 3
    assert all(redis.Redis(port=p).dbsize() > 0 for p in masters)  # the catalog is sharded

    with ServiceProcess(cluster_env(service_env, cluster)) as service:
        encoder_id = httpx.get(f"{service.url}/v1/models").json()["text_encoder"]["id"]
        keys = [item_key(PREFIX, encoder_id, item["id"]) for item in example["items"]]
        client = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        nodes = {client.get_node_from_key(key).port for key in keys}
        client.close()
        before, metrics_before = script_calls(cluster), service.metrics()
        answer = rank(service.url, example)
        after, metrics_after = script_calls(cluster), service.metrics()
        stored = rank(service.url, example)

    degraded = answer["degraded"]
    assert degraded["embedding_store"] == "ok"
    assert degraded["embedding_cache_misses"] == degraded["online_encodes"] == 0
    n = len(example["items"])
    assert metric_delta(metrics_before, metrics_after, "moerank_embedding_lookups_total",
                        tier="redis", outcome="hit") == n  # fmt: skip
    # One command per node holding a key of the request, none on the others.
    assert {p: after[p] - before[p] for p in after} == {p: int(p in nodes) for p in after}
    assert [i["score"] for i in answer["items"]] == [i["score"] for i in stored["items"]]


def test_a_master_killed_mid_run_degrades_answers_until_its_replica_takes_over(
    cluster, small_bundle, service_env, example, traffic, tmp_path
):
    fill(cluster, small_bundle, example, tmp_path)
    body = {**example, "items": example["items"][:20]}

    def ok(answer: dict) -> bool:
        degraded = answer["degraded"]
        return degraded["embedding_store"] == "ok" and degraded["embedding_cache_misses"] == 0

    with ServiceProcess(cluster_env(service_env, cluster)) as service:
        encoder_id = httpx.get(f"{service.url}/v1/models").json()["text_encoder"]["id"]
        calls = traffic(service.url, body)
        assert calls.wait_for(ok, 10)
        before = service.metrics()
        victim = cluster.master_of(item_key(PREFIX, encoder_id, body["items"][0]["id"]))
        calls.phase = "killed"
        killed_at = time.monotonic()
        cluster.stop_node(victim)
        assert calls.wait_for(lambda a: a["degraded"]["embedding_store"] == "unavailable", 10)
        assert calls.wait_for(ok, 30), "answers did not recover after the failover"
        recovered_s = time.monotonic() - killed_at
        calls.phase = "failed over"
        assert calls.wait_for(ok, 5)
        calls.stop()
        after = service.metrics()

    assert {status for _, status, _ in calls.records} == {200}, "a request failed"
    flagged = [a for a in calls.answers("killed") if a["degraded"]["embedding_store"] != "ok"]
    # Every item of a flagged answer ranks with its title's vector, never a zero vector. The 20
    # titles are encoded once in the whole run, by the first call the store failed (after the
    # kill, or a lookup before the cluster client had learnt the slot map); the in-process
    # title cache serves every later one.
    assert flagged and all(
        (a["degraded"]["missing_embeddings"], a["degraded"]["deferred_encodes"]) == (0, 0)
        for a in flagged
    )
    assert sum(a["degraded"]["online_encodes"] for _, _, a in calls.records) == 20
    assert all(ok(a) for a in calls.answers("failed over"))
    assert metric_delta(before, after, "moerank_redis_errors_total", error="connection") >= 1
    assert cluster.master_of(item_key(PREFIX, encoder_id, body["items"][0]["id"])) != victim
    print(f"killed master {victim}: answers degraded for {recovered_s:.1f} s, none failed")
