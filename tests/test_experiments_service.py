"""Online experiments end to end through a real uvicorn process: a models file with two
models, an A/B experiment and a shadow; sticky assignment that follows the contract's hash,
an explicit model winning, events of every kind counted per variant, bad events refused by
name without losing the good ones, shadow agreement recorded for every answer, and reloads of
one model or the whole file."""

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import bundle_variant
from scipy.stats import binomtest

from contract.models_file import assign, load_models_file
from loadtest.server_metrics import metric_delta
from loadtest.service_process import ServiceProcess

ADMIN, EVENTS = "test-admin-token", "test-events-token"
MODELS = """
default = "ab"
[models]
alpha = "a"
beta = "b"
watcher = "a"
[experiments.ab]
unit = "user_id"
variants = [{name = "control", model = "alpha", share = 0.5},
            {name = "treatment", model = "beta", share = 0.5}]
shadows = ["watcher"]
[experiments.by_session]
unit = "session_id"
variants = [{name = "one", model = "alpha", share = 0.3},
            {name = "two", model = "beta", share = 0.7}]
"""
VERSION = {"alpha": "A", "beta": "B"}
EVENT_TYPES = ("impression", "click", "add_to_cart", "purchase")


def auth(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def experiment_dir(small_bundle, tmp_path_factory):
    original, root = small_bundle[0], tmp_path_factory.mktemp("experiment")
    for name, version in (("a", "A"), ("b", "B"), ("c", "C")):
        bundle_variant(original, root / name, lambda m, v=version: {**m, "version": v})
    (root / "models.toml").write_text(MODELS)
    return root


@pytest.fixture(scope="module")
def env(service_env, experiment_dir) -> dict:
    return {
        **service_env,
        "MOERANK_MODELS_FILE": str(experiment_dir / "models.toml"),
        "MOERANK_ADMIN_TOKEN": ADMIN,
        "MOERANK_EVENTS_TOKENS": f"other-token,{EVENTS}",
    }


@pytest.fixture(scope="module")
def server(env):
    with ServiceProcess(env) as service:
        yield service


@pytest.fixture(scope="module")
def spec(experiment_dir):
    return load_models_file(experiment_dir / "models.toml").experiments


@pytest.fixture
def example(small_bundle) -> dict:
    body = json.loads((small_bundle[1] / "example_request.json").read_text())
    return {**body, "top_n": 10}


def test_assignment_is_sticky_follows_the_contract_and_holds_the_shares(server, spec, example):
    """10,000 simulated users through HTTP (two-item requests, four callers at once); the
    first 2,000 come back for a second round."""
    body = {**example, "items": example["items"][:2], "top_n": 2}
    users = [f"shopper-{i}" for i in range(10_000)]

    def rank_part(part: list[str]) -> dict[str, dict]:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return {u: client.post("/v1/rank", json={**body, "user_id": u}).json() for u in part}

    def rank(batch: list[str]) -> dict[str, dict]:
        with ThreadPoolExecutor(4) as pool:
            parts = pool.map(rank_part, [batch[i::4] for i in range(4)])
        return {user: answer for part in parts for user, answer in part.items()}

    first = rank(users)
    again = users[:2_000]
    second = rank(again)
    assert all(second[u]["model"]["variant"] == first[u]["model"]["variant"] for u in again)
    for user, answer in first.items():
        variant = assign("ab", spec["ab"], user)
        assert answer["model"]["experiment"] == "ab"
        assert answer["model"]["variant"] == variant.name
        assert answer["model"]["version"] == VERSION[variant.model]
    counts = Counter(a["model"]["variant"] for a in first.values())
    assert binomtest(counts["control"], len(users), 0.5).pvalue > 0.001, counts
    answers = [*first.values(), *second.values()]
    assert len({a["request_id"] for a in answers}) == len(answers)


def test_without_its_unit_a_request_is_assigned_by_its_request_id(server, spec, example):
    answer = httpx.post(f"{server.url}/v1/rank", json=example).json()
    assert len(answer["request_id"]) == 32  # uuid4 hex
    assert answer["model"]["variant"] == assign("ab", spec["ab"], answer["request_id"]).name
    headers = {"x-request-id": "caller-chosen-1"}
    answered = httpx.post(f"{server.url}/v1/rank", json=example, headers=headers)
    answer = answered.json()
    assert answer["request_id"] == answered.headers["x-request-id"] == "caller-chosen-1"
    assert answer["model"]["variant"] == assign("ab", spec["ab"], "caller-chosen-1").name
    bad = httpx.post(f"{server.url}/v1/rank", json=example, headers={"x-request-id": "a b"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "x-request-id"


def test_an_experiment_named_in_the_request_uses_its_own_unit(server, spec, example):
    for session in ("s-1", "s-2", "s-3", "s-4"):
        body = {**example, "experiment": "by_session", "session_id": session, "user_id": "u"}
        answer = httpx.post(f"{server.url}/v1/rank", json=body).json()
        assert answer["model"]["experiment"] == "by_session"
        assert answer["model"]["variant"] == assign("by_session", spec["by_session"], session).name


def test_an_explicit_model_wins_over_the_experiment(server, spec, example):
    user = next(u for u in map(str, range(100)) if assign("ab", spec["ab"], u).name == "control")
    body = {**example, "user_id": user, "experiment": "ab", "model": "beta"}
    answer = httpx.post(f"{server.url}/v1/rank", json=body).json()
    assert answer["model"] == {"name": answer["model"]["name"], "version": "B",
                               "experiment": None, "variant": None}  # fmt: skip
    for field, value in (("model", "nope"), ("experiment", "nope")):
        refused = httpx.post(f"{server.url}/v1/rank", json={**example, field: value})
        assert refused.status_code == 404
        assert refused.json()["detail"][0]["field"] == field


def test_models_lists_every_model_and_experiment(server):
    listed = httpx.get(f"{server.url}/v1/models").json()
    assert set(listed["models"]) == {"alpha", "beta", "watcher"}
    assert {n: m["version"] for n, m in listed["models"].items()} == {
        "alpha": "A", "beta": "B", "watcher": "A"}  # fmt: skip
    assert set(listed["experiments"]) == {"ab", "by_session"}
    assert listed["experiments"]["ab"]["shadows"] == ["watcher"]
    assert listed["default"] == "ab" and listed["version"] == "A"  # the first variant's


def rank_users(url: str, example: dict, users: list[str]) -> list[dict]:
    with httpx.Client(base_url=url, timeout=30) as client:
        return [client.post("/v1/rank", json={**example, "user_id": u}).json() for u in users]


def events_for(answer: dict, types=EVENT_TYPES) -> list[dict]:
    item = answer["items"][0]["id"]
    return [
        {"type": t, "request_id": answer["request_id"], "item_id": item, "position": 0,
         "timestamp": time.time()}
        for t in types
    ]  # fmt: skip


def test_events_of_every_kind_are_counted_per_variant(server, example):
    answers = rank_users(server.url, example, [f"eventful-{i}" for i in range(40)])
    before = server.metrics()
    batch = [event for answer in answers for event in events_for(answer)]
    posted = httpx.post(f"{server.url}/v1/events", json={"events": batch}, headers=auth(EVENTS))
    assert posted.status_code == 200, posted.text
    assert posted.json() == {"accepted": len(batch), "unknown_request_ids": 0}
    after = server.metrics()
    per_variant = Counter(a["model"]["variant"] for a in answers)
    model = {"control": "alpha", "treatment": "beta"}
    for variant, served in per_variant.items():
        for kind in EVENT_TYPES:
            grew = metric_delta(before, after, "moerank_events_total", model=model[variant],
                                experiment="ab", variant=variant, type=kind)  # fmt: skip
            assert grew == served, (variant, kind)


def test_unknown_request_ids_are_accepted_and_flagged(server, example):
    answer = rank_users(server.url, example, ["known-user"])[0]
    made_up = {**answer, "request_id": "never-served"}
    batch = events_for(answer, ["click"]) + events_for(made_up, ["click", "purchase"])
    before = server.metrics()
    posted = httpx.post(f"{server.url}/v1/events", json={"events": batch}, headers=auth(ADMIN))
    assert posted.json() == {"accepted": 3, "unknown_request_ids": 1}
    after = server.metrics()
    assert metric_delta(before, after, "moerank_events_total", model="unknown") == 2


def test_bad_events_are_named_and_the_good_ones_still_recorded(server, example):
    answer = rank_users(server.url, example, ["picky-user"])[0]
    good = events_for(answer, ["impression", "click"])
    batch = [
        good[0],
        {**good[1], "type": "hover"},
        {**good[1], "position": -1},
        {**good[1], "timestamp": "yesterday"},
        {"type": "click"},
        good[1],
    ]
    before = server.metrics()
    posted = httpx.post(f"{server.url}/v1/events", json={"events": batch}, headers=auth(EVENTS))
    assert posted.status_code == 422
    body = posted.json()
    assert body["accepted"] == 2 and body["unknown_request_ids"] == 0
    named = {error["field"].split(".")[1] for error in body["detail"]}
    assert named == {"1", "2", "3", "4"}
    fields = {error["field"] for error in body["detail"]}
    assert {"events.1.type", "events.2.position", "events.3.timestamp",
            "events.4.request_id"} <= fields  # fmt: skip
    after = server.metrics()
    assert (
        metric_delta(before, after, "moerank_events_total", variant=answer["model"]["variant"]) == 2
    )
    for bad_body in (b"not json", b'{"events": []}', b'{"events": 3}', b'{"other": []}'):
        headers = {**auth(EVENTS), "content-type": "application/json"}
        refused = httpx.post(f"{server.url}/v1/events", content=bad_body, headers=headers)
        assert refused.status_code in (400, 422), bad_body


def test_events_need_a_token(server, env):
    url, batch = f"{server.url}/v1/events", {"events": []}
    assert httpx.post(url, json=batch).status_code == 401
    assert httpx.post(url, json=batch, headers=auth("wrong")).status_code == 401
    assert httpx.post(url, json=batch, headers=auth("other-token")).status_code == 422  # empty


def test_every_experiment_answer_is_shadow_scored_after_it(server, example):
    """Counted since the start (earlier tests' answers too): every answer of experiment ab is
    scored or dropped by the shadow, none is lost."""
    answers = rank_users(server.url, example, [f"shadowed-{i}" for i in range(30)])
    assert {a["model"]["experiment"] for a in answers} == {"ab"}
    nothing: dict = {}

    def total(samples, name: str, **labels) -> float:
        return metric_delta(nothing, samples, name, **labels)

    def pending(samples) -> float:
        served = total(samples, "moerank_served_total", experiment="ab")
        handled = total(samples, "moerank_shadow_scored_total", shadow="watcher")
        return served - handled - total(samples, "moerank_shadow_dropped_total", shadow="watcher")

    deadline = time.monotonic() + 60
    while pending(samples := server.metrics()) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pending(samples) == 0
    scored = total(samples, "moerank_shadow_scored_total", shadow="watcher", outcome="ok")
    assert scored >= len(answers) / 2  # the queue (200) drops little at this pace
    # The watcher runs the served model's own graph: its rankings agree completely.
    for measure in ("top10_overlap", "kendall_tau"):
        count = total(samples, "moerank_shadow_agreement_count", measure=measure)
        assert count == scored, measure
        assert total(samples, "moerank_shadow_agreement_sum", measure=measure) == pytest.approx(
            count
        )


def reload(url: str, body: dict | None) -> httpx.Response:
    return httpx.post(f"{url}/admin/reload", json=body, headers=auth(ADMIN), timeout=120)


def test_reload_replaces_one_model_or_the_whole_file_all_or_nothing(env, experiment_dir, example):
    with ServiceProcess(env) as service:
        url = service.url
        answer = reload(url, {"model": "beta", "bundle_path": str(experiment_dir / "c")})
        assert answer.status_code == 200, answer.text
        assert answer.json()["models"]["beta"]["version"] == "C"
        assert answer.json()["models"]["alpha"]["version"] == "A"
        body = {**example, "model": "beta"}
        assert httpx.post(f"{url}/v1/rank", json=body).json()["model"]["version"] == "C"

        broken = experiment_dir / "broken.toml"
        broken.write_text(MODELS.replace('beta = "b"', 'beta = "does-not-exist"'))
        refused = reload(url, {"models_file": str(broken)})
        assert refused.status_code == 409
        assert "model 'beta'" in refused.json()["detail"][0]["message"]
        assert httpx.get(f"{url}/v1/models").json()["models"]["beta"]["version"] == "C"
        unknown = reload(url, {"model": "gamma"})
        assert unknown.status_code == 404

        single = experiment_dir / "single.toml"
        single.write_text('default = "only"\n[models]\nonly = "c"\n')
        assert reload(url, {"models_file": str(single)}).status_code == 200
        listed = httpx.get(f"{url}/v1/models").json()
        assert set(listed["models"]) == {"only"} and listed["experiments"] == {}
        assert httpx.post(f"{url}/v1/rank", json=example).json()["model"] == {
            "name": listed["name"], "version": "C", "experiment": None, "variant": None}  # fmt: skip

        assert reload(url, None).status_code == 200  # the configured file, read again
        listed = httpx.get(f"{url}/v1/models").json()
        assert {n: m["version"] for n, m in listed["models"].items()} == {
            "alpha": "A", "beta": "B", "watcher": "A"}  # fmt: skip
