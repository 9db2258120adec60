"""A minimal keep-alive HTTP/1.1 client on asyncio, for measuring a server on the same machine.

httpx.AsyncClient spends about 2 ms of CPU per /v1/rank call here, as much as the server's
own work: on 2 cores the client would starve the server it measures. This client writes a
pre-built request and reads back a status and a Content-Length body: tens of microseconds a
call. It speaks only what the service answers (no chunked bodies, no redirects, no TLS), and
fails loudly on anything else.
"""

from __future__ import annotations

import asyncio

import httptools


class HttpError(RuntimeError):
    """The connection failed or the answer was not HTTP/1.1 with a Content-Length body."""


def request_bytes(
    method: str, path: str, host: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.body: list[bytes] = []
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"bad response: {exc}"))

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._fail(HttpError(f"connection lost: {exc}"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))
        if not self.parser.should_keep_alive():
            self.closed = True
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def send(self, data: bytes) -> tuple[int, bytes]:
        self.body = []
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class RawClient:
    """A pool of up to `connections` keep-alive connections to host:port; `send` waits for a
    free one (that wait is part of the latency an open-loop caller measures)."""

    def __init__(self, host: str, port: int, connections: int, timeout_s: float = 10.0):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection

    async def send(self, data: bytes) -> tuple[int, bytes]:
        """(status, body) for one pre-built request (see `request_bytes`)."""
        async with self._slots:
            connection = None
            while self._idle and connection is None:
                candidate = self._idle.pop()
                connection = None if candidate.closed else candidate
            if connection is None:
                connection = await self._connect()
            try:
                answer = await asyncio.wait_for(connection.send(data), self.timeout_s)
            except BaseException:
                connection.transport.close()  # its state is unknown: never reuse it
                raise
            if not connection.closed:
                self._idle.append(connection)
            return answer

    def close(self) -> None:
        for connection in self._idle:
            connection.transport.close()
        self._idle.clear()
