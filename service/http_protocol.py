"""uvicorn's httptools protocol with the limits a server facing the network needs and uvicorn
lacks: a request line + headers cap (431), a deadline for receiving a whole request (408, or
the connection cut when the app is already waiting for the body), a cap on open connections
(closed at once beyond it, before they hold a descriptor for long), and after an early answer
(a 413 sent before the body arrived) the rest of the body read and dropped up to a bound, so
a client that sends its whole body before reading (Python's urllib) gets the answer instead
of a TCP reset. And an answer's head and body leave in one write (CoalescedWrites).

The limits come from Settings (MOERANK_MAX_HEADER_BYTES, MOERANK_REQUEST_TIMEOUT_S,
MOERANK_MAX_CONNECTIONS, MOERANK_DISCARD_BYTES); uvicorn builds one protocol per connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cache

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.settings import Settings


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    request_timeout_s: float
    max_connections: int
    discard_bytes: int


@cache
def http_limits() -> HttpLimits:
    s = Settings()
    return HttpLimits(s.max_header_bytes, s.request_timeout_s, s.max_connections, s.discard_bytes)


class CoalescedWrites:
    """A transport whose writes of one event-loop turn leave as one: uvicorn writes an
    answer's head and its body separately, and each write to a socket is a system call and a
    TCP segment of its own (the head's write was ~18% of the server's CPU at c=16 in a py-spy
    profile of benchmarks/overhead.py). The writes are joined at the end of the turn;
    close() sends what is pending first. Everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop, self._pending = transport, loop, []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = http_limits()
        self._head_bytes = 0  # received since the last request ended, while no head is complete
        self._in_body = False  # the current request's head is complete
        self._close_when_done = False  # the client asked to close: once answered and read
        self._refused = False  # answered at the protocol level: ignore what follows
        self._deadline: asyncio.TimerHandle | None = None
        self._discarded = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refused = True
            transport.abort()  # frees the descriptor now; the client sees a refused connection
            return
        self.transport = CoalescedWrites(transport, self.loop)  # type: ignore[assignment]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Counted before parsing: httptools holds a header whole until it ends, so a 10 MB
        header would sit in memory before any callback could refuse it."""
        if self._refused:
            return
        if not self._in_body:
            self._head_bytes += len(data)
        super().data_received(data)
        if not (self._refused or self._in_body) and self._head_bytes > self.limits.max_header_bytes:
            self._answer(431, "request line and headers too large")

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # the parser's error after our own answer
            super().send_400_response(msg)

    # Parser callbacks
    def on_message_begin(self) -> None:
        self._discarded, self._close_when_done = 0, False
        self._arm()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_body = True
        super().on_headers_complete()
        if self.cycle is not None and not self.cycle.keep_alive:
            # uvicorn would close right after the answer, with the body still arriving: the
            # client (urllib sends "Connection: close") gets a reset, not the answer. Close
            # once the answer is sent and the body read (or dropped), whichever is last.
            self.cycle.keep_alive, self._close_when_done = True, True

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and self.cycle.response_complete:
            self._discarded += len(body)  # answered early: drop, up to the bound
            if self._discarded > self.limits.discard_bytes:
                self.transport.close()
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_body, self._head_bytes = False, 0
        super().on_message_complete()
        if self._close_when_done and self.cycle is not None and self.cycle.response_complete:
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._close_when_done and not self._in_body:
            self.transport.close()

    # Limits

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.request_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        """The request was not received whole in time."""
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._in_body:  # the app is reading the body (it sees a disconnect), or answered
            self.transport.close()  # early and the rest is too slow to drop: no second answer
        else:
            self._answer(408, "request not received in time")

    def _answer(self, status: int, message: str) -> None:
        self._refused = True
        body = f'{{"detail":[{{"field":"request","message":"{message}"}}]}}'.encode()
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: application/json\r\nconnection: close\r\n"
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
        self.transport.close()
