"""The experiment commands run end to end at a tiny size and write the figures they promise."""

import json
from dataclasses import replace

import numpy as np
import pytest

from training.experiments import adv_hsc_moe, common
from training.trainer import TrainConfig, predict


@pytest.fixture
def tiny(monkeypatch, tmp_path, small_log_dir):
    tiny_size = common.Size(
        data=None,
        log_name="tiny",
        seeds=(0,),
        hidden=(16, 8),
        train=TrainConfig(epochs=1, lr=3e-3, batch_size=1024),
        sweep_seeds=(0,),
        sweep_epochs=1,
        tuning=common.Tuning(lrs=(3e-3,)),
        xgboost_baseline=False,
    )
    monkeypatch.setitem(common.SIZES, "tiny", tiny_size)
    monkeypatch.setitem(common.WECAN_SIZES, "tiny", tiny_size)
    monkeypatch.setenv("MOERANK_RESULTS_DIR", str(tmp_path))
    return tmp_path


def test_table2_figure5_figure6_write_their_results(tiny, small_log, small_log_dir, tmp_path):
    runs = adv_hsc_moe.table2(small_log, "tiny", run_dir=tmp_path / "runs")
    adv_hsc_moe.figure5(small_log, runs, "tiny", buckets=3)
    adv_hsc_moe.figure6(small_log, runs, "tiny", small_log_dir)
    table2 = json.loads((tiny / "adv_hsc_moe_table2_click.json").read_text())
    references = {f"oracle_{n}" for n in ("bayes", "blind_sub", "blind_top", "blind_global")}
    references |= {"logreg_per_top"}
    assert {r["model"] for r in table2["rows"]} == set(adv_hsc_moe.TABLE2_MODELS) | references
    networks = [r for r in table2["rows"] if r["model"] in adv_hsc_moe.TABLE2_MODELS]
    assert all(0.5 < r["session_auc"] < 1 for r in table2["rows"])
    oracle = {r["model"]: r for r in table2["rows"] if r["model"] in references}
    assert oracle["oracle_blind_sub"]["headroom_share"] == pytest.approx(1.0)
    assert oracle["oracle_blind_global"]["headroom_share"] == pytest.approx(0.0)
    gated = [r for r in networks if r["model"] != "dnn"]
    assert all(0 <= r["gate"]["normalised_mutual_information"] <= 1 for r in gated)
    assert all(len(r["history"]) == r["epochs_run"] >= 1 for r in networks)
    logs = list((tmp_path / "runs").glob("*/*/train_log.jsonl"))
    assert len(logs) == len(networks)  # one training log beside each run
    assert set(table2["tuning"]) == set(adv_hsc_moe.TABLE2_MODELS)
    figure5 = json.loads((tiny / "adv_hsc_moe_figure5.json").read_text())["rows"]
    assert len(figure5) == 3 * (len(adv_hsc_moe.TABLE2_MODELS) - 1)
    sizes = [r["train_rows"] for r in figure5 if r["model"] == "moe"]
    assert sizes == sorted(sizes)  # buckets from small to large categories
    figure6 = json.loads((tiny / "adv_hsc_moe_figure6.json").read_text())["rows"]
    assert all(-1 <= r["silhouette_by_top_category"] <= 1 for r in figure6)
    assert (tiny / "adv_hsc_moe_figure5.png").stat().st_size > 0
    assert (tiny / "adv_hsc_moe_figure6.png").stat().st_size > 0
    # Figures drawn in a later process load the same models from the runs' checkpoints.
    saved = adv_hsc_moe.saved_runs("click", "tiny", tmp_path / "runs")
    assert set(saved) == set(runs)
    for name, [(trained, _)] in runs.items():
        np.testing.assert_allclose(
            predict(saved[name][0][0], small_log.test), predict(trained.eval(), small_log.test)
        )


def test_wecan_table4_and_figure2_write_their_results(tiny, small_log):
    from training.experiments import wecan

    models = wecan.table4(small_log, "tiny")
    wecan.figure2(models["can"], small_log, "tiny")
    record = json.loads((tiny / "wecan_table4.json").read_text())
    table4 = record["rows"]
    references = {f"oracle_{n}" for n in ("bayes", "blind_sub", "blind_top", "blind_global")}
    references |= {"logreg_per_top"}
    assert {r["model"] for r in table4} == set(wecan.MODELS) | references
    assert {"all", "general"} <= {r["domain"] for r in table4}
    assert all(0.5 < r["auc"] < 1 for r in table4 if r["domain"] == "all")
    cell = {(r["model"], r["domain"]): r for r in table4}
    for domain in ("all", "general"):  # headroom of the AUC against the same platform's oracle
        assert cell["oracle_blind_sub", domain]["headroom_share"] == pytest.approx(1.0)
        assert cell["oracle_blind_global", domain]["headroom_share"] == pytest.approx(0.0)
        assert cell["oracle_bayes", domain]["auc"] > cell["oracle_blind_global", domain]["auc"]
    network = cell["can", "all"]
    oracle = {n: cell[f"oracle_{n}", "all"]["auc"] for n in ("blind_global", "blind_sub")}
    assert network["headroom_share"] == pytest.approx(
        (network["auc"] - oracle["blind_global"]) / (oracle["blind_sub"] - oracle["blind_global"])
    )
    assert set(record["summary"]) == set(wecan.MODELS) | references
    assert record["test_clicks"]["general"] > 0
    figure2 = json.loads((tiny / "wecan_figure2.json").read_text())["rows"]
    assert {r["field"] for r in figure2} == set(wecan.FIELDS)
    assert all(0 < r["weight"] < 1 for r in figure2)
    assert (tiny / "wecan_figure2.png").stat().st_size > 0
    # Another seed run apart (--seeds 1 --merge) joins the table: both seeds, one reference set.
    wecan.table4(small_log, "tiny", seeds=(1,), merge=True)
    record = json.loads((tiny / "wecan_table4.json").read_text())
    assert record["seeds_done"] == [0, 1]
    runs = {(r["model"], r.get("seed")) for r in record["rows"] if r["domain"] == "all"}
    assert runs == {(m, s) for m in wecan.MODELS for s in (0, 1)} | {(m, None) for m in references}
    assert len(record["rows"]) == len(
        {(r["model"], r.get("seed"), r["domain"]) for r in record["rows"]}
    )


def test_every_model_gets_the_same_tuning_budget():
    grid = common.Tuning(lrs=(1e-3, 3e-3), gate_lr_scales=(1.0, 10.0))
    gated, dense = grid.trials(gated=True), grid.trials(gated=False)
    assert len(gated) == len(dense) == 4
    assert {t["gate_lr_scale"] for t in gated} == {1.0, 10.0}
    assert all(set(t) == {"lr"} for t in dense)
    assert dense[0]["lr"] == pytest.approx(1e-3) and dense[-1]["lr"] > 3e-3
    assert common.is_gated("adv_hsc_moe") and not common.is_gated("dnn")


def test_tuning_picks_the_trial_with_the_best_validation_auc(tiny, small_log, monkeypatch):
    grid = common.Tuning(lrs=(1e-5, 3e-3))
    monkeypatch.setitem(common.SIZES, "tiny", replace(common.SIZES["tiny"], tuning=grid))
    runs, record = common.tuned_runs(small_log, common.SIZES["tiny"], "dnn", (0, 1))
    assert len(runs) == 2 and len(record["trials"]) == 2
    best = max(record["trials"], key=lambda t: t["valid_session_auc"])
    assert record["chosen"]["lr"] == best["lr"]
    assert runs[0][1]["valid_session_auc"] == best["valid_session_auc"]


def test_gate_study_writes_diagnostics_per_variant(tiny, small_log, monkeypatch):
    from training.experiments import gate_study

    monkeypatch.setattr(common, "prepare_size", lambda *args, **kwargs: small_log)
    monkeypatch.setattr(gate_study, "prepare_size", lambda *args, **kwargs: small_log)
    variants = {k: gate_study.VARIANTS[k] for k in ("before", "recipe_gate_lr_x10")}
    monkeypatch.setattr(gate_study, "VARIANTS", variants)
    gate_study.study("tiny", None, steps=3, epochs=1)
    rows = json.loads((tiny / "adv_hsc_moe_gate_study.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == list(variants)
    assert all(r["headroom_share"] == r["headroom_share"] for r in rows)  # not NaN: an oracle
    assert all(r["gate"]["softmax_entropy"] <= r["gate"]["softmax_entropy_uniform"] + 1e-6
               for r in rows)  # fmt: skip


def test_table2_merge_fills_one_table_from_separate_runs(tiny, small_log):
    adv_hsc_moe.table2(small_log, "tiny", models=("dnn",), merge=True)
    adv_hsc_moe.table2(small_log, "tiny", models=("moe",), baselines=False, merge=True)
    table2 = json.loads((tiny / "adv_hsc_moe_table2_click.json").read_text())
    models = [r["model"] for r in table2["rows"]]
    assert sorted(m for m in models if m in ("dnn", "moe")) == ["dnn", "moe"]
    assert models.count("logreg_per_top") == 1  # the first run's baseline is kept
    assert models.count("oracle_bayes") == 1  # the second run's oracle replaced the first's
    assert set(table2["summary"]) >= {"dnn", "moe", "logreg_per_top"}
    assert set(table2["tuning"]) == {"dnn", "moe"}


def test_a_sizes_results_suffix_names_its_own_table2_file(tiny, monkeypatch):
    """full-long (and full-quick-h0) write beside full-quick's table, never over it."""
    assert common.SIZES["full-long"].results_suffix == "_long"
    assert common.SIZES["full-long"].data == common.SIZES["full-quick"].data
    monkeypatch.setitem(
        common.SIZES, "tiny-long", replace(common.SIZES["tiny"], results_suffix="_long")
    )
    row = {"model": "dnn", "seed": 0, "session_auc": 0.7}
    adv_hsc_moe.write_table2(
        "click", [row], {"size": "tiny-long", "task": "click"}, ("dnn",), False
    )
    assert json.loads((tiny / "adv_hsc_moe_table2_click_long.json").read_text())["rows"] == [row]
    assert not (tiny / "adv_hsc_moe_table2_click.json").exists()


def test_table2_diagnosis_appends_variants_and_the_regressions_parts(tiny, small_log, monkeypatch):
    from training.experiments import table2_diagnosis

    monkeypatch.setattr(table2_diagnosis, "prepare_size", lambda *args, **kwargs: small_log)
    table2_diagnosis.main(["--size", "tiny", "--variants", "dnn_match", "--steps", "3",
                           "--epochs", "1", "--logistic"])  # fmt: skip
    table2_diagnosis.main(["--size", "tiny", "--variants", "moe_linear", "--steps", "3",
                           "--epochs", "1", "--seed", "1"])  # fmt: skip
    rows = json.loads((tiny / "adv_hsc_moe_table2_diagnosis.json").read_text())["rows"]
    names = [r["variant"] for r in rows]
    assert {"dnn_match", "moe_linear", "logreg_per_top", "logreg_global_without_same_sub"} <= set(
        names
    )
    assert len(names) == 6
    assert all(0 < r["session_auc"] < 1 for r in rows)  # 3 steps: a figure, not a good one
    assert [r["gate"] for r in rows if r["variant"] == "moe_linear"][0]["softmax_entropy"] > 0


def test_a_diagnosis_variants_lr_is_the_runs_learning_rate(tiny, small_log, monkeypatch):
    from training.experiments import table2_diagnosis

    configs = []

    def recording_fit(prepared, recipe, options, train, **kwargs):
        configs.append((options, train))
        return fit(prepared, recipe, options, train, **kwargs)

    fit = table2_diagnosis.fit
    monkeypatch.setattr(table2_diagnosis, "fit", recording_fit)
    oracle = table2_diagnosis.oracle_metrics(small_log.data_dir, small_log.test_frame, "click")
    row = table2_diagnosis.run_variant(small_log, "tiny", "moe_expert_lr_x3", 0, 3, 1, oracle)
    options, train = configs[0]
    assert train.lr == 9e-3 and "lr" not in options
    assert options["gate_lr_scale"] * train.lr == pytest.approx(3e-2)  # the gate's lr stays
    assert row["options"]["lr"] == 9e-3
