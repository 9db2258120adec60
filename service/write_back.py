"""Cold titles' vectors written to the shared store, only where no vector is stored yet.

Off by default (MOERANK_STORE_COLD_TITLES): a ranking call's titles come from its caller, and
writing what they encode to would let any caller fill the store, or claim a product's vector
before the catalog job writes it. When enabled, each write is a SET NX decided by the store
when it lands, so even a write delayed by a stalled store never replaces a vector.
"""

from __future__ import annotations

import asyncio

from service import metrics
from service.embedding_store import StoreUnavailable


class WriteBack:
    def __init__(self, store):
        self.store = store
        self._tasks: set[asyncio.Task] = set()

    def write(self, values: dict[str, bytes]) -> None:
        """In the background, off the request path."""
        task = asyncio.get_running_loop().create_task(self._write(values))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, values: dict[str, bytes]) -> None:
        try:
            written = await self.store.set_many_if_absent(values)
        except StoreUnavailable:
            metrics.WRITE_BACKS.labels("error").inc(len(values))
            return
        metrics.WRITE_BACKS.labels("ok").inc(written)
        metrics.WRITE_BACKS.labels("exists").inc(len(values) - written)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
