"""Catalog files in: the one reader that training (precompute), export (embed_items) and the
default bundle share. No torch here. The embeddings they write out follow
contract.embeddings.
"""

from __future__ import annotations

import logging
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
