"""The rows every experiment table carries beside its networks: the oracle (on a generated
log) and the strong simple baselines, plus each row's share of the learnable headroom."""

from __future__ import annotations

import numpy as np

from training import baselines
from training.fitting import Prepared, score_metrics
from training.oracle import (
    RANKINGS,
    has_oracle,
    headroom_share,
    oracle_metrics,
    oracle_scores,
    read_oracle,
)

FIGURES = ("session_auc", "ndcg_at_10", "ndcg")


def with_headroom(row: dict, oracle: dict | None) -> dict:
    """`row` plus "headroom_share" (session AUC; NaN without an oracle)."""
    share = headroom_share(row["session_auc"], oracle) if oracle else float("nan")
    return {**row, "headroom_share": share}


def oracle_rows(prepared: Prepared, task: str) -> tuple[list[dict], dict | None]:
    """(rows, oracle): the oracle_<ranking> rows of a generated log ([] and None otherwise)."""
    if not has_oracle(prepared.data_dir):
        return [], None
    oracle = oracle_metrics(prepared.data_dir, prepared.test_frame, task)
    rows = [{"model": f"oracle_{name}", **m} for name, m in oracle.items()]
    return [with_headroom(r, oracle) for r in rows], oracle


def reference_rows(
    prepared: Prepared, task: str, seed: int = 0, xgboost: bool = True
) -> tuple[list[dict], dict | None]:
    """(rows, oracle): oracle_<ranking> rows (generated logs only), the per-top-category
    logistic regression and, with `xgboost`, the XGBoost ranker, on prepared's test split for
    its first label column `task`; oracle is {ranking: metrics} or None."""
    rows, oracle = oracle_rows(prepared, task)
    scores, info = baselines.per_top_logistic(
        prepared.spec, prepared.train, prepared.valid, prepared.test
    )
    rows.append({"model": "logreg_per_top", **score_metrics(prepared.test, scores), **info})
    if xgboost:
        scores = baselines.xgboost(prepared.train, prepared.test, seed=seed)
        rows.append({"model": "xgboost", **score_metrics(prepared.test, scores)})
    return [r if "headroom_share" in r else with_headroom(r, oracle) for r in rows], oracle


def reference_scores(
    prepared: Prepared, tasks: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The references as test scores, for tables with figures of their own (per scenario,
    per platform, global AUC): ({row name: scores [n_test, len(tasks)]}, {row name: info}).
    Rows: oracle_<ranking> (generated logs only; each task as the oracle ranks it, so
    purchase is P(click) x P(purchase | click), a pCTCVR) and logreg_per_top (one regression
    per task column of prepared's labels)."""
    scores, info = {}, {}
    if has_oracle(prepared.data_dir):
        oracle = read_oracle(prepared.data_dir, prepared.test_frame.index)
        by_task = [oracle_scores(oracle, task) for task in tasks]
        for ranking in RANKINGS:
            scores[f"oracle_{ranking}"] = np.stack([s[ranking] for s in by_task], axis=1)
    fits = [
        baselines.per_top_logistic(
            prepared.spec, prepared.train, prepared.valid, prepared.test, task=t
        )
        for t in range(len(tasks))
    ]
    scores["logreg_per_top"] = np.stack([s for s, _ in fits], axis=1)
    info["logreg_per_top"] = {f"{task}_C": i["C"] for task, (_, i) in zip(tasks, fits)}
    return scores, info


def add_headroom_shares(rows: list[dict], metric: str, key: str) -> list[dict]:
    """Each row plus "headroom_share" of its `metric`, against the oracle_<ranking> rows with
    the same `key` (scenario, platform, ...): NaN where no oracle row shares its key."""
    oracle: dict = {}
    for row in rows:
        if row["model"].startswith("oracle_"):
            oracle.setdefault(row[key], {})[row["model"].removeprefix("oracle_")] = row
    return [
        {
            **row,
            "headroom_share": (
                headroom_share(row[metric], oracle[row[key]], metric)
                if {"blind_global", "blind_sub"} <= set(oracle.get(row[key], ()))
                else float("nan")
            ),
        }
        for row in rows
    ]


def print_table(title: str, rows: list[dict], names, figures=FIGURES) -> dict:
    """Print mean ± std per model (in `names` order, references first) of `figures` and the
    headroom share; return the summary {model: {figure: "mean ± std"}}."""
    from training.experiments.common import mean_std

    summary = {}
    print(f"\n{title}")
    print(f"{'model':<18} " + " ".join(f"{f:<17}" for f in (*figures, "headroom_share")))
    for name in names:
        mine = [r for r in rows if r["model"] == name]
        if not mine:
            continue
        cells = {f: mean_std([r[f] for r in mine]) for f in (*figures, "headroom_share")}
        summary[name] = cells
        print(f"{name:<18} " + " ".join(f"{c:<17}" for c in cells.values()))
    return summary


def model_order(rows: list[dict], models) -> list[str]:
    """References first (as they appear in rows), then `models`."""
    references = [r["model"] for r in rows if r["model"] not in models]
    return list(dict.fromkeys([*references, *models]))
