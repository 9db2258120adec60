"""Whether the shared store still holds what was written to it.

A Redis restarted without persistence (or flushed) comes back empty, and every item outside
a worker's LRU would rank with the zero vector while lookups say "ok". So a generation
marker (`<prefix>:generation`) is written with every whole catalog (the preload here, the
embeddings job): while the service runs it reads the marker every `interval_s`. Gone: the
store lost its contents; the state turns "lost" (in `degraded.embedding_store`, /readyz,
/metrics), and with a file store configured one process (a lease in the store) preloads it
again, which writes a new marker. Changed: another process wrote a catalog; it is adopted.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from contract.embeddings import generation_key
from service import metrics
from service.embedding_store import StoreUnavailable

log = logging.getLogger("uvicorn.error")


class StoreGeneration:
    def __init__(self, store, key_prefix: str, refill: Callable[[], Awaitable[int]] | None):
        self.store, self.refill = store, refill
        self.marker = generation_key(key_prefix)
        self.lease = f"{self.marker}:refill"
        self.state = "ok"  # or "lost"
        self._expected: bytes | None = None

    async def mark(self) -> None:
        """A catalog was just written whole: a new generation."""
        value = uuid.uuid4().hex.encode()
        await self.store.set_many({self.marker: value})
        self._expected = value
        self._set("ok")

    async def adopt(self) -> None:
        """At start: the marker in the store, or a new one if there is none yet."""
        await self.store.set_many_if_absent({self.marker: uuid.uuid4().hex.encode()})
        self._expected = (await self.store.get_many([self.marker]))[0]

    async def check(self) -> str:
        try:
            found = (await self.store.get_many([self.marker]))[0]
            if found is None and self._expected is None and self.refill is None:
                await self.adopt()  # the store was down at start: nothing to compare yet
                return self.state
        except StoreUnavailable:
            return self.state  # unreachable is not empty: reported as "unavailable"
        if found is None:  # gone, or never written since the preload at start failed
            if self.state != "lost":
                log.error("the embedding store lost its contents (no %s)", self.marker)
            self._set("lost")
        elif found != self._expected:  # another process wrote a whole catalog
            self._expected = found
            self._set("ok")
        return self.state

    async def watch(self, interval_s: float) -> None:
        """Run until cancelled: check, and refill a lost store (one process at a time)."""
        while True:
            await asyncio.sleep(interval_s)
            if await self.check() == "lost" and self.refill is not None:
                await self._refill(interval_s)

    async def _refill(self, interval_s: float) -> None:
        try:
            if not await self.store.claim(self.lease, ttl_s=max(60.0, 10 * interval_s)):
                return  # another process is refilling; its marker will be adopted
            loaded = await self.refill()
            if not loaded:
                raise StoreUnavailable("the preload wrote nothing")
            await self.mark()
        except StoreUnavailable as exc:
            log.warning("refilling the embedding store failed: %s", exc)
            metrics.STORE_REFILLS.labels("error").inc()
            return
        metrics.STORE_REFILLS.labels("ok").inc()
        log.info("refilled the embedding store from the file store: %d vectors", loaded)

    def _set(self, state: str) -> None:
        self.state = state
        metrics.STORE_LOST.set(int(state == "lost"))
