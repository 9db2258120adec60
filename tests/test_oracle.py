"""The generator's oracle: true probabilities beside every row, the test split's oracle table,
the headroom share, and the knobs h (category heterogeneity) and rho (atc/purchase)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from tests import test_generator
from training.data.simulator.behaviour import purchase_vector
from training.data.simulator.generator import GeneratorConfig, generate
from training.oracle import (
    RANKINGS,
    headroom_share,
    oracle_metrics,
    oracle_scores,
    read_oracle,
)

TINY = dataclasses.replace(test_generator.TINY, rate_multiplier=4.0)


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle-log")
    truth = generate(TINY, out)
    return out, pd.read_parquet(out / "impressions.parquet"), read_oracle(out), truth


def test_oracle_rows_align_with_impressions_and_factor_the_click(tiny_log):
    _, frame, oracle, truth = tiny_log
    assert len(oracle) == len(frame)
    eta = truth["position_bias"]["eta"]
    examination = (1.0 + frame["position"].to_numpy()) ** -eta
    np.testing.assert_allclose(oracle["examination"], examination, rtol=1e-5)
    np.testing.assert_allclose(
        oracle["p_click"], oracle["examination"] * oracle["click_blind"], rtol=1e-4
    )
    # The true probabilities are the ones the labels were drawn from.
    assert oracle["p_click"].sum() == pytest.approx(frame["click"].sum(), rel=0.1)
    clicked = frame["click"] == 1
    assert oracle["p_atc_given_click"][clicked].sum() == pytest.approx(frame["atc"].sum(), rel=0.25)
    # The later tasks' rankings are the click's times the true conversion, whatever ranking.
    atc, purchase = oracle_scores(oracle, "atc"), oracle_scores(oracle, "purchase")
    for ranking, column in RANKINGS.items():
        np.testing.assert_allclose(atc[ranking], oracle[column] * oracle["p_atc_given_click"])
        np.testing.assert_allclose(purchase[ranking], atc[ranking] * oracle["p_purchase_given_atc"])


def test_ground_truth_holds_the_test_split_oracle_table(tiny_log):
    out, frame, _, truth = tiny_log
    table = truth["oracle"]
    assert set(table) == {"split", "click", "atc", "purchase"}
    assert set(table["click"]) == set(RANKINGS)
    click = table["click"]
    assert click["bayes"]["session_auc"] > click["blind_sub"]["session_auc"]
    assert click["blind_sub"]["session_auc"] > click["blind_global"]["session_auc"]
    from training.dataset import split_sessions

    test = split_sessions(frame, seed=0)[2]
    again = oracle_metrics(out, test, "click")
    assert again["blind_top"]["ndcg"] == pytest.approx(click["blind_top"]["ndcg"])
    assert json.loads((out / "ground_truth.json").read_text())["oracle"] == table


def test_headroom_share_is_zero_at_the_global_oracle_and_one_at_the_sub_oracle():
    oracle = {"blind_global": {"session_auc": 0.75}, "blind_sub": {"session_auc": 0.81}}
    assert headroom_share(0.75, oracle) == 0.0
    assert headroom_share(0.81, oracle) == pytest.approx(1.0)
    assert headroom_share(0.78, oracle) == pytest.approx(0.5)
    assert np.isnan(headroom_share(0.7, {**oracle, "blind_sub": {"session_auc": 0.75}}))


def test_zero_heterogeneity_pools_nothing_and_keeps_every_other_draw(tiny_log, tmp_path):
    _, frame, _, truth = tiny_log
    flat = generate(dataclasses.replace(TINY, category_heterogeneity=0.0), tmp_path)
    oracle = read_oracle(tmp_path)
    np.testing.assert_allclose(oracle["click_blind"], oracle["click_blind_global"], rtol=1e-5)
    np.testing.assert_allclose(oracle["click_blind"], oracle["click_blind_top"], rtol=1e-5)
    weights = {s["click_weights"]["sales_volume"] for s in flat["sub_categories"].values()}
    assert len(weights) == 1
    other = pd.read_parquet(tmp_path / "impressions.parquet")
    for column in ("item_id", "position", "query_text", "scenario", "log_price"):
        assert other[column].equals(frame[column]), column  # same lists, same features


def test_purchase_weights_follow_the_correlation_knob():
    conversion = np.array([-0.5, 0.0, 0.3, 0.0, 0.3, 0.0, 0.4, 0.0])
    rng = np.random.default_rng(0)
    assert np.array_equal(purchase_vector(conversion, 1.0, rng), conversion)
    for rho in (0.0, 0.5, -0.3):
        buy = purchase_vector(conversion, rho, rng)
        cosine = buy @ conversion / (np.linalg.norm(buy) * np.linalg.norm(conversion))
        assert cosine == pytest.approx(rho, abs=1e-9)
        assert np.linalg.norm(buy) == pytest.approx(np.linalg.norm(conversion))


def test_invalid_knobs_are_errors():
    with pytest.raises(ValueError, match="category_heterogeneity"):
        GeneratorConfig(category_heterogeneity=-1.0)
    with pytest.raises(ValueError, match="purchase_conversion_correlation"):
        GeneratorConfig(purchase_conversion_correlation=1.5)


def test_scenario_category_tilt_makes_scenarios_search_different_departments(tiny_log, tmp_path):
    _, frame, _, _ = tiny_log
    config = dataclasses.replace(TINY, impressions=40_000, scenario_category_tilt=1.5)
    truth = generate(config, tmp_path)
    tilted = pd.read_parquet(tmp_path / "impressions.parquet")

    def scenario_share_spread(df):  # how much the RU share varies between top-categories
        sessions = df.drop_duplicates("session_id")
        share = sessions.groupby("top_category")["scenario"].apply(lambda s: (s == "RU").mean())
        return share[sessions["top_category"].value_counts() >= 30].std()

    assert scenario_share_spread(tilted) > 2 * scenario_share_spread(frame)
    for scenario in truth["scenarios"].values():  # calibrated on each scenario's own mix
        assert scenario["expected"]["ctr"] == pytest.approx(scenario["target"]["ctr"], rel=0.25)
