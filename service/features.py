"""A validated request -> the graph's input tensors, counting what had to be imputed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.bundle import Bundle
from service.schemas import RankRequest


class InputError(ValueError):
    """The request is well-formed JSON but does not fit the loaded model (a 4xx)."""


@dataclass
class ModelInputs:
    request_cat: np.ndarray  # [1, r] int64
    item_cat: np.ndarray  # [B, c] int64
    numeric: np.ndarray  # [B, f] float32
    imputed_features: int
    oov_categories: int


QUERY_ATTRIBUTES = {
    "query_category": "category",
    "top_category": "top_category",
    "scenario": "scenario",
    "platform": "platform",
}


def build_inputs(bundle: Bundle, request: RankRequest) -> ModelInputs:
    """Vocabulary lookups (OOV -> 0), numeric matrix with training-mean imputation.

    Unknown numeric or categorical feature names are errors: a typo must not silently
    turn into an imputed value.
    """
    oov = 0
    request_cat = np.zeros((1, len(bundle.request_fields)), np.int64)
    for j, field in enumerate(bundle.request_fields):
        value = getattr(request.query, QUERY_ATTRIBUTES.get(field.name, field.name), None)
        index = field.lookup.get(value, 0) if value is not None else 0
        request_cat[0, j] = index
        oov += index == 0
    items = request.items
    numeric = np.tile(bundle.numeric_means, (len(items), 1))
    item_cat = np.zeros((len(items), len(bundle.item_fields)), np.int64)
    known_cats = {f.name for f in bundle.item_fields}
    provided = 0
    for row, item in enumerate(items):
        for name, value in item.features.items():
            column = bundle.numeric_index.get(name)
            if column is None:
                raise InputError(
                    f"items[{row}].features: unknown feature {name!r}; "
                    f"the model expects {bundle.numeric_names}"
                )
            numeric[row, column] = value
        provided += len(item.features)
        unknown = set(item.categorical) - known_cats
        if unknown:
            raise InputError(
                f"items[{row}].categorical: unknown feature(s) {sorted(unknown)}; "
                f"the model expects {sorted(known_cats)}"
            )
        for j, field in enumerate(bundle.item_fields):
            value = item.categorical.get(field.name)
            index = field.lookup.get(value, 0) if value is not None else 0
            item_cat[row, j] = index
            oov += index == 0
    imputed = len(items) * len(bundle.numeric_names) - provided
    return ModelInputs(request_cat, item_cat, numeric, imputed, int(oov))
