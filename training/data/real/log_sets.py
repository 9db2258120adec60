"""Readers of the real data sets without query text: LTR features, Alibaba logs, Instacart.

Same conventions as `text_sets.py`: the data set's folder in, a `finish`ed contract frame
out, a `describe:` paragraph per reader that a test holds it to, nothing invented.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from contract.schema import (
    ITEM_ID,
    ITEM_TITLE,
    QUERY_CATEGORY,
    RELEVANCE,
    SCENARIO,
    SESSION_ID,
    TOP_CATEGORY,
)
from training.data.real.readers import as_text, finish

LIGHTGBM_FEATURES = 300  # feature ids 1..300 in rank.train / rank.test (SOURCE.txt)
LIGHTGBM_SPLITS = ("train", "test")
ALIEXPRESS_SPLITS = ("train", "test")
ALI_CCP_SPLITS = ("train", "val", "test")
ALI_CCP_SCENARIO_FIELD = "301"
ALI_CCP_ITEM_FIELD = "205"


def read_lightgbm_lambdarank(path: str | Path, split: str | None = None) -> pd.DataFrame:
    """LightGBM's LambdaRank example: 3,005 train + 768 test rows in 201 + 50 query groups.

    describe: fills session_id, relevance;
    cannot query_text, query_category, top_category, scenario, platform, item_id, item_title,
    position, click, atc, purchase.

    LibSVM lines 'label id:value ...' -> numeric features f1..f300 (the file's own ids; an
    absent id is 0.0, LibSVM's convention) and relevance = the graded label, 0..4 (one grade
    more than the contract's 0..3; kept as given). The .query files give group sizes, in
    order: session_id is '<split>-<group index>'. `split` says which file a row came from;
    split=None reads both. The features' meaning is undocumented; there are no items.
    """
    frames = [_lightgbm_split(Path(path), name) for name in _splits(split, LIGHTGBM_SPLITS)]
    return finish(pd.concat(frames, ignore_index=True))


def parse_libsvm(lines: list[str], n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """'2 1:0.5 7:1' lines -> (labels [rows], features [rows, n_features]) with ids 1-based."""
    labels = np.empty(len(lines), dtype=np.float32)
    features = np.zeros((len(lines), n_features), dtype=np.float32)
    for row, line in enumerate(lines):
        label, *pairs = line.split()
        labels[row] = float(label)
        for pair in pairs:
            index, _, value = pair.partition(":")
            feature = int(index)
            if not 1 <= feature <= n_features:
                raise ValueError(f"line {row + 1}: feature id {feature} outside 1..{n_features}")
            features[row, feature - 1] = float(value)
    return labels, features


def _lightgbm_split(path: Path, split: str) -> pd.DataFrame:
    lines = [line for line in (path / f"rank.{split}").read_text().splitlines() if line.strip()]
    sizes = [int(size) for size in (path / f"rank.{split}.query").read_text().split()]
    if sum(sizes) != len(lines):
        raise ValueError(
            f"rank.{split}.query sums to {sum(sizes)} rows, rank.{split} has {len(lines)}"
        )
    labels, features = parse_libsvm(lines, LIGHTGBM_FEATURES)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    frame = pd.DataFrame(
        features, columns=[f"f{index}" for index in range(1, LIGHTGBM_FEATURES + 1)]
    )
    frame.insert(0, SESSION_ID, [f"{split}-{group}" for group in groups])
    frame.insert(1, RELEVANCE, labels)
    frame.insert(2, "split", split)
    frame["split"] = frame["split"].astype("string")
    return frame


def read_aliexpress(path: str | Path, split: str | None = None) -> pd.DataFrame:
    """AliExpress search-log samples (Tianchi 74690), one folder per country split.

    describe: fills session_id, scenario, click, purchase;
    cannot query_text, query_category, top_category, platform, item_id, item_title, position,
    atc, relevance.

    `path` is the alibaba-samples folder; each aliexpress_<cc>/ folder there is one country
    and its code, upper-cased, is the scenario (only 'US' is staged: 100 train + 20 test rows,
    41 + 10 searches). session_id is '<cc>-<split>-<search_id>'; purchase is `conversion`.
    Kept as features: categorical_1..16 (categorical codes, as text) and numerical_1..63
    (float32); kept as is: `search_id`, `split`. The log has no query text and no item id.
    """
    folders = sorted(p for p in Path(path).glob("aliexpress_*") if p.is_dir())
    if not folders:
        raise FileNotFoundError(f"no aliexpress_<country> folder in {path}")
    frames = []
    for folder in folders:
        country = folder.name.removeprefix("aliexpress_").upper()
        for name in _splits(split, ALIEXPRESS_SPLITS):
            raw = pd.read_csv(folder / f"aliexpress_{name}_sample.csv")
            frame = pd.DataFrame(
                {
                    SESSION_ID: f"{country}-{name}-" + raw["search_id"].astype(str),
                    SCENARIO: country,
                    "click": raw["click"],
                    "purchase": raw["conversion"],
                    "search_id": raw["search_id"],
                    "split": name,
                }
            )
            features = raw.drop(columns=["search_id", "click", "conversion"])
            frames.append(pd.concat([frame, _typed_features(features, "categorical_")], axis=1))
    frame = pd.concat(frames, ignore_index=True)
    frame["split"] = frame["split"].astype("string")
    return finish(frame)


def read_ali_ccp(path: str | Path, split: str | None = None) -> pd.DataFrame:
    """Ali-CCP samples (Taobao, Tianchi 408), label-encoded as in torch-rechub: 100/50/50 rows.

    describe: fills scenario, item_id, click, purchase;
    cannot session_id, query_text, query_category, top_category, platform, item_title,
    position, atc, relevance.

    `path` is the alibaba-samples folder (reads ali_ccp/ali_ccp_<split>_sample.csv). scenario
    is field 301, the domain id that multi-domain work splits Ali-CCP by (SOURCE.txt; only
    '1' in these samples). item_id is field 205, the item id (label-encoded: an id within
    this sample, not a Taobao id). Rows are independent impressions: no search or session id
    exists. Features: the 22 other sparse fields (101, 121, ..., 205 included; as text) and
    the 8 dense D* fields (float32).
    """
    frames = []
    for name in _splits(split, ALI_CCP_SPLITS):
        raw = pd.read_csv(Path(path) / "ali_ccp" / f"ali_ccp_{name}_sample.csv")
        frame = pd.DataFrame(
            {
                SCENARIO: raw[ALI_CCP_SCENARIO_FIELD],
                ITEM_ID: raw[ALI_CCP_ITEM_FIELD],
                "click": raw["click"],
                "purchase": raw["purchase"],
                "split": name,
            }
        )
        features = raw.drop(columns=["click", "purchase", ALI_CCP_SCENARIO_FIELD])
        sparse = [c for c in features.columns if not c.startswith("D")]
        typed = _typed_features(features, sparse)
        frames.append(pd.concat([frame, typed], axis=1))
    frame = pd.concat(frames, ignore_index=True)
    frame["split"] = frame["split"].astype("string")
    return finish(frame)


def read_instacart(path: str | Path) -> pd.DataFrame:
    """Instacart subset: 32,290 prior order lines of 9,288 products, department > aisle.

    describe: fills session_id, query_category, top_category, item_id, item_title, purchase;
    cannot query_text, scenario, platform, position, click, atc, relevance.

    One row per purchased product: session_id is the order, purchase=1 on every row (no
    product shown and not bought is recorded). top_category is the product's department and
    query_category its aisle (names): Instacart has no queries, so these are the ITEM's
    categories and vary within an order, unlike a search log's. Kept: `reordered` (0/1),
    `add_to_cart_order` (cart position, not display position), `aisle_id`, `department_id`
    and the order's `user_id`, `eval_set`, `order_number`, `order_dow`, `order_hour_of_day`,
    `days_since_prior_order` (missing for the 7% of lines whose order is not in orders.csv).
    """
    with tarfile.open(Path(path) / "instacart_subset.tar.xz", mode="r:xz") as archive:
        tables = {
            name: pd.read_csv(archive.extractfile(f"{name}.csv"))
            for name in ("aisles", "departments", "products", "orders", "order_products__prior")
        }
    products = (
        tables["products"]
        .merge(tables["aisles"], on="aisle_id", how="left")
        .merge(tables["departments"], on="department_id", how="left")
    )
    lines = tables["order_products__prior"].merge(products, on="product_id", how="left")
    lines = lines.merge(tables["orders"], on="order_id", how="left")
    order_columns = [c for c in tables["orders"].columns if c != "order_id"]
    frame = pd.DataFrame(
        {
            SESSION_ID: lines["order_id"],
            QUERY_CATEGORY: lines["aisle"],
            TOP_CATEGORY: lines["department"],
            ITEM_ID: lines["product_id"],
            ITEM_TITLE: lines["product_name"],
            "purchase": 1,
            "reordered": lines["reordered"].astype("int8"),
            "add_to_cart_order": lines["add_to_cart_order"],
            "aisle_id": lines["aisle_id"],
            "department_id": lines["department_id"],
        }
    )
    for column in order_columns:
        frame[column] = lines[column].astype("Int64") if column != "eval_set" else lines[column]
    frame["eval_set"] = as_text(frame["eval_set"])
    return finish(frame)


def _splits(split: str | None, known: tuple[str, ...]) -> tuple[str, ...]:
    if split is None:
        return known
    if split not in known:
        raise ValueError(f"split must be one of {known} or None, got {split!r}")
    return (split,)


def _typed_features(features: pd.DataFrame, categorical: str | list[str]) -> pd.DataFrame:
    """Categorical columns (a name prefix or a list) as text, the rest as float32."""
    typed = {}
    for column in features.columns:
        is_categorical = (
            column.startswith(categorical)
            if isinstance(categorical, str)
            else column in categorical
        )
        values = features[column]
        typed[column] = as_text(values) if is_categorical else values.astype("float32")
    return pd.DataFrame(typed, index=features.index)
