"""Multi-task heads (mlpr §3.3-3.5): task towers, attention units, probability transfer,
uncertainty weighting; and AITM's behavioural expectation calibrator.

Task tensors are [B, T, d]: one vector per example and task, tasks in cascade order
(click, atc, purchase). Losses are plain functions with their shapes in the docstring.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _stacked(tasks: int, fan_in: int, fan_out: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per task
    return nn.Parameter(torch.empty(tasks, fan_in, fan_out).uniform_(-bound, bound))


class TaskLinear(nn.Module):
    """One linear map per task: [B, T, a] -> [B, T, b] (weights [T, a, b])."""

    def __init__(self, tasks: int, fan_in: int, fan_out: int, bias: bool = True):
        super().__init__()
        self.weight = _stacked(tasks, fan_in, fan_out)
        self.bias = nn.Parameter(torch.zeros(tasks, fan_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("nti,tio->nto", x, self.weight)
        return out if self.bias is None else out + self.bias


class TaskTowers(nn.Module):
    """Tower networks t^k = MLP^k(v^k) (eq. 5), ReLU and dropout after every layer.

    forward(vectors [B, T, in_dim]) -> [B, T, hidden[-1]].
    """

    def __init__(self, tasks: int, in_dim: int, hidden: tuple[int, ...], dropout: float):
        super().__init__()
        sizes = (in_dim, *hidden)
        self.layers = nn.ModuleList(TaskLinear(tasks, a, b) for a, b in zip(sizes, sizes[1:]))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.dropout(torch.relu(layer(x)))
        return x


class TaskAttention(nn.Module):
    """Attention units passing information from task k-1 to task k (eq. 6).

    a^1 = Attention(t^1, ∅) and a^k = Attention(t^k, a^{k-1}): the tokens u ∈ {t^k, a^{k-1}}
    give Q = W_Q u, K = W_K u, V = W_V u; a^k = Σ_u softmax_u(q·k_u / √d) v_u, one unit (W_Q,
    W_K, W_V) per task. The query is t^k's (MLPR: task k asks what to take from itself and
    from task k-1); `aitm=True` is AITM's AIT unit instead (Xi et al. 2021): a^{k-1}
    first goes through a transfer layer (Linear + ReLU) and each token scores itself,
    q_u·k_u / √d. forward(towers [B, T, d]) -> [B, T, d].
    """

    def __init__(self, tasks: int, dim: int, aitm: bool = False):
        super().__init__()
        self.query, self.key, self.value = (TaskLinear(tasks, dim, dim, bias=False) for _ in "qkv")
        self.transfer = TaskLinear(tasks, dim, dim) if aitm else None
        self.aitm, self.scale = aitm, 1.0 / math.sqrt(dim)

    def _unit(self, layer: TaskLinear, task: int, x: torch.Tensor) -> torch.Tensor:
        return x @ layer.weight[task] + (0 if layer.bias is None else layer.bias[task])

    def forward(self, towers: torch.Tensor) -> torch.Tensor:
        outputs, previous = [], None
        for k in range(towers.shape[1]):
            tokens = [towers[:, k]]
            if previous is not None:
                carried = previous
                if self.transfer is not None:
                    carried = torch.relu(self._unit(self.transfer, k, previous))
                tokens.append(carried)
            u = torch.stack(tokens, dim=1)  # [B, U, d], U = 1 or 2
            q, key, v = (self._unit(layer, k, u) for layer in (self.query, self.key, self.value))
            # [B, U]: AITM scores each token against itself, MLPR against t^k's query.
            scores = (q * key).sum(-1) if self.aitm else torch.einsum("bd,bud->bu", q[:, 0], key)
            attention = torch.softmax(scores * self.scale, dim=1)
            previous = (attention[:, :, None] * v).sum(1)
            outputs.append(previous)
        return torch.stack(outputs, dim=1)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Mächler 2012). Each branch sees
    only its own range, so the unused one cannot put inf/NaN into the gradient."""
    cut = -math.log(2)
    near_zero = x > cut
    close = torch.log(-torch.expm1(torch.where(near_zero, x, torch.full_like(x, cut))))
    far = torch.log1p(-torch.exp(torch.where(near_zero, torch.full_like(x, cut), x)))
    return torch.where(near_zero, close, far)


def probability_transfer_logits(conditional_logits: torch.Tensor) -> torch.Tensor:
    """Probability transfer (eq. 8) in logit space.

    conditional_logits [B, T]: logit p̂^k = logit P(stage k | stage k-1, x) (p̂^ctr, p̂^avr,
    p̂^cvr). Returns [B, T] logit(ŷ^k) with ŷ^k = Π_{j<=k} p̂^j, computed from log-probabilities
    (log ŷ^k = Σ_j log σ(z_j)), so ŷ^k <= ŷ^{k-1} holds exactly and the logit stays finite.
    """
    log_y = torch.cumsum(F.logsigmoid(conditional_logits), dim=1)
    log_y = log_y.clamp(max=-torch.finfo(log_y.dtype).tiny)  # ŷ = 1 has no finite logit
    return log_y - _log1mexp(log_y)


def uncertainty_weighted(task_losses: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """Uncertainty weighting of the task losses (eq. 10, Kendall et al. 2018).

    task_losses [T], log_variance [T] = log σ_k² (learnable). Returns
    Σ_k L_k / (2σ_k²) + log Π_k σ_k = Σ_k (exp(-s_k) L_k + s_k) / 2 with s_k = log σ_k².
    For fixed losses the minimum is at σ_k² = L_k.
    """
    return 0.5 * (torch.exp(-log_variance) * task_losses + log_variance).sum()


def expectation_calibration(probs: torch.Tensor) -> torch.Tensor:
    """AITM's behavioural expectation calibrator (Xi et al. 2021), mean over examples.

    probs [B, T] end-to-end probabilities in cascade order. Returns Σ_{k>=2} mean_B
    max(ŷ^k - ŷ^{k-1}, 0): the penalty for predicting a later stage likelier than an earlier.
    """
    return torch.relu(probs[:, 1:] - probs[:, :-1]).sum(1).mean()
