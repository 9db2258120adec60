"""Item embeddings as stored between stages: the Redis key and value format, and the
item-embedding file.

Redis: one key per item, `<prefix>:emb:<encoder_id>:<item_id>`, so a model with a new
encoder can never read another encoder's vectors; the value is the raw little-endian
float32 or float16 vector, told apart by its length. export.embed_items writes them, the
service reads them and writes back what it encodes online.

File: one uncompressed `.npz` with `item_ids` (<U [n]), `embeddings` (float16 or float32
[n, dim]) and `encoder_id` (0-d <U): no pickles. Training (precompute), export
(embed_items) and the default bundle write it; the service preloads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def item_key(prefix: str, encoder_id: str, item_id: str) -> str:
    return f"{prefix}:emb:{encoder_id}:{item_id}"


def generation_key(prefix: str) -> str:
    """Set whenever a catalog is written whole (a preload, the embeddings job): its absence
    tells the service the store lost its contents (service/store_generation.py)."""
    return f"{prefix}:generation"


def to_bytes(vector: np.ndarray, dtype: str = "float32") -> bytes:
    return np.asarray(vector, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def from_bytes(raw: bytes, dim: int) -> np.ndarray:
    """A read-only view: float32 when len = 4·dim, float16 when len = 2·dim; anything else
    is rejected."""
    if len(raw) == 4 * dim:
        return np.frombuffer(raw, dtype="<f4")
    if len(raw) == 2 * dim:
        return np.frombuffer(raw, dtype="<f2")
    raise ValueError(f"embedding of {len(raw)} bytes does not fit dimension {dim}")


@dataclass(frozen=True)
class EmbeddingStore:
    """Precomputed item embeddings: row i of `embeddings` [n, dim] belongs to `item_ids[i]`."""

    encoder_id: str
    item_ids: np.ndarray  # <U strings [n]
    embeddings: np.ndarray  # float16 or float32 [n, dim]


def load_embedding_store(path: str | Path) -> EmbeddingStore:
    """Read an item-embedding file."""
    with np.load(path, allow_pickle=False) as arrays:
        return EmbeddingStore(
            encoder_id=str(arrays["encoder_id"]),
            item_ids=arrays["item_ids"],
            embeddings=arrays["embeddings"],
        )


def stored_item_ids(path: str | Path) -> tuple[str, np.ndarray]:
    """(encoder_id, item_ids) of an item-embedding file, without reading its vectors."""
    with np.load(path, allow_pickle=False) as arrays:
        return str(arrays["encoder_id"]), arrays["item_ids"]


def write_embedding_store(
    path: str | Path, item_ids: np.ndarray, embeddings: np.ndarray, encoder_id: str
) -> None:
    """Write the file under a temporary name and move it into place: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:  # a file object: numpy appends no ".npz"
        np.savez(
            file,
            item_ids=np.asarray(item_ids, dtype=str),
            embeddings=embeddings,
            encoder_id=np.array(encoder_id),
        )
    os.replace(partial, path)
