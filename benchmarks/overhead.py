"""CPU per /v1/rank call, from the model alone to the whole server, in one run, as ratios.

Four configurations, each on the same 100-item warm requests (generated log sessions,
loadtest/traffic.py; every item vector in the LRU, every query seen once before measuring):

- model: onnxruntime alone on a request's tensors (the ones the pipeline built for it);
- pipeline: the service's pipeline called in-process, no HTTP: the Runtime `python -m
  service` builds (same settings), RankingService.rank on the body bytes, then the work
  after the answer;
- moerank: `python -m service` behind HTTP;
- plain: benchmarks/plain_fastapi_app.py, the app a user would write around the same
  pipeline (FastAPI parses the pydantic RankRequest, RankResponse serialises the answer).

The servers' CPU per call comes from /proc/<pid>/stat (user + system, every thread) over a
load point, divided by the calls answered 200; the in-process figures from this process's
own CPU time. Load points: closed loop at each --concurrency, open loop (Poisson) at each
--rate, driven by the project's raw-HTTP client (serve_latency.py's callers). Both servers
are up at once; every load point runs on each configuration in turn, in two passes in
opposite order, because this VM's speed drifts by tens of percent within minutes and a
sequential comparison can fake a finding. The in-process figures are measured again beside
every load point and each ratio pairs figures of the same load point.

    python benchmarks/overhead.py [--bundle artifacts/bundles/default] [--seconds 5]
        [--concurrency 1,16] [--rates 100,200] [--quick] [--profile] [--compare DIR]

--compare DIR adds another checkout's server (`git archive <commit> | tar -x -C DIR`) to
every load point: the before and after of a change, interleaved in one run.

--columnar adds the columnar request form (`columns`, one array per field) of the same
bodies: `pipeline_columns` in-process and `moerank_columns` (the same server, sent columns)
beside their row-form twins at every load point, so the ratio columns/rows is from one run.
Writes results/overhead_columnar.json by default.

Writes results/<--name>.json (rows per pass, the means over both passes, and the ratios
`pipeline_over_model` and `server_over_pipeline` at c=16, the machine's CPU named) and
results/<--name>.png. --quick: a smoke run of seconds (figures meaningless).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean

import numpy as np
from prometheus_client import REGISTRY
from serve_latency import drive, numbers, run_async, warm

from contract.embeddings import load_embedding_store
from loadtest.service_process import ServiceProcess
from loadtest.traffic import ColumnarTraffic, Mix, Traffic, columnar_body, read_log
from service.metrics import STAGES
from service.runtime import Runtime
from service.settings import Settings
from training.results import cpu_model, results_dir, write_results

TARGETS = {
    "pipeline_over_model": 2.0,
    "server_over_pipeline": 1.3,
    "server_over_model": 2.6,
    "single_p99_ms": 2.5,
}
SERVERS = {
    "moerank": ("-m", "service"),
    "plain": (str(Path(__file__).with_name("plain_fastapi_app.py")),),
}
IN_PROCESS = ("model", "pipeline", "pipeline_columns")
COLUMNAR = {"pipeline_columns": "pipeline", "moerank_columns": "moerank"}  # -> the row twin
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> np.ndarray:
    """[user, system] CPU seconds of a process, all its threads (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return np.array([int(fields[11]), int(fields[12])]) / CLOCK_TICK  # fields 14 and 15


def load_name(concurrency: int | None, rate: float | None) -> str:
    return f"c={concurrency}" if concurrency else f"rate={rate:g}/s"


def latency_row(seconds: list[float], answered: int, elapsed: float, errors: int) -> dict:
    ms = np.array(seconds) * 1e3
    q = (lambda p: round(float(np.percentile(ms, p)), 3)) if len(ms) else (lambda p: None)
    return {
        "calls": answered,
        "rps": round(answered / elapsed, 1),
        "p50_ms": q(50),
        "p99_ms": q(99),
        "errors": errors,
    }


async def server_point(name, service, traffic, sessions, concurrency, rate, args) -> dict:
    """One load point on one server: the client's latencies and the server's CPU per call."""
    cpu, started = process_cpu_s(service.proc.pid), time.perf_counter()
    caller = await drive(service, traffic, sessions, concurrency, rate, args)
    elapsed = time.perf_counter() - started
    answered = len(caller.latencies) - caller.errors
    user, system = ((process_cpu_s(service.proc.pid) - cpu) / max(answered, 1) * 1e3).tolist()
    row = latency_row(caller.latencies, answered, elapsed, caller.errors)
    return {
        "config": name,
        **row,
        "cpu_ms_per_call": round(user + system, 4),
        "system_ms_per_call": round(system, 4),  # the kernel's share: sockets, wake-ups
    }


def stage_sums() -> dict[str, float]:
    """This process's stage histograms (the in-process pipeline's), seconds so far."""
    name = "moerank_stage_duration_seconds_sum"
    return {s: REGISTRY.get_sample_value(name, {"stage": s}) or 0.0 for s in STAGES}


async def in_process_point(name: str, runtime: Runtime, work, seconds: float) -> dict:
    """`name` run back to back for `seconds` on this thread: CPU per call (this process)."""
    bodies, tensors = work
    if name in COLUMNAR:
        bodies = list(map(columnar_body, bodies))
    bundle = runtime.registry.current.default_bundle
    stages, calls = stage_sums(), 0
    cpu, started = time.process_time(), time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        if name == "model":
            bundle.score(*tensors[calls % len(tensors)])
        else:
            ranked = await runtime.ranking.rank(bodies[calls % len(bodies)])
            await runtime.after_answer(ranked)
        calls += 1
    cpu = time.process_time() - cpu
    row = {"config": name, "calls": calls, "cpu_ms_per_call": round(cpu / calls * 1e3, 4)}
    if name != "model":  # wall time per stage (the service's stopwatch): with CPU to spare
        after = stage_sums()  # it is CPU time; on a busy host it includes the waits
        row["stage_wall_ms"] = {s: round((after[s] - stages[s]) / calls * 1e3, 4) for s in STAGES}
    return row


async def in_process_work(runtime: Runtime, traffic: Traffic, sessions: list[int]):
    """One body per session, ranked once (the query LRU is warm after), and its tensors."""
    bodies = [traffic.next(session).body for session in sessions]
    tensors = []
    for body in bodies:
        ranked = await runtime.ranking.rank(body)
        tensors.append(ranked.tensors)
    return bodies, tensors


async def run(args, env: dict[str, str], traffic: Traffic, sessions: list[int]) -> list[dict]:
    settings = Settings(**{k.removeprefix("MOERANK_").lower(): v for k, v in env.items()})
    runtime = await Runtime.start(settings)
    servers = {name: ServiceProcess(env, command) for name, command in SERVERS.items()}
    if args.compare:  # -P: the checkout on PYTHONPATH, not this one (the working directory)
        baseline_env = {**env, "PYTHONPATH": str(args.compare.resolve())}
        servers["baseline"] = ServiceProcess(baseline_env, ("-P", "-m", "service"))
    try:
        for service in servers.values():
            service.start()
            await warm(service.port, traffic, sessions)
        work = await in_process_work(runtime, traffic, sessions)
        points = [(c, None) for c in args.concurrency] + [(None, r) for r in args.rates]
        configs = [*IN_PROCESS, *servers]
        if args.columnar:  # each beside its row twin
            configs.insert(configs.index("moerank") + 1, "moerank_columns")
        else:
            configs.remove("pipeline_columns")
        traffics = {"moerank_columns": ColumnarTraffic(traffic)}
        rows = []
        for number, order in enumerate((configs, configs[::-1])):
            for concurrency, rate in points if number == 0 else points[::-1]:
                load = load_name(concurrency, rate)
                for name in order:
                    if name in IN_PROCESS:
                        row = await in_process_point(name, runtime, work, args.in_process_seconds)
                    else:
                        service = servers[COLUMNAR.get(name, name)]
                        row = await server_point(
                            name, service, traffics.get(name, traffic), sessions, concurrency,
                            rate, args,
                        )  # fmt: skip
                    rows.append({"pass": number + 1, "load": load, **row})
                    print_row(rows[-1])
        if args.profile:
            await profile(args, runtime, work, servers["moerank"], traffic, sessions)
        return rows
    finally:
        for service in servers.values():
            service.stop()
        await runtime.stop()


async def profile(args, runtime, work, service, traffic, sessions) -> None:
    """Flame graphs (py-spy, sampling without pausing the target) of the in-process
    pipeline and of the server at c=16, after the measured passes: results/<name>_*.svg."""
    seconds = max(args.seconds, 10.0)

    def record(pid: int, what: str) -> subprocess.Popen:
        out = results_dir() / f"{args.name}_{what}_flame.svg"
        command = [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking"]
        command += ["--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250"]
        command += ["--format", "flamegraph", "--output", str(out)]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL)

    spy = record(os.getpid(), "pipeline")
    await in_process_point("pipeline", runtime, work, seconds + 1)
    spy.wait()
    spy = record(service.proc.pid, "server")
    args = argparse.Namespace(**{**vars(args), "seconds": seconds + 1})
    await server_point("moerank", service, traffic, sessions, 16, None, args)
    spy.wait()


def print_row(row: dict) -> None:
    line = f"pass {row['pass']} {row['load']:>12} {row['config']:>8}: "
    line += f"{row['cpu_ms_per_call']:.3f} ms CPU/call over {row['calls']} calls"
    if "p99_ms" in row:
        line += f", {row['rps']} calls/s, P50 {row['p50_ms']} P99 {row['p99_ms']} ms"
        line += f", errors {row['errors']}"
    print(line, flush=True)


def summarise(rows: list[dict]) -> dict:
    """Means over the passes per (load, config), and the ratios of each load point."""
    loads = list(dict.fromkeys(r["load"] for r in rows))
    means: dict[str, dict] = {}
    for load in loads:
        means[load] = {}
        for config in dict.fromkeys(r["config"] for r in rows):
            mine = [r for r in rows if (r["load"], r["config"]) == (load, config)]
            figures = {"cpu_ms_per_call": round(mean(r["cpu_ms_per_call"] for r in mine), 4)}
            for key in ("system_ms_per_call", "rps", "p50_ms", "p99_ms"):
                if mine[0].get(key) is not None:
                    figures[key] = round(mean(r[key] for r in mine), 3)
            if "stage_wall_ms" in mine[0]:
                figures["stage_wall_ms"] = {
                    s: round(mean(r["stage_wall_ms"][s] for r in mine), 4) for s in STAGES
                }
            means[load][config] = figures
    ratios = {}
    for load, by in means.items():
        cpu = {config: figures["cpu_ms_per_call"] for config, figures in by.items()}
        ratios[load] = {
            "pipeline_over_model": round(cpu["pipeline"] / cpu["model"], 3),
            "server_over_pipeline": round(cpu["moerank"] / cpu["pipeline"], 3),
            "server_over_model": round(cpu["moerank"] / cpu["model"], 3),
            "plain_over_server": round(cpu["plain"] / cpu["moerank"], 3),
        }
        if "baseline" in cpu:
            ratios[load]["server_over_baseline"] = round(cpu["moerank"] / cpu["baseline"], 3)
        if "moerank_columns" in cpu:
            columns, server = cpu["pipeline_columns"], cpu["moerank_columns"]
            ratios[load]["columns"] = {
                "pipeline_over_model": round(columns / cpu["model"], 3),
                "server_over_pipeline": round(server / columns, 3),
                "server_over_model": round(server / cpu["model"], 3),
                "pipeline_columns_over_rows": round(columns / cpu["pipeline"], 3),
                "server_columns_over_rows": round(server / cpu["moerank"], 3),
            }
    return {"means": means, "ratios": ratios}


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = summary["means"]
    loads = list(means)
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    configs = list(means[loads[0]])
    x, width = np.arange(len(loads)), 0.8 / len(configs)
    for offset, config in enumerate(configs):
        values = [means[load][config]["cpu_ms_per_call"] for load in loads]
        axes.bar(x + (offset - (len(configs) - 1) / 2) * width, values, width, label=config)
    axes.set_xticks(x, loads)
    axes.set_ylabel("CPU ms per answered call")
    axes.set_title(title, fontsize=9)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/default"))
    parser.add_argument("--artifacts", type=Path, help="default: the bundle's ../..")
    parser.add_argument("--concurrency", type=lambda t: numbers(t, int), default=[1, 16])
    parser.add_argument("--rates", type=numbers, default=[100.0, 200.0], help="open loop, /s")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0, help="per server load point")
    parser.add_argument("--in-process-seconds", type=float, default=1.5)
    parser.add_argument("--sessions", type=int, default=200, help="distinct log sessions used")
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=10.0, help="per call, seconds")
    parser.add_argument("--env", action="append", default=[], help="extra MOERANK_X=value")
    parser.add_argument("--name", help="results/<name>.json and .png (default: overhead, or "
                        "overhead_columnar with --columnar)")  # fmt: skip
    parser.add_argument(
        "--columnar", action="store_true", help="also the columnar form of every body"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: seconds, not minutes")
    parser.add_argument(
        "--compare",
        type=Path,
        help="another checkout (git archive of a commit): its `python -m service` as the "
        "server 'baseline', measured beside the others (a before/after in one run)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="then flame graphs with py-spy (the dev extra)"
    )
    args = parser.parse_args()
    args.name = args.name or ("overhead_columnar" if args.columnar else "overhead")
    if args.quick:
        args.seconds, args.in_process_seconds, args.sessions = 0.5, 0.3, 10
        args.rates = [50.0]
    artifacts = args.artifacts or args.bundle.resolve().parents[1]
    store_path = artifacts / "item_embeddings.npz"
    store = load_embedding_store(store_path)
    env = {
        "MOERANK_BUNDLE_PATH": str(args.bundle),
        "MOERANK_EMBEDDING_STORE_PATH": str(store_path),
        "MOERANK_LRU_PRELOAD_ITEMS": str(len(store.item_ids)),  # a warm item cache
        "MOERANK_PROVIDER": "cpu",
        # Each call's own cost: cross-request batching is benchmarks/batching.py's subject.
        "MOERANK_BATCH_WAIT_MS": "0",
        **dict(pair.split("=", 1) for pair in args.env),
    }
    log = read_log(artifacts / "data" / "searchlog", set(map(str, store.item_ids)))
    sessions = random.Random(0).sample(
        range(len(log.queries)), min(args.sessions, len(log.queries))
    )
    traffic = Traffic(log, Mix(((args.items, 1.0),), cold_share=0.0, bad_share=0.0), seed=1)
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = run_async(run(args, env, traffic, sessions))
    summary = summarise(rows)
    c16 = summary["ratios"].get("c=16") or next(iter(summary["ratios"].values()))
    single = summary["means"].get("c=1", {}).get("moerank", {}).get("p99_ms")
    met = {
        **{
            key: c16[key] <= TARGETS[key] for key in ("pipeline_over_model", "server_over_pipeline")
        },
        "server_over_model": c16["server_over_model"] <= TARGETS["server_over_model"],
        "single_p99_ms": single is not None and single <= TARGETS["single_p99_ms"],
    }
    extra = {
        "pipeline_over_model": c16["pipeline_over_model"],
        "server_over_pipeline": c16["server_over_pipeline"],
        "server_over_model": c16["server_over_model"],
        # --columnar: the same three at c=16 for the columnar form, and columns over rows
        "columns": c16.get("columns"),
        "single_p99_ms": single,
        "targets": TARGETS,
        "targets_met": met,
        **summary,
        "cpu": cpu_model(),
        "settings": {
            "items": args.items,
            "seconds": args.seconds,
            "in_process_seconds": args.in_process_seconds,
            "sessions": args.sessions,
            "env": args.env,
            "quick": args.quick,
            "columnar": args.columnar,
        },
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],  # the machine is shared
        "niceness": os.nice(0),
    }
    path = write_results(args.name, rows, extra=extra)
    title = f"CPU per /v1/rank call, {args.items} items ({cpu_model()})"
    plot(summary, results_dir() / f"{args.name}.png", title)
    print("ratios:", summary["ratios"])
    print(
        f"c=16: pipeline/model {c16['pipeline_over_model']}, server/pipeline "
        f"{c16['server_over_pipeline']}, server/model {c16['server_over_model']}; met {met}"
    )
    if args.columnar:
        print(f"c=16, columnar form: {c16['columns']}")
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
