"""Titles encoded after their answer, one batch at a time on a thread of lower OS priority.

An encode costs milliseconds of CPU per title (a 256-token title: tens), so a ranking call
answers a cold item with the zero vector and queues its title here. The queue is bounded
and deduplicated: a flood of new titles is dropped (counted), never grown without bound.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np

from service import metrics
from service.bundle import Bundle

log = logging.getLogger("uvicorn.error")

Done = Callable[[Bundle, list[Hashable], np.ndarray], None]


class BackgroundEncoder:
    """`submit(bundle, {key: title})` queues; `done(bundle, keys, vectors)` receives each
    encoded batch on the event loop."""

    def __init__(self, limit: int, done: Done, batch: int = 16):
        self.limit, self._done, self._batch = limit, done, batch
        self._pending: dict[Hashable, tuple[Bundle, str]] = {}
        self._encoding: asyncio.Task | None = None
        self._thread: ThreadPoolExecutor | None = None

    def submit(self, bundle: Bundle, titles: dict[Hashable, str]) -> None:
        for key, title in titles.items():
            if key in self._pending:
                continue
            if len(self._pending) >= self.limit:
                metrics.DEFERRED_ENCODES.labels("dropped").inc()
                continue
            self._pending[key] = (bundle, title)
        if self._pending and (self._encoding is None or self._encoding.done()):
            self._encoding = asyncio.get_running_loop().create_task(self._encode_pending())

    async def _encode_pending(self) -> None:
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, "moerank-encode", initializer=lower_priority)
        while self._pending:
            bundle = next(iter(self._pending.values()))[0]  # a reload may leave two models queued
            of_bundle = (k for k, (b, _) in self._pending.items() if b is bundle)
            keys = list(islice(of_bundle, self._batch))
            titles = [self._pending.pop(key)[1] for key in keys]
            try:
                vectors = await loop.run_in_executor(self._thread, bundle.encoder.encode, titles)
            except Exception:  # one bad batch must not stop the encoder or lose the rest
                log.exception("background encoding of %d titles failed", len(titles))
                metrics.DEFERRED_ENCODES.labels("error").inc(len(titles))
                continue
            metrics.DEFERRED_ENCODES.labels("ok").inc(len(titles))
            self._done(bundle, keys, vectors)

    async def drain(self) -> None:
        """Shutdown: the batch being encoded finishes; titles still queued are abandoned
        (counted), since encoding thousands would hold the exit for minutes."""
        metrics.DEFERRED_ENCODES.labels("abandoned").inc(len(self._pending))
        self._pending.clear()
        if self._encoding:
            await asyncio.gather(self._encoding, return_exceptions=True)
        if self._thread:
            self._thread.shutdown(wait=True)


def lower_priority() -> None:
    """A thread initializer: nice 19 for this thread (background encodes, bundle reloads), so
    its work uses the CPU the ranking calls leave idle (Linux: a thread's nice value is its own). On 2 vCPUs that is
    not all of it: the encoder's matmuls still slow a concurrent call (the same P99 bump came
    from a separate SCHED_IDLE process encoding beside the service)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        log.warning("could not lower the background encoder's priority")
