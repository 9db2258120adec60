"""The bundle manifest (manifest.json): one typed, versioned schema, written by export and
validated by the service before a bundle serves.

A bundle is a directory: model.onnx, manifest.json and, for a model that reads text, the
text encoder's directory. The manifest says everything the service needs to turn a request
into the graph's inputs (the feature spec, the input tensors and their columns) and how to
read the outputs (the tasks and the score that ranks).

Versions: SCHEMA_VERSION 3 adds the expected-grade score (`score.formula`) and the text
encoder variant whose vectors the model was evaluated on (`text_encoder.variant`). Schema 2
stated the OOV rule as data (`oov_index`) and named the libraries that exported the graph
(`software`); schema 1 wrote the rule as prose and a bare `torch_version`. Schema-1 and -2
manifests are migrated on read (their score is a task's probability and their queries were
encoded int8 online, which stays so), so every bundle exported before still serves; any other
version is refused with what to do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract.features import OOV_INDEX, FeatureSpec

SCHEMA_VERSION = 3
MIGRATED_SCHEMAS = (1, 2)  # read, and upgraded to SCHEMA_VERSION on the way in
FILE_NAME = "manifest.json"

# The graph's interface: inputs in this order (the text pair only for a model that reads
# text); request-level ones have a leading 1, item-level ones a dynamic B.
GRAPH_INPUTS = ("request_cat", "item_cat", "numeric", "query_emb", "item_emb")
TEXT_INPUTS = ("query_emb", "item_emb")
REQUEST_INPUTS = ("request_cat", "query_emb")
# scores [B, T] task probabilities, expert_index [K], expert_weight [K].
GRAPH_OUTPUTS = ("scores", "expert_index", "expert_weight")
# The batched graph (BatchedGraph) reads R requests at once: GRAPH_INPUTS with request-level
# tensors of R rows, then these two (int64); its expert outputs are [R, K].
BATCH_INPUTS = ("item_request", "request_items")


def batch_layout(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """BATCH_INPUTS for requests of these item counts, their items one block in request
    order: item_request [B] (each item's request) and request_items [R, L] (each request's
    item rows, padded to the longest by repeating its last row)."""
    counts = np.asarray(lengths, np.int64)
    starts = np.cumsum(counts) - counts
    item_request = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    slots = np.minimum(np.arange(counts.max(), dtype=np.int64)[None, :], counts[:, None] - 1)
    return item_request, starts[:, None] + slots


class ManifestError(ValueError):
    """The manifest is missing, unreadable, of an unknown version or malformed."""


class _Strict(BaseModel):
    # An unknown key is an error, not silently dropped: a typo must not pass as a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputTensor(_Strict):
    name: Literal["request_cat", "item_cat", "numeric", "query_emb", "item_emb"]
    level: Literal["request", "item"]
    dtype: Literal["int64", "float32"]
    shape: tuple[int | Literal["B"], int]
    columns: list[str]  # the feature behind each column


class Score(_Strict):
    """What the service ranks by.

    task_probability: `task`'s probability. expected_grade: `offset + sum_k weights[k] *
    P(tasks[k])` over a grade cascade "grade >= t_1" < ... < "grade >= t_K", with weights
    t_k - t_{k-1} (t_0 the lowest grade, the offset): E[grade] when the thresholds are every
    grade above the lowest (E[X] = min + sum_k P(X >= t_k) for an integer X), the score
    graded evaluation ranks by offline (training.data.spec.Graded.expected_grade).
    """

    formula: Literal["task_probability", "expected_grade"] = "task_probability"
    task: str | None = None
    tasks: list[str] = Field(default_factory=list)
    weights: list[float] = Field(default_factory=list)  # expected_grade; default all 1
    offset: float = 0.0  # expected_grade: the lowest grade

    @model_validator(mode="after")
    def _one_rule(self) -> Score:
        if self.formula == "task_probability" and (
            self.task is None or self.tasks or self.weights or self.offset
        ):
            raise ValueError("score task_probability names one `task` and nothing else")
        if self.formula == "expected_grade" and (self.task is not None or not self.tasks):
            raise ValueError("score expected_grade names the cascade's `tasks` and no `task`")
        if self.weights and len(self.weights) != len(self.tasks):
            raise ValueError(f"score weights {self.weights} do not match tasks {self.tasks}")
        if not all(math.isfinite(w) for w in [*self.weights, self.offset]):
            raise ValueError("score weights and offset must be finite")
        return self

    @property
    def reads(self) -> list[str]:
        """The tasks whose probabilities make the score."""
        return [self.task] if self.task is not None else list(self.tasks)

    @property
    def task_weights(self) -> list[float]:
        return self.weights or [1.0] * len(self.reads)


class Experts(_Strict):
    n: int = Field(ge=1)  # experts the gate chooses among
    k: int = Field(ge=1)  # experts reported per request
    gate_inputs: list[str]
    gate_level: Literal["none", "request", "item"]
    path: Literal["skip", "dense"]  # skip: only the K chosen experts run


class BatchedGraph(_Strict):
    """A second graph beside model.onnx that scores R requests in one run, each with its own
    gate and top-K experts. Items of all requests form one [B, ...] block, each request's
    contiguous and in request order; item_request [B] is each item's request, request_items
    [R, L] each request's item rows padded to the longest by repeating its last row."""

    file: str = "model_batched.onnx"  # relative to the bundle directory
    inputs: tuple[str, ...]  # the graph's inputs, then BATCH_INPUTS


EncoderVariant = Literal["fp32", "int8", "fp16"]


class TextEncoderRef(_Strict):
    id: str
    dim: int = Field(gt=0)
    dir: str = "text_encoder"  # relative to the bundle directory
    # The encoder variant whose vectors match what the model was trained and evaluated on
    # (training encodes in fp32; export.embed_items stores fp32-variant vectors by default):
    # the service encodes queries and cold titles with it, so a served score equals the
    # offline one. Bundles before schema 3 were served int8 and keep it.
    variant: EncoderVariant = "fp32"


class Manifest(_Strict):
    """manifest.json, schema 2. Build one with keyword arguments and `write` it; read one
    with `Manifest.read(directory)`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: Literal[3] = SCHEMA_VERSION
    name: str
    version: str
    family: str
    tasks: list[str] = Field(min_length=1)
    score: Score
    inputs: list[InputTensor]
    outputs: tuple[str, ...] = GRAPH_OUTPUTS
    features: FeatureSpec
    oov_index: Literal[0] = OOV_INDEX
    normalisation: str  # how the graph treats raw numeric values
    imputation: str = "a missing numeric feature takes its training mean"
    text_encoder: TextEncoderRef | None
    experts: Experts
    batched: BatchedGraph | None = None  # absent: every request runs alone
    # The recipe the model was built from ("model_config" is pydantic's own attribute).
    recipe: dict[str, Any] = Field(alias="model_config")
    training: dict[str, Any]  # metrics measured at training time
    parity: dict[str, Any]  # max |onnx - reference| per check
    created: str  # ISO-8601, UTC
    software: dict[str, str]  # library -> version that exported the graph

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("schema_version") == 1:
            raw = from_schema_1(raw)
        if isinstance(raw, dict) and raw.get("schema_version") == 2:
            raw = from_schema_2(raw)
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        unknown = [task for task in self.score.reads if task not in self.tasks]
        if unknown:
            raise ValueError(f"score task {unknown[0]!r} is not one of {self.tasks}")
        encoder, spec = self.text_encoder, self.features
        if (encoder is None) != (spec.text_dim == 0) or (
            encoder and (encoder.id, encoder.dim) != (spec.encoder_id, spec.text_dim)
        ):
            raise ValueError(
                f"features read {spec.encoder_id or 'no'} vectors of dim {spec.text_dim}; "
                f"the text encoder is {encoder.id if encoder else 'none'}"
                + (f" of dim {encoder.dim}" if encoder else "")
            )
        names = [i.name for i in self.inputs]
        expected = list(GRAPH_INPUTS if self.features.text_dim else GRAPH_INPUTS[:3])
        if names != expected:
            raise ValueError(f"inputs {names}, expected {expected}")
        if self.batched and self.batched.inputs != (*names, *BATCH_INPUTS):
            raise ValueError(f"batched inputs {self.batched.inputs}, expected {names} + batch's")
        if tuple(self.outputs) != GRAPH_OUTPUTS:
            raise ValueError(f"outputs {list(self.outputs)}, expected {list(GRAPH_OUTPUTS)}")
        if not all(math.isfinite(f.mean) and math.isfinite(f.std) for f in spec.numeric):
            raise ValueError("numeric means and stds must be finite")
        return self

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """The validated manifest of a bundle directory; ManifestError says what is wrong."""
        path = Path(directory) / FILE_NAME
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"no readable {FILE_NAME} in {directory}: {exc}") from exc
        return cls.parse(raw)

    @classmethod
    def parse(cls, raw: Any) -> Manifest:
        if not isinstance(raw, dict):
            raise ManifestError(f"{FILE_NAME} is not a JSON object")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION and version not in MIGRATED_SCHEMAS:
            readable = sorted({SCHEMA_VERSION, *MIGRATED_SCHEMAS})
            raise ManifestError(
                f"manifest schema_version {version!r} is not one this code reads ({readable}): "
                "export the bundle again with this release, or serve it with the release "
                "that wrote it"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ManifestError(f"manifest is malformed: {exc}") from exc

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    def write(self, directory: str | Path) -> None:
        (Path(directory) / FILE_NAME).write_text(self.to_json())


def from_schema_1(raw: dict) -> dict:
    """A schema-1 manifest as schema 2: its prose OOV rule was index 0 (the rule today), and
    `torch_version` becomes `software`."""
    upgraded = {k: v for k, v in raw.items() if k not in ("oov_rule", "torch_version")}
    upgraded["schema_version"] = 2
    upgraded["oov_index"] = OOV_INDEX
    upgraded["software"] = {"torch": str(raw["torch_version"])} if "torch_version" in raw else {}
    return upgraded


def from_schema_2(raw: dict) -> dict:
    """A schema-2 manifest as schema 3: its score was a task's probability (the default
    formula), and its queries were encoded with the service's int8 encoder."""
    upgraded = {**raw, "schema_version": SCHEMA_VERSION}
    if isinstance(raw.get("text_encoder"), dict):
        upgraded["text_encoder"] = {"variant": "int8", **raw["text_encoder"]}
    return upgraded


def describe_inputs(input_names: list[str] | tuple[str, ...], spec: FeatureSpec) -> list:
    """The manifest's `inputs`: each graph input's level, dtype, shape and columns."""
    inputs = []
    for name in input_names:
        level = "request" if name in REQUEST_INPUTS else "item"
        if name in TEXT_INPUTS:
            columns = [f"{spec.encoder_id} vector of {spec.text_dim} floats"]
            width = spec.text_dim
        else:
            fields = {
                "request_cat": spec.request_categorical,
                "item_cat": spec.item_categorical,
                "numeric": spec.numeric,
            }[name]
            columns = [f.name for f in fields]
            width = len(columns)
        inputs.append(
            InputTensor(
                name=name,
                level=level,
                dtype="int64" if name.endswith("_cat") else "float32",
                shape=(1 if level == "request" else "B", width),
                columns=columns,
            )
        )
    return inputs
