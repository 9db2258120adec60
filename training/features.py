"""The feature map: every model input described once, shared by training, export and serving.

It is written into the bundle manifest, so the service turns a request into exactly the
tensors the model was trained on without importing any training code.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from training.data import schema

OOV_INDEX = 0  # index 0 of every vocabulary: unknown or rare values


@dataclass(frozen=True)
class CategoricalField:
    """A categorical input; `vocab[i]` has index i + 1, everything else maps to OOV_INDEX."""

    name: str
    level: str  # "request" (one value per query) or "item"
    vocab: tuple[str, ...]

    @property
    def cardinality(self) -> int:
        return len(self.vocab) + 1

    def lookup(self) -> dict[str, int]:
        return {value: i + 1 for i, value in enumerate(self.vocab)}


@dataclass(frozen=True)
class NumericField:
    """A numeric input; the model z-scores it in its graph with these statistics."""

    name: str
    mean: float
    std: float


@dataclass(frozen=True)
class FeatureSpec:
    request_categorical: tuple[CategoricalField, ...]
    item_categorical: tuple[CategoricalField, ...]
    numeric: tuple[NumericField, ...]
    text_dim: int = 0  # 0: the model reads no text embeddings
    encoder_id: str = ""

    def request_field(self, name: str) -> int:
        """Position of a request-level categorical field in the `request_cat` tensor."""
        names = [f.name for f in self.request_categorical]
        if name not in names:
            raise ValueError(f"unknown request-level field {name!r}; have {names}")
        return names.index(name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        def cats(items):
            return tuple(CategoricalField(i["name"], i["level"], tuple(i["vocab"])) for i in items)

        return cls(
            request_categorical=cats(d["request_categorical"]),
            item_categorical=cats(d["item_categorical"]),
            numeric=tuple(NumericField(**n) for n in d["numeric"]),
            text_dim=int(d["text_dim"]),
            encoder_id=d["encoder_id"],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


REQUEST_CATEGORICAL = (
    schema.QUERY_CATEGORY,
    schema.TOP_CATEGORY,
    schema.SCENARIO,
    schema.PLATFORM,
)


def build_spec(
    frame: pd.DataFrame,
    numeric: tuple[str, ...] = schema.NUMERIC_FEATURES,
    item_categorical: tuple[str, ...] = schema.CATEGORICAL_FEATURES,
    request_categorical: tuple[str, ...] = REQUEST_CATEGORICAL,
    min_count: int = 1,
    text_dim: int = 0,
    encoder_id: str = "",
) -> FeatureSpec:
    """Vocabularies and normalisation statistics from the training split."""

    def field(name: str, level: str) -> CategoricalField:
        counts = Counter(frame[name].astype(str))
        vocab = sorted(v for v, c in counts.items() if c >= min_count)
        return CategoricalField(name, level, tuple(vocab))

    stats = []
    for name in numeric:
        values = frame[name].to_numpy(np.float64)
        std = float(values.std())
        stats.append(NumericField(name, float(values.mean()), std if std > 1e-12 else 1.0))
    return FeatureSpec(
        request_categorical=tuple(field(n, "request") for n in request_categorical),
        item_categorical=tuple(field(n, "item") for n in item_categorical),
        numeric=tuple(stats),
        text_dim=text_dim,
        encoder_id=encoder_id,
    )


def encode_categorical(fields: tuple[CategoricalField, ...], frame: pd.DataFrame) -> np.ndarray:
    """[n, len(fields)] int64 indices, OOV_INDEX for values outside the vocabulary."""
    out = np.zeros((len(frame), len(fields)), dtype=np.int64)
    for j, f in enumerate(fields):
        codes = frame[f.name].astype(str).map(f.lookup())
        out[:, j] = codes.fillna(OOV_INDEX).to_numpy(np.int64)
    return out


def encode_frame(spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row-aligned model inputs (without text): request_cat, item_cat, numeric (raw)."""
    return {
        "request_cat": encode_categorical(spec.request_categorical, frame),
        "item_cat": encode_categorical(spec.item_categorical, frame),
        "numeric": frame[[f.name for f in spec.numeric]].to_numpy(np.float32, copy=True),
    }
