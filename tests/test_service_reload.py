"""POST /admin/reload end to end: bundles swapped under concurrent traffic with no failed
request, bad bundles refused while the old model keeps serving, the token required."""

import json
import shutil
import time

import httpx
import pytest
from conftest import bundle_variant as variant

from loadtest.server_metrics import metric_delta
from loadtest.service_process import ServiceProcess

TOKEN = "test-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def bundles(small_bundle, tmp_path_factory):
    original, root = small_bundle[0], tmp_path_factory.mktemp("bundles")
    onnx = (original / "model.onnx").read_bytes()
    return {
        "original": original,
        "v2": variant(original, root / "v2", lambda m: {**m, "version": "reloaded-v2"}),
        "corrupt model": variant(original, root / "corrupt", model=onnx[: len(onnx) // 2]),
        "other encoder": variant(
            original,
            root / "other-encoder",
            lambda m: {**m, "features": {**m["features"], "encoder_id": "another-encoder"}},
        ),
        "no manifest": root / "does-not-exist",
    }


@pytest.fixture(scope="module")
def server(service_env):
    with ServiceProcess({**service_env, "MOERANK_ADMIN_TOKEN": TOKEN}) as service:
        yield service


@pytest.fixture
def example(small_bundle) -> dict:
    return json.loads((small_bundle[1] / "example_request.json").read_text())


def reload(url: str, path, headers=AUTH) -> httpx.Response:
    return httpx.post(
        f"{url}/admin/reload", json={"bundle_path": str(path)}, headers=headers, timeout=120
    )


def test_reload_under_concurrent_requests_fails_none(server, bundles, example, traffic):
    url = server.url
    original = json.loads((bundles["original"] / "manifest.json").read_text())["version"]
    callers = [traffic(url, example) for _ in range(3)]
    assert all(c.wait_for(lambda a: True, 30) for c in callers)
    for step, (name, version) in enumerate(
        [("v2", "reloaded-v2"), ("original", original), ("v2", "reloaded-v2")]
    ):
        answer = reload(url, bundles[name])
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["version"] == version
        for caller in callers:
            caller.phase = f"after reload {step}"
        assert all(c.wait_for(lambda a: True, 30) for c in callers)
    for caller in callers:
        caller.stop()
    records = [r for c in callers for r in c.records]
    assert {status for _, status, _ in records} == {200}  # not one failed request
    assert {a["model"]["version"] for _, _, a in records} == {original, "reloaded-v2"}
    # A call that began after the last swap is answered by the new model.
    assert {a["model"]["version"] for c in callers for a in c.answers("after reload 2")} == {
        "reloaded-v2"
    }
    assert httpx.get(f"{url}/v1/models").json()["version"] == "reloaded-v2"
    assert reload(url, bundles["original"]).status_code == 200


@pytest.mark.parametrize(
    "name,says",
    [
        ("corrupt model", "model.onnx"),
        ("other encoder", "another-encoder"),
        ("no manifest", "manifest.json"),
    ],
)
def test_a_bad_bundle_is_refused_and_the_old_model_keeps_serving(
    server, bundles, example, traffic, name, says
):
    url = server.url
    serving = httpx.get(f"{url}/v1/models").json()["version"]
    before = server.metrics()
    calls = traffic(url, example)
    assert calls.wait_for(lambda a: True, 30)
    answer = reload(url, bundles[name])
    assert calls.wait_for(lambda a: True, 30)
    calls.stop()
    assert answer.status_code == 409
    detail = answer.json()["detail"][0]
    assert detail["field"] == "bundle_path" and says in detail["message"]
    assert {status for _, status, _ in calls.records} == {200}
    assert {a["model"]["version"] for _, _, a in calls.records} == {serving}
    assert httpx.get(f"{url}/v1/models").json()["version"] == serving
    after = server.metrics()
    assert metric_delta(before, after, "moerank_reloads_total", outcome="rejected") == 1
    assert metric_delta(before, after, "moerank_reloads_total", outcome="ok") == 0


def test_reload_needs_the_admin_token(server, bundles):
    url = server.url
    assert reload(url, bundles["v2"], headers={}).status_code == 401
    assert reload(url, bundles["v2"], headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/v1/models").json()["version"] != "reloaded-v2"


def test_a_bundle_rewritten_in_place_is_picked_up_by_a_plain_reload(service_env, bundles, tmp_path):
    """No body: the configured path is read again (how `make bundle` + reload deploys)."""
    live = tmp_path / "live"
    shutil.copytree(bundles["v2"], live, symlinks=True)
    env = {**service_env, "MOERANK_ADMIN_TOKEN": TOKEN, "MOERANK_BUNDLE_PATH": str(live)}
    with ServiceProcess(env) as service:
        manifest = json.loads((live / "manifest.json").read_text())
        (live / "manifest.json").write_text(json.dumps({**manifest, "version": "v3"}))
        answer = httpx.post(f"{service.url}/admin/reload", headers=AUTH, timeout=120)
        assert answer.status_code == 200, answer.text
        assert httpx.get(f"{service.url}/v1/models").json()["version"] == "v3"


def worker_samples(metrics_dir, tmp_path) -> dict[str, float]:
    """Ranking calls recorded by each worker process: its own files, read alone."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    calls = {}
    for file in metrics_dir.glob("histogram_*.db"):
        pid = file.stem.split("_")[-1]
        alone = tmp_path / f"pid-{pid}"
        alone.mkdir()
        shutil.copy(file, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        calls[pid] = registry.get_sample_value("moerank_items_per_request_count") or 0
    return calls


def test_several_workers_share_metrics_and_follow_a_reload(service_env, bundles, example, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **service_env,
        "MOERANK_WORKERS": "2",
        "MOERANK_ADMIN_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    calls = 40
    with ServiceProcess(env) as service:
        for _ in range(calls):  # a new connection each: the kernel spreads them
            assert httpx.post(f"{service.url}/v1/rank", json=example).status_code == 200
        per_worker = worker_samples(metrics_dir, tmp_path)
        assert len([n for n in per_worker.values() if n > 0]) == 2, per_worker
        for _ in range(6):  # whichever worker answers /metrics reports every worker's calls
            samples = service.metrics()
            count = ("moerank_request_duration_seconds_count", (("endpoint", "/v1/rank"),
                     ("status", "2xx")))  # fmt: skip
            assert samples[count] == calls
            assert samples[("moerank_items_per_request_sum", ())] == calls * len(example["items"])

        assert reload(service.url, bundles["v2"]).status_code == 200
        follow_s = 1.0 + 30  # the poll interval, and a reload's load and warm-up (nice 19)
        deadline = time.monotonic() + follow_s
        while time.monotonic() < deadline:
            versions = {
                httpx.post(f"{service.url}/v1/rank", json=example).json()["model"]["version"]
                for _ in range(10)
            }
            if versions == {"reloaded-v2"}:
                break
        assert versions == {"reloaded-v2"}
