"""mlpr parts: probability transfer, uncertainty weighting, attention units, batch-normed
stacked experts, query-level gates and the expert-skipping path."""

import pytest
import torch
from conftest import make_inputs

from training.models.mlpr import RECIPES, MultiTaskConfig, MultiTaskRanker
from training.models.multitask import (
    TaskAttention,
    TaskTowers,
    expectation_calibration,
    probability_transfer_logits,
    uncertainty_weighted,
)
from training.models.multitask_experts import StackedBatchNorm, candidate_table
from training.models.registry import config_for

SMALL = {"hidden": (16, 8), "tower_hidden": (8,)}


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():  # trained-looking, non-uniform gates and towers
        torch.nn.init.normal_(p, std=0.5)
    return model.eval()


def test_probability_transfer_is_the_product_and_never_increases_down_the_cascade():
    torch.manual_seed(0)
    z = torch.cat([torch.randn(500, 3) * 4, torch.tensor([[40.0, 40, 40], [-40, 60, -90]])])
    y = torch.sigmoid(probability_transfer_logits(z.double()))
    p = torch.sigmoid(z.double())
    expected = torch.cumprod(p, dim=1)  # ŷ_click = p_ctr, ŷ_atc = p_ctr·p_avr, ...
    assert torch.allclose(y, expected, rtol=1e-9, atol=1e-12)
    y32 = torch.sigmoid(probability_transfer_logits(z))
    assert (y32[:, 1] <= y32[:, 0]).all() and (y32[:, 2] <= y32[:, 1]).all()


def test_probability_transfer_logits_and_gradients_stay_finite_at_the_extremes():
    z = torch.tensor([[200.0, 200.0, 200.0], [-200.0, -200.0, -200.0], [0.0, 30.0, -30.0]])
    z.requires_grad_(True)
    logits = probability_transfer_logits(z)
    assert torch.isfinite(logits).all()
    assert logits[0, 0] > 80 and logits[1, 2] < -500  # ŷ ≈ 1 and ŷ ≈ e^-600 keep their sign
    logits.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_model_outputs_respect_the_cascade_with_probability_transfer(text_spec):
    model = _randomised(MultiTaskRanker(text_spec, config_for("mlpr", **SMALL)))
    scores = torch.sigmoid(model(make_inputs(text_spec, 64, 64)).logits)
    assert (scores[:, 1] <= scores[:, 0]).all() and (scores[:, 2] <= scores[:, 1]).all()
    plain = _randomised(MultiTaskRanker(text_spec, config_for("mtl_attention", **SMALL)))
    scores = torch.sigmoid(plain(make_inputs(text_spec, 64, 64)).logits)
    assert (scores[:, 1] > scores[:, 0]).any()  # without transfer nothing forces the order


def test_uncertainty_loss_matches_a_hand_computed_value():
    losses = torch.tensor([0.5, 0.2, 0.1])
    sigma = torch.tensor([1.0, 2.0, 0.5])
    # eq. 10: 0.5/(2·1) + 0.2/(2·4) + 0.1/(2·0.25) + log(1·2·0.5) = 0.25 + 0.025 + 0.2 + 0
    value = uncertainty_weighted(losses, torch.log(sigma**2))
    assert value.item() == pytest.approx(0.475, abs=1e-6)
    assert uncertainty_weighted(losses, torch.zeros(3)).item() == pytest.approx(0.4)


def test_learnable_sigma_converges_to_the_task_loss():
    losses = torch.tensor([0.9, 0.3, 0.05])
    log_variance = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([log_variance], lr=0.05)
    for _ in range(2000):
        optimizer.zero_grad()
        uncertainty_weighted(losses, log_variance).backward()
        optimizer.step()
    # d/ds (e^-s L + s) / 2 = 0 at σ² = e^s = L: noisier (higher-loss) tasks weigh less.
    assert torch.allclose(torch.exp(log_variance.detach()), losses, rtol=1e-3)


def test_model_uses_uncertainty_weighting_through_the_trainer_hook(spec):
    from training.trainer import task_objective

    model = MultiTaskRanker(spec, config_for("mtl_uncertainty", **SMALL))
    assert any(p is model.log_variance for p in model.parameters())  # learned with the rest
    logits, labels = torch.randn(32, 3), (torch.rand(32, 3) < 0.3).float()
    objective, per_task = task_objective(model, logits, labels)
    assert objective.item() == pytest.approx(0.5 * per_task.sum().item())  # σ = 1 at start
    plain = MultiTaskRanker(spec, config_for("mlp_mtl", **SMALL))
    assert task_objective(plain, logits, labels)[0].item() == pytest.approx(per_task.mean().item())


def test_expectation_calibration_penalises_only_later_stages_above_earlier():
    probs = torch.tensor([[0.5, 0.6, 0.1], [0.4, 0.3, 0.35]])
    # row 1: (0.6-0.5) + 0 ; row 2: 0 + (0.35-0.3)
    assert expectation_calibration(probs).item() == pytest.approx((0.1 + 0.05) / 2)


@pytest.mark.parametrize("aitm", [False, True])
def test_attention_units_have_task_shapes_and_pass_information_forward_only(aitm):
    torch.manual_seed(0)
    unit = TaskAttention(tasks=3, dim=8, aitm=aitm)
    towers = torch.randn(5, 3, 8)
    out = unit(towers)
    assert out.shape == (5, 3, 8)
    changed = towers.clone()
    changed[:, 2] += 1.0  # the last task's tower: no earlier task may see it
    assert torch.allclose(unit(changed)[:, :2], out[:, :2])
    changed = towers.clone()
    changed[:, 0] += 1.0  # the first task's tower reaches the later tasks through a^1
    assert not torch.allclose(unit(changed)[:, 2], out[:, 2])
    # a^1 = Attention(t^1, ∅): one token, softmax weight 1, so a^1 = W_V t^1
    assert torch.allclose(out[:, 0], towers[:, 0] @ unit.value.weight[0], atol=1e-6)


def test_towers_are_independent_per_task():
    towers = TaskTowers(tasks=3, in_dim=6, hidden=(10, 4), dropout=0.0)
    x = torch.randn(7, 3, 6)
    out = towers(x)
    x2 = x.clone()
    x2[:, 1] = 0
    assert out.shape == (7, 3, 4)
    assert torch.allclose(towers(x2)[:, [0, 2]], out[:, [0, 2]])


def test_stacked_batch_norm_matches_batchnorm1d_in_training_and_inference():
    torch.manual_seed(0)
    stacked, reference = StackedBatchNorm(3, 4), torch.nn.BatchNorm1d(12)
    for _ in range(3):
        x = torch.randn(16, 3, 4) * 3 + 1
        assert torch.allclose(stacked(x), reference(x.reshape(16, 12)).reshape(16, 3, 4), atol=1e-5)
    stacked.eval(), reference.eval()
    x = torch.randn(5, 3, 4)
    assert torch.allclose(stacked(x), reference(x.reshape(5, 12)).reshape(5, 3, 4), atol=1e-5)
    index = torch.tensor([2, 0])  # the skipping path gathers the chosen experts' statistics
    take = lambda p: p.index_select(0, index)  # noqa: E731
    assert torch.allclose(stacked(x[:, index], take), stacked(x)[:, index], atol=1e-6)


def test_candidate_table_gives_each_task_its_own_experts_then_the_shared():
    assert candidate_table(3, 2, 1).tolist() == [[2, 0, 1], [3, 0, 1], [4, 0, 1]]
    assert candidate_table(2, 3, 0).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_query_level_gates_skip_experts_with_the_dense_result(text_spec):
    model = _randomised(MultiTaskRanker(text_spec, config_for("mlpr_query_gate", **SMALL)))
    assert model.request_level_gate
    inputs = make_inputs(text_spec, 1, 30, seed=3)
    dense, skipped = model(inputs), model(inputs, skip_experts=True)
    assert torch.allclose(dense.logits, skipped.logits, atol=1e-5)
    gating = dense.gating  # the click gate: K = 2 experts of the first layer's 8
    assert gating.top_index.shape == (1, 2) and (gating.weights > 0).sum() == 2
    assert torch.allclose(gating.weights.sum(), torch.tensor(1.0))


def test_item_level_gates_cannot_skip(text_spec):
    model = _randomised(MultiTaskRanker(text_spec, config_for("mlpr", **SMALL)))
    assert not model.request_level_gate
    with pytest.raises(ValueError, match="request-level"):
        model(make_inputs(text_spec, 1, 4), skip_experts=True)
    assert (
        MultiTaskRanker(text_spec, config_for("mlp_mtl", **SMALL))(
            make_inputs(text_spec, 4, 4)
        ).gating
        is None
    )  # shared bottom: no gate, exported as a single tower


def test_unknown_and_invalid_options_are_errors():
    with pytest.raises(ValueError, match="unknown option"):
        config_for("mlpr", num_experts=4)
    with pytest.raises(ValueError, match="attention"):
        MultiTaskConfig(attention="self")
    assert set(RECIPES) >= {"mlp_single", "mlp_mtl", "esm2", "mmoe", "ple", "aitm", "mlpr"}


def test_checkpoint_round_trip(spec, tmp_path):
    from training.checkpoint import load_checkpoint, save_checkpoint

    model = _randomised(MultiTaskRanker(spec, config_for("ple", **SMALL)))
    save_checkpoint(tmp_path / "m.pt", "ple", model, spec, {})
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    inputs = make_inputs(spec, 8, 8)
    assert meta["family"] == "multitask"
    assert torch.equal(loaded(inputs).logits, model(inputs).logits)


def test_one_specific_expert_per_task_gives_each_task_a_bottom_of_its_own(spec):
    model = _randomised(MultiTaskRanker(spec, config_for("mlp_mtl", experts=0,
                                                         specific_experts=1, **SMALL)))  # fmt: skip
    inputs = make_inputs(spec, 16, 16)
    before = model(inputs).logits
    with torch.no_grad():
        model.extraction.experts.item_weight[1] += 1.0  # task 1's (atc's) own expert
    after = model(inputs).logits
    assert torch.equal(after[:, [0, 2]], before[:, [0, 2]])
    assert not torch.allclose(after[:, 1], before[:, 1])
