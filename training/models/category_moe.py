"""The category-gated MoE family of adv-hsc-moe: DNN, MoE, Adv-MoE, HSC-MoE, Adv & HSC-MoE, MMoE.

One module composes the parts (input block, stacked experts, a gate, regularisers); each
model of Table 2 is a recipe: the same config with a part switched on or off.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from contract.features import FeatureSpec
from training.models.experts import StackedExperts
from training.models.gates import (
    CategoryBucketGate,
    GateFeatures,
    Gating,
    NoisyTopKGate,
    category_buckets,
)
from training.models.inputs import InputBlock
from training.models.losses import (
    adversarial_loss,
    hierarchical_soft_constraint,
    sample_disagreeing,
)
from training.models.protocol import Ranker, RankerOutput
from training.models.request_batch import per_item, per_request


@dataclass(frozen=True)
class CategoryMoEConfig:
    experts: int = 10  # N
    top_k: int = 4  # K
    hidden: tuple[int, ...] = (512, 256)  # one expert tower: 512 x 256 x 1 (§5.1.4)
    linear_experts: bool = False  # each expert adds a linear map of its input (wide & deep;
    # tried for issue 12, did not help at the full-quick budget: README)
    category_match: bool = False  # item vector: item category == query category (if both)
    unread_item_fields: tuple[str, ...] = ()  # item fields not embedded (InputBlock)
    embedding_dim: int = 16
    text_proj: int = 32  # 0: feed the encoder's full dimension
    gate_inputs: tuple[str, ...] = ("query_category",)  # Table 5: the sub-category alone
    noisy_gate: bool = True
    gate_init_std: float = 0.0  # 0: W^I starts at zero (Shazeer); > 0: N(0, std)
    gate_lr_scale: float = 1.0  # the gates' learning rate = lr * gate_lr_scale
    shared_gate_embedding: bool = False  # gates read the experts' embeddings (§4.3.1's x^sc)
    balance_weight: float = 1e-2  # Shazeer's importance + load terms (not in eq. 14)
    hsc_weight: float = 0.0  # λ1 in eq. 14
    adversarial_weight: float = 0.0  # λ2 in eq. 14
    disagreeing: int = 1  # D
    category_buckets: int = 0  # > 0: MMoE, one gate per bucket of categories (§5.1.4)
    tasks: tuple[str, ...] = ("click",)


# Every Table 2 model reads the 2-sided category-match input, as the logistic-regression
# baseline does (issue 12: the networks learn that cross of two embeddings poorly; README).
_TABLE2 = CategoryMoEConfig(category_match=True, balance_weight=0.0)
# The noisy top-K models follow eq. 5-14: the gate reads the experts' own sub-category
# embedding x^sc (§4.3.1) and the objective has no load-balancing term (eq. 14).
_NOISY = replace(_TABLE2, shared_gate_embedding=True)
RECIPES: dict[str, CategoryMoEConfig] = {
    "dnn": replace(_TABLE2, experts=1, top_k=1),
    "moe": _NOISY,
    "adv_moe": replace(_NOISY, adversarial_weight=1e-3),
    "hsc_moe": replace(_NOISY, hsc_weight=1e-3),
    "adv_hsc_moe": replace(_NOISY, hsc_weight=1e-3, adversarial_weight=1e-3),
    # Table 5's gate-input question asked of this log (issue 12): the gate G^I reads the
    # top-category, the grouping the per-top-category regression fits, not the sub-category.
    "moe_top_gate": replace(_NOISY, gate_inputs=("top_category",)),
    "adv_hsc_moe_top_gate": replace(
        _NOISY, hsc_weight=1e-3, adversarial_weight=1e-3, gate_inputs=("top_category",)
    ),
    "mmoe_4": replace(_TABLE2, experts=4, top_k=4, category_buckets=10),
    "mmoe_10": replace(_TABLE2, experts=10, top_k=10, category_buckets=10),
}


class CategoryMoE(Ranker):
    """inputs (see InputBlock) -> RankerOutput. category_counts [cardinality of the query
    category] (training examples per category) is needed only for MMoE buckets."""

    def __init__(
        self,
        spec: FeatureSpec,
        config: CategoryMoEConfig,
        category_counts: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = config
        self.inputs = InputBlock(
            spec,
            config.embedding_dim,
            config.text_proj,
            config.category_match,
            config.unread_item_fields,
        )
        dr, dx = self.inputs.request_dim, self.inputs.item_dim
        self.experts = StackedExperts(
            config.experts, dr, dx, config.hidden, len(config.tasks), config.linear_experts
        )
        self.gate_features = self.gate = self.constraint = None
        shared = self.inputs.request_embeddings if config.shared_gate_embedding else None
        if config.experts > 1:
            self.gate_features = GateFeatures(
                spec, config.gate_inputs, dx, config.embedding_dim, shared
            )
            if config.category_buckets:
                if category_counts is None:
                    raise ValueError("MMoE buckets need category_counts")
                buckets = category_buckets(category_counts, config.category_buckets)
                self.gate = CategoryBucketGate(self.gate_features.out_dim, config.experts, buckets)
                self.category_field = spec.request_field("query_category")
            else:
                self.gate = self._noisy_gate(self.gate_features.out_dim)
        if config.hsc_weight:
            # The constraint gate G^C reads the top-category (eq. 10) and is "identical in
            # structure" to the inference gate (§4.3): a noisy top-K gate of its own.
            self.constraint_features = GateFeatures(
                spec, ("top_category",), dx, config.embedding_dim, shared
            )
            self.constraint = self._noisy_gate(self.constraint_features.out_dim)

    def _noisy_gate(self, in_dim: int) -> NoisyTopKGate:
        config = self.config
        return NoisyTopKGate(
            in_dim, config.experts, config.top_k, config.noisy_gate, config.gate_init_std
        )

    def parameter_groups(self, lr: float) -> list[dict]:
        """AdamW groups: the gates' own weights at lr * gate_lr_scale, the rest at lr."""
        gates = [m for m in (self.gate, self.constraint) if m is not None]
        gate_ids = {id(p) for m in gates for p in m.parameters()}
        rest = [p for p in self.parameters() if id(p) not in gate_ids]
        gate_params = [p for p in self.parameters() if id(p) in gate_ids]
        groups = [{"params": rest, "lr": lr}]
        if gate_params:
            groups.append({"params": gate_params, "lr": lr * self.config.gate_lr_scale})
        return groups

    @property
    def request_level_gate(self) -> bool:
        """True when every item of a request gets the same experts (export can skip)."""
        return self.gate is not None and not self.gate_features.item_level

    @property
    def batches_requests(self) -> bool:
        """Per-request top-K experts for several requests at once (_forward_requests)."""
        return self.request_level_gate and isinstance(self.gate, NoisyTopKGate)

    def route(self, inputs: dict[str, torch.Tensor], item_vec: torch.Tensor) -> Gating | None:
        if self.gate is None:
            return None
        gate_in = self.gate_features(inputs, item_vec)
        if isinstance(self.gate, CategoryBucketGate):
            category = inputs["request_cat"][:, self.category_field]
            if self.gate_features.item_level:
                category = category.expand(item_vec.shape[0])
            return self.gate(gate_in, category)
        return self.gate(gate_in)

    def forward(self, inputs: dict[str, torch.Tensor], skip_experts: bool = False) -> RankerOutput:
        """skip_experts: with one request (R = 1) and a request-level gate, run only the
        K chosen experts instead of all N (the serving path; same result); with
        item_request and request_items (R requests at once), each request's own K."""
        request_vec, item_vec = self.inputs(inputs)
        gating = self.route(inputs, item_vec)
        if gating is None:
            logits = self.experts(request_vec, item_vec)[:, 0]
            return RankerOutput(logits)
        if skip_experts and "request_items" in inputs:
            return self._forward_requests(inputs, request_vec, item_vec, gating)
        if skip_experts:
            if not self.request_level_gate or gating.weights.shape[0] != 1:
                raise ValueError("expert skipping needs one request and a request-level gate")
            index = gating.top_index[0]
            chosen = self.experts(request_vec, item_vec, index)  # [B, K, T]
            logits = (chosen * gating.weights[0, index][None, :, None]).sum(1)
            return RankerOutput(logits, gating)
        expert_logits = self.experts(request_vec, item_vec)  # [B, N, T]
        logits = (expert_logits * gating.weights[:, :, None]).sum(1)  # eq. 4/8: logits mix
        return RankerOutput(
            logits, gating, self._penalties(inputs, item_vec, gating, expert_logits)
        )

    def _forward_requests(self, inputs, request_vec, item_vec, gating) -> RankerOutput:
        """Several requests at once (training.models.request_batch: item_request [B],
        request_items [R, L]), each item scored by its own request's K chosen experts."""
        if not self.request_level_gate:
            raise ValueError("per-request experts need a request-level gate")
        index, request_items = gating.top_index, inputs["request_items"]  # [R, K], [R, L]
        chosen = self.experts.forward_requests(
            request_vec, per_request(item_vec, request_items), index
        )  # [R, K, L, T]
        weights = gating.weights.gather(1, index)[:, :, None, None]
        logits = per_item((chosen * weights).sum(1), inputs["item_request"], request_items)
        return RankerOutput(logits, gating)

    def _penalties(self, inputs, item_vec, gating, expert_logits) -> dict[str, torch.Tensor]:
        config, penalties = self.config, {}
        if not self.training:
            return penalties
        if config.balance_weight:
            penalties["balance"] = config.balance_weight * gating.balance
        top_index = gating.clean_logits.topk(config.top_k, dim=1).indices
        if config.hsc_weight:
            constraint = self.constraint(self.constraint_features(inputs, item_vec))
            hsc = hierarchical_soft_constraint(
                gating.routing_logits, constraint.routing_logits, top_index
            )
            penalties["hsc"] = config.hsc_weight * hsc
        if config.adversarial_weight and config.disagreeing and config.top_k < config.experts:
            per_item = gating.top_index.expand(expert_logits.shape[0], -1)
            disagreeing = sample_disagreeing(per_item, config.experts, config.disagreeing)
            adv = sum(
                adversarial_loss(expert_logits[:, :, t], per_item, disagreeing)
                for t in range(expert_logits.shape[2])
            )
            penalties["adversarial"] = -config.adversarial_weight * adv
        return penalties
