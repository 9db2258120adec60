"""The load-test traffic (loadtest/traffic.py) without locust: list sizes, cold items, head
queries and bad calls come in the shares asked for; each bad call gets its 4xx from a real
service and a good one its 200; `python -m loadtest` runs locust end to end against it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import httpx
import numpy as np
import pytest

from contract.embeddings import load_embedding_store
from contract.schema import shared_data_dir
from loadtest.service_process import ServiceProcess
from loadtest.traffic import (
    Mix,
    Traffic,
    catalog_items,
    head_sessions,
    parse_sizes,
    read_log,
    read_replay,
    replay_arrivals,
)

DRAWS = 3000


@pytest.fixture(scope="module")
def warm(small_bundle) -> set[str]:
    return set(load_embedding_store(small_bundle[1] / "item_embeddings.npz").item_ids.tolist())


@pytest.fixture(scope="module")
def log(small_bundle, warm):
    return read_log(small_bundle[1] / "data" / "searchlog", warm)


@pytest.fixture(scope="module")
def server(service_env):
    with ServiceProcess(service_env) as service:
        yield service


def test_parse_sizes():
    assert parse_sizes("100:0.7, 10:0.3") == ((100, 0.7), (10, 0.3))
    assert parse_sizes("100") == ((100, 1.0),)
    with pytest.raises(ValueError):
        Mix(sizes=((0, 1.0),))


def test_list_sizes_follow_the_mix_and_ids_are_unique(log):
    mix = Mix(sizes=((100, 0.6), (10, 0.3), (300, 0.1)), bad_share=0.0, cold_share=0.0)
    traffic = Traffic(log, mix, seed=3)
    sizes = Counter()
    for _ in range(DRAWS):
        items = json.loads(traffic.next().body)["items"]
        ids = [item["id"] for item in items]
        assert len(set(ids)) == len(ids)
        sizes[len(ids)] += 1
    assert set(sizes) == {100, 10, 300}
    for n, weight in mix.sizes:
        assert sizes[n] / DRAWS == pytest.approx(weight, abs=0.04)


def test_candidates_start_with_the_session_then_its_category(log):
    traffic = Traffic(log, Mix(sizes=((100, 1.0),), bad_share=0.0, cold_share=0.0))
    session = next(i for i, items in enumerate(log.session_items) if 10 <= len(items) < 60)
    body = json.loads(traffic.body(session, 100, cold=0))
    shown = [json.loads(b'{"id":' + item_id + rest) for item_id, rest in log.session_items[session]]
    assert body["items"][: len(shown)] == shown
    category = body["query"]["category"]

    def in_category(items: list[dict]) -> int:
        return sum(item["categorical"]["item_category"] == category for item in items)

    filled = body["items"][len(shown) :]
    assert len(filled) == 100 - len(shown)
    available = in_category(catalog_items(log)) - in_category(shown)
    # the category's other items first, as many as it has, then items of any category
    assert in_category(filled[:available]) == min(len(filled), available)


def test_cold_items_are_exactly_the_share_and_never_repeat(log, warm):
    traffic = Traffic(log, Mix(sizes=((100, 0.5), (20, 0.5)), cold_share=0.1, bad_share=0.0))
    seen = set()
    for _ in range(500):
        items = json.loads(traffic.next().body)["items"]
        cold = [item for item in items if item["id"] not in warm]
        assert len(cold) == round(0.1 * len(items))
        assert all(item["title"] for item in cold)  # the service can encode them
        assert not seen & {item["id"] for item in cold}
        seen |= {item["id"] for item in cold}


def test_head_queries_get_their_share(log):
    mix = Mix(head_share=0.5, head_queries=5, bad_share=0.0, sizes=((10, 1.0),))
    traffic = Traffic(log, mix, seed=1)
    head = {log.query_texts[i].lower() for i in head_sessions(log.query_texts, 5)}
    assert 1 <= len(head) <= 5
    hits = sum(
        json.loads(traffic.next().body)["query"]["text"].lower() in head for _ in range(DRAWS)
    )
    base = sum(log.query_texts[i].lower() in head for i in range(len(log.query_texts)))
    expected = 0.5 + 0.5 * base / len(log.query_texts)
    assert hits / DRAWS == pytest.approx(expected, abs=0.04)


def test_bad_calls_get_their_share_and_every_kind(log):
    traffic = Traffic(log, Mix(bad_share=0.2, sizes=((10, 1.0),)), seed=2)
    kinds = Counter(traffic.next().kind for _ in range(DRAWS))
    assert (DRAWS - kinds.pop("rank")) / DRAWS == pytest.approx(0.2, abs=0.03)
    assert set(kinds) == {f"bad:{kind}" for kind in traffic.bad}


def test_every_bad_call_gets_its_4xx_and_good_calls_200(server, log):
    max_items = httpx.get(f"{server.url}/v1/models", timeout=30).json()["max_items"]
    traffic = Traffic(log, Mix(sizes=((100, 1.0),), cold_share=0.1), max_items=max_items)
    assert len(traffic.bad) >= 8
    for kind, (body, status) in traffic.bad.items():
        answer = httpx.post(f"{server.url}/v1/rank", content=body, timeout=30)
        assert answer.status_code == status, (kind, answer.text[:300])
        assert 400 <= status < 500 and answer.json()["detail"]
    for session in range(3):
        body = traffic.body(session, 100, cold=10)
        answer = httpx.post(f"{server.url}/v1/rank", content=body, timeout=60)
        assert answer.status_code == 200, answer.text[:300]
        degraded = answer.json()["degraded"]
        assert degraded["online_encodes"] == 10 and degraded["embedding_cache_misses"] == 10


def test_replay_arrivals_keep_the_rhythm_at_the_rate():
    times = np.array([0.0, 10.0, 10.5, 11.0, 40.0])
    arrivals = replay_arrivals(times, rate=2.0)
    assert arrivals[-1] == pytest.approx(len(times) / 2.0)  # 5 calls at 2/s
    assert np.allclose(np.diff(arrivals) / np.diff(times), arrivals[-1] / 40.0)


@pytest.mark.skipif(shared_data_dir() is None, reason="no shared data (MOERANK_SHARED_DATA)")
def test_bestbuy_replay_sends_real_queries_in_time_order():
    log, times = read_replay(shared_data_dir())
    assert len(log.queries) == len(times) > 40_000
    assert np.all(np.diff(times) >= 0)
    traffic = Traffic(log, Mix(sizes=((100, 1.0),), cold_share=0.0, bad_share=0.0))
    body = json.loads(traffic.next(session=0).body)
    assert body["query"]["text"] == log.query_texts[0]
    clicked = json.loads(log.session_items[0][0][0])
    assert body["items"][0]["id"] == clicked and len(body["items"]) == 100


def test_python_m_loadtest_runs_locust_headless(server, small_bundle, tmp_path):
    prefix = tmp_path / "locust"
    done = subprocess.run(
        [sys.executable, "-m", "loadtest", "--host", server.url, "--users", "2",
         "--run-time", "4s", "--csv", str(prefix), "--artifacts", str(small_bundle[1]),
         "--bad-share", "0.3", "--sizes", "20"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(prefix.with_name("locust_summary.json").read_text())
    rows = {row["name"]: row for row in summary["stats"]}
    assert rows["/v1/rank"]["requests"] > 0
    assert any(name.startswith("/v1/rank bad:") for name in rows)
    assert all(row["failures"] == 0 for row in rows.values())
    assert summary["client"]["cpu_s"] > 0
    assert prefix.with_name("locust_stats.csv").exists()
    for line in ("/v1/rank", "P99", "client (locust) CPU", "stage mean"):
        assert line in done.stdout
