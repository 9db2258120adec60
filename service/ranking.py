"""The ranking pipeline, free of HTTP: parse -> item and query embeddings -> one onnxruntime
call for the whole list -> sort -> top_n -> the response body."""

from __future__ import annotations

import time

import numpy as np
import orjson

from service import metrics
from service.bundle import Bundle
from service.embeddings import Calls, EmbeddingResolver
from service.features import build_inputs
from service.model_slot import ModelSlot
from service.rejections import parse_json
from service.schemas import RankRequest


class Stopwatch:
    """Observes the time since the previous lap as stage `name`."""

    def __init__(self):
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        metrics.STAGE_DURATION.labels(name).observe(now - self._last)
        self._last = now


class RankingService:
    def __init__(
        self,
        slot: ModelSlot,
        embeddings: EmbeddingResolver,
        model_calls: Calls,
        max_items: int,
    ):
        self.slot, self.embeddings, self._run_model = slot, embeddings, model_calls
        self.context = {"max_items": max_items}

    async def rank(self, body: bytes) -> bytes:
        """A /v1/rank JSON body -> the response JSON; Rejected on bad input."""
        watch = Stopwatch()
        bundle = self.slot.current  # this call's model to the end, even across a reload
        request = parse_json(RankRequest, body, self.context)
        inputs = build_inputs(bundle, request)
        degraded = {
            "embedding_cache_misses": 0,
            "online_encodes": 0,
            "deferred_encodes": 0,
            "missing_embeddings": 0,
            "imputed_features": inputs.imputed_features,
            "oov_categories": inputs.oov_categories,
            "embedding_store": "ok",
        }
        tensors = [inputs.request_cat, inputs.item_cat, inputs.numeric]
        watch.lap("parse")
        if bundle.text_dim:
            # A query-cache miss is encoded at the await (on the loop) or meanwhile (in the pool).
            query = self.embeddings.query(bundle, request.query.text)
            item_vectors = await self.embeddings.items(bundle, request.items, degraded)
            watch.lap("embeddings")
            tensors += [(await query)[None, :], item_vectors]
            watch.lap("query_encode")  # only the wait the item lookups did not hide
        else:
            watch.lap("embeddings")
            watch.lap("query_encode")
        scores, expert_index, expert_weight = await self._run_model(bundle.score, *tensors)
        watch.lap("inference")
        body = respond(bundle, request, scores, expert_index, expert_weight, degraded)
        watch.lap("respond")
        metrics.ITEMS_PER_REQUEST.observe(len(request.items))
        for expert in expert_index.tolist():
            metrics.EXPERT_SELECTED.labels(str(expert)).inc()
        return body


def respond(
    bundle: Bundle,
    request: RankRequest,
    scores: np.ndarray,
    expert_index: np.ndarray,
    expert_weight: np.ndarray,
    degraded: dict,
) -> bytes:
    """The ranked items (score, then per-task probabilities), experts and degradations."""
    final = scores[:, bundle.score_column]
    order = np.argsort(-final, kind="stable")[: request.top_n]
    items = request.items
    tasks = bundle.tasks
    ranked = [
        {"id": items[row].id, "score": score, "scores": dict(zip(tasks, task_scores))}
        for row, score, task_scores in zip(
            order.tolist(), final[order].tolist(), scores[order].tolist()
        )
    ]
    experts = [
        {"index": index, "weight": weight}
        for index, weight in zip(expert_index.tolist(), expert_weight.tolist())
    ]
    return orjson.dumps(
        {
            "model": {"name": bundle.name, "version": bundle.version},
            "items": ranked,
            "experts": experts,
            "degraded": degraded,
        }
    )
