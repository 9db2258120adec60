"""Multi-task extraction (mlpr §3.2): experts with batch norm, per-task gates, shared and
task-specific experts.

One layer, `InputExpertLayer`, covers the bottoms of Table 2: S shared experts plus P
experts per task, and one gate per task over its P + S candidates (eq. 3-4). S = 1, P = 0 is
the shared bottom (MLP_MTL, no gate), S = N, P = 0 is MMoE, P > 0 is PLE's CGC. MLPR stacks
`TaskExpertLayer` on it: the same layer reading each task's output of the layer below (eq. 4,
x = g^k). Experts are stacked ([N, in, out]), so the export can gather the chosen ones.
"""

from __future__ import annotations

import torch
from torch import nn

from contract.features import FeatureSpec
from training.models.experts import StackedExperts
from training.models.gates import GateFeatures, Gating, NoisyTopKGate


class StackedBatchNorm(nn.Module):
    """Batch norm per (expert, unit) over the batch: hidden [B, E, h] -> [B, E, h].

    The same numbers as nn.BatchNorm1d(E * h) on hidden.reshape(B, E * h), kept as [E, h]
    so `take` can gather the running experts' statistics on the skipping path.
    """

    def __init__(self, experts: int, dim: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(experts, dim))
        self.bias = nn.Parameter(torch.zeros(experts, dim))
        self.register_buffer("running_mean", torch.zeros(experts, dim))
        self.register_buffer("running_var", torch.ones(experts, dim))

    def forward(self, hidden: torch.Tensor, take=lambda p: p) -> torch.Tensor:
        if self.training:
            if hidden.shape[1] != self.weight.shape[0]:
                raise ValueError("batch statistics need every expert (no skipping in training)")
            var, mean = torch.var_mean(hidden, dim=0, unbiased=False)  # one pass
            with torch.no_grad():
                n = hidden.shape[0]
                unbiased = var * n / max(n - 1, 1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = take(self.running_mean), take(self.running_var)
        # (x - mean) / sqrt(var + eps) * weight + bias as one multiply-add over the batch.
        scale = torch.rsqrt(var + self.eps) * take(self.weight)
        return torch.addcmul(take(self.bias) - mean * scale, hidden, scale)


class NormedStackedExperts(StackedExperts):
    """StackedExperts as feature extractors (mlpr §3.2.1): Linear -> BatchNorm -> ReLU after
    every layer, the last included. Same call and output shapes as StackedExperts."""

    def __init__(
        self, n: int, request_dim: int, item_dim: int, hidden: tuple[int, ...], out_dim: int
    ):
        super().__init__(n, request_dim, item_dim, hidden, out_dim)
        self.norms = nn.ModuleList(StackedBatchNorm(n, d) for d in (*hidden, out_dim))

    def activate(self, hidden: torch.Tensor, layer: int, take) -> torch.Tensor:
        return torch.relu(self.norms[layer](hidden, take))


def candidate_table(tasks: int, shared: int, specific: int) -> torch.Tensor:
    """[T, P + S] expert ids each task's gate chooses from: its own P, then the S shared.
    Experts are numbered shared first (0..S-1), then task k's specific ones."""
    shared_ids = torch.arange(shared)
    rows = [
        torch.cat([shared + k * specific + torch.arange(specific), shared_ids])
        for k in range(tasks)
    ]
    return torch.stack(rows)


def _task_gates(in_dim: int, candidates: int, top_k: int, noisy: bool, tasks: int):
    if candidates == 1:
        return None  # one candidate: weight 1, nothing to learn
    return nn.ModuleList(NoisyTopKGate(in_dim, candidates, top_k, noisy) for _ in range(tasks))


def _mix(expert_out: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """expert_out [B, T, C, d] weighted by weights [G, T, C] (G = 1 or B) -> [B, T, d]."""
    return (expert_out * weights[:, :, :, None]).sum(2)


def _spread(weights: torch.Tensor, candidates: torch.Tensor, experts: int) -> torch.Tensor:
    """Gate weights over each task's candidates [G, T, C] -> over all experts [G, T, E]
    (0 outside the candidates), so mixing is one matrix product instead of a gather."""
    ids = candidates.expand(weights.shape[0], -1, -1)
    return weights.new_zeros(*ids.shape[:2], experts).scatter(2, ids, weights)


class InputExpertLayer(nn.Module):
    """The first extraction layer, on the input block's (request_vec, item_vec).

    forward(inputs, request_vec [R, dr], item_vec [B, dx], skip_experts) -> (task vectors
    [B, T, out_dim], gatings: one Gating per task with weights/top_index over all S + T*P
    experts, or None without gates). gate_inputs as in GateFeatures: without "item" the
    gates read only request-level inputs, so one request uses the same experts for all its
    items and `skip_experts` runs only the T*K chosen ones (duplicates included).
    """

    def __init__(self, spec: FeatureSpec, config, dims: tuple[int, int]):
        super().__init__()
        tasks, shared, specific = len(config.tasks), config.experts, config.specific_experts
        self.register_buffer("candidates", candidate_table(tasks, shared, specific))
        self.total = shared + tasks * specific
        self.experts = NormedStackedExperts(
            self.total, *dims, config.hidden[:-1], config.hidden[-1]
        )
        n_candidates = shared + specific
        if not 1 <= config.top_k <= n_candidates:
            raise ValueError(f"need 1 <= top_k <= {n_candidates} candidates, got {config.top_k}")
        self.gate_features = None
        if n_candidates > 1:
            self.gate_features = GateFeatures(
                spec, config.gate_inputs, dims[1], config.embedding_dim
            )
        in_dim = self.gate_features.out_dim if self.gate_features else 0
        self.gates = _task_gates(in_dim, n_candidates, config.top_k, config.noisy_gate, tasks)

    @property
    def request_level(self) -> bool:
        return self.gates is not None and not self.gate_features.item_level

    def route(self, inputs, item_vec) -> list[Gating] | None:
        if self.gates is None:
            return None
        gate_in = self.gate_features(inputs, item_vec)
        return [gate(gate_in) for gate in self.gates]

    def forward(self, inputs, request_vec, item_vec, skip_experts: bool = False):
        gatings = self.route(inputs, item_vec)
        if gatings is None:
            # One candidate per task: the shared bottom (all tasks read expert 0) or, with
            # one specific expert and no shared one, a bottom of its own per task.
            return self.experts(request_vec, item_vec)[:, self.candidates[:, 0]], None
        weights = torch.stack([g.weights for g in gatings], dim=1)  # [G, T, C]
        if skip_experts:
            if not self.request_level or weights.shape[0] != 1:
                raise ValueError("expert skipping needs one request and request-level gates")
            top = torch.stack([g.top_index[0] for g in gatings])  # [T, K] candidate positions
            chosen = self.candidates.gather(1, top)  # [T, K] expert ids
            out = self.experts(request_vec, item_vec, chosen.reshape(-1))  # [B, T*K, d]
            out = out.reshape(out.shape[0], *chosen.shape, -1)
            vectors = _mix(out, weights.gather(2, top[None]))
        else:
            spread = _spread(weights, self.candidates, self.total)  # [G, T, E]
            vectors = torch.matmul(spread, self.experts(request_vec, item_vec))  # [B, T, d]
        return vectors, [self._global(g, k) for k, g in enumerate(gatings)]

    def _global(self, gating: Gating, task: int) -> Gating:
        """A task's gating with expert ids instead of candidate positions."""
        ids = self.candidates[task].expand_as(gating.weights)
        weights = gating.weights.new_zeros(gating.weights.shape[0], self.total)
        logits = torch.full_like(weights, float("-inf"))
        return Gating(
            weights.scatter(1, ids, gating.weights),
            self.candidates[task][gating.top_index],
            logits.scatter(1, ids, gating.clean_logits),
            gating.balance,
        )


class TaskExpertLayer(nn.Module):
    """A later extraction layer (mlpr §3.2.2, eq. 4): task k's gate mixes its specific
    experts and the shared experts, all applied to task k's input g^k.

    forward(vectors [B, T, d]) -> [B, T, d]. Gates read g^k (item-level); every expert of
    this layer runs anyway, so there is nothing to skip. For simplicity every expert runs on
    every task's input and each task keeps its candidates' outputs.
    """

    def __init__(self, config, dim: int):
        super().__init__()
        tasks, shared, specific = len(config.tasks), config.stage2_shared, config.stage2_specific
        self.register_buffer("candidates", candidate_table(tasks, shared, specific))
        self.experts = NormedStackedExperts(shared + tasks * specific, 0, dim, (dim,), dim)
        self.gates = _task_gates(dim, shared + specific, shared + specific, False, tasks)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        b, t, d = vectors.shape
        flat = vectors.reshape(b * t, d)
        out = self.experts(flat.new_zeros(1, 0), flat).reshape(b, t, -1, d)  # [B, T, E, d]
        if self.gates is None:
            return out[:, torch.arange(t, device=out.device), self.candidates[:, 0]]
        weights = torch.stack([g(vectors[:, k]).weights for k, g in enumerate(self.gates)], 1)
        spread = _spread(weights, self.candidates, out.shape[2])  # [B, T, E]
        return torch.matmul(spread.unsqueeze(2), out).squeeze(2)
