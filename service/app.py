"""HTTP routes, thin: the work is done in runtime.py (start-up, reload) and ranking.py."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import request_response

from service import events, metrics
from service.auth import require_json, require_token
from service.body_limit import BodyLimit
from service.bundle import BundleError
from service.embedding_store import StoreUnavailable
from service.models_registry import reload_source
from service.openapi_doc import JSON, document_bodies, errors, json_body
from service.rejections import Rejected, from_validation_errors, parse_json
from service.request_metrics import CLIENT_CLOSED, RequestMetrics
from service.runtime import Runtime
from service.schemas import (
    ItemsStored,
    ItemsUpsert,
    RankRequest,
    RankResponse,
    ReloadRequest,
    ReloadResult,
)
from service.settings import Settings

log = logging.getLogger("uvicorn.error")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.runtime = await Runtime.start(settings)
        app.state.ready = True
        announce_curl(settings)
        yield
        app.state.ready = False
        await app.state.runtime.stop()

    app = FastAPI(
        title="moerank",
        version="0.1.0",
        description="Ranks e-commerce search results with a Mixture-of-Experts model.",
        lifespan=lifespan,
    )
    app.state.ready, app.state.settings = False, settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)  # the outermost: it times the 413s too
    document_bodies(
        app, [RankRequest, ItemsUpsert, ReloadRequest, events.EventBatch], settings.max_items
    )

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected):
        metrics.REJECTED.labels(exc.reason).inc()
        return JSONResponse({"detail": exc.errors}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return await rejected(request, from_validation_errors(list(exc.errors())))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, exc: ClientDisconnect):
        """The client went away before its request was read whole: its own outcome (status
        label "disconnected" in /metrics), one log line, no traceback; nobody reads the 499."""
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 413:
            message = f"request body larger than {settings.max_body_bytes} bytes"
            return await rejected(request, Rejected.one(413, "body_too_large", "body", message))
        return await http_exception_handler(request, exc)

    admin = [Depends(require_token("admin")), Depends(require_json)]

    @app.post(
        "/v1/rank",
        response_model=RankResponse,
        openapi_extra=json_body(RankRequest),
        responses=errors(400, 404, 413, 422),
    )
    async def rank(request: Request) -> Response:
        """Rank the candidate items of one query (highest score first). The answer's
        request_id is X-Request-ID when given; shadow scoring and the served log happen after
        the answer is sent."""
        runtime = app.state.runtime
        request_id = events.request_id_header(request.headers.get("x-request-id"))
        body = await request.body()
        with runtime.ranking.batcher.expecting() as ticket:  # batches may wait for this call
            ranked = await runtime.ranking.rank(body, request_id, ticket)
        after = BackgroundTask(runtime.after_answer, ranked)
        headers = {"x-request-id": ranked.request_id}
        return Response(ranked.body, media_type=JSON, headers=headers, background=after)

    # The endpoint takes the raw Request and returns a ready Response, so FastAPI's exit
    # stacks and dependency solving around it add only CPU per call: Starlette's plain
    # adapter calls it (same exception handlers; FastAPI still documents it). Issue 17.
    plain_route(app, "/v1/rank")

    @app.post(
        "/v1/events",
        response_model=events.EventsAccepted,
        openapi_extra=json_body(events.EventBatch),
        dependencies=[Depends(require_token("events")), Depends(require_json)],
        responses=errors(400, 401, 403, 413, 415, 422),  # 422: the good events are recorded
    )
    async def post_events(request: Request) -> Response:
        """Feedback on answers (impression, click, add_to_cart, purchase), by request_id."""
        runtime = app.state.runtime
        outcome = events.record(
            await request.body(),
            runtime.ranking.served,
            settings.max_events,
            runtime.served_log,
        )
        counts = {"accepted": outcome.accepted, "unknown_request_ids": outcome.unknown_request_ids}
        if outcome.errors:
            metrics.REJECTED.labels("invalid_event").inc()
            return JSONResponse({"detail": outcome.errors, **counts}, status_code=422)
        return JSONResponse(counts)

    @app.post(
        "/v1/items",
        response_model=ItemsStored,
        openapi_extra=json_body(ItemsUpsert),
        dependencies=admin,
        responses=errors(400, 401, 403, 413, 415, 422, 503),
    )
    async def upsert_items(request: Request) -> ItemsStored:
        """Store product texts: their embeddings are computed now and written to the store."""
        runtime = app.state.runtime
        payload = parse_json(ItemsUpsert, await request.body(), runtime.ranking.context)
        for text in payload.items:
            text.title = text.title[: settings.max_title_chars]
        bundle = runtime.registry.current.default_bundle
        try:
            stored = await runtime.catalog.upsert(bundle, payload.items)
        except StoreUnavailable as exc:
            raise Rejected.one(
                503, "store_unavailable", "items", f"embedding store: {exc}"
            ) from exc
        return ItemsStored(stored=stored, encoder_id=bundle.encoder_id)

    @app.get("/v1/models")
    async def models() -> dict:
        """The default model and the features it expects at the top level; every loaded model
        and experiment under `models` and `experiments`."""
        served = app.state.runtime.registry.current
        return {
            **served.default_bundle.describe(),
            "max_items": settings.max_items,
            **served.describe(),
        }

    @app.post(
        "/admin/reload",
        response_model=ReloadResult,
        openapi_extra=json_body(ReloadRequest, required=False),
        dependencies=admin,
        responses=errors(400, 401, 403, 404, 409, 413, 415, 422),
    )
    async def reload(request: Request) -> ReloadResult:
        """Load bundles beside the serving ones and swap them in once all of them load: one
        model (`model`, `bundle_path`), or a whole models file. A bad one changes nothing."""
        body = await request.body()
        payload = parse_json(ReloadRequest, body) if body else ReloadRequest()
        runtime = app.state.runtime
        source, names, model = reload_source(runtime.registry, settings, payload)
        try:
            served = await runtime.reload(source, names)
        except BundleError as exc:
            field = "models_file" if names is None and source.models_file else "bundle_path"
            raise Rejected.one(409, "bad_bundle", field, str(exc)) from exc
        bundle = served.bundles.get(model) or served.default_bundle
        return ReloadResult(
            model={"name": bundle.name, "version": bundle.version},
            bundle_path=str(served.paths.get(model, source.models_file or "")),
            models={n: {"name": b.name, "version": b.version} for n, b in served.bundles.items()},
        )

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "starting: not ready yet"}})
    async def readyz():
        """Readiness: the bundle is loaded, validated and warmed up."""
        if not app.state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        # Still ready when the store lost its contents: every replica shares the store, and
        # taking them all out of service would turn degraded answers into none.
        return {"status": "ready", "embedding_store": app.state.runtime.generation.state}

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        """Prometheus text format (all workers' samples with several workers)."""
        content, media_type = metrics.exposition()
        return Response(content, media_type=media_type)

    return app


def plain_route(app: FastAPI, path: str) -> None:
    """Call the endpoint at `path` (a function of one Request, returning a Response) through
    Starlette's request adapter instead of FastAPI's."""
    route = next(r for r in app.router.routes if getattr(r, "path", None) == path)
    route.app = request_response(route.endpoint)


def announce_curl(settings: Settings) -> None:
    """`make serve` ends with a command that ranks a real session."""
    example = settings.example_request_path
    if example and example.exists():
        url = f"http://{settings.host}:{settings.port}"
        print(
            f"\nmoerank is ready on {url}. Rank a real session with:\n\n"
            f"  curl -s -X POST {url}/v1/rank -H 'content-type: application/json' "
            f"-d @{example.resolve()}\n",
            flush=True,
        )
