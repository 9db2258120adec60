"""Simulated shoppers and one online-learning round end to end through a real uvicorn process:
a tiny DNN bundle served from a models file with the served log on; shoppers' events counted
on /metrics exactly as they were sent; a round that fine-tunes from the served log, serves the
new model as a canary, lets shoppers decide and reloads the promoted or original file."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from contract.models_file import load_models_file, parse_models_file
from loadtest.service_process import ServiceProcess
from loadtest.shopper_run import ShopperConfig, run_shoppers
from pipelines.experiment_report import arms_from_served_log, scrape_arms
from pipelines.online_round import (
    RoundConfig,
    canary_file,
    promoted_file,
    render_models_file,
    run_round,
    simulated_shoppers,
)

ADMIN, EVENTS = "test-admin-token", "test-events-token"
COUNTS = ("impressions", "clicks", "add_to_carts", "purchases")


@pytest.fixture(scope="module")
def served_dnn(small_log, tmp_path_factory):
    """A tiny trained DNN (no text), its bundle and a models file serving it as `dnn`."""
    from export.bundle import write_bundle
    from training.fitting import fit
    from training.trainer import TrainConfig

    root = tmp_path_factory.mktemp("online-loop")
    config = TrainConfig(epochs=1, lr=3e-3, batch_size=512, max_steps_per_epoch=40)
    fit(small_log, "dnn", {"hidden": (16,)}, config, out_dir=root / "run", progress=False)
    write_bundle(root / "run" / "model.pt", root / "bundles" / "dnn", None, version="dnn-0")
    (root / "models.toml").write_text('default = "dnn"\n[models]\ndnn = "bundles/dnn"\n')
    return root


@pytest.fixture(scope="module")
def server(served_dnn):
    env = {
        "MOERANK_MODELS_FILE": str(served_dnn / "models.toml"),
        "MOERANK_ADMIN_TOKENS": ADMIN,
        "MOERANK_EVENTS_TOKENS": EVENTS,
        "MOERANK_SERVED_LOG_DIR": str(served_dnn / "served-log"),
        "MOERANK_REDIS_URL": "",
        "MOERANK_INTRA_OP_THREADS": "1",
        "MOERANK_WARMUP_CALLS": "1",
    }
    with ServiceProcess(env) as service:
        yield service


def test_shoppers_events_are_counted_on_metrics_and_logged_as_sent(
    server, served_dnn, small_log_dir
):
    before = scrape_arms(server.url)
    config = ShopperConfig(requests=200, duration_s=120, concurrency=4, top_n=5, event_batch=16)
    summary = run_shoppers(small_log_dir, server.url, EVENTS, config)
    assert summary["answered"] == 200 and summary["rank_status"] == {"200": 200}
    events = summary["events"]
    assert events["accepted"] == events["posted"] > 1000 and events["unknown_request_ids"] == 0
    arm = summary["arms"]["dnn"]
    assert arm["impressions"] == 200 * 5 and arm["clicks"] > 0
    after = scrape_arms(server.url)["dnn"]
    for key in COUNTS:
        assert after[key] - before.get("dnn", {}).get(key, 0) == arm[key]
    assert summary["snapshots"][-1]["arms"]["dnn"]["requests"] == 200
    # The served log is written off the request path: wait for the writer to catch up.
    deadline, logged = time.monotonic() + 60, {}
    while logged.get("clicks") != arm["clicks"] and time.monotonic() < deadline:
        time.sleep(0.5)
        logged = arms_from_served_log(served_dnn / "served-log").get("dnn", {})
    assert {key: logged[key] for key in ("requests", *COUNTS)} == {
        key: arm[key] for key in ("requests", *COUNTS)
    }


def test_a_round_fine_tunes_serves_a_canary_and_decides(server, served_dnn, small_log_dir):
    drive = simulated_shoppers(
        small_log_dir, server.url, EVENTS, requests=300, duration_s=120, concurrency=4, top_n=5
    )
    models_path = served_dnn / "models.toml"
    result = run_round(
        server.url, ADMIN, models_path, "dnn", served_dnn / "run" / "model.pt",
        served_dnn / "served-log", served_dnn / "r1", RoundConfig(epochs=1, batch_size=256), drive,
    )  # fmt: skip
    assert result["served_log_rows"] >= 200 * 5  # at least the previous test's answers
    offline = result["offline_session_auc"]
    assert set(offline) == {"rows", "before", "after"} and offline["rows"]["train"] > 0
    arms = result["online"]["arms"]
    assert arms["control"]["impressions"] > 0 and arms["canary"]["impressions"] > 0
    assert arms["control"]["impressions"] + arms["canary"]["impressions"] == 300 * 5
    assert json.loads((served_dnn / "r1" / "round.json").read_text())["new_model"] == "dnn-r1"
    with urllib.request.urlopen(f"{server.url}/v1/models", timeout=10) as answer:
        served = json.dumps(json.loads(answer.read()))
    final = load_models_file(result["models_file"])
    assert ("dnn-r1" in served) == result["promoted"]
    assert final.default == ("dnn-r1" if result["promoted"] else "dnn")
    assert "round-r1" not in served  # the canary experiment ends with the round


def test_canary_and_promoted_files_move_only_the_serving_model(tmp_path):
    text = """
default = "abc"
[models]
dnn = "bundles/dnn"
best = "bundles/best"
[experiments.abc]
unit = "user_id"
variants = [{name = "control", model = "dnn", share = 0.5},
            {name = "treatment", model = "best", share = 0.5}]
shadows = ["best"]
"""
    current = parse_models_file(text, tmp_path)
    new_bundle = tmp_path / "bundles" / "best-r1"
    canary = canary_file(current, "best", "best-r1", new_bundle, "round-r1", 0.2)
    assert canary.default == "round-r1"
    shares = {v.name: (v.model, v.share) for v in canary.experiments["round-r1"].variants}
    assert shares == {"control": ("best", pytest.approx(0.8)), "canary": ("best-r1", 0.2)}
    assert canary.experiments["abc"] == current.experiments["abc"]
    promoted = promoted_file(current, "best", "best-r1", new_bundle)
    variants = {v.name: v.model for v in promoted.experiments["abc"].variants}
    assert variants == {"control": "dnn", "treatment": "best-r1"}
    assert promoted.experiments["abc"].shadows == ["best-r1"] and promoted.default == "abc"
    for models_file in (canary, promoted):  # what is written reads back the same
        assert parse_models_file(render_models_file(models_file), tmp_path) == models_file
