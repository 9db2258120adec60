"""Cold items: a title in the request but no stored vector for the id.

The title is the caller's, so its vector serves that call (and later calls that send the
same title): it is cached in-process by (encoder, title), never by item id, so no caller can
set the vector another caller's title-less item gets. It reaches the shared store only when
MOERANK_STORE_COLD_TITLES allows, and then never over a stored vector (write_back.py).

Cost is bounded per call: at most `max_encodes` titles and `max_chars` characters of them
are encoded (inline) or queued (background); the rest rank with the zero vector, counted in
`degraded.cold_encodes_skipped`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from contract.embeddings import to_bytes
from service import metrics
from service.background_encoder import BackgroundEncoder
from service.bundle import Bundle
from service.lru import LRU
from service.write_back import WriteBack


@dataclass(frozen=True)
class ColdTitlePolicy:
    mode: str = "background"  # "background": zero vector now, encoded after; "inline": now
    max_encodes: int = 32  # titles encoded or queued per call
    max_chars: int = 4096  # characters of those titles per call
    cache_titles: int = 10_000  # in-process (encoder, title) -> vector entries
    pending: int = 10_000  # titles queued for the background encoder
    store: bool = False  # also SET NX into the shared store


class ColdTitles:
    """`resolve` fills the rows of cold items it can; `calls` runs inline encodes."""

    def __init__(self, policy: ColdTitlePolicy, calls, dtype: str, write_back: WriteBack):
        self.policy, self._run, self.dtype = policy, calls, np.dtype(dtype)
        self.cache = LRU(policy.cache_titles)
        self.background = BackgroundEncoder(policy.pending, self._encoded)
        self.write_back = write_back

    async def resolve(
        self, bundle: Bundle, cold: dict[int, tuple[str, str]], out: np.ndarray, degraded: dict
    ) -> None:
        """cold: row -> (the id's store key, its title). Fills `out` for the rows it can."""
        wanted: dict[int, tuple[str, str]] = {}
        for row, (key, title) in cold.items():
            vector = self.cache.get((bundle.encoder_id, title))
            if vector is None:
                wanted[row] = (key, title)
            else:
                out[row] = vector
        metrics.EMBEDDING_LOOKUPS.labels("title_cache", "hit").inc(len(cold) - len(wanted))
        metrics.EMBEDDING_LOOKUPS.labels("title_cache", "miss").inc(len(wanted))
        taken = self._within_limits(wanted)
        skipped = len(wanted) - len(taken)
        degraded["cold_encodes_skipped"] = skipped
        metrics.EMBEDDING_LOOKUPS.labels("encoder", "skipped").inc(skipped)
        if not taken:
            return
        if self.policy.mode == "inline":
            titles = [title for _, title in taken.values()]
            vectors = (await self._run(bundle.encoder.encode, titles)).astype(self.dtype)
            out[list(taken)] = vectors
            self._encoded(bundle, [self._job(bundle, *taken[row]) for row in taken], vectors)
            metrics.EMBEDDING_LOOKUPS.labels("encoder", "hit").inc(len(taken))
            degraded["online_encodes"] = len(taken)
        else:
            jobs = {self._job(bundle, key, title): title for key, title in taken.values()}
            self.background.submit(bundle, jobs)
            metrics.EMBEDDING_LOOKUPS.labels("encoder", "deferred").inc(len(taken))
            degraded["deferred_encodes"] = len(taken)

    def _within_limits(self, wanted: dict[int, tuple[str, str]]) -> dict[int, tuple[str, str]]:
        taken, chars = {}, 0
        for row, (key, title) in wanted.items():
            if len(taken) == self.policy.max_encodes or chars + len(title) > self.policy.max_chars:
                break
            taken[row], chars = (key, title), chars + len(title)
        return taken

    def _job(self, bundle: Bundle, key: str, title: str) -> Hashable:
        """What an encode is known by: (encoder, title), plus the store key when storing
        (without it, two ids with one title are encoded once)."""
        return (bundle.encoder_id, title, key if self.policy.store else None)

    def _encoded(self, bundle: Bundle, jobs: list[Hashable], vectors: np.ndarray) -> None:
        vectors = vectors.astype(self.dtype, copy=False)
        for (encoder_id, title, _), vector in zip(jobs, vectors):
            self.cache.put((encoder_id, title), vector)
        if self.policy.store:
            self.write_back.write(
                {
                    key: to_bytes(vector, self.dtype.name)
                    for (_, _, key), vector in zip(jobs, vectors)
                }
            )

    async def drain(self) -> None:
        await self.background.drain()
        await self.write_back.drain()
