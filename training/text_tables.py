"""Query and product embeddings for a data set, computed once and cached beside the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from contract import schema
from contract.embeddings import write_embedding_store
from training.dataset import TextTables


def _cached_encode(texts: list[str], path: Path, progress: bool) -> np.ndarray:
    from training import text_encoder

    if path.exists():
        cached = np.load(path, allow_pickle=False)
        if list(cached["texts"]) == texts:
            return cached["vectors"]
    vectors = text_encoder.encode(texts, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, texts=np.array(texts, dtype=object).astype(str), vectors=vectors)
    return vectors


def build_text_tables(
    frame: pd.DataFrame, catalog: pd.DataFrame, cache_dir: Path, progress: bool = True
) -> TextTables:
    """Embeddings of every distinct query text in `frame` and every catalog title.

    catalog: item_id, item_title. Cached in cache_dir/<encoder id>/, so a new encoder
    never reuses another's vectors.
    """
    from training.text_encoder import ENCODER_ID

    cache = Path(cache_dir) / ENCODER_ID
    queries = sorted(frame[schema.QUERY_TEXT].unique())
    query_vectors = _cached_encode(queries, cache / "queries.npz", progress)
    ids = catalog[schema.ITEM_ID].astype(str).tolist()
    titles = catalog[schema.ITEM_TITLE].astype(str).tolist()
    item_vectors = _cached_encode(titles, cache / "items.npz", progress)
    return TextTables(
        query_table=torch.from_numpy(np.ascontiguousarray(query_vectors, np.float32)),
        query_index={q: i for i, q in enumerate(queries)},
        item_table=torch.from_numpy(np.ascontiguousarray(item_vectors, np.float32)),
        item_index={item: i for i, item in enumerate(ids)},
    )


def write_item_store(tables: TextTables, path: Path, encoder_id: str) -> None:
    """The item vectors as the file store the service preloads (service.text_encoder format)."""
    ids = sorted(tables.item_index, key=tables.item_index.get)
    vectors = tables.item_table.numpy().astype(np.float16)
    write_embedding_store(path, np.array(ids, dtype=str), vectors, encoder_id)
