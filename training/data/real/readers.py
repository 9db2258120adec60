"""Read a ranking table (CSV or Parquet) into the dataset contract of `schema.py`.

A user's own data names its columns its own way; a `ColumnMapping` says which source column
plays which contract role, and `read_ranking_table` returns a DataFrame whose columns are the
contract's (`session_id`, `query_text`, `item_id`, labels, ...) followed by the feature columns
under their source names. The readers of the real data sets (`sets.py`) finish their frames
with the same helpers, so every reader hands back the same dtypes:

- ids, text and category columns: pandas ``string`` (missing stays ``<NA>``);
- labels `click`, `atc`, `purchase`: int8 in {0, 1}, a later stage never without the earlier;
- `relevance`: float32 (graded; each reader's docstring states its range);
- numeric features: float32; categorical features: ``string``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from contract.schema import (
    ITEM_COLUMNS,
    ITEM_ID,
    ITEM_TITLE,
    PLATFORM,
    POSITION,
    QUERY_CATEGORY,
    QUERY_TEXT,
    RELEVANCE,
    REQUEST_COLUMNS,
    SCENARIO,
    SESSION_ID,
    TASKS,
    TOP_CATEGORY,
)

LABEL_COLUMNS = (*TASKS, RELEVANCE)
CONTRACT_COLUMNS = (*REQUEST_COLUMNS, *ITEM_COLUMNS, *LABEL_COLUMNS)
TEXT_COLUMNS = (
    SESSION_ID,
    QUERY_TEXT,
    QUERY_CATEGORY,
    TOP_CATEGORY,
    SCENARIO,
    PLATFORM,
    ITEM_ID,
    ITEM_TITLE,
)
REQUIRED_COLUMNS = (SESSION_ID, QUERY_TEXT, ITEM_ID)  # never missing in a generic table

_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_COMPRESSION_SUFFIXES = (".gz", ".xz", ".bz2", ".zip", ".zst")


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column plays which contract role.

    `labels` maps contract label names (`click`, `atc`, `purchase`, `relevance`) to source
    columns; at least one is needed. The same source column may fill two roles (a log without
    session ids can use its query column as `group`). Feature columns keep their source names.
    """

    query: str
    item_id: str
    group: str  # one result list -> session_id
    labels: Mapping[str, str]
    item_text: str | None = None
    category: str | None = None  # -> query_category
    top_category: str | None = None
    scenario: str | None = None
    platform: str | None = None
    position: str | None = None
    numeric_features: tuple[str, ...] = field(default=())
    categorical_features: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("query", "item_id", "group"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must name a source column, got {getattr(self, name)!r}")
        for name in ("item_text", "category", "top_category", "scenario", "platform", "position"):
            if not isinstance(getattr(self, name), str | None):
                raise ValueError(f"{name} must name a source column or be None")
        for name in ("numeric_features", "categorical_features"):
            if isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a list of column names, not one string")
        unknown = sorted(set(self.labels) - set(LABEL_COLUMNS))
        if unknown:
            raise ValueError(f"unknown label names {unknown}; labels are {list(LABEL_COLUMNS)}")
        if not self.labels:
            raise ValueError(f"labels is empty; map at least one of {list(LABEL_COLUMNS)}")
        # Copies, so a caller mutating its dict or list cannot change a frozen mapping.
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "numeric_features", tuple(self.numeric_features))
        object.__setattr__(self, "categorical_features", tuple(self.categorical_features))
        named = [*self.labels.values(), *self.numeric_features, *self.categorical_features]
        not_names = [value for value in named if not isinstance(value, str)]
        if not_names:
            raise ValueError(f"source columns must be named by strings, got {not_names}")
        both = sorted(set(self.numeric_features) & set(self.categorical_features))
        if both:
            raise ValueError(f"columns listed as both numeric and categorical features: {both}")
        clashing = sorted(set(self.feature_columns) & set(CONTRACT_COLUMNS))
        if clashing:
            raise ValueError(
                f"feature columns {clashing} have contract column names; rename them in the "
                "source or map them to their contract role instead"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> ColumnMapping:
        """Build from a plain dict (a JSON/YAML config); an unknown key is an error."""
        known = [f.name for f in fields(cls)]
        unknown = [key for key in values if key not in known]
        if unknown:
            hints = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
            said = ", ".join(
                f"{key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                for key, hint in hints.items()
            )
            raise ValueError(f"unknown mapping keys: {said}; known keys are {known}")
        return cls(**values)  # type: ignore[arg-type]

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return (*self.numeric_features, *self.categorical_features)

    def contract_sources(self) -> dict[str, str]:
        """Contract column -> source column, for every role this mapping fills."""
        roles = {
            SESSION_ID: self.group,
            QUERY_TEXT: self.query,
            QUERY_CATEGORY: self.category,
            TOP_CATEGORY: self.top_category,
            SCENARIO: self.scenario,
            PLATFORM: self.platform,
            ITEM_ID: self.item_id,
            ITEM_TITLE: self.item_text,
            POSITION: self.position,
            **self.labels,
        }
        return {target: source for target, source in roles.items() if source is not None}

    def text_sources(self) -> list[str]:
        """Id and text columns, read as text whatever they look like: "00123" keeps its zeros.
        (Categorical codes are read as written: `as_text` prints a float-read 3.0 as "3".)"""
        text = (self.group, self.query, self.item_id, self.item_text)
        return list(dict.fromkeys(c for c in text if c is not None))

    def source_columns(self) -> list[str]:
        """Every source column the mapping reads, each once, in mapping order."""
        wanted = [*self.contract_sources().values(), *self.feature_columns]
        return list(dict.fromkeys(wanted))


@dataclass(frozen=True)
class TableFormat:
    """How a table file is written. The defaults read a UTF-8 CSV whose kind and compression
    the suffix tells; only an empty field is missing ("NA", "null", "None" stay text, unlike
    pandas' defaults, so a product called "NA" or a query "null" is kept)."""

    format: str | None = None  # csv, tsv, parquet or jsonl; None: from the suffix
    encoding: str = "utf-8"
    separator: str | None = None  # None: "," for csv, a tab for tsv
    compression: str = "infer"  # or none, gzip, bz2, xz, zip (one file inside), zstd
    na_values: tuple[str, ...] = ("",)

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in TABLE_FORMATS:
            raise ValueError(f"format must be one of {TABLE_FORMATS}, got {self.format!r}")
        object.__setattr__(self, "na_values", tuple(self.na_values))


TABLE_FORMATS = ("csv", "tsv", "parquet", "jsonl")


def read_ranking_table(
    path: str | Path, mapping: ColumnMapping, table_format: TableFormat = TableFormat()
) -> pd.DataFrame:
    """Read a CSV/TSV (optionally compressed), JSON-lines or Parquet file into the contract's
    columns.

    describe: fills every contract column the mapping names (session_id, query_text, item_id
    and at least one label always); cannot: whatever the mapping leaves out.
    """
    return to_contract(read_source(path, mapping, table_format), mapping)


def read_source(
    path: str | Path, mapping: ColumnMapping, table_format: TableFormat = TableFormat()
) -> pd.DataFrame:
    """The mapping's source columns of one file, as written (ids and texts as strings)."""
    path = Path(path)
    available = table_columns(path, table_format)
    wanted = mapping.source_columns()
    missing = [column for column in wanted if column not in available]
    if missing:
        raise ValueError(
            f"{path.name} lacks the mapped columns {missing}; it has {sorted(available)}"
        )
    return _read(path, wanted, mapping.text_sources(), table_format)


def to_contract(source: pd.DataFrame, mapping: ColumnMapping) -> pd.DataFrame:
    """Source columns (as `read_source` returns them) -> the contract's, checked and typed."""
    frame = pd.DataFrame(
        {target: source[column] for target, column in mapping.contract_sources().items()},
        index=source.index,
    )
    for column in mapping.numeric_features:
        frame[column] = to_float32(source[column], column)
    for column in mapping.categorical_features:
        frame[column] = as_text(source[column])
    return finish(frame)


def finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Check and type the contract columns; contract columns first, the rest after.

    Raises ValueError when a required column has missing values, a 0/1 label has another
    value, the click -> atc -> purchase cascade is broken, or relevance is not numeric.
    Works on a copy: the caller's frame is left as it was.
    """
    frame = frame.copy()
    empty = [c for c in REQUIRED_COLUMNS if c in frame.columns and frame[c].isna().any()]
    if empty:
        counts = {c: int(frame[c].isna().sum()) for c in empty}
        raise ValueError(f"missing values in required columns (rows): {counts}")
    for column in TEXT_COLUMNS:
        if column in frame.columns:
            frame[column] = as_text(frame[column])
    if POSITION in frame.columns:
        frame[POSITION] = to_float32(frame[POSITION], POSITION).astype("Int32")
    for task in TASKS:
        if task in frame.columns:
            frame[task] = _binary(frame[task], task)
    _check_cascade(frame)
    if RELEVANCE in frame.columns:
        frame[RELEVANCE] = to_float32(frame[RELEVANCE], RELEVANCE)
        if frame[RELEVANCE].isna().any():
            raise ValueError(f"{RELEVANCE} has {int(frame[RELEVANCE].isna().sum())} missing")
    first = [c for c in CONTRACT_COLUMNS if c in frame.columns]
    rest = [c for c in frame.columns if c not in CONTRACT_COLUMNS]
    return frame[first + rest].reset_index(drop=True)


def as_text(values: pd.Series) -> pd.Series:
    """Strings with missing kept missing; integer codes read as float (gaps) print as ints."""
    if pd.api.types.is_float_dtype(values):
        present = values.dropna()
        if bool((present == np.floor(present)).all()):
            values = values.astype("Int64")
    return values.astype("string")


def to_float32(values: pd.Series, name: str) -> pd.Series:
    try:
        return pd.to_numeric(values, errors="raise").astype("float32")
    except (TypeError, ValueError) as error:
        raise ValueError(f"column {name!r} is not numeric: {error}") from None


def _binary(values: pd.Series, name: str) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = values[numeric.isna() | ~numeric.isin([0, 1])]
    if len(bad):
        raise ValueError(
            f"label {name!r} must be 0/1; {len(bad)} rows are not, e.g. {bad.unique()[:5].tolist()}"
        )
    return numeric.astype("int8")


def _check_cascade(frame: pd.DataFrame) -> None:
    present = [task for task in TASKS if task in frame.columns]
    for earlier, later in pairwise(present):
        broken = int(((frame[later] == 1) & (frame[earlier] == 0)).sum())
        if broken:
            raise ValueError(
                f"{broken} rows have {later}=1 but {earlier}=0 (later implies earlier)"
            )


def _kind(path: Path, table_format: TableFormat) -> str:
    if table_format.format is not None:
        return table_format.format
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in _PARQUET_SUFFIXES:
        return "parquet"
    if last in _CSV_SUFFIXES:
        return "tsv" if last == ".tsv" else "csv"
    if last == ".jsonl":
        return "jsonl"
    raise ValueError(
        f"cannot read {path.name}: expected .csv/.tsv/.jsonl (optionally .gz/.xz/.bz2/.zip/"
        ".zst) or .parquet, or a format named"
    )


def table_columns(path: Path, table_format: TableFormat = TableFormat()) -> list[str]:
    """The column names of a table file, read from its header (or schema) alone."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    kind = _kind(path, table_format)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if kind == "jsonl":
        return list(_read_jsonl(path, table_format, nrows=1).columns)
    return list(_read_csv(path, kind, table_format, nrows=0).columns)


def _read(
    path: Path, columns: list[str], text: list[str], table_format: TableFormat
) -> pd.DataFrame:
    kind = _kind(path, table_format)
    if kind == "parquet":
        return pd.read_parquet(path, columns=columns)
    if kind == "jsonl":
        return _read_jsonl(path, table_format)[columns]
    return _read_csv(path, kind, table_format, usecols=columns, dtype=dict.fromkeys(text, str))


def _read_csv(path: Path, kind: str, table_format: TableFormat, **options) -> pd.DataFrame:
    separator = table_format.separator or ("\t" if kind == "tsv" else ",")
    compression = None if table_format.compression == "none" else table_format.compression
    try:
        return pd.read_csv(
            path,
            sep=separator,
            encoding=table_format.encoding,
            compression=compression,
            keep_default_na=False,
            na_values=list(table_format.na_values),
            **options,
        )
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path.name} is not {table_format.encoding} text ({error.reason} at byte "
            f'{error.start}); set the file\'s encoding, e.g. encoding = "latin-1"'
        ) from None


def _read_jsonl(path: Path, table_format: TableFormat, nrows: int | None = None) -> pd.DataFrame:
    compression = None if table_format.compression == "none" else table_format.compression
    return pd.read_json(
        path,
        lines=True,
        encoding=table_format.encoding,
        compression=compression,
        nrows=nrows,
        dtype=False,
    )
