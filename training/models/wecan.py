"""The cross-domain family of we-can (Qiu et al. 2019): Deep & Cross, the shared-private model,
CAN (domain attention) and WE-CAN (CAN + Wasserstein regularisers).

Domains are platforms (general, high-end, budget) sharing one feature space. Every feature
field gets an embedding e^j (categorical: a table; numeric: its z-score times a learned
vector; text: the projected query and product vectors, their product and cosine); a
domain's attention unit weighs each field, g^j = σ(MLP_d(e^j)) e^j (eq. 1), so high-end and
budget platforms can weigh brand and price differently. A shared network and one private
network per domain (each a Deep & Cross over the gated fields, §2.1.2) feed the domain's
output ŷ^d = σ(W^dc O^c + W^d O^d + b^d) (eq. 2).

The Wasserstein regularisers (§2.3) use a critic f_w (spectral-normalised, so 1-Lipschitz):
D_c = E_src f_w(O^c) - E_tgt f_w(O^c) (shared features of the source, the batch's largest
domain, against each other domain's) and D_d = E_d f_w(O^c) - E_d f_w(O^d) per domain. The
critic maximises D_c - Σ D_d while the generators minimise it (eq. 6-7): one backward pass
through a gradient-reversal layer, with the penalty -λ (D_c - Σ_d D_d).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from contract.features import FeatureSpec
from training.models.inputs import category_match, category_match_lookup, has_category_fields
from training.models.multitask import TaskLinear
from training.models.protocol import Ranker, RankerOutput

DOMAIN = "platform"


@dataclass(frozen=True)
class WeCanConfig:
    tasks: tuple[str, ...] = ("click",)
    embedding_dim: int = 16  # every field's embedding (the paper's 64)
    attention_hidden: int = 16  # a domain's attention unit: dim -> 16 -> 1 (the paper's 64x32x1)
    hidden: tuple[int, ...] = (128, 64)  # the deep part (the paper's 512 x 256)
    cross_layers: int = 2
    domain_attention: bool = True  # CAN's attention layer (eq. 1); False: plain embeddings
    private: bool = True  # shared + per-domain private networks (eq. 2); False: shared only
    wasserstein_weight: float = 0.0  # λ of eq. 6; 0: no critic
    critic_hidden: int = 32
    # A field of its own: whether the item is from the query's sub-category (the 2-sided input
    # the Adv & HSC-MoE recipes and the logistic-regression baseline read; README, issue 12).
    category_match: bool = False
    # eq. 3: each domain's loss is its own mean (1/n_d), so a small platform weighs as much
    # as a large one; False: one mean over the batch (the small platform weighs its share).
    domain_balanced_loss: bool = True

    def __post_init__(self) -> None:
        if self.wasserstein_weight and not self.private:
            raise ValueError("invalid WeCanConfig: the regularisers need private networks")
        if self.cross_layers < 0 or not self.hidden:
            raise ValueError("invalid WeCanConfig: cross_layers >= 0 and a deep part")


_CAN = WeCanConfig(category_match=True)
RECIPES: dict[str, WeCanConfig] = {
    "deep_cross": replace(_CAN, domain_attention=False, private=False),
    "shared_private": replace(_CAN, domain_attention=False),
    "can": _CAN,
    # λ = 0.1 cost 0.015 AUC on the small log; 0.01 matched CAN there.
    "we_can": replace(_CAN, wasserstein_weight=0.01),
}


def domain_balanced_weights(domain: torch.Tensor) -> torch.Tensor:
    """[B] weights 1 / (n_d · D) for an example of domain d (n_d of its domain in the batch,
    D domains present): a weighted sum of losses is then the mean over domains of each
    domain's mean loss (we-can eq. 3, up to its constant 1/2)."""
    counts = torch.bincount(domain)
    present = (counts > 0).sum()
    return 1.0 / (counts[domain].float() * present.float())


class FieldEmbeddings(nn.Module):
    """inputs -> (request fields [R, nr, dim], item fields [B, ni, dim]); names in `fields`.
    With category_match (and both category fields in the spec), an item field holds a learned
    vector times whether the item is from the query's sub-category."""

    def __init__(self, spec: FeatureSpec, dim: int, category_match: bool = False):
        super().__init__()
        self.request = nn.ModuleList(
            nn.Embedding(f.cardinality, dim) for f in spec.request_categorical
        )
        self.item = nn.ModuleList(nn.Embedding(f.cardinality, dim) for f in spec.item_categorical)
        self.numeric = nn.Parameter(torch.randn(len(spec.numeric), dim) * 0.1)
        self.register_buffer("mean", torch.tensor([f.mean for f in spec.numeric]))
        self.register_buffer("std", torch.tensor([f.std for f in spec.numeric]))
        self.has_text = spec.text_dim > 0
        text = ["query_text"] if self.has_text else []
        self.fields = [f.name for f in spec.request_categorical] + text + [
            f.name for f in spec.item_categorical] + [f.name for f in spec.numeric] + (
            ["item_text", "query_x_item", "cosine"] if self.has_text else [])  # fmt: skip
        self.request_fields = len(spec.request_categorical) + len(text)
        if self.has_text:
            self.query_proj = nn.Linear(spec.text_dim, dim)
            self.item_proj = nn.Linear(spec.text_dim, dim)
            self.cosine = nn.Parameter(torch.randn(dim) * 0.1)
        self.match_fields = None
        if category_match and has_category_fields(spec):
            self.match_fields, item_to_query = category_match_lookup(spec)
            self.register_buffer("item_to_query", item_to_query)
            self.match = nn.Parameter(torch.randn(dim) * 0.1)
            self.fields.append("category_match")

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        request_cat, item_cat = inputs["request_cat"], inputs["item_cat"]
        request = [table(request_cat[:, j]) for j, table in enumerate(self.request)]
        item = [table(item_cat[:, j]) for j, table in enumerate(self.item)]
        numeric = (inputs["numeric"] - self.mean) / self.std
        item += list((numeric.unsqueeze(2) * self.numeric).unbind(1))
        if self.has_text:
            query = self.query_proj(inputs["query_emb"])
            product = self.item_proj(inputs["item_emb"])
            cosine = (inputs["query_emb"] * inputs["item_emb"]).sum(1, keepdim=True)
            request.append(query)
            item += [product, query * product, cosine * self.cosine]
        if self.match_fields is not None:
            match = category_match(inputs, self.match_fields, self.item_to_query)
            item.append(match[:, None] * self.match)
        return torch.stack(request, 1), torch.stack(item, 1)


class DeepCross(nn.Module):
    """Deep & Cross (Wang et al. 2017): x_{l+1} = x_0 (x_l · w_l) + b_l + x_l beside an MLP;
    [B, d] -> [B, d + deep[-1]]."""

    def __init__(self, in_dim: int, deep: tuple[int, ...], cross_layers: int):
        super().__init__()
        self.cross_w = nn.Parameter(torch.randn(cross_layers, in_dim) / in_dim**0.5)
        self.cross_b = nn.Parameter(torch.zeros(cross_layers, in_dim))
        sizes = (in_dim, *deep)
        self.deep = nn.Sequential(
            *(m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU()))
        )
        self.out_dim = in_dim + deep[-1]

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.cross_w, self.cross_b):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return torch.cat([x, self.deep(x0)], dim=1)


class GradientReversal(torch.autograd.Function):
    """Identity forward, negated gradient backward: the critic's ascent is the generators'
    descent, in one backward pass."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class WeCan(Ranker):
    """inputs -> RankerOutput(logits [B, tasks], penalties {"wasserstein"} while training)."""

    request_level_gate = False

    def __init__(self, spec: FeatureSpec, config: WeCanConfig, category_counts=None):
        super().__init__()
        self.config = config
        names = [f.name for f in spec.request_categorical]
        self.domain_column = names.index(DOMAIN) if DOMAIN in names else None
        self.domains = 1  # one attention unit, private network and head per domain value
        if self.domain_column is not None:
            self.domains = spec.request_categorical[self.domain_column].cardinality
        self.inputs = FieldEmbeddings(spec, config.embedding_dim, config.category_match)
        fields, dim = len(self.inputs.fields), config.embedding_dim
        if config.domain_attention:  # per domain: dim -> hidden -> 1 on every field (eq. 1)
            self.attention_in = TaskLinear(self.domains, dim, config.attention_hidden)
            self.attention_out = TaskLinear(self.domains, config.attention_hidden, 1)
        networks = 1 + (self.domains if config.private else 0)
        self.networks = nn.ModuleList(
            DeepCross(fields * dim, config.hidden, config.cross_layers) for _ in range(networks)
        )
        width, tasks = self.networks[0].out_dim, len(config.tasks)
        self.shared_head = TaskLinear(self.domains, width, tasks, bias=False)  # W^dc
        self.private_head = (
            TaskLinear(self.domains, width, tasks, bias=False) if config.private else None
        )
        self.bias = nn.Parameter(torch.zeros(self.domains, tasks))  # b^d
        self.critic = None
        if config.wasserstein_weight:
            self.critic = nn.Sequential(
                spectral_norm(nn.Linear(width, config.critic_hidden)),
                nn.ReLU(),
                spectral_norm(nn.Linear(config.critic_hidden, 1)),
            )

    def domain(self, inputs: dict[str, torch.Tensor], items: int) -> torch.Tensor:
        if self.domain_column is None:
            return torch.zeros(items, dtype=torch.long)
        return inputs["request_cat"][:, self.domain_column].expand(items)

    def field_weights(self, fields: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """a^j [B, fields] of each example's domain (eq. 1)."""
        b, n, _ = fields.shape
        per_domain = self.attention_in.weight[domain], self.attention_in.bias[domain]
        hidden = torch.relu(torch.bmm(fields, per_domain[0]) + per_domain[1].unsqueeze(1))
        out_w, out_b = self.attention_out.weight[domain], self.attention_out.bias[domain]
        return torch.sigmoid(torch.bmm(hidden, out_w) + out_b.unsqueeze(1)).view(b, n)

    def forward(self, inputs: dict[str, torch.Tensor], skip_experts: bool = False) -> RankerOutput:
        if skip_experts:
            raise ValueError("WE-CAN has no experts to skip")
        request, item = self.inputs(inputs)
        items = item.shape[0]
        fields = torch.cat([request.expand(items, -1, -1), item], dim=1)  # [B, n, dim]
        domain = self.domain(inputs, items)
        if self.config.domain_attention:
            fields = fields * self.field_weights(fields, domain).unsqueeze(2)
        x = fields.flatten(1)
        shared = self.networks[0](x)  # O^c [B, width]
        rows = torch.arange(items)
        logits = torch.einsum("bw,bwt->bt", shared, self.shared_head.weight[domain])
        logits = logits + self.bias[domain]
        private = None
        if self.config.private:  # O^d: every private network, each example reads its own
            all_private = torch.stack([net(x) for net in self.networks[1:]], dim=1)
            private = all_private[rows, domain]
            weight = self.private_head.weight[domain]
            logits = logits + torch.einsum("bw,bwt->bt", private, weight)
        penalties = {}
        if self.critic is not None and self.training:
            penalties["wasserstein"] = -self.config.wasserstein_weight * self.critic_gap(
                shared, private, domain
            )
        weights = domain_balanced_weights(domain) if self.config.domain_balanced_loss else None
        return RankerOutput(logits, penalties=penalties, example_weights=weights)

    def critic_gap(self, shared, private, domain) -> torch.Tensor:
        """D_c - Σ_d D_d over the batch (eq. 4-5), the features passed through gradient
        reversal so that minimising -λ·gap trains the critic up and the generators down."""
        # The critic reads unit-length features: with raw ones the generators could grow D_d
        # without bound by scaling the private features away from the shared ones.
        shared, private = (nn.functional.normalize(f, dim=1) for f in (shared, private))
        f_shared = self.critic(GradientReversal.apply(shared))[:, 0]
        f_private = self.critic(GradientReversal.apply(private))[:, 0]
        present = torch.unique(domain)
        source = torch.bincount(domain).argmax()
        source_mean = f_shared[domain == source].mean()
        gap = shared.new_zeros(())
        for d in present:
            mask = domain == d
            if d != source:
                gap = gap + source_mean - f_shared[mask].mean()  # D_c against each target
            gap = gap - (f_shared[mask].mean() - f_private[mask].mean())  # D_d
        return gap
