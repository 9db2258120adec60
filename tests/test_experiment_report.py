"""The experiment report: rates, CIs, lifts and sample sizes against statsmodels and by hand;
arms read from a /metrics page."""

from __future__ import annotations

import json

import pytest
from statsmodels.stats.proportion import proportion_confint

from pipelines.experiment_report import (
    arms_from_metrics,
    format_table,
    main,
    report,
    sample_size,
    wins,
)

ARMS = {
    "control": {"impressions": 100_000, "clicks": 5000, "add_to_carts": 300, "purchases": 100,
                "expected_clicks": 5012.5},
    "better": {"impressions": 100_000, "clicks": 5400, "add_to_carts": 320, "purchases": 110},
    "same": {"impressions": 50_000, "clicks": 2510, "add_to_carts": 150, "purchases": 0},
}  # fmt: skip


def test_rates_carry_wilson_intervals_and_expected_rates():
    result = report(ARMS, "control")
    ctr = result["arms"]["control"]["ctr"]
    assert ctr["rate"] == 0.05
    assert ctr["ci"] == pytest.approx(proportion_confint(5000, 100_000, method="wilson"))
    assert ctr["expected"] == pytest.approx(0.050125)
    assert "vs_control" not in ctr


def test_lift_is_relative_with_a_ratio_interval_and_a_test():
    result = report(ARMS, "control")
    better = result["arms"]["better"]["ctr"]["vs_control"]
    assert better["lift"] == pytest.approx(0.08)
    low, high = better["ci"]
    assert 0 < low < 0.08 < high
    assert better["p_value"] < 1e-3
    same = result["arms"]["same"]["ctr"]["vs_control"]
    assert same["ci"][0] < 0 < same["ci"][1] and same["p_value"] > 0.5
    assert wins(result, "better") and not wins(result, "same")
    # No purchases in an arm: no lift to speak of, and it is not a win.
    assert result["arms"]["same"]["ctcvr"]["vs_control"]["lift"] is None
    assert not wins(result, "same", "ctcvr")


def test_sample_size_matches_the_textbook_formula_and_grows_as_the_effect_shrinks():
    # Two proportions, equal arms: n per arm = 2 (z_a/2 + z_b)^2 / h^2 with Cohen's h.
    import math

    p0, p1 = 0.05, 0.05 * 1.1
    h = 2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p0))
    by_hand = 2 * (1.959964 + 0.841621) ** 2 / h**2
    assert sample_size(0.05, 0.1, 0.05, 0.8) == pytest.approx(by_hand, rel=1e-3)
    assert sample_size(0.05, 0.02, 0.05, 0.8) > sample_size(0.05, 0.1, 0.05, 0.8)
    assert sample_size(0.0, 0.1, 0.05, 0.8) is None


def test_unknown_control_is_an_error():
    with pytest.raises(ValueError, match="control arm 'nope'"):
        report(ARMS, "nope")


METRICS_PAGE = """\
# HELP moerank_events_total Feedback events accepted
# TYPE moerank_events_total counter
moerank_events_total{experiment="abc",model="dnn",type="impression",variant="control"} 1000.0
moerank_events_total{experiment="abc",model="dnn",type="click",variant="control"} 50.0
moerank_events_total{experiment="abc",model="best",type="impression",variant="treatment"} 900.0
moerank_events_total{experiment="abc",model="best",type="click",variant="treatment"} 60.0
moerank_events_total{experiment="abc",model="best",type="purchase",variant="treatment"} 2.0
moerank_events_total{experiment="none",model="dnn",type="impression",variant="none"} 10.0
"""


def test_arms_from_a_metrics_page():
    arms = arms_from_metrics(METRICS_PAGE, experiment="abc")
    assert arms["control"] == {"impressions": 1000, "clicks": 50, "add_to_carts": 0, "purchases": 0}
    assert arms["treatment"]["purchases"] == 2
    everything = arms_from_metrics(METRICS_PAGE)
    assert everything["dnn"]["impressions"] == 10  # outside any experiment: the model's name


def test_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    summary = tmp_path / "shoppers.json"
    summary.write_text(json.dumps({"arms": ARMS}))
    out = tmp_path / "report.json"
    assert main(["--shoppers", str(summary), "--control", "control", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ctr vs control: +8.00%" in printed and "impressions per arm" in printed
    assert json.loads(out.read_text())["arms"]["better"]["ctr"]["rate"] == 0.054
    assert format_table(report(ARMS, "control")).count("\n") >= 4
