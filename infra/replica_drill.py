"""Replicas behind a balancer under steady load while one is killed and restarted, then all
are restarted one at a time: every request's outcome, by phase, and what the balancer did.

SteadyLoad sends /v1/rank calls at a fixed rate (open loop: each call timed from its scheduled
start, so a stalled balancer shows in the latencies) through the balancer from its own thread
and event loop; `drill` moves the phases along:

    before    all replicas up
    killed    one replica SIGKILLed (a crash), then started again on its port; the phase ends
              when the balancer sends it traffic again
    after     all up again
    rolling   each replica in turn: SIGTERM (graceful), started again, up at the balancer and
              given `settle_s` before the next one goes (Kubernetes' minReadySeconds)
    settled   all up again

Used by tests/test_replicas.py (asserts) and benchmarks/replica_failover.py (figures).
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from infra.haproxy import LocalHAProxy
from loadtest.rawhttp import RawClient, request_bytes
from loadtest.service_process import ServiceProcess


@dataclass
class Outcome:
    phase: str
    status: int  # 0: no HTTP answer (connection failed, timeout)
    latency_s: float
    error: str = ""  # why it failed: the exception, or the body of a non-200 answer


class SteadyLoad(threading.Thread):
    def __init__(self, url: str, body: bytes, rate: float, connections: int = 32):
        super().__init__(daemon=True)
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.rate, self.connections = host, int(port), rate, connections
        self.request = request_bytes("POST", "/v1/rank", url.removeprefix("http://"), body)
        self.phase = "before"
        self.outcomes: list[Outcome] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        asyncio.run(self._send_at_rate())

    async def _send_at_rate(self) -> None:
        client = RawClient(self.host, self.port, self.connections, timeout_s=30)
        loop, calls = asyncio.get_running_loop(), set()
        start, sent = loop.time(), 0
        while not self._stopping.is_set():
            due = start + sent / self.rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            call = loop.create_task(self._one(client, self.phase, due))
            calls.add(call)
            call.add_done_callback(calls.discard)
            sent += 1
        await asyncio.gather(*calls)
        client.close()

    async def _one(self, client: RawClient, phase: str, due: float) -> None:
        error = ""
        try:
            status, body = await client.send(self.request)
            if status != 200:
                error = body[:200].decode(errors="replace")
        except Exception as exc:
            status, error = 0, repr(exc)
        latency = asyncio.get_running_loop().time() - due
        self.outcomes.append(Outcome(phase, status, latency, error))

    def stop(self) -> None:
        self._stopping.set()
        self.join(60)


def summary(outcomes: list[Outcome], phases: list[str]) -> list[dict]:
    """Per phase: requests, failures (anything but 200), P50/P99 latency in ms."""
    rows = []
    for phase in phases:
        mine = [o for o in outcomes if o.phase == phase]
        latencies = np.array([o.latency_s for o in mine]) * 1000
        rows.append({
            "phase": phase,
            "requests": len(mine),
            "failures": sum(o.status != 200 for o in mine),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1) if mine else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 1) if mine else None,
        })  # fmt: skip
    return rows


@dataclass
class Restart:
    """One replica's way back: when its own /readyz first said 200, and what the balancer
    said about it meanwhile (time, status, total sessions sent to it)."""

    name: str
    started_at: float
    ready_at: float | None = None
    samples: list[tuple[float, str, int]] = field(default_factory=list)


def _ready(replica: ServiceProcess) -> bool:
    try:
        with urllib.request.urlopen(f"{replica.url}/readyz", timeout=0.5) as answer:
            return answer.status == 200
    except OSError:
        return False


def restart(name: str, replica: ServiceProcess, lb: LocalHAProxy, timeout_s: float) -> Restart:
    """Once the balancer has marked the stopped `replica` DOWN, start it again and watch it
    and the balancer until the balancer sends it traffic (sessions grow after it is UP)."""
    lb.wait_status(name, "DOWN", timeout_s)
    record = Restart(name, time.monotonic())
    replica.launch()
    deadline = record.started_at + timeout_s
    up_sessions = None
    while time.monotonic() < deadline:
        now, state = time.monotonic(), lb.servers()[name]
        record.samples.append((now, state["status"], state["sessions"]))
        if record.ready_at is None and _ready(replica):
            record.ready_at = time.monotonic()
        if state["status"] == "UP" and up_sessions is None:
            up_sessions = state["sessions"]
        if up_sessions is not None and state["sessions"] > up_sessions:
            return record
        time.sleep(0.05)
    raise RuntimeError(f"{name} got no traffic within {timeout_s} s of its restart")


def drill(replicas: dict[str, ServiceProcess], lb: LocalHAProxy, load: SteadyLoad,
          settle_s: float, down_s: float = 1.0, timeout_s: float = 180) -> list[Restart]:  # fmt: skip
    """Runs the phases (module doc) on running replicas with `load` started; returns each
    restart's record (the killed replica's first)."""
    restarts = []
    time.sleep(settle_s)
    victim = next(iter(replicas))
    load.phase = "killed"
    replicas[victim].kill()
    time.sleep(down_s)  # down a while, as a crashed process would be before its restart
    restarts.append(restart(victim, replicas[victim], lb, timeout_s))
    load.phase = "after"
    time.sleep(settle_s)
    load.phase = "rolling"
    for name, replica in replicas.items():
        replica.stop()
        restarts.append(restart(name, replica, lb, timeout_s))
        time.sleep(settle_s)  # its caches warm before the next one leaves
    load.phase = "settled"
    time.sleep(settle_s)
    return restarts


PHASES = ["before", "killed", "after", "rolling", "settled"]
