"""Cross-request micro-batching, off against on, interleaved in one run.

One service per configuration on the same bundle, all up at once: `off` with
MOERANK_BATCH_WAIT_MS=0 (every call runs alone), `on` with batches waiting up to --wait-ms
for calls on their way (service/batcher.py), and any --config NAME=MOERANK_X=value+... beside them. Warm
100-item calls of generated log sessions (every item vector in the LRU, every query seen
once), sent by serve_latency.py's callers over the raw-HTTP client: c=1 (P50/P99: batching
must not slow a lone call) and c=16 (calls/s and P99). Every point runs on each
configuration in turn, in --passes short passes, each in the order opposite to the one
before (this VM's speed drifts by tens of percent within minutes, and other work shares its
2 cores); the figures are medians over the passes, and each ratio is the median of the
ratios of configurations measured side by side within a pass.

    python benchmarks/batching.py [--bundle artifacts/bundles/default] [--seconds 4]
        [--passes 10] [--wait-ms 2] [--config pool=MOERANK_MODEL_CALLS=thread_pool+MOERANK_BATCH_WAIT_MS=2]

Writes results/<--name>.json: rows (pass, config, load point, calls/s, P50/P99, the
server's CPU per call and mean batch size), medians, and the ratios against `off` (calls/s,
P50, P99, the server's CPU per call) with the issue's targets (c=16: >= 1.5x the calls/s, P99 no worse; c=1 no slower).
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path
from statistics import median

from serve_latency import assignments, numbers, run_point, settle, warm_up

from contract.embeddings import load_embedding_store
from loadtest.server_metrics import metric_delta
from loadtest.service_process import ServiceProcess
from loadtest.traffic import Mix, Traffic, read_log
from training.results import cpu_model, write_results

TARGETS = {"c16_rps_ratio": 1.5, "c16_p99_ratio": 1.0, "c1_p50_ratio": 1.0, "c1_p99_ratio": 1.0}


def configs(wait_ms: float, extra: list[str]) -> dict[str, dict[str, str]]:
    """NAME -> its own MOERANK_* settings: off, on (batches wait up to wait_ms), then
    --config's."""
    out = {"off": {"MOERANK_BATCH_WAIT_MS": "0"}, "on": {"MOERANK_BATCH_WAIT_MS": f"{wait_ms:g}"}}
    for text in extra:
        name, _, pairs = text.partition("=")
        out[name] = assignments(pairs.split("+"))
    return out


def batch_sizes(before: dict, after: dict) -> float | None:
    """Mean calls per model run over a point (None: batching off, nothing observed)."""
    runs = metric_delta(before, after, "moerank_batch_size_count")
    return round(metric_delta(before, after, "moerank_batch_size_sum") / runs, 2) if runs else None


def ratios(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Each configuration against `off`, per pass and point, then the median over passes."""
    out = {}
    for name in dict.fromkeys(r["config"] for r in rows if r["config"] != "off"):
        found: dict[str, list[float]] = {}
        for row in (r for r in rows if r["config"] == name):
            off = next(
                r for r in rows
                if r["config"] == "off" and (r["pass"], r["concurrency"]) == (row["pass"], row["concurrency"])
            )  # fmt: skip
            keys = ("rps", "p50_ms", "p99_ms") if row["concurrency"] > 1 else ("p50_ms", "p99_ms")
            pairs = [(key.removesuffix("_ms"), row[key], off[key]) for key in keys]
            # The server's CPU per call: what batching saves, less blurred by other work on
            # the machine than calls/s (which is also whatever CPU share the server got).
            pairs.append(("cpu", server_cpu(row), server_cpu(off)))
            for key, value, reference in pairs:
                if value and reference:
                    label = f"c{row['concurrency']}_{key}_ratio"
                    found.setdefault(label, []).append(value / reference)
        out[name] = {label: round(median(values), 3) for label, values in found.items()}
    return out


def server_cpu(row: dict) -> float | None:
    return row["server"].get("cpu_ms_per_call")


def verdict(ratios_on: dict[str, float]) -> dict[str, bool]:
    return {
        "c16_rps_met": ratios_on["c16_rps_ratio"] >= TARGETS["c16_rps_ratio"],
        "c16_p99_met": ratios_on["c16_p99_ratio"] <= TARGETS["c16_p99_ratio"],
        # A lone call: no slower within the run-to-run noise of the pass pairs (5%).
        "c1_not_slower": ratios_on["c1_p50_ratio"] <= 1.05 and ratios_on["c1_p99_ratio"] <= 1.05,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/default"))
    parser.add_argument(
        "--artifacts", type=Path, help="log and embeddings; default: bundle's ../.."
    )
    parser.add_argument("--wait-ms", type=float, default=2.0, help="MOERANK_BATCH_WAIT_MS of on")
    parser.add_argument("--config", action="append", default=[], help="NAME=MOERANK_X=v+...")
    parser.add_argument("--concurrency", type=lambda t: numbers(t, int), default=[1, 16])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=4.0, help="per point")
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=300, help="distinct log sessions used")
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=10.0, help="per call, seconds")
    parser.add_argument("--name", default="batching", help="results/<name>.json")
    args = parser.parse_args()
    artifacts = args.artifacts or args.bundle.resolve().parents[1]

    load_before = [round(x, 2) for x in os.getloadavg()]
    store = load_embedding_store(artifacts / "item_embeddings.npz")
    log = read_log(artifacts / "data" / "searchlog", set(map(str, store.item_ids)))
    sessions = random.Random(0).sample(
        range(len(log.queries)), min(args.sessions, len(log.queries))
    )
    traffic = Traffic(log, Mix(((args.items, 1.0),), 0.0, bad_share=0.0), seed=1)
    base = {
        "MOERANK_BUNDLE_PATH": str(args.bundle),
        "MOERANK_EMBEDDING_STORE_PATH": str(artifacts / "item_embeddings.npz"),
        "MOERANK_LRU_PRELOAD_ITEMS": str(len(store.item_ids)),  # every stored vector in the LRU
    }
    named = configs(args.wait_ms, args.config)
    services = {name: ServiceProcess({**base, **env}) for name, env in named.items()}
    rows = []
    try:
        for service in services.values():
            service.start()
            warm_up(service, traffic, sessions)
        order = list(services)
        for n in range(args.passes):
            for concurrency in args.concurrency:
                for name in order if n % 2 == 0 else order[::-1]:
                    service = services[name]
                    before = service.metrics()
                    row = run_point(service, traffic, sessions, concurrency, None, args)
                    row = {"pass": n, "config": name, **row}
                    row["batch_size_mean"] = batch_sizes(before, service.metrics())
                    rows.append(row)
                    print(
                        f"pass {n} {name:>5} c={concurrency:<3} calls/s {row['rps']:7.1f}  "
                        f"P50 {row['p50_ms']:6.2f}  P99 {row['p99_ms']:6.2f} ms  server CPU "
                        f"{row['server'].get('cpu_ms_per_call')} ms/call  batch "
                        f"{row['batch_size_mean']}",
                        flush=True,
                    )
                    settle(service)
    finally:
        for service in services.values():
            service.stop()

    medians = [
        {
            "config": name,
            "concurrency": c,
            **{key: round(median(r[key] for r in mine), 3) for key in ("rps", "p50_ms", "p99_ms")},
            "server_cpu_ms_per_call": round(median(server_cpu(r) or 0.0 for r in mine), 3),
            "batch_size_mean": mine[0]["batch_size_mean"]
            and round(median(r["batch_size_mean"] for r in mine), 2),
        }
        for name in named
        for c in args.concurrency
        if (mine := [r for r in rows if (r["config"], r["concurrency"]) == (name, c)])
    ]
    against_off = ratios(rows)
    print("medians:", *medians, sep="\n  ")
    print("against off:", against_off)
    extra = {
        "medians": medians,
        "ratios_against_off": against_off,
        "targets": TARGETS,
        "met": {name: verdict(r) for name, r in against_off.items()},
        "configs": named,
        "bundle": str(args.bundle),
        "settings": {"seconds": args.seconds, "passes": args.passes, "items": args.items},
        "cpu": cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],  # the machine is shared
    }
    print(f"wrote {write_results(args.name, rows, extra=extra)}")


if __name__ == "__main__":
    main()
