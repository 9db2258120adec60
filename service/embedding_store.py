"""Item embeddings by id: an in-process store (the embedded default) or Redis.

Keys name the encoder that produced the vector (`<prefix>:emb:<encoder_id>:<item_id>`), so
a model with a new encoder can never read another encoder's vectors. Values are raw
little-endian float32 or float16 bytes, told apart by their length.
"""

from __future__ import annotations

import numpy as np


def item_key(prefix: str, encoder_id: str, item_id: str) -> str:
    return f"{prefix}:emb:{encoder_id}:{item_id}"


def to_bytes(vector: np.ndarray, dtype: str = "float32") -> bytes:
    return np.asarray(vector, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def from_bytes(raw: bytes, dim: int) -> np.ndarray:
    """float32 when len = 4·dim, float16 when len = 2·dim; anything else is rejected."""
    if len(raw) == 4 * dim:
        return np.frombuffer(raw, dtype="<f4")
    if len(raw) == 2 * dim:
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    raise ValueError(f"embedding of {len(raw)} bytes does not fit dimension {dim}")


class InProcessStore:
    """The embedded default: a dict in this process (`make serve` without Redis)."""

    name = "memory"

    def __init__(self):
        self._data: dict[str, bytes] = {}

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self._data.get(k) for k in keys]

    async def set_many(self, items: dict[str, bytes]) -> None:
        self._data.update(items)

    async def close(self) -> None:
        pass


class RedisStore:
    """Redis through redis-py asyncio: one MGET round trip per request, bounded by a timeout."""

    name = "redis"

    def __init__(self, url: str, timeout_s: float):
        import redis.asyncio as redis

        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, max_connections=64
        )

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return await self._client.mget(keys)

    async def set_many(self, items: dict[str, bytes]) -> None:
        await self._client.mset(items)

    async def close(self) -> None:
        await self._client.aclose()
