"""What does kill -9 lose from the served log? Measured, not argued.

Each trial starts the service (`python -m service`, loadtest/service_process.py) with a served log,
sends ranking calls from --callers concurrent keep-alive callers for --seconds, then kills
the process with SIGKILL while calls are still in flight. Every call that got its 200 before
the kill is an answer the caller holds; the log is then read back (contract/served_log.py)
and each such answer's record looked for. Lost = answered but not in the log. A torn last
line (a write cut mid-way) is counted too.

kill -9 ends the process, not the machine: what the writer thread handed to the kernel is in
the page cache and reaches the file, fsynced or not. So the loss measured here is what was
still queued in the process; MOERANK_SERVED_LOG_FSYNC_MS bounds the other loss, a power cut's,
which this script cannot cause.

    python benchmarks/served_log_kill9.py [--bundle artifacts/bundles/default]
        [--artifacts artifacts] [--trials 5] [--seconds 5] [--callers 8] [--items 100]

Writes results/served_log_kill9.json (a row per trial: answered, logged, lost, torn lines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from contract.served_log import ReadStats, ServedRecord, read_records
from loadtest.rawhttp import RawClient, request_bytes
from loadtest.service_process import ServiceProcess
from loadtest.traffic import Mix, Traffic, read_log
from training.results import cpu_model, write_results


async def callers(service, bodies: list[bytes], count: int, seconds: float) -> list[str]:
    """Request ids answered with 200 until the process dies (kill at `seconds`)."""
    client = RawClient("127.0.0.1", service.port, connections=count, timeout_s=5)
    answered: list[str] = []
    stop_at = time.monotonic() + seconds

    async def caller(n: int) -> None:
        rng = random.Random(n)
        while True:
            try:
                status, body = await client.send(rng.choice(bodies))
            except Exception:  # the process is gone
                return
            if status == 200:
                answered.append(json.loads(body)["request_id"])

    async def killer() -> None:
        await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
        service.proc.kill()  # SIGKILL, calls in flight

    await asyncio.gather(killer(), *(caller(n) for n in range(count)))
    client.close()
    return answered


def trial(env: dict, bodies: list[bytes], args) -> dict:
    log_dir = Path(tempfile.mkdtemp(prefix="moerank-kill9-"))
    service = ServiceProcess({**env, "MOERANK_SERVED_LOG_DIR": str(log_dir)}).start()
    try:
        answered = asyncio.run(callers(service, bodies, args.callers, args.seconds))
        service.proc.wait(30)
    finally:
        service.stop()
    stats = ReadStats()
    logged = {r.request_id for r in read_records(log_dir, stats) if isinstance(r, ServedRecord)}
    lost = [request_id for request_id in answered if request_id not in logged]
    row = {"answered": len(answered), "logged": len(logged), "lost": len(lost),
           "torn_lines": stats.unreadable_lines, "segments": stats.segments}  # fmt: skip
    print(row)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/default"))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--name", default="served_log_kill9")
    args = parser.parse_args()

    log = read_log(args.artifacts / "data" / "searchlog")
    traffic = Traffic(log, Mix(sizes=((args.items, 1.0),), cold_share=0.0, bad_share=0.0))
    bodies = [
        request_bytes("POST", "/v1/rank", "127.0.0.1", traffic.next().body) for _ in range(500)
    ]
    env = {
        "MOERANK_BUNDLE_PATH": str(args.bundle),
        "MOERANK_EMBEDDING_STORE_PATH": str(args.artifacts / "item_embeddings.npz"),
        "MOERANK_REDIS_URL": "",
    }
    rows = [trial(env, bodies, args) for _ in range(args.trials)]
    extra = {"machine": cpu_model(), "seconds": args.seconds, "callers": args.callers,
             "items": args.items, "lost_total": sum(r["lost"] for r in rows),
             "answered_total": sum(r["answered"] for r in rows)}  # fmt: skip
    print("wrote", write_results(args.name, rows, extra))


if __name__ == "__main__":
    main()
