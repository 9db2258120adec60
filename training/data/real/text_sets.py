"""Readers of the real data sets that carry query or product text (see shared/data/README.md).

Each reader takes the data set's folder and returns a DataFrame finished by
`readers.finish`: contract columns first, then the source's own columns under their source
names. The `describe:` paragraph of each docstring lists the contract columns the reader fills
and those it cannot; a test holds the reader to it. Nothing here is invented: a contract column
the source does not have is left out, not filled with a guess.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from functools import cache
from pathlib import Path

import pandas as pd

from contract.schema import (
    ITEM_ID,
    ITEM_TITLE,
    QUERY_CATEGORY,
    QUERY_TEXT,
    RELEVANCE,
    SCENARIO,
    SESSION_ID,
    TOP_CATEGORY,
)
from training.data.real.readers import as_text, finish, to_float32

# ESCI labels, Exact > Substitute > Complement > Irrelevant, as relevance 3..0.
ESCI_RELEVANCE = {"E": 3, "S": 2, "C": 1, "I": 0}
# The OpenSearch export writes E/S/C/I as ratings 100/10/1/0.
ESCI_RATING_RELEVANCE = {100.0: 3, 10.0: 2, 1.0: 1, 0.0: 0}
BESTBUY_SESSIONS = ("user_query", "query")
_CATEGORY_TREE = Path(__file__).parents[1] / "bestbuy_categories.json"


def read_crowdflower(path: str | Path) -> pd.DataFrame:
    """Kaggle CrowdFlower search relevance: 10,158 (query, product) pairs over 261 queries.

    describe: fills session_id, query_text, item_id, item_title, relevance;
    cannot query_category, top_category, scenario, platform, position, click, atc, purchase.

    session_id is the query (one result list per query); item_id is the pair's Kaggle `id`
    (the data has no product id); item_title is `product_title`, and `product_description`
    (free text, may be empty) stays beside it. relevance = median_relevance - 1, so the crowd's
    1..4 becomes the contract's 0..3; `median_relevance` and `relevance_variance` are kept.
    """
    raw = pd.read_csv(Path(path) / "crowdflower_train.csv.gz", keep_default_na=False)
    frame = pd.DataFrame(
        {
            SESSION_ID: raw["query"],
            QUERY_TEXT: raw["query"],
            ITEM_ID: raw["id"],
            ITEM_TITLE: raw["product_title"],
            RELEVANCE: raw["median_relevance"] - 1,
            "product_description": _blank_to_na(raw["product_description"]),
            "median_relevance": raw["median_relevance"].astype("int8"),
            "relevance_variance": to_float32(raw["relevance_variance"], "relevance_variance"),
            "cv_fold_thomasjungblut": raw["cv_fold_thomasjungblut"].astype("int8"),
        }
    )
    return finish(frame)


def read_bestbuy_clicks(path: str | Path, session: str = "user_query") -> pd.DataFrame:
    """Best Buy small (Kaggle 2012): 42,365 real search -> click rows, Xbox 360 games.

    describe: fills session_id, query_text, query_category, top_category, item_id, item_title,
    click; cannot scenario, platform, position, atc, purchase, relevance.

    One row per logged click, so every row has click=1: the log holds no impressions, and the
    items a user saw but did not click are unknown. `add_sampled_negatives` builds candidate
    lists with constructed (sampled, not observed) non-clicks; `read_bestbuy_candidates` does
    it for this set. session="user_query" makes one session per (user, lower-cased query),
    session="query" one per lower-cased query. query_text is the raw text (typos kept).
    query_category is the log's `category` (abcat0701002), top_category its level-1 ancestor
    in Best Buy's category tree. item_title is the product name from the products file, else
    from sku_name.tsv; 0.7% of rows have a sku in neither and no title. Kept: `user`,
    `click_time`, `query_time`, `split_in_source_repo`.
    """
    if session not in BESTBUY_SESSIONS:
        raise ValueError(f"session must be one of {BESTBUY_SESSIONS}, got {session!r}")
    path = Path(path)
    raw = pd.read_csv(path / "bestbuy_small_clicks.csv.gz", dtype={"sku": "string"})
    normalized = raw["query"].str.lower()
    session_id = raw["user"] + ":" + normalized if session == "user_query" else normalized
    tree = _bestbuy_top_categories()
    frame = pd.DataFrame(
        {
            SESSION_ID: session_id,
            QUERY_TEXT: raw["query"],
            QUERY_CATEGORY: raw["category"],
            TOP_CATEGORY: raw["category"].map(tree),
            ITEM_ID: raw["sku"],
            ITEM_TITLE: raw["sku"].map(bestbuy_titles(path)),
            "click": 1,
            "user": as_text(raw["user"]),
            "click_time": pd.to_datetime(raw["click_time"], format="ISO8601"),
            "query_time": pd.to_datetime(raw["query_time"], format="ISO8601"),
            "split_in_source_repo": as_text(raw["split_in_source_repo"]),
        }
    )
    return finish(frame)


def read_bestbuy_products(path: str | Path) -> pd.DataFrame:
    """The Best Buy small catalog: 436 distinct skus (the file repeats each sku twice).

    Columns item_id, item_title and the source's short_description, features ('||'-joined),
    release_date. Of a repeated sku's two rows the first non-missing value of each column wins.
    """
    raw = pd.read_csv(Path(path) / "bestbuy_small_products.csv.gz", dtype={"sku": "string"})
    products = raw.groupby("sku", sort=False).first().reset_index()
    products = products.rename(columns={"sku": ITEM_ID, "name": ITEM_TITLE})
    for column in products.columns:
        products[column] = as_text(products[column])
    return products


def bestbuy_titles(path: str | Path) -> pd.Series:
    """sku -> product name: the products file first, sku_name.tsv for skus it lacks."""
    path = Path(path)
    products = read_bestbuy_products(path).set_index(ITEM_ID)[ITEM_TITLE]
    names = pd.read_csv(
        path / "sku_name.tsv", sep="\t", header=None, names=["sku", "name"], dtype="string"
    ).set_index("sku")["name"]
    return products.combine_first(names[~names.index.duplicated()])


def read_bestbuy_candidates(
    path: str | Path,
    n_negatives: int = 4,
    seed: int = 0,
    session: str = "user_query",
    fill_from_catalog: bool = True,
) -> pd.DataFrame:
    """Best Buy clicks as candidate lists: the session's clicked items plus sampled non-clicks.

    describe: fills session_id, query_text, query_category, top_category, item_id, item_title,
    click; cannot scenario, platform, position, atc, purchase, relevance.

    The non-clicks are CONSTRUCTED, not observed (see `negatives.add_sampled_negatives`): their
    rows have `negative_source` "same_query" or "catalog"; observed clicks have it missing.
    """
    from training.data.real.negatives import add_sampled_negatives

    return add_sampled_negatives(
        read_bestbuy_clicks(path, session=session),
        n_negatives=n_negatives,
        seed=seed,
        fill_from_catalog=fill_from_catalog,
        request_columns=("user",),
    )


def read_wands_queries(path: str | Path) -> pd.DataFrame:
    """WANDS (Wayfair) queries: 480 real queries with their query class.

    describe: fills query_text, query_category; cannot session_id, top_category, scenario,
    platform, item_id, item_title, position, click, atc, purchase, relevance.

    query_category is `query_class`, a flat leaf class ('Accent Chairs'; a '/' inside a name
    such as 'Accent Chests / Cabinets' is part of the name, not a path), missing for 6 queries.
    The file has no class path, so no top_category; WANDS' products and labels are not in
    this folder, so no items. `query_id` is kept (the key of WANDS' label file).
    """
    raw = pd.read_csv(Path(path) / "query.csv", sep="\t", dtype="string", encoding="utf-8")
    frame = pd.DataFrame(
        {
            QUERY_TEXT: raw["query"],
            QUERY_CATEGORY: _blank_to_na(raw["query_class"].str.strip()),
            "query_id": raw["query_id"],
        }
    )
    return finish(frame)


def read_esci_judgments(path: str | Path) -> pd.DataFrame:
    """ESCI (Amazon) judgments from the OpenSearch export: 150 US queries, 6,678 (query, ASIN).

    describe: fills session_id, query_text, scenario, item_id, relevance;
    cannot query_category, top_category, platform, item_title, position, click, atc, purchase.

    session_id is the query text (the export has no query id); scenario is the locale in the
    file name ('us'); item_id is the ASIN; relevance maps the export's rating 100/10/1/0
    (E/S/C/I) to 3/2/1/0, and the raw `rating` is kept. No product text exists in this folder.
    """
    files = sorted(Path(path).glob("esci_*_judgments.json"))
    if not files:
        raise FileNotFoundError(f"no esci_<locale>_judgments.json in {path}")
    rows = []
    for file in files:
        locale = file.name.removeprefix("esci_").removesuffix("_judgments.json")
        for judged in json.loads(file.read_text(encoding="utf-8"))["judgmentRatings"]:
            for rating in judged["ratings"]:
                rows.append((judged["query"], locale, rating["docId"], float(rating["rating"])))
    raw = pd.DataFrame(rows, columns=["query", "locale", "asin", "rating"])
    relevance = raw["rating"].map(ESCI_RATING_RELEVANCE)
    if relevance.isna().any():
        unknown = sorted(raw.loc[relevance.isna(), "rating"].unique())
        raise ValueError(f"ratings {unknown} are not ESCI grades {list(ESCI_RATING_RELEVANCE)}")
    frame = pd.DataFrame(
        {
            SESSION_ID: raw["query"],
            QUERY_TEXT: raw["query"],
            SCENARIO: raw["locale"],
            ITEM_ID: raw["asin"],
            RELEVANCE: relevance,
            "rating": raw["rating"].astype("float32"),
        }
    )
    return finish(frame)


def read_esci_product_fixture(path: str | Path) -> pd.DataFrame:
    """ESCI official-format fixture (Vespa sample app): 1 query, 16 judged products.

    describe: fills session_id, query_text, scenario, item_id, relevance;
    cannot query_category, top_category, platform, item_title, position, click, atc, purchase.

    session_id is `query_id`, scenario `product_locale`, relevance E/S/C/I -> 3/2/1/0 (the raw
    `esci_label` is kept, with `example_id` and the source's split columns). The titles are in
    sample-products.jsonl.zstd, which `read_esci_fixture_products` reads only when the
    `zstandard` package is installed (it is not a project dependency), so they are not joined.
    """
    raw = pd.read_parquet(Path(path) / "test-sample.parquet")
    relevance = raw["esci_label"].map(ESCI_RELEVANCE)
    if relevance.isna().any():
        raise ValueError(f"esci_label outside {list(ESCI_RELEVANCE)}")
    frame = pd.DataFrame(
        {
            SESSION_ID: raw["query_id"],
            QUERY_TEXT: raw["query"],
            SCENARIO: raw["product_locale"],
            ITEM_ID: raw["product_id"],
            RELEVANCE: relevance,
            "esci_label": as_text(raw["esci_label"]),
            "example_id": raw["example_id"],
            "small_version": raw["small_version"].astype("int8"),
            "large_version": raw["large_version"].astype("int8"),
            "split": as_text(raw["split"]),
        }
    )
    return finish(frame)


def read_esci_fixture_products(path: str | Path) -> pd.DataFrame:
    """Titles and text of the fixture's 16 products (item_id, item_title, description, ...).

    Needs the `zstandard` package; raises ImportError saying so when it is absent.
    """
    try:
        import zstandard
    except ImportError:
        raise ImportError(
            "sample-products.jsonl.zstd needs the zstandard package (pip install zstandard)"
        ) from None
    with open(Path(path) / "sample-products.jsonl.zstd", "rb") as compressed:
        text = zstandard.ZstdDecompressor().stream_reader(compressed).read().decode("utf-8")
    documents = [json.loads(line)["fields"] for line in text.splitlines() if line.strip()]
    products = pd.DataFrame(documents).rename(columns={"id": ITEM_ID, "title": ITEM_TITLE})
    return products.astype({ITEM_ID: "string", ITEM_TITLE: "string"})


_DITTO_ATTRIBUTE = re.compile(r"COL (\S+) VAL ?")
MATCHING_SETS = ("Walmart-Amazon", "Amazon-Google", "Abt-Buy")
MATCHING_SPLITS = ("train", "valid", "test")


def parse_ditto_record(text: str) -> dict[str, str | None]:
    """'COL title VAL sony tv COL price VAL 9.5' -> {'title': 'sony tv', 'price': '9.5'}.

    An empty value is None. Abt-Buy's 'name' attribute is returned as 'title'.
    """
    parts = _DITTO_ATTRIBUTE.split(text.strip())
    if parts[0].strip():
        raise ValueError(f"a Ditto record starts with 'COL <attr> VAL', got {text[:60]!r}")
    record = {
        name: (value.strip() or None) for name, value in zip(parts[1::2], parts[2::2], strict=True)
    }
    if "name" in record and "title" not in record:
        record["title"] = record.pop("name")
    return record


def read_product_matching(path: str | Path) -> pd.DataFrame:
    """ER-Magellan product pairs in Ditto's format (Walmart-Amazon, Amazon-Google, Abt-Buy).

    describe: fills none; cannot session_id, query_text, query_category, top_category, scenario,
    platform, item_id, item_title, position, click, atc, purchase, relevance.

    Rows are product PAIRS, not impressions: `dataset`, `split`, `match` (1 = same product),
    `left_title`/`right_title` and the other attributes each set has (`left_price`, ...;
    missing where a set lacks the attribute or the value is empty). Text is lower-cased and
    tokenised by the benchmark. `product_titles` turns the pairs into distinct item_title rows
    for text encoding and load payloads.
    """
    frames = []
    with tarfile.open(Path(path) / "magellan_ditto_format.tar.xz", mode="r:xz") as archive:
        for dataset in MATCHING_SETS:
            for split in MATCHING_SPLITS:
                member = archive.extractfile(f"{dataset}/{split}.txt")
                if member is None:
                    raise FileNotFoundError(f"{dataset}/{split}.txt in the archive")
                lines = io.TextIOWrapper(member, encoding="utf-8").read().splitlines()
                frames.append(_ditto_pairs(lines, dataset, split))
    pairs = pd.concat(frames, ignore_index=True)
    for column in pairs.columns:
        if column.endswith("_price"):
            pairs[column] = to_float32(pairs[column], column)
        elif column != "match":
            pairs[column] = as_text(pairs[column])
    first = ["dataset", "split", "match", "left_title", "right_title"]
    return pairs[first + [c for c in pairs.columns if c not in first]]


def _ditto_pairs(lines: list[str], dataset: str, split: str) -> pd.DataFrame:
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) != 3 or fields[2].strip() not in ("0", "1"):
            raise ValueError(f"{dataset}/{split}.txt line {number}: not 'left<TAB>right<TAB>0|1'")
        left, right = parse_ditto_record(fields[0]), parse_ditto_record(fields[1])
        row = {"dataset": dataset, "split": split, "match": int(fields[2])}
        row.update({f"left_{name}": value for name, value in left.items()})
        row.update({f"right_{name}": value for name, value in right.items()})
        rows.append(row)
    pairs = pd.DataFrame(rows)
    pairs["match"] = pairs["match"].astype("int8")
    return pairs


def product_titles(pairs: pd.DataFrame) -> pd.DataFrame:
    """Distinct products of `read_product_matching` pairs: dataset, item_title, item_category."""
    sides = []
    for side in ("left", "right"):
        category = pairs.get(f"{side}_category", pd.Series(pd.NA, index=pairs.index))
        sides.append(
            pd.DataFrame(
                {
                    "dataset": pairs["dataset"],
                    ITEM_TITLE: pairs[f"{side}_title"],
                    "item_category": as_text(category),
                }
            )
        )
    products = pd.concat(sides, ignore_index=True).dropna(subset=[ITEM_TITLE])
    return products.drop_duplicates(["dataset", ITEM_TITLE]).reset_index(drop=True)


@cache
def _bestbuy_top_categories() -> dict[str, str]:
    """Best Buy category id -> id of its level-1 ancestor (the repo's copy of the tree)."""
    with open(_CATEGORY_TREE, encoding="utf-8") as tree:
        nodes = json.load(tree)
    return {node["id"]: node["path"][0]["id"] for node in nodes if node.get("path")}


def _blank_to_na(values: pd.Series) -> pd.Series:
    text = as_text(values)
    return text.mask(text.str.strip() == "")
