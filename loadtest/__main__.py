"""python -m loadtest: locust headless against a running service, then the figures.
(`python -m loadtest --shoppers ...`: simulated shoppers instead, see loadtest/shopper_run.py.)

    python -m loadtest --host http://127.0.0.1:8000 --users 16 --run-time 60s \\
        --csv results/loadtest/locust [--rate 300] [--replay auto] [--sizes 100:1] ...

Options it does not know go to locust and the locustfile (loadtest/locustfile.py: --artifacts,
--replay, --rate, --sizes, --cold-share, --head-share, --bad-share, --seed). It waits for
/readyz, runs locust in a child process (bounded by --run-time plus a margin), writes locust's
CSVs (<csv>_stats.csv, _stats_history.csv, _failures.csv, _exceptions.csv) and the final
figures (<csv>_summary.json), and prints per call name P50/P95/P99 and RPS, what locust itself
cost in CPU per call (so a client that starves the server shows), and the server's own view
of the run from two scrapes of /metrics: its latency quantiles, its time per stage, cache hit
ratios. Exits non-zero when any call failed (a good call without its 200, a bad call without
its 4xx).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from loadtest.server_metrics import breakdown, scrape

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
MARGIN_S = 120  # start-up (reading the log) and the stop timeout, beyond --run-time


def seconds(run_time: str) -> float:
    """locust's time strings: "90", "90s", "2m", "1h30m"."""
    if run_time.strip().isdigit():
        return float(run_time)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", run_time)
    if not parts:
        raise ValueError(f"not a run time: {run_time!r}")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[unit] for n, unit in parts)


def wait_ready(host: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{host}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{host}/readyz did not answer 200 in {timeout_s:.0f} s: is it up?")
        time.sleep(0.5)


def print_report(stats: list[dict], client: dict, server: dict) -> None:
    print(f"\n{'name':<36} {'calls':>7} {'fail':>5} {'P50':>6} {'P95':>6} {'P99':>6} {'RPS':>7}")
    for row in stats:
        print(
            f"{row['name'][:36]:<36} {row['requests']:>7} {row['failures']:>5} "
            f"{row['p50_ms']:>6.0f} {row['p95_ms']:>6.0f} {row['p99_ms']:>6.0f} {row['rps']:>7.1f}"
        )
    print("(ms; locust rounds its percentiles; benchmarks/serve_latency.py records every call)")
    total = next((r for r in stats if r["name"] == "Aggregated"), None)
    if total and total["requests"] and "cpu_s" in client:
        print(
            f"client (locust) CPU while the test ran: {client['cpu_s']:.1f} s in "
            f"{client['seconds']:.0f} s, {client['cpu_s'] / total['requests'] * 1e3:.2f} ms per "
            f"call; with start-up (reading the log) {client['process_cpu_s']:.1f} s"
        )
    if server.get("calls"):
        print(
            f"server, 2xx ranking calls: {server['calls']}, P50 {server['p50_ms']} ms, "
            f"P99 {server['p99_ms']} ms, CPU {server['cpu_ms_per_call']} ms per call"
        )
        print("  stage mean (ms):", json.dumps(server["stage_mean_ms"]))
        print("  stage P99 (ms): ", json.dumps(server["stage_p99_ms"]))
        print(
            f"  item LRU hit ratio {server['item_lru_hit_ratio']}, online encodes "
            f"{server['online_encodes']}, deferred encodes {server['deferred_encodes']}, "
            f"query LRU hit ratio {server['query_lru_hit_ratio']}, "
            f"rejected {server['rejected']}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--shoppers" in argv:
        from loadtest.shopper_run import main as shoppers_main

        return shoppers_main([a for a in argv if a != "--shoppers"])
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--spawn-rate", type=float, help="users started per second (all at once)")
    parser.add_argument("--run-time", default="60s")
    parser.add_argument("--csv", type=Path, default=Path("results/loadtest/locust"))
    parser.add_argument("--ready-timeout", type=float, default=60)
    args, locust_args = parser.parse_known_args(argv)
    host = args.host.rstrip("/")
    wait_ready(host, args.ready_timeout)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", host, "--users", str(args.users),
        "--spawn-rate", str(args.spawn_rate or args.users), "--run-time", args.run_time,
        "--stop-timeout", "10", "--csv", str(args.csv), *locust_args,
    ]  # fmt: skip
    before = scrape(host)
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(command, timeout=seconds(args.run_time) + MARGIN_S)
    except subprocess.TimeoutExpired:
        print("locust did not finish in time", file=sys.stderr)
        return 2
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = sum(
        getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime")
    )
    server = breakdown(before, scrape(host))
    summary_path = Path(f"{args.csv}_summary.json")
    if not summary_path.exists():
        print(f"locust wrote no {summary_path}", file=sys.stderr)
        return done.returncode or 2
    summary = json.loads(summary_path.read_text())
    client = {**summary["client"], "process_cpu_s": round(client_cpu, 3)}
    print_report(summary["stats"], client, server)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
