"""A ranking call's embedding lookup on a Redis Cluster: what it costs per call, and how many
round trips, for the ways of asking a cluster for 100 keys at once.

A request's items hash to ~100 different slots, and MGET refuses keys of different slots
(CROSSSLOT). The candidates, each measured against a single server's one MGET (baseline):

- per_item_get: one GET per item, sent concurrently (one round trip per item: what to avoid);
- per_slot_pipeline: redis-py's mget_nonatomic: one MGET per slot, the MGETs for one node sent
  as one pipeline (one round trip per node touched), keys unchanged;
- hash_tag_B: keys carry a hash tag `{b}` with b = crc32(item_id) mod B, so a call's keys fall
  into at most B slots; still one pipeline per node, at most B MGETs (B = 16, 256). This changes
  the key format, and caps how evenly the keys spread: B slots over the masters.

Each is timed from the client (asyncio, redis-py with hiredis, one connection pool) over
`--calls` sequential calls of `--items` random ids of `--catalog` stored float16 vectors
(768 bytes): P50/P99 wall time, client CPU per call (the event loop that also runs the model
pays it), and the round trips counted as pipelines sent. A 3-master cluster and the single
server run here as local processes (infra/redis_cluster.py).

    python benchmarks/redis_cluster_lookup.py [--calls 2000] [--items 100] [--catalog 20000]

Writes results/redis_cluster_lookup.json.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from infra.redis_cluster import LocalRedisCluster, free_cluster_port
from training.results import cpu_model, write_results

MGET_SCRIPT = """#!lua flags=allow-cross-slot-keys,no-writes
local values = {}
for i, key in ipairs(ARGV) do values[i] = redis.call('GET', key) end
return values"""
VALUE = b"\x00" * 768  # a float16 384-d vector


def plain_key(item: str) -> str:
    return f"bench:emb:enc:{item}"


def tagged_key(item: str, buckets: int) -> str:
    return f"bench:emb:enc:{{{zlib.crc32(item.encode()) % buckets}}}:{item}"


async def timed(name: str, lookup, batches: list[list[str]], items: int) -> dict:
    for batch in batches[:50]:  # warm: connections open, topology known
        await lookup(batch)
    walls = []
    cpu_start = time.process_time()
    for batch in batches:
        start = time.perf_counter()
        values = await lookup(batch)
        walls.append(time.perf_counter() - start)
        assert len(values) == items and all(v == VALUE for v in values), name
    cpu = (time.process_time() - cpu_start) / len(batches)
    walls_ms = np.array(walls) * 1000
    return {
        "method": name,
        "p50_ms": round(float(np.percentile(walls_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(walls_ms, 99)), 3),
        "client_cpu_ms_per_call": round(cpu * 1000, 3),
    }


def round_trips(cluster: RedisCluster, keys: list[str]) -> int:
    """Nodes a call's keys live on: one pipeline (one round trip) each."""
    return len({cluster.get_node_from_key(k).name for k in keys})


async def run(args) -> list[dict]:
    rng = np.random.default_rng(0)
    ids = [f"sku-{i}" for i in range(args.catalog)]
    batches = [list(rng.choice(ids, args.items, replace=False)) for _ in range(args.calls)]
    with tempfile.TemporaryDirectory() as tmp:
        single_port = free_cluster_port()
        single = subprocess.Popen(
            ["redis-server", "--port", str(single_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            with LocalRedisCluster(Path(tmp) / "cluster", masters=3) as local:
                return await measure(args, ids, batches, single_port, local)
        finally:
            single.terminate()
            single.wait()


async def measure(args, ids, batches, single_port, local) -> list[dict]:
    time.sleep(0.2)
    server = aioredis.Redis(port=single_port)
    cluster = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", local.ports[0])])
    await cluster.initialize()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        await server.mset({plain_key(i): VALUE for i in chunk})
        await cluster.mset_nonatomic({plain_key(i): VALUE for i in chunk})
        for buckets in args.buckets:
            await cluster.mset_nonatomic({tagged_key(i, buckets): VALUE for i in chunk})

    async def single_mget(batch):
        return await server.mget([plain_key(i) for i in batch])

    async def per_item_get(batch):
        return await asyncio.gather(*(cluster.get(plain_key(i)) for i in batch))

    async def per_slot_pipeline(batch):
        return await cluster.mget_nonatomic([plain_key(i) for i in batch])

    node_clients: dict[str, aioredis.Redis] = {}

    async def node_pipelines(batch):
        """The same MGET per slot, grouped by node by hand and sent on a plain (non-cluster)
        pipeline per node: redis-py's ClusterPipeline resolves a policy per command."""
        keys = [plain_key(i) for i in batch]
        by_node: dict[str, dict[int, list[int]]] = {}
        for row, key in enumerate(keys):
            slot = redis.cluster.key_slot(key.encode())
            node = cluster.nodes_manager.get_node_from_slot(slot).name
            by_node.setdefault(node, {}).setdefault(slot, []).append(row)
        pipes = []
        for node, slots in by_node.items():
            if node not in node_clients:
                host, port = node.rsplit(":", 1)
                node_clients[node] = aioredis.Redis(host=host, port=int(port))
            pipe = node_clients[node].pipeline(transaction=False)
            for rows in slots.values():
                pipe.mget([keys[r] for r in rows])
            pipes.append((slots, pipe.execute()))
        out = [None] * len(keys)
        answers = await asyncio.gather(*(p for _, p in pipes))
        for (slots, _), replies in zip(pipes, answers):
            for rows, values in zip(slots.values(), replies):
                for r, v in zip(rows, values):
                    out[r] = v
        return out

    scripts: dict[str, object] = {}

    async def node_script(batch):
        """One EVALSHA per node: a script flagged allow-cross-slot-keys MGETs all the keys that
        node holds, whatever their slots (Redis 7)."""
        keys = [plain_key(i) for i in batch]
        by_node: dict[str, list[int]] = {}
        for row, key in enumerate(keys):
            node = cluster.nodes_manager.get_node_from_slot(
                redis.cluster.key_slot(key.encode())
            ).name
            by_node.setdefault(node, []).append(row)
        calls = []
        for node, rows in by_node.items():
            if node not in node_clients:
                host, port = node.rsplit(":", 1)
                node_clients[node] = aioredis.Redis(host=host, port=int(port))
            if node not in scripts:
                scripts[node] = node_clients[node].register_script(MGET_SCRIPT)
            calls.append(scripts[node](args=[keys[r] for r in rows]))
        out = [None] * len(keys)
        for rows, values in zip(by_node.values(), await asyncio.gather(*calls)):
            for r, v in zip(rows, values):
                out[r] = v
        return out

    def hash_tagged(buckets):
        async def lookup(batch):
            return await cluster.mget_nonatomic([tagged_key(i, buckets) for i in batch])

        return lookup

    methods = [
        ("single_server_mget", single_mget, lambda b: 1, lambda b: 1),
        ("per_item_get", per_item_get, lambda b: len(b), lambda b: len(b)),
        ("per_slot_pipeline", per_slot_pipeline,
         lambda b: round_trips(cluster, [plain_key(i) for i in b]),
         lambda b: len({redis.cluster.key_slot(plain_key(i).encode()) for i in b})),
        ("per_slot_node_pipelines", node_pipelines,
         lambda b: round_trips(cluster, [plain_key(i) for i in b]),
         lambda b: len({redis.cluster.key_slot(plain_key(i).encode()) for i in b})),
        ("per_node_script", node_script,
         lambda b: round_trips(cluster, [plain_key(i) for i in b]),
         lambda b: round_trips(cluster, [plain_key(i) for i in b])),
    ] + [
        (f"hash_tag_{n}", hash_tagged(n),
         lambda b, n=n: round_trips(cluster, [tagged_key(i, n) for i in b]),
         lambda b, n=n: len({redis.cluster.key_slot(tagged_key(i, n).encode()) for i in b}))
        for n in args.buckets
    ]  # fmt: skip
    rows = []
    for name, lookup, trips, commands in methods:
        row = await timed(name, lookup, batches, args.items)
        row["round_trips_per_call"] = float(np.mean([trips(b) for b in batches[:200]]))
        row["commands_per_call"] = float(np.mean([commands(b) for b in batches[:200]]))
        rows.append(row)
        print(row, flush=True)
    base = rows[0]
    for row in rows:
        row["p99_vs_single"] = round(row["p99_ms"] / base["p99_ms"], 2)
        row["cpu_vs_single"] = round(
            row["client_cpu_ms_per_call"] / base["client_cpu_ms_per_call"], 2
        )
    await server.aclose()
    await cluster.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--catalog", type=int, default=20_000)
    parser.add_argument("--buckets", type=lambda s: [int(x) for x in s.split(",")],
                        default=[16, 256])  # fmt: skip
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    path = write_results(
        "redis_cluster_lookup",
        rows,
        {"machine": cpu_model(), "items": args.items, "calls": args.calls, "masters": 3},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
