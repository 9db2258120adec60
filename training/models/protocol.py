"""The ranker protocol: what a model family writes so that the one trainer trains it, the
checkpoint saves it and the exporter turns it into a served bundle.

To add a family, read this file and one existing family (category_moe.py is the shortest
gated one, hmoe.py a multi-task one), then write:

1. A frozen `@dataclass` config with at least `tasks: tuple[str, ...]` (the labels it
   predicts, in the dataset's order: "click", "atc", "purchase"); gated families also have
   `top_k` and `gate_inputs` (contract.features names, see gates.GATE_INPUTS). Named configs
   ("recipes") go in a `RECIPES` dict.
2. A subclass of `Ranker` whose constructor is `(spec: FeatureSpec, config, category_counts:
   torch.Tensor | None = None)` and which sets `self.config` and `self.inputs` (an
   `inputs.InputBlock`, which embeds the inputs below).
3. `forward(inputs, skip_experts=False) -> RankerOutput`, and the hooks below you need.
4. One line in registry.FAMILIES; one recipe in tests/test_export.py's parity sweep comes
   for free (it exports every distinct recipe).

Inputs (a dict of tensors; R = B in training, one row per impression, and R = 1 when
serving one request of B items; the serving graph feeds exactly these):
    request_cat [R, r] int64   vocabulary indices of spec.request_categorical (0 = OOV)
    item_cat    [B, c] int64   vocabulary indices of spec.item_categorical (0 = OOV)
    numeric     [B, f] float32 raw values of spec.numeric (normalise inside the model)
    query_emb   [R, D] float32 only when spec.text_dim: the query's text embedding
    item_emb    [B, D] float32 only when spec.text_dim: the items' title embeddings

Hooks, with the defaults a family gets without writing them:
    request_level_gate: bool    True when every item of a request gets the same experts;
                                export may then run only the K chosen ones (skip_experts).
    batches_requests: bool      True when skip_experts also takes R requests at once (inputs
                                item_request [B], request_items [R, L], see request_batch.py),
                                each with its own K experts: export adds the batched graph.
    combine_task_losses(t [T])  the objective from per-task BCE; default their mean.
    parameter_groups(lr)        AdamW parameter groups; default one group, all parameters.
    score_task: str             the task the service ranks by; default the first task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from training.models.gates import Gating

Inputs = dict[str, torch.Tensor]


@dataclass
class RankerOutput:
    """logits [B, T] per task; gating: the inference gate's decision (None without a gate;
    export reports its top experts); penalties: weighted regularisers the trainer adds to
    the task loss (signs included; empty in eval mode); example_weights [B] (summing to 1)
    weigh each example's loss (None: the plain mean)."""

    logits: torch.Tensor
    gating: Gating | None = None
    penalties: dict[str, torch.Tensor] = field(default_factory=dict)
    example_weights: torch.Tensor | None = None


class Ranker(nn.Module):
    """The base of every model family: the hooks' defaults (see the module docstring)."""

    config: object  # the family's frozen config dataclass, with `tasks`
    inputs: nn.Module  # an InputBlock: `has_text`, `request_dim`, `item_dim`
    request_level_gate: bool = False
    batches_requests: bool = False

    def forward(self, inputs: Inputs, skip_experts: bool = False) -> RankerOutput:
        """skip_experts: with R = 1 and a request-level gate, run only the chosen experts
        (the serving path; the same result). A family without that path raises ValueError."""
        raise NotImplementedError

    def combine_task_losses(self, task_losses: torch.Tensor) -> torch.Tensor:
        """task_losses [T] (mean BCE per task) -> the scalar training objective."""
        return task_losses.mean()

    def parameter_groups(self, lr: float) -> list[dict]:
        """AdamW's parameter groups (a group may set its own "lr")."""
        return [{"params": list(self.parameters())}]

    @property
    def score_task(self) -> str:
        """The task whose probability the service ranks by."""
        return self.config.tasks[0]
