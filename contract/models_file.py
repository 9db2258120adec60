"""The models file: which bundles one service serves, and the experiments that split traffic
among them (MOERANK_MODELS_FILE, TOML).

    default = "abc"                  # a model or an experiment: what a plain request gets
    [models]
    dnn = "artifacts/bundles/dnn"     # name -> bundle directory (relative to this file)
    best = "artifacts/bundles/best"
    [experiments.abc]
    unit = "user_id"                 # user_id | session_id | request_id
    variants = [{name = "control", model = "dnn", share = 0.5},
                {name = "treatment", model = "best", share = 0.5}]
    shadows = ["other_model"]        # optional: scored after the answer, never returned

`assign` is the one definition of how a unit lands in a variant; the service and anyone
predicting its routing (a test, a simulation) use it.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SHARE_TOLERANCE = 1e-9
# Names end up in Prometheus labels and file names: a short, plain alphabet.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME = Field(pattern=NAME_PATTERN.pattern)
UNITS = ("user_id", "session_id", "request_id")
STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelsFileError(ValueError):
    """The models file is missing, not TOML, or breaks a rule below; the message says which."""


class Variant(BaseModel):
    model_config = STRICT

    name: str = NAME
    model: str = Field(description="a name from [models]")
    share: float = Field(ge=0.0, le=1.0, description="fraction of the experiment's units")


class Experiment(BaseModel):
    model_config = STRICT

    unit: Literal["user_id", "session_id", "request_id"] = Field(
        description="the request field whose value is hashed; a request without it is "
        "assigned by its request id"
    )
    variants: list[Variant] = Field(min_length=1)
    shadows: list[str] = Field(default_factory=list, description="models scored after the answer")

    @model_validator(mode="after")
    def _shares_and_names(self) -> Experiment:
        total = math.fsum(v.share for v in self.variants)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            shares = {v.name: v.share for v in self.variants}
            raise ValueError(f"variant shares sum to {total!r}, not 1: {shares}")
        _unique("variant", [v.name for v in self.variants])
        _unique("shadow", list(self.shadows))
        return self


class ModelsFile(BaseModel):
    """A validated models file; bundle paths are absolute (resolved against the file's dir)."""

    model_config = STRICT

    default: str = Field(description="a model or experiment name for requests naming neither")
    models: dict[str, Path] = Field(min_length=1)
    experiments: dict[str, Experiment] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> ModelsFile:
        for name in [*self.models, *self.experiments]:
            if not NAME_PATTERN.fullmatch(name):
                raise ValueError(f"name {name!r} must match {NAME_PATTERN.pattern}")
        both = sorted(set(self.models) & set(self.experiments))
        if both:
            raise ValueError(f"{both} name both a model and an experiment")
        for exp_name, experiment in self.experiments.items():
            for variant in experiment.variants:
                if variant.model not in self.models:
                    raise ValueError(
                        f"experiment {exp_name!r} variant {variant.name!r} names model "
                        f"{variant.model!r}, not in [models] {sorted(self.models)}"
                    )
            for shadow in experiment.shadows:
                if shadow not in self.models:
                    raise ValueError(
                        f"experiment {exp_name!r} shadow {shadow!r} is not in [models] "
                        f"{sorted(self.models)}"
                    )
        if self.default not in self.models and self.default not in self.experiments:
            raise ValueError(
                f"default {self.default!r} names no model {sorted(self.models)} and no "
                f"experiment {sorted(self.experiments)}"
            )
        return self

    @classmethod
    def single(cls, bundle_path: Path, name: str = "default") -> ModelsFile:
        """What a service without a models file serves: one bundle, no experiment."""
        return cls(default=name, models={name: Path(bundle_path)})


def parse_models_file(text: str, base_dir: Path) -> ModelsFile:
    """TOML text -> ModelsFile; relative bundle paths are taken from `base_dir`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"not valid TOML: {exc}") from None
    models = data.get("models")
    if isinstance(models, dict):
        not_paths = sorted(name for name, path in models.items() if not isinstance(path, str))
        if not_paths:
            raise ModelsFileError(f"models {not_paths}: a bundle path must be a string")
        data["models"] = {name: base_dir / path for name, path in models.items()}
    try:
        return ModelsFile.model_validate(data)
    except ValidationError as exc:
        raise ModelsFileError(_describe(exc)) from None


def load_models_file(path: str | Path) -> ModelsFile:
    """Read and validate the file at `path` (ModelsFileError naming the problem)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ModelsFileError(f"cannot read models file {path}: {exc}") from None
    try:
        return parse_models_file(text, path.resolve().parent)
    except ModelsFileError as exc:
        raise ModelsFileError(f"{path}: {exc}") from None


def unit_draw(key: str) -> float:
    """A uniform float in (0, 1) from a stable hash (blake2b: the same on every process,
    machine and Python version, unlike hash())."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def assign(experiment_name: str, experiment: Experiment, unit: str) -> Variant:
    """The variant `unit` (a user id, session id or request id) sees in the experiment.

    Weighted rendezvous hashing: each variant draws an exponential "arrival time"
    -ln(u) / share from its own hash of (experiment, variant name, unit), and the earliest
    wins. The winner is variant v with probability share_v, and:
    - the same unit always gets the same variant (the hash is stable);
    - when one variant's share changes and the others keep their ratios to each other,
      units move only into or out of that variant, and only as many as the change needs
      (its arrival time alone changed). Cutting [0, 1) into consecutive intervals by
      cumulative share would instead shift the boundaries of the variants between, moving
      units among variants whose shares did not change;
    - reordering the variants, or adding one, moves no unit between the others.
    Different experiments hash differently, so their assignments are independent.
    """
    best, best_time = experiment.variants[0], math.inf
    for variant in experiment.variants:
        if variant.share <= 0.0:
            continue
        draw = unit_draw(f"{experiment_name}\x1f{variant.name}\x1f{unit}")
        arrival = -math.log(draw) / variant.share
        if arrival < best_time:
            best, best_time = variant, arrival
    return best


def _unique(kind: str, names: list[str]) -> None:
    seen = {n for n in names if names.count(n) > 1}
    if seen:
        raise ValueError(f"{kind} names must be unique; repeated: {sorted(seen)}")


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "file"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


__all__ = [
    "UNITS",
    "Experiment",
    "ModelsFile",
    "ModelsFileError",
    "Variant",
    "assign",
    "load_models_file",
    "parse_models_file",
    "unit_draw",
]
