"""Item and query embeddings for a request: in-process LRU -> one store round trip -> online
encoding of titles -> a zero vector, each step counted and the degraded ones reported.

Every vector the service uses is rounded to the storage dtype first, so an item ranks the same
whether its vector came from the LRU, the store, or an online encode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from service import metrics
from service.bundle import Bundle
from service.embedding_store import StoreUnavailable, from_bytes, item_key, to_bytes
from service.lru import LRU
from service.schemas import Item, ItemText
from service.text_encoder import EmbeddingStore

log = logging.getLogger("uvicorn.error")

RunBlocking = Callable[..., Awaitable]  # (fn, *args) -> fn(*args) run off the event loop


def normalise_query(text: str) -> str:
    return " ".join(text.lower().split())


class EmbeddingResolver:
    """Owns the LRUs and the store; `run_blocking` runs encoder calls in a thread pool."""

    def __init__(
        self,
        store,
        key_prefix: str,
        dtype: str,
        lru_items: int,
        lru_queries: int,
        run_blocking: RunBlocking,
    ):
        self.store, self.key_prefix, self.dtype = store, key_prefix, np.dtype(dtype)
        self.item_cache, self.query_cache = LRU(lru_items), LRU(lru_queries)
        self._run = run_blocking
        self._write_backs: set[asyncio.Task] = set()

    async def items(self, bundle: Bundle, items: Sequence[Item], degraded: dict) -> np.ndarray:
        """[B, D] float32 item embeddings; `degraded` gets what had to be done without."""
        out = np.zeros((len(items), bundle.text_dim), np.float32)
        keys = [item_key(self.key_prefix, bundle.encoder_id, item.id) for item in items]
        cached = [self.item_cache.get(key) for key in keys]
        misses = [row for row, vector in enumerate(cached) if vector is None]
        if not misses:
            out[:] = cached  # one conversion, not one per row
        elif len(misses) < len(items):
            hits = [row for row, vector in enumerate(cached) if vector is not None]
            out[hits] = [cached[row] for row in hits]
        metrics.EMBEDDING_LOOKUPS.labels("lru", "hit").inc(len(items) - len(misses))
        if not misses:
            return out
        metrics.EMBEDDING_LOOKUPS.labels("lru", "miss").inc(len(misses))
        still = await self._from_store(bundle, keys, misses, out, degraded)
        titled = [row for row in still if items[row].title]
        if titled:
            vectors = await self._encode(bundle, [items[row].title for row in titled])
            out[titled] = vectors
            self._remember({keys[row]: vector for row, vector in zip(titled, vectors)})
        metrics.EMBEDDING_LOOKUPS.labels("encoder", "hit").inc(len(titled))
        metrics.EMBEDDING_LOOKUPS.labels("encoder", "miss").inc(len(still) - len(titled))
        degraded["embedding_cache_misses"] = len(still)
        degraded["online_encodes"] = len(titled)
        degraded["missing_embeddings"] = len(still) - len(titled)
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
                vector = from_bytes(raw, bundle.text_dim).astype(self.dtype, copy=False)
            except ValueError:  # a foreign or truncated value: treat as absent, count it
                metrics.EMBEDDING_LOOKUPS.labels(tier, "error").inc()
                still.append(row)
                continue
            out[row] = vector
            self.item_cache.put(keys[row], vector)
        metrics.EMBEDDING_LOOKUPS.labels(tier, "hit").inc(len(misses) - len(still))
        metrics.EMBEDDING_LOOKUPS.labels(tier, "miss").inc(len(still))
        return still

    async def _encode(self, bundle: Bundle, texts: list[str]) -> np.ndarray:
        vectors = await self._run(bundle.encoder.encode, texts)
        return vectors.astype(self.dtype)

    def _remember(self, vectors: dict[str, np.ndarray]) -> None:
        """Into the LRU now; into the store in the background, off the request path."""
        for key, vector in vectors.items():
            self.item_cache.put(key, vector)
        values = {key: to_bytes(vector, self.dtype.name) for key, vector in vectors.items()}
        task = asyncio.get_running_loop().create_task(self._write_back(values))
        self._write_backs.add(task)
        task.add_done_callback(self._write_backs.discard)

    async def _write_back(self, values: dict[str, bytes]) -> None:
        try:
            await self.store.set_many(values)
        except StoreUnavailable:
            metrics.WRITE_BACKS.labels("error").inc(len(values))
        else:
            metrics.WRITE_BACKS.labels("ok").inc(len(values))

    def query(self, bundle: Bundle, text: str) -> asyncio.Future:
        """A future of the [D] query embedding: already done on an LRU hit; on a miss the
        encoder is already running in the pool, so the caller can do other work meanwhile."""
        key = (bundle.encoder_id, normalise_query(text))
        vector = self.query_cache.get(key)
        if vector is None:
            metrics.QUERY_LOOKUPS.labels("miss").inc()
            return asyncio.ensure_future(self._encode_query(bundle, key))
        metrics.QUERY_LOOKUPS.labels("hit").inc()
        done = asyncio.get_running_loop().create_future()
        done.set_result(vector)
        return done

    async def _encode_query(self, bundle: Bundle, key: tuple[str, str]) -> np.ndarray:
        vector = (await self._run(bundle.encoder.encode, [key[1]]))[0]
        self.query_cache.put(key, vector)
        return vector

    async def upsert(self, bundle: Bundle, texts: Sequence[ItemText]) -> int:
        """Encode product titles and store their vectors now (POST /v1/items)."""
        vectors = await self._encode(bundle, [t.title for t in texts])
        keys = [item_key(self.key_prefix, bundle.encoder_id, t.id) for t in texts]
        for key, vector in zip(keys, vectors):
            self.item_cache.put(key, vector)
        await self.store.set_many(
            {key: to_bytes(vector, self.dtype.name) for key, vector in zip(keys, vectors)}
        )
        return len(texts)

    async def preload(self, saved: EmbeddingStore, encoder_id: str, lru_items: int) -> int:
        """Copy a precomputed file store into the store, and its first `lru_items` vectors
        (write the file hottest first) into the LRU. Vectors of another encoder are skipped."""
        if saved.encoder_id != encoder_id:
            log.warning(
                "file store holds %s vectors, the model needs %s: not loaded",
                saved.encoder_id,
                encoder_id,
            )
            return 0
        keys = [item_key(self.key_prefix, encoder_id, str(i)) for i in saved.item_ids]
        vectors = saved.embeddings.astype(self.dtype)
        for key, vector in zip(keys[:lru_items], vectors[:lru_items]):
            self.item_cache.put(key, vector)
        batch = 1000  # bounded MSETs, each well inside the bulk timeout
        try:
            for start in range(0, len(keys), batch):
                await self.store.set_many(
                    {
                        key: to_bytes(vector, self.dtype.name)
                        for key, vector in zip(
                            keys[start : start + batch], vectors[start : start + batch]
                        )
                    }
                )
        except StoreUnavailable as exc:
            log.warning(
                "preloading the %s store failed (%s): serving degraded", self.store.name, exc
            )
            return 0
        log.info(
            "preloaded %d item embeddings into the %s store, %d into the LRU",
            len(keys),
            self.store.name,
            min(lru_items, len(keys)),
        )
        return len(keys)

    async def drain(self) -> None:
        """Let pending write-backs finish (shutdown)."""
        if self._write_backs:
            await asyncio.gather(*self._write_backs, return_exceptions=True)
