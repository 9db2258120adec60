"""The registry of real-data readers, where the data lives, and what each reader fills.

The real sets live outside the repository (`../shared/data` beside a checkout, or wherever
MOERANK_SHARED_DATA points); code takes their path and never needs them to import or install.

    >>> REAL_SETS["crowdflower"].folder
    'crowdflower'
    >>> sorted(describe(read_wands_queries)["fills"])
    ['query_category', 'query_text']
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.data.real.log_sets import (
    read_ali_ccp,
    read_aliexpress,
    read_instacart,
    read_lightgbm_lambdarank,
)
from training.data.real.readers import CONTRACT_COLUMNS
from training.data.real.text_sets import (
    read_bestbuy_candidates,
    read_bestbuy_clicks,
    read_crowdflower,
    read_esci_judgments,
    read_esci_product_fixture,
    read_product_matching,
    read_wands_queries,
)


@dataclass(frozen=True)
class RealSet:
    """A reader and the shared/data folder it reads (two readers may share a folder)."""

    folder: str
    read: Callable[[Path], pd.DataFrame]


REAL_SETS: dict[str, RealSet] = {
    "crowdflower": RealSet("crowdflower", read_crowdflower),
    "bestbuy-small": RealSet("bestbuy-small", read_bestbuy_clicks),
    "bestbuy-small-candidates": RealSet("bestbuy-small", read_bestbuy_candidates),
    "wands-queries": RealSet("wands-queries", read_wands_queries),
    "esci-judgments": RealSet("esci-judgments", read_esci_judgments),
    "esci-product-fixture": RealSet("esci-product-fixture", read_esci_product_fixture),
    "lightgbm-lambdarank": RealSet("lightgbm-lambdarank", read_lightgbm_lambdarank),
    "aliexpress": RealSet("alibaba-samples", read_aliexpress),
    "ali-ccp": RealSet("alibaba-samples", read_ali_ccp),
    "instacart-subset": RealSet("instacart-subset", read_instacart),
    "product-matching": RealSet("product-matching", read_product_matching),
}


def read_real_set(name: str, data_dir: str | Path) -> pd.DataFrame:
    """Read the registered set `name` from `data_dir` (the folder holding the sets' folders)."""
    if name not in REAL_SETS:
        raise ValueError(f"unknown real set {name!r}; known: {sorted(REAL_SETS)}")
    entry = REAL_SETS[name]
    return entry.read(Path(data_dir) / entry.folder)


_DESCRIBE = re.compile(r"describe:\s*fills\s+(.*?);\s*cannot\s+(.*?)\.(?:\s|$)", re.DOTALL)


def describe(reader: Callable[..., object]) -> dict[str, tuple[str, ...]]:
    """The contract columns a reader's docstring says it fills and cannot fill."""
    match = _DESCRIBE.search(reader.__doc__ or "")
    if match is None:
        raise ValueError(f"{reader.__name__} has no 'describe: fills ...; cannot ....' line")
    fills, cannot = (
        tuple(name for name in re.split(r"[\s,]+", group) if name and name != "none")
        for group in match.groups()
    )
    unknown = sorted(set(fills + cannot) - set(CONTRACT_COLUMNS))
    if unknown:
        raise ValueError(f"{reader.__name__} describes non-contract columns {unknown}")
    return {"fills": fills, "cannot": cannot}
