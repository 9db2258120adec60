"""The in-process pipeline's CPU per call, this checkout against another, interleaved.

A server's CPU per call drifts by several percent between load points on a shared VM, more
than a few microseconds of per-item work; the pipeline called in-process (overhead.py's
`pipeline` point, no HTTP) in two processes taking turns resolves it. Each process imports
its own checkout's service and benchmarks/overhead.py (the row form, warm caches).

    PYTHONPATH=. python benchmarks/pipeline_ab.py --other DIR --bundle B --pairs 6

prints this checkout's CPU per call over the other's (each start order's median ratio, and
their geometric mean).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path


async def worker(bundle: Path, seconds: float) -> None:
    """In a checkout's directory: build its Runtime, then one measurement per stdin line."""
    sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "benchmarks")]
    import benchmarks.overhead as overhead
    from service.runtime import Runtime
    from service.settings import Settings

    artifacts = bundle.resolve().parents[1]
    store_path = artifacts / "item_embeddings.npz"
    store = overhead.load_embedding_store(store_path)
    env = {  # as overhead.py's servers run
        "MOERANK_BUNDLE_PATH": str(bundle),
        "MOERANK_EMBEDDING_STORE_PATH": str(store_path),
        "MOERANK_LRU_PRELOAD_ITEMS": str(len(store.item_ids)),
        "MOERANK_PROVIDER": "cpu",
        "MOERANK_BATCH_WAIT_MS": "0",
    }
    os.environ.update(env)
    log = overhead.read_log(artifacts / "data" / "searchlog", set(map(str, store.item_ids)))
    sessions = random.Random(0).sample(range(len(log.queries)), min(200, len(log.queries)))
    mix = overhead.Mix(((100, 1.0),), cold_share=0.0, bad_share=0.0)
    traffic = overhead.Traffic(log, mix, seed=1)
    settings = Settings(**{k.removeprefix("MOERANK_").lower(): v for k, v in env.items()})
    runtime = await Runtime.start(settings)
    work = await overhead.in_process_work(runtime, traffic, sessions)
    await overhead.in_process_point("pipeline", runtime, work, 1.0)  # warm
    print("ready", flush=True)
    for _ in sys.stdin:
        row = await overhead.in_process_point("pipeline", runtime, work, seconds)
        print(json.dumps(row["cpu_ms_per_call"]), flush=True)
    await runtime.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="a checkout (git archive)")
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/default"))
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.bundle, args.seconds))
        return
    checkouts = {"this": Path.cwd(), "other": args.other.resolve()}
    # The process started first measured ~5% dearer in an A/A run (both this checkout), so
    # each start order gets its own pair of processes and the answer is their geometric mean.
    runs = [session(args, dict(order)) for order in (checkouts.items(), [*checkouts.items()][::-1])]
    medians = [run["median"] for run in runs]
    print(json.dumps({
        "other": str(args.other), "started_first": ["this", "other"], "runs": runs,
        "this_over_other": round(statistics.geometric_mean(medians), 3),
    }))  # fmt: skip


def session(args, checkouts: dict[str, Path]) -> dict:
    """Two workers started in `checkouts`' order, measured in turns: this / other per pair."""
    procs = {}
    for name, checkout in checkouts.items():
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--other", "-"]
        command += ["--bundle", str(args.bundle.resolve()), "--seconds", str(args.seconds)]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        procs[name] = subprocess.Popen(
            command, cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        if procs[name].stdout.readline().strip() != "ready":
            sys.exit(f"{name} ({checkout}) did not start")
    cpu = {name: [] for name in ("this", "other")}
    for pair in range(args.pairs):  # the order alternates, so drift favours neither
        for name in ("this", "other") if pair % 2 == 0 else ("other", "this"):
            procs[name].stdin.write("go\n")
            procs[name].stdin.flush()
            cpu[name].append(json.loads(procs[name].stdout.readline()))
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    ratios = [a / b for a, b in zip(cpu["this"], cpu["other"])]
    return {
        "first": next(iter(checkouts)), "cpu_ms_per_call": cpu,
        "this_over_other": [round(r, 3) for r in ratios], "median": round(statistics.median(ratios), 3),
    }  # fmt: skip


if __name__ == "__main__":
    main()
