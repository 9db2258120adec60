"""The multi-scenario family of hmoe (Li et al. 2020): BaseDNN, IMMoE, HMoE and its variants.

Scenarios (countries, storefronts) share the feature and the label space. IMMoE (§3.2) is
MMoE with one gate and one tower per scenario over shared experts: S_j(x) = f_j(Σ_i G_ji(x)
E_i(x)). HMoE (§3.3) stacks a scenario gate W(x) (softmax over scenarios) on top: the
prediction for an example of scenario t is H_t(x) = Σ_j W_j(x) S_j(x) (eq. 6), trained end to
end with the task-constrained back-propagation of §3.4: S_j for j != t is stop-gradient (eq. 7),
so each scenario tower learns only from its own scenario's examples.

Each S_j predicts the conditional stages of the cascade (pCTR, pCVR = P(purchase | click));
the stacking mixes those probabilities, and the outputs are pCTR and pCTCVR = pCTR x pCVR
(eq. 3, trained on the entire impression space), ranked by pCTCVR: `score_task`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from contract.features import FeatureSpec
from training.models.experts import StackedExperts
from training.models.inputs import InputBlock
from training.models.multitask import TaskLinear, TaskTowers, probability_transfer_logits
from training.models.protocol import Ranker, RankerOutput

SCENARIO = "scenario"


@dataclass(frozen=True)
class HMoEConfig:
    tasks: tuple[str, ...] = ("click", "purchase")  # cascade order; ranked by the last
    experts: int = 5  # shared experts (§4.1: 5); 1: one shared bottom (BaseDNN, HDNN)
    hidden: tuple[int, ...] = (128,)  # an expert's layers: §4.1's one layer of 128
    tower_hidden: tuple[int, ...] = (64, 32)  # S_j: §4.1's 2-layer (64-32) network
    gate_hidden: int = 64  # both gating networks: one hidden layer of 64 (§4.1), then softmax
    embedding_dim: int = 16
    text_proj: int = 32
    category_match: bool = False  # item vector: item category == query category (if both)
    scenario_towers: bool = True  # one gate and tower per scenario (IMMoE); False: one for all
    stacked: bool = False  # the scenario gate W(x) of eq. 6 (HMoE)
    stop_gradient: bool = True  # eq. 7; False: NoStopGrad-HMoE
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.stacked and not self.scenario_towers:
            raise ValueError("invalid HMoEConfig: stacking needs scenario towers")
        if self.experts < 1 or len(self.hidden) < 1 or len(self.tasks) < 1:
            raise ValueError("invalid HMoEConfig: experts >= 1, hidden and tasks not empty")


# Every recipe reads whether the item is from the query's sub-category, the 2-sided input the
# Adv & HSC-MoE recipes and the logistic-regression baseline read (README, issue 12).
_IMMOE = HMoEConfig(category_match=True)
RECIPES: dict[str, HMoEConfig] = {
    "base_dnn": replace(_IMMOE, experts=1, scenario_towers=False),
    "immoe": _IMMOE,
    "hmoe": replace(_IMMOE, stacked=True),
    "hmoe_no_stopgrad": replace(_IMMOE, stacked=True, stop_gradient=False),
    "hdnn": replace(_IMMOE, experts=1, stacked=True),
}


class HMoE(Ranker):
    """inputs (see InputBlock) -> RankerOutput with logits [B, tasks]: logit pCTR, logit
    pCTCVR (probability transfer over the stacked conditional probabilities)."""

    request_level_gate = False  # the gates read the item: every expert runs

    def __init__(self, spec: FeatureSpec, config: HMoEConfig, category_counts=None):
        super().__init__()
        self.config = config
        names = [f.name for f in spec.request_categorical]
        self.scenario_column = names.index(SCENARIO) if SCENARIO in names else None
        self.scenarios = 1  # scenario towers: one per scenario value, OOV included
        if config.scenario_towers and self.scenario_column is not None:
            self.scenarios = spec.request_categorical[self.scenario_column].cardinality
        self.inputs = InputBlock(
            spec, config.embedding_dim, config.text_proj, config.category_match
        )
        dr, dx = self.inputs.request_dim, self.inputs.item_dim
        width = config.hidden[-1]
        self.experts = StackedExperts(config.experts, dr, dx, config.hidden, None)
        towers, tasks = self.scenarios, len(config.tasks)
        self.gates = None
        if config.experts > 1:  # G_j: one hidden layer per scenario gate, then softmax
            self.gates = nn.Sequential(
                TaskTowers(towers, dr + dx, (config.gate_hidden,), 0.0),
                TaskLinear(towers, config.gate_hidden, config.experts),
            )
        self.towers = TaskTowers(towers, width, config.tower_hidden, config.dropout)
        self.heads = TaskLinear(towers, config.tower_hidden[-1], tasks)
        self.scenario_gate = None
        if config.stacked:  # W(x): the same shape of gate over the scenario towers
            self.scenario_gate = nn.Sequential(
                nn.Linear(dr + dx, config.gate_hidden),
                nn.ReLU(),
                nn.Linear(config.gate_hidden, towers),
            )
        # The OOV scenario's tower (index 0) never sees a training example of its own, and
        # stop-gradient (eq. 7) keeps the others' from training it: W(x) never mixes it in.
        mask = torch.zeros(towers)
        if towers > 1:
            mask[0] = float("-inf")
        self.register_buffer("untrained_tower_mask", mask)

    @property
    def score_task(self) -> str:
        """pCTCVR, the last task: the paper ranks by it."""
        return self.config.tasks[-1]

    def scenario_weights(self, x: torch.Tensor) -> torch.Tensor:
        """W(x) [B, scenarios], rows summing to 1 (eq. 6), 0 on the OOV scenario's tower."""
        return torch.softmax(self.scenario_gate(x) + self.untrained_tower_mask, dim=1)

    def forward(self, inputs: dict[str, torch.Tensor], skip_experts: bool = False) -> RankerOutput:
        if skip_experts:
            raise ValueError("HMoE's gates read the item: it has no expert-skipping path")
        request_vec, item_vec = self.inputs(inputs)
        items = item_vec.shape[0]
        x = torch.cat([request_vec.expand(items, -1), item_vec], dim=1)  # R = 1 or B
        expert_out = torch.relu(self.experts(request_vec, item_vec))  # [B, N, h]
        towers = self.scenarios
        if self.gates is None:
            mixed = expert_out.expand(items, towers, -1)  # one bottom for every tower
        else:
            gate = torch.softmax(self.gates(x.unsqueeze(1).expand(items, towers, -1)), dim=2)
            mixed = torch.bmm(gate, expert_out)  # [B, scenarios, h]: M_j(x) per scenario gate
        conditional = torch.sigmoid(self.heads(self.towers(mixed)))  # S_j(x) [B, scenarios, T]
        scenario = self._scenario(inputs, items)
        if self.scenario_gate is None:  # IMMoE / BaseDNN: the example's own tower
            own = scenario if towers > 1 else torch.zeros_like(scenario)
            probs = conditional[torch.arange(items), own]
        else:
            if self.config.stop_gradient:  # eq. 7: only the example's own tower learns from it
                own = nn.functional.one_hot(scenario, towers).bool().unsqueeze(2)
                conditional = torch.where(own, conditional, conditional.detach())
            probs = (self.scenario_weights(x).unsqueeze(2) * conditional).sum(1)
        probs = probs.clamp(1e-7, 1 - 1e-7)
        return RankerOutput(probability_transfer_logits(torch.logit(probs)))

    def _scenario(self, inputs: dict[str, torch.Tensor], items: int) -> torch.Tensor:
        """[B] scenario index of each example (0, the OOV index, without a scenario field)."""
        if self.scenario_column is None:
            return torch.zeros(items, dtype=torch.long)
        return inputs["request_cat"][:, self.scenario_column].expand(items)
