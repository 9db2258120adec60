"""The baseline benchmarks/overhead.py compares moerank's server with: the app a user would
write around the same pipeline, with FastAPI parsing the body into the pydantic RankRequest
and serialising the answer through the pydantic RankResponse (response_model).

The pipeline is moerank's own (the Runtime the service builds, RankingService.rank_request),
so the two servers differ only in the HTTP layer, the parse and the response path. It reads
the same MOERANK_* settings and runs with uvicorn's defaults (no access log).

    MOERANK_BUNDLE_PATH=... MOERANK_PORT=8001 python benchmarks/plain_fastapi_app.py
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import orjson
import uvicorn
from fastapi import FastAPI

from service.runtime import Runtime
from service.schemas import RankRequest, RankResponse
from service.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.runtime = await Runtime.start(settings)
        yield
        await app.state.runtime.stop()

    app = FastAPI(title="plain FastAPI baseline", lifespan=lifespan)

    @app.post("/v1/rank", response_model=RankResponse)
    async def rank(request: RankRequest) -> dict:
        ranked = await app.state.runtime.ranking.rank_request(request)
        # The pipeline answers JSON bytes; a plain app returns the object and lets FastAPI
        # validate and serialise it through RankResponse (the decode costs ~20 us).
        return orjson.loads(ranked.body)

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"status": "ready"}

    return app


def main() -> None:
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
