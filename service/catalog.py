"""The catalog's vectors, written with authority (they replace what is stored): the file
store preloaded at start (and again when the store lost its contents), and POST /v1/items."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from contract.embeddings import EmbeddingStore, item_key, to_bytes
from service.bundle import Bundle
from service.embedding_store import StoreUnavailable
from service.embeddings import Calls, as_served
from service.lru import LRU
from service.schemas import ItemText

log = logging.getLogger("uvicorn.error")
BATCH = 1000  # keys per MSET: bounded, each well inside the bulk timeout


class Catalog:
    def __init__(self, store, key_prefix: str, dtype: str, cache: LRU, calls: Calls):
        self.store, self.key_prefix, self.dtype = store, key_prefix, np.dtype(dtype)
        self.cache, self._run = cache, calls

    async def _write(self, keys: list[str], vectors: np.ndarray) -> None:
        for start in range(0, len(keys), BATCH):
            batch = zip(keys[start : start + BATCH], vectors[start : start + BATCH])
            await self.store.set_many({k: to_bytes(v, self.dtype.name) for k, v in batch})

    async def upsert(self, bundle: Bundle, texts: Sequence[ItemText]) -> int:
        """Encode product titles (in the pool) and store their vectors now."""
        vectors = await self._run(bundle.encoder.encode, [t.title for t in texts])
        vectors = vectors.astype(self.dtype)
        keys = [item_key(self.key_prefix, bundle.encoder_id, t.id) for t in texts]
        for key, vector in zip(keys, as_served(vectors, self.dtype)):
            self.cache.put(key, vector)
        await self._write(keys, vectors)
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
        for key, vector in zip(keys[:lru_items], as_served(vectors[:lru_items], self.dtype)):
            self.cache.put(key, vector)
        try:
            await self._write(keys, vectors)
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
