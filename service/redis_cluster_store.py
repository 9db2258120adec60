"""Item embeddings in a Redis Cluster (`MOERANK_REDIS_URL=redis+cluster://host:port,...`).

A request's ~100 item keys hash to ~100 slots, and MGET refuses keys of different slots. Each
lookup here sends one command per node the keys live on, all nodes at once: a Lua script
flagged `allow-cross-slot-keys` (Redis >= 7.0) GETs every key that node holds, so a ranking
call costs one round trip and one command per node touched, with the key format unchanged.
benchmarks/redis_cluster_lookup.py measured it against redis-py's per-slot pipelines
(mget_nonatomic: one MGET per slot, ~100 commands) and against hash-tagged keys
(results/redis_cluster_lookup.json): the script needs the least client CPU per call.

The cluster's map of slots to nodes is learnt at start and re-learnt in the background after
a failed call (a dead master, a failover, a resharding): the re-discovery takes tens of ms,
more than a request's Redis deadline, so a new client learns the map off the request path
and replaces the old one when it is ready; requests meanwhile use the old map (degraded only
where it fails). Writes (off the request path) use redis-py's mset_nonatomic.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError, NoScriptError, RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import metrics
from service.circuit_breaker import BreakerState
from service.embedding_store import RedisStore, StoreUnavailable
from service.redis_url import async_cluster_client

log = logging.getLogger("uvicorn.error")

# ARGV, not KEYS: declared keys must share a slot even with the flag. Each GET is one key, so
# Redis still checks the node holds it ("non local key" otherwise: a stale slot map).
GET_SCRIPT = """#!lua flags=allow-cross-slot-keys,no-writes
local values = {}
for i, key in ipairs(ARGV) do values[i] = redis.call('GET', key) end
return values
"""


class RedisClusterStore(RedisStore):
    name = "redis"  # the same tier as one server: the metrics do not change with the topology
    # A slot no known node serves raises RedisClusterException, which is no RedisError.
    errors = (*RedisStore.errors, RedisClusterException)

    def __init__(self, url: str, timeout_s: float, bulk_timeout_s: float, pool_size: int,
                 breaker):  # fmt: skip
        # No retries inside redis-py: a failed call refreshes the slot map in the background.
        self._url, self._connection = (
            url,
            dict(
                max_connections=pool_size,  # per node
                socket_timeout=bulk_timeout_s,
                socket_connect_timeout=bulk_timeout_s,
                retry=Retry(NoBackoff(), 0),
            ),
        )
        self._client = async_cluster_client(url, **self._connection)
        self.timeout_s, self.bulk_timeout_s, self.breaker = timeout_s, bulk_timeout_s, breaker
        self._script_sha: str | None = None
        self._mapped = False  # a slot map has been learnt (requests wait for none before)
        self._refreshing: asyncio.Task | None = None
        self._retired: set[asyncio.Task] = set()

    async def open(self) -> None:
        """Learn the slot map before serving; if the cluster is unreachable now, serve
        degraded and keep trying in the background."""
        self._refresh()
        await asyncio.wait({self._refreshing}, timeout=self.bulk_timeout_s)
        if not self._mapped:
            log.warning("redis cluster unreachable at start: serving degraded meanwhile")

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not self._mapped:
            metrics.REDIS_SKIPPED.labels("mget").inc()
            raise StoreUnavailable("redis cluster: no slot map learnt yet")
        return await self._call("mget", self.timeout_s, self._get_per_node, keys)

    async def set_many(self, items: dict[str, bytes]) -> None:
        await self._call("mset", self.bulk_timeout_s, self._client.mset_nonatomic, items)

    async def _get_per_node(self, keys: list[str]) -> list[bytes | None]:
        rows_by_node: dict[str, list[int]] = {}
        nodes = {}
        for row, key in enumerate(keys):
            node = self._client.get_node_from_key(key)
            nodes[node.name] = node
            rows_by_node.setdefault(node.name, []).append(row)
        replies = await asyncio.gather(
            *(self._run_script(nodes[name], [keys[r] for r in rows])
              for name, rows in rows_by_node.items())
        )  # fmt: skip
        values: list[bytes | None] = [None] * len(keys)
        for rows, reply in zip(rows_by_node.values(), replies):
            for row, value in zip(rows, reply):
                values[row] = value
        return values

    async def _run_script(self, node, keys: list[str]) -> list[bytes | None]:
        if self._script_sha is not None:
            try:
                return await self._client.execute_command(
                    "EVALSHA", self._script_sha, 0, *keys, target_nodes=node
                )
            except NoScriptError:  # a node that never ran it (new, or restarted): send it whole
                pass
        return await self._client.execute_command("EVAL", GET_SCRIPT, 0, *keys, target_nodes=node)

    def _failed(self, exc: BaseException) -> None:
        """A refused connection, a slot served elsewhere or a cluster down: the map may be
        stale, re-learn it. A timeout is often just load: only once the breaker opens."""
        super()._failed(exc)
        slow = (
            asyncio.TimeoutError,
            RedisTimeoutError,
            asyncio.CancelledError,
            MaxConnectionsError,
        )
        if not isinstance(exc, slow) or self.breaker.state is BreakerState.OPEN:
            self._refresh()

    def _refresh(self) -> None:
        """Re-learn the slot map in the background (one refresh at a time)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._learn_slot_map())

    async def _learn_slot_map(self) -> None:
        """A new client learns the map (and loads the script), then replaces the old one,
        which is closed once the calls it may still carry are past their deadlines."""
        delay = 0.05
        while True:
            client = async_cluster_client(self._url, **self._connection)
            try:
                await asyncio.wait_for(client.initialize(), self.bulk_timeout_s)
                sha = await asyncio.wait_for(client.script_load(GET_SCRIPT), self.bulk_timeout_s)
            except Exception as exc:
                await client.aclose()
                log.warning("redis cluster: slot map not learnt (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)
                continue
            old, self._client, self._script_sha, self._mapped = self._client, client, sha, True
            retiring = asyncio.get_running_loop().create_task(self._retire(old))
            self._retired.add(retiring)
            retiring.add_done_callback(self._retired.discard)
            return

    async def _retire(self, client) -> None:
        await asyncio.sleep(self.bulk_timeout_s)
        await client.aclose()

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for retiring in list(self._retired):
            retiring.cancel()
        await self._client.aclose()
