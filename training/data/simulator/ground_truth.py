"""ground_truth.json: the simulator's true parameters and the statistics of what it wrote."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from contract.user_model import UTILITY_FEATURES, Behaviour
from training.data.simulator.categories import CategoryTree
from training.data.simulator.sessions import Chunk, World


@dataclass
class Counts:
    """Running totals over the chunks written so far (all small arrays)."""

    n_scenarios: int
    n_platforms: int
    n_sub: int
    labels: np.ndarray = field(init=False)  # [n_scn, 4] impressions, clicks, atc, purchases
    expected: np.ndarray = field(init=False)  # [n_scn, 3] sums of P(click), P(atc), P(buy)
    platform: np.ndarray = field(init=False)  # [n_plat, 2] sessions, impressions
    sub: np.ndarray = field(init=False)  # [n_sub, 2] sessions, impressions
    sessions: int = 0

    def __post_init__(self) -> None:
        self.labels = np.zeros((self.n_scenarios, 4), dtype=np.int64)
        self.expected = np.zeros((self.n_scenarios, 3))
        self.platform = np.zeros((self.n_platforms, 2), dtype=np.int64)
        self.sub = np.zeros((self.n_sub, 2), dtype=np.int64)

    def add(self, chunk: Chunk, labels: np.ndarray, reach: np.ndarray) -> None:
        """Add a chunk: labels [R, 3] (click, atc, purchase), reach [R, 3] expected stages."""
        rows, first = chunk.rows, np.cumsum(chunk.sizes) - chunk.sizes
        self.sessions += len(chunk.sizes)
        scenario = rows.scenario
        self.labels[:, 0] += np.bincount(scenario, minlength=self.n_scenarios)
        for stage in range(3):
            self.labels[:, 1 + stage] += np.bincount(
                scenario, weights=labels[:, stage], minlength=self.n_scenarios
            ).astype(np.int64)
            self.expected[:, stage] += np.bincount(
                scenario, weights=reach[:, stage], minlength=self.n_scenarios
            )
        for table, key, n in (
            (self.platform, rows.platform, self.n_platforms),
            (self.sub, rows.sub, self.n_sub),
        ):
            table[:, 0] += np.bincount(key[first], minlength=n)
            table[:, 1] += np.bincount(key, minlength=n)


def _weights(vector: np.ndarray) -> dict[str, float]:
    return {f: round(float(w), 6) for f, w in zip(UTILITY_FEATURES, vector, strict=True)}


def _rates(labels: np.ndarray) -> dict[str, float]:
    """CTR, atc/click, CVR and CTCVR from impressions, clicks, atc, purchases (or sums)."""
    impressions, clicks, atc, purchases = (float(x) for x in labels)
    return {
        "ctr": clicks / max(impressions, 1),
        "atc_given_click": atc / max(clicks, 1e-12),
        "cvr": purchases / max(clicks, 1e-12),
        "ctcvr": purchases / max(impressions, 1),
    }


def ground_truth(
    config, tree: CategoryTree, world: World, behaviour: Behaviour, counts: Counts
) -> dict:
    """Everything the simulator knows, as JSON-ready data (see generator.py's docstring)."""
    targets = config.targets()
    scenarios = {}
    for s, spec in enumerate(config.scenarios):
        ctr, atc, cvr = targets[s]
        scenarios[spec.name] = {
            "session_share": spec.share / sum(x.share for x in config.scenarios),
            "target": {"ctr": ctr, "atc_given_click": atc, "cvr": cvr, "ctcvr": ctr * cvr},
            "expected": _rates(np.concatenate([counts.labels[s, :1], counts.expected[s]])),
            "realised": _rates(counts.labels[s]),
            "counts": dict(
                zip(
                    ("impressions", "clicks", "atc", "purchases"),
                    map(int, counts.labels[s]),
                    strict=True,
                )
            ),
            "intercepts": dict(
                zip(("click", "atc", "purchase"), behaviour.intercepts[s], strict=True)
            ),
            "click_weight_delta": _weights(behaviour.scenario_deltas[s]),
            "price_weight_shift": spec.price_weight_shift,
        }
    platforms = {
        spec.name: {
            **dataclasses.asdict(spec),
            "session_share": spec.share / sum(x.share for x in config.platforms),
            "sessions": int(counts.platform[p, 0]),
            "impressions": int(counts.platform[p, 1]),
        }
        for p, spec in enumerate(config.platforms)
    }
    tops = {
        top_id: {
            "name": tree.top_names[t],
            "dominant_feature": UTILITY_FEATURES[behaviour.dominant[t]],
            "click_weights": _weights(behaviour.top_weights[t]),
            "sub_categories": [tree.sub_ids[k] for k in np.flatnonzero(tree.sub_top == t)],
            "impressions": int(counts.sub[tree.sub_top == t, 1].sum()),
        }
        for t, top_id in enumerate(tree.top_ids)
    }
    subs = {
        sub_id: {
            "name": tree.sub_names[k],
            "path": tree.sub_paths[k],
            "top_category": tree.top_ids[tree.sub_top[k]],
            "top_name": tree.top_names[tree.sub_top[k]],
            "traffic_share": float(world.traffic[k]),
            "sessions": int(counts.sub[k, 0]),
            "impressions": int(counts.sub[k, 1]),
            "click_weights": _weights(behaviour.sub_weights[k]),
        }
        for k, sub_id in enumerate(tree.sub_ids)
    }
    return {
        "config": dataclasses.asdict(config),
        "totals": {
            "sessions": counts.sessions,
            **dict(
                zip(
                    ("impressions", "clicks", "atc", "purchases"),
                    map(int, counts.labels.sum(0)),
                    strict=True,
                )
            ),
            "catalog_items": world.catalog.n_items,
        },
        "utility_features": list(UTILITY_FEATURES),
        "standardisation": {
            "mean": _weights(behaviour.feature_mean),
            "std": _weights(behaviour.feature_std),
        },
        "position_bias": {"eta": behaviour.eta, "examination": "(1 + position) ** -eta"},
        "relevance_click_effect": list(behaviour.click_relevance),
        "relevance_conversion_effect": list(behaviour.conversion_relevance),
        "conversion_weights": _weights(behaviour.conversion_weights),
        "purchase_weights": _weights(behaviour.purchase_weights),
        "platform_click_weight_delta": {
            spec.name: _weights(behaviour.platform_deltas[p])
            for p, spec in enumerate(config.platforms)
        },
        "scenarios": scenarios,
        "platforms": platforms,
        "top_categories": tops,
        "sub_categories": subs,
    }
