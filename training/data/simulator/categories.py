"""The two-level category hierarchy the generator draws from: the vendored Best Buy tree.

`bestbuy_categories.json` (CC0) is a flat list of nodes `{id, name, path: [{id, name}, ...],
subCategories}`. Top-categories are the level-1 nodes (path length 1); sub-categories are
all their descendants (any depth >= 2), each mapped to its level-1 ancestor. Navigation and
service nodes (gift ideas, customer service, promotions, articles) are not products and are
dropped, so every sub-category a query can name is a shelf of things one can buy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TREE_PATH = Path(__file__).parents[1] / "bestbuy_categories.json"

# Level-1 nodes that are storefront navigation, services or duplicates of another top-category
# (Magnolia is a store-in-store of TV & Home Theater; Name Brands re-lists products by brand).
NON_PRODUCT_TOP_CATEGORIES = (
    "Gift Ideas",
    "Best Buy Gift Cards",
    "Name Brands",
    "Geek Squad",
    "Best Buy Outlet",
    "More Categories",
    "Best Buy For Business",
    "Customer Service",
    "AppleCare",
    "Magnolia Home Theater",
)

# A sub-category whose name contains one of these words is a page, not a shelf
# ("How to connect your iPad", "Deal of the Day", "Geek Squad Protection Plans for ...").
_NON_PRODUCT_WORDS = frozenset(
    re.findall(
        r"\w+",
        "how what why your deal deals sale offer offers event guide guides test plan plans "
        "promotion promotions protection featured coming soon outlet clearance rebate "
        "financing review reviews tips article articles faq faqs program service services shop",
    )
)
_MAX_NAME_WORDS = 5


@dataclass(frozen=True)
class CategoryTree:
    """The selected hierarchy; sub-categories are grouped by top-category, in path order.

    Arrays of length n_sub: `sub_ids`, `sub_names`, `sub_paths` (" > "-joined), `sub_top`
    (index into the top arrays). Arrays of length n_top: `top_ids`, `top_names`.
    """

    top_ids: tuple[str, ...]
    top_names: tuple[str, ...]
    sub_ids: tuple[str, ...]
    sub_names: tuple[str, ...]
    sub_paths: tuple[str, ...]
    sub_top: np.ndarray  # [n_sub] int64

    @property
    def n_top(self) -> int:
        return len(self.top_ids)

    @property
    def n_sub(self) -> int:
        return len(self.sub_ids)


def _is_product_name(name: str | None) -> bool:
    """True when a node name reads like a product shelf (short, no page words)."""
    if not name:
        return False
    words = re.findall(r"[a-z0-9]+", name.lower())
    return 0 < len(words) <= _MAX_NAME_WORDS and not _NON_PRODUCT_WORDS.intersection(words)


def _spread(indices: list[int], quota: int) -> list[int]:
    """`quota` elements of `indices` evenly spaced over it (deterministic, keeps the spread)."""
    if quota >= len(indices):
        return indices
    picks = np.floor((np.arange(quota) + 0.5) * len(indices) / quota).astype(int)
    return [indices[i] for i in picks]


def _quotas(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split `total` over groups in proportion to `sizes` (largest remainder, >= 1 each)."""
    if total >= sizes.sum():
        return sizes.copy()
    raw = sizes / sizes.sum() * total
    quota = np.maximum(np.floor(raw).astype(int), 1)
    order = np.argsort(-(raw - np.floor(raw)), kind="stable")
    for i in order[: max(total - quota.sum(), 0)]:
        quota[i] += 1
    return np.minimum(quota, sizes)


def load_category_tree(
    max_sub_categories: int,
    max_top_categories: int | None = None,
    excluded_top_categories: tuple[str, ...] = NON_PRODUCT_TOP_CATEGORIES,
    path: Path = TREE_PATH,
) -> CategoryTree:
    """Select up to `max_top_categories` tops and `max_sub_categories` subs from the tree.

    Tops are kept in descending order of their product sub-category count (ties by id).
    Each kept top gets a share of the sub-category budget proportional to its size, and its
    subs are taken evenly spaced in path order, so the selection does not depend on the seed
    and keeps both shallow and deep nodes. Item and category ids are therefore stable across
    seeds.
    """
    nodes = json.loads(Path(path).read_text())
    tops = {n["id"]: n["name"] for n in nodes if len(n["path"]) == 1}
    subs_by_top: dict[str, list[dict]] = {}
    for node in nodes:
        top_id = node["path"][0]["id"]
        is_sub = len(node["path"]) >= 2 and _is_product_name(node["name"])
        if is_sub and tops.get(top_id) not in excluded_top_categories:
            subs_by_top.setdefault(top_id, []).append(node)
    kept = sorted(subs_by_top, key=lambda t: (-len(subs_by_top[t]), t))
    kept = kept[:max_top_categories] if max_top_categories else kept
    kept.sort()
    sizes = np.array([len(subs_by_top[t]) for t in kept])
    quotas = _quotas(sizes, max_sub_categories)
    sub_nodes, sub_top = [], []
    for top_index, (top_id, quota) in enumerate(zip(kept, quotas, strict=True)):
        members = sorted(subs_by_top[top_id], key=lambda n: [p["name"] for p in n["path"]])
        for node in _spread(members, int(quota)):
            sub_nodes.append(node)
            sub_top.append(top_index)
    return CategoryTree(
        top_ids=tuple(kept),
        top_names=tuple(tops[t] for t in kept),
        sub_ids=tuple(n["id"] for n in sub_nodes),
        sub_names=tuple(n["name"].strip() for n in sub_nodes),
        sub_paths=tuple(" > ".join(p["name"].strip() for p in n["path"]) for n in sub_nodes),
        sub_top=np.asarray(sub_top, dtype=np.int64),
    )
