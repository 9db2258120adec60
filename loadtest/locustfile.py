"""Locust traffic for a running moerank service: realistic /v1/rank calls (loadtest/traffic.py).

    make loadtest                      # python -m loadtest: runs this headless, prints P50/P95/P99
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000   # the web UI

Each user sends back to back unless --rate is given; with --rate, calls arrive at that rate
over all users (Poisson, or the replayed log's own rhythm, sped up to that rate on average:
100/s if --replay comes without --rate) and the users only bound how many
are in flight: an arrival that finds every user busy starts late, and the count of late
starts is printed at the end. Good calls are named "/v1/rank" in locust's statistics; each
kind of bad call has its own name and passes only with the 4xx it must get. A replay sends
the log's queries in its order (their popularity is the log's own: --head-share does not
apply) and first stores its products' titles through /v1/items, so they are warm.

Options (a flag, or the LOADTEST_* environment variable): --artifacts (the `make bundle`
output: its search log and item embeddings), --replay (a data directory with bestbuy-small,
"auto" for $MOERANK_SHARED_DATA or ../shared/data), --rate, --sizes, --cold-share,
--head-share, --bad-share, --seed.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from itertools import count
from pathlib import Path

import gevent
import numpy as np
from locust import FastHttpUser, constant, events, task
from locust.runners import MasterRunner

from contract.schema import shared_data_dir
from loadtest.traffic import (
    DEFAULT_SIZES,
    Mix,
    Traffic,
    catalog_items,
    parse_sizes,
    poisson_arrivals,
    read_log,
    read_replay,
    replay_arrivals,
)

log = logging.getLogger("moerank.loadtest")
JSON = {"content-type": "application/json"}
LATE_S = 0.010  # an arrival started this much after its time counts as late
REPLAY_RATE = 100.0  # calls/s when --replay comes without --rate: the log's clock is days
STATE: dict = {}


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    sizes = ",".join(f"{n}:{w}" for n, w in DEFAULT_SIZES)
    add = parser.add_argument
    add(
        "--artifacts",
        env_var="LOADTEST_ARTIFACTS",
        default="artifacts",
        help="make bundle's output",
    )
    add(
        "--replay",
        env_var="LOADTEST_REPLAY",
        default="",
        help="data dir with bestbuy-small, or auto",
    )
    add("--rate", env_var="LOADTEST_RATE", type=float, default=0.0, help="calls/s; 0: closed loop")
    add("--sizes", env_var="LOADTEST_SIZES", default=sizes, help="items:weight,...")
    add("--cold-share", env_var="LOADTEST_COLD_SHARE", type=float, default=Mix.cold_share)
    add("--head-share", env_var="LOADTEST_HEAD_SHARE", type=float, default=Mix.head_share)
    add("--bad-share", env_var="LOADTEST_BAD_SHARE", type=float, default=Mix.bad_share)
    add("--seed", env_var="LOADTEST_SEED", type=int, default=0)


def max_items(host: str) -> int:
    """The service's item limit (GET /v1/models), for the too-many-items bad call."""
    try:
        with urllib.request.urlopen(f"{host}/v1/models", timeout=10) as answer:
            return int(json.loads(answer.read())["max_items"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("GET %s/v1/models failed (%s): assuming max_items 1000", host, exc)
        return 1000


def warm_ids(artifacts: Path) -> set[str] | None:
    """Ids of the precomputed item embeddings (the service's warm items), if the file is there."""
    path = artifacts / "item_embeddings.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as arrays:
        return set(arrays["item_ids"].astype(str).tolist())


@events.init.add_listener
def build_traffic(environment, **_) -> None:
    if isinstance(environment.runner, MasterRunner) or environment.parsed_options is None:
        return
    options = environment.parsed_options
    mix = Mix(
        sizes=parse_sizes(options.sizes),
        cold_share=options.cold_share,
        head_share=options.head_share,
        bad_share=options.bad_share,
    )
    rate = options.rate or None
    if options.replay:
        rate = rate or REPLAY_RATE
        data_dir = shared_data_dir() if options.replay == "auto" else Path(options.replay)
        if data_dir is None:
            raise SystemExit("--replay auto: no $MOERANK_SHARED_DATA and no ../shared/data")
        source, times = read_replay(data_dir)
        offsets = replay_arrivals(times, rate)
        STATE["arrivals"] = replay_schedule(offsets)
        STATE["upsert"] = source  # its products are made warm at test start
    else:
        artifacts = Path(options.artifacts)
        source = read_log(artifacts / "data" / "searchlog", warm_ids(artifacts))
        STATE["arrivals"] = poisson_schedule(rate, options.seed) if rate else None
    STATE["traffic"] = Traffic(source, mix, max_items(environment.host), seed=options.seed)
    STATE["late"] = []


def poisson_schedule(rate: float, seed: int):
    for offset in poisson_arrivals(rate, seed):
        yield offset, None


def replay_schedule(offsets: np.ndarray):
    """(offset, session) in log order, the log repeated end to end if the run outlasts it."""
    span = float(offsets[-1]) + float(np.diff(offsets).mean() if len(offsets) > 1 else 1.0)
    for lap in count():
        for session, offset in enumerate(offsets):
            yield lap * span + float(offset), session


@events.test_start.add_listener
def start_clock(environment, **_) -> None:
    STATE["t0"], STATE["cpu0"] = time.monotonic(), time.process_time()
    products = STATE.get("upsert")
    if products is not None and not isinstance(environment.runner, MasterRunner):
        upsert(environment.host, products)


def upsert(host: str, source) -> None:
    """POST /v1/items the replayed catalog's titles, so its products are warm like a real
    catalog's; the cold share then comes from the traffic mix alone. /v1/items needs an
    admin token: the first of MOERANK_ADMIN_TOKENS (or MOERANK_ADMIN_TOKEN) here."""
    tokens = os.environ.get("MOERANK_ADMIN_TOKENS") or os.environ.get("MOERANK_ADMIN_TOKEN", "")
    headers = {**JSON, "authorization": f"Bearer {tokens.split(',')[0].strip()}"}
    items = [
        {"id": item["id"], "title": item["title"]}
        for item in catalog_items(source)
        if "title" in item
    ]
    for start in range(0, len(items), 100):
        body = json.dumps({"items": items[start : start + 100]}).encode()
        request = urllib.request.Request(f"{host}/v1/items", body, headers, method="POST")
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
    log.info("upserted %d replayed products", len(items))


@events.test_stop.add_listener
def stop_clock(environment, **_) -> None:
    if "cpu0" in STATE:
        STATE["client"] = {
            "cpu_s": round(time.process_time() - STATE["cpu0"], 3),
            "seconds": round(time.monotonic() - STATE["t0"], 3),
            "late_arrivals": len(STATE["late"]) if STATE.get("arrivals") is not None else None,
            "worst_lateness_ms": round(max(STATE["late"], default=0) * 1e3, 1),
        }


def summary(stats) -> list[dict]:
    """Per call name and aggregated: calls, failures, P50/P95/P99 (ms, as locust rounds
    them) and calls per second, from locust's final statistics."""
    entries = sorted(stats.entries.values(), key=lambda entry: entry.name) + [stats.total]
    return [
        {
            "name": entry.name,
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            **{
                f"p{round(q * 100)}_ms": entry.get_response_time_percentile(q)
                for q in (0.5, 0.95, 0.99)
            },
            "rps": round(entry.total_rps, 2),
        }
        for entry in entries
    ]


@events.quitting.add_listener
def write_summary(environment, **_) -> None:
    """<csv>_summary.json beside locust's CSVs: the final figures (the CSVs are rewritten
    only once a second) and this process's own CPU while the test ran."""
    client, prefix = STATE.get("client"), getattr(environment.parsed_options, "csv_prefix", None)
    if client and prefix:
        record = {"stats": summary(environment.stats), "client": client}
        Path(f"{prefix}_summary.json").write_text(json.dumps(record, indent=1) + "\n")
    if client and client["late_arrivals"] is not None:
        print(
            f"arrivals started late (> {LATE_S * 1e3:.0f} ms): {client['late_arrivals']}, "
            f"worst {client['worst_lateness_ms']} ms",
            flush=True,
        )


class Ranker(FastHttpUser):
    wait_time = constant(0)

    @task
    def rank(self) -> None:
        session = None
        arrivals = STATE.get("arrivals")
        if arrivals is not None:
            offset, session = next(arrivals)
            delay = STATE["t0"] + offset - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            elif -delay > LATE_S:
                STATE["late"].append(-delay)
        call = STATE["traffic"].next(session)
        name = "/v1/rank" if call.kind == "rank" else f"/v1/rank {call.kind}"
        with self.client.post(
            "/v1/rank", data=call.body, headers=JSON, name=name, catch_response=True
        ) as answer:
            if answer.status_code == call.expect:
                answer.success()
            else:
                text = (answer.text or "")[:200]
                answer.failure(f"status {answer.status_code}, expected {call.expect}: {text}")
