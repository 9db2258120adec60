"""Every mlpr recipe and the XGBoost baseline learn on a small generated log, and the
experiment helpers compute what they say."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from contract.schema import TASKS
from training.experiments.mlpr_eval import lifts, neural_scores, task_metrics, xgboost_scores
from training.experiments.mlpr_figure2 import impression_groups
from training.models.mlpr import RECIPES
from training.oracle import RANKINGS as RANKINGS_OF_ORACLE
from training.trainer import TrainConfig

FAST = TrainConfig(epochs=1, lr=3e-3, batch_size=512)
# No text here (fast): the query-level recipe's gate reads the request categories only.
OPTIONS = {"hidden": (32, 16), "tower_hidden": (16,)}
REQUEST_GATE = {"gate_inputs": ("query_category", "top_category", "scenario", "platform")}


@pytest.fixture(scope="module")
def cascade_log(small_log_dir):
    from training.fitting import prepare

    return prepare(small_log_dir, tasks=TASKS, progress=False)


def _test_aucs(prepared, scores: np.ndarray) -> list[float]:
    labels, sessions = prepared.test.labels.numpy(), prepared.test.sessions
    return [task_metrics(labels[:, t], scores[:, t], sessions)["auc"] for t in range(3)]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_beats_a_constant_predictor_on_every_task(name, cascade_log):
    torch.set_num_threads(1)
    options = {**OPTIONS, **(REQUEST_GATE if name == "mlpr_query_gate" else {})}
    scores = neural_scores(cascade_log, name, TASKS, options, FAST)
    assert scores.shape == (len(cascade_log.test), 3)
    aucs = _test_aucs(cascade_log, scores)
    # A constant score has AUC 0.5 on every task; 0.58 is > 5 standard errors above it
    # (the test split has ~330 clicks, ~80 ATCs, ~40 purchases). Click is the hardest task
    # here: position bias moves clicks and no feature shows the position.
    assert min(aucs) > 0.58, dict(zip(TASKS, aucs))


def test_xgboost_baseline_beats_a_constant_predictor(cascade_log):
    aucs = _test_aucs(cascade_log, xgboost_scores(cascade_log, seed=0, rounds=30))
    assert min(aucs) > 0.6, aucs


def test_lifts_are_percentages_of_the_baseline_mean():
    rows = [
        {"model": "xgboost", "task": "click", "auc": 0.5, "session_auc": 0.5,
         "ndcg_at_1": 0.2, "ndcg_at_5": 0.4},
        {"model": "m", "task": "click", "auc": 0.6, "session_auc": 0.55,
         "ndcg_at_1": 0.3, "ndcg_at_5": 0.4},
    ]  # fmt: skip
    out = lifts(rows)["m"]["click"]
    assert out == {"auc": 20.0, "session_auc": 10.0, "ndcg_at_1": 50.0, "ndcg_at_5": 0.0}


def test_impression_groups_cut_the_test_rows_at_the_25th_and_75th_percentiles():
    log = pd.DataFrame({"query_text": list("aaaabbc") * 4, "item_id": list("xyzxyxz") * 4})
    test = pd.DataFrame({"query_text": list("abcabcab"), "item_id": list("xyzzyxxy")})
    group = impression_groups(log, test)
    assert np.bincount(group, minlength=3).tolist() == [2, 4, 2]
    pairs = log.groupby(["query_text", "item_id"]).size()
    counts = np.array([pairs.get((q, i), 0) for q, i in zip(test.query_text, test.item_id)])
    assert counts[group == 0].max() <= counts[group == 2].min()  # rarest first


def test_table2_references_rank_every_task_with_a_headroom_share(cascade_log):
    from training.experiments.mlpr import reference_rows
    from training.experiments.references import add_headroom_shares

    rows = add_headroom_shares(reference_rows(cascade_log), "session_auc", "task")
    cell = {(r["model"], r["task"]): r for r in rows}
    assert {m for m, _ in cell} == {f"oracle_{n}" for n in RANKINGS_OF_ORACLE} | {"logreg_per_top"}
    for task in TASKS:
        assert cell["oracle_blind_sub", task]["headroom_share"] == pytest.approx(1.0)
        assert cell["oracle_blind_global", task]["headroom_share"] == pytest.approx(0.0)
        oracle = {
            n: cell[f"oracle_{n}", task]["session_auc"] for n in ("blind_global", "blind_sub")
        }
        logreg = cell["logreg_per_top", task]
        assert logreg["headroom_share"] == pytest.approx(
            (logreg["session_auc"] - oracle["blind_global"])
            / (oracle["blind_sub"] - oracle["blind_global"])
        )
        assert logreg[f"{task}_C"] > 0  # the regression's chosen penalty, per task
    # Position is in the true probabilities and in no model's input.
    assert cell["oracle_bayes", "click"]["auc"] > cell["logreg_per_top", "click"]["auc"]


def test_table2_seeds_run_apart_end_in_one_table_with_the_references(
    cascade_log, monkeypatch, tmp_path
):
    from dataclasses import replace

    from training.experiments import common, mlpr

    tiny = replace(common.MULTITASK_SIZES["small"], hidden=(16, 8), train=FAST, xgboost_rounds=5,
                   results_suffix="_tiny")  # fmt: skip
    monkeypatch.setitem(common.MULTITASK_SIZES, "tiny", tiny)
    monkeypatch.setattr(mlpr, "TABLE2", ("mlp_mtl",))
    monkeypatch.setattr(mlpr, "ITEM_GATE", ("query_category", "item"))  # this log has no text
    monkeypatch.setenv("MOERANK_RESULTS_DIR", str(tmp_path))
    mlpr.table2(cascade_log, "tiny", seeds=(0,), merge=True)
    mlpr.table2(cascade_log, "tiny", seeds=(1,), merge=True)
    record = json.loads((tmp_path / "mlpr_table2_tiny.json").read_text())
    assert record["seeds"] == [0, 1]
    runs = sorted({(r["model"], r["seed"]) for r in record["rows"]}, key=str)
    references = [(f"oracle_{n}", None) for n in RANKINGS_OF_ORACLE] + [("logreg_per_top", None)]
    expected = references + [(m, s) for m in ("mlp_mtl", "xgboost") for s in (0, 1)]
    assert runs == sorted(expected, key=str)
    assert len(record["rows"]) == 3 * len(expected)  # one row per task
    assert record["summary"]["mlp_mtl"]["click"]["headroom_share"].count("±") == 1
    assert set(record["lift_over_xgboost"]["mlp_mtl"]) == set(TASKS)
