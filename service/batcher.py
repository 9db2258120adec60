"""Cross-request micro-batching: ranking calls waiting for the model run as one onnxruntime
call through the bundle's batched graph (each request keeps its own gate and top-K experts).

A call reaching the model joins the pending batch. The batch runs at the end of the event
loop's turn in which its first call arrived, so every call already received (ready to run
in that turn) reaches the model and joins it; unless calls still hold a Ticket (taken when
the call starts, given up when it reaches the model or fails: a call waiting for Redis or
for an encode in the pool), in which case the batch waits for them, at most `wait_s` from
its first call. A batch whose padded size (calls x the longest call's items) would pass
`max_items` runs at once. A bundle without a batched graph, or wait_s = 0, runs every call
alone, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from service import metrics
from service.bundle import Bundle
from service.embeddings import Calls


class Ticket:
    """A ranking call from its start until it reaches the model (or fails before)."""

    __slots__ = ("_batcher", "coming")

    def __init__(self, batcher: Batcher):
        self._batcher, self.coming = batcher, True

    def arrive(self) -> None:
        if self.coming:
            self.coming = False
            self._batcher._arrived()


@dataclass
class _Waiting:
    bundle: Bundle
    tensors: list[np.ndarray]
    future: asyncio.Future


class Batcher:
    """calls: where the model runs (on the loop or in the pool, as MOERANK_MODEL_CALLS)."""

    def __init__(self, calls: Calls, wait_s: float, max_items: int):
        self.calls, self.wait_s, self.max_items = calls, wait_s, max_items
        self._coming = 0  # tickets not yet at the model
        self._pending: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task] = set()
        self._batches = 0  # batches taken so far: the pending one's number

    @contextmanager
    def expecting(self) -> Iterator[Ticket | None]:
        """Around one ranking call: while it has not reached the model, a batch may wait
        for it (no ticket when batching is off)."""
        if not self.wait_s:
            yield None
            return
        ticket = Ticket(self)
        self._coming += 1
        try:
            yield ticket
        finally:
            ticket.arrive()  # it failed before the model: nobody should wait for it

    async def score(
        self, bundle: Bundle, tensors: list[np.ndarray], ticket: Ticket | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model's outputs for one call (as Bundle.score), run alone or in a batch."""
        if ticket is None or bundle.batched is None:
            if ticket is not None:
                ticket.arrive()
            return await self.calls(bundle.score, *tensors)
        loop = asyncio.get_running_loop()
        if self._pending and self._padded(len(tensors[1])) > self.max_items:
            self._run_soon()  # this call starts the next batch
        waiting = _Waiting(bundle, tensors, loop.create_future())
        self._pending.append(waiting)
        if len(self._pending) == 1:  # after the calls already received have joined it:
            loop.call_soon(self._turn_ended, self._batches)
        ticket.arrive()
        if self._padded(0) >= self.max_items:
            self._run_soon()
        return await waiting.future

    def _turn_ended(self, batch: int) -> None:
        """The calls ready in this turn have joined: run, or wait for those on their way."""
        if batch != self._batches:  # that batch ran already (it was full)
            return
        if not self._coming:
            self._run_soon()
        elif self._pending and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.wait_s, self._run_soon)

    def _arrived(self) -> None:
        self._coming -= 1
        if not self._coming and self._timer is not None:  # the batch waited for this one
            self._run_soon()

    def _padded(self, items: int) -> int:
        """Rows the pending batch, with one more call of `items` items, would run."""
        longest = max([items, *(len(w.tensors[1]) for w in self._pending)])
        return (len(self._pending) + (items > 0)) * longest

    def _take(self) -> list[_Waiting]:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        self._batches += 1
        return batch

    def _run_soon(self) -> None:
        """Run the pending batch in a task of its own: a caller cancelled meanwhile (its
        client left) must not cut the others' run short."""
        batch = self._take()
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Waiting]) -> None:
        """Run each bundle's share of the batch (an experiment's calls may use several)."""
        groups: dict[int, list[_Waiting]] = {}
        for waiting in batch:
            groups.setdefault(id(waiting.bundle), []).append(waiting)
        for group in groups.values():
            bundle = group[0].bundle
            metrics.BATCH_SIZE.observe(len(group))
            try:
                if len(group) == 1:
                    results = [await self.calls(bundle.score, *group[0].tensors)]
                else:
                    results = await self.calls(bundle.score_requests, [w.tensors for w in group])
            except Exception as exc:  # every call of the group gets the error
                for waiting in group:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                continue
            for waiting, result in zip(group, results):
                if not waiting.future.done():  # a call whose client left is cancelled
                    waiting.future.set_result(result)
