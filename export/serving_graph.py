"""The serving graph: a trained ranker wrapped with request-level and item-level inputs.

Request-level tensors have a leading 1 (one query), item-level ones a dynamic B. With a
request-level gate and `skip_experts`, the graph computes the gate once, takes TopK, gathers
those K experts' stacked weights and runs only them (TopK + Gather, no If/Loop nodes).

BatchedServingGraph scores R requests in one run (contract.manifest.BatchedGraph): a gate per
request, each request's K experts gathered as [R, K, ...], each item scored by its own's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from contract.manifest import (
    BATCH_INPUTS,
    GRAPH_INPUTS,
    GRAPH_OUTPUTS,
    REQUEST_INPUTS,
    batch_layout,
)


class ServingGraph(nn.Module):
    """(request_cat [1, r], item_cat [B, c], numeric [B, f], query_emb [1, D]?, item_emb
    [B, D]?) -> scores [B, T] task probabilities, expert_index [K], expert_weight [K]."""

    def __init__(self, model: nn.Module, skip_experts: bool):
        super().__init__()
        if skip_experts and not model.request_level_gate:
            raise ValueError("only a model with a request-level gate can skip experts")
        self.model, self.skip_experts = model, skip_experts
        self.eval()
        self.input_names = list(GRAPH_INPUTS if model.inputs.has_text else GRAPH_INPUTS[:3])

    def forward(self, request_cat, item_cat, numeric, query_emb=None, item_emb=None):
        inputs = {"request_cat": request_cat, "item_cat": item_cat, "numeric": numeric}
        if query_emb is not None:
            inputs.update(query_emb=query_emb, item_emb=item_emb)
        out = self.model(inputs, skip_experts=self.skip_experts)
        scores = torch.sigmoid(out.logits)
        if out.gating is None:  # a single tower: "expert" 0 with weight 1
            one = scores.new_ones(1)
            return scores, torch.zeros(1, dtype=torch.int64), one
        if out.gating.weights.shape[0] != 1:  # item-level gate: report the mean weights
            weights = out.gating.weights.mean(0)
            index = weights.topk(self.model.config.top_k).indices
        else:
            index, weights = out.gating.top_index[0], out.gating.weights[0]
        return scores, index, weights.index_select(0, index)


class BatchedServingGraph(nn.Module):
    """ServingGraph's inputs with R request rows, then item_request [B] and request_items
    [R, L] (training.models.request_batch) -> scores [B, T], expert_index [R, K],
    expert_weight [R, K]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not model.batches_requests:
            raise ValueError("this model cannot score several requests with their own experts")
        self.model = model
        self.eval()
        self.input_names = ServingGraph(model, skip_experts=True).input_names + list(BATCH_INPUTS)

    def forward(self, *tensors):
        out = self.model(dict(zip(self.input_names, tensors)), skip_experts=True)
        index = out.gating.top_index
        return torch.sigmoid(out.logits), index, out.gating.weights.gather(1, index)


def batched_example(
    model: nn.Module, spec, lengths: list[int], seed: int = 0
) -> tuple[list[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]:
    """Random requests of these item counts: (each alone in ServingGraph order, all of them
    in BatchedServingGraph order)."""
    alone = [example_inputs(model, spec, n, seed + i) for i, n in enumerate(lengths)]
    together = [torch.cat(parts) for parts in zip(*alone)]
    layout = (torch.from_numpy(t) for t in batch_layout(lengths))
    return alone, (*together, *layout)


def example_inputs(model: nn.Module, spec, items: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random valid inputs for one request of `items` items, in ServingGraph order."""
    g = torch.Generator().manual_seed(seed)

    def cats(fields, n):
        cols = [torch.randint(0, f.cardinality, (n,), generator=g) for f in fields]
        return torch.stack(cols, dim=1) if cols else torch.zeros(n, 0, dtype=torch.int64)

    tensors = [
        cats(spec.request_categorical, 1),
        cats(spec.item_categorical, items),
        torch.randn(items, len(spec.numeric), generator=g),
    ]
    if spec.text_dim:
        for n in (1, items):
            v = torch.randn(n, spec.text_dim, generator=g)
            tensors.append(v / v.norm(dim=1, keepdim=True))
    return tuple(tensors)


def export_onnx(graph: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    """Write the graph with a dynamic item dimension B (and for the batched graph, dynamic
    requests R and longest request L)."""
    batch = torch.export.Dim("items", min=1, max=100_000)
    dynamic = {name: None if name in REQUEST_INPUTS else {0: batch} for name in graph.input_names}
    if isinstance(graph, BatchedServingGraph):
        requests = torch.export.Dim("requests", min=1, max=10_000)
        longest = torch.export.Dim("longest", min=1, max=100_000)
        dynamic.update({name: {0: requests} for name in REQUEST_INPUTS})
        dynamic["request_items"] = {0: requests, 1: longest}
        dynamic = (tuple(dynamic[name] for name in graph.input_names),)  # forward(*tensors)
    program = torch.onnx.export(
        graph,
        example,
        dynamo=True,
        input_names=graph.input_names,
        output_names=list(GRAPH_OUTPUTS),
        dynamic_shapes=dynamic,
        optimize=True,
        verbose=False,
    )
    program.save(str(path))
