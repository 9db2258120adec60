"""The simulator's oracle: each row's true probabilities, written beside the impressions.

`oracle.parquet` is row-aligned with `impressions.parquet` (same order, same row groups) and
is not part of the dataset contract: no model may read it. Its columns:

- `p_click`, `p_atc_given_click`, `p_purchase_given_atc`: the true cascade probabilities
  (`contract.user_model.probabilities`), position bias included: the Bayes scores;
- `examination`: (1 + position) ** -eta, the position-only factor of P(click);
- `click_blind`: P(click | examined) with each sub-category's true click weights, the best
  any position-blind model can do;
- `click_blind_top`, `click_blind_global`: the same with each sub-category's weights replaced
  by its top-category's traffic-weighted mean, or by the one traffic-weighted mean over all
  sub-categories. The gap between `click_blind_global` and `click_blind` is what learning
  the category structure can win: a model's "share of the learnable headroom" is measured
  on that scale (`training.oracle`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from contract.user_model import (
    Behaviour,
    Rows,
    click_given_examined,
    examination,
    probabilities,
)

ORACLE_SCHEMA = pa.schema(
    [
        (name, pa.float32())
        for name in (
            "p_click",
            "p_atc_given_click",
            "p_purchase_given_atc",
            "examination",
            "click_blind",
            "click_blind_top",
            "click_blind_global",
        )
    ]
)


@dataclass(frozen=True)
class PooledWeights:
    """Click weights [n_sub, F] with the category structure pooled away: per_top (each sub
    gets its top-category's traffic-weighted mean) and shared (one mean for every sub)."""

    per_top: np.ndarray
    shared: np.ndarray


def pooled_weights(behaviour: Behaviour, sub_top: np.ndarray, traffic: np.ndarray) -> PooledWeights:
    """Traffic-weighted means of the true sub-category click weights, per top and overall."""
    weights = behaviour.sub_weights
    n_top = int(sub_top.max()) + 1
    top_traffic = np.bincount(sub_top, weights=traffic, minlength=n_top)
    top_mean = (
        np.stack(
            [
                np.bincount(sub_top, weights=traffic * weights[:, f], minlength=n_top)
                for f in range(weights.shape[1])
            ],
            axis=1,
        )
        / top_traffic[:, None]
    )
    shared = traffic @ weights / traffic.sum()
    return PooledWeights(top_mean[sub_top], np.broadcast_to(shared, weights.shape))


def oracle_table(behaviour: Behaviour, rows: Rows, pooled: PooledWeights) -> pa.Table:
    """The oracle columns of one chunk's rows as a table of ORACLE_SCHEMA."""
    p_click, p_atc, p_purchase = probabilities(behaviour, rows)
    columns = (
        p_click,
        p_atc,
        p_purchase,
        examination(behaviour, rows.position),
        click_given_examined(behaviour, rows),
        click_given_examined(behaviour, rows, pooled.per_top),
        click_given_examined(behaviour, rows, pooled.shared),
    )
    return pa.Table.from_arrays(
        [pa.array(np.asarray(c, dtype=np.float32)) for c in columns], schema=ORACLE_SCHEMA
    )
