"""Everything a worker serves with, built at start-up and closed at shutdown: the bundle
(loaded, validated, warmed up), the embedding store and caches, the inference thread pool."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from service import metrics
from service.bundle import Bundle
from service.circuit_breaker import CircuitBreaker
from service.embedding_store import InProcessStore, RedisStore
from service.embeddings import Calls, EmbeddingResolver
from service.model_slot import ModelSlot
from service.ranking import RankingService
from service.redis_cluster_store import RedisClusterStore
from service.redis_url import is_cluster
from service.reload_sync import ReloadFollower
from service.settings import Settings
from service.text_encoder import load_embedding_store

log = logging.getLogger("uvicorn.error")  # shown with uvicorn's own start-up lines


def load_bundle(settings: Settings, path: Path) -> Bundle:
    """Load, validate and warm up a bundle (blocking: run it in a thread)."""
    bundle = Bundle(
        path,
        provider=settings.provider,
        threads=settings.intra_op_threads,
        encoder_variant=settings.encoder_variant,
    )
    bundle.warm_up(settings.warmup_calls, settings.max_items)
    return bundle


async def watch_loop_lag(interval_s: float = 0.05) -> None:
    """With the model on the loop, a request waits for the calls ahead of it before the app
    sees it; a timer that fires late by x says a request arriving then waited about x."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, loop.time() - due))


def make_store(settings: Settings) -> InProcessStore | RedisStore:
    if not settings.redis_url:
        return InProcessStore()
    breaker = CircuitBreaker(
        settings.breaker_failures,
        settings.breaker_cooldown_s,
        on_change=lambda state: metrics.BREAKER_STATE.set(int(state)),
    )
    store = RedisClusterStore if is_cluster(settings.redis_url) else RedisStore
    return store(
        settings.redis_url,
        settings.redis_timeout_ms / 1000,
        settings.redis_bulk_timeout_s,
        settings.redis_pool_size,
        breaker,
    )


@dataclass
class Runtime:
    slot: ModelSlot
    embeddings: EmbeddingResolver
    ranking: RankingService
    store: InProcessStore | RedisStore
    executor: ThreadPoolExecutor
    follower: ReloadFollower | None  # several workers only
    following: asyncio.Task | None
    watching: asyncio.Task  # the event loop's lag, into /metrics

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        executor = ThreadPoolExecutor(settings.inference_threads, "moerank-infer")

        pooled = Calls(executor)
        model_calls = Calls(executor, on_loop=settings.model_calls == "event_loop")

        follower = ReloadFollower(settings.run_dir / "bundle.json") if settings.run_dir else None
        path = (follower and follower.recorded_path()) or settings.bundle_path
        bundle = await asyncio.to_thread(load_bundle, settings, path)
        store = make_store(settings)
        await store.open()
        embeddings = EmbeddingResolver(
            store,
            settings.key_prefix,
            settings.embedding_dtype,
            settings.lru_items,
            settings.lru_queries,
            pooled,
            model_calls,
            settings.cold_items,
            settings.pending_encodes,
        )
        if settings.embedding_store_path:
            saved = await asyncio.to_thread(load_embedding_store, settings.embedding_store_path)
            await embeddings.preload(saved, bundle.encoder_id, settings.lru_preload_items)
        slot = ModelSlot(bundle, partial(load_bundle, settings))
        ranking = RankingService(slot, embeddings, model_calls, settings.max_items)
        following = follower and asyncio.get_running_loop().create_task(follower.follow(slot))
        log.info("ready: %s %s, %s store", bundle.name, bundle.version, store.name)
        watching = asyncio.get_running_loop().create_task(watch_loop_lag())
        return cls(slot, embeddings, ranking, store, executor, follower, following, watching)

    async def reload(self, path: Path) -> Bundle:
        """Swap in the bundle at `path` here, and in the other workers (BundleError if bad)."""
        bundle = await self.slot.reload(path)
        if self.follower:
            self.follower.publish(path)
        log.info("reloaded: now serving %s %s from %s", bundle.name, bundle.version, path)
        return bundle

    async def stop(self) -> None:
        self.watching.cancel()
        if self.following:
            self.following.cancel()
        await self.embeddings.drain()
        await self.store.close()
        self.executor.shutdown(wait=True)
        metrics.worker_exited()
