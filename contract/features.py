"""The feature map: every model input described once, for training, export and serving.

A `FeatureSpec` is built from the training split (training.features.build_spec), saved in
the checkpoint, written into the bundle manifest (contract.manifest), and read back by the
service, which turns a request into exactly the tensors the model was trained on.

The request-level categorical fields are the same four everywhere: the dataset's columns,
the request's query attributes, and what a gate may read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import TypeAdapter

# Request-level categorical fields: one value per query, the dataset's column names.
QUERY_CATEGORY = "query_category"  # sub-category id of the query
TOP_CATEGORY = "top_category"  # its level-1 parent
SCENARIO = "scenario"  # country / storefront (HMoE scenarios)
PLATFORM = "platform"  # general / high_end / budget (WE-CAN domains)
REQUEST_CATEGORICAL = (QUERY_CATEGORY, TOP_CATEGORY, SCENARIO, PLATFORM)

# Where each request-level field sits in a rank request's `query` object (service.schemas).
QUERY_ATTRIBUTES = {
    QUERY_CATEGORY: "category",
    TOP_CATEGORY: "top_category",
    SCENARIO: "scenario",
    PLATFORM: "platform",
}

# The out-of-vocabulary rule: index 0 of every vocabulary stands for any value outside it
# (unseen, rare, or missing); vocabulary entry i has index i + 1.
OOV_INDEX = 0


def vocabulary_lookup(vocab: tuple[str, ...] | list[str]) -> dict[str, int]:
    """value -> index under the OOV rule; look up with `.get(value, OOV_INDEX)`."""
    return {value: i + 1 for i, value in enumerate(vocab)}


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
        return vocabulary_lookup(self.vocab)


@dataclass(frozen=True)
class NumericField:
    """A numeric input; the model z-scores it in its graph with these statistics, and the
    service imputes a missing value with `mean`."""

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
        """Validated: a missing or mistyped field raises pydantic's ValidationError."""
        return _SPEC.validate_python(d)

    def to_json(self) -> str:
        return _SPEC.dump_json(self).decode()


_SPEC = TypeAdapter(FeatureSpec)
