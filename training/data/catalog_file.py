"""Catalog files in, item-embedding file stores out: the one reader and the one writer that
training (precompute), export (embed_items) and the default bundle share. No torch here.

The store is one uncompressed `.npz` with `item_ids` (<U [n]), `embeddings` (float16 or
float32 [n, dim]) and `encoder_id`; `service.text_encoder.load_embedding_store` reads it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def read_catalog(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(item_ids <U [n], titles) from a Parquet or CSV catalog (columns item_id, item_title).

    Rows without a title are skipped (the service encodes those online or degrades); an id
    that appears more than once keeps its first title.
    """
    path = Path(path)
    columns = ["item_id", "item_title"]
    name = path.name.lower()
    if name.endswith(".parquet"):
        frame = pd.read_parquet(path, columns=columns)
    elif name.endswith((".csv", ".csv.gz")):
        frame = pd.read_csv(path, usecols=columns, dtype={"item_id": str})
    else:
        raise ValueError(f"catalog must be .parquet, .csv or .csv.gz, got {path}")
    missing = frame["item_title"].isna()
    if missing.any():
        logger.warning("%s: skipping %d items without a title", path, int(missing.sum()))
    frame = frame[~missing]
    frame = frame.assign(item_id=frame["item_id"].astype(str))
    duplicated = frame["item_id"].duplicated()
    if duplicated.any():
        logger.warning("%s: %d repeated item_ids keep their first title", path, duplicated.sum())
    frame = frame[~duplicated]
    return frame["item_id"].to_numpy(dtype=str), frame["item_title"].astype(str).tolist()


def write_embedding_store(
    path: str | Path, item_ids: np.ndarray, embeddings: np.ndarray, encoder_id: str
) -> None:
    """Write the store to a temporary name and move it into place: never half a file."""
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
