"""Gate diagnostics against hand-computed values, and on a real CategoryMoE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import make_inputs
from training.dataset import TensorData
from training.gate_diagnostics import (
    category_silhouette,
    diagnose,
    expert_usage,
    routing,
    routing_entropy,
    top_category_mutual_information,
)
from training.models.category_moe import CategoryMoE
from training.models.registry import config_for


def test_uniform_routing_has_maximal_entropy_and_no_information():
    probs = np.full((6, 4), 0.25)
    weights = np.tile([0.5, 0.5, 0.0, 0.0], (6, 1))
    entropy = routing_entropy(probs, weights)
    assert entropy["softmax_entropy"] == pytest.approx(np.log(4))
    assert entropy["top_k_entropy"] == pytest.approx(np.log(2))
    assert entropy["top_k_entropy_uniform"] == pytest.approx(np.log(2))
    assert entropy["mean_largest_weight"] == 0.5
    top = np.array([0, 0, 1, 1, 2, 2])
    assert top_category_mutual_information(weights, top)["mutual_information"] == pytest.approx(0)


def test_one_expert_per_top_category_identifies_it():
    top = np.array([3, 3, 7, 7, 9, 9, 9, 9])
    weights = np.eye(3)[[0, 0, 1, 1, 2, 2, 2, 2]]
    mi = top_category_mutual_information(weights, top)
    h_top = -(0.25 * np.log(0.25) * 2 + 0.5 * np.log(0.5))
    assert mi["mutual_information"] == pytest.approx(h_top)
    assert mi["normalised_mutual_information"] == pytest.approx(1.0)
    np.testing.assert_allclose(expert_usage(weights), [0.25, 0.25, 0.5])
    assert routing_entropy(weights, weights)["softmax_entropy"] == pytest.approx(0.0)


def test_silhouette_separates_groups_of_gate_vectors():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], 10)
    vectors = np.eye(3)[groups] + rng.normal(0, 0.01, (30, 3))
    assert category_silhouette(vectors, groups) > 0.9
    assert category_silhouette(rng.normal(size=(30, 3)), groups) < 0.2
    assert np.isnan(category_silhouette(vectors, np.zeros(30)))


def _data(spec, rows: int) -> TensorData:
    inputs = make_inputs(spec, rows, rows)
    return TensorData(
        inputs["request_cat"], inputs["item_cat"], inputs["numeric"], torch.zeros(rows, 1),
        np.arange(rows),
    )  # fmt: skip


@pytest.mark.parametrize("name", ["moe", "adv_hsc_moe", "mmoe_4"])
def test_diagnose_a_gated_model(spec, name):
    torch.manual_seed(0)
    counts = torch.arange(spec.request_categorical[0].cardinality) + 1
    model = CategoryMoE(spec, config_for(name, hidden=(8, 4)), counts)
    data = _data(spec, 50)
    routed = routing(model, data)
    assert routed["weights"].shape == (50, model.config.experts)
    np.testing.assert_allclose(routed["weights"].sum(1), 1.0, rtol=1e-5)
    report = diagnose(model, data, spec)
    assert sum(report["expert_usage"]) == pytest.approx(1.0, abs=1e-3)
    assert 0 <= report["normalised_mutual_information"] <= 1
    assert report["softmax_entropy"] <= report["softmax_entropy_uniform"] + 1e-6


def test_a_model_without_a_gate_has_no_diagnostics(spec):
    model = CategoryMoE(spec, config_for("dnn", hidden=(8, 4)))
    assert diagnose(model, _data(spec, 10), spec) == {}
