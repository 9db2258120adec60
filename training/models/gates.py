"""Gates: what they read, noisy top-K gating (Shazeer et al. 2017), category-bucket gates (MMoE)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from contract.features import REQUEST_CATEGORICAL, FeatureSpec
from training.models.inputs import CategoricalEmbeddings

# The request-level categorical fields, and the query text through its embedding.
REQUEST_GATE_INPUTS = (*REQUEST_CATEGORICAL, "query_text")
GATE_INPUTS = (*REQUEST_GATE_INPUTS, "item")  # "item": the item vector, so per-item gating


class GateFeatures(nn.Module):
    """The vector a gate reads: embeddings of the chosen request-level fields.

    By default the gate owns its embedding tables, so gate-only regularisers (HSC, eq. 15-16)
    never move the experts' inputs; given `shared` (the model's request embeddings, one table
    per field of spec.request_categorical) it reads those tables instead, as adv-hsc-moe's
    gate reads x^sc, "a part of all input vector defined in (2)" (§4.3.1). `query_text` adds
    a projection of the query embedding; `item` adds the shared item vector, which makes the
    gate item-level (exported dense).
    forward(inputs, item_vec [B, dx]) -> [R, d] (request-level) or [B, d] (with `item`).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        inputs: tuple[str, ...],
        item_dim: int,
        dim: int = 16,
        shared: CategoricalEmbeddings | None = None,
    ):
        super().__init__()
        unknown = set(inputs) - set(GATE_INPUTS)
        if unknown or not inputs:
            raise ValueError(f"gate inputs must be a non-empty subset of {GATE_INPUTS}: {inputs}")
        self.fields = [spec.request_field(n) for n in inputs if n in REQUEST_CATEGORICAL]
        cards = [spec.request_categorical[i].cardinality for i in self.fields]
        self.embeddings = CategoricalEmbeddings(cards, dim)
        if shared is not None:
            self.embeddings.tables = nn.ModuleList(shared.tables[i] for i in self.fields)
        self.use_query_text = "query_text" in inputs
        if self.use_query_text and not spec.text_dim:
            raise ValueError("gate input 'query_text' needs a model with text embeddings")
        self.query_proj = nn.Linear(spec.text_dim, dim) if self.use_query_text else None
        self.item_level = "item" in inputs
        self.out_dim = self.embeddings.out_dim + dim * self.use_query_text
        self.out_dim += item_dim * self.item_level

    def forward(self, inputs: dict[str, torch.Tensor], item_vec: torch.Tensor) -> torch.Tensor:
        parts = [self.embeddings(inputs["request_cat"][:, self.fields])]
        if self.query_proj is not None:
            parts.append(self.query_proj(inputs["query_emb"]))
        gate_in = torch.cat(parts, dim=1)
        if self.item_level:
            gate_in = torch.cat([gate_in.expand(item_vec.shape[0], -1), item_vec], dim=1)
        return gate_in


@dataclass
class Gating:
    """What a gate decided. weights [G, N] (zero outside the chosen experts), top_index
    [G, K], clean_logits [G, N] (G = R or B), balance: the load-balancing term (scalar),
    logits [G, N]: the logits the top-K was taken from (noisy in training; None = clean)."""

    weights: torch.Tensor
    top_index: torch.Tensor
    clean_logits: torch.Tensor
    balance: torch.Tensor
    logits: torch.Tensor | None = None

    @property
    def routing_logits(self) -> torch.Tensor:
        return self.clean_logits if self.logits is None else self.logits


def coefficient_of_variation_sq(x: torch.Tensor) -> torch.Tensor:
    """CV² of a [N] vector (Shazeer eq. 6-7); 0 when there is a single value."""
    if x.numel() < 2:
        return x.new_zeros(())
    return x.float().var() / (x.float().mean() ** 2 + 1e-10)


class NoisyTopKGate(nn.Module):
    """Noisy top-K gating (adv-hsc-moe eq. 5-7 after Shazeer et al.).

    Training adds N(0, 1)·softplus(x·W_noise) to the logits x·W_gate, keeps the top K and
    softmaxes them; inference is deterministic. forward(x [G, d]) -> Gating.
    init_std: 0 starts W_gate at zero (Shazeer: every expert equally likely, so the noise
    alone decides the first routings); > 0 draws it N(0, init_std), so each input starts
    with its own preferred experts.
    """

    def __init__(
        self, in_dim: int, experts: int, top_k: int, noisy: bool = True, init_std: float = 0.0
    ):
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"need 1 <= top_k <= experts, got top_k={top_k}, experts={experts}")
        self.top_k, self.experts = top_k, experts
        self.gate = nn.Linear(in_dim, experts, bias=False)
        self.noise = nn.Linear(in_dim, experts, bias=False) if noisy else None
        nn.init.normal_(self.gate.weight, std=init_std) if init_std else nn.init.zeros_(
            self.gate.weight
        )
        if self.noise is not None:
            nn.init.zeros_(self.noise.weight)

    def forward(self, x: torch.Tensor) -> Gating:
        clean = self.gate(x)
        noisy_training = self.training and self.noise is not None and self.top_k < self.experts
        if noisy_training:
            noise_std = F.softplus(self.noise(x)) + 1e-2
            logits = clean + torch.randn_like(clean) * noise_std
        else:
            logits = clean
        kept = min(self.top_k + 1, self.experts)
        top_logits, top_index = logits.topk(kept, dim=1)
        top_weights = torch.softmax(top_logits[:, : self.top_k], dim=1)
        top_index = top_index[:, : self.top_k]
        weights = torch.zeros_like(logits).scatter(1, top_index, top_weights)
        if noisy_training:
            load = _prob_in_top_k(clean, logits, noise_std, top_logits, self.top_k).sum(0)
        else:
            load = (weights > 0).float().sum(0)
        balance = coefficient_of_variation_sq(weights.sum(0)) + coefficient_of_variation_sq(load)
        return Gating(weights, top_index, clean, balance, logits)


def _prob_in_top_k(clean, noisy, noise_std, top_logits, k):
    """Smooth estimate of P(expert in top K) under re-sampled noise (Shazeer eq. 8-10)."""
    normal = torch.distributions.Normal(0.0, 1.0)
    threshold_if_in = top_logits[:, k : k + 1]  # the (K+1)-th value: the bar to stay in
    threshold_if_out = top_logits[:, k - 1 : k]  # the K-th value: the bar to get in
    is_in = noisy > threshold_if_in
    prob_if_in = normal.cdf((clean - threshold_if_in) / noise_std)
    prob_if_out = normal.cdf((clean - threshold_if_out) / noise_std)
    return torch.where(is_in, prob_if_in, prob_if_out)


class CategoryBucketGate(nn.Module):
    """MMoE with category buckets as tasks (adv-hsc-moe §5.1.4): one softmax gate per bucket.

    bucket_of [cardinality] maps a query-category index to its bucket. forward(x [G, d],
    category [G]) -> Gating with dense weights over all N experts.
    """

    def __init__(self, in_dim: int, experts: int, bucket_of: torch.Tensor):
        super().__init__()
        buckets = int(bucket_of.max()) + 1
        self.register_buffer("bucket_of", bucket_of.long())
        self.gates = nn.Parameter(torch.zeros(buckets, in_dim, experts))

    def forward(self, x: torch.Tensor, category: torch.Tensor) -> Gating:
        gate = self.gates.index_select(0, self.bucket_of.index_select(0, category))
        clean = torch.einsum("gd,gdn->gn", x, gate)
        weights = torch.softmax(clean, dim=1)
        index = torch.arange(weights.shape[1], device=x.device).expand_as(weights)
        return Gating(weights, index, clean, x.new_zeros(()))


def category_buckets(counts: torch.Tensor, buckets: int) -> torch.Tensor:
    """Assign categories to `buckets` groups of roughly equal example counts.

    counts [cardinality] -> bucket id per category: categories sorted by count, cut where
    the cumulative count crosses each 1/buckets quantile.
    """
    order = torch.argsort(counts, descending=True, stable=True)
    cumulative = torch.cumsum(counts[order].double(), 0) / counts.sum().clamp(min=1)
    sorted_bucket = torch.clamp((cumulative * buckets - 1e-9).floor().long(), 0, buckets - 1)
    bucket_of = torch.empty_like(order)
    bucket_of[order] = sorted_bucket
    return bucket_of
