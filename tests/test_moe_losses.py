"""HSC and AdvLoss against hand-computed examples; gradients of HSC reach the gates only."""

import math

import pytest
import torch
from conftest import make_inputs

from training.models.category_moe import CategoryMoE
from training.models.losses import (
    adversarial_loss,
    hierarchical_soft_constraint,
    sample_disagreeing,
)
from training.models.registry import config_for


def test_hsc_sums_over_top_k_indices_only():
    # p^I = softmax([ln 4, ln 3, ln 2, ln 1]) = [.4, .3, .2, .1]; p^C uniform = .25 each.
    inference = torch.log(torch.tensor([[4.0, 3.0, 2.0, 1.0]]))
    constraint = torch.zeros(1, 4)
    top = torch.tensor([[0, 1]])
    expected = (0.4 - 0.25) ** 2 + (0.3 - 0.25) ** 2  # indices 2, 3 excluded
    assert hierarchical_soft_constraint(inference, constraint, top).item() == pytest.approx(
        expected, abs=1e-7
    )
    other = torch.tensor([[2, 3]])
    assert hierarchical_soft_constraint(inference, constraint, other).item() == pytest.approx(
        (0.2 - 0.25) ** 2 + (0.1 - 0.25) ** 2, abs=1e-7
    )


def test_adversarial_loss_over_top_k_times_disagreeing_pairs():
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0], [0.5, 0.0, 0.0, -2.0]])
    top = torch.tensor([[0, 1], [0, 1]])
    disagreeing = torch.tensor([[2], [3]])
    row0 = (sig(0) - sig(-1)) ** 2 + (sig(1) - sig(-1)) ** 2
    row1 = (sig(0.5) - sig(-2)) ** 2 + (sig(0) - sig(-2)) ** 2
    got = adversarial_loss(logits, top, disagreeing).item()
    assert got == pytest.approx((row0 + row1) / 2, abs=1e-6)


def test_disagreeing_experts_avoid_the_top_k():
    torch.manual_seed(0)
    top = torch.tensor([[0, 1, 2, 3]] * 500)
    picked = sample_disagreeing(top, experts=10, count=2)
    assert picked.shape == (500, 2)
    assert not torch.isin(picked, torch.arange(4)).any()
    assert (picked[:, 0] != picked[:, 1]).all()
    assert set(picked.flatten().tolist()) == set(range(4, 10))  # all outsiders get drawn


@pytest.mark.parametrize("shared", [False, True])
def test_hsc_gradient_never_reaches_the_experts(spec, shared):
    """eq. 15: the experts' towers get no HSC gradient; with the shared x^sc embedding
    (§4.3.1) the input embeddings of the gated fields do, otherwise only the gates."""
    options = {"hidden": (8, 4), "balance_weight": 0.0, "shared_gate_embedding": shared}
    model = CategoryMoE(spec, config_for("hsc_moe", **options))
    model.train()
    inputs = make_inputs(spec, 16, 16)
    with torch.no_grad():  # non-zero gate weights, so HSC has a gradient at all
        for p in model.gate.parameters():
            p.normal_()
    model(inputs).penalties["hsc"].backward()
    for name, p in model.named_parameters():
        touched = p.grad is not None and p.grad.abs().sum() > 0
        is_gate = name.startswith(("gate", "constraint"))
        if name.startswith("experts") or (name.startswith("inputs") and not shared):
            assert not touched, f"HSC moved {name}"
        if name in ("gate.gate.weight", "constraint.gate.weight"):
            assert touched and is_gate, f"HSC did not reach {name}"
