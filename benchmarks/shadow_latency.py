"""Does a shadow variant add to the caller's latency? /v1/rank P50/P99 with and without one,
measured in one run.

One service (`python -m service`, loadtest/service_process.py) serves a models file with two
experiments over the same bundle: `plain` (no shadow) and `shadowed` (the same model again as
a shadow, so every answer is followed by a second full scoring). Calls alternate between the
two experiments, one after the other, in an open loop (Poisson arrivals at --rate/s, each call
timed from its scheduled arrival), so both arms see the same machine, load and moment: the
difference is what the shadow costs the caller who triggers it. A second phase runs the same
traffic with MOERANK_SHADOW_QUEUE=0 (shadows dropped, never scored): the baseline with no shadow
work on the machine at all, which shows what the shadow's CPU costs everyone.

    python benchmarks/shadow_latency.py [--bundle artifacts/bundles/default]
        [--artifacts artifacts] [--rate 100] [--seconds 30] [--items 100]

Writes results/shadow_latency.json (rows per phase and arm: calls, p50_ms, p99_ms, errors;
the shadow scorings done and dropped; ratios of P99 shadowed / plain).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import numpy as np

from loadtest.rawhttp import RawClient, request_bytes
from loadtest.server_metrics import metric_delta
from loadtest.service_process import ServiceProcess
from loadtest.traffic import Mix, Traffic, poisson_arrivals, read_log
from training.results import cpu_model, write_results

MODELS = """
default = "plain"
[models]
served = "{bundle}"
shadow = "{bundle}"
[experiments.plain]
unit = "request_id"
variants = [{{name = "only", model = "served", share = 1.0}}]
[experiments.shadowed]
unit = "request_id"
variants = [{{name = "only", model = "served", share = 1.0}}]
shadows = ["shadow"]
"""
ARMS = ("plain", "shadowed")


async def open_loop(service, bodies: list[bytes], rate: float, seconds: float) -> dict:
    """Latencies (s) per arm; call i goes to ARMS[i % 2]."""
    client = RawClient("127.0.0.1", service.port, connections=64)
    latencies: dict[str, list[float]] = {arm: [] for arm in ARMS}
    errors = dict.fromkeys(ARMS, 0)
    start = time.perf_counter()

    async def call(i: int, due: float) -> None:
        arm = ARMS[i % 2]
        try:
            status, _ = await client.send(bodies[i % len(bodies)][arm])
        except Exception:
            status = 0
        if status != 200:
            errors[arm] += 1
            return
        latencies[arm].append(time.perf_counter() - due)

    tasks = []
    for i, offset in enumerate(poisson_arrivals(rate, seed=1)):
        if offset > seconds:
            break
        due = start + offset
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(call(i, due)))
    await asyncio.gather(*tasks)
    client.close()
    return {"latencies": latencies, "errors": errors}


def percentiles(values: list[float]) -> dict:
    ms = np.array(values) * 1000
    return {"calls": len(ms), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}  # fmt: skip


def phase(name: str, env: dict, bodies, args) -> list[dict]:
    with ServiceProcess(env) as service:
        asyncio.run(open_loop(service, bodies, args.rate, 3))  # warm-up, not measured
        before = service.metrics()
        run = asyncio.run(open_loop(service, bodies, args.rate, args.seconds))
        time.sleep(2)  # let the queued shadow scorings finish
        after = service.metrics()
    scored = metric_delta(before, after, "moerank_shadow_scored_total", outcome="ok")
    dropped = metric_delta(before, after, "moerank_shadow_dropped_total")
    rows = []
    for arm in ARMS:
        row = {"phase": name, "arm": arm, **percentiles(run["latencies"][arm])}
        row |= {"errors": run["errors"][arm], "shadow_scored": scored, "shadow_dropped": dropped}
        print(
            f"{name:>16} {arm:>9}: {row['calls']} calls, P50 {row['p50_ms']:.2f} ms, "
            f"P99 {row['p99_ms']:.2f} ms, errors {row['errors']}; shadow scored {scored:.0f}, "
            f"dropped {dropped:.0f}"
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/default"))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--name", default="shadow_latency")
    args = parser.parse_args()

    log = read_log(args.artifacts / "data" / "searchlog")
    traffic = Traffic(log, Mix(sizes=((args.items, 1.0),), cold_share=0.0, bad_share=0.0))
    bodies = []
    for _ in range(2000):
        body = traffic.next().body
        bodies.append({
            arm: request_bytes("POST", "/v1/rank", "127.0.0.1",
                               body[:-1] + b',"experiment":"%s"}' % arm.encode())
            for arm in ARMS
        })  # fmt: skip
    models = Path(args.artifacts) / "shadow_latency_models.toml"
    models.write_text(MODELS.format(bundle=args.bundle.resolve()))
    env = {
        "MOERANK_MODELS_FILE": str(models),
        "MOERANK_EMBEDDING_STORE_PATH": str(args.artifacts / "item_embeddings.npz"),
        "MOERANK_REDIS_URL": "",
    }
    load_before = os.getloadavg()[0]  # other jobs on the machine: both arms share them
    rows = phase("shadow_on", env, bodies, args)
    rows += phase("shadow_queue_0", {**env, "MOERANK_SHADOW_QUEUE": "0"}, bodies, args)
    p99 = {(r["phase"], r["arm"]): r["p99_ms"] for r in rows}
    ratios = {
        "p99_shadowed_over_plain_same_run": p99[("shadow_on", "shadowed")]
        / p99[("shadow_on", "plain")],
        "p99_shadow_on_over_no_shadow_work": p99[("shadow_on", "plain")]
        / p99[("shadow_queue_0", "plain")],
    }
    print(ratios)
    extra = {"machine": cpu_model(), "load_average_1m": [load_before, os.getloadavg()[0]],
             "bundle": str(args.bundle), "rate": args.rate, "seconds": args.seconds,
             "items": args.items, "ratios": ratios}  # fmt: skip
    print("wrote", write_results(args.name, rows, extra))


if __name__ == "__main__":
    main()
