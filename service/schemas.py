"""Request and response models of the HTTP API (DESIGN.md), so /docs documents itself."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ITEM_ID = Field(min_length=1, max_length=256)


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=1024)
    category: str = Field(min_length=1, max_length=256, description="the query's sub-category")
    top_category: str | None = Field(None, max_length=256)
    scenario: str | None = Field(None, max_length=64, description="country / storefront")
    platform: str | None = Field(None, max_length=64, description="general / high_end / budget")


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = ITEM_ID
    title: str | None = Field(None, max_length=2048)
    features: dict[str, float] = Field(default_factory=dict)
    categorical: dict[str, str] = Field(default_factory=dict)

    @field_validator("features")
    @classmethod
    def finite(cls, features: dict[str, float]) -> dict[str, float]:
        bad = [name for name, value in features.items() if not math.isfinite(value)]
        if bad:
            raise ValueError(f"features must be finite numbers; not finite: {bad}")
        return features


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Query
    items: list[Item] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def unique_ids(self) -> RankRequest:
        seen, duplicates = set(), []
        for item in self.items:
            if item.id in seen:
                duplicates.append(item.id)
            seen.add(item.id)
        if duplicates:
            raise ValueError(f"items: duplicate ids {sorted(set(duplicates))[:10]}")
        return self


class ModelRef(BaseModel):
    name: str
    version: str


class RankedItem(BaseModel):
    id: str
    score: float
    scores: dict[str, float]


class ExpertUse(BaseModel):
    index: int
    weight: float


class Degraded(BaseModel):
    embedding_cache_misses: int = 0
    online_encodes: int = 0
    missing_embeddings: int = 0
    imputed_features: int = 0
    oov_categories: int = 0
    embedding_store: str = "ok"


class RankResponse(BaseModel):
    model: ModelRef
    items: list[RankedItem]
    experts: list[ExpertUse]
    degraded: Degraded
