"""bestbuy-small read for replay: loadtest's own reader of the shared data files, so that a
load test needs neither training nor its readers installed.

It reads only what a replayed request carries: each logged click's query text, category,
that category's top-level ancestor, the sku clicked and the query's time; and each sku's
product name. (training.data.real.text_sets reads the same files into the dataset contract
for training, with every column and check.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from contract import schema

CLICKS = "bestbuy-small/bestbuy_small_clicks.csv.gz"
PRODUCTS = "bestbuy-small/bestbuy_small_products.csv.gz"
SKU_NAMES = "bestbuy-small/sku_name.tsv"
CATEGORY_TREE = "bestbuy-categories/categories.json"  # Best Buy's open category tree


def read_clicks(data_dir: str | Path) -> pd.DataFrame:
    """One row per logged click: query_text, query_category, top_category (missing without
    the category tree), item_id, query_time."""
    data_dir = Path(data_dir)
    raw = pd.read_csv(
        data_dir / CLICKS,
        usecols=["sku", "category", "query", "query_time"],
        dtype={"sku": "string", "category": "string", "query": "string"},
    )
    return pd.DataFrame(
        {
            schema.QUERY_TEXT: raw["query"],
            schema.QUERY_CATEGORY: raw["category"],
            schema.TOP_CATEGORY: raw["category"].map(top_categories(data_dir)).astype("string"),
            schema.ITEM_ID: raw["sku"],
            "query_time": pd.to_datetime(raw["query_time"], format="ISO8601"),
        }
    )


def titles(data_dir: str | Path) -> pd.Series:
    """sku -> product name: the products file first (its first name per sku), sku_name.tsv
    for skus it lacks."""
    data_dir = Path(data_dir)
    products = pd.read_csv(data_dir / PRODUCTS, usecols=["sku", "name"], dtype="string")
    names = pd.read_csv(
        data_dir / SKU_NAMES, sep="\t", header=None, names=["sku", "name"], dtype="string"
    )
    first = products.groupby("sku", sort=False)["name"].first()
    return first.combine_first(names.drop_duplicates("sku").set_index("sku")["name"])


def top_categories(data_dir: Path) -> dict[str, str]:
    """Best Buy category id -> id of its level-1 ancestor; empty without the tree."""
    path = data_dir / CATEGORY_TREE
    if not path.exists():
        return {}
    nodes = json.loads(path.read_text(encoding="utf-8"))
    return {node["id"]: node["path"][0]["id"] for node in nodes if node.get("path")}
