"""Item and query embeddings for a ranking call.

Items: in-process LRU (by id) -> one store round trip -> the cold-title policy for items that
carry a title (cold_titles.py) -> a zero vector, each step counted and the degraded ones
reported. Queries: an LRU by normalised text, else encoded where the model runs.

Every vector the service uses is rounded to the storage dtype first, so an item ranks the same
whether its vector came from the LRU, the store, or an online encode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from itertools import compress, repeat
from operator import is_

import numpy as np

from contract.embeddings import from_bytes, item_key
from service import metrics
from service.bundle import Bundle
from service.cold_titles import ColdTitles
from service.embedding_store import StoreUnavailable
from service.item_columns import ItemColumns
from service.lru import LRU
from service.store_generation import StoreGeneration


class Calls:
    """Where blocking calls (fn, *args) run: on the event loop itself when `on_loop` (the
    caller waits, nothing else runs meanwhile), else in `executor`'s threads."""

    def __init__(self, executor: Executor, on_loop: bool = False):
        self.executor, self.on_loop = executor, on_loop

    async def __call__(self, fn: Callable, *args):
        if self.on_loop:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def as_served(vectors: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Vectors as the item LRU holds them: rounded to the storage dtype (an item ranks the
    same from any tier), kept as float32, the model's input type, so a ranking call copies
    its rows without a float16 conversion (60 us for 100 vectors of dimension 384)."""
    return vectors.astype(dtype, copy=False).astype(np.float32, copy=False)


def normalise_query(text: str) -> str:
    return " ".join(text.lower().split())


class ItemEmbeddings:
    """The item tiers. `cache` holds only vectors read from the store (the catalog's); the
    store is read through its generation, which says whether it lost its contents."""

    def __init__(
        self, generation: StoreGeneration, key_prefix: str, dtype: str, cache: LRU, cold: ColdTitles
    ):
        self.generation, self.store = generation, generation.store
        self.key_prefix, self.dtype = key_prefix, np.dtype(dtype)
        self.cache, self.cold = cache, cold

    async def __call__(self, bundle: Bundle, items: ItemColumns, degraded: dict) -> np.ndarray:
        """[B, D] float32 item embeddings; `degraded` gets what had to be done without."""
        degraded["embedding_store"] = self.generation.state
        prefix = item_key(self.key_prefix, bundle.encoder_id, "")
        keys = list(map(prefix.__add__, items.ids))
        cached = self.cache.get_many(keys)
        misses = list(compress(range(len(keys)), map(is_, cached, repeat(None))))
        metrics.labelled(metrics.EMBEDDING_LOOKUPS, "lru", "hit").inc(len(items) - len(misses))
        if not misses:  # one copy of the float32 rows (np.stack makes a view per row first)
            out = np.empty((len(items), bundle.text_dim), np.float32)
            np.concatenate(cached, out=out.reshape(-1))
            return out
        out = np.zeros((len(items), bundle.text_dim), np.float32)
        if len(misses) < len(items):
            hits = [row for row, vector in enumerate(cached) if vector is not None]
            out[hits] = [cached[row] for row in hits]
        metrics.EMBEDDING_LOOKUPS.labels("lru", "miss").inc(len(misses))
        still = await self._from_store(bundle, keys, misses, out, degraded)
        titles = items.titles
        cold = {row: (keys[row], titles[row]) for row in still if titles[row]}
        if cold:
            await self.cold.resolve(bundle, cold, out, degraded)
        metrics.EMBEDDING_LOOKUPS.labels("encoder", "miss").inc(len(still) - len(cold))
        degraded["embedding_cache_misses"] = len(still)
        skipped = degraded.get("cold_encodes_skipped", 0)
        degraded["missing_embeddings"] = len(still) - len(cold) + skipped
        return out

    async def _from_store(self, bundle, keys, misses, out, degraded) -> list[int]:
        """Fill `out` from one store round trip; returns the rows still missing."""
        tier = self.store.name
        try:
            found = await self.store.get_many([keys[row] for row in misses])
        except StoreUnavailable:
            metrics.EMBEDDING_LOOKUPS.labels(tier, "error").inc(len(misses))
            degraded["embedding_store"] = "unavailable"
            return misses
        still = []
        for row, raw in zip(misses, found):
            if raw is None:
                still.append(row)
                continue
            try:
                vector = as_served(from_bytes(raw, bundle.text_dim), self.dtype)
            except ValueError:  # a foreign or truncated value: treat as absent, count it
                metrics.EMBEDDING_LOOKUPS.labels(tier, "error").inc()
                still.append(row)
                continue
            out[row] = vector
            self.cache.put(keys[row], vector)
        metrics.EMBEDDING_LOOKUPS.labels(tier, "hit").inc(len(misses) - len(still))
        metrics.EMBEDDING_LOOKUPS.labels(tier, "miss").inc(len(still))
        return still


class QueryEmbeddings:
    """Query vectors by (encoder, normalised text); `calls` runs an encode where the model
    runs (MOERANK_MODEL_CALLS)."""

    def __init__(self, cache: LRU, calls: Calls):
        self.cache, self._run = cache, calls

    def __call__(self, bundle: Bundle, text: str) -> Awaitable[np.ndarray]:
        """The [D] query embedding, to await: at once on an LRU hit. On a miss with queries on
        the loop, the caller's await encodes it (a task would wait behind every other ready
        callback: tens of ms under load); else a task encodes it in the pool meanwhile."""
        key = (bundle.encoder_id, normalise_query(text))
        vector = self.cache.get(key)
        if vector is None:
            metrics.QUERY_LOOKUPS.labels("miss").inc()
            encoding = self._encode(bundle, key)
            return encoding if self._run.on_loop else asyncio.ensure_future(encoding)
        metrics.labelled(metrics.QUERY_LOOKUPS, "hit").inc()
        done = asyncio.get_running_loop().create_future()
        done.set_result(vector)
        return done

    async def _encode(self, bundle: Bundle, key: tuple[str, str]) -> np.ndarray:
        vector = (await self._run(bundle.encoder.encode, [key[1]]))[0]
        self.cache.put(key, vector)
        return vector


@dataclass(frozen=True)
class Embeddings:
    """What a ranking call (or a shadow model's scoring) reads its vectors through."""

    item_vectors: ItemEmbeddings
    query_vectors: QueryEmbeddings

    def query(self, bundle: Bundle, text: str) -> Awaitable[np.ndarray]:
        return self.query_vectors(bundle, text)

    async def items(self, bundle: Bundle, items: ItemColumns, degraded: dict) -> np.ndarray:
        return await self.item_vectors(bundle, items, degraded)
