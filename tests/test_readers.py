"""Readers: the generic mapped reader, the real-set readers and their stated coverage.

The first half needs nothing but tmp_path. The second half reads the real sets in
shared/data ($MOERANK_SHARED_DATA, else <repo>/../shared/data) and skips when they are absent;
its figures are the ones shared/data/README.md and each SOURCE.txt state.
"""

from __future__ import annotations

import dataclasses
import doctest
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

from contract.schema import shared_data_dir
from training.data.real import sets as real_sets
from training.data.real.log_sets import parse_libsvm, read_lightgbm_lambdarank
from training.data.real.negatives import NEGATIVE_SOURCE, add_sampled_negatives
from training.data.real.readers import CONTRACT_COLUMNS, ColumnMapping, read_ranking_table
from training.data.real.sets import REAL_SETS, describe, read_real_set
from training.data.real.text_sets import (
    parse_ditto_record,
    product_titles,
    read_bestbuy_candidates,
    read_bestbuy_clicks,
    read_bestbuy_products,
    read_esci_fixture_products,
)

# --------------------------------------------------------------------------- generic reader

SOURCE = pd.DataFrame(
    {
        "sess": [7, 7, 8],
        "qry": ["red shoes", "red shoes", "tv"],
        "sku": [101, 102, 201],
        "title": ["Red Runner", "Crimson Boot", "OLED 55"],
        "clicked": [1, 0, 1],
        "bought": [1, 0, 0],
        "price": [59.5, 80.0, 999.0],
        "brand": ["acme", None, "vizio"],
        "cat": ["shoes", "shoes", "tvs"],
        "country": ["US", "US", "DE"],
        "unused": ["x", "y", "z"],
    }
)
MAPPING = ColumnMapping(
    query="qry",
    item_id="sku",
    group="sess",
    labels={"click": "clicked", "purchase": "bought"},
    item_text="title",
    category="cat",
    scenario="country",
    numeric_features=("price",),
    categorical_features=("brand",),
)


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_csv_is_read_into_contract_columns(tmp_path):
    frame = read_ranking_table(_write_csv(SOURCE, tmp_path / "log.csv"), MAPPING)
    assert list(frame.columns) == [
        "session_id",
        "query_text",
        "query_category",
        "scenario",
        "item_id",
        "item_title",
        "click",
        "purchase",
        "price",
        "brand",
    ]
    assert frame["session_id"].tolist() == ["7", "7", "8"]
    assert frame["item_id"].tolist() == ["101", "102", "201"]
    assert frame["click"].tolist() == [1, 0, 1] and frame["click"].dtype == "int8"
    assert frame["price"].dtype == "float32"
    assert frame["brand"].isna().tolist() == [False, True, False]
    assert frame["scenario"].tolist() == ["US", "US", "DE"]


def test_parquet_and_compressed_csv_read_the_same_as_csv(tmp_path):
    from_csv = read_ranking_table(_write_csv(SOURCE, tmp_path / "log.csv"), MAPPING)
    SOURCE.to_parquet(tmp_path / "log.parquet", index=False)
    SOURCE.to_csv(tmp_path / "log.csv.gz", index=False)
    pd.testing.assert_frame_equal(read_ranking_table(tmp_path / "log.parquet", MAPPING), from_csv)
    pd.testing.assert_frame_equal(read_ranking_table(tmp_path / "log.csv.gz", MAPPING), from_csv)


def test_missing_columns_are_named(tmp_path):
    path = _write_csv(SOURCE.drop(columns=["qry", "price"]), tmp_path / "log.csv")
    with pytest.raises(ValueError, match=r"lacks the mapped columns \['qry', 'price'\]"):
        read_ranking_table(path, MAPPING)


def test_missing_parquet_columns_are_named(tmp_path):
    SOURCE.drop(columns=["sku"]).to_parquet(tmp_path / "log.parquet")
    with pytest.raises(ValueError, match=r"\['sku'\]"):
        read_ranking_table(tmp_path / "log.parquet", MAPPING)


def test_one_source_column_can_fill_two_roles(tmp_path):
    mapping = ColumnMapping(query="qry", item_id="sku", group="qry", labels={"relevance": "bought"})
    frame = read_ranking_table(_write_csv(SOURCE, tmp_path / "log.csv"), mapping)
    assert frame["session_id"].tolist() == frame["query_text"].tolist() == SOURCE["qry"].tolist()
    assert frame["relevance"].dtype == "float32"


def test_categorical_codes_with_gaps_stay_integers(tmp_path):
    source = SOURCE.assign(code=[3, None, 12])
    mapping = dataclasses.replace(MAPPING, categorical_features=("code",))
    frame = read_ranking_table(_write_csv(source, tmp_path / "log.csv"), mapping)
    assert frame["code"].tolist()[0::2] == ["3", "12"] and frame["code"].isna().iloc[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"clicked": [2, 0, 1]}, "must be 0/1"),
        ({"clicked": [0, 0, 1]}, "purchase=1 but click=0"),
        ({"sku": [101, None, 201]}, "missing values in required columns"),
        ({"price": ["cheap", 1, 2]}, "'price' is not numeric"),
    ],
)
def test_bad_values_are_errors(tmp_path, change, message):
    path = _write_csv(SOURCE.assign(**change), tmp_path / "log.csv")
    with pytest.raises(ValueError, match=message):
        read_ranking_table(path, MAPPING)


def test_unsupported_file_type_is_an_error(tmp_path):
    path = tmp_path / "log.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="expected .csv"):
        read_ranking_table(path, MAPPING)


def test_mapping_from_dict_rejects_unknown_keys_with_a_hint():
    config = {"query": "q", "item_id": "i", "group": "g", "labels": {"click": "c"}}
    assert ColumnMapping.from_dict(config) == ColumnMapping(
        query="q", item_id="i", group="g", labels={"click": "c"}
    )
    with pytest.raises(ValueError, match=r"'numeric_feature' \(did you mean 'numeric_features'"):
        ColumnMapping.from_dict({**config, "numeric_feature": ["x"]})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": {"clicks": "c"}}, "unknown label names"),
        ({"labels": {}}, "labels is empty"),
        ({"numeric_features": ["a"], "categorical_features": ["a"]}, "both numeric and"),
        ({"numeric_features": ["position"]}, "contract column names"),
        ({"query": None}, "query must name a source column"),
        ({"category": 3}, "category must name a source column or be None"),
        ({"numeric_features": "price"}, "a list of column names, not one string"),
    ],
)
def test_bad_mappings_are_errors(changes, message):
    config = {"query": "q", "item_id": "i", "group": "g", "labels": {"click": "c"}}
    with pytest.raises(ValueError, match=message):
        ColumnMapping(**{**config, **changes})


def test_mapping_is_frozen_and_copies_its_inputs():
    labels = {"click": "c"}
    features = ["a"]
    mapping = ColumnMapping(
        query="q", item_id="i", group="g", labels=labels, numeric_features=features
    )
    labels["purchase"] = "p"
    features.append("b")
    assert dict(mapping.labels) == {"click": "c"} and mapping.numeric_features == ("a",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mapping.query = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        mapping.labels["atc"] = "x"  # type: ignore[index]


# ------------------------------------------------------------------ sampled negatives, parsers

CLICKS = pd.DataFrame(
    {
        "session_id": ["s1", "s2", "s3", "s3", "s3", "s4"],
        "query_text": ["a", "A", "a", "a", "a", "b"],
        "item_id": ["1", "2", "1", "3", "3", "9"],
        "item_title": ["one", "two", "one", "three", "three", "nine"],
        "click": [1, 1, 1, 1, 1, 1],
    }
)


def _negatives(frame: pd.DataFrame) -> dict[str, set[str]]:
    sampled = frame[frame["click"] == 0]
    return {s: set(g["item_id"]) for s, g in sampled.groupby("session_id")}


def test_negatives_come_from_the_same_query_and_exclude_the_sessions_clicks():
    frame = add_sampled_negatives(CLICKS, n_negatives=2, fill_from_catalog=False)
    assert _negatives(frame) == {"s1": {"2", "3"}, "s2": {"1", "3"}, "s3": {"2"}}
    positives = frame[frame["click"] == 1]
    assert len(positives) == 5  # s3's repeated click on item 3 is one candidate
    assert positives[NEGATIVE_SOURCE].isna().all()
    assert (frame.loc[frame["click"] == 0, NEGATIVE_SOURCE] == "same_query").all()
    titles = dict(zip(frame["item_id"], frame["item_title"], strict=True))
    assert titles == {"1": "one", "2": "two", "3": "three", "9": "nine"}


def test_catalog_fills_short_pools_and_the_seed_fixes_the_draw():
    frame = add_sampled_negatives(CLICKS, n_negatives=2, seed=3)
    s4 = frame[(frame["session_id"] == "s4") & (frame["click"] == 0)]
    assert len(s4) == 2 and set(s4["item_id"]) <= {"1", "2", "3"}
    assert (s4[NEGATIVE_SOURCE] == "catalog").all() and (s4["query_text"] == "b").all()
    pd.testing.assert_frame_equal(frame, add_sampled_negatives(CLICKS, n_negatives=2, seed=3))


def test_negatives_need_a_click_only_log():
    with pytest.raises(ValueError, match="click=1 on every row"):
        add_sampled_negatives(CLICKS.assign(click=[1, 0, 1, 1, 1, 1]))


def test_parse_libsvm_places_one_based_ids():
    labels, features = parse_libsvm(["2 1:0.5 3:0.25", "0", "4 2:1"], n_features=3)
    assert labels.tolist() == [2, 0, 4]
    assert features.tolist() == [[0.5, 0, 0.25], [0, 0, 0], [0, 1, 0]]
    with pytest.raises(ValueError, match="outside 1..3"):
        parse_libsvm(["1 4:0.1"], n_features=3)


def test_lightgbm_reader_groups_rows_by_the_query_file(tmp_path):
    (tmp_path / "rank.train").write_text("1 1:0.1\n0 2:0.2\n3 300:0.9\n")
    (tmp_path / "rank.train.query").write_text("2\n1\n")
    frame = read_lightgbm_lambdarank(tmp_path, split="train")
    assert frame["session_id"].tolist() == ["train-0", "train-0", "train-1"]
    assert frame["relevance"].tolist() == [1, 0, 3] and frame["f300"].iloc[2] == pytest.approx(0.9)
    (tmp_path / "rank.train.query").write_text("2\n2\n")
    with pytest.raises(ValueError, match="sums to 4 rows"):
        read_lightgbm_lambdarank(tmp_path, split="train")


def test_parse_ditto_record():
    record = parse_ditto_record("COL name VAL lg tv 24 ' COL description VAL  COL price VAL 9.5 ")
    assert record == {"title": "lg tv 24 '", "description": None, "price": "9.5"}
    with pytest.raises(ValueError, match="starts with"):
        parse_ditto_record("title VAL x")


# ------------------------------------------------------------------ registry and describe lines


@pytest.mark.parametrize("name", sorted(REAL_SETS))
def test_each_reader_describes_every_contract_column_once(name):
    stated = describe(REAL_SETS[name].read)
    both = stated["fills"] + stated["cannot"]
    assert sorted(both) == sorted(CONTRACT_COLUMNS), name
    assert len(set(both)) == len(both)


def test_registry_docstring_examples_run():
    assert doctest.testmod(real_sets).failed == 0


def test_shared_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MOERANK_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    monkeypatch.setenv("MOERANK_SHARED_DATA", str(tmp_path / "absent"))
    assert shared_data_dir() is None
    with pytest.raises(ValueError, match="unknown real set"):
        read_real_set("criteo", tmp_path)


# ------------------------------------------------------------------------- the real data sets


def _folder(name: str) -> Path:
    root = shared_data_dir()
    if root is None:
        pytest.skip("shared data absent: set MOERANK_SHARED_DATA or place it at ../shared/data")
    folder = root / REAL_SETS[name].folder
    if not folder.is_dir():
        pytest.skip(f"{folder} absent")
    return folder


@cache
def _read(name: str) -> pd.DataFrame:
    return REAL_SETS[name].read(_folder(name))


def real(name: str) -> pd.DataFrame:
    return _read(name).copy()


@pytest.mark.parametrize("name", sorted(REAL_SETS))
def test_real_reader_fills_exactly_what_it_describes(name):
    frame = real(name)
    present = [c for c in CONTRACT_COLUMNS if c in frame.columns]
    assert present == list(describe(REAL_SETS[name].read)["fills"])
    assert len(frame) > 0


def test_crowdflower():
    frame = real("crowdflower")
    assert len(frame) == 10_158 and frame["session_id"].nunique() == 261
    assert frame["relevance"].value_counts().to_dict() == {3: 6171, 2: 1737, 1: 1476, 0: 774}
    assert (frame["median_relevance"] == frame["relevance"] + 1).all()
    assert frame["item_id"].is_unique and frame["item_title"].notna().all()


def test_bestbuy_clicks():
    frame = real("bestbuy-small")
    assert len(frame) == 42_365 and (frame["click"] == 1).all()
    assert frame["query_text"].str.lower().nunique() == 4_629
    assert frame["item_id"].nunique() == 413 and frame["user"].nunique() == 38_024
    assert frame["item_title"].notna().mean() == pytest.approx(0.993, abs=0.001)
    assert set(frame["query_category"]) == {"abcat0701002"}
    assert set(frame["top_category"]) == {"abcat0700000"}  # Video Games
    by_query = read_bestbuy_clicks(_folder("bestbuy-small"), session="query")
    assert by_query["session_id"].nunique() == 4_629


def test_bestbuy_products_are_distinct_skus():
    products = read_bestbuy_products(_folder("bestbuy-small"))
    assert len(products) == 436 and products["item_id"].is_unique


def test_bestbuy_candidates_mark_every_constructed_row():
    clicks = real("bestbuy-small")
    frame = read_bestbuy_candidates(_folder("bestbuy-small"), n_negatives=2, seed=1)
    observed = frame[frame[NEGATIVE_SOURCE].isna()]
    sampled = frame[frame[NEGATIVE_SOURCE].notna()]
    assert (observed["click"] == 1).all() and (sampled["click"] == 0).all()
    assert len(observed) == len(clicks.drop_duplicates(["session_id", "item_id"]))
    assert set(sampled[NEGATIVE_SOURCE]) == {"same_query", "catalog"}
    assert not sampled.merge(observed, on=["session_id", "item_id"]).shape[0]
    assert (frame.groupby("session_id")["click"].agg(["size", "sum"]).eval("size - sum") == 2).all()


def test_wands_queries():
    frame = real("wands-queries")
    assert len(frame) == 480 and frame["query_id"].is_unique
    assert frame["query_category"].isna().sum() == 6
    assert frame["query_category"].nunique() == 188  # 189 classes in SOURCE.txt count the empty one


def test_esci_judgments():
    frame = real("esci-judgments")
    assert len(frame) == 6_678 and frame["session_id"].nunique() == 150
    assert frame["relevance"].value_counts().to_dict() == {3: 3389, 2: 1898, 0: 1086, 1: 305}
    assert set(frame["scenario"]) == {"us"}
    assert not frame.duplicated(["session_id", "item_id"]).any()


def test_esci_product_fixture():
    frame = real("esci-product-fixture")
    assert len(frame) == 16 and frame["session_id"].nunique() == 1
    labels = frame["esci_label"].map({"E": 3, "S": 2, "C": 1, "I": 0})
    assert (frame["relevance"] == labels).all()


def test_esci_fixture_products_need_zstandard():
    folder = _folder("esci-product-fixture")
    pytest.importorskip("zstandard", reason="zstandard not installed: the .zstd file is skipped")
    products = read_esci_fixture_products(folder)
    assert set(products["item_id"]) == set(real("esci-product-fixture")["item_id"])


def test_lightgbm_lambdarank():
    frame = real("lightgbm-lambdarank")
    counts = frame.groupby("split").agg(
        rows=("relevance", "size"), groups=("session_id", "nunique")
    )
    assert counts.to_dict("index") == {
        "test": {"rows": 768, "groups": 50},
        "train": {"rows": 3_005, "groups": 201},
    }
    train = frame[frame["split"] == "train"]["relevance"].value_counts().to_dict()
    assert train == {1: 1211, 2: 858, 0: 645, 3: 222, 4: 69}
    features = frame.filter(regex=r"^f\d+$")
    assert features.shape[1] == 300 and features.min().min() >= 0 and features.max().max() <= 1


def test_aliexpress():
    frame = real("aliexpress")
    sizes = frame.groupby("split").agg(rows=("click", "size"), searches=("session_id", "nunique"))
    assert sizes.to_dict("index") == {
        "test": {"rows": 20, "searches": 10},
        "train": {"rows": 100, "searches": 41},
    }
    assert set(frame["scenario"]) == {"US"}
    assert len(frame.filter(like="categorical_").columns) == 16
    assert len(frame.filter(like="numerical_").columns) == 63


def test_ali_ccp():
    frame = real("ali-ccp")
    assert frame["split"].value_counts().to_dict() == {"train": 100, "val": 50, "test": 50}
    assert set(frame["scenario"]) == {"1"} and "session_id" not in frame.columns
    assert frame.filter(regex=r"^D").shape[1] == 8


def test_instacart():
    frame = real("instacart-subset")
    assert len(frame) == 32_290 and (frame["purchase"] == 1).all()
    assert frame["item_id"].nunique() == 9_288 and frame["item_title"].notna().all()
    assert frame["top_category"].nunique() == 21 and frame["query_category"].nunique() == 134
    assert (frame.groupby("query_category")["top_category"].nunique() == 1).all()  # a tree
    assert set(frame["reordered"]) == {0, 1}
    assert frame["user_id"].isna().mean() == pytest.approx(0.067, abs=0.005)  # 93% in orders


def test_product_matching():
    pairs = real("product-matching")
    sizes = pairs.groupby(["dataset", "split"])["match"].agg(["size", "sum"])
    assert sizes.loc[("Walmart-Amazon", "train")].tolist() == [6_144, 576]
    assert sizes.loc[("Amazon-Google", "valid")].tolist() == [2_293, 234]
    assert sizes.loc[("Abt-Buy", "test")].tolist() == [1_916, 206]
    assert pairs[["left_title", "right_title"]].notna().all().all()
    titles = product_titles(pairs)
    assert not titles.duplicated(["dataset", "item_title"]).any()
    assert titles["item_category"].notna().any()
