"""Drawing the simulator's true user model (contract/user_model.py holds the model itself:
its parameters, probabilities and cascade) and calibrating its intercepts.

sub_weights = base + h * (the top's deviation + the sub's deviation), h the category
heterogeneity (h = 0: every sub-category clicks with the shared base weights). purchase_weights
= rho * conversion_weights + sqrt(1 - rho^2) * an independent draw of the same norm, rho the
atc/purchase correlation (rho = 1: one conversion score, as before the knob existed).
The intercepts b are calibrated per scenario on a pilot sample so that the expected CTR,
atc/click and CVR hit the targets.
"""

from __future__ import annotations

import numpy as np

from contract.user_model import (
    PRICE,
    UTILITY_FEATURES,
    Behaviour,
    Rows,
    examination,
    scores,
    sigmoid,
)

BRAND = UTILITY_FEATURES.index("brand_popularity")
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


def solve_intercept(weight: np.ndarray, score: np.ndarray, target: float, what: str) -> float:
    """The b with sum_r weight[r] * sigmoid(b + score[r]) == target (relative error 1e-6).

    The sum increases in b, so Newton steps are kept inside a shrinking bracket (bisecting
    when a step leaves it). ValueError when the target is out of reach.
    """
    lo, hi = -30.0, 30.0
    reach = weight @ sigmoid(lo + score), weight @ sigmoid(hi + score)
    if not reach[0] < target < reach[1]:
        raise ValueError(
            f"target {what} {target:.4g} is outside the reachable range "
            f"({reach[0]:.4g}, {reach[1]:.4g}): lower rate_multiplier or position_bias_eta"
        )
    b = 0.0
    for _ in range(100):
        p = sigmoid(b + score)
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
        clicked = weight * exam * sigmoid(b_click + click)  # expected clicks per row
        clicked /= clicked.sum()
        b_atc = solve_intercept(clicked, atc_score, atc, "atc/click")
        carted = clicked * sigmoid(b_atc + atc_score)
        b_purchase = solve_intercept(carted, buy_score, cvr, "CVR")
        intercepts[s] = (b_click, b_atc, b_purchase)
    return intercepts
