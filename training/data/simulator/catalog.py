"""The synthetic product catalog: items with stable ids, titles, brands, attributes, features.

Every sub-category holds the same number of items, stored contiguously and grouped by
top-category, so "the items of sub-category k" and "the items of top-category t" are index
ranges; the session simulator draws result lists from these ranges without Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from contract import schema
from training.data.simulator import vocabulary as vocab
from training.data.simulator.categories import CategoryTree

# The static numeric features of an item, in the column order of `Catalog.static`: the
# contract's numeric features but the two a session sets (hist_ctr, lexical_overlap).
STATIC_FEATURES = schema.NUMERIC_FEATURES[:-2]
_TITLE_SIZE_PROB, _TITLE_COLOUR_PROB, _TITLE_MATERIAL_PROB = 0.5, 0.8, 0.4
_PRICE_TIER_Z = 1.0  # within-category price z beyond which titles say "Budget" / "Premium"
_DISCOUNTED_SHARE = 0.35


@dataclass(frozen=True)
class Catalog:
    """All items; arrays are indexed by item index 0..n_items-1 unless noted.

    `static` is [n_items, len(STATIC_FEATURES)] float32; `title_tokens` is [n_items, T] int32
    ids into `vocabulary`, padded with -1 (each title's distinct tokens). `appeal` is a latent
    that drives the per-impression `hist_ctr`. Items of sub-category k are
    `k * items_per_sub + arange(items_per_sub)`; `top_start`/`top_size` ([n_top]) give each
    top-category's item range. `phrases[k]` are the category words of sub-category k.
    """

    item_ids: pa.Array
    titles: pa.Array
    item_sub: np.ndarray
    brand: np.ndarray
    brand_names: tuple[str, ...]
    colour: np.ndarray
    size: np.ndarray
    material: np.ndarray
    static: np.ndarray
    appeal: np.ndarray
    title_tokens: np.ndarray
    vocabulary: dict[str, int]
    items_per_sub: int
    top_start: np.ndarray
    top_size: np.ndarray
    phrases: tuple[tuple[str, ...], ...]

    @property
    def n_items(self) -> int:
        return len(self.item_sub)

    @property
    def brand_words(self) -> tuple[str, ...]:
        """Brand names as query words (lower case)."""
        return tuple(name.lower() for name in self.brand_names)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _brands(tree: CategoryTree, item_sub: np.ndarray, brands_per_top: int, rng):
    """Brand index per item ([n_items]) and popularity per brand ([n_brands], in (0, 1)).

    Brands span about two top-categories each (as real ones do); within a top-category a few
    brands carry most items (weights 1/rank^0.8).
    """
    n_brands = max(brands_per_top, brands_per_top * tree.n_top // 2)
    popularity = _sigmoid(rng.normal(0.0, 1.2, n_brands))
    top_brands = np.stack(
        [rng.choice(n_brands, brands_per_top, replace=False) for _ in range(tree.n_top)]
    )
    weights = 1.0 / np.arange(1, brands_per_top + 1) ** 0.8
    slot = rng.choice(brands_per_top, size=len(item_sub), p=weights / weights.sum())
    return top_brands[tree.sub_top[item_sub], slot], popularity


def _static_features(item_sub, brand_pop, n_sub, rng):
    """[n_items, 7] float32 static features and the within-category price z ([n_items]).

    Units: log_price = ln(USD); sales_volume = ln(1 + units per month); good_comment_ratio
    in (0, 1); brand_popularity in (0, 1); rating in (1, 5); log_review_count =
    ln(1 + reviews); discount = fraction off in [0, 0.5]. Correlations are moderate
    (sales ~ reviews, good comments ~ rating, brand ~ price) so feature effects stay separable.
    """
    n = len(item_sub)
    z = rng.standard_normal((n, 6))
    price_level = rng.normal(4.0, 1.0, n_sub)  # e.g. cables ~ $20, TVs ~ $500
    log_price = price_level[item_sub] + 0.5 * z[:, 0] + 0.6 * (brand_pop - 0.5)
    sales = np.maximum(3.0 + 1.2 * z[:, 1] + 0.8 * (brand_pop - 0.5), 0.0)
    reviews = np.maximum(1.0 + 0.7 * sales + 0.8 * z[:, 2], 0.0)
    good_comments = _sigmoid(1.8 + 0.9 * z[:, 3])
    rating = 1.0 + 4.0 * _sigmoid(1.2 + 0.5 * z[:, 3] + 0.7 * z[:, 4])
    discounted = rng.random(n) < _DISCOUNTED_SHARE
    discount = np.where(discounted, np.round(rng.uniform(0.05, 0.5, n), 2), 0.0)
    static = np.stack(
        [log_price, sales, good_comments, brand_pop, rating, reviews, discount], axis=1
    )
    return static.astype(np.float32), z[:, 0], z[:, 5].astype(np.float32)


def _title_tokens(brand: str, tier_word: str, words: list[str], code: str) -> list[str]:
    """The distinct lower-case tokens of a title, in order: brand, tier, words, model code."""
    return list(dict.fromkeys([brand.lower(), *([tier_word] if tier_word else []), *words, code]))


def _titles(tree, item_sub, brand, colour, size, material, price_z, brand_names, rng):
    """Titles (list of str), their tokens (list of token lists) and the category phrases.

    A title is brand, optional price tier / size / colour / material, the sub-category
    phrase and a model code, title-cased ("Vezun Budget Black Laptop VE350").
    """
    n = len(item_sub)
    phrases = tuple(vocab.category_phrase(name) for name in tree.sub_names)
    show = rng.random((n, 3)) < [_TITLE_SIZE_PROB, _TITLE_COLOUR_PROB, _TITLE_MATERIAL_PROB]
    codes = rng.integers(100, 1000, n)
    tiers = np.where(price_z < -_PRICE_TIER_Z, 1, np.where(price_z > _PRICE_TIER_Z, 2, 0))
    tier_words = ("", vocab.PRICE_LOW_WORD, vocab.PRICE_HIGH_WORD)
    titles, tokens = [], []
    for i in range(n):
        words = [
            *([vocab.SIZES[size[i]]] if show[i, 0] else []),
            *([vocab.COLOURS[colour[i]]] if show[i, 1] else []),
            *([vocab.MATERIALS[material[i]]] if show[i, 2] else []),
            *phrases[item_sub[i]],
        ]
        name = brand_names[brand[i]]
        code = f"{name[:2].lower()}{codes[i]}"
        title_tokens = _title_tokens(name, tier_words[tiers[i]], words, code)
        tokens.append(title_tokens)
        titles.append(" ".join(t.upper() if t == code else t.capitalize() for t in title_tokens))
    return titles, tokens, phrases


def _vocabulary(title_tokens, phrases, brand_names) -> dict[str, int]:
    """Token -> id for every word a title or a query can contain."""
    words = [w for group in vocab.SYNONYM_GROUPS for w in group]
    words += [*vocab.COLOURS, *vocab.MATERIALS, *vocab.SIZES, *(b.lower() for b in brand_names)]
    words += [w for phrase in phrases for w in phrase]
    words += [t for tokens in title_tokens for t in tokens]
    return {w: i for i, w in enumerate(dict.fromkeys(words))}


def _token_matrix(title_tokens, vocabulary) -> np.ndarray:
    """[n_items, T] int32 token ids of each title (distinct already), padded with -1."""
    matrix = np.full((len(title_tokens), max(map(len, title_tokens))), -1, dtype=np.int32)
    for row, tokens in enumerate(title_tokens):
        matrix[row, : len(tokens)] = [vocabulary[t] for t in tokens]
    return matrix


def build_catalog(
    tree: CategoryTree, items_per_sub: int, brands_per_top: int, rng: np.random.Generator
) -> Catalog:
    """Draw the catalog of `tree.n_sub * items_per_sub` items."""
    item_sub = np.repeat(np.arange(tree.n_sub), items_per_sub)
    brand, popularity = _brands(tree, item_sub, brands_per_top, rng)
    n = len(item_sub)
    colour = rng.integers(0, len(vocab.COLOURS), n).astype(np.int8)
    size = rng.integers(0, len(vocab.SIZES), n).astype(np.int8)
    material = rng.integers(0, len(vocab.MATERIALS), n).astype(np.int8)
    static, price_z, appeal = _static_features(item_sub, popularity[brand], tree.n_sub, rng)
    names = vocab.brand_names(len(popularity), rng)
    titles, tokens, phrases = _titles(
        tree, item_sub, brand, colour, size, material, price_z, names, rng
    )
    vocabulary = _vocabulary(tokens, phrases, names)
    top_size = np.bincount(tree.sub_top, minlength=tree.n_top) * items_per_sub
    ordinal = np.tile(np.arange(items_per_sub), tree.n_sub)
    item_ids = [f"{tree.sub_ids[k]}-{j:04d}" for k, j in zip(item_sub, ordinal, strict=True)]
    return Catalog(
        item_ids=pa.array(item_ids, pa.string()),
        titles=pa.array(titles, pa.string()),
        item_sub=item_sub,
        brand=brand,
        brand_names=names,
        colour=colour,
        size=size,
        material=material,
        static=static,
        appeal=appeal,
        title_tokens=_token_matrix(tokens, vocabulary),
        vocabulary=vocabulary,
        items_per_sub=items_per_sub,
        top_start=np.concatenate([[0], np.cumsum(top_size)[:-1]]),
        top_size=top_size,
        phrases=phrases,
    )
