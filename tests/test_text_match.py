"""text_match (training/models/text_match.py) and the trainer's listwise term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_inputs, make_spec

from training.models.registry import build, config_for
from training.recipe_needs import DataFields, fit_recipe
from training.trainer import epoch_order, listwise_loss

CASCADE = ("grade_ge2", "grade_ge3", "grade_ge4")


def test_listwise_loss_is_listnet_per_group_and_task():
    logits = torch.tensor([[2.0], [0.0], [1.0], [5.0], [3.0]])
    labels = torch.tensor([[3.0], [1.0], [0.0], [0.0], [0.0]])
    groups = torch.tensor([7, 7, 7, 9, 9])  # group 9 has no relevant item: left out

    softmax = torch.log_softmax(torch.tensor([2.0, 0.0, 1.0]), 0)
    expected = -(0.75 * softmax[0] + 0.25 * softmax[1])
    assert torch.isclose(listwise_loss(logits, labels, groups), expected)
    # Only the order within a group matters: a shift per group changes nothing.
    shifted = logits + torch.tensor([[10.0], [10.0], [10.0], [-4.0], [-4.0]])
    assert torch.isclose(listwise_loss(shifted, labels, groups), expected)
    assert listwise_loss(logits, torch.zeros_like(labels), groups) == 0


def test_epoch_order_keeps_each_group_together():
    groups = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    order = epoch_order(10, groups, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(10))
    seen = groups[order].tolist()
    runs = [g for i, g in enumerate(seen) if i == 0 or g != seen[i - 1]]
    assert sorted(runs) == [0, 1, 2, 3]  # each group one contiguous run


def test_untrained_text_match_ranks_by_the_cosine_and_keeps_the_cascade_ordered():
    spec = make_spec(text_dim=24)
    model = build("text_match", config_for("text_match", tasks=CASCADE), spec).eval()
    unit = make_inputs(spec, requests=1, items=30, seed=2)  # unit vectors, as encoded
    with torch.no_grad():
        probs = model(unit).logits.sigmoid().numpy()
    cosine = (unit["query_emb"] * unit["item_emb"]).sum(1).numpy()
    assert np.array_equal(np.argsort(-probs.sum(1)), np.argsort(-cosine))
    assert (np.diff(probs, axis=1) <= 0).all()  # P(grade >= 2) >= P(>= 3) >= P(>= 4)


def test_text_match_needs_text():
    fit = fit_recipe("text_match", {}, DataFields((), CASCADE, False, 2))
    assert fit.config is None and "item_text" in fit.problems[0]
    with pytest.raises(ValueError, match="names no item text"):
        build("text_match", config_for("text_match"), make_spec())
