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
    out_dim None: the last hidden layer is the output (no activation after it), so
    hidden=(128,) is a one-layer expert (hmoe §4.1).
    linear: each expert also adds a linear map of its input to its output (a wide & deep
    expert). Mixed by a category gate, the linear parts give every category its own weights
    on the raw features, which a ReLU tower learns only slowly (see the README).
    """

    def __init__(
        self,
        n: int,
        request_dim: int,
        item_dim: int,
        hidden: tuple[int, ...],
        out_dim: int | None,
        linear: bool = False,
    ):
        super().__init__()
        fan_in = request_dim + item_dim
        self.n = n
        # Split one [N, dr + dx, h] initialisation: the same layer as the unfactorised one.
        full = _stacked(n, fan_in, hidden[0]).detach()
        self.request_weight = nn.Parameter(full[:, :request_dim].clone())
        self.item_weight = nn.Parameter(full[:, request_dim:].clone())
        self.first_bias = nn.Parameter(torch.zeros(n, hidden[0]))
        sizes = hidden if out_dim is None else (*hidden, out_dim)
        self.weights = nn.ParameterList(_stacked(n, a, b) for a, b in zip(sizes, sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n, b)) for b in sizes[1:])
        self.linear_request = self.linear_item = None
        if linear:  # the wide part starts at zero: the expert begins as its tower
            self.linear_request = nn.Parameter(torch.zeros(n, request_dim, sizes[-1]))
            self.linear_item = nn.Parameter(torch.zeros(n, item_dim, sizes[-1]))

    def forward(
        self,
        request_vec: torch.Tensor,
        item_vec: torch.Tensor,
        expert_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        def take(p: torch.Tensor) -> torch.Tensor:
            return p if expert_index is None else p.index_select(0, expert_index)

        # Expert-major [E, B, h]: each layer is one batched matrix product ([B, d] or
        # [E, B, d]) x [E, d, h], which exports to ONNX MatMul (onnxruntime runs Einsum
        # 1.3-2x slower on these shapes).
        hidden = self._first_layer(
            request_vec, item_vec, take(self.request_weight), take(self.item_weight),
            take(self.first_bias).unsqueeze(1),
        )  # fmt: skip
        hidden = self._activate(hidden, 0, take)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            hidden = torch.matmul(hidden, take(w)) + take(b).unsqueeze(1)
            hidden = self._activate(hidden, i + 1, take)
        if self.linear_item is not None:
            hidden = hidden + self._first_layer(
                request_vec, item_vec, take(self.linear_request), take(self.linear_item), 0.0
            )
        return hidden.transpose(0, 1)  # [B, E, out_dim]

    def forward_requests(
        self, request_vec: torch.Tensor, item_vec: torch.Tensor, expert_index: torch.Tensor
    ) -> torch.Tensor:
        """Each request's own experts: request_vec [R, dr], item_vec [R, L, dx] (its items,
        training.models.request_batch), expert_index [R, K] -> [R, K, L, out_dim]. Weights
        are gathered as [R, K, ...], so each layer is one MatMul over the R * K experts."""
        if type(self).activate is not StackedExperts.activate:
            raise NotImplementedError("per-request experts run only the plain ReLU experts")

        def take(p: torch.Tensor) -> torch.Tensor:  # [N, ...] -> [R, K, ...]
            return p[expert_index]

        request_share = take(self.first_bias).unsqueeze(2)  # [R, K, 1, h]
        if self.request_weight.shape[1]:
            request_share = request_share + torch.matmul(
                request_vec[:, None, None, :], take(self.request_weight)
            )
        hidden = torch.matmul(item_vec.unsqueeze(1), take(self.item_weight)) + request_share
        for w, b in zip(self.weights, self.biases):
            hidden = torch.matmul(torch.relu(hidden), take(w)) + take(b).unsqueeze(2)
        if self.linear_item is not None:
            hidden = hidden + torch.matmul(item_vec.unsqueeze(1), take(self.linear_item))
            if self.linear_request.shape[1]:
                hidden = hidden + torch.matmul(
                    request_vec[:, None, None, :], take(self.linear_request)
                )
        return hidden  # ReLU between layers, none after the last (as `activate`)

    @staticmethod
    def _first_layer(request_vec, item_vec, request_weight, item_weight, bias) -> torch.Tensor:
        """[E, B, h]: item_vec @ item_weight + request_vec @ request_weight + bias, with the
        request share [E, R, h] computed once and broadcast over the B items when R = 1, or
        matching them row for row when R = B."""
        # Without a request part (dr = 0) there is nothing to add; the product is skipped, as
        # onnxruntime's MatMul over an empty inner axis leaves its output unwritten, not 0.
        request_share = bias
        if request_weight.shape[1]:
            request_share = request_share + torch.matmul(request_vec, request_weight)
        return torch.matmul(item_vec, item_weight) + request_share

    def _activate(self, hidden: torch.Tensor, layer: int, take) -> torch.Tensor:
        # `activate` sees [B, E, h]; the transposes are views in torch, and onnxruntime's
        # transpose optimiser cancels the pair around an element-wise activation.
        return self.activate(hidden.transpose(0, 1), layer, take).transpose(0, 1)

    def activate(self, hidden: torch.Tensor, layer: int, take) -> torch.Tensor:
        """What follows layer `layer` (0: the first) on hidden [B, E, h]: ReLU, nothing
        after the last. `take` selects the running experts' rows of an [N, ...] parameter
        (all N, or the K of expert_index). Subclasses add normalisation here."""
        return torch.relu(hidden) if layer < len(self.weights) else hidden
