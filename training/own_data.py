"""A user's own data (described by a data spec, training/data/spec.py) prepared for `fit`
and for evaluation: split by group, the feature map built from the data, text tables.

- Splits are by group (one result list): train / valid / test fractions, or k folds where
  fold i is the test split and `valid` of the other groups validate (early stopping).
- The feature map comes from the data, never from the generator's schema: the spec's
  numeric columns (missing values imputed with the training mean, z-scored in the model
  with training statistics), its categorical columns and request fields (vocabularies of
  the training split; index 0 is the OOV bucket for unseen or missing values,
  contract.features), and text embeddings of the query and item text when the spec names
  an item text.
- A model's ranking score is the spec's: the expected grade of a graded cascade
  (`Graded.expected_grade`), else the probability of the model's score task.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from contract import schema
from contract.features import REQUEST_CATEGORICAL
from training.data.real.readers import CONTRACT_COLUMNS
from training.data.spec import EXPECTED_GRADE, DataSpec
from training.dataset import split_sessions, to_tensors
from training.features import build_spec
from training.fitting import Prepared
from training.recipe_needs import DataFields


@dataclass(frozen=True)
class GroupSplit:
    """valid/test: shares of groups; folds > 0: k folds by group, `fold` the test one."""

    valid: float = 0.1
    test: float = 0.1
    seed: int = 0
    folds: int = 0
    fold: int = 0

    def __post_init__(self) -> None:
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"folds must be 0 (one split) or at least 2, got {self.folds}")
        if self.folds and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold must lie in 0..{self.folds - 1}, got {self.fold}")
        if not (0 <= self.valid < 1 and 0 <= self.test < 1 and self.valid + self.test < 1):
            raise ValueError(f"valid {self.valid} and test {self.test} must be shares below 1")

    def describe(self) -> str:
        if self.folds:
            return (
                f"fold {self.fold} of {self.folds} folds by group (seed {self.seed}); "
                f"{self.valid:.0%} of the other groups validate"
            )
        return f"{self.test:.0%} of groups test, {self.valid:.0%} validate (seed {self.seed})"

    def to_dict(self) -> dict:
        return asdict(self)


def split_groups(
    frame: pd.DataFrame, split: GroupSplit
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, valid, test) by whole groups (`session_id`), deterministic in the split."""
    if not split.folds:
        return split_sessions(frame, valid=split.valid, test=split.test, seed=split.seed)
    groups = np.sort(frame[schema.SESSION_ID].unique())
    order = np.random.default_rng(split.seed).permutation(len(groups))
    fold_of = pd.Series(order % split.folds, index=groups)
    in_fold = frame[schema.SESSION_ID].map(fold_of).to_numpy() == split.fold
    rest = frame[~in_fold]
    train, valid, _ = split_sessions(
        rest, valid=split.valid, test=0.0, seed=split.seed + split.fold
    )
    return train, valid, frame[in_fold]


def feature_columns(spec: DataSpec, frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, item categorical) feature columns of a `read_table` frame."""
    categorical = list(spec.columns.categorical)
    if spec.columns.numeric != "rest":
        return list(spec.columns.numeric), categorical
    tasks = set(spec.labels.tasks)
    taken = set(CONTRACT_COLUMNS) | set(categorical) | tasks
    return [c for c in frame.columns if c not in taken], categorical


def request_fields(frame: pd.DataFrame) -> tuple[str, ...]:
    return tuple(name for name in REQUEST_CATEGORICAL if name in frame.columns)


def data_fields(spec: DataSpec, frame: pd.DataFrame, text: bool) -> DataFields:
    numeric, categorical = feature_columns(spec, frame)
    return DataFields(
        request_fields(frame), spec.labels.tasks, text, len(numeric) + len(categorical)
    )


def prepare_spec(
    spec: DataSpec,
    frame: pd.DataFrame,
    split: GroupSplit,
    text: bool,
    cache_dir: Path,
    progress: bool = True,
) -> Prepared:
    """Split, impute, build the feature map on the training split, encode text (cached in
    cache_dir/<encoder id>/)."""
    parts = list(split_groups(frame, split))
    names = ("train", "valid", "test")
    empty = [name for name, part in zip(names, parts, strict=True) if part.empty]
    if empty:
        raise ValueError(
            f"the {' and '.join(empty)} split(s) are empty: {frame[schema.SESSION_ID].nunique()} "
            "groups are too few for this split"
        )
    numeric, categorical = feature_columns(spec, frame)
    means = parts[0][numeric].astype(np.float64).mean().fillna(0.0)
    parts = [part.fillna(means.to_dict()) if numeric else part for part in parts]
    tables, text_dim, encoder_id = None, 0, ""
    if text:
        from training.text_encoder import ENCODER_ID
        from training.text_tables import build_text_tables

        catalog = frame[[schema.ITEM_ID, schema.ITEM_TITLE]].drop_duplicates(schema.ITEM_ID)
        catalog = catalog.assign(**{schema.ITEM_TITLE: catalog[schema.ITEM_TITLE].fillna("")})
        tables = build_text_tables(frame, catalog, cache_dir, progress)
        text_dim, encoder_id = tables.query_table.shape[1], ENCODER_ID
    feature_spec = build_spec(
        parts[0],
        numeric=tuple(numeric),
        item_categorical=tuple(categorical),
        request_categorical=request_fields(frame),
        text_dim=text_dim,
        encoder_id=encoder_id,
    )
    tasks = spec.labels.tasks
    tensors = [to_tensors(feature_spec, part, tasks, tables) for part in parts]
    return Prepared(feature_spec, *tensors, test_frame=parts[2], train_frame=parts[0])


def ranking_scores(spec: DataSpec, probs: np.ndarray, score_task: str) -> np.ndarray:
    """[n] the score a model ranks by, from its task probabilities [n, T]."""
    if spec.labels.score == EXPECTED_GRADE:
        return spec.labels.graded.expected_grade(probs)
    return probs[:, list(spec.labels.tasks).index(score_task)]


def score_name(spec: DataSpec, score_task: str) -> str:
    if spec.labels.score == EXPECTED_GRADE:
        return "expected grade (sum over the cascade of P(grade >= t) times the step)"
    return f"P({score_task})"
