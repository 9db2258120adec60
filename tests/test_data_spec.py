"""The data spec (training/data/spec.py): a user's own files read into the contract's columns,
and every wrong key or value named on a line of its own."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib

from training.data.spec import (
    EXPECTED_GRADE,
    DataSpec,
    SpecError,
    load_spec,
    parse_spec,
    read_table,
)

# A shop's graded judgments, named its own way: "NA" is a real product name, "null" a query.
JUDGED = pd.DataFrame(
    {
        "search_term": ["crème brûlée torch", "crème brûlée torch", "null", "null", "tv", "tv"],
        "product_uid": ["007", "008", "101", "102", "201", "202"],
        "title": ["Kitchen Torch", "NA", "Null Modem Cable", "Mug", "OLED 55", "Remote"],
        "grade": [3, 1, 2, 1, 3, 2],
        "price": [19.5, 4.0, 7.25, 3.0, 999.0, 15.0],
        "brand": ["acme", "bic", "", "acme", "lg", "lg"],
        "id": [1, 2, 3, 4, 5, 6],
    }
)

GRADED_SPEC = """
[source]
path = "{path}"
{source}

[columns]
query = "search_term"
item_id = "product_uid"
item_text = "title"
numeric = {numeric}
categorical = ["brand"]
ignore = ["id"]

[labels.graded]
column = "grade"
range = [1, 3]
"""


def write_spec(folder: Path, text: str, name: str = "spec.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def write_zipped_csv(frame: pd.DataFrame, path: Path, encoding: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(path.stem, frame.to_csv(index=False).encode(encoding))
    return path


@pytest.mark.parametrize(
    ("file", "source"),
    [
        ("judged.csv", ""),
        ("judged.csv.zip", 'encoding = "latin-1"'),
        ("judged.dat", 'format = "csv"\nencoding = "latin-1"\ncompression = "zip"'),
        ("judged.parquet", ""),
        ("judged.tsv", ""),
        ("judged.jsonl", ""),
    ],
)
def test_a_spec_reads_its_file_into_the_contract(tmp_path, file, source):
    path = tmp_path / file
    if file.endswith("zip") or file.endswith("dat"):
        write_zipped_csv(JUDGED, path, "latin-1")
    elif file.endswith("parquet"):
        JUDGED.to_parquet(path, index=False)
    elif file.endswith("tsv"):
        JUDGED.to_csv(path, sep="\t", index=False)
    elif file.endswith("jsonl"):
        JUDGED.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        JUDGED.to_csv(path, index=False, encoding="utf-8")
    spec = load_spec(
        write_spec(tmp_path, GRADED_SPEC.format(path=file, source=source, numeric='"rest"'))
    )
    frame = read_table(spec)
    assert frame["query_text"].tolist() == JUDGED["search_term"].tolist()
    assert frame["session_id"].tolist() == JUDGED["search_term"].tolist()  # group = query
    assert frame["item_id"].tolist()[:2] == ["007", "008"]  # ids keep their zeros
    assert frame["item_title"].tolist()[1] == "NA"  # "NA" and "null" are text, not missing
    assert frame["relevance"].tolist() == [2, 0, 1, 0, 2, 1]  # gain = grade - range low
    assert frame["grade_ge2"].tolist() == [1, 0, 1, 0, 1, 1]
    assert frame["grade_ge3"].tolist() == [1, 0, 0, 0, 1, 0]
    assert frame["price"].dtype == "float32"  # "rest": price (id is ignored)
    assert "id" not in frame.columns
    assert spec.labels.tasks == ("grade_ge2", "grade_ge3")
    assert spec.labels.score == EXPECTED_GRADE


def test_the_expected_grade_is_the_cascade_sum():
    spec = load_spec_text(GRADED_SPEC.format(path="x.csv", source="", numeric="[]"))
    graded = spec.labels.graded
    probs = np.array([[1.0, 1.0], [0.5, 0.25], [0.0, 0.0]])
    np.testing.assert_allclose(graded.expected_grade(probs), [3.0, 1.75, 1.0])
    assert graded.expected_grade_weights == (1.0, (1.0, 1.0))


def load_spec_text(text: str, folder: Path = Path(".")) -> DataSpec:
    return parse_spec(tomllib.loads(text), folder)


def test_binary_tasks_keep_the_cascade_and_a_graded_column_is_for_evaluation(tmp_path):
    log = pd.DataFrame(
        {"q": ["a", "a", "b"], "i": [1, 2, 3], "c": [1, 0, 1], "p": [1, 0, 0], "g": [2, 0, 1]}
    )
    log.to_parquet(tmp_path / "log.parquet")
    spec = load_spec(
        write_spec(
            tmp_path,
            '[source]\npath = "*.parquet"\n[columns]\nquery = "q"\nitem_id = "i"\n'
            '[labels]\nclick = "c"\npurchase = "p"\n[labels.graded]\ncolumn = "g"\n'
            "range = [0, 2]\n",
        )
    )
    frame = read_table(spec)
    assert spec.labels.tasks == ("click", "purchase") and spec.labels.score == "click"
    assert frame["click"].tolist() == [1, 0, 1] and "grade_ge1" not in frame.columns


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (("[columns]", "[colums]"), "unknown key 'colums' in the top level (did you mean 'columns'?)"),
        (('item_id = "product_uid"', 'itme_id = "product_uid"'),
         "unknown key 'itme_id' in [columns] (did you mean 'item_id'?)"),
        (("range = [1, 3]", "range = [1, 3]\ncascade = [3, 2]"),
         "[labels.graded]: cascade [3, 2] is not increasing"),
        (("range = [1, 3]", "range = [1, 3]\ncascade = [2, 5]"),
         "[labels.graded]: cascade thresholds ['5'] lie outside (1, 3]"),
        (('path = "x.csv"', 'path = "x.csv"\nformat = "xlsx"'), "'format' in [source]: Input should be"),
        (('path = "x.csv"', 'path = "x.csv"\nencoding = "latin-2000"'),
         "'encoding' in [source]: unknown encoding 'latin-2000'"),
        (("[labels.graded]", "[labels.grade]"), "unknown key 'grade' in [labels] (did you mean 'graded'?)"),
    ],
)  # fmt: skip
def test_a_wrong_key_fails_with_one_line_naming_it(change, line):
    text = GRADED_SPEC.format(path="x.csv", source="", numeric="[]").replace(*change)
    with pytest.raises(SpecError) as raised:
        load_spec_text(text)
    assert any(problem.startswith(line) for problem in raised.value.problems), raised.value


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"grade": [1, 1, 2, 2, 3, 4]}, "graded label 'grade' has 1 rows outside its range [1, 3]"),
        ({"price": ["cheap", 1, 2, 3, 4, 5]}, "numeric feature 'price' is not numeric: 1 rows"),
        ({"product_uid": ["1", None, "3", "4", "5", "6"]}, "column 'product_uid'"),
    ],
)
def test_bad_data_fails_with_one_line_each(tmp_path, change, line):
    JUDGED.assign(**change).to_csv(tmp_path / "x.csv", index=False)
    spec = load_spec(
        write_spec(tmp_path, GRADED_SPEC.format(path="x.csv", source="", numeric='["price"]'))
    )
    with pytest.raises(SpecError) as raised:
        read_table(spec)
    assert [p for p in raised.value.problems if p.startswith(line)], raised.value


def test_a_one_to_three_column_declared_zero_to_three_fails(tmp_path):
    JUDGED.to_csv(tmp_path / "x.csv", index=False)
    text = GRADED_SPEC.format(path="x.csv", source="", numeric="[]").replace("[1, 3]", "[0, 3]")
    with pytest.raises(SpecError, match=r"declared 0..3 but its lowest grade is 1"):
        read_table(load_spec(write_spec(tmp_path, text)))


def test_a_missing_column_and_a_missing_file_are_named(tmp_path):
    JUDGED.drop(columns=["title"]).to_csv(tmp_path / "x.csv", index=False)
    spec = load_spec(
        write_spec(tmp_path, GRADED_SPEC.format(path="x.csv", source="", numeric="[]"))
    )
    with pytest.raises(SpecError, match=r"x.csv lacks the mapped columns \['title'\]"):
        read_table(spec)
    spec = load_spec(
        write_spec(tmp_path, GRADED_SPEC.format(path="y*.csv", source="", numeric="[]"))
    )
    with pytest.raises(SpecError, match=r"\[source\] path 'y\*.csv' matches no file"):
        read_table(spec)


def test_a_latin1_file_read_as_utf8_says_to_set_the_encoding(tmp_path):
    JUDGED.to_csv(tmp_path / "x.csv", index=False, encoding="latin-1")
    spec = load_spec(
        write_spec(tmp_path, GRADED_SPEC.format(path="x.csv", source="", numeric="[]"))
    )
    with pytest.raises(SpecError, match=r"x.csv is not utf-8 text .*encoding = \"latin-1\""):
        read_table(spec)


def test_the_module_docstring_example_is_a_valid_spec():
    import textwrap

    from training.data import spec as spec_module

    doc = spec_module.__doc__
    example = textwrap.dedent(doc[doc.index("    [source]") : doc.index("How graded labels")])
    spec = load_spec_text(example)
    assert spec.source.encoding == "latin-1" and spec.labels.graded.thresholds == (2.0, 3.0)
    assert spec.mapping().numeric_features == ("price", "rating")
