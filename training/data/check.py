"""Check a data spec against its data before any training: `python -m training.data.check SPEC`.

Prints what the spec's files hold as the spec reads them: rows, groups (result lists) and
their sizes, distinct items, the label balance per task (and the grade histogram), missing
values per column, the columns left out, and the feature columns found. Exits 0 when the
data is ready to train on; otherwise prints one line per problem to stderr ("error: ...")
and exits 2: a typo'd key, a missing column or file, a non-numeric numeric feature, a label
outside 0/1 or outside its declared range, a broken cascade.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from contract.schema import RELEVANCE
from training.data.real.readers import ColumnMapping, table_columns
from training.data.spec import (
    EXPECTED_GRADE,
    DataSpec,
    SpecError,
    data_problems,
    load_spec,
    read_raw,
    read_table,
)

EXIT_PROBLEMS = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.check", description=__doc__)
    parser.add_argument("spec", type=Path, help="the data spec (.toml, or .yaml with PyYAML)")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        raw, mapping = read_raw(spec)
    except SpecError as error:
        return _fail(error.problems)
    files = spec.files()
    print(f"spec: {args.spec}")
    print(f"files: {len(files)} ({', '.join(f.name for f in files[:5])})")
    _print_shape(raw, mapping, spec)
    _print_features(raw, mapping, spec)
    _print_missing(raw)
    available = table_columns(files[0], spec.source.table_format())
    left_out = [c for c in available if c not in mapping.source_columns()]
    print(f"columns ignored ({len(left_out)}): {', '.join(left_out) or 'none'}")
    problems = data_problems(spec, raw, mapping)
    if problems:
        return _fail(problems)
    try:
        frame = read_table(spec)
    except SpecError as error:
        return _fail(error.problems)
    _print_labels(frame, spec)
    print("ok: ready to train (python -m training.train --spec SPEC --model NAME --out DIR)")
    return 0


def _fail(problems: list[str]) -> int:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_PROBLEMS


def _print_shape(raw: pd.DataFrame, mapping: ColumnMapping, spec: DataSpec) -> None:
    sizes = raw.groupby(mapping.group, dropna=False).size().to_numpy()
    by = "the query" if spec.columns.group is None else f"{mapping.group!r}"
    print(f"rows: {len(raw)}")
    print(
        f"groups: {len(sizes)} (result lists by {by}; items per list min {sizes.min()} / "
        f"median {np.median(sizes):g} / max {sizes.max()}; one-item lists: "
        f"{int((sizes == 1).sum())}, which no ranking metric counts)"
    )
    print(f"items: {raw[mapping.item_id].nunique()} distinct ids; queries: "
          f"{raw[mapping.query].nunique()} distinct texts")  # fmt: skip


def _print_features(raw: pd.DataFrame, mapping: ColumnMapping, spec: DataSpec) -> None:
    text = f"query {mapping.query!r}" + (
        f", item {mapping.item_text!r}" if mapping.item_text else " only (no item text)"
    )
    print(f"text: {text}")
    numeric = mapping.numeric_features
    print(f"numeric features ({len(numeric)}): {', '.join(numeric) or 'none'}")
    categorical = [f"{c} ({raw[c].nunique()} values)" for c in mapping.categorical_features]
    print(f"categorical features ({len(categorical)}): {', '.join(categorical) or 'none'}")
    request = {
        role: getattr(spec.columns, role)
        for role in ("category", "top_category", "scenario", "platform", "position")
        if getattr(spec.columns, role) is not None
    }
    said = [
        f"{role} = {column!r} ({raw[column].nunique()} values)" for role, column in request.items()
    ]
    print(f"request fields: {', '.join(said) or 'none'}")


def _print_missing(raw: pd.DataFrame) -> None:
    counts = raw.isna().sum()
    counts = counts[counts > 0]
    said = [f"{c} {n} ({n / len(raw):.1%})" for c, n in counts.items()]
    print(f"missing values: {', '.join(said) or 'none'}")


def _print_labels(frame: pd.DataFrame, spec: DataSpec) -> None:
    graded = spec.labels.graded
    if graded is not None:
        grades = frame[RELEVANCE] + graded.range[0]
        histogram = grades.value_counts().sort_index()
        said = [f"{g:g}: {n} ({n / len(frame):.1%})" for g, n in histogram.items()]
        low, high = graded.range
        print(f"grades of {graded.column!r} ({low:g}..{high:g}): {', '.join(said)}")
        if float(grades.max()) < high:
            print(f"  note: no row has the top grade {high:g}")
    for task in spec.labels.tasks:
        share = float(frame[task].mean())
        source = (
            spec.labels.binary.get(task) or f"{graded.column} >= {task.removeprefix('grade_ge')}"
        )
        print(f"task {task} ({source}): {share:.1%} positive, {int(frame[task].sum())} rows")
    score = "the expected grade" if spec.labels.score == EXPECTED_GRADE else spec.labels.score
    print(f"a model ranks by: {score}")


if __name__ == "__main__":
    sys.exit(main())
