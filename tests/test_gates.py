"""Noisy top-K gate, category buckets, and the expert-skipping path equal to the dense one."""

import pytest
import torch
from conftest import make_inputs

from training.models.category_moe import CategoryMoE
from training.models.gates import NoisyTopKGate, category_buckets
from training.models.registry import config_for


@pytest.mark.parametrize("experts,k", [(10, 4), (16, 2), (4, 4), (5, 1)])
def test_inference_gate_has_exactly_k_weights_summing_to_one(experts, k):
    gate = NoisyTopKGate(8, experts, k)
    torch.nn.init.normal_(gate.gate.weight)
    gate.eval()
    out = gate(torch.randn(64, 8))
    assert ((out.weights > 0).sum(1) == k).all()
    assert torch.allclose(out.weights.sum(1), torch.ones(64))
    assert torch.equal(out.weights.gather(1, out.top_index) > 0, torch.ones(64, k, dtype=bool))


def test_training_noise_changes_selection_and_balance_term_is_positive():
    torch.manual_seed(0)
    gate = NoisyTopKGate(8, 10, 2)
    torch.nn.init.normal_(gate.noise.weight)
    x = torch.randn(256, 8)
    gate.train()
    picks = {tuple(sorted(gate(x[:1]).top_index[0].tolist())) for _ in range(30)}
    assert len(picks) > 1  # noise explores experts
    assert gate(x).balance > 0
    gate.eval()
    assert len({tuple(gate(x[:1]).top_index[0].tolist()) for _ in range(5)}) == 1


def test_category_buckets_have_roughly_equal_counts():
    counts = torch.tensor([100, 1, 50, 50, 30, 20, 25, 25, 1, 98])
    bucket_of = category_buckets(counts, 4)
    sizes = torch.zeros(4).index_add_(0, bucket_of, counts.float())
    assert bucket_of.max() == 3
    assert sizes.max() <= 2 * counts.sum() / 4  # no bucket gets more than twice its share


@pytest.mark.parametrize("name", ["moe", "adv_hsc_moe", "mmoe_4"])
def test_skipping_experts_gives_the_dense_result(name, text_spec):
    counts = torch.arange(text_spec.request_categorical[0].cardinality) + 1
    model = CategoryMoE(text_spec, config_for(name, hidden=(16, 8)), counts)
    for p in model.parameters():  # trained-looking, non-uniform gates
        torch.nn.init.normal_(p, std=0.3)
    model.eval()
    inputs = make_inputs(text_spec, requests=1, items=7)
    with torch.no_grad():
        dense = model(inputs)
        skipped = model(inputs, skip_experts=True)
    assert torch.allclose(dense.logits, skipped.logits, atol=1e-5)
    per_row = {
        k: v.expand(7, -1) if k in ("request_cat", "query_emb") else v for k, v in inputs.items()
    }
    with torch.no_grad():
        rowwise = model(per_row)  # the training layout: one request copy per item
    assert torch.allclose(dense.logits, rowwise.logits, atol=1e-5)


def test_item_level_gate_cannot_skip(spec):
    model = CategoryMoE(
        spec, config_for("moe", hidden=(8,), gate_inputs=("query_category", "item"))
    )
    model.eval()
    assert not model.request_level_gate
    with pytest.raises(ValueError, match="request-level gate"):
        model(make_inputs(spec, 1, 5), skip_experts=True)


def test_unknown_options_are_errors():
    with pytest.raises(ValueError, match="unknown option"):
        config_for("moe", num_cross_layers=3)
    with pytest.raises(ValueError, match="unknown model"):
        config_for("moee")
    with pytest.raises(ValueError, match="gate inputs"):
        from conftest import make_spec

        CategoryMoE(make_spec(), config_for("moe", gate_inputs=("user",)))
