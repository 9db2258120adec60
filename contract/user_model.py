"""The simulated shop's user model, as ground_truth.json records it: what the generator draws
its labels from (training/data/simulator) and what the simulated shoppers act by
(loadtest/shoppers.py). One definition, so the two cannot drift; numpy only.

For an impression of item i at 0-based position r in a session of scenario s and platform p
whose query names sub-category k, with z = the standardised utility features of the row:

    P(click)            = (1 + r) ** -eta * sigmoid(b_click[s] + z . w_click + rel_click[g])
    P(atc | click)      = sigmoid(b_atc[s] + c_atc)
    P(purchase | atc)   = sigmoid(b_purchase[s] + c_buy)
    c_atc = z . w_atc + rel_conv[g],   c_buy = z . w_buy + rel_conv[g]

    w_click = sub_weights[k] + scenario_deltas[s] + platform_deltas[p]
    w_atc   = conversion_weights + scenario price shift + platform_deltas[p]
    w_buy   = purchase_weights + scenario price shift + platform_deltas[p]

where g is the graded relevance 0..3 and the intercepts b are calibrated per scenario
(training/data/simulator/behaviour.py draws the weights and calibrates them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.schema import NUMERIC_FEATURES

# Every numeric feature except lexical_overlap, which only proxies relevance (it is
# computed from text) and carries no preference of its own.
UTILITY_FEATURES = tuple(f for f in NUMERIC_FEATURES if f != "lexical_overlap")
PRICE = UTILITY_FEATURES.index("log_price")


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


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def standardised(behaviour: Behaviour, rows: Rows) -> np.ndarray:
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
    z = standardised(behaviour, rows)
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
    p_click = examination(behaviour, rows.position) * sigmoid(b[:, 0] + click)
    return p_click, sigmoid(b[:, 1] + atc), sigmoid(b[:, 2] + buy)


def click_given_examined(
    behaviour: Behaviour, rows: Rows, sub_weights: np.ndarray | None = None
) -> np.ndarray:
    """[R] position-blind P(click | examined) = sigmoid(b_click + click logit), optionally
    with other click weights per sub-category (see `scores`)."""
    click, _, _ = scores(behaviour, rows, rows.scenario, sub_weights)
    return sigmoid(behaviour.intercepts[rows.scenario, 0] + click)


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


def behaviour_from(truth: dict) -> tuple[Behaviour, dict[str, dict[str, int]]]:
    """The calibrated user model back from ground_truth.json, and the index of every name it
    uses: {"sub_category": {id: k}, "scenario": {name: s}, "platform": {name: p}}.

    The inverse of `ground_truth` up to its 6-decimal rounding of weights: what lets a
    simulated shopper act on a list exactly as the generator's shoppers did.
    """

    def matrix(rows) -> np.ndarray:
        return np.array([[row[f] for f in UTILITY_FEATURES] for row in rows])

    tops, subs = truth["top_categories"], truth["sub_categories"]
    scenarios, platforms = truth["scenarios"], truth["platform_click_weight_delta"]
    behaviour = Behaviour(
        top_weights=matrix(t["click_weights"] for t in tops.values()),
        dominant=np.array([UTILITY_FEATURES.index(t["dominant_feature"]) for t in tops.values()]),
        sub_weights=matrix(s["click_weights"] for s in subs.values()),
        scenario_deltas=matrix(s["click_weight_delta"] for s in scenarios.values()),
        platform_deltas=matrix(platforms.values()),
        conversion_weights=matrix([truth["conversion_weights"]])[0],
        # Logs written before the rho knob had one conversion vector for both stages.
        purchase_weights=matrix([truth.get("purchase_weights", truth["conversion_weights"])])[0],
        feature_mean=matrix([truth["standardisation"]["mean"]])[0],
        feature_std=matrix([truth["standardisation"]["std"]])[0],
        click_relevance=np.array(truth["relevance_click_effect"], dtype=float),
        conversion_relevance=np.array(truth["relevance_conversion_effect"], dtype=float),
        eta=float(truth["position_bias"]["eta"]),
        intercepts=np.array(
            [[s["intercepts"][k] for k in ("click", "atc", "purchase")] for s in scenarios.values()]
        ),
    )
    index = {
        "sub_category": {name: k for k, name in enumerate(subs)},
        "scenario": {name: s for s, name in enumerate(scenarios)},
        "platform": {name: p for p, name in enumerate(platforms)},
    }
    return behaviour, index
