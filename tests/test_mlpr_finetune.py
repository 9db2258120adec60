"""Fine-tuning the encoder's last layer: before any step the tuned path gives the frozen
encoder's vectors, and training moves the layer."""

import json
from dataclasses import replace

import torch
from conftest import make_spec

from training.dataset import TextTables
from training.experiments.mlpr_finetune import SETTINGS
from training.models.mlpr import MultiTaskRanker
from training.models.registry import config_for
from training.models.text_tail import EncoderTail, FineTunedText, token_states
from training.results import other_runs

QUERIES = ["cheap laptop", "red running shoes", "tv"]
TITLES = ["Acme Budget Laptop 15in AC123", "Zoom Red Running Shoes", "Big Television 55",
          "Blue Glass Vase", ""]  # fmt: skip


def _setup():
    from training.text_encoder import default_encoder

    encoder = default_encoder()
    tables = TextTables(
        query_table=torch.from_numpy(encoder.encode(QUERIES, progress=False)),
        query_index={q: i for i, q in enumerate(QUERIES)},
        item_table=torch.from_numpy(encoder.encode(TITLES, progress=False)),
        item_index={str(i): i for i in range(len(TITLES))},
    )
    texts = {"query": token_states(encoder, QUERIES), "item": token_states(encoder, TITLES)}
    spec = make_spec(text_dim=tables.query_table.shape[1])
    ranker = MultiTaskRanker(spec, config_for("mlp_mtl", hidden=(16, 8))).eval()
    return encoder, tables, texts, spec, ranker


def _inputs(spec, tables, query_rows, item_rows):
    n = len(item_rows)
    return {
        "request_cat": torch.zeros(n, len(spec.request_categorical), dtype=torch.long),
        "item_cat": torch.zeros(n, len(spec.item_categorical), dtype=torch.long),
        "numeric": torch.zeros(n, len(spec.numeric)),
        "query_emb": tables.query_table[query_rows],
        "item_emb": tables.item_table[item_rows],
        "query_rows": query_rows,
        "item_rows": item_rows,
    }


def test_the_untrained_tail_reproduces_the_frozen_encoder():
    encoder, tables, texts, spec, ranker = _setup()
    tuned = FineTunedText(ranker, EncoderTail(encoder), texts, tail_lr_scale=0.1).eval()
    re_encoded = tuned.encode_tables(tables)  # float16 cached states: close, not equal
    assert torch.allclose(re_encoded.item_table, tables.item_table, atol=2e-3)
    assert torch.allclose(re_encoded.query_table, tables.query_table, atol=2e-3)
    inputs = _inputs(spec, tables, torch.tensor([0, 0, 1, 2, 2]), torch.arange(5))
    assert torch.allclose(tuned(inputs).logits, ranker(inputs).logits, atol=1e-3)


def test_a_training_step_moves_the_last_layer_at_its_own_learning_rate():
    encoder, tables, texts, spec, ranker = _setup()
    tuned = FineTunedText(ranker, EncoderTail(encoder), texts, tail_lr_scale=0.1).train()
    groups = tuned.parameter_groups(1e-3)
    assert groups[1]["lr"] == 1e-4 and len(groups[1]["params"]) > 0
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    before = [p.detach().clone() for p in tuned.tail.parameters()]
    inputs = _inputs(spec, tables, torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 3]))
    loss = tuned(inputs).logits.sum()
    loss.backward()
    optimizer.step()
    moved = [not torch.equal(a, p) for a, p in zip(before, tuned.tail.parameters())]
    assert any(moved)


def test_a_table_keeps_the_rows_of_runs_made_elsewhere_with_the_same_settings(tmp_path):
    settings = {"size": "full", "steps": 300, "tail_lr": 1e-4}
    rows = [{"model": "mlpr", "seed": seed, "auc": 0.6 + seed} for seed in (0, 1, 2)]
    reference = {"model": "oracle_bayes", "auc": 0.9}  # references carry no seed
    path = tmp_path / "mlpr_table3.json"
    path.write_text(json.dumps({"rows": [*rows, reference], **settings}))
    ours = [{"model": "mlpr", "seed": 1, "auc": 0.0}]
    assert other_runs(path, ours, settings) == (
        [rows[0], rows[2], reference],
        json.loads(path.read_text()),
    )
    assert other_runs(path, [*ours, reference], settings)[0] == [rows[0], rows[2]]  # replaced
    assert other_runs(path, ours, {**settings, "steps": 40}) == ([], {})  # not comparable
    assert other_runs(tmp_path / "absent.json", ours, settings) == ([], {})
    path.write_text("")  # created empty by the lock of a first run
    assert other_runs(path, ours, settings) == ([], {})


def test_table3_seeds_run_apart_end_in_one_table(monkeypatch, tmp_path):
    """Two processes' worth of --seeds (one after the other here) give one Table 3 with both
    seeds and every setting: the real encoder, tuned for two steps on a tiny log."""
    from training.data.simulator.generator import GeneratorConfig
    from training.experiments import common, mlpr
    from training.trainer import TrainConfig

    data = GeneratorConfig(impressions=4_000, max_sub_categories=8, rate_multiplier=6.0,
                           calibration_sessions=200, show_progress=False)  # fmt: skip
    tiny = replace(common.MULTITASK_SIZES["small"], data=data, hidden=(16, 8), finetune_steps=2,
                   train=TrainConfig(epochs=1, lr=3e-3, batch_size=512))  # fmt: skip
    monkeypatch.setitem(common.MULTITASK_SIZES, "tiny", tiny)
    monkeypatch.setenv("MOERANK_RESULTS_DIR", str(tmp_path))
    torch.set_num_threads(1)
    for seed in ("0", "1"):
        mlpr.main(["--size", "tiny", "--only", "table3", "--seeds", seed,
                   "--artifacts", str(tmp_path / "artifacts")])  # fmt: skip
    record = json.loads((tmp_path / "mlpr_table3.json").read_text())
    assert record["seeds"] == [0, 1]
    runs = {(r["recipe"], r["setting"], r["seed"]) for r in record["rows"]}
    assert runs == {(recipe, setting, seed) for recipe in ("mlp_mtl", "mlpr")
                    for setting in SETTINGS for seed in (0, 1)}  # fmt: skip
    assert all(0 < r["auc"] < 1 for r in record["rows"] if r["task"] == "click")
