"""Shadow scoring: an experiment's shadow models rank the same request after its answer has
been sent, and their agreement with the served ranking goes to /metrics.

The caller never waits for it: the route hands the answer over first and queues the job from
a background task that runs after the last byte is sent. The queue is bounded (a job beyond
MOERANK_SHADOW_QUEUE is dropped and counted), one task drains it, and the models run on one
thread of lowest OS priority, so shadows use CPU the ranking calls leave idle.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.stats import kendalltau

from service import metrics
from service.background_encoder import lower_priority
from service.bundle import Bundle
from service.embeddings import Embeddings
from service.features import build_inputs
from service.ranking import Ranked

log = logging.getLogger("uvicorn.error")
TOP = 10


def agreement(primary: np.ndarray, shadow: np.ndarray, top: int = TOP) -> dict[str, float]:
    """Two models' scores for the same candidates -> top-`top` overlap (shared items in the
    two top lists / list length) and Kendall's tau-b over the whole list (NaN when one of
    them scores every item alike)."""
    k = min(top, len(primary))
    best_primary = set(np.argsort(-primary, kind="stable")[:k].tolist())
    best_shadow = set(np.argsort(-shadow, kind="stable")[:k].tolist())
    measures = {"top10_overlap": len(best_primary & best_shadow) / k}
    if len(primary) > 1:
        measures["kendall_tau"] = float(kendalltau(primary, shadow).statistic)
    return measures


class ShadowScorer:
    def __init__(self, capacity: int, embeddings: Embeddings):
        self.capacity, self.embeddings = capacity, embeddings
        self._queue: asyncio.Queue[tuple[Ranked, str, Bundle]] = asyncio.Queue()
        self._thread = ThreadPoolExecutor(1, "moerank-shadow", initializer=lower_priority)
        self._worker: asyncio.Task | None = None

    def offer(self, ranked: Ranked) -> None:
        """Queue each shadow of the answer's experiment, or drop it (counted) when full."""
        for name, bundle in ranked.route.shadows:
            if self._queue.qsize() >= self.capacity:
                metrics.SHADOW_DROPPED.labels(name).inc()
                continue
            self._queue.put_nowait((ranked, name, bundle))
            if self._worker is None:
                self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            ranked, name, bundle = await self._queue.get()
            try:
                measures = await self._score(ranked, bundle)
            except Exception:  # a shadow that cannot score this request must not stop others
                log.exception("shadow %s failed on request %s", name, ranked.request_id)
                metrics.SHADOW_SCORED.labels(name, "error").inc()
                continue
            for measure, value in measures.items():
                if np.isfinite(value):
                    metrics.SHADOW_AGREEMENT.labels(ranked.route.model, name, measure).observe(
                        value
                    )
            metrics.SHADOW_SCORED.labels(name, "ok").inc()

    async def _score(self, ranked: Ranked, bundle: Bundle) -> dict[str, float]:
        request, served = ranked.request, ranked.route.bundle
        inputs = build_inputs(bundle, request.query, ranked.columns)
        tensors = [inputs.request_cat, inputs.item_cat, inputs.numeric]
        if bundle.text_dim and bundle.encoder_id == served.encoder_id:
            tensors += ranked.tensors[3:5]  # the same vectors the served model saw
        elif bundle.text_dim:
            degraded = {"embedding_store": "ok"}
            query = self.embeddings.query(bundle, request.query.text)
            items = await self.embeddings.items(bundle, ranked.columns, degraded)
            tensors += [(await query)[None, :], items]
        loop = asyncio.get_running_loop()
        scores, _, _ = await loop.run_in_executor(self._thread, bundle.score, *tensors)
        return agreement(ranked.scores, bundle.final_score(scores))

    async def stop(self) -> None:
        """Shutdown: the job being scored is abandoned, and the queued ones are counted as
        dropped."""
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self._queue.empty():
            _, name, _ = self._queue.get_nowait()
            metrics.SHADOW_DROPPED.labels(name).inc()
        self._thread.shutdown(wait=True)
