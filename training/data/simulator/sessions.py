"""Search sessions: a query, its result list, and the per-impression features.

One chunk of sessions is simulated at a time with numpy over all its impressions; the only
per-session Python work is joining the query's words into a string.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.user_model import Rows
from training.data.simulator import vocabulary as vocab
from training.data.simulator.catalog import Catalog

SAME, SIBLING, OTHER = 0, 1, 2  # where a listed item comes from, relative to the query
_QUERY_SLOTS = 10  # price word, brand, size, colour, material, up to 4 modifiers, head noun
_N_PRIMES = 64


@dataclass(frozen=True)
class World:
    """What sessions are drawn from: catalog, sub->top map [n_sub], traffic [n_sub] (sums to 1),
    and scenario_given_sub [n_sub, n_scn] (rows sum to 1; None: scenarios independent)."""

    catalog: Catalog
    sub_top: np.ndarray
    traffic: np.ndarray
    primes: np.ndarray
    scenario_given_sub: np.ndarray | None = None


@dataclass(frozen=True)
class Chunk:
    """A chunk of S sessions with R impressions in (session, position) order.

    Session-level: `query_text` (list of S str), `sizes` [S]. Row-level: `rows` (user-model
    inputs), `session` [R] (0..S-1), `item` [R] catalog index, `lexical_overlap` [R].
    """

    query_text: list[str]
    sizes: np.ndarray
    rows: Rows
    session: np.ndarray
    item: np.ndarray
    lexical_overlap: np.ndarray


def primes_above(n: int, count: int = _N_PRIMES) -> np.ndarray:
    """The `count` smallest primes > n (multipliers that permute any range of size <= n)."""
    limit = 2 * n + 64 * count + 100
    sieve = np.ones(limit, dtype=bool)
    sieve[:2] = False
    for p in range(2, int(limit**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = False
    return np.flatnonzero(sieve)[np.flatnonzero(sieve) > n][:count]


def zipf_traffic(n_sub: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """[n_sub] query share per sub-category: 1 / rank^exponent over a seeded ranking."""
    rank = rng.permutation(n_sub) + 1
    weights = 1.0 / rank.astype(float) ** exponent
    return weights / weights.sum()


def _list_parts(config, world: World, sub, sizes, rng):
    """Per-session counts [S, 3] of same-category, sibling and off-category items."""
    cat = world.catalog
    top_size = cat.top_size[world.sub_top[sub]]
    has_sibling = top_size > cat.items_per_sub
    has_other = top_size < cat.n_items
    n_other = np.where(has_other, rng.binomial(sizes, config.off_category_share), 0)
    sibling_p = config.sibling_share / (1.0 - config.off_category_share)
    n_sibling = np.where(has_sibling, rng.binomial(sizes - n_other, sibling_p), 0)
    return np.stack([sizes - n_other - n_sibling, n_sibling, n_other], axis=1)


def _list_items(world: World, sub, parts, session, rank, rng):
    """Catalog index and kind (SAME/SIBLING/OTHER) of every listed item, both [R].

    Within a session each kind is drawn without replacement as (a * k + c) mod M over its
    pool of size M, with a a prime larger than any pool: a permutation, no Python loop.
    """
    cat, n_sessions = world.catalog, len(sub)
    ends = np.cumsum(parts, axis=1)[session]
    kind = (rank >= ends[:, SAME]).astype(np.int64) + (rank >= ends[:, SIBLING])
    k = rank - np.where(kind == SAME, 0, ends[np.arange(len(rank)), np.maximum(kind - 1, 0)])
    top = world.sub_top[sub][session]
    top_start, top_size = cat.top_start[top], cat.top_size[top]
    own_start = sub[session] * cat.items_per_sub
    pool = np.choose(
        kind, [cat.items_per_sub, top_size - cat.items_per_sub, cat.n_items - top_size]
    )
    a = rng.choice(world.primes, size=(n_sessions, 3))[session, kind]
    c = rng.integers(0, cat.n_items, size=(n_sessions, 3))[session, kind]
    idx = (a * k + c) % np.maximum(pool, 1)
    sibling = top_start + idx + (idx >= own_start - top_start) * cat.items_per_sub
    other = idx + (idx >= top_start) * top_size
    return np.choose(kind, [own_start + idx, sibling, other]), kind


def _requests(config, cat: Catalog, sub, rng):
    """Attributes the query asks for, [S, 4] (brand, colour, size, material; -1 = none).

    Values are copied from a random item of the query's category, so they exist there.
    """
    target = sub * cat.items_per_sub + rng.integers(0, cat.items_per_sub, len(sub))
    values = np.stack(
        [cat.brand[target], cat.colour[target], cat.size[target], cat.material[target]], 1
    )
    asked = rng.random(values.shape) < np.asarray(config.query_attribute_probs)
    return np.where(asked, values, -1)


def _relevance(cat: Catalog, item, kind, requests_per_row):
    """[R] int8 graded relevance: 3 same category and every requested attribute matches,
    2 same category otherwise, 1 sibling category, 0 other top-category."""
    attrs = np.stack([cat.brand[item], cat.colour[item], cat.size[item], cat.material[item]], 1)
    matched = ((requests_per_row < 0) | (attrs == requests_per_row)).all(axis=1)
    return np.choose(kind, [2 + matched, 1, 0]).astype(np.int8)


def _query_texts(config, cat: Catalog, sub, requests, price_word_probs, rng):
    """Each session's query text (S str) and its distinct token ids ([S, Q] int32, -1 pad).

    Words: an optional price adjective (probabilities per session in `price_word_probs`
    [S, 2]: cheap-group, premium-group), the requested brand, size, colour and material, the
    category phrase's modifiers (each kept with modifier_keep_prob) and its head noun. Every
    word but the brand is swapped for a synonym with synonym_prob.
    """
    n = len(sub)
    keep = rng.random((n, _QUERY_SLOTS)) < config.modifier_keep_prob
    price_u = rng.random(n)
    swap = rng.random((n, _QUERY_SLOTS)) < config.synonym_prob
    pick = rng.integers(0, 1 << 30, (n, _QUERY_SLOTS))
    low, high = vocab.SYNONYMS[vocab.PRICE_LOW_WORD], vocab.SYNONYMS[vocab.PRICE_HIGH_WORD]
    brands = cat.brand_words
    texts, tokens = [], np.full((n, _QUERY_SLOTS), -1, dtype=np.int32)
    for s in range(n):
        words = []
        if price_u[s] < price_word_probs[s, 0]:
            words.append(low[pick[s, 0] % len(low)])
        elif price_u[s] < price_word_probs[s, 0] + price_word_probs[s, 1]:
            words.append(high[pick[s, 0] % len(high)])
        brand, colour, size, material = requests[s]
        n_fixed = len(words) + (brand >= 0)
        words += [brands[brand]] if brand >= 0 else []
        words += [vocab.SIZES[size]] if size >= 0 else []
        words += [vocab.COLOURS[colour]] if colour >= 0 else []
        words += [vocab.MATERIALS[material]] if material >= 0 else []
        *modifiers, head = cat.phrases[sub[s]]
        words += [w for j, w in enumerate(modifiers) if keep[s, j]]
        words.append(head)
        for j in range(n_fixed, len(words)):
            alternatives = vocab.synonyms_of(words[j])
            if swap[s, j] and alternatives:
                words[j] = alternatives[pick[s, j] % len(alternatives)]
        words = list(dict.fromkeys(words))
        texts.append(" ".join(words))
        tokens[s, : len(words)] = [cat.vocabulary[w] for w in words]
    return texts, tokens


def lexical_overlap(title_tokens: np.ndarray, query_tokens: np.ndarray) -> np.ndarray:
    """[R] token Jaccard |q & t| / |q | t| of distinct-token id rows ([R, T], [R, Q], -1 pad)."""
    shared = np.zeros(len(title_tokens), dtype=np.int64)
    for q in range(query_tokens.shape[1]):
        column = query_tokens[:, q : q + 1]
        shared += (column[:, 0] >= 0) & (title_tokens == column).any(axis=1)
    union = (title_tokens >= 0).sum(1) + (query_tokens >= 0).sum(1) - shared
    return (shared / np.maximum(union, 1)).astype(np.float32)


def _hist_ctr(cat: Catalog, item, rng) -> np.ndarray:
    """[R] the item's historical CTR as this session's feature pipeline saw it (noisy)."""
    logit = -3.0 + 0.6 * cat.appeal[item] + 0.5 * rng.standard_normal(len(item))
    return 1.0 / (1.0 + np.exp(-logit))


def simulate_chunk(config, world: World, n_sessions: int, max_rows: int, rng) -> Chunk:
    """Simulate up to `n_sessions` sessions, stopping after the one that reaches `max_rows`."""
    sizes = rng.integers(config.min_list_size, config.max_list_size + 1, n_sessions)
    n_sessions = min(n_sessions, int(np.searchsorted(np.cumsum(sizes), max_rows)) + 1)
    sizes = sizes[:n_sessions]
    sub = rng.choice(len(world.traffic), size=n_sessions, p=world.traffic)
    if world.scenario_given_sub is None:
        scenario = rng.choice(len(config.scenarios), size=n_sessions, p=_shares(config.scenarios))
    else:  # one uniform per session, as rng.choice draws: the later draws keep their stream
        cdf = np.cumsum(world.scenario_given_sub[sub], axis=1)
        scenario = np.minimum((cdf < rng.random((n_sessions, 1))).sum(axis=1), cdf.shape[1] - 1)
    platform = rng.choice(len(config.platforms), size=n_sessions, p=_shares(config.platforms))
    session = np.repeat(np.arange(n_sessions), sizes)
    rank = np.arange(len(session)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    parts = _list_parts(config, world, sub, sizes, rng)
    item, kind = _list_items(world, sub, parts, session, rank, rng)
    requests = _requests(config, world.catalog, sub, rng)
    relevance = _relevance(world.catalog, item, kind, requests[session])
    # The logging ranker sorted by text relevance plus noise; it never saw the features,
    # so position is independent of them given relevance.
    logged = relevance + config.logging_noise * rng.gumbel(size=len(item))
    order = np.lexsort((-logged, session))
    item, relevance = item[order], relevance[order]
    price_probs = np.array([(p.cheap_query_prob, p.premium_query_prob) for p in config.platforms])
    texts, query_tokens = _query_texts(
        config, world.catalog, sub, requests, price_probs[platform], rng
    )
    features = np.column_stack([world.catalog.static[item], _hist_ctr(world.catalog, item, rng)])
    rows = Rows(
        features=features.astype(np.float32),
        relevance=relevance,
        position=rank.astype(np.int32),
        sub=sub[session],
        scenario=scenario[session],
        platform=platform[session],
    )
    overlap = lexical_overlap(world.catalog.title_tokens[item], query_tokens[session])
    return Chunk(texts, sizes, rows, session, item, overlap)


def scenario_given_sub(
    sub_top: np.ndarray, shares: np.ndarray, tilt: float, rng: np.random.Generator
) -> np.ndarray | None:
    """[n_sub, n_scn] P(scenario | sub-category) ∝ share_s * exp(tilt * a[top, s]), a ~ N(0, 1)
    per top-category and scenario: countries search some top-categories more than others.
    None when tilt is 0 (scenario drawn independently of the category)."""
    if tilt == 0:
        return None
    affinity = rng.standard_normal((int(sub_top.max()) + 1, len(shares)))
    weight = shares * np.exp(tilt * affinity[sub_top])
    return weight / weight.sum(axis=1, keepdims=True)


def _shares(specs) -> np.ndarray:
    """Normalised `share` of scenario or platform specs."""
    share = np.array([spec.share for spec in specs], dtype=float)
    return share / share.sum()
