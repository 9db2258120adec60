"""The experiment commands run end to end at a tiny size and write the figures they promise."""

import json

import pytest

from training.experiments import adv_hsc_moe, common
from training.trainer import TrainConfig


@pytest.fixture
def tiny(monkeypatch, tmp_path, small_log_dir):
    tiny_size = common.Size(
        data=None,
        seeds=(0,),
        hidden=(16, 8),
        train=TrainConfig(epochs=1, lr=3e-3, batch_size=1024),
        sweep_seeds=(0,),
        sweep_epochs=1,
    )
    monkeypatch.setitem(common.SIZES, "tiny", tiny_size)
    monkeypatch.setenv("MOERANK_RESULTS_DIR", str(tmp_path))
    return tmp_path


def test_table2_figure5_figure6_write_their_results(tiny, small_log, small_log_dir):
    runs = adv_hsc_moe.table2(small_log, "tiny")
    adv_hsc_moe.figure5(small_log, runs, "tiny", buckets=3)
    adv_hsc_moe.figure6(small_log, runs, "tiny", small_log_dir)
    table2 = json.loads((tiny / "adv_hsc_moe_table2.json").read_text())
    assert {r["model"] for r in table2["rows"]} == set(adv_hsc_moe.TABLE2_MODELS)
    assert set(table2["rows"][0]) == {"model", "seed", "session_auc", "ndcg_at_10", "ndcg"}
    assert all(0.5 < r["session_auc"] < 1 for r in table2["rows"])
    figure5 = json.loads((tiny / "adv_hsc_moe_figure5.json").read_text())["rows"]
    assert len(figure5) == 3 * (len(adv_hsc_moe.TABLE2_MODELS) - 1)
    sizes = [r["train_rows"] for r in figure5 if r["model"] == "moe"]
    assert sizes == sorted(sizes)  # buckets from small to large categories
    figure6 = json.loads((tiny / "adv_hsc_moe_figure6.json").read_text())["rows"]
    assert all(-1 <= r["silhouette_by_top_category"] <= 1 for r in figure6)
    assert (tiny / "adv_hsc_moe_figure5.png").stat().st_size > 0
    assert (tiny / "adv_hsc_moe_figure6.png").stat().st_size > 0


def test_wecan_table4_and_figure2_write_their_results(tiny, small_log):
    from training.experiments import wecan

    models = wecan.table4(small_log, "tiny")
    wecan.figure2(models["can"], small_log, "tiny")
    table4 = json.loads((tiny / "wecan_table4.json").read_text())["rows"]
    assert {r["model"] for r in table4} == set(wecan.MODELS)
    assert {"all", "general"} <= {r["domain"] for r in table4}
    assert all(0.5 < r["auc"] < 1 for r in table4 if r["domain"] == "all")
    figure2 = json.loads((tiny / "wecan_figure2.json").read_text())["rows"]
    assert {r["field"] for r in figure2} == set(wecan.FIELDS)
    assert all(0 < r["weight"] < 1 for r in figure2)
    assert (tiny / "wecan_figure2.png").stat().st_size > 0
