"""The ranking pipeline, free of HTTP: parse (rank_body.py) -> item and query embeddings ->
one onnxruntime call for the whole list -> sort -> top_n -> the response body."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import cache

import msgspec
import numpy as np

from service import metrics
from service.batcher import Batcher, Ticket
from service.embeddings import Embeddings
from service.events import NONE, Served, ServedRequests
from service.features import ModelInputs, build_inputs
from service.item_columns import ItemColumns, item_columns
from service.models_registry import ModelRegistry, Route
from service.rank_body import RankRequest, decode


class Stopwatch:
    """Observes the time since the previous lap as stage `name`."""

    def __init__(self):
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        metrics.labelled(metrics.STAGE_DURATION, name).observe(now - self._last)
        self._last = now


@dataclass
class Ranked:
    """One answered call: the body, and what the work after the answer (shadow scoring, the
    served log) needs to see exactly what the model saw."""

    body: bytes
    request_id: str
    ts: float
    route: Route
    request: RankRequest
    columns: ItemColumns  # the request's candidates, whichever form they came in
    inputs: ModelInputs
    tensors: list[np.ndarray]  # the model's inputs, in its graph's order
    order: np.ndarray  # rows of columns as returned, best first
    scores: np.ndarray  # [B] the score of every candidate, in request order


@dataclass(frozen=True)
class TextLimits:
    max_items: int
    title_chars: int  # titles and queries are cut to these before any work
    query_chars: int


def truncate_texts(request: RankRequest, columns: ItemColumns, limits: TextLimits) -> int:
    """Cut over-long titles and the query in place; returns how many were cut. Tokenising
    and encoding cost grows with the text; the encoder reads at most its token limit."""
    cut = 0
    if len(request.query.text) > limits.query_chars:
        request.query.text, cut = request.query.text[: limits.query_chars], 1
    titles = columns.titles
    for row, title in enumerate(titles):
        if title and len(title) > limits.title_chars:
            titles[row], cut = title[: limits.title_chars], cut + 1
    return cut


class RankingService:
    def __init__(
        self,
        registry: ModelRegistry,
        embeddings: Embeddings,
        batcher: Batcher,
        limits: TextLimits,
        served: ServedRequests | None = None,
    ):
        self.registry, self.embeddings, self.batcher = registry, embeddings, batcher
        self.limits, self.context = limits, {"max_items": limits.max_items}
        self.served = served or ServedRequests(0)

    async def rank(
        self, body: bytes, request_id: str | None = None, ticket: Ticket | None = None
    ) -> Ranked:
        """A /v1/rank JSON body -> the answer; Rejected on bad input. `request_id`: the
        caller's (X-Request-ID), else one is made; `ticket`: from batcher.expecting()."""
        watch = Stopwatch()
        request = decode(body, self.limits.max_items)
        return await self.rank_request(request, request_id, watch, ticket)

    async def rank_request(
        self,
        request: RankRequest,
        request_id: str | None = None,
        watch: Stopwatch | None = None,
        ticket: Ticket | None = None,
    ) -> Ranked:
        """The pipeline after the parse, for a request validated elsewhere (a benchmark's
        baseline app lets FastAPI parse it); `watch` started before the parse, if any."""
        watch = watch or Stopwatch()
        models = self.registry.current  # this call's models to the end, even across a reload
        columns = item_columns(request)
        truncated = truncate_texts(request, columns, self.limits)
        request_id = request_id or uuid.uuid4().hex
        units = {"user_id": request.user_id, "session_id": request.session_id}
        route = models.route(request.model, request.experiment, {**units, "request_id": request_id})
        bundle = route.bundle
        inputs = build_inputs(bundle, request.query, columns)
        degraded = {
            "embedding_cache_misses": 0,
            "online_encodes": 0,
            "deferred_encodes": 0,
            "cold_encodes_skipped": 0,
            "missing_embeddings": 0,
            "truncated_texts": truncated,
            "non_finite_scores": 0,
            "imputed_features": inputs.imputed_features,
            "oov_categories": inputs.oov_categories,
            "embedding_store": "ok",
        }
        tensors = [inputs.request_cat, inputs.item_cat, inputs.numeric]
        watch.lap("parse")
        if bundle.text_dim:
            # A query-cache miss is encoded at the await (on the loop) or meanwhile (in the pool).
            query = self.embeddings.query(bundle, request.query.text)
            item_vectors = await self.embeddings.items(bundle, columns, degraded)
            watch.lap("embeddings")
            tensors += [(await query)[None, :], item_vectors]
            watch.lap("query_encode")  # only the wait the item lookups did not hide
        else:
            watch.lap("embeddings")
            watch.lap("query_encode")
        scores, expert_index, expert_weight = await self.batcher.score(bundle, tensors, ticket)
        watch.lap("inference")
        scores, expert_weight = finite_scores(scores, expert_weight, degraded)
        final = bundle.final_score(scores)
        order = np.argsort(-final, kind="stable")[: request.top_n]
        body = respond(
            route, request_id, columns.ids, scores, order, expert_index, expert_weight, degraded
        )
        watch.lap("respond")
        metrics.ITEMS_PER_REQUEST.observe(len(columns))
        for expert in expert_index.tolist():
            metrics.labelled(metrics.EXPERT_SELECTED, str(expert)).inc()
        # Known before the answer leaves, so an event sent the moment it arrives finds it.
        self.served.remember(request_id, Served(route.model, route.experiment, route.variant))
        served = (route.model, route.experiment or NONE, route.variant or NONE)
        metrics.labelled(metrics.SERVED, *served).inc()
        return Ranked(
            body, request_id, time.time(), route, request, columns, inputs, tensors, order, final
        )


def finite_scores(
    scores: np.ndarray, expert_weight: np.ndarray, degraded: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Feature values inside float32 can still overflow inside the graph (1e38 times a
    weight): such rows score 0 on every task, rank last and are counted, never answered as
    null (which the response schema does not allow)."""
    if np.isfinite(scores.sum()):  # probabilities: the sum is finite unless one is not
        return scores, expert_weight
    finite = np.isfinite(scores).all(axis=1)
    degraded["non_finite_scores"] = int((~finite).sum())
    scores = np.where(finite[:, None], scores, 0.0).astype(scores.dtype)
    return scores, np.nan_to_num(expert_weight, nan=0.0, posinf=0.0, neginf=0.0)


class RankedItem(msgspec.Struct):
    """One answered item, encoded by msgspec without a dict per item (schemas.RankedItem is
    its documented schema)."""

    id: str
    score: float
    scores: msgspec.Struct  # task_scores(tasks): {task: probability}


@cache
def task_scores(tasks: tuple[str, ...]) -> type[msgspec.Struct]:
    """A Struct encoding as {task: probability, ...} in the bundle's task order."""
    fields = [f"task{n}" for n in range(len(tasks))]
    return msgspec.defstruct("TaskScores", fields, rename=dict(zip(fields, tasks)))


def respond(
    route: Route,
    request_id: str,
    ids: list[str],
    scores: np.ndarray,
    order: np.ndarray,
    expert_index: np.ndarray,
    expert_weight: np.ndarray,
    degraded: dict,
) -> bytes:
    """The request id, the model (and its experiment and variant), the ranked items (score,
    then per-task probabilities), experts and degradations."""
    bundle = route.bundle
    final = bundle.final_score(scores)
    ranked_ids = map(ids.__getitem__, order.tolist())
    per_task = map(task_scores(tuple(bundle.tasks)), *scores[order].T.tolist())
    ranked = list(map(RankedItem, ranked_ids, final[order].tolist(), per_task))
    experts = [
        {"index": index, "weight": weight}
        for index, weight in zip(expert_index.tolist(), expert_weight.tolist())
    ]
    model = {
        "name": bundle.name,
        "version": bundle.version,
        "experiment": route.experiment,
        "variant": route.variant,
    }
    return ENCODER.encode(
        {
            "request_id": request_id,
            "model": model,
            "items": ranked,
            "experts": experts,
            "degraded": degraded,
        }
    )


ENCODER = msgspec.json.Encoder()
