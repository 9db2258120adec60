"""Latency of one in-flight /v1/rank call of 100 items, through a real uvicorn process.

The service runs as `python -m service` on a free port with the bundle given; the item
embeddings file is preloaded (into the LRU too), so every call is a warm-cache call. One
client sends the calls one after another over a keep-alive connection and times each.
The server's own stage means (from /metrics) are reported beside the client's percentiles.

    python benchmarks/single_request_latency.py artifacts/bundles/default [--calls 2000]

Writes results/single_request_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np

from contract.embeddings import load_embedding_store
from loadtest.server_metrics import histogram_quantile, metric_delta
from loadtest.service_process import ServiceProcess
from service.metrics import STAGES
from training.results import write_results


def payload(example: dict, item_ids: list[str], items: int) -> dict:
    """`items` candidates shaped like the example request's (features, categories, titles),
    with ids that have precomputed embeddings."""
    pattern = example["items"]
    candidates = [
        {**pattern[i % len(pattern)], "id": str(item_id)}
        for i, item_id in enumerate(item_ids[:items])
    ]
    return {"query": example["query"], "items": candidates, "top_n": 10}


def stage_means(before: dict, after: dict) -> dict[str, float]:
    """Mean seconds per stage between two ServiceProcess.metrics() snapshots."""
    means = {}
    for stage in STAGES:
        count = metric_delta(before, after, "moerank_stage_duration_seconds_count", stage=stage)
        total = metric_delta(before, after, "moerank_stage_duration_seconds_sum", stage=stage)
        if count:
            means[stage] = total / count
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="bundle directory")
    parser.add_argument("--artifacts", type=Path, help="default: the bundle's ../..")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument(
        "--redis-url", help="also measure with Redis and the LRU off: one MGET per call"
    )
    parser.add_argument("--env", action="append", default=[], help="extra MOERANK_X=value")
    args = parser.parse_args()

    artifacts = args.artifacts or args.bundle.resolve().parents[1]
    embeddings = artifacts / "item_embeddings.npz"
    example = json.loads((artifacts / "example_request.json").read_text())
    item_ids = [str(i) for i in load_embedding_store(embeddings).item_ids]
    body = payload(example, item_ids, args.items)
    env = {
        "MOERANK_BUNDLE_PATH": str(args.bundle),
        "MOERANK_EMBEDDING_STORE_PATH": str(embeddings),
        "MOERANK_LRU_PRELOAD_ITEMS": str(max(args.items, 10_000)),
        **dict(e.split("=", 1) for e in args.env),
    }
    configs = {"memory store, LRU": env}
    if args.redis_url:
        prefix = f"moerank-bench-{time.time_ns()}"
        configs["redis, LRU off"] = {
            **env,
            "MOERANK_REDIS_URL": args.redis_url,
            "MOERANK_KEY_PREFIX": prefix,
            "MOERANK_LRU_ITEMS": "0",
        }
    rows = []
    for name, config in configs.items():
        try:
            row, models = measure(args, config, body)
        finally:
            if "MOERANK_REDIS_URL" in config:
                delete_keys(args.redis_url, config["MOERANK_KEY_PREFIX"])
        rows.append({"config": name, **row})
        print(
            f"{name}: {args.items} items x {args.calls} sequential calls: "
            f"P50 {row['p50_ms']:.2f} ms, P95 {row['p95_ms']:.2f} ms, "
            f"P99 {row['p99_ms']:.2f} ms, max {row['max_ms']:.2f} ms; "
            f"degraded calls {row['degraded_calls']}"
        )
        print(
            f"  server (histogram): P50 {row['server_p50_ms']:.2f} ms, P99 "
            f"{row['server_p99_ms']:.2f} ms, mean {row['server_request_mean_ms']:.2f} ms, CPU "
            f"{row['server_cpu_ms_per_call']:.2f} ms per call; stage means (ms):",
            row["server_stage_mean_ms"],
        )
    path = write_results(
        "single_request_latency",
        rows,
        extra={
            "model": {"name": models["name"], "version": models["version"]},
            "env": env,
            "load_average": [round(x, 2) for x in os.getloadavg()],  # the machine is shared
            "niceness": os.nice(0),
        },
    )
    print(f"wrote {path}")


def delete_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def measure(args, env: dict, body: dict) -> tuple[dict, dict]:
    with ServiceProcess(env) as service, httpx.Client(base_url=service.url) as client:
        content = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        for _ in range(args.warmup):
            client.post("/v1/rank", content=content, headers=headers).raise_for_status()
        before = service.metrics()
        times = np.empty(args.calls)
        degraded = 0
        for i in range(args.calls):
            start = time.perf_counter()
            answer = client.post("/v1/rank", content=content, headers=headers)
            times[i] = time.perf_counter() - start
            answer.raise_for_status()
            d = answer.json()["degraded"]
            degraded += bool(d["embedding_cache_misses"] or d["embedding_store"] != "ok")
        after = service.metrics()
        stages = stage_means(before, after)
        rank = {"endpoint": "/v1/rank", "status": "2xx"}
        server_total = metric_delta(before, after, "moerank_request_duration_seconds_sum", **rank)
        # CPU seconds the server spent per call: unlike wall time, barely moved by other
        # processes competing for the cores.
        server_cpu = metric_delta(before, after, "process_cpu_seconds_total")

        def quantile(q: float) -> float:
            name = "moerank_request_duration_seconds"
            return histogram_quantile(q, before, after, name, **rank)

        models = client.get("/v1/models").json()

    ms = times * 1e3
    row = {
        "items": args.items,
        "calls": args.calls,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "degraded_calls": degraded,
        "server_request_mean_ms": round(server_total / args.calls * 1e3, 3),
        "server_p50_ms": round(quantile(0.5) * 1e3, 3),
        "server_p99_ms": round(quantile(0.99) * 1e3, 3),
        "server_cpu_ms_per_call": round(server_cpu / args.calls * 1e3, 3),
        "server_stage_mean_ms": {k: round(v * 1e3, 3) for k, v in stages.items()},
    }
    return row, models


if __name__ == "__main__":
    main()
