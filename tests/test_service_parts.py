"""The service's parts without HTTP: circuit breaker, CPU quota, request parsing, LRU, and the
Redis store against a port where nothing listens."""

import asyncio
import json
import os

import pytest

from loadtest.service_process import free_port
from service.circuit_breaker import BreakerOpen, BreakerState, CircuitBreaker
from service.embedding_store import RedisStore, StoreUnavailable
from service.lru import LRU
from service.rejections import Rejected, parse_json
from service.schemas import RankRequest
from service.settings import cgroup_cpu_quota, usable_cpus


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_once_after_cooldown():
    clock, states = Clock(), []
    breaker = CircuitBreaker(3, cooldown_s=1.0, on_change=states.append, clock=clock)
    breaker.before_call()
    breaker.failure()
    breaker.failure()
    breaker.success()  # a success resets the count
    for _ in range(2):
        breaker.before_call()
        breaker.failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(BreakerOpen):
        breaker.before_call()
    clock.now += 1.0
    breaker.before_call()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(BreakerOpen):  # only one probe at a time
        breaker.before_call()
    breaker.failure()  # the probe failed: open for another cool-down
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.5
    with pytest.raises(BreakerOpen):
        breaker.before_call()
    clock.now += 0.5
    breaker.before_call()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
    assert states == [0, 2, 1, 2, 1, 0]


def test_a_lost_probe_does_not_keep_the_breaker_half_open():
    clock = Clock()
    breaker = CircuitBreaker(1, cooldown_s=1.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    breaker.before_call()  # this probe never reports back (its request was cancelled)
    clock.now += 1.0
    breaker.before_call()  # so after another cool-down a new probe may go
    assert breaker.state is BreakerState.HALF_OPEN


def test_redis_store_degrades_fast_when_nothing_listens():
    async def run():
        breaker = CircuitBreaker(2, cooldown_s=60)
        url = f"redis://127.0.0.1:{free_port()}/0"
        store = RedisStore(url, timeout_s=0.5, bulk_timeout_s=0.5, pool_size=4, breaker=breaker)
        for _ in range(5):
            with pytest.raises(StoreUnavailable):
                await store.get_many(["a", "b"])
        with pytest.raises(StoreUnavailable):
            await store.set_many({"a": b"1"})
        await store.close()
        return breaker.state

    assert asyncio.run(run()) is BreakerState.OPEN


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cpu_quota_from_cgroup_v2_on_the_process_path(tmp_path):
    proc = tmp_path / "proc_cgroup"
    write(proc, "0::/kubepods/pod1/container\n")
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "max 100000\n")
    write(root / "kubepods" / "pod1" / "cpu.max", "250000 100000\n")
    write(root / "kubepods" / "pod1" / "container" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(root, proc) == 2.5  # a parent's quota binds its children
    assert usable_cpus(root, proc) == min(2, len(os.sched_getaffinity(0)))


def test_cpu_quota_from_cgroup_v1_and_none_when_unlimited(tmp_path):
    proc = tmp_path / "proc_cgroup"
    write(proc, "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    root = tmp_path / "cgroup"
    write(root / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us", "50000\n")
    write(root / "cpu" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(root, proc) == 1.0  # half a CPU still gets one thread
    write(root / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_quota(root, proc) is None


BODY = {"query": {"text": "usb hub", "category": "c"}, "items": [{"id": "a"}, {"id": "b"}]}


@pytest.mark.parametrize(
    "content,status,reason,field",
    [
        (json.dumps({**BODY, "items": []}), 422, "empty_items", "items"),
        (json.dumps({**BODY, "items": [{"id": "a"}] * 2}), 422, "duplicate_ids", "items"),
        (json.dumps({**BODY, "items": [{"id": str(i)} for i in range(4)]}), 422,
         "too_many_items", "items"),
        ('{"query": {"text": "a", "category": "c"}, "items": [{"id": "a", "features": '
         '{"x": NaN}}]}', 422, "non_finite_number", "items.0.features.x"),
        (json.dumps({**BODY, "extra": 1}), 422, "unknown_field", "extra"),
        (json.dumps({"items": BODY["items"]}), 422, "missing_field", "query"),
        (json.dumps({**BODY, "top_n": "3"}), 422, "invalid_value", "top_n"),
        ("{", 400, "malformed_json", "body"),
    ],
)  # fmt: skip
def test_bad_bodies_are_rejected_with_a_reason_and_the_field(content, status, reason, field):
    with pytest.raises(Rejected) as caught:
        parse_json(RankRequest, content.encode(), {"max_items": 3})
    rejected = caught.value
    assert (rejected.status, rejected.reason) == (status, reason)
    assert rejected.errors[0]["field"] == field


def test_lru_forgets_the_least_recently_used():
    cache = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the oldest
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    disabled = LRU(0)
    disabled.put("a", 1)
    assert disabled.get("a") is None and len(disabled) == 0


def test_lru_get_many_is_get_of_each_key():
    cache = LRU(3)
    for key in "abc":
        cache.put(key, key.upper())
    assert cache.get_many(["c", "x", "a"]) == ["C", None, "A"]  # "b" is now the oldest
    cache.put("d", "D")
    assert cache.get_many(["a", "b", "c", "d"]) == ["A", None, "C", "D"]


def test_admin_routes_are_closed_without_a_configured_token():
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    # No lifespan (no `with`): the token check answers before any model is needed.
    client = TestClient(create_app(Settings(admin_tokens=None)))
    answer = client.post("/admin/reload", headers={"authorization": "Bearer "})
    assert answer.status_code == 403
    assert answer.json()["detail"][0]["field"] == "authorization"


def test_writes_of_one_loop_turn_leave_as_one_and_close_sends_them_first():
    from service.http_protocol import CoalescedWrites

    class Recorder:
        def __init__(self):
            self.calls = []

        def write(self, data):
            self.calls.append(("write", data))

        def close(self):
            self.calls.append(("close", None))

        def is_closing(self):
            return False

    async def run():
        transport = Recorder()
        writes = CoalescedWrites(transport, asyncio.get_running_loop())
        writes.write(b"HTTP/1.1 200 OK\r\n\r\n")
        writes.write(b"{}")
        assert transport.calls == []  # held to the end of this turn
        await asyncio.sleep(0)
        assert transport.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\n{}")]
        writes.write(b"bye")
        writes.close()
        assert transport.calls[1:] == [("write", b"bye"), ("close", None)]
        await asyncio.sleep(0)
        assert len(transport.calls) == 3  # nothing sent twice
        assert writes.is_closing() is False  # the rest is the transport's own

    asyncio.run(run())
