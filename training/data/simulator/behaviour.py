"""The true user model of the simulator: feature weights, click/atc/purchase probabilities.

For an impression of item i at 0-based position r in a session of scenario s and platform p
whose query names sub-category k, with z = the standardised utility features of the row:

    P(click)            = (1 + r) ** -eta * sigmoid(b_click[s] + z . w_click + rel_click[g])
    P(atc | click)      = sigmoid(b_atc[s] + c_atc)
    P(purchase | atc)   = sigmoid(b_purchase[s] + c_buy)
    c_atc = z . w_atc + rel_conv[g],   c_buy = z . w_buy + rel_conv[g]

    w_click = sub_weights[k] + scenario_deltas[s] + platform_deltas[p]
    w_atc   = conversion_weights + scenario price shift + platform_deltas[p]
    w_buy   = purchase_weights + scenario price shift + platform_deltas[p]

sub_weights = base + h * (the top's deviation + the sub's deviation), h the category
heterogeneity (h = 0: every sub-category clicks with the shared base weights). purchase_weights
= rho * conversion_weights + sqrt(1 - rho^2) * an independent draw of the same norm, rho the
atc/purchase correlation (rho = 1: one conversion score, as before the knob existed).

where g is the graded relevance 0..3. The intercepts b are calibrated per scenario on a
pilot sample so that the expected CTR, atc/click and CVR hit the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.schema import NUMERIC_FEATURES

# Every numeric feature except lexical_overlap, which only proxies relevance (it is
# computed from text) and carries no preference of its own.
UTILITY_FEATURES = tuple(f for f in NUMERIC_FEATURES if f != "lexical_overlap")
PRICE, BRAND = UTILITY_FEATURES.index("log_price"), UTILITY_FEATURES.index("brand_popularity")
# Features that can dominate a top-category's click weights (price is a cost, not a draw).
DOMINANT_CANDIDATES = tuple(f for f in UTILITY_FEATURES if f != "log_price")

# Shared structure of the click weights before the dominant feature is added.
BASE_CLICK_WEIGHTS = {
    "log_price": -0.4,
    "sales_volume": 0.15,
    "good_comment_ratio": 0.15,
    "brand_popularity": 0.1,
    "rating": 0.15,
    "log_review_count": 0.1,
    "discount": 0.15,
    "hist_ctr": 0.15,
}
# Checkout cares about price, quality and discounts, whatever made the shopper click.
CONVERSION_WEIGHTS = {"log_price": -0.5, "good_comment_ratio": 0.3, "rating": 0.3, "discount": 0.4}


@dataclass(frozen=True)
class Behaviour:
    """True weights over UTILITY_FEATURES (F of them) and the calibrated intercepts.

    top_weights [n_top, F], dominant [n_top] (index into UTILITY_FEATURES), sub_weights
    [n_sub, F], scenario_deltas [n_scn, F] (noise + price shift), platform_deltas [n_plat, F]
    (price and brand shifts only), conversion_weights [F] (add-to-cart), purchase_weights [F]
    (purchase given add-to-cart), feature_mean/feature_std [F] (the
    standardisation z = (x - mean) / std), click/conversion_relevance [4], eta, intercepts
    [n_scn, 3] for (click, atc, purchase).
    """

    top_weights: np.ndarray
    dominant: np.ndarray
    sub_weights: np.ndarray
    scenario_deltas: np.ndarray
    platform_deltas: np.ndarray
    conversion_weights: np.ndarray
    purchase_weights: np.ndarray
    feature_mean: np.ndarray
    feature_std: np.ndarray
    click_relevance: np.ndarray
    conversion_relevance: np.ndarray
    eta: float
    intercepts: np.ndarray


@dataclass(frozen=True)
class Rows:
    """What the user model needs per impression: features [R, F] raw, the rest [R] ints."""

    features: np.ndarray
    relevance: np.ndarray
    position: np.ndarray
    sub: np.ndarray
    scenario: np.ndarray
    platform: np.ndarray


def _vector(weights: dict[str, float]) -> np.ndarray:
    return np.array([weights.get(f, 0.0) for f in UTILITY_FEATURES])


def purchase_vector(conversion: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """rho * conversion + sqrt(1 - rho^2) * d, d a Gaussian direction of conversion's norm:
    the purchase stage's weights, correlated rho (cosine, in expectation) with add-to-cart's."""
    if rho == 1.0:
        return conversion.copy()
    d = rng.standard_normal(conversion.shape)
    d -= d @ conversion / (conversion @ conversion) * conversion  # orthogonal to conversion
    d *= np.linalg.norm(conversion) / np.linalg.norm(d)
    return rho * conversion + np.sqrt(1.0 - rho**2) * d


def draw_behaviour(
    config, sub_top: np.ndarray, rng: np.random.Generator, purchase_rng: np.random.Generator
) -> Behaviour:
    """Draw the true weights (intercepts zero, standardisation identity until calibrated).

    Dominant features are dealt to top-categories from a seeded shuffle of
    DOMINANT_CANDIDATES, cycling, so each feature dominates in about n_top / 7 of them.
    The knobs h (category_heterogeneity) and rho (purchase_conversion_correlation) rescale
    draws after they are made, and rho's own draw comes from a separate stream
    (`purchase_rng`), so the draws of `rng` are the same whatever the knobs.
    """
    n_top, n_features = int(sub_top.max()) + 1, len(UTILITY_FEATURES)
    deck = rng.permutation([UTILITY_FEATURES.index(f) for f in DOMINANT_CANDIDATES])
    dominant = np.resize(deck, n_top)
    top_weights = _vector(BASE_CLICK_WEIGHTS) + rng.normal(0, config.top_noise, (n_top, n_features))
    top_weights[np.arange(n_top), dominant] += config.dominant_weight
    sub_weights = top_weights[sub_top] + rng.normal(
        0, config.sibling_noise, (len(sub_top), n_features)
    )
    base = _vector(BASE_CLICK_WEIGHTS)
    h = config.category_heterogeneity
    top_weights, sub_weights = base + h * (top_weights - base), base + h * (sub_weights - base)
    scenario_deltas = rng.normal(0, config.scenario_noise, (len(config.scenarios), n_features))
    scenario_deltas[:, PRICE] += [s.price_weight_shift for s in config.scenarios]
    platform_deltas = np.zeros((len(config.platforms), n_features))
    platform_deltas[:, PRICE] = [p.price_weight_shift for p in config.platforms]
    platform_deltas[:, BRAND] = [p.brand_weight_shift for p in config.platforms]
    return Behaviour(
        top_weights=top_weights,
        dominant=dominant,
        sub_weights=sub_weights,
        scenario_deltas=scenario_deltas,
        platform_deltas=platform_deltas,
        conversion_weights=_vector(CONVERSION_WEIGHTS),
        purchase_weights=purchase_vector(
            _vector(CONVERSION_WEIGHTS), config.purchase_conversion_correlation, purchase_rng
        ),
        feature_mean=np.zeros(n_features),
        feature_std=np.ones(n_features),
        click_relevance=np.asarray(config.relevance_click_effect, dtype=float),
        conversion_relevance=np.asarray(config.relevance_conversion_effect, dtype=float),
        eta=config.position_bias_eta,
        intercepts=np.zeros((len(config.scenarios), 3)),
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _standardised(behaviour: Behaviour, rows: Rows) -> np.ndarray:
    return (rows.features - behaviour.feature_mean) / behaviour.feature_std


def examination(behaviour: Behaviour, position: np.ndarray) -> np.ndarray:
    """[R] probability that a shopper looks at position r (0-based): (1 + r) ** -eta."""
    return (1.0 + position) ** -behaviour.eta


def scores(
    behaviour: Behaviour, rows: Rows, scenario: np.ndarray, sub_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Click logit and the add-to-cart and purchase scores, without intercepts, each [R].

    `scenario` ([R]) is passed separately so calibration can score one pilot sample as if
    every session came from each scenario in turn; `sub_weights` [n_sub, F] replaces the
    true click weights of each sub-category (the oracle's per-top and global rankings).
    """
    z = _standardised(behaviour, rows)
    sub_weights = behaviour.sub_weights if sub_weights is None else sub_weights
    click_w = (
        sub_weights[rows.sub]
        + behaviour.scenario_deltas[scenario]
        + behaviour.platform_deltas[rows.platform]
    )
    click = np.einsum("rf,rf->r", z, click_w) + behaviour.click_relevance[rows.relevance]
    price_shift = z[:, PRICE] * behaviour.scenario_deltas[scenario, PRICE]
    relevance = behaviour.conversion_relevance[rows.relevance]
    platform = behaviour.platform_deltas[rows.platform]
    atc = np.einsum("rf,rf->r", z, behaviour.conversion_weights + platform) + price_shift
    buy = np.einsum("rf,rf->r", z, behaviour.purchase_weights + platform) + price_shift
    return click, atc + relevance, buy + relevance


def probabilities(behaviour: Behaviour, rows: Rows) -> tuple[np.ndarray, ...]:
    """P(click), P(atc | click), P(purchase | atc), each [R]."""
    click, atc, buy = scores(behaviour, rows, rows.scenario)
    b = behaviour.intercepts[rows.scenario]
    p_click = examination(behaviour, rows.position) * _sigmoid(b[:, 0] + click)
    return p_click, _sigmoid(b[:, 1] + atc), _sigmoid(b[:, 2] + buy)


def click_given_examined(
    behaviour: Behaviour, rows: Rows, sub_weights: np.ndarray | None = None
) -> np.ndarray:
    """[R] position-blind P(click | examined) = sigmoid(b_click + click logit), optionally
    with other click weights per sub-category (see `scores`)."""
    click, _, _ = scores(behaviour, rows, rows.scenario, sub_weights)
    return _sigmoid(behaviour.intercepts[rows.scenario, 0] + click)


def cascade(
    behaviour: Behaviour, rows: Rows, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Labels [R, 3] int8 (click, atc, purchase) drawn in the cascade, and expected reach
    [R, 3] (P(click), P(atc), P(purchase)) of each row: what one shopper does with a list."""
    p_click, p_atc, p_purchase = probabilities(behaviour, rows)
    u = rng.random((len(p_click), 3))
    click = u[:, 0] < p_click
    atc = click & (u[:, 1] < p_atc)
    purchase = atc & (u[:, 2] < p_purchase)
    reach = np.cumprod(np.stack([p_click, p_atc, p_purchase], axis=1), axis=1)
    return np.stack([click, atc, purchase], axis=1).astype(np.int8), reach


def solve_intercept(weight: np.ndarray, score: np.ndarray, target: float, what: str) -> float:
    """The b with sum_r weight[r] * sigmoid(b + score[r]) == target (relative error 1e-6).

    The sum increases in b, so Newton steps are kept inside a shrinking bracket (bisecting
    when a step leaves it). ValueError when the target is out of reach.
    """
    lo, hi = -30.0, 30.0
    reach = weight @ _sigmoid(lo + score), weight @ _sigmoid(hi + score)
    if not reach[0] < target < reach[1]:
        raise ValueError(
            f"target {what} {target:.4g} is outside the reachable range "
            f"({reach[0]:.4g}, {reach[1]:.4g}): lower rate_multiplier or position_bias_eta"
        )
    b = 0.0
    for _ in range(100):
        p = _sigmoid(b + score)
        error = weight @ p - target
        if abs(error) < 1e-6 * target:
            break
        lo, hi = (b, hi) if error < 0 else (lo, b)
        b -= error / (weight @ (p * (1.0 - p)))
        b = b if lo < b < hi else 0.5 * (lo + hi)
    return b


def calibrate(
    behaviour: Behaviour, pilot: Rows, row_weight: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Per-scenario intercepts [n_scn, 3] that hit `targets` [n_scn, 3] on the pilot.

    targets columns: CTR (click / impression), atc / click, CVR (purchase / click).
    `row_weight` [R] (sums to 1) reweights the pilot's impressions to the population (see
    `generator.pilot_weights`); [R, n_scn] (columns sum to 1) gives each scenario its own. The pilot's sessions are scored as if they came from each
    scenario in turn, so every scenario is calibrated on the same list contents.
    """
    exam = examination(behaviour, pilot.position)
    intercepts = np.zeros_like(targets)
    for s, (ctr, atc, cvr) in enumerate(targets):
        weight = row_weight if row_weight.ndim == 1 else row_weight[:, s]
        click, atc_score, buy_score = scores(behaviour, pilot, np.full_like(pilot.scenario, s))
        b_click = solve_intercept(weight * exam, click, ctr, "CTR")
        clicked = weight * exam * _sigmoid(b_click + click)  # expected clicks per row
        clicked /= clicked.sum()
        b_atc = solve_intercept(clicked, atc_score, atc, "atc/click")
        carted = clicked * _sigmoid(b_atc + atc_score)
        b_purchase = solve_intercept(carted, buy_score, cvr, "CVR")
        intercepts[s] = (b_click, b_atc, b_purchase)
    return intercepts
