"""Redis clients from one URL: a single server, or a Redis Cluster.

- `redis://[user:password@]host:port/db`, `rediss://...`, `unix://...`: one server, parsed by
  redis-py itself.
- `redis+cluster://[user:password@]host:port[,host:port...]` (`rediss+cluster://` with TLS):
  a Redis Cluster through redis-py's cluster client. The listed nodes are where discovery
  starts; any reachable one will do, the client learns the rest from CLUSTER SLOTS. A cluster
  has only database 0, so a path or query in the URL is an error, not silently dropped.

The service (asyncio) and the embeddings job (sync) build their clients here, so both read the
same URLs the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS


@dataclass(frozen=True)
class ClusterURL:
    nodes: tuple[tuple[str, int], ...]
    options: dict[str, Any] = field(default_factory=dict)  # username, password, ssl


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterURL:
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError(f"not a cluster URL (redis+cluster://host:port,...): {url!r}")
    location, _, tail = rest.partition("/")
    if tail.strip("/0") or "?" in rest or "#" in rest:
        raise ValueError(f"a cluster URL has no database, path or options: {url!r}")
    options: dict[str, Any] = {"ssl": CLUSTER_SCHEMES[scheme.lower()]}
    if "@" in location:
        userinfo, location = location.rsplit("@", 1)
        username, has_password, password = userinfo.partition(":")
        options["username"] = unquote(username) or None
        options["password"] = unquote(password) if has_password else None
    nodes = []
    for node in location.split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"cluster node {node!r} is not host:port in {url!r}")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterURL(tuple(nodes), options)


def sync_client(url: str):
    """A blocking client: redis.Redis, or redis.RedisCluster for a cluster URL."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    if not is_cluster(url):
        return redis.Redis.from_url(url)
    parsed = parse_cluster_url(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes], **parsed.options
    )


def async_cluster_client(url: str, **connection):
    """An asyncio RedisCluster; `connection` holds the per-node pool and socket settings."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    parsed = parse_cluster_url(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
        **parsed.options,
        **connection,
    )
