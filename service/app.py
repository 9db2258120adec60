"""HTTP routes (thin): the logic lives in ranking.py, features.py and bundle.py."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import metrics
from service.bundle import Bundle
from service.embedding_store import InProcessStore, RedisStore, item_key, to_bytes
from service.features import InputError
from service.ranking import RankingService
from service.schemas import RankRequest, RankResponse
from service.settings import Settings
from service.text_encoder import load_embedding_store

log = logging.getLogger("uvicorn.error")  # shown with uvicorn's own start-up lines


def load_bundle(settings: Settings) -> Bundle:
    return Bundle(
        settings.bundle_path,
        provider=settings.provider,
        threads=settings.intra_op_threads,
        encoder_variant=settings.encoder_variant,
    )


def make_store(settings: Settings):
    if settings.redis_url:
        return RedisStore(settings.redis_url, settings.redis_timeout_ms / 1000)
    return InProcessStore()


async def preload(store, settings: Settings, bundle: Bundle, batch: int = 5000) -> int:
    """Copy a precomputed file store into the serving store (vectors of this encoder only)."""
    saved = load_embedding_store(settings.embedding_store_path)
    if saved.encoder_id != bundle.encoder_id:
        log.warning(
            "%s holds %s vectors, the model needs %s: not loaded",
            settings.embedding_store_path,
            saved.encoder_id,
            bundle.encoder_id,
        )
        return 0
    for start in range(0, len(saved.item_ids), batch):
        ids = saved.item_ids[start : start + batch]
        vectors = saved.embeddings[start : start + batch]
        await store.set_many(
            {
                item_key(settings.key_prefix, bundle.encoder_id, str(i)): to_bytes(v, v.dtype.name)
                for i, v in zip(ids, vectors)
            }
        )
    log.info("preloaded %d item embeddings into the %s store", len(saved.item_ids), store.name)
    return len(saved.item_ids)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        bundle = load_bundle(settings)
        store = make_store(settings)
        service = RankingService(
            bundle, store, settings.key_prefix, settings.lru_items, settings.lru_queries
        )
        if settings.embedding_store_path:
            await preload(store, settings, bundle)
        for _ in range(3):  # warm-up: first runs allocate onnxruntime's buffers
            bundle.score(*bundle.example(100))
        metrics.MODEL_INFO.labels(bundle.name, bundle.version).set(1)
        app.state.service, app.state.ready = service, True
        yield
        app.state.ready = False
        await store.close()

    app = FastAPI(title="moerank", version="0.1.0", lifespan=lifespan)
    app.state.ready = False

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        length = int(request.headers.get("content-length") or 0)
        if length > settings.max_body_bytes:
            metrics.REJECTED.labels("body_too_large").inc()
            response = JSONResponse(
                {"detail": f"body of {length} bytes exceeds {settings.max_body_bytes}"}, 413
            )
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        metrics.REQUEST_DURATION.labels(endpoint, f"{response.status_code // 100}xx").observe(
            time.perf_counter() - started
        )
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        metrics.REJECTED.labels("validation").inc()
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(InputError)
    async def unfit(request: Request, exc: InputError):
        metrics.REJECTED.labels("unknown_feature").inc()
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.post("/v1/rank", response_model=RankResponse)
    async def rank(request: RankRequest):
        if len(request.items) > settings.max_items:
            metrics.REJECTED.labels("too_many_items").inc()
            return JSONResponse(
                {"detail": f"items: {len(request.items)} items, at most {settings.max_items}"},
                status_code=422,
            )
        return await app.state.service.rank(request)

    @app.get("/v1/models")
    async def models():
        return app.state.service.bundle.describe()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not app.state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return {"status": "ready"}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
