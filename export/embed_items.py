"""Precompute a catalog's product embeddings into the service's store, resumably.

    python -m export.embed_items (--catalog catalog.parquet | --spec spec.toml) --encoder DIR \\
        (--redis redis://127.0.0.1:6379/0 --prefix moerank | --out item_embeddings.npz) \\
        [--variant fp32] [--batch 256] [--dtype float16] [--threads 2]

The catalog (Parquet or CSV) needs columns item_id and item_title; with --spec, the items are
the rows of the data a spec describes (training.data.spec), by its item id and item text
columns, as training read them. To serve a score equal to the offline one, keep the encoder
variant fp32 and the stored dtype float32 (and MOERANK_EMBEDDING_DTYPE=float32): float16
vectors move scores by ~1e-4. Titles are encoded with the
exported ONNX encoder (`service.text_encoder.OnnxTextEncoder`, the service's own code), in
batches of texts of similar length, and written while the next batch encodes.

Stores (DESIGN.md):
- Redis: one key per item, `contract.embeddings.item_key(prefix, encoder_id, item_id)`,
  value the raw little-endian vector (`to_bytes`); each batch is one pipeline of SETs (on a
  Redis Cluster, `redis+cluster://host:port,...`, one pipeline per node).
- File: the `.npz` the service preloads (contract.embeddings: item_ids, embeddings,
  encoder_id). Finished batches are kept in `<out>.parts/` until the store is
  assembled, so an interrupted run loses at most the batches in flight.

Resumable: ids already in the store (for this encoder) are not encoded again, so a second run
over the same catalog encodes nothing, and a grown catalog encodes only its new items.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from contract.embeddings import (
    generation_key,
    item_key,
    load_embedding_store,
    stored_item_ids,
    to_bytes,
    write_embedding_store,
)
from service.redis_url import sync_client
from service.text_encoder import VARIANTS, OnnxTextEncoder
from training.data.catalog_file import read_catalog

logger = logging.getLogger(__name__)

DTYPES = ("float16", "float32")
EXISTS_CHUNK = 2000  # keys per pipelined EXISTS round trip


class RedisSink:
    """Writes vectors to Redis under the encoder's keys; `present` asks with pipelined EXISTS."""

    def __init__(self, url: str, prefix: str, encoder_id: str, dtype: str):
        self.client = sync_client(url)
        self.client.ping()  # fail now, not after the first batch has been encoded
        self.prefix, self.encoder_id, self.dtype = prefix, encoder_id, dtype

    def key(self, item_id: str) -> str:
        return item_key(self.prefix, self.encoder_id, item_id)

    def present(self, item_ids: Sequence[str]) -> np.ndarray:
        """bool [n]: which ids already have a vector from this encoder."""
        found = np.zeros(len(item_ids), dtype=bool)
        for start in range(0, len(item_ids), EXISTS_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for item_id in item_ids[start : start + EXISTS_CHUNK]:
                pipe.exists(self.key(item_id))
            found[start : start + EXISTS_CHUNK] = np.array(pipe.execute(), dtype=bool)
        return found

    def write(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        # SETs, not MSET: a cluster refuses an MSET whose keys live in different slots.
        pipe = self.client.pipeline(transaction=False)
        for item_id, vector in zip(item_ids, vectors):
            pipe.set(self.key(item_id), to_bytes(vector, self.dtype))
        pipe.execute()

    def finish(self) -> None:
        """A new generation marker: services that saw the store lose its contents learn
        that it holds a catalog again (service/store_generation.py)."""
        self.client.set(generation_key(self.prefix), uuid.uuid4().hex)
        self.client.close()


class FileSink:
    """The `.npz` file store; finished batches wait in `<out>.parts/` until `finish`."""

    def __init__(self, path: str | Path, encoder_id: str, dim: int, dtype: str):
        self.path, self.encoder_id, self.dim = Path(path), encoder_id, dim
        self.dtype = np.dtype(dtype)
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.next_part = len(list(self.parts.glob("part-*.npz")))  # left by an interrupted run
        self.known: set[str] = set()
        for ids, _ in self._stored(vectors=False):
            self.known.update(ids.tolist())
        self.parts.mkdir(parents=True, exist_ok=True)

    def _stored(self, vectors: bool = True):
        """(item_ids, embeddings or None) of the finished store and of every finished part."""
        files = [self.path] if self.path.exists() else []
        files += sorted(self.parts.glob("part-*.npz"))
        for file in files:
            if vectors:
                store = load_embedding_store(file)
                encoder_id, ids, embeddings = store.encoder_id, store.item_ids, store.embeddings
            else:
                (encoder_id, ids), embeddings = stored_item_ids(file), None
            if encoder_id != self.encoder_id:
                raise ValueError(
                    f"{file} holds vectors of encoder {encoder_id!r}, not {self.encoder_id!r}: "
                    "write to another file"
                )
            yield ids, embeddings

    def present(self, item_ids: Sequence[str]) -> np.ndarray:
        return np.array([i in self.known for i in item_ids], dtype=bool)

    def write(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        part = self.parts / f"part-{self.next_part:06d}.npz"
        self._save(part, np.asarray(item_ids, dtype=str), vectors.astype(self.dtype))
        self.next_part += 1

    def finish(self) -> None:
        """Assemble the store from the old store and the parts, then drop the parts."""
        if self.next_part or not self.path.exists():
            stored = list(self._stored())
            ids = np.concatenate([np.zeros(0, dtype=str), *(i for i, _ in stored)])
            vectors = np.concatenate(
                [np.zeros((0, self.dim), self.dtype), *(v.astype(self.dtype) for _, v in stored)]
            )
            self._save(self.path, ids, vectors)
        shutil.rmtree(self.parts)

    def _save(self, path: Path, item_ids: np.ndarray, vectors: np.ndarray) -> None:
        write_embedding_store(path, item_ids, vectors, self.encoder_id)


@dataclass(frozen=True)
class EmbedStats:
    catalog_items: int
    already_stored: int
    encoded: int
    seconds: float

    @property
    def items_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


def embed_items(
    catalog: str | Path,
    encoder: OnnxTextEncoder,
    sink: RedisSink | FileSink,
    batch_size: int = 256,
    progress: bool = True,
) -> EmbedStats:
    """Encode every catalog item the sink does not hold yet and write it; see the module doc.

    Pending items are sorted by title length so each batch pads little; batch i is written
    on a background thread while batch i + 1 encodes (onnxruntime releases the GIL).
    """
    start = time.perf_counter()
    item_ids, titles = read_catalog(catalog)
    present = sink.present(item_ids)
    pending = np.flatnonzero(~present)
    pending = pending[np.argsort([len(titles[i]) for i in pending], kind="stable")]
    with (
        ThreadPoolExecutor(max_workers=1) as writer,
        tqdm(total=len(pending), disable=not progress, unit="item", desc="embed") as bar,
    ):
        in_flight: deque = deque()
        for begin in range(0, len(pending), batch_size):
            rows = pending[begin : begin + batch_size]
            vectors = encoder.encode([titles[i] for i in rows], batch_size=64)
            in_flight.append(writer.submit(sink.write, item_ids[rows].tolist(), vectors))
            while len(in_flight) > 1:  # at most one batch written while the next encodes
                in_flight.popleft().result()
            bar.update(len(rows))
        for future in in_flight:
            future.result()
    sink.finish()
    return EmbedStats(
        catalog_items=len(item_ids),
        already_stored=int(present.sum()),
        encoded=len(pending),
        seconds=time.perf_counter() - start,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m export.embed_items", description=__doc__.splitlines()[0]
    )
    items = parser.add_mutually_exclusive_group(required=True)
    items.add_argument("--catalog", type=Path, help="Parquet or CSV catalog")
    items.add_argument("--spec", type=Path, help="a data spec: its item id and item text")
    parser.add_argument("--encoder", type=Path, required=True, help="text encoder directory")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--redis", help="Redis URL: redis://127.0.0.1:6379/0, or redis+cluster://host:port,..."
    )
    target.add_argument("--out", type=Path, help="file store (.npz) to write")
    parser.add_argument("--prefix", default="moerank", help="Redis key prefix (MOERANK_KEY_PREFIX)")
    parser.add_argument("--variant", default="fp32", choices=VARIANTS, help="encoder variant")
    parser.add_argument("--batch", type=int, default=256, help="items per encode/write batch")
    parser.add_argument("--dtype", default="float16", choices=DTYPES, help="stored vector type")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args(argv)

    encoder = OnnxTextEncoder(args.encoder, variant=args.variant, threads=args.threads)
    if args.redis:
        sink = RedisSink(args.redis, args.prefix, encoder.encoder_id, args.dtype)
    else:
        sink = FileSink(args.out, encoder.encoder_id, encoder.dim, args.dtype)
    stats = embed_items(args.catalog or args.spec, encoder, sink, batch_size=args.batch)
    print(
        f"{stats.encoded} items encoded ({stats.already_stored} of {stats.catalog_items} "
        f"already stored) in {stats.seconds:.1f} s: {stats.items_per_second:.1f} items/s"
    )


if __name__ == "__main__":
    main()
