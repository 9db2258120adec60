"""The feature map built from training data, and training data encoded with it.

The map's types and the OOV rule are contract.features: it goes into the checkpoint and the
bundle manifest, so the service turns a request into exactly the tensors the model was
trained on without importing any training code.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from contract import schema
from contract.features import (
    OOV_INDEX,
    REQUEST_CATEGORICAL,
    CategoricalField,
    FeatureSpec,
    NumericField,
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
        counts = Counter(frame[name].dropna().astype(str))  # missing: OOV, as when served
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
