"""Experts stored stacked ([N, in, out] weights), so a top-K path can gather K of them.

The first layer is factorised by level: W·[r; x] = W_r·r + W_x·x, so the query's share is
computed once per request (R = 1 at serving) instead of once per item.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _stacked(n: int, fan_in: int, fan_out: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per expert
    return nn.Parameter(torch.empty(n, fan_in, fan_out).uniform_(-bound, bound))


class StackedExperts(nn.Module):
    """N MLP experts request_dim + item_dim -> hidden... -> out_dim, ReLU between layers.

    forward(request_vec [R, dr], item_vec [B, dx], expert_index=None) -> [B, N, out_dim];
    with expert_index [K] (one request, R = 1) only those K experts run -> [B, K, out_dim].
    """

    def __init__(
        self, n: int, request_dim: int, item_dim: int, hidden: tuple[int, ...], out_dim: int
    ):
        super().__init__()
        fan_in = request_dim + item_dim
        self.n = n
        # Split one [N, dr + dx, h] initialisation: the same layer as the unfactorised one.
        full = _stacked(n, fan_in, hidden[0]).detach()
        self.request_weight = nn.Parameter(full[:, :request_dim].clone())
        self.item_weight = nn.Parameter(full[:, request_dim:].clone())
        self.first_bias = nn.Parameter(torch.zeros(n, hidden[0]))
        sizes = (*hidden, out_dim)
        self.weights = nn.ParameterList(_stacked(n, a, b) for a, b in zip(sizes, sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n, b)) for b in sizes[1:])

    def forward(
        self,
        request_vec: torch.Tensor,
        item_vec: torch.Tensor,
        expert_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        def take(p: torch.Tensor) -> torch.Tensor:
            return p if expert_index is None else p.index_select(0, expert_index)

        # [R, E, h] + [B, E, h]: R broadcasts (R = 1) or matches B.
        hidden = torch.einsum("rd,edh->reh", request_vec, take(self.request_weight))
        hidden = hidden + torch.einsum("bd,edh->beh", item_vec, take(self.item_weight))
        hidden = torch.relu(hidden + take(self.first_bias))
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            hidden = torch.einsum("beh,eho->beo", hidden, take(w)) + take(b)
            if i < len(self.weights) - 1:
                hidden = torch.relu(hidden)
        return hidden
