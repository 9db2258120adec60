"""Simulated shoppers: the generator's user model read back from ground_truth.json, acting on
lists in the order a ranker returns them (no HTTP here; tests/test_online_e2e.py runs them
through a real service)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from contract.user_model import behaviour_from, probabilities, scores
from loadtest.shoppers import Answer, rank_body, read_world, shop
from training.data.simulator.generator import GeneratorConfig, generate


@pytest.fixture(scope="module")
def world(small_log_dir):
    return read_world(small_log_dir)


def test_behaviour_read_back_gives_the_generators_expected_rates(small_log_dir, world):
    truth = json.loads((small_log_dir / "ground_truth.json").read_text())
    p_click, p_atc, p_purchase = probabilities(world.behaviour, logged_rows(world))
    _, index = behaviour_from(truth)
    for name, s in index["scenario"].items():
        mine = world.rows.scenario == s
        expected = truth["scenarios"][name]["expected"]
        assert p_click[mine].mean() == pytest.approx(expected["ctr"], rel=1e-4)
        ctcvr = (p_click * p_atc * p_purchase)[mine].mean()
        assert ctcvr == pytest.approx(expected["ctcvr"], rel=1e-4)


def logged_rows(world):
    """The world's rows at the positions the log showed them."""
    from dataclasses import replace

    position = np.concatenate(
        [np.arange(b - a) for a, b in zip(world.starts[:-1], world.starts[1:], strict=True)]
    )
    return replace(world.rows, position=position)


def test_first_chunk_gives_new_sessions_of_the_same_world(tmp_path):
    config = GeneratorConfig(
        impressions=3000, seed=3, max_sub_categories=20, calibration_sessions=200,
        show_progress=False,
    )  # fmt: skip
    first, later = tmp_path / "first", tmp_path / "later"
    truths = [generate(config, first)]
    truths.append(generate(GeneratorConfig(**{**config.__dict__, "first_chunk": 50}), later))
    (model_first, _), (model_later, _) = (behaviour_from(t) for t in truths)
    for name in ("intercepts", "sub_weights", "feature_mean", "conversion_weights"):
        np.testing.assert_array_equal(getattr(model_first, name), getattr(model_later, name))
    catalogs = [pd.read_parquet(d / "catalog.parquet") for d in (first, later)]
    pd.testing.assert_frame_equal(*catalogs)
    logs = [pd.read_parquet(d / "impressions.parquet") for d in (first, later)]
    assert set(logs[0]["query_text"]) != set(logs[1]["query_text"])


def answers_in_order(world, order, sessions=range(300), top_n=10) -> list[Answer]:
    out = []
    for s in sessions:
        rows = np.arange(world.starts[s], world.starts[s + 1])
        out.append(Answer(s, f"r{s}", "arm", order(rows)[:top_n]))
    return out


def test_a_ranking_by_true_utility_earns_more_than_the_reverse(world):
    click, *_ = scores(world.behaviour, world.rows, world.rows.scenario)
    best = answers_in_order(world, lambda rows: rows[np.argsort(-click[rows])])
    worst = answers_in_order(world, lambda rows: rows[np.argsort(click[rows])])
    rng = np.random.default_rng(0)
    rates = {}
    for name, answers in (("best", best), ("worst", worst)):
        _, tally = shop(world, answers, rng, now=1.0)
        counts = tally.as_dict()["arm"]
        rates[name] = counts["expected_clicks"] / counts["impressions"]
        assert counts["requests"] == len(answers)
    assert rates["best"] > 2 * rates["worst"]


def test_events_follow_the_cascade_and_the_shown_positions(world):
    answers = answers_in_order(world, lambda rows: rows[::-1], sessions=range(200), top_n=5)
    events, tally = shop(world, answers, np.random.default_rng(1), now=123.0)
    counts = tally.as_dict()["arm"]
    kinds = pd.DataFrame(events)
    assert (kinds["type"] == "impression").sum() == counts["impressions"] == 5 * 200
    assert (kinds["type"] == "click").sum() == counts["clicks"] > 0
    assert set(kinds["timestamp"]) == {123.0}
    assert kinds["position"].between(0, 4).all()
    first = answers[0]
    shown = [e["item_id"] for e in events if e["request_id"] == "r0" and e["type"] == "impression"]
    assert shown == [str(world.item_ids[row]) for row in first.shown]
    stages = kinds.groupby(["request_id", "item_id"])["type"].agg(set)
    for reached in stages:  # purchase implies add_to_cart implies click
        assert "add_to_cart" not in reached or "click" in reached
        assert "purchase" not in reached or "add_to_cart" in reached


def test_rank_body_and_answer_map_ids_back_to_rows(world):
    body = json.loads(rank_body(world, 4, 7, {"experiment": "abc"}))
    assert body["top_n"] == 7 and body["experiment"] == "abc"
    assert body["user_id"] == world.user_id(4)
    ids = [item["id"] for item in body["items"]]
    assert ids == list(world.item_ids[world.starts[4] : world.starts[5]])
    answer = {
        "request_id": "x1",
        "model": {"name": "dnn", "version": "1", "experiment": "abc", "variant": "control"},
        "items": [{"id": ids[2]}, {"id": ids[0]}],
    }
    parsed = Answer.parse(world, 4, json.dumps(answer).encode())
    assert parsed.arm == "control" and parsed.request_id == "x1"
    assert list(parsed.shown) == [world.starts[4] + 2, world.starts[4]]
    with pytest.raises(KeyError):
        world.shown_rows(4, ["not-a-candidate"])


def test_the_shopper_driver_loads_no_torch():
    code = "import sys, loadtest.shopper_run; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_loopback_hosts_are_accepted():
    from loadtest.shopper_run import loopback_address

    assert loopback_address("http://127.0.0.1:8123") == ("127.0.0.1", 8123)
    assert loopback_address("http://localhost:80")[1] == 80
    with pytest.raises(ValueError, match="loopback"):
        loopback_address("http://10.1.2.3:8000")
    with pytest.raises(ValueError, match="http://"):
        loopback_address("https://127.0.0.1:8000")
