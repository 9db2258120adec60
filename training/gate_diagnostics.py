"""Does a gate route by category? Diagnostics of a gated model's routing, as plain functions.

Every figure is over impressions (traffic-weighted: a head category counts as often as it is
shown). `routing` runs the model's gate over a split; the rest take its arrays:

- `routing_entropy`: mean entropy (nats) of the gate's softmax over all N experts (uniform:
  log N) and of the kept top-K weights (uniform: log K);
- `expert_usage`: each expert's share of the routed weight (sums to 1; uniform: 1 / N);
- `top_category_mutual_information`: I(expert; top-category) in nats, the expert drawn with
  the gate's weights, and the same divided by H(top-category) (0: routing ignores the
  top-category, 1: the experts identify it);
- `category_silhouette`: adv-hsc-moe Figure 6's silhouette of per-sub-category gate vectors
  grouped by top-category.
"""

from __future__ import annotations

import numpy as np
import torch

from contract import schema
from training.dataset import TensorData


@torch.no_grad()
def routing(model, data: TensorData, batch_size: int = 8192) -> dict[str, np.ndarray]:
    """{"weights": [n, N] kept gate weights, "probs": [n, N] softmax of the clean logits} for
    every row of `data`, in eval mode (deterministic gate). The model needs `inputs`
    (InputBlock) and `route(inputs, item_vec)` -> Gating (CategoryMoE)."""
    model.eval()
    weights, probs = [], []
    for start in range(0, len(data), batch_size):
        inputs = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        _, item_vec = model.inputs(inputs)
        gating = model.route(inputs, item_vec)
        n = item_vec.shape[0]
        weights.append(gating.weights.expand(n, -1))
        probs.append(torch.softmax(gating.clean_logits, dim=1).expand(n, -1))
    return {"weights": torch.cat(weights).numpy(), "probs": torch.cat(probs).numpy()}


def _entropy(p: np.ndarray) -> np.ndarray:
    """Row entropies (nats) of [n, N] distributions (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    return -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(axis=1)


def routing_entropy(probs: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Mean entropy over rows of the full softmax `probs` and of the kept `weights` [n, N],
    with the uniform references log N and log K (K = kept experts per row)."""
    kept = int(np.count_nonzero(weights[0])) if len(weights) else 0
    return {
        "softmax_entropy": float(_entropy(probs).mean()),
        "softmax_entropy_uniform": float(np.log(probs.shape[1])),
        "top_k_entropy": float(_entropy(weights).mean()),
        "top_k_entropy_uniform": float(np.log(max(kept, 1))),
        "mean_largest_weight": float(weights.max(axis=1).mean()),
    }


def expert_usage(weights: np.ndarray) -> np.ndarray:
    """[N] share of the routed weight each expert receives (sums to 1)."""
    total = weights.sum(axis=0)
    return total / total.sum()


def top_category_mutual_information(weights: np.ndarray, top: np.ndarray) -> dict[str, float]:
    """I(E; C) with P(E = i, C = c) = mean over rows of weights[row, i] * [top[row] = c]:
    the expert drawn by the gate's weights against the top-category; and I / H(C)."""
    _, top_index = np.unique(top, return_inverse=True)
    joint = np.stack(
        [np.bincount(top_index, weights=weights[:, i]) for i in range(weights.shape[1])], axis=0
    )
    joint /= joint.sum()
    p_expert, p_top = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    positive = joint > 0
    mi = float((joint[positive] * np.log(joint[positive] / (p_expert @ p_top)[positive])).sum())
    h_top = float(_entropy(p_top)[0])
    return {"mutual_information": mi, "normalised_mutual_information": mi / h_top if h_top else 0.0}


def category_silhouette(vectors: np.ndarray, groups: np.ndarray) -> float:
    """Silhouette of `vectors` [n, N] grouped by `groups` [n] (NaN with one group)."""
    from sklearn.metrics import silhouette_score

    if len(set(groups)) < 2:
        return float("nan")
    return float(silhouette_score(vectors, groups))


def diagnose(model, data: TensorData, spec) -> dict:
    """Routing entropy, expert usage and top-category mutual information on `data` (None for a
    model without a gate)."""
    if getattr(model, "gate", None) is None:
        return {}
    routed = routing(model, data)
    top = data.request_cat[:, spec.request_field(schema.TOP_CATEGORY)].numpy()
    usage = expert_usage(routed["weights"])
    return {
        **routing_entropy(routed["probs"], routed["weights"]),
        "expert_usage": [round(float(u), 4) for u in usage],
        "expert_usage_max": float(usage.max()),
        **top_category_mutual_information(routed["weights"], top),
    }
