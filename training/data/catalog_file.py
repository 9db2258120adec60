"""Catalog files in: the one reader that training (precompute), export (embed_items) and the
default bundle share. No torch here. The embeddings they write out follow
contract.embeddings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from contract.schema import ITEM_ID, ITEM_TITLE

logger = logging.getLogger(__name__)


SPEC_SUFFIXES = (".toml", ".yaml", ".yml")


def read_catalog(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(item_ids <U [n], titles) from a Parquet or CSV catalog (columns item_id, item_title),
    or from the data a spec describes (training.data.spec: its item id and item text columns,
    whatever they are called; the same rows and texts training encoded).

    Rows without a title are skipped (the service encodes those online or degrades); an id
    that appears more than once keeps its first title.
    """
    path = Path(path)
    columns = ["item_id", "item_title"]
    name = path.name.lower()
    if name.endswith(SPEC_SUFFIXES):
        frame = _spec_items(path)
    elif name.endswith(".parquet"):
        frame = pd.read_parquet(path, columns=columns)
    elif name.endswith((".csv", ".csv.gz")):
        frame = pd.read_csv(path, usecols=columns, dtype={"item_id": str})
    else:
        raise ValueError(f"catalog must be .parquet, .csv, .csv.gz or a data spec, got {path}")
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


def _spec_items(path: Path) -> pd.DataFrame:
    """item_id, item_title of the data a spec describes, read as training reads it."""
    from training.data.spec import load_spec, read_table

    spec = load_spec(path)
    if not spec.has_text:
        raise ValueError(
            f"{path}: the spec names no item_text column, so there is nothing to embed"
        )
    return read_table(spec)[[ITEM_ID, ITEM_TITLE]]
