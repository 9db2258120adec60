"""Request bodies over MOERANK_MAX_BODY_BYTES: a 413 in the service's JSON error shape,
whether the size is declared (Content-Length: answered before reading) or found while
reading a chunked body. The protocol (http_protocol.py) then reads and drops what the
client still sends, so a client that writes its whole body before reading gets the 413."""

from __future__ import annotations

import orjson
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # the app's 413 handler answers (app.py)
                raise HTTPException(413)
            return message

        await self.app(scope, limited, send)

    async def refuse(self, send: Send) -> None:
        metrics.REJECTED.labels("body_too_large").inc()
        body = orjson.dumps({"detail": [{"field": "body", "message": self.message()}]})
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def message(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"
