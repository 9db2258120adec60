"""The multi-task family of mlpr (Wu et al. 2022): MLP_MTL, ESM², MMoE, PLE, AITM, MLPR.

One module composes the parts: the deep & wide input block (§3.1), one or two extraction
layers (§3.2), task towers (eq. 5), attention units (eq. 6), a single-layer output per task
(eq. 7), probability transfer (eq. 8) and uncertainty weighting (eq. 10). Each model of
Table 2 and each row of the Table 4 ablation chain is a recipe: the same config with parts
switched on or off. MLP_single is `mlp_single` trained once per task (one model per task).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from contract.features import FeatureSpec
from contract.schema import TASKS
from training.models.inputs import InputBlock
from training.models.multitask import (
    TaskAttention,
    TaskLinear,
    TaskTowers,
    expectation_calibration,
    probability_transfer_logits,
    uncertainty_weighted,
)
from training.models.multitask_experts import InputExpertLayer, TaskExpertLayer
from training.models.protocol import Ranker, RankerOutput

ITEM_GATE = ("query_category", "top_category", "scenario", "platform", "item")
QUERY_GATE = ("query_category", "top_category", "scenario", "platform", "query_text")
ATTENTION = ("none", "mlpr", "aitm")


@dataclass(frozen=True)
class MultiTaskConfig:
    tasks: tuple[str, ...] = TASKS  # cascade order: a later stage implies the earlier ones
    hidden: tuple[int, ...] = (512, 256, 128)  # first-layer expert MLP (§5.5.2); last = width
    embedding_dim: int = 16
    text_proj: int = 32  # learned projection of the encoder outputs; 0: the encoder's own dim
    experts: int = 1  # S shared experts of the first layer (1, no specific: shared bottom)
    specific_experts: int = 0  # P experts per task in the first layer (PLE's CGC)
    top_k: int = 1  # K experts each task's first-layer gate keeps; S + P: dense softmax (eq. 3)
    gate_inputs: tuple[str, ...] = ITEM_GATE  # without "item": request-level, skippable gates
    noisy_gate: bool = True  # Shazeer's noise, only when top_k < S + P
    balance_weight: float = 0.0  # Shazeer's importance + load terms for sparse gates
    stage2_shared: int = 0  # MLPR's second layer (§3.2.2): shared experts ...
    stage2_specific: int = 0  # ... and experts per task; both 0: no second layer
    tower_hidden: tuple[int, ...] = (64,)  # eq. 5
    dropout: float = 0.2  # §5.5.1
    attention: str = "none"  # "mlpr" (eq. 6), "aitm" (AITM's AIT unit) or "none"
    probability_transfer: bool = False  # eq. 8: ŷ^k = Π_{j<=k} p̂^j
    uncertainty: bool = False  # eq. 10 instead of the plain mean of the task losses
    calibration_weight: float = 0.0  # AITM's α on the behavioural expectation calibrator

    def __post_init__(self) -> None:
        checks = {
            "at least one task": len(self.tasks) >= 1,
            "hidden has >= 2 layers": len(self.hidden) >= 2,
            "experts + specific_experts >= 1": self.experts + self.specific_experts >= 1,
            "expert counts >= 0": min(self.experts, self.specific_experts) >= 0
            and min(self.stage2_shared, self.stage2_specific) >= 0,
            f"attention in {ATTENTION}": self.attention in ATTENTION,
            "0 <= dropout < 1": 0 <= self.dropout < 1,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid MultiTaskConfig: {', '.join(failed)}")


_MTL = MultiTaskConfig()
_UNCERTAINTY = replace(_MTL, uncertainty=True)
# The two-stage extraction of §3.2: MMoE over 8 experts, then 1 shared + 1 specific per task.
_TWO_STAGE = replace(_UNCERTAINTY, experts=8, top_k=8, stage2_shared=1, stage2_specific=1)
_ATTENTION = replace(_TWO_STAGE, attention="mlpr")
_MLPR = replace(_ATTENTION, probability_transfer=True)

RECIPES: dict[str, MultiTaskConfig] = {
    # Table 2 baselines
    "mlp_single": replace(_MTL, tasks=("click",)),  # trained once per task
    "mlp_mtl": _MTL,
    "esm2": replace(_MTL, probability_transfer=True),
    "mmoe": replace(_MTL, experts=8, top_k=8),
    "ple": replace(_MTL, experts=2, specific_experts=2, top_k=4),
    "aitm": replace(_MTL, attention="aitm", calibration_weight=0.6),
    "mlpr": _MLPR,
    # Table 4: the chain from mlp_mtl to mlpr, one part at a time
    "mtl_uncertainty": _UNCERTAINTY,
    "mtl_two_stage": _TWO_STAGE,
    "mtl_attention": _ATTENTION,
    # Query-level gates: every item of a request uses the same 2 experts per task (skippable).
    "mlpr_query_gate": replace(_MLPR, gate_inputs=QUERY_GATE, top_k=2, balance_weight=1e-2),
}


class MultiTaskRanker(Ranker):
    """inputs (see InputBlock) -> RankerOutput with logits [B, T] = logit(ŷ^k).

    `gating` is the first task's (click's) first-layer gate, with expert ids over all the
    first layer's experts; with query-level gates and skip_experts the layer runs the T*K
    experts the tasks' gates chose (the click gate's K are the ones reported).
    category_counts is accepted for the registry's common signature and not used.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        config: MultiTaskConfig,
        category_counts: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = config
        tasks, width = len(config.tasks), config.hidden[-1]
        self.inputs = InputBlock(spec, config.embedding_dim, config.text_proj)
        dims = (self.inputs.request_dim, self.inputs.item_dim)
        self.extraction = InputExpertLayer(spec, config, dims)
        self.second = None
        if config.stage2_shared + config.stage2_specific:
            self.second = TaskExpertLayer(config, width)
        self.dropout = nn.Dropout(config.dropout)
        self.towers = TaskTowers(tasks, width, config.tower_hidden, config.dropout)
        tower_dim = config.tower_hidden[-1] if config.tower_hidden else width
        self.attention = None
        if config.attention != "none":
            self.attention = TaskAttention(tasks, tower_dim, aitm=config.attention == "aitm")
        self.heads = TaskLinear(tasks, tower_dim, 1)  # eq. 7
        self.log_variance = nn.Parameter(torch.zeros(tasks)) if config.uncertainty else None

    @property
    def request_level_gate(self) -> bool:
        """True when every item of a request gets the same experts (export can skip)."""
        return self.extraction.request_level

    def combine_task_losses(self, task_losses: torch.Tensor) -> torch.Tensor:
        """task_losses [T] -> the training objective (the trainer's hook): eq. 10 with
        uncertainty weighting, else their mean."""
        if self.log_variance is None:
            return task_losses.mean()
        return uncertainty_weighted(task_losses, self.log_variance)

    def forward(self, inputs: dict[str, torch.Tensor], skip_experts: bool = False) -> RankerOutput:
        request_vec, item_vec = self.inputs(inputs)
        vectors, gatings = self.extraction(inputs, request_vec, item_vec, skip_experts)
        if self.second is not None:
            vectors = self.second(vectors)
        towers = self.towers(self.dropout(vectors))
        if self.attention is not None:
            towers = self.attention(towers)
        logits = self.heads(towers)[:, :, 0]
        if self.config.probability_transfer:
            logits = probability_transfer_logits(logits)
        return RankerOutput(
            logits, gatings[0] if gatings else None, self._penalties(logits, gatings)
        )

    def _penalties(self, logits, gatings) -> dict[str, torch.Tensor]:
        config, penalties = self.config, {}
        if not self.training:
            return penalties
        if config.balance_weight and gatings:
            penalties["balance"] = config.balance_weight * sum(g.balance for g in gatings)
        if config.calibration_weight and logits.shape[1] > 1:
            calibration = expectation_calibration(torch.sigmoid(logits))
            penalties["calibration"] = config.calibration_weight * calibration
        return penalties
