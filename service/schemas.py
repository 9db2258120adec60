"""Request and response models of the HTTP API (DESIGN.md), so /docs documents itself.

Requests are strict: a number sent as a string, a string sent as a number, a NaN or an
infinity, an unknown field is a 4xx naming the field, never a silent conversion.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

REQUEST_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
ITEM_ID = Field(min_length=1, max_length=256)
# Hard ceilings (422 above); below them, texts longer than MOERANK_MAX_TITLE_CHARS and
# MOERANK_MAX_QUERY_CHARS are cut before any work and counted in degraded.truncated_texts.
MAX_QUERY_TEXT, MAX_TITLE = 4096, 16_384
FLOAT32_MAX = float(np.finfo(np.float32).max)  # beyond it the model would read an infinity
Float32 = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]


def _whole(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Ints that also take 3.0: JSON Schema counts it as an integer (the OpenAPI document says
# "integer"), strict pydantic ints do not.
Count = Annotated[int, Field(ge=0), BeforeValidator(_whole)]
PositiveCount = Annotated[int, Field(ge=1), BeforeValidator(_whole)]


class Query(BaseModel):
    model_config = REQUEST_CONFIG

    text: str = Field(min_length=1, max_length=MAX_QUERY_TEXT)
    category: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="the query's sub-category; a model that reads it (GET /v1/models: "
        "query_fields) ranks a query without one as an unknown category (degraded)",
    )
    top_category: str | None = Field(None, max_length=256)
    scenario: str | None = Field(None, max_length=64, description="country / storefront")
    platform: str | None = Field(None, max_length=64, description="general / high_end / budget")


class Item(BaseModel):
    model_config = REQUEST_CONFIG

    id: str = ITEM_ID
    title: str | None = Field(None, max_length=MAX_TITLE, description="encoded if not cached")
    features: dict[str, Float32] = Field(
        default_factory=dict, description="numeric features; missing ones are imputed"
    )
    categorical: dict[str, str] = Field(
        default_factory=dict, description="unknown values go to the OOV bucket"
    )


def check_item_list(items: list, info: ValidationInfo) -> list:
    """At most `max_items` (from the validation context) and no id twice."""
    check_ids([item.id for item in items], info)
    return items


def check_ids(ids: list[str], info: ValidationInfo) -> list[str]:
    limit = (info.context or {}).get("max_items")
    if limit is not None and len(ids) > limit:
        raise PydanticCustomError(
            "too_many_items",
            "{count} items, at most {limit}",
            {"count": len(ids), "limit": limit},
        )
    if len(set(ids)) != len(ids):
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise PydanticCustomError("duplicate_ids", "duplicate ids {ids}", {"ids": duplicates[:10]})
    return ids


def unequal_column(columns) -> tuple[str, int] | None:
    """The first column whose length differs from `id`'s, as (its name, its length)."""
    named = [("title", columns.title)] if columns.title is not None else []
    named += [(f"features.{name}", values) for name, values in columns.features.items()]
    named += [(f"categorical.{name}", values) for name, values in columns.categorical.items()]
    return next(((n, len(v)) for n, v in named if len(v) != len(columns.id)), None)


class Columns(BaseModel):
    """The columnar form of the candidates: one array per field, one value per item, all as
    long as `id`. null: not sent (a numeric feature imputed, a category in the OOV bucket)."""

    model_config = REQUEST_CONFIG

    id: Annotated[list[Annotated[str, ITEM_ID]], AfterValidator(check_ids)] = Field(
        min_length=1, description="the candidates' ids, each once"
    )
    title: list[Annotated[str, Field(max_length=MAX_TITLE)] | None] | None = Field(
        None, description="encoded if not cached"
    )
    features: dict[str, list[Float32 | None]] = Field(
        default_factory=dict, description="numeric features; null ones are imputed"
    )
    categorical: dict[str, list[str | None]] = Field(
        default_factory=dict, description="unknown or null values go to the OOV bucket"
    )

    @model_validator(mode="after")
    def _equal_lengths(self) -> Columns:
        if unequal := unequal_column(self):
            raise PydanticCustomError(
                "column_lengths",
                "column {column} has {count} values, id has {ids}: one value per item",
                {"column": unequal[0], "count": unequal[1], "ids": len(self.id)},
            )
        return self


def _one_item_form(schema: dict) -> None:
    """items or columns, exactly one not null (a 422 otherwise): said in the schema too."""
    schema["oneOf"] = [
        {"required": [name], "properties": {name: {"type": kind}}}
        for name, kind in (("items", "array"), ("columns", "object"))
    ]


class RankRequest(BaseModel):
    """The candidates come as rows (`items`) or as columns (`columns`): exactly one."""

    model_config = ConfigDict(**REQUEST_CONFIG, json_schema_extra=_one_item_form)

    query: Query
    items: Annotated[list[Item], Field(min_length=1), AfterValidator(check_item_list)] | None = (
        Field(None, description="the candidates as rows, each id once")
    )
    columns: Columns | None = Field(None, description="the candidates as columns")
    top_n: PositiveCount | None = Field(None, description="return only the best top_n")
    model: str | None = Field(None, max_length=64, description="serve this model (wins)")
    experiment: str | None = Field(None, max_length=64, description="route by this experiment")
    user_id: str | None = Field(None, min_length=1, max_length=256, description="a unit")
    session_id: str | None = Field(None, min_length=1, max_length=256, description="a unit")

    @model_validator(mode="after")
    def _one_form(self) -> RankRequest:
        if (self.items is None) == (self.columns is None):
            raise PydanticCustomError(
                "missing" if self.items is None else "two_item_forms",
                "send the candidates as items (rows) or as columns: "
                + ("both were sent" if self.items else "neither was sent"),
            )
        return self


class ItemText(BaseModel):
    model_config = REQUEST_CONFIG

    id: str = ITEM_ID
    title: str = Field(min_length=1, max_length=MAX_TITLE)


class ItemsUpsert(BaseModel):
    """Product texts whose embeddings are computed and stored (POST /v1/items)."""

    model_config = REQUEST_CONFIG

    items: Annotated[list[ItemText], AfterValidator(check_item_list)] = Field(min_length=1)


def _one_source(schema: dict) -> None:
    """models_file goes alone (a 422 otherwise): said in the schema too."""
    strings = {"type": "string"}
    schema["not"] = {
        "anyOf": [
            {
                "required": ["models_file", other],
                "properties": {"models_file": strings, other: strings},
            }
            for other in ("model", "bundle_path")
        ]
    }


class ReloadRequest(BaseModel):
    """Empty: read the configured models file (or bundle path) again. `model` (+ optional
    `bundle_path`): replace that model. `models_file`: serve another models file."""

    model_config = ConfigDict(**REQUEST_CONFIG, json_schema_extra=_one_source)

    bundle_path: str | None = Field(
        None, min_length=1, description="default: the model's configured path"
    )
    model: str | None = Field(
        None, min_length=1, description="the model to replace (default: the default)"
    )
    models_file: str | None = Field(None, min_length=1, description="a models file to serve whole")


class ErrorDetail(BaseModel):
    field: str = Field(description="the request part at fault, e.g. items.3.features.price")
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx the service answers (service/rejections.py)."""

    detail: list[ErrorDetail]


class ModelRef(BaseModel):
    name: str
    version: str
    experiment: str | None = Field(None, description="the experiment that routed this request")
    variant: str | None = Field(None, description="its variant")


class RankedItem(BaseModel):
    id: str
    score: float = Field(
        description="the ranking score: the manifest's score (a task's probability, or the "
        "sum of a grade cascade's probabilities)"
    )
    scores: dict[str, float] = Field(description="probability per task")


class ExpertUse(BaseModel):
    index: int
    weight: float = Field(description="gate weight")


class Degraded(BaseModel):
    """What this answer had to do without: zero means nothing was degraded."""

    embedding_cache_misses: int = Field(0, description="items in neither the LRU nor the store")
    online_encodes: int = Field(0, description="titles encoded during the request")
    deferred_encodes: int = Field(
        0, description="titles encoded after this answer (zero vector now, cached from the next)"
    )
    cold_encodes_skipped: int = Field(
        0, description="titles over the call's cold-title limits: zero vector, not encoded"
    )
    missing_embeddings: int = Field(
        0, description="zero vectors: no embedding and no title, or a skipped title"
    )
    truncated_texts: int = Field(0, description="titles and query cut at the length limits")
    non_finite_scores: int = Field(
        0, description="items whose extreme feature values overflowed the model: scored 0"
    )
    imputed_features: int = Field(0, description="numeric features given the training mean")
    oov_categories: int = Field(0, description="categorical values outside the vocabulary")
    embedding_store: str = Field(
        "ok",
        description="ok; unavailable (Redis down or slow); lost (the store lost its contents "
        "and is not refilled yet)",
    )


class RankResponse(BaseModel):
    request_id: str = Field(
        description="X-Request-ID if given, else generated: send it back "
        "with the events of this answer"
    )
    model: ModelRef
    items: list[RankedItem]
    experts: list[ExpertUse]
    degraded: Degraded


class ItemsStored(BaseModel):
    stored: int
    encoder_id: str


class ReloadResult(BaseModel):
    model: ModelRef
    bundle_path: str
    models: dict[str, ModelRef] = Field(default_factory=dict, description="all served now")
