"""Item embeddings by id: an in-process store (the embedded default) or Redis.

Keys and values follow contract.embeddings (`<prefix>:emb:<encoder_id>:<item_id>` -> the raw
little-endian vector).

All stores have the same async interface (a Redis Cluster's is in service/redis_cluster_store.py);
only Redis can fail, and it fails as
`StoreUnavailable` (after a timeout, or at once while its circuit breaker is open), which the
ranking path turns into a degraded answer instead of an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import metrics
from service.circuit_breaker import BreakerOpen, CircuitBreaker


class StoreUnavailable(RuntimeError):
    """The store did not answer (error, timeout, or breaker open)."""


class InProcessStore:
    """The embedded default: a dict in this process (`make serve` without Redis)."""

    name = "memory"

    def __init__(self):
        self._data: dict[str, bytes] = {}

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self._data.get(k) for k in keys]

    async def set_many(self, items: dict[str, bytes]) -> None:
        self._data.update(items)

    async def open(self) -> None:
        pass

    async def set_many_if_absent(self, items: dict[str, bytes]) -> int:
        before = len(self._data)
        for key, value in items.items():
            self._data.setdefault(key, value)
        return len(self._data) - before

    async def close(self) -> None:
        pass


class RedisStore:
    """Redis through redis-py asyncio (hiredis parser, a bounded connection pool): one MGET
    round trip per request, each call bounded by `timeout_s` (pool wait and connect included)
    and guarded by a circuit breaker. Bulk writes get `bulk_timeout_s`."""

    name = "redis"
    errors: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)

    def __init__(
        self,
        url: str,
        timeout_s: float,
        bulk_timeout_s: float,
        pool_size: int,
        breaker: CircuitBreaker,
    ):
        # No retries inside redis-py: a retry doubles the wait, and the breaker plus the
        # degraded answer already handle a failed call. The socket timeouts are only a
        # backstop; each call's own deadline is the asyncio.wait_for in _call.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=bulk_timeout_s,
            socket_timeout=bulk_timeout_s,
            socket_connect_timeout=bulk_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = redis.Redis(connection_pool=pool)
        self.timeout_s, self.bulk_timeout_s, self.breaker = timeout_s, bulk_timeout_s, breaker

    async def open(self) -> None:
        """Connections open on first use."""

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return await self._call("mget", self.timeout_s, self._client.mget, keys)

    async def set_many(self, items: dict[str, bytes]) -> None:
        """Off the request path (preload, /v1/items): the bulk timeout."""
        await self._call("mset", self.bulk_timeout_s, self._client.mset, items)

    async def set_many_if_absent(self, items: dict[str, bytes]) -> int:
        """SET NX each key (one pipelined round trip); returns how many were written. Decided
        by Redis when the write lands, so a write delayed by a stall never replaces a vector
        stored meanwhile."""

        async def set_nx() -> list:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value, nx=True)
                return await pipe.execute()

        written = await self._call("setnx", self.bulk_timeout_s, set_nx)
        return sum(bool(w) for w in written)

    async def _call(self, operation: str, timeout_s: float, command: Callable, *args):
        try:
            self.breaker.before_call()
        except BreakerOpen as exc:
            metrics.REDIS_SKIPPED.labels(operation).inc()
            raise StoreUnavailable(str(exc)) from exc
        try:
            result = await asyncio.wait_for(command(*args), timeout_s)
        except self.errors as exc:
            self._failed(exc)
            metrics.REDIS_ERRORS.labels(operation, _error_kind(exc)).inc()
            raise StoreUnavailable(f"redis {operation}: {type(exc).__name__}") from exc
        except BaseException as exc:  # cancelled with the request: its outcome is unknown
            self._failed(exc)
            raise
        self.breaker.success()
        return result

    def _failed(self, exc: BaseException) -> None:
        self.breaker.failure()

    async def claim(self, key: str, ttl_s: float) -> bool:
        """SET NX with an expiry: True for the one caller that gets it (a lease)."""
        lease = partial(self._client.set, key, b"1", nx=True, px=max(1, int(ttl_s * 1000)))
        return bool(await self._call("claim", self.bulk_timeout_s, lease))

    async def close(self) -> None:
        await self._client.aclose()


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, RedisTimeoutError)):
        return "timeout"
    if isinstance(exc, (RedisConnectionError, OSError)):
        return "connection"
    return "other"
