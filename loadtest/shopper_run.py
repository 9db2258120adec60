"""python -m loadtest --shoppers: simulated shoppers against a running service, over HTTP.

    MOERANK_EVENTS_TOKEN=... python -m loadtest --shoppers --log artifacts/online/shopper-log \\
        --host http://127.0.0.1:8000 --experiment abc --requests 200000 --duration 1800 \\
        --concurrency 8 --out results/ab_run/shoppers.json

`--concurrency` shoppers in a closed loop (each sends its next query when its last one has
been answered and acted on) draw sessions of the log at random (`loadtest.shoppers`), rank
them through /v1/rank, act on the answers by the generator's user model and send what they
did to /v1/events in batches (`--event-batch` answers per POST). The run stops at
`--requests` answers or `--duration` seconds, whichever comes first; only a loopback host is
accepted (it is a load generator). Every `--snapshot` seconds the per-arm tally is kept, so
the output holds online CTR over time; the JSON also holds the expected counts under the
true model, the achieved rate, and what /v1/events answered.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from loadtest.rawhttp import HttpError, RawClient, request_bytes
from loadtest.shoppers import Answer, ShopperWorld, Tally, rank_body, read_world, shop

MAX_EVENTS_PER_POST = 500  # the service takes at most MOERANK_MAX_EVENTS (1000) per batch


@dataclass(frozen=True)
class ShopperConfig:
    """What bounds and shapes a run (see the module docstring)."""

    requests: int = 1000
    duration_s: float = 60.0
    concurrency: int = 8
    top_n: int = 10
    event_batch: int = 32
    snapshot_s: float = 10.0
    seed: int = 0
    experiment: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.requests < 1 or self.duration_s <= 0 or self.concurrency < 1:
            raise ValueError("requests, duration and concurrency must be positive")
        if self.top_n < 1 or self.event_batch < 1 or self.snapshot_s <= 0:
            raise ValueError("top_n, event_batch and snapshot must be positive")

    def routing(self) -> dict[str, str]:
        return {k: v for k, v in (("experiment", self.experiment), ("model", self.model)) if v}


def loopback_address(host_url: str) -> tuple[str, int]:
    """(host, port) of an http:// URL whose host resolves to loopback; ValueError otherwise."""
    parts = urlsplit(host_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"--host must be an http:// URL, got {host_url!r}")
    port = parts.port or 80
    addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port)}
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"simulated shoppers only run against loopback, not {parts.hostname}")
    return parts.hostname, port


class ShopperRun:
    """One bounded run: the closed loop, the event batches, the tally and its snapshots."""

    def __init__(
        self, world: ShopperWorld, host: str, port: int, token: str, config: ShopperConfig
    ):
        self.world, self.config = world, config
        self.client = RawClient(host, port, config.concurrency + 1)
        self.host = f"{host}:{port}"
        self.auth = {"Authorization": f"Bearer {token}"}
        self.rng = np.random.default_rng(config.seed)
        self.routing = config.routing()
        self.tally, self.pending = Tally(), []
        self.sent = 0
        self.rank_status: dict[int, int] = {}
        self.events = {"posted": 0, "accepted": 0, "unknown_request_ids": 0, "rejected_batches": 0}
        self.snapshots: list[dict] = []

    async def run(self) -> dict:
        self.start = time.monotonic()
        self.deadline = self.start + self.config.duration_s
        snapshots = asyncio.create_task(self._snapshot_every())
        try:
            await asyncio.gather(*(self._shopper() for _ in range(self.config.concurrency)))
            await self._flush()
        finally:
            snapshots.cancel()
            self.client.close()
        elapsed = time.monotonic() - self.start
        self._snapshot(elapsed)
        answered = int(sum(c[0] for c in self.tally.counts.values()))
        return {
            "config": asdict(self.config),
            "elapsed_s": round(elapsed, 3),
            "answered": answered,
            "answered_per_s": round(answered / elapsed, 2),
            "rank_status": {str(k): v for k, v in sorted(self.rank_status.items())},
            "events": self.events,
            "arms": self.tally.as_dict(),
            "snapshots": self.snapshots,
        }

    def _more(self) -> bool:
        return self.sent < self.config.requests and time.monotonic() < self.deadline

    async def _shopper(self) -> None:
        while self._more():
            self.sent += 1
            session = int(self.rng.integers(self.world.n_sessions))
            body = rank_body(self.world, session, self.config.top_n, self.routing)
            try:
                status, answer = await self.client.send(
                    request_bytes("POST", "/v1/rank", self.host, body)
                )
            except (HttpError, OSError, asyncio.TimeoutError):
                status = 0  # no answer: counted, the shopper moves on
            self.rank_status[status] = self.rank_status.get(status, 0) + 1
            if status == 200:
                self.pending.append(Answer.parse(self.world, session, answer))
                if len(self.pending) >= self.config.event_batch:
                    await self._flush()

    async def _flush(self) -> None:
        answers, self.pending = self.pending, []
        if not answers:
            return
        events, tally = shop(self.world, answers, self.rng, time.time())
        for start in range(0, len(events), MAX_EVENTS_PER_POST):
            await self._post_events(events[start : start + MAX_EVENTS_PER_POST])
        for arm, values in tally.counts.items():
            self.tally.add(arm, values)

    async def _post_events(self, events: list[dict]) -> None:
        body = json.dumps({"events": events}).encode()
        request = request_bytes("POST", "/v1/events", self.host, body, self.auth)
        try:
            status, answer = await self.client.send(request)
        except (HttpError, OSError, asyncio.TimeoutError):
            status, answer = 0, b"{}"
        self.events["posted"] += len(events)
        if status == 200:
            counts = json.loads(answer)
            self.events["accepted"] += counts["accepted"]
            self.events["unknown_request_ids"] += counts["unknown_request_ids"]
        else:
            self.events["rejected_batches"] += 1
            print(f"/v1/events answered {status}: {answer[:300]!r}", file=sys.stderr)

    async def _snapshot_every(self) -> None:
        while True:
            await asyncio.sleep(self.config.snapshot_s)
            self._snapshot(time.monotonic() - self.start)

    def _snapshot(self, elapsed: float) -> None:
        self.snapshots.append({"elapsed_s": round(elapsed, 3), "arms": self.tally.as_dict()})


def run_shoppers(searchlog: str | Path, host_url: str, token: str, config: ShopperConfig) -> dict:
    """Read the log, run the shoppers against `host_url` (loopback), return the summary."""
    host, port = loopback_address(host_url)
    world = read_world(searchlog)
    return asyncio.run(ShopperRun(world, host, port, token, config).run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest --shoppers", description=__doc__)
    parser.add_argument("--log", type=Path, required=True, help="generated search log directory")
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=ShopperConfig.requests)
    parser.add_argument("--duration", type=float, default=ShopperConfig.duration_s)
    parser.add_argument("--concurrency", type=int, default=ShopperConfig.concurrency)
    parser.add_argument("--top-n", type=int, default=ShopperConfig.top_n, help="page size")
    parser.add_argument("--event-batch", type=int, default=ShopperConfig.event_batch)
    parser.add_argument("--snapshot", type=float, default=ShopperConfig.snapshot_s)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--experiment", help="send every request to this experiment")
    parser.add_argument("--model", help="send every request to this model")
    parser.add_argument("--out", type=Path, help="write the summary JSON here")
    args = parser.parse_args(argv)
    token = os.environ.get("MOERANK_EVENTS_TOKEN", "")
    if not token:
        parser.error("set MOERANK_EVENTS_TOKEN to a token the service accepts for /v1/events")
    config = ShopperConfig(
        requests=args.requests, duration_s=args.duration, concurrency=args.concurrency,
        top_n=args.top_n, event_batch=args.event_batch, snapshot_s=args.snapshot,
        seed=args.seed, experiment=args.experiment, model=args.model,
    )  # fmt: skip
    try:
        summary = run_shoppers(args.log, args.host, token, config)
    except ValueError as error:
        parser.error(str(error))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("answered", "answered_per_s", "events", "arms")},
                     indent=1))  # fmt: skip
    return 0 if summary["events"]["rejected_batches"] == 0 else 1
