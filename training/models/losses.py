"""Regularisers and loss terms as plain functions (shapes in each docstring)."""

from __future__ import annotations

import torch


def hierarchical_soft_constraint(
    inference_logits: torch.Tensor, constraint_logits: torch.Tensor, top_index: torch.Tensor
) -> torch.Tensor:
    """HSC (adv-hsc-moe eq. 9-11), mean over examples.

    inference_logits, constraint_logits [G, N]: the inference gate's clean logits G^I(x_sc)
    and the constraint gate's G^C(x_tc); top_index [G, K]: the inference gate's top-K
    experts. HSC = Σ_{i in top-K} (softmax(G^I)_i - softmax(G^C)_i)².
    """
    p_inference = torch.softmax(inference_logits, dim=1).gather(1, top_index)
    p_constraint = torch.softmax(constraint_logits, dim=1).gather(1, top_index)
    return ((p_inference - p_constraint) ** 2).sum(dim=1).mean()


def sample_disagreeing(top_index: torch.Tensor, experts: int, count: int) -> torch.Tensor:
    """D experts per example drawn uniformly from outside its top-K (adv-hsc-moe §4.4).

    top_index [G, K] -> [G, D] with D = min(count, N - K) and no overlap with top_index.
    """
    count = min(count, experts - top_index.shape[1])
    scores = torch.rand(top_index.shape[0], experts, device=top_index.device)
    scores = scores.scatter(1, top_index, -1.0)  # never pick an active expert
    return scores.topk(count, dim=1).indices


def adversarial_loss(
    expert_logits: torch.Tensor, top_index: torch.Tensor, disagreeing_index: torch.Tensor
) -> torch.Tensor:
    """AdvLoss (adv-hsc-moe eq. 12), mean over examples; the objective subtracts it (eq. 14).

    expert_logits [B, N]: every expert's logit E_i(X); top_index [B, K]; disagreeing_index
    [B, D]. AdvLoss = Σ_{i in top-K, j in D} (σ(E_i) - σ(E_j))².
    """
    probs = torch.sigmoid(expert_logits)
    active = probs.gather(1, top_index)  # [B, K]
    disagreeing = probs.gather(1, disagreeing_index)  # [B, D]
    return ((active[:, :, None] - disagreeing[:, None, :]) ** 2).sum(dim=(1, 2)).mean()
