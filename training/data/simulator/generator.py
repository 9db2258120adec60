"""The synthetic search log: our data of record for training and testing the rankers.

`generate(config, out_dir)` writes three files:

- `impressions.parquet`: the dataset contract of `schema.py`, one row per impression, rows
  in (session, position) order, one row group per chunk of `sessions_per_chunk` sessions;
- `catalog.parquet`: every item once (item_id, item_title, item_category, brand and the
  static numeric features), the input for precomputing item embeddings;
- `oracle.parquet`: row-aligned with the impressions, each row's true P(click),
  P(atc | click), P(purchase | atc) and position-blind click probabilities (`oracle.py`);
  never a model input;
- `ground_truth.json`: the true parameters of the simulator, the realised statistics and
  (key "oracle") the oracle's figures on the experiments' test split (`training.oracle`).

The output is a pure function of the config (numpy Generators seeded from `seed`).
Memory is bounded by one chunk (plus the catalog and the pilot, whatever the row count):
rows are generated, labelled and written chunk by chunk.

The world
---------
Categories. Top-categories are the level-1 nodes of the vendored Best Buy tree and
sub-categories their product descendants at any depth (`categories.py`; storefront pages
such as Gift Ideas or Customer Service are dropped, knob `excluded_top_categories`). At most
`max_sub_categories` subs are used, split over the tops in proportion to their size and taken
evenly spaced in path order (seed-independent); `max_top_categories` keeps the largest tops
(0 = all). Query traffic over sub-categories is Zipf: share ~ 1 / rank^`zipf_exponent`
over a seeded ranking, so big and tiny sub-categories sit side by side under one top.

Catalog. Each sub-category has `items_per_sub_category` items with stable ids
(`<sub id>-<ordinal>`), a brand (from `brands_per_top_category` brands per top), colour,
size and material, and static features: log_price (price level varies by sub-category),
sales_volume, good_comment_ratio, brand_popularity (of the brand), rating,
log_review_count, discount. Titles are built from the brand, a price-tier word for cheap or
expensive items ("Budget"/"Premium"), some attribute words, the sub-category's words
("Laptops" -> "laptop") and a model code (`catalog.py`, `vocabulary.py`).

Sessions. A session is one query: its sub-category (Zipf), scenario (country: RU, ES, FR,
NL, US with session shares from #pv of HMoE Table 2) and platform (WE-CAN domains: general,
high_end, budget, shares 100:10:1) are drawn independently. The query asks for attributes
copied from an item of its category (brand, colour, size, material with probabilities
`query_attribute_probs`), may carry a price adjective (platform-dependent probabilities),
keeps each modifier of the category phrase with `modifier_keep_prob` and always has the
head noun. Every word but the brand is replaced by a synonym with `synonym_prob`
("laptop" -> "notebook", "tv" -> "television", "budget" -> "cheap"). The result list has
between `min_list_size` and `max_list_size` items (uniform): same-sub-category items, a
binomial `sibling_share` from other sub-categories of the same top and a binomial
`off_category_share` from other tops, all distinct. A logging ranker orders the list by
relevance + `logging_noise` * Gumbel noise (it never sees the features).

Features and relevance. `relevance` is 3 for same-sub-category items matching every
requested attribute, 2 for other same-sub-category items, 1 for siblings and 0 for other
tops. `lexical_overlap` is the Jaccard index of the distinct lower-case [a-z0-9] tokens of
query and title: it under-counts synonyms, so relevant items often score 0. `hist_ctr` is
the item's historical CTR as the session saw it (a latent item appeal plus noise).

The user model (`behaviour.py`)
-------------------------------
With z = the row's utility features (all numeric features but lexical_overlap) z-scored
with the impression-weighted mean and std of the calibration pilot:

    P(click)          = (1 + position) ** -position_bias_eta
                        * sigmoid(b_click[scenario] + z . w_click + relevance_click_effect[g])
    P(atc | click)    = sigmoid(b_atc[scenario] + z . w_atc + relevance_conversion_effect[g])
    P(purchase | atc) = sigmoid(b_purchase[scenario] + z . w_buy + relevance_conversion_effect[g])

Labels are drawn in this cascade, so purchase implies atc implies click.
w_click = sub-category weights + scenario delta + platform delta. Each top-category has
shared base weights plus `dominant_weight` on its own dominant feature (sales_volume in one,
good_comment_ratio in another, brand_popularity in a third...) plus N(0, `top_noise`);
each sub-category is its top's weights + N(0, `sibling_noise`), so siblings agree and tops
differ. Scenario deltas are N(0, `scenario_noise`) plus the scenario's price-weight shift;
platform deltas shift only the price and brand_popularity weights (high_end: brand over
price, budget: price above all, general in between). w_conv is one checkout vector (price,
quality, discount) with the same scenario price shift and platform deltas.

Calibration. The intercepts b are solved per scenario (bracketed Newton) on a pilot sample
of `calibration_sessions` sessions, position bias included, post-stratified to the Zipf
traffic and the platform shares, so the expected rates equal the targets: CTR and CVR of
HMoE Table 2, each times `rate_multiplier`, and atc/click =
min(`atc_per_purchase` * CVR, `max_atc_given_click`). The pilot is scored as if every
session came from each scenario in turn. Expected (mean probability) and realised rates of
the generated data are both reported in ground_truth.json. Conversion differs a lot between
sessions (cheap vs dear categories, attribute matches, platforms), so a scenario's realised
CVR is only as precise as its number of purchases and sessions allows: a 1M-impression log
at the default rates has ~40 US purchases; use `rate_multiplier` for denser labels.

Code map
--------
categories.py (tree selection), vocabulary.py (words, synonyms), catalog.py (items),
sessions.py (queries, lists, features), behaviour.py (drawing the true weights, calibration;
the probabilities and the cascade are contract/user_model.py), tables.py (Arrow schemas), ground_truth.py (the JSON), generate.py (CLI).

Knobs
-----
All knobs live in `GeneratorConfig` (documented field by field below):
impressions, seed, min_list_size, max_list_size, max_sub_categories, max_top_categories,
excluded_top_categories, items_per_sub_category, brands_per_top_category, zipf_exponent,
sibling_share, off_category_share, dominant_weight, top_noise, sibling_noise,
scenario_noise, position_bias_eta, logging_noise, synonym_prob, modifier_keep_prob,
query_attribute_probs, relevance_click_effect, relevance_conversion_effect,
category_heterogeneity, purchase_conversion_correlation, scenario_category_tilt,
rate_multiplier, atc_per_purchase, max_atc_given_click, scenarios (ScenarioSpec: name,
share, ctr, cvr, price_weight_shift), platforms (PlatformSpec: name, share,
price_weight_shift, brand_weight_shift, cheap_query_prob, premium_query_prob),
calibration_sessions, sessions_per_chunk, first_chunk, show_progress.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from contract.user_model import UTILITY_FEATURES, Behaviour, cascade
from training.data.simulator.behaviour import calibrate, draw_behaviour
from training.data.simulator.catalog import STATIC_FEATURES, build_catalog
from training.data.simulator.categories import (
    NON_PRODUCT_TOP_CATEGORIES,
    CategoryTree,
    load_category_tree,
)
from training.data.simulator.ground_truth import Counts, ground_truth
from training.data.simulator.oracle import ORACLE_SCHEMA, oracle_table, pooled_weights
from training.data.simulator.sessions import (
    Chunk,
    World,
    primes_above,
    scenario_given_sub,
    simulate_chunk,
    zipf_traffic,
)
from training.data.simulator.tables import IMPRESSION_SCHEMA, Columns

# sessions.py appends hist_ctr to the catalog's static features.
assert (*STATIC_FEATURES, "hist_ctr") == UTILITY_FEATURES, "feature order of sessions.py"


@dataclass(frozen=True)
class ScenarioSpec:
    """One scenario (country) of HMoE: session share and target rates (Table 2)."""

    name: str
    share: float  # relative session share: #pv in millions
    ctr: float  # clicks / impressions
    cvr: float  # purchases / clicks
    price_weight_shift: float  # added to the log_price weight (negative = more price-averse)


@dataclass(frozen=True)
class PlatformSpec:
    """One platform (WE-CAN domain): session share and price-vs-brand sensitivity."""

    name: str
    share: float  # relative session share
    price_weight_shift: float  # added to the log_price weight of click and conversion
    brand_weight_shift: float  # added to the brand_popularity weight of click and conversion
    cheap_query_prob: float  # P(query has a cheap-group adjective: budget, cheap, ...)
    premium_query_prob: float  # P(query has a premium-group adjective: premium, luxury, ...)


# HMoE Table 2 (Public AE): #pv 8.7M, 2M, 1.7M, 1.2M, 1.8M; CTR and CVR as printed. The price
# shifts are ours: RU shoppers click a lot and buy little, so we make them the most
# price-averse; US the least.
DEFAULT_SCENARIOS = (
    ScenarioSpec("RU", 8.7, 0.0278, 0.0171, -0.2),
    ScenarioSpec("ES", 2.0, 0.0266, 0.0227, -0.1),
    ScenarioSpec("FR", 1.7, 0.0201, 0.0242, 0.0),
    ScenarioSpec("NL", 1.2, 0.0216, 0.0361, 0.1),
    ScenarioSpec("US", 1.8, 0.0164, 0.0242, 0.2),
)
# WE-CAN: Taobao (general), Tmall (high-end: quality over price), Qintao (budget: price first).
DEFAULT_PLATFORMS = (
    PlatformSpec("general", 100.0, 0.0, 0.0, 0.05, 0.03),
    PlatformSpec("high_end", 10.0, 0.35, 0.8, 0.0, 0.25),
    PlatformSpec("budget", 1.0, -0.8, -0.15, 0.3, 0.0),
)


@dataclass(frozen=True)
class GeneratorConfig:
    """Every knob of the simulator; see the module docstring for how they act together."""

    impressions: int = 1_000_000
    """Rows to write; whole sessions are written, so the count may exceed this by < one list."""
    seed: int = 0
    """Seed of every random draw: same config, same files."""
    min_list_size: int = 10
    """Fewest items in a result list."""
    max_list_size: int = 100
    """Most items in a result list (sizes are uniform in [min, max])."""
    max_sub_categories: int = 400
    """Sub-categories used (split over tops by size), so small runs have data per category."""
    max_top_categories: int = 0
    """Largest top-categories kept; 0 keeps all that have product sub-categories."""
    excluded_top_categories: tuple[str, ...] = NON_PRODUCT_TOP_CATEGORIES
    """Level-1 names dropped as non-product (storefront, services, duplicates)."""
    items_per_sub_category: int = 150
    """Catalog items per sub-category (at least max_list_size)."""
    brands_per_top_category: int = 24
    """Brands selling in each top-category (a brand spans about two tops)."""
    zipf_exponent: float = 1.1
    """Query share of the sub-category of rank r is proportional to 1 / r ** zipf_exponent."""
    sibling_share: float = 0.15
    """Expected share of a list from sibling sub-categories (same top-category)."""
    off_category_share: float = 0.05
    """Expected share of a list from other top-categories."""
    dominant_weight: float = 1.0
    """Added to the click weight of each top-category's dominant feature."""
    top_noise: float = 0.15
    """Std of the noise on each top-category's click weights."""
    sibling_noise: float = 0.15
    """Std of each sub-category's deviation from its top-category's click weights."""
    scenario_noise: float = 0.1
    """Std of each scenario's perturbation of the click weights."""
    position_bias_eta: float = 0.5
    """Examination probability at 0-based position r is (1 + r) ** -eta."""
    logging_noise: float = 1.0
    """Scale of the Gumbel noise the logging ranker adds to relevance when ordering lists."""
    synonym_prob: float = 0.5
    """Probability that a query word (not the brand) is replaced by a synonym."""
    modifier_keep_prob: float = 0.5
    """Probability that a query keeps each non-head word of its category phrase."""
    query_attribute_probs: tuple[float, float, float, float] = (0.15, 0.3, 0.1, 0.1)
    """Probabilities that a query asks for a brand, colour, size, material."""
    relevance_click_effect: tuple[float, float, float, float] = (-3.0, -1.5, 0.0, 0.8)
    """Click-logit effect of relevance 0, 1, 2, 3."""
    relevance_conversion_effect: tuple[float, float, float, float] = (-2.0, -1.0, 0.0, 0.7)
    """Effect of relevance 0..3 on the atc and purchase logits (buying needs a match)."""
    category_heterogeneity: float = 1.0
    """h: scales the top/sub-category deviations from the shared click weights (0: none)."""
    purchase_conversion_correlation: float = 1.0
    """rho: correlation of the purchase stage's weights with add-to-cart's (1: identical)."""
    scenario_category_tilt: float = 0.0
    """Scenario-dependent category traffic: P(scenario | top) tilted by exp(tilt * N(0, 1))."""
    rate_multiplier: float = 1.0
    """Scales every target CTR and CVR (denser labels for small experiments)."""
    atc_per_purchase: float = 3.0
    """Target atc/click is atc_per_purchase * CVR (capped below)."""
    max_atc_given_click: float = 0.5
    """Cap of the target atc/click rate; must stay above every target CVR."""
    scenarios: tuple[ScenarioSpec, ...] = DEFAULT_SCENARIOS
    """Scenarios (countries) with shares, target rates and price shifts."""
    platforms: tuple[PlatformSpec, ...] = DEFAULT_PLATFORMS
    """Platforms with shares and price/brand sensitivity."""
    calibration_sessions: int = 3000
    """Sessions of the pilot sample on which the intercepts are calibrated."""
    sessions_per_chunk: int = 2000
    """Sessions simulated and written (one Parquet row group) at a time: bounds memory."""
    first_chunk: int = 0
    """Seed index of the first chunk of sessions. Logs of the same seed share the world
    (catalog, true weights, calibration) whatever this is; disjoint chunk ranges hold
    different sessions, e.g. a held-out log for simulated shoppers that no model trained on."""
    show_progress: bool = True
    """Show a tqdm progress bar over impressions."""

    def __post_init__(self) -> None:
        checks = {
            "impressions >= 1": self.impressions >= 1,
            "1 <= min_list_size <= max_list_size": 1 <= self.min_list_size <= self.max_list_size,
            "items_per_sub_category >= max_list_size": (
                self.items_per_sub_category >= self.max_list_size
            ),
            "max_sub_categories >= 1": self.max_sub_categories >= 1,
            "max_top_categories >= 0": self.max_top_categories >= 0,
            "brands_per_top_category >= 1": self.brands_per_top_category >= 1,
            "sibling_share, off_category_share >= 0 with sum < 1": (
                min(self.sibling_share, self.off_category_share) >= 0
                and self.sibling_share + self.off_category_share < 1
            ),
            "probabilities in [0, 1]": all(
                0 <= p <= 1
                for p in (self.synonym_prob, self.modifier_keep_prob, *self.query_attribute_probs)
            ),
            "four relevance effects": (
                len(self.relevance_click_effect) == len(self.relevance_conversion_effect) == 4
            ),
            "rate_multiplier > 0": self.rate_multiplier > 0,
            "category_heterogeneity >= 0": self.category_heterogeneity >= 0,
            "-1 <= purchase_conversion_correlation <= 1": (
                -1 <= self.purchase_conversion_correlation <= 1
            ),
            "calibration_sessions >= 100": self.calibration_sessions >= 100,
            "sessions_per_chunk >= 1": self.sessions_per_chunk >= 1,
            "first_chunk >= 0": self.first_chunk >= 0,
            "scenario_category_tilt >= 0": self.scenario_category_tilt >= 0,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid GeneratorConfig: {', '.join(failed)}")

    def targets(self) -> np.ndarray:
        """[n_scenarios, 3] target CTR, atc/click and CVR (after rate_multiplier)."""
        ctr = np.array([s.ctr for s in self.scenarios]) * self.rate_multiplier
        cvr = np.array([s.cvr for s in self.scenarios]) * self.rate_multiplier
        atc = np.minimum(self.atc_per_purchase * cvr, self.max_atc_given_click)
        if np.any(cvr >= atc) or np.any(ctr >= 1):
            raise ValueError("rate_multiplier too high: need CTR < 1 and CVR < atc/click")
        return np.stack([ctr, atc, cvr], axis=1)


def _world(config: GeneratorConfig) -> tuple[CategoryTree, World, Behaviour]:
    """Categories, catalog, traffic and the uncalibrated user model (seeded)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0]))
    tree = load_category_tree(
        config.max_sub_categories, config.max_top_categories, config.excluded_top_categories
    )
    catalog = build_catalog(
        tree, config.items_per_sub_category, config.brands_per_top_category, rng
    )
    traffic = zipf_traffic(tree.n_sub, config.zipf_exponent, rng)
    purchase_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 3]))
    behaviour = draw_behaviour(config, tree.sub_top, rng, purchase_rng)
    shares = np.array([s.share for s in config.scenarios]) / sum(s.share for s in config.scenarios)
    tilt_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 4]))
    by_sub = scenario_given_sub(tree.sub_top, shares, config.scenario_category_tilt, tilt_rng)
    primes = primes_above(catalog.n_items)
    return tree, World(catalog, tree.sub_top, traffic, primes, by_sub), behaviour


def pilot_weights(chunk: Chunk, traffic: np.ndarray, platform_share: np.ndarray) -> np.ndarray:
    """[R] impression weights (sum 1) post-stratifying the pilot by sub-category and platform.

    A session of sub-category k and platform p weighs traffic[k] / (its pilot share of k)
    times share[p] / (pilot share of p): sampling noise in which categories and platforms the
    pilot drew is what most moves a small pilot's rates (category price levels, budget's
    price aversion), and reweighting removes it.
    """
    first = np.cumsum(chunk.sizes) - chunk.sizes
    sub, platform = chunk.rows.sub[first], chunk.rows.platform[first]
    sub_share = np.bincount(sub, minlength=len(traffic)) / len(sub)
    platform_pilot = np.bincount(platform, minlength=len(platform_share)) / len(sub)
    weight = traffic[sub] / sub_share[sub] * platform_share[platform] / platform_pilot[platform]
    row_weight = weight[chunk.session]
    return row_weight / row_weight.sum()


def _calibrated(config: GeneratorConfig, world: World, behaviour: Behaviour) -> Behaviour:
    """`behaviour` with pilot standardisation statistics and calibrated intercepts."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2]))
    pilot = simulate_chunk(config, world, config.calibration_sessions, 2**62, rng)
    features = pilot.rows.features.astype(np.float64)
    behaviour = dataclasses.replace(
        behaviour, feature_mean=features.mean(axis=0), feature_std=features.std(axis=0)
    )
    shares = np.array([p.share for p in config.platforms]) / sum(p.share for p in config.platforms)
    weight = pilot_weights(pilot, world.traffic, shares)
    if world.scenario_given_sub is not None:  # each scenario's own category mix
        scenario_share = world.traffic @ world.scenario_given_sub
        tilt = world.scenario_given_sub[pilot.rows.sub] / scenario_share
        weight = weight[:, None] * tilt
        weight /= weight.sum(axis=0, keepdims=True)
    intercepts = calibrate(behaviour, pilot.rows, weight, config.targets())
    return dataclasses.replace(behaviour, intercepts=intercepts)


def generate(config: GeneratorConfig, out_dir: str | Path) -> dict:
    """Write impressions.parquet, oracle.parquet, catalog.parquet and ground_truth.json (with
    the oracle's test-split table); return the truth."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tree, world, behaviour = _world(config)
    behaviour = _calibrated(config, world, behaviour)
    columns = Columns(config, tree, world.catalog)
    pq.write_table(columns.catalog_table(), out / "catalog.parquet", compression="zstd")
    counts = Counts(len(config.scenarios), len(config.platforms), tree.n_sub)
    written, chunk_index = 0, 0
    progress = tqdm(total=config.impressions, unit="imp", disable=not config.show_progress)
    pooled = pooled_weights(behaviour, world.sub_top, world.traffic)
    with (
        pq.ParquetWriter(out / "impressions.parquet", IMPRESSION_SCHEMA, compression="zstd") as w,
        pq.ParquetWriter(out / "oracle.parquet", ORACLE_SCHEMA, compression="zstd") as oracle,
    ):
        while written < config.impressions:
            seed = [config.seed, 1, config.first_chunk + chunk_index]
            rng = np.random.default_rng(np.random.SeedSequence(seed))
            chunk = simulate_chunk(
                config, world, config.sessions_per_chunk, config.impressions - written, rng
            )
            labels, reach = cascade(behaviour, chunk.rows, rng)
            table = columns.table(chunk, labels, counts.sessions)
            w.write_table(table, row_group_size=table.num_rows)
            oracle.write_table(oracle_table(behaviour, chunk.rows, pooled))
            counts.add(chunk, labels, reach)
            written += table.num_rows
            chunk_index += 1
            progress.update(table.num_rows)
    progress.close()
    truth = ground_truth(config, tree, world, behaviour, counts)
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1))
    from training.oracle import add_to_ground_truth  # the split lives with the trainer

    return add_to_ground_truth(out)
