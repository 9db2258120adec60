"""A data spec: what a user writes once so every command can read their own ranking data.

A TOML file (or YAML, when PyYAML is installed) with three tables; paths are relative to
the spec file, unknown keys are errors (a typo fails, it is never ignored):

    [source]
    path = "data/judgments.csv.zip"     # a path, a glob, or a list of them
    encoding = "latin-1"                # default utf-8
    # format = "csv"                    # csv / tsv / parquet / jsonl; default from the suffix
    # separator = ";"  compression = "zip"  na_values = ["NA"]  (only "" is missing by default)

    [columns]
    query = "search_term"
    item_id = "product_uid"
    item_text = "product_title"         # optional: the model reads text embeddings of it
    # group = "session"                 # one result list; default: the query
    # category / top_category / scenario / platform / position = "..."
    numeric = ["price", "rating"]       # or "rest": every column not named elsewhere
    categorical = ["brand"]
    ignore = ["id"]                     # columns "rest" leaves out

    [labels]
    # click = "clicked"  atc = "carted"  purchase = "bought"   binary 0/1 task columns
    [labels.graded]
    column = "relevance"
    range = [1, 3]                      # the grades the column holds, lowest first
    cascade = [2, 3]                    # default: every grade above the lowest

How graded labels train (the documented mapping): with no binary task column, the model's
tasks are the cascade `grade >= t` for each threshold t (task names `grade_ge2`, ...), a
later task implying the earlier as click -> atc -> purchase does; a model ranks by the
expected grade, `range[0] + sum_k (t_k - t_{k-1}) * P(grade >= t_k)` with t_0 = range[0]
(`Graded.expected_grade`), which is E[grade] when the thresholds are every grade above the
lowest. Metrics use the gain `grade - range[0]` (the contract's `relevance`, 0 = the
lowest grade). With binary task columns, those are the tasks; a graded column beside them
is used for evaluation only.
"""

from __future__ import annotations

import difflib
import glob
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contract.schema import RELEVANCE, TASKS
from training.data.real.readers import (
    ColumnMapping,
    TableFormat,
    read_source,
    table_columns,
    to_contract,
)

EXPECTED_GRADE = "expected_grade"


class SpecError(ValueError):
    """A spec (or the data it describes) is wrong: one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    path: str | list[str] = Field(min_length=1)  # paths or globs, relative to the spec file
    format: Literal["csv", "tsv", "parquet", "jsonl"] | None = None
    encoding: str = "utf-8"
    separator: str | None = None
    compression: Literal["infer", "none", "gzip", "bz2", "xz", "zip", "zstd"] = "infer"
    na_values: list[str] = [""]

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    def table_format(self) -> TableFormat:
        return TableFormat(
            self.format, self.encoding, self.separator, self.compression, tuple(self.na_values)
        )


class Columns(_Strict):
    query: str
    item_id: str
    group: str | None = None  # default: the query (one result list per query)
    item_text: str | None = None
    category: str | None = None
    top_category: str | None = None
    scenario: str | None = None
    platform: str | None = None
    position: str | None = None
    numeric: list[str] | Literal["rest"] = []
    categorical: list[str] = []
    ignore: list[str] = []


class Graded(_Strict):
    column: str
    range: tuple[float, float]
    cascade: list[float] | None = None  # None: every whole grade above range[0]

    @model_validator(mode="after")
    def _check(self) -> Graded:
        low, high = self.range
        if low >= high:
            raise ValueError(f"range [{low:g}, {high:g}] must run from low to high")
        steps = self.thresholds
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            shown = ", ".join(f"{t:g}" for t in steps)
            raise ValueError(f"cascade [{shown}] is not increasing (tasks grade >= t, t rising)")
        outside = [f"{t:g}" for t in steps if not low < t <= high]
        if outside:
            raise ValueError(f"cascade thresholds {outside} lie outside ({low:g}, {high:g}]")
        if not steps:
            raise ValueError("cascade is empty")
        return self

    @property
    def thresholds(self) -> tuple[float, ...]:
        if self.cascade is not None:
            return tuple(self.cascade)
        low, high = self.range
        return tuple(float(t) for t in np.arange(np.floor(low) + 1, high + 1))

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(f"grade_ge{t:g}" for t in self.thresholds)

    def task_labels(self, grades: np.ndarray) -> np.ndarray:
        """[n, K] float32: 1 where grade >= threshold k."""
        return (np.asarray(grades)[:, None] >= np.array(self.thresholds)[None, :]).astype(
            np.float32
        )

    @property
    def expected_grade_weights(self) -> tuple[float, tuple[float, ...]]:
        """(offset, per-task weights): the expected grade is linear in the task
        probabilities, offset + sum_k weight_k P(grade >= t_k) (what a bundle can rank by)."""
        steps = np.diff(np.array((self.range[0], *self.thresholds)))
        return float(self.range[0]), tuple(float(w) for w in steps)

    def expected_grade(self, probs: np.ndarray) -> np.ndarray:
        """[n, K] P(grade >= t_k) -> [n] range[0] + sum_k (t_k - t_{k-1}) P(grade >= t_k)."""
        offset, weights = self.expected_grade_weights
        return offset + np.asarray(probs, np.float64) @ np.array(weights)


class Labels(_Strict):
    click: str | None = None
    atc: str | None = None
    purchase: str | None = None
    graded: Graded | None = None

    @model_validator(mode="after")
    def _some_label(self) -> Labels:
        if not self.binary and self.graded is None:
            raise ValueError("no labels: name binary task columns (click/atc/purchase) or graded")
        return self

    @property
    def binary(self) -> dict[str, str]:
        """Contract task -> source column, in cascade order."""
        named = {task: getattr(self, task) for task in TASKS}
        return {task: column for task, column in named.items() if column is not None}

    @property
    def tasks(self) -> tuple[str, ...]:
        """The model's tasks: the binary columns if any, else the graded cascade."""
        return tuple(self.binary) if self.binary else self.graded.tasks

    @property
    def score(self) -> str:
        """What a model's ranking is: the expected grade for a graded cascade, else the
        first task's probability."""
        return EXPECTED_GRADE if not self.binary else self.tasks[0]


class DataSpec(_Strict):
    source: Source
    columns: Columns
    labels: Labels
    base_dir: Path = Field(default=Path("."), exclude=True)  # the spec file's folder

    def files(self) -> list[Path]:
        """Every file the source names, globs expanded, in sorted order per pattern."""
        patterns = [self.source.path] if isinstance(self.source.path, str) else self.source.path
        found: list[Path] = []
        for pattern in patterns:
            full = self.base_dir / pattern
            matches = sorted(Path(p) for p in glob.glob(str(full), recursive=True))
            if not matches:
                raise SpecError([f"[source] path {pattern!r} matches no file (looked in {full})"])
            found += matches
        return list(dict.fromkeys(found))

    def mapping(self, available: list[str] | None = None) -> ColumnMapping:
        """The reader's column mapping; `available` (the file's columns) resolves "rest"."""
        c = self.columns
        labels = dict(self.labels.binary)
        if self.labels.graded is not None:
            labels[RELEVANCE] = self.labels.graded.column
        return ColumnMapping(
            query=c.query,
            item_id=c.item_id,
            group=c.group or c.query,
            labels=labels,
            item_text=c.item_text,
            category=c.category,
            top_category=c.top_category,
            scenario=c.scenario,
            platform=c.platform,
            position=c.position,
            numeric_features=tuple(self.numeric_columns(available)),
            categorical_features=tuple(c.categorical),
        )

    def named_columns(self) -> list[str]:
        """Every source column the spec names in a role (labels included), each once."""
        c = self.columns
        roles = [c.query, c.group, c.item_id, c.item_text, c.category, c.top_category]
        roles += [c.scenario, c.platform, c.position, *self.labels.binary.values()]
        roles += [self.labels.graded.column] if self.labels.graded else []
        roles += c.categorical + ([] if c.numeric == "rest" else c.numeric)
        return list(dict.fromkeys(r for r in roles if r is not None))

    def numeric_columns(self, available: list[str] | None) -> list[str]:
        if self.columns.numeric != "rest":
            return list(self.columns.numeric)
        if available is None:
            raise ValueError('numeric = "rest" needs the file\'s columns to resolve')
        taken = set(self.named_columns()) | set(self.columns.ignore)
        return [column for column in available if column not in taken]

    @property
    def has_text(self) -> bool:
        return self.columns.item_text is not None


def load_spec(path: str | Path) -> DataSpec:
    """Parse and validate a spec file; SpecError names every wrong key, one line each."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"spec file {path} does not exist"])
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text) or {}
        else:
            raw = tomllib.loads(text)
    except Exception as error:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise SpecError([f"{path.name} is not valid {path.suffix[1:]}: {error}"]) from None
    return parse_spec(raw, path.parent)


def parse_spec(raw: dict, base_dir: Path) -> DataSpec:
    try:
        return DataSpec.model_validate({**raw, "base_dir": Path(base_dir)})
    except ValidationError as error:
        raise SpecError([_problem(e) for e in error.errors()]) from None


def _problem(error: dict) -> str:
    """One pydantic error as a line naming the key: "unknown key 'colums' in [columns]"."""
    location = [str(part) for part in error["loc"] if not isinstance(part, int)]
    *table, key = location or ["?"]
    where = f"[{'.'.join(table)}]" if table else "the top level"
    if error["type"] == "extra_forbidden":
        known = _known_keys(table)
        hint = difflib.get_close_matches(key, known, n=1)
        said = f" (did you mean {hint[0]!r}?)" if hint else f"; known keys: {', '.join(known)}"
        return f"unknown key {key!r} in {where}{said}"
    if error["type"] == "missing":
        return f"missing key {key!r} in {where}"
    message = error["msg"].removeprefix("Value error, ")
    if key in ("labels", "graded") and error["type"] == "value_error":
        return f"[{'.'.join(location)}]: {message}"
    return f"{key!r} in {where}: {message}"


def _known_keys(table: list[str]) -> list[str]:
    model: type[BaseModel] = DataSpec
    for name in table:
        annotation = model.model_fields[name].annotation
        model = next(a for a in (annotation, *getattr(annotation, "__args__", ())) if _is_model(a))
    return [name for name in model.model_fields if name != "base_dir"]


def _is_model(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def read_raw(spec: DataSpec) -> tuple[pd.DataFrame, ColumnMapping]:
    """Every file's mapped source columns, as written, one frame; and the resolved mapping.

    SpecError when a file is missing, unreadable, or lacks a named column."""
    files = spec.files()
    table_format = spec.source.table_format()
    try:
        available = table_columns(files[0], table_format)
        mapping = spec.mapping(available)
        stray = [column for column in spec.columns.ignore if column not in available]
        if stray:
            raise SpecError([f"[columns] ignore names columns {files[0].name} lacks: {stray}"])
        frames = [read_source(file, mapping, table_format) for file in files]
    except SpecError:
        raise
    except (ValueError, FileNotFoundError) as error:
        raise SpecError([str(error)]) from None
    return pd.concat(frames, ignore_index=True), mapping


def read_table(spec: DataSpec) -> pd.DataFrame:
    """The spec's data in the contract's columns, checked: SpecError lists every problem
    (`data_problems`). Graded data gets `relevance` = grade - range[0] and, when the graded
    cascade is the model's tasks, one 0/1 column per task (`Graded.tasks`)."""
    raw, mapping = read_raw(spec)
    problems = data_problems(spec, raw, mapping)
    if problems:
        raise SpecError(problems)
    frame = to_contract(raw, mapping)
    graded = spec.labels.graded
    if graded is not None:
        grades = frame[RELEVANCE].to_numpy(np.float64)
        frame[RELEVANCE] = (grades - graded.range[0]).astype(np.float32)
        if not spec.labels.binary:
            labels = graded.task_labels(grades)
            for k, task in enumerate(graded.tasks):
                frame[task] = labels[:, k]
    return frame


def data_problems(spec: DataSpec, raw: pd.DataFrame, mapping: ColumnMapping) -> list[str]:
    """One line per problem the data has against its spec (empty: the data is usable)."""
    problems = []
    for column in dict.fromkeys((mapping.group, mapping.query, mapping.item_id)):
        missing = int(raw[column].isna().sum())
        if missing:
            problems.append(f"column {column!r} (an id or the query) has {missing} missing values")
    for column in mapping.numeric_features:
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = raw[column][values.isna() & raw[column].notna()]
        if len(bad):
            problems.append(
                f"numeric feature {column!r} is not numeric: {len(bad)} rows, "
                f"e.g. {bad.astype(str).unique()[:3].tolist()}"
            )
    for task, column in spec.labels.binary.items():
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = raw[column][values.isna() | ~values.isin([0, 1])]
        if len(bad):
            problems.append(
                f"label {task} = {column!r} must be 0/1: {len(bad)} rows are not, "
                f"e.g. {bad.astype(str).unique()[:3].tolist()}"
            )
    binary = spec.labels.binary
    if not any(p.startswith("label") for p in problems):
        pairs = list(binary.items())
        for (earlier, e_col), (later, l_col) in zip(pairs, pairs[1:], strict=False):
            broken = int(((raw[l_col].astype(float) == 1) & (raw[e_col].astype(float) == 0)).sum())
            if broken:
                problems.append(
                    f"{broken} rows have {later}=1 but {earlier}=0 (a later task implies the "
                    f"earlier: {' -> '.join(binary)})"
                )
    if spec.labels.graded is not None:
        problems += _graded_problems(spec.labels.graded, raw)
    return problems


def _graded_problems(graded: Graded, raw: pd.DataFrame) -> list[str]:
    column = graded.column
    grades = pd.to_numeric(raw[column], errors="coerce")
    if grades.isna().any():
        bad = raw[column][grades.isna()].astype(str).unique()[:3].tolist()
        return [f"graded label {column!r} has {int(grades.isna().sum())} non-numeric rows: {bad}"]
    low, high = graded.range
    seen_low, seen_high = float(grades.min()), float(grades.max())
    outside = int(((grades < low) | (grades > high)).sum())
    if outside:
        return [
            f"graded label {column!r} has {outside} rows outside its range [{low:g}, {high:g}] "
            f"(it runs {seen_low:g}..{seen_high:g})"
        ]
    if seen_low != low:
        return [
            f"graded label {column!r} is declared {low:g}..{high:g} but its lowest grade is "
            f"{seen_low:g}: every gain would shift; set range = [{seen_low:g}, {high:g}]"
        ]
    return []
