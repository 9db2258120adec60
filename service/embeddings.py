"""Item and query embeddings for a request: in-process LRU -> one store round trip -> the
titles of the rest (encoded in the background by default, or during the request) -> a zero
vector, each step counted and the degraded ones reported.

Cold items (a title but no stored vector) are answered with the zero vector and flagged by
default, and their titles are encoded after the answer, one batch at a time on a thread of
lower OS priority: an int8 MiniLM encode costs ~3 ms of CPU per title here, so encoding ten cold
titles inline made such a call 15x slower at P99. `cold_items="inline"` encodes them first.

Every vector the service uses is rounded to the storage dtype first, so an item ranks the same
whether its vector came from the LRU, the store, or an online encode.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from itertools import islice

import numpy as np

from contract.embeddings import EmbeddingStore, from_bytes, item_key, to_bytes
from service import metrics
from service.bundle import Bundle
from service.embedding_store import StoreUnavailable
from service.lru import LRU
from service.schemas import Item, ItemText

log = logging.getLogger("uvicorn.error")


class Calls:
    """Where blocking calls (fn, *args) run: on the event loop itself when `on_loop` (the
    caller waits, nothing else runs meanwhile), else in `executor`'s threads."""

    def __init__(self, executor: Executor, on_loop: bool = False):
        self.executor, self.on_loop = executor, on_loop

    async def __call__(self, fn: Callable, *args):
        if self.on_loop:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def normalise_query(text: str) -> str:
    return " ".join(text.lower().split())


class EmbeddingResolver:
    """Owns the LRUs and the store. `bulk_calls` run the encoder's bulk calls (inline cold
    titles, upserts) in a thread pool; `query_calls` a query's encode, where the model runs
    (MOERANK_MODEL_CALLS)."""

    def __init__(
        self,
        store,
        key_prefix: str,
        dtype: str,
        lru_items: int,
        lru_queries: int,
        bulk_calls: Calls,
        query_calls: Calls,
        cold_items: str = "background",
        pending_limit: int = 10_000,
    ):
        self.store, self.key_prefix, self.dtype = store, key_prefix, np.dtype(dtype)
        self.item_cache, self.query_cache = LRU(lru_items), LRU(lru_queries)
        self._run, self._run_query = bulk_calls, query_calls
        self._write_backs: set[asyncio.Task] = set()
        self.cold_items, self.pending_limit = cold_items, pending_limit
        self._pending: dict[str, tuple[Bundle, str]] = {}  # key -> (bundle, title), deduplicated
        self._encoding: asyncio.Task | None = None
        self._encoder_thread: ThreadPoolExecutor | None = None

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
        if titled and self.cold_items == "inline":
            vectors = await self._encode(bundle, [items[row].title for row in titled])
            out[titled] = vectors
            self._remember({keys[row]: vector for row, vector in zip(titled, vectors)})
            metrics.EMBEDDING_LOOKUPS.labels("encoder", "hit").inc(len(titled))
            degraded["online_encodes"] = len(titled)
        elif titled:
            self._defer(bundle, {keys[row]: items[row].title for row in titled})
            metrics.EMBEDDING_LOOKUPS.labels("encoder", "deferred").inc(len(titled))
            degraded["deferred_encodes"] = len(titled)
        metrics.EMBEDDING_LOOKUPS.labels("encoder", "miss").inc(len(still) - len(titled))
        degraded["embedding_cache_misses"] = len(still)
        degraded["missing_embeddings"] = len(still) - len(titled)
        return out

    def _defer(self, bundle: Bundle, titles: dict[str, str]) -> None:
        """Queue titles for the background encoder; beyond `pending_limit` they are dropped
        (counted): a flood of new items must not grow the queue without bound."""
        for key, title in titles.items():
            if key in self._pending:
                continue
            if len(self._pending) >= self.pending_limit:
                metrics.DEFERRED_ENCODES.labels("dropped").inc()
                continue
            self._pending[key] = (bundle, title)
        if self._pending and (self._encoding is None or self._encoding.done()):
            self._encoding = asyncio.get_running_loop().create_task(self._encode_pending())

    async def _encode_pending(self, batch: int = 16) -> None:
        """Encode the queued titles a batch at a time until none are left."""
        loop = asyncio.get_running_loop()
        if self._encoder_thread is None:
            self._encoder_thread = ThreadPoolExecutor(
                1, "moerank-encode", initializer=_lower_priority
            )
        while self._pending:
            bundle = next(iter(self._pending.values()))[0]  # a reload may leave two models queued
            keys = list(islice((k for k, (b, _) in self._pending.items() if b is bundle), batch))
            titles = [self._pending.pop(key)[1] for key in keys]
            try:
                vectors = await loop.run_in_executor(
                    self._encoder_thread, bundle.encoder.encode, titles
                )
            except Exception:  # one bad batch must not stop the encoder or lose the rest
                log.exception("background encoding of %d titles failed", len(titles))
                metrics.DEFERRED_ENCODES.labels("error").inc(len(titles))
                continue
            metrics.DEFERRED_ENCODES.labels("ok").inc(len(titles))
            self._remember(dict(zip(keys, vectors.astype(self.dtype))))

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

    def query(self, bundle: Bundle, text: str) -> Awaitable[np.ndarray]:
        """The [D] query embedding, to await: at once on an LRU hit. On a miss with queries on
        the loop, the caller's await encodes it (a task would wait behind every other ready
        callback: tens of ms under load); else a task encodes it in the pool meanwhile."""
        key = (bundle.encoder_id, normalise_query(text))
        vector = self.query_cache.get(key)
        if vector is None:
            metrics.QUERY_LOOKUPS.labels("miss").inc()
            encoding = self._encode_query(bundle, key)
            return encoding if self._run_query.on_loop else asyncio.ensure_future(encoding)
        metrics.QUERY_LOOKUPS.labels("hit").inc()
        done = asyncio.get_running_loop().create_future()
        done.set_result(vector)
        return done

    async def _encode_query(self, bundle: Bundle, key: tuple[str, str]) -> np.ndarray:
        vector = (await self._run_query(bundle.encoder.encode, [key[1]]))[0]
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
        """Shutdown: the batch being encoded and the pending write-backs finish; titles still
        queued are abandoned (counted), since encoding thousands would hold the exit for
        minutes and the next process encodes them when they are asked for again."""
        metrics.DEFERRED_ENCODES.labels("abandoned").inc(len(self._pending))
        self._pending.clear()
        if self._encoding:
            await asyncio.gather(self._encoding, return_exceptions=True)
        if self._encoder_thread:
            self._encoder_thread.shutdown(wait=True)
        if self._write_backs:
            await asyncio.gather(*self._write_backs, return_exceptions=True)


def _lower_priority() -> None:
    """The background encoder's thread runs at nice 19, so deferred encodes use the CPU the
    ranking calls leave idle (Linux: a thread's nice value is its own). On 2 vCPUs that is
    not all of it: the encoder's matmuls still slow a concurrent call (the same P99 bump came
    from a separate SCHED_IDLE process encoding beside the service)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        log.warning("could not lower the background encoder's priority")
