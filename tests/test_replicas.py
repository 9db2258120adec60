"""Two replicas sharing one Redis behind HAProxy (deploy/haproxy/haproxy.cfg), under steady
load: one is killed (SIGKILL) and restarted, then both are restarted one at a time. No request
fails at the client, and a restarted replica gets no traffic before its /readyz says it has
warmed up."""

from __future__ import annotations

import json
import uuid

import pytest

from infra.haproxy import LocalHAProxy, available
from infra.replica_drill import PHASES, SteadyLoad, drill, summary
from loadtest.service_process import ServiceProcess

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


def test_a_crash_and_a_rolling_restart_behind_haproxy_fail_no_request(
    service_env, small_bundle, own_redis, tmp_path
):
    env = {
        **service_env,
        "MOERANK_REDIS_URL": own_redis.url,
        "MOERANK_KEY_PREFIX": f"moerank-test-{uuid.uuid4().hex}",
    }
    example = json.loads((small_bundle[1] / "example_request.json").read_text())
    body = json.dumps({**example, "items": example["items"][:20]}).encode()
    replicas = {"r1": ServiceProcess(env), "r2": ServiceProcess(env)}
    try:
        for replica in replicas.values():
            replica.start()
        servers = {name: f"127.0.0.1:{r.port}" for name, r in replicas.items()}
        with LocalHAProxy(tmp_path, servers) as lb:
            for name in replicas:
                lb.wait_status(name, "UP")
            load = SteadyLoad(lb.url, body, rate=20)
            load.start()
            try:
                restarts = drill(replicas, lb, load, settle_s=2.0)
            finally:
                load.stop()
    finally:
        for replica in replicas.values():
            replica.stop()

    rows = summary(load.outcomes, PHASES)
    failed = [(o.phase, o.status, o.error) for o in load.outcomes if o.status != 200]
    assert all(row["requests"] > 0 for row in rows), rows
    assert not failed, (failed, rows)
    for restart in restarts:
        assert restart.ready_at is not None
        before_ready = [(status, n) for t, status, n in restart.samples if t < restart.ready_at]
        assert before_ready, "the balancer was never asked before the replica was ready"
        assert all(status != "UP" for status, _ in before_ready), restart
        assert len({n for _, n in before_ready}) == 1, f"{restart.name} got traffic before ready"
