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
from service.batcher import Batcher
from service.bundle import Bundle, providers
from service.catalog import Catalog
from service.circuit_breaker import CircuitBreaker
from service.cold_titles import ColdTitlePolicy, ColdTitles
from service.embedding_store import InProcessStore, RedisStore, StoreUnavailable
from service.embeddings import Calls, Embeddings, ItemEmbeddings, QueryEmbeddings
from service.events import ServedRequests
from service.lru import LRU
from service.models_registry import ModelRegistry, ServedModels, Source, configured_source
from service.ranking import Ranked, RankingService, TextLimits
from service.redis_cluster_store import RedisClusterStore
from service.redis_url import is_cluster
from service.reload_sync import ReloadFollower
from service.served_log import ServedLogWriter, served_record
from service.settings import Settings
from service.shadow import ShadowScorer
from service.store_generation import StoreGeneration
from service.write_back import WriteBack

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


def cold_title_policy(settings: Settings) -> ColdTitlePolicy:
    return ColdTitlePolicy(
        mode=settings.cold_items,
        max_encodes=settings.max_cold_encodes,
        max_chars=settings.max_cold_chars,
        cache_titles=settings.cold_title_cache,
        pending=settings.pending_encodes,
        store=settings.store_cold_titles,
    )


def batch_wait_s(settings: Settings) -> float:
    """MOERANK_BATCH_WAIT_MS, else batching on where the model runs on CUDA (where the
    model's share of a call is worth amortising) and off on CPU."""
    if settings.batch_wait_ms is not None:
        return settings.batch_wait_ms / 1000
    return 0.002 if providers(settings.provider)[0] == "CUDAExecutionProvider" else 0.0


def text_limits(settings: Settings) -> TextLimits:
    return TextLimits(settings.max_items, settings.max_title_chars, settings.max_query_chars)


async def start_generation(generation: StoreGeneration, file_store: bool, preloaded: int) -> None:
    """A preload is a new generation. Without a file store, adopt the store's generation. A
    preload that failed (the store down) leaves it unknown: the watch finds no marker, calls
    the store lost and preloads it once it answers."""
    try:
        if preloaded:
            await generation.mark()
        elif not file_store:
            await generation.adopt()
    except StoreUnavailable as exc:
        log.warning("embedding store generation unknown for now: %s", exc)


@dataclass
class Runtime:
    registry: ModelRegistry
    catalog: Catalog
    cold: ColdTitles
    generation: StoreGeneration
    ranking: RankingService
    store: InProcessStore | RedisStore
    executor: ThreadPoolExecutor
    follower: ReloadFollower | None  # several workers only
    tasks: list[asyncio.Task]  # reload following, store watching, loop-lag sampling
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
        item_cache = LRU(settings.lru_items)
        prefix, dtype = settings.key_prefix, settings.embedding_dtype
        catalog = Catalog(store, prefix, dtype, item_cache, pooled)
        cold = ColdTitles(cold_title_policy(settings), pooled, dtype, WriteBack(store))
        saved = None
        if settings.embedding_store_path:
            saved = await asyncio.to_thread(load_embedding_store, settings.embedding_store_path)

        async def preload() -> int:  # at start, and to refill a store that lost its contents
            encoder_id = registry.current.default_bundle.encoder_id
            return await catalog.preload(saved, encoder_id, settings.lru_preload_items)

        usable = saved is not None and saved.encoder_id == bundle.encoder_id
        generation = StoreGeneration(store, prefix, preload if usable else None)
        await start_generation(generation, usable, await preload() if saved else 0)
        embeddings = Embeddings(
            ItemEmbeddings(generation, prefix, dtype, item_cache, cold),
            QueryEmbeddings(LRU(settings.lru_queries), model_calls),
        )
        served = ServedRequests(settings.served_requests)
        batcher = Batcher(model_calls, batch_wait_s(settings), settings.batch_max_items)
        ranking = RankingService(registry, embeddings, batcher, text_limits(settings), served)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(watch_loop_lag())]
        if follower:

            async def follow(record: dict) -> None:
                await registry.reload(Source.from_json(record["source"]), record["reloaded"])

            tasks.append(loop.create_task(follower.follow(follow)))
        if isinstance(store, RedisStore):
            tasks.append(loop.create_task(generation.watch(settings.store_check_s)))
        log.info("ready: %s, %s store", sorted(registry.current.bundles), store.name)
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
            registry, catalog, cold, generation, ranking, store, executor, follower, tasks,
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
        for task in self.tasks:
            task.cancel()
        await self.shadows.stop()
        if self.served_log:
            await asyncio.to_thread(self.served_log.close)
        await self.cold.drain()
        await self.store.close()
        self.executor.shutdown(wait=True)
        metrics.worker_exited()
