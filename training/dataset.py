"""Impressions as tensors: session-level splits, row-aligned model inputs, batches.

Text embeddings are kept as tables of unique vectors plus a row index into them, so a
million impressions do not hold a million copies of 384 floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from contract import schema
from contract.features import FeatureSpec
from training.features import encode_frame


def split_sessions(
    frame: pd.DataFrame, valid: float = 0.1, test: float = 0.1, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train/valid/test by whole sessions, deterministic in `seed`."""
    sessions = frame[schema.SESSION_ID].unique()
    rng = np.random.default_rng(seed)
    draw = pd.Series(rng.random(len(sessions)), index=sessions)
    u = frame[schema.SESSION_ID].map(draw).to_numpy()
    is_test, is_valid = u < test, (u >= test) & (u < test + valid)
    is_train = ~(is_test | is_valid)
    return frame[is_train], frame[is_valid], frame[is_test]


@dataclass
class TextTables:
    """Unique embeddings: query_table [Q, D] and item_table [M, D] (float32, unit length)."""

    query_table: torch.Tensor
    query_index: dict[str, int]
    item_table: torch.Tensor
    item_index: dict[str, int]


@dataclass
class TensorData:
    """Row-aligned tensors for one split; batch(rows) gives model inputs."""

    request_cat: torch.Tensor  # [n, r] int64
    item_cat: torch.Tensor  # [n, c] int64
    numeric: torch.Tensor  # [n, f] float32, raw
    labels: torch.Tensor  # [n, T] float32
    sessions: np.ndarray  # [n] session ids
    query_rows: torch.Tensor | None = None  # [n] index into text.query_table
    item_rows: torch.Tensor | None = None  # [n] index into text.item_table
    text: TextTables | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs = {
            "request_cat": self.request_cat[rows],
            "item_cat": self.item_cat[rows],
            "numeric": self.numeric[rows],
        }
        if self.text is not None:
            query_rows, item_rows = self.query_rows[rows], self.item_rows[rows]
            inputs["query_emb"] = self.text.query_table[query_rows]
            inputs["item_emb"] = self.text.item_table[item_rows]
            # The table rows too, for a model that encodes text itself (text_tail.FineTunedText).
            inputs.update(query_rows=query_rows, item_rows=item_rows)
        return inputs


def to_tensors(
    spec: FeatureSpec, frame: pd.DataFrame, tasks: tuple[str, ...], text: TextTables | None
) -> TensorData:
    encoded = encode_frame(spec, frame)
    data = TensorData(
        request_cat=torch.from_numpy(encoded["request_cat"]),
        item_cat=torch.from_numpy(encoded["item_cat"]),
        numeric=torch.from_numpy(encoded["numeric"]),
        labels=torch.from_numpy(frame[list(tasks)].to_numpy(np.float32, copy=True)),
        sessions=frame[schema.SESSION_ID].to_numpy(),
    )
    if spec.text_dim:
        if text is None:
            raise ValueError("the feature spec has text but no text tables were given")
        data.text = text
        data.query_rows = torch.from_numpy(
            frame[schema.QUERY_TEXT].map(text.query_index).to_numpy(np.int64, copy=True)
        )
        data.item_rows = torch.from_numpy(
            frame[schema.ITEM_ID].astype(str).map(text.item_index).to_numpy(np.int64, copy=True)
        )
    return data


def category_counts(spec: FeatureSpec, data: TensorData) -> torch.Tensor:
    """Training examples per query-category index (for MMoE buckets and size analyses)."""
    column = spec.request_field(schema.QUERY_CATEGORY)
    cardinality = spec.request_categorical[column].cardinality
    return torch.bincount(data.request_cat[:, column], minlength=cardinality)
