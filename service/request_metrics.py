"""ASGI middleware timing every HTTP request into moerank_request_duration_seconds.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which wraps each request in extra
tasks and streams and costs more than a ranking call's parse.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics

CLIENT_CLOSED = 499  # what the app answers a request whose client went away (not a 4xx)


class RequestMetrics:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, observed = 500, False  # 500: what the client gets if the app raises

        def observe() -> None:
            nonlocal observed
            observed = True
            route = scope.get("route")  # the matched route template: a bounded label
            endpoint = getattr(route, "path", None) or "unmatched"
            outcome = "disconnected" if status == CLIENT_CLOSED else f"{status // 100}xx"
            metrics.REQUEST_DURATION.labels(endpoint, outcome).observe(
                time.perf_counter() - started
            )

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the last byte leaves, so a client that has its answer
                # already finds it in /metrics, whichever worker it asks.
                observe()
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            if not observed:
                observe()
