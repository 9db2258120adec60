"""The ranker protocol (training/models/protocol.py): every family implements it, and a
family written from its docstring alone gets the hooks' defaults, trains through the
trainer's objective and runs in the serving graph."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from conftest import make_inputs, make_spec
from torch import nn

from export.serving_graph import ServingGraph, example_inputs
from training.models.inputs import InputBlock
from training.models.protocol import Ranker, RankerOutput
from training.models.registry import FAMILIES
from training.trainer import task_objective


@dataclass(frozen=True)
class LinearConfig:
    tasks: tuple[str, ...] = ("click", "purchase")


class LinearRanker(Ranker):
    """The smallest family: one linear layer over the input block."""

    def __init__(self, spec, config: LinearConfig, category_counts=None):
        super().__init__()
        self.config = config
        self.inputs = InputBlock(spec, embedding_dim=4, text_proj=0)
        width = self.inputs.request_dim + self.inputs.item_dim
        self.head = nn.Linear(width, len(config.tasks))

    def forward(self, inputs, skip_experts: bool = False) -> RankerOutput:
        if skip_experts:
            raise ValueError("no experts to skip")
        request_vec, item_vec = self.inputs(inputs)
        rows = torch.cat([request_vec.expand(item_vec.shape[0], -1), item_vec], dim=1)
        return RankerOutput(self.head(rows))


def test_every_registered_family_is_a_ranker():
    assert all(issubclass(model_cls, Ranker) for model_cls, _, _ in FAMILIES.values())


def test_a_family_written_from_the_protocol_trains_and_serves():
    spec = make_spec()
    model = LinearRanker(spec, LinearConfig())
    assert model.score_task == "click" and model.request_level_gate is False
    (group,) = model.parameter_groups(1e-3)
    assert len(group["params"]) == len(list(model.parameters()))

    inputs = make_inputs(spec, 16, 16)
    labels = torch.randint(0, 2, (16, 2)).float()
    objective, per_task = task_objective(model, model(inputs).logits, labels)
    assert objective.item() == pytest.approx(per_task.mean().item())

    graph = ServingGraph(model.eval(), skip_experts=False)
    scores, index, weight = graph(*example_inputs(model, spec, 5))
    assert scores.shape == (5, 2) and index.tolist() == [0] and weight.tolist() == [1.0]
