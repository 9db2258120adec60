"""P99 of /v1/rank calls that overlap a bundle reload against the calls that do not.

A real service (`python -m service`, loadtest/service_process.py) serves the bundle; `--callers`
threads send the example request back to back over keep-alive connections for `--seconds`,
while the main thread posts /admin/reload every `--every` seconds (the same bundle: a full
load, validation and warm-up each time). A call overlaps a reload when its [start, end]
intersects a reload's [request sent, answer received]. Both groups come from the same run, so
the ratio compares like with like on whatever machine runs it (target: at most 2).

    python benchmarks/reload_latency.py --bundle artifacts/bundles/default \\
        --embeddings artifacts/item_embeddings.npz --example artifacts/example_request.json

Writes results/reload_latency.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

from loadtest.service_process import ServiceProcess
from training.results import cpu_model, write_results

TOKEN = "bench-reload"


def caller(port: int, body: bytes, stop: threading.Event, calls: list) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": "application/json"}
    while not stop.is_set():
        start = time.perf_counter()
        connection.request("POST", "/v1/rank", body, headers)
        answer = connection.getresponse()
        answer.read()
        calls.append((start, time.perf_counter(), answer.status))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--example", type=Path, required=True)
    parser.add_argument("--callers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--every", type=float, default=4)
    parser.add_argument("--name", default="reload_latency")
    args = parser.parse_args()

    env = {
        "MOERANK_BUNDLE_PATH": str(args.bundle),
        "MOERANK_EMBEDDING_STORE_PATH": str(args.embeddings),
        "MOERANK_ADMIN_TOKENS": TOKEN,
    }
    body = args.example.read_bytes()
    with ServiceProcess(env) as service:
        stop, calls, reloads = threading.Event(), [], []
        threads = [
            threading.Thread(target=caller, args=(service.port, body, stop, calls))
            for _ in range(args.callers)
        ]
        for thread in threads:
            thread.start()
        end = time.perf_counter() + args.seconds
        admin = http.client.HTTPConnection("127.0.0.1", service.port, timeout=120)
        while time.perf_counter() + args.every < end:
            time.sleep(args.every / 2)
            start = time.perf_counter()
            admin.request("POST", "/admin/reload", b"", {"authorization": f"Bearer {TOKEN}"})
            answer = admin.getresponse()
            answer.read()
            assert answer.status == 200, answer.status
            reloads.append((start, time.perf_counter()))
            time.sleep(args.every / 2)
        stop.set()
        for thread in threads:
            thread.join()

    def overlaps(call) -> bool:
        return any(call[0] < r_end and call[1] > r_start for r_start, r_end in reloads)

    failed = sum(status != 200 for *_, status in calls)
    during = np.array([(c[1] - c[0]) * 1e3 for c in calls if overlaps(c)])
    outside = np.array([(c[1] - c[0]) * 1e3 for c in calls if not overlaps(c)])
    row = {
        "callers": args.callers,
        "reloads": len(reloads),
        "reload_s_mean": round(float(np.mean([e - s for s, e in reloads])), 3),
        "calls_during": len(during),
        "calls_outside": len(outside),
        "failed": failed,
        "p50_ms_during": round(float(np.percentile(during, 50)), 2),
        "p50_ms_outside": round(float(np.percentile(outside, 50)), 2),
        "p99_ms_during": round(float(np.percentile(during, 99)), 2),
        "p99_ms_outside": round(float(np.percentile(outside, 99)), 2),
    }
    row["p99_ratio"] = round(row["p99_ms_during"] / row["p99_ms_outside"], 2)
    print(json.dumps(row, indent=2))
    path = write_results(
        args.name,
        [row],
        {"cpu_model": cpu_model(), "load_average_1m": os.getloadavg()[0], "target_p99_ratio": 2.0},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
