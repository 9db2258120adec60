"""A validated request -> the graph's input tensors, counting what had to be imputed."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import numpy as np

from contract.features import OOV_INDEX, QUERY_ATTRIBUTES
from service.bundle import Bundle
from service.item_columns import ItemColumns
from service.rank_body import Query
from service.rejections import Rejected


@dataclass
class ModelInputs:
    request_cat: np.ndarray  # [1, r] int64
    item_cat: np.ndarray  # [B, c] int64
    numeric: np.ndarray  # [B, f] float32
    imputed_features: int
    oov_categories: int


def build_inputs(bundle: Bundle, query: Query, columns: ItemColumns) -> ModelInputs:
    """Vocabulary lookups (OOV -> OOV_INDEX), numeric matrix with training-mean imputation.

    A query attribute the model reads (category, top_category, scenario, platform) that the
    request leaves out takes the OOV index, as an unseen value does, and is counted in
    oov_categories; one the model does not read is ignored. So no attribute is demanded of a
    request, and a model that reads none answers a request that has none.

    Unknown numeric or categorical feature names are a 422: a typo must not silently turn
    into an imputed value. No Python statement runs per item: each model column is one numpy
    or C-level pass over the request's column. A value not sent is None, which numpy reads
    as NaN; a request cannot send a NaN, so NaN marks exactly what to impute. (Counting
    with list.count(None) instead costs ~1.6 us a column: float == None is not a fast path.)
    """
    request_codes = [
        field.lookup.get(
            getattr(query, QUERY_ATTRIBUTES.get(field.name, field.name), None), OOV_INDEX
        )
        for field in bundle.request_fields
    ]
    if not (
        columns.features.keys() <= bundle.numeric_index.keys()
        and columns.categorical.keys() <= {field.name for field in bundle.item_fields}
    ):
        raise _first_unknown(bundle, columns)
    items = len(columns)
    numeric = np.empty((items, len(bundle.numeric_names)), np.float32)
    for position, name in enumerate(bundle.numeric_names):
        values = columns.features.get(name)  # None: no item sent it
        numeric[:, position] = np.nan if values is None else values  # a None in it -> NaN
    missing = np.isnan(numeric)
    if imputed := int(missing.sum()):  # copyto only for a request that left something out
        np.copyto(numeric, bundle.numeric_means, where=missing)
    item_cat = np.empty((items, len(bundle.item_fields)), np.int64)
    oov = request_codes.count(OOV_INDEX)
    for position, field in enumerate(bundle.item_fields):
        values = columns.categorical.get(field.name)
        if values is None:
            item_cat[:, position], oov = OOV_INDEX, oov + items
        else:
            codes = list(map(field.lookup.get, values, repeat(OOV_INDEX)))
            item_cat[:, position] = codes
            oov += codes.count(OOV_INDEX)
    return ModelInputs(
        request_cat=np.array(request_codes, np.int64).reshape(1, len(request_codes)),
        item_cat=item_cat,
        numeric=numeric,
        imputed_features=imputed,
        oov_categories=oov,
    )


def _first_unknown(bundle: Bundle, columns: ItemColumns) -> Rejected:
    """The 422 for the first name the model does not read: the first item (in request order;
    its numeric features first) naming one, or in the columnar form the first column."""
    expected = {
        "features": bundle.numeric_names,
        "categorical": sorted(field.name for field in bundle.item_fields),
    }
    unknown = [
        (kind, name)
        for kind, names in expected.items()
        for name in getattr(columns, kind).keys() - set(names)
    ]
    kind, name = min(unknown, key=lambda u: (columns.first_sent(*u), u[0] != "features", u[1]))
    return Rejected.one(
        422,
        "unknown_feature",
        columns.field(kind, name),
        f"unknown {'categorical ' if kind == 'categorical' else ''}feature; "
        f"the model expects {expected[kind]}",
    )
