"""Every Table 2 recipe learns: each beats a constant predictor on a small generated log."""

import pytest
import torch

from training.fitting import fit
from training.models.category_moe import RECIPES  # the Table 2 models
from training.trainer import TrainConfig

FAST = TrainConfig(epochs=2, lr=3e-3, batch_size=512, patience=1)
SMALL = {"hidden": (64, 32)}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_beats_constant_predictor(name, small_log):
    torch.set_num_threads(1)
    model, metrics = fit(small_log, name, SMALL, FAST, progress=False)
    # A constant score has session AUC 0.5; the planted signal is far stronger.
    assert metrics["test"]["session_auc"] > 0.6, metrics
    assert 0 < metrics["test"]["ndcg_at_10"] <= 1


def test_checkpoint_round_trip_predicts_the_same(small_log, tmp_path):
    from training.checkpoint import load_checkpoint
    from training.trainer import predict

    model, _ = fit(small_log, "adv_hsc_moe", SMALL, TrainConfig(epochs=1), tmp_path, progress=False)
    loaded, meta = load_checkpoint(tmp_path / "model.pt")
    assert meta["name"] == "adv_hsc_moe"
    assert (predict(loaded, small_log.test) == predict(model, small_log.test)).all()
    assert (tmp_path / "train_log.jsonl").read_text().count("\n") == 1


def test_lr_halves_after_each_epoch_without_a_better_validation_auc(small_log):
    torch.set_num_threads(1)
    config = TrainConfig(epochs=6, lr=3e-2, batch_size=512, patience=6, lr_decay=0.5)
    _, metrics = fit(small_log, "dnn", SMALL, config, progress=False)
    history = metrics["history"]
    assert len(history) == 6
    expected, best = config.lr, -1.0
    for record in history:
        assert record["lr"] == pytest.approx(expected), history
        if record["valid_session_auc"] <= best:
            expected *= 0.5
        best = max(best, record["valid_session_auc"])
    # lr 3e-2 over 6 epochs of a small log overfits: at least one epoch must not improve,
    # otherwise this test checks nothing
    assert history[-1]["lr"] < config.lr, history
