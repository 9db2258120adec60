"""Replicas behind HAProxy under steady load: one killed (SIGKILL) and restarted, then all
restarted one at a time (a rolling deploy); requests, failures and P50/P99 before, during and
after, from the client through the balancer (infra/replica_drill.py, the test's drill).

Each replica is `python -m service` on its own port with MOERANK_WORKERS=1, all sharing one
Redis of the benchmark's own (a redis-server on a free port, embeddings preloaded by the
replicas from --artifacts); HAProxy runs deploy/haproxy/haproxy.cfg. Load is open loop at
--rate calls/s of the example request (its items cut to --items).

    python benchmarks/replica_failover.py [--artifacts artifacts] [--replicas 2] [--rate 40]
        [--settle 10]

Writes results/replica_failover.json: one row per phase, and each restart's timings (ready
after start, first traffic after ready).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import uuid
from pathlib import Path

from infra.haproxy import LocalHAProxy
from infra.replica_drill import PHASES, SteadyLoad, drill, summary
from loadtest.service_process import ServiceProcess, free_port
from training.results import cpu_model, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--settle", type=float, default=10.0)
    args = parser.parse_args()

    example = json.loads((args.artifacts / "example_request.json").read_text())
    body = json.dumps({**example, "items": example["items"][: args.items]}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        redis_port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind",
                                  "127.0.0.1", "--save", "", "--dir", tmp],
                                 stdout=subprocess.DEVNULL)  # fmt: skip
        env = {
            "MOERANK_BUNDLE_PATH": str(args.artifacts / "bundles" / "default"),
            "MOERANK_EMBEDDING_STORE_PATH": str(args.artifacts / "item_embeddings.npz"),
            "MOERANK_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "MOERANK_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
            "MOERANK_WORKERS": "1",
        }
        replicas = {f"r{i + 1}": ServiceProcess(env) for i in range(args.replicas)}
        try:
            for replica in replicas.values():
                replica.start()
            servers = {name: f"127.0.0.1:{r.port}" for name, r in replicas.items()}
            with LocalHAProxy(Path(tmp), servers) as lb:
                for name in replicas:
                    lb.wait_status(name, "UP")
                load = SteadyLoad(lb.url, body, rate=args.rate)
                load.start()
                try:
                    restarts = drill(replicas, lb, load, settle_s=args.settle)
                finally:
                    load.stop()
                balancer = lb.servers()
        finally:
            for replica in replicas.values():
                replica.stop()
            redis.terminate()
            redis.wait()

    rows = summary(load.outcomes, PHASES)
    for row in rows:
        print(row)
    timings = []
    for restart in restarts:
        up = next(t for t, status, _ in restart.samples if status == "UP")
        before = [n for t, _, n in restart.samples if t < restart.ready_at]
        timings.append({
            "replica": restart.name,
            "ready_after_start_s": round(restart.ready_at - restart.started_at, 2),
            "up_at_balancer_after_ready_s": round(up - restart.ready_at, 2),
            "requests_sent_before_ready": max(before) - min(before) if before else 0,
        })  # fmt: skip
        print(timings[-1])
    errors = sorted({o.error for o in load.outcomes if o.status != 200})
    path = write_results("replica_failover", rows, {
        "machine": cpu_model(), "rate": args.rate, "items": args.items,
        "replicas": args.replicas, "restarts": timings, "errors": errors,
        "balancer": {name: {k: s[k] for k in ("retries", "redispatches")}
                     for name, s in balancer.items()},
    })  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
