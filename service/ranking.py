"""The ranking pipeline, free of HTTP: validate -> embeddings -> query embedding -> one
onnxruntime call -> sort -> top_n -> response."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service import metrics
from service.bundle import Bundle
from service.embedding_store import from_bytes, item_key, to_bytes
from service.features import build_inputs
from service.schemas import RankRequest


class LRU:
    """A bounded mapping that forgets the least recently used entry."""

    def __init__(self, capacity: int):
        self.capacity, self._data = capacity, OrderedDict()

    def get(self, key):
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        if self.capacity == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


def normalise_query(text: str) -> str:
    return " ".join(text.lower().split())


class RankingService:
    def __init__(self, bundle: Bundle, store, key_prefix: str, lru_items: int, lru_queries: int):
        self.bundle, self.store, self.key_prefix = bundle, store, key_prefix
        self.item_cache, self.query_cache = LRU(lru_items), LRU(lru_queries)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="moerank-infer")
        self._background: set[asyncio.Task] = set()

    async def _blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def item_embeddings(self, request: RankRequest, degraded: dict) -> np.ndarray:
        """[B, D]: LRU -> one store round trip -> encode titles -> zero vector (flagged)."""
        bundle, items = self.bundle, request.items
        out = np.zeros((len(items), bundle.text_dim), np.float32)
        keys = [item_key(self.key_prefix, bundle.encoder_id, item.id) for item in items]
        misses = []
        for row, key in enumerate(keys):
            vector = self.item_cache.get(key)
            if vector is None:
                misses.append(row)
            else:
                out[row] = vector
        metrics.EMBEDDING_LOOKUPS.labels("lru").inc(len(items) - len(misses))
        if misses:
            try:
                found = await self.store.get_many([keys[r] for r in misses])
            except Exception:  # a dead store degrades the answer, never the process
                metrics.STORE_ERRORS.inc()
                degraded["embedding_store"] = "unavailable"
                found = [None] * len(misses)
            still = []
            for row, raw in zip(misses, found):
                if raw is None:
                    still.append(row)
                    continue
                out[row] = from_bytes(raw, bundle.text_dim)
                self.item_cache.put(keys[row], out[row].copy())
            metrics.EMBEDDING_LOOKUPS.labels("store").inc(len(misses) - len(still))
            degraded["embedding_cache_misses"] = len(still)
            titled = [r for r in still if items[r].title]
            if titled:
                vectors = await self._blocking(
                    bundle.encoder.encode, [items[r].title for r in titled]
                )
                out[titled] = vectors
                for r, v in zip(titled, vectors):
                    self.item_cache.put(keys[r], v)
                self._write_back({keys[r]: to_bytes(v) for r, v in zip(titled, vectors)})
            metrics.EMBEDDING_LOOKUPS.labels("encoded").inc(len(titled))
            metrics.EMBEDDING_LOOKUPS.labels("missing").inc(len(still) - len(titled))
            degraded["online_encodes"] = len(titled)
            degraded["missing_embeddings"] = len(still) - len(titled)
        return out

    def _write_back(self, values: dict[str, bytes]) -> None:
        """Store freshly encoded vectors without making the request wait for it."""

        async def write():
            try:
                await self.store.set_many(values)
            except Exception:
                metrics.STORE_ERRORS.inc()

        task = asyncio.get_running_loop().create_task(write())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def query_embedding(self, text: str) -> np.ndarray:
        key = normalise_query(text)
        vector = self.query_cache.get(key)
        if vector is None:
            vector = (await self._blocking(self.bundle.encoder.encode, [key]))[0]
            self.query_cache.put(key, vector)
        return vector

    async def rank(self, request: RankRequest) -> dict:
        bundle = self.bundle  # one model for the whole call, even if a reload swaps it
        stage = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal stage
            now = time.perf_counter()
            metrics.STAGE_DURATION.labels(name).observe(now - stage)
            stage = now

        inputs = build_inputs(bundle, request)
        degraded = {
            "imputed_features": inputs.imputed_features,
            "oov_categories": inputs.oov_categories,
        }
        tensors = [inputs.request_cat, inputs.item_cat, inputs.numeric]
        lap("parse")
        if bundle.text_dim:
            tensors.append((await self.query_embedding(request.query.text))[None, :])
            lap("query_encode")
            tensors.append(await self.item_embeddings(request, degraded))
            lap("embeddings")
        scores, expert_index, expert_weight = await self._blocking(bundle.score, *tensors)
        lap("inference")
        response = self.respond(bundle, request, scores, expert_index, expert_weight, degraded)
        lap("respond")
        metrics.ITEMS_PER_REQUEST.observe(len(request.items))
        for e in expert_index.tolist():
            metrics.EXPERT_SELECTED.labels(str(e)).inc()
        return response

    @staticmethod
    def respond(bundle, request, scores, expert_index, expert_weight, degraded) -> dict:
        final = scores[:, bundle.tasks.index(bundle.manifest["score"]["task"])]
        order = np.argsort(-final, kind="stable")
        if request.top_n:
            order = order[: request.top_n]
        items = [
            {
                "id": request.items[i].id,
                "score": float(final[i]),
                "scores": {t: float(scores[i, j]) for j, t in enumerate(bundle.tasks)},
            }
            for i in order
        ]
        return {
            "model": {"name": bundle.name, "version": bundle.version},
            "items": items,
            "experts": [
                {"index": int(i), "weight": float(w)} for i, w in zip(expert_index, expert_weight)
            ],
            "degraded": degraded,
        }
