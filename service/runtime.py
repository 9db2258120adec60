"""Everything a worker serves with, built at start-up and closed at shutdown: the bundle
(loaded, validated, warmed up), the embedding store and caches, the inference thread pool."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from contract.embeddings import load_embedding_store
from service import metrics
from service.bundle import Bundle
from service.circuit_breaker import CircuitBreaker
from service.embedding_store import InProcessStore, RedisStore
from service.embeddings import Calls, EmbeddingResolver
from service.events import ServedRequests
from service.models_registry import ModelRegistry, ServedModels, Source, configured_source
from service.ranking import Ranked, RankingService
from service.redis_cluster_store import RedisClusterStore
from service.redis_url import is_cluster
from service.reload_sync import ReloadFollower
from service.served_log import ServedLogWriter, served_record
from service.settings import Settings
from service.shadow import ShadowScorer

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
    registry: ModelRegistry
    embeddings: EmbeddingResolver
    ranking: RankingService
    store: InProcessStore | RedisStore
    executor: ThreadPoolExecutor
    follower: ReloadFollower | None  # several workers only
    following: asyncio.Task | None
    watching: asyncio.Task  # the event loop's lag, into /metrics
    shadows: ShadowScorer
    served_log: ServedLogWriter | None

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        executor = ThreadPoolExecutor(settings.inference_threads, "moerank-infer")

        pooled = Calls(executor)
        model_calls = Calls(executor, on_loop=settings.model_calls == "event_loop")

        follower = ReloadFollower(settings.run_dir / "models.json") if settings.run_dir else None
        recorded = follower and follower.recorded()
        source = Source.from_json(recorded["source"]) if recorded else configured_source(settings)
        registry = await ModelRegistry.start(source, partial(load_bundle, settings))
        bundle = registry.current.default_bundle
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
        served = ServedRequests(settings.served_requests)
        ranking = RankingService(registry, embeddings, model_calls, settings.max_items, served)
        following = None
        if follower:

            async def follow(record: dict) -> None:
                await registry.reload(Source.from_json(record["source"]), record["reloaded"])

            following = asyncio.get_running_loop().create_task(follower.follow(follow))
        log.info("ready: %s, %s store", sorted(registry.current.bundles), store.name)
        watching = asyncio.get_running_loop().create_task(watch_loop_lag())
        shadows = ShadowScorer(settings.shadow_queue, embeddings)
        served_log = None
        if settings.served_log_dir:
            served_log = ServedLogWriter(
                settings.served_log_dir,
                settings.served_log_queue,
                settings.served_log_segment_bytes,
                settings.served_log_fsync_ms / 1000,
            )
        return cls(
            registry, embeddings, ranking, store, executor, follower, following, watching,
            shadows, served_log,
        )  # fmt: skip

    async def reload(self, source: Source, names: list[str] | None = None) -> ServedModels:
        """Serve the models `source` names, loading `names` again (None: all), here and in
        the other workers; BundleError (nothing changed) if any fails."""
        served = await self.registry.reload(source, names)
        if self.follower:
            self.follower.publish(
                source.to_json(), names if names is not None else list(served.bundles)
            )
        log.info("reloaded: now serving %s", {n: b.version for n, b in served.bundles.items()})
        return served

    async def after_answer(self, ranked: Ranked) -> None:
        """Work for an answer already sent: shadow scoring, the served log (both queued)."""
        self.shadows.offer(ranked)
        if self.served_log:
            # Not the item vectors themselves (150 KB a 100-item answer): whether each was one.
            text = ranked.route.bundle.text_dim
            has_vector = np.any(ranked.tensors[4] != 0, axis=1) if text else None
            slim = replace(ranked, tensors=[])
            self.served_log.write(partial(served_record, slim, has_vector), "served")

    async def stop(self) -> None:
        self.watching.cancel()
        if self.following:
            self.following.cancel()
        await self.shadows.stop()
        if self.served_log:
            await asyncio.to_thread(self.served_log.close)
        await self.embeddings.drain()
        await self.store.close()
        self.executor.shutdown(wait=True)
        metrics.worker_exited()
