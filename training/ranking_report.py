"""Ranking figures that say what they were computed on: one report for training's
metrics.json and for `python -m training.evaluate`, for a model and its baselines alike.

Every figure is of one score (the ranking) on one split's groups. One-item groups are left
out (any score ranks them perfectly), and the report says how many. NDCG@k uses the graded
gain (`relevance` = grade - the lowest grade) when the spec has a graded label, else the
first task's 0/1 label; it averages the groups with at least one relevant row. Session AUC
is computed per task label, over the groups with both classes.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from contract import schema
from training.data.spec import DataSpec
from training.metrics import breakdown, ndcg_at_k, per_session_auc, per_session_ndcg

KS = (5, 10)
SIZE_BUCKETS = ((2, 10), (11, 30), (31, 10**9))


def multi_item(frame: pd.DataFrame) -> np.ndarray:
    """[n] True for rows of groups with two or more rows."""
    groups = frame[schema.SESSION_ID]
    return (groups.map(groups.value_counts()) >= 2).to_numpy()


def gain_of(spec: DataSpec, frame: pd.DataFrame) -> tuple[np.ndarray, str]:
    if spec.labels.graded is not None:
        low = spec.labels.graded.range[0]
        return frame[schema.RELEVANCE].to_numpy(np.float64), f"grade - {low:g}"
    task = spec.labels.tasks[0]
    return frame[task].to_numpy(np.float64), f"{task} (0/1)"


def ranking_figures(
    spec: DataSpec, frame: pd.DataFrame, scores: np.ndarray, ks: tuple[int, ...] = KS
) -> dict:
    """NDCG@k and session AUC per task of `scores` [n] on `frame`'s rows (one split)."""
    keep = multi_item(frame)
    rows, score = frame[keep], np.asarray(scores, np.float64)[keep]
    groups = rows[schema.SESSION_ID].to_numpy()
    gain, gain_said = gain_of(spec, rows)
    figures: dict = {}
    for k in ks:
        figures[f"ndcg@{k}"] = ndcg_at_k(gain, score, groups, k=k)
    figures["ndcg_groups"] = per_session_ndcg(gain, score, groups, k=ks[0]).n_used
    for task in spec.labels.tasks:
        auc = per_session_auc(rows[task].to_numpy(), score, groups)
        figures[f"session_auc:{task}"] = auc.mean()
        figures[f"session_auc_groups:{task}"] = auc.n_used
    figures["on"] = {
        "rows": int(keep.sum()),
        "groups": int(pd.unique(groups).size),
        "one_item_groups_left_out": int(frame[schema.SESSION_ID][~keep].nunique()),
        "gain": gain_said,
    }
    return figures


def group_breakdown(spec: DataSpec, frame: pd.DataFrame, scores: np.ndarray, k: int) -> dict:
    """NDCG@k per value of each request field the data has (category, ...), else per
    list-size bucket: {field: {value: [mean, groups]}}."""
    keep = multi_item(frame)
    rows, score = frame[keep], np.asarray(scores, np.float64)[keep]
    groups = rows[schema.SESSION_ID].to_numpy()
    gain, _ = gain_of(spec, rows)
    metric = partial(per_session_ndcg, k=k)
    fields = [f for f in ("query_category", "top_category", "scenario", "platform") if f in rows]
    keys = {f: np.asarray(rows[f].fillna("<missing>"), dtype=str) for f in fields}
    if not keys:
        sizes = rows[schema.SESSION_ID].map(rows[schema.SESSION_ID].value_counts()).to_numpy()
        bucket = np.full(len(rows), "", dtype=object)
        for low, high in SIZE_BUCKETS:
            bucket[(sizes >= low) & (sizes <= high)] = (
                f"{low}-{high}" if high < 10**9 else f"{low}+"
            )
        keys = {"list_size": bucket.astype(str)}
    return {
        field: {str(v): [m, n] for v, (m, n) in breakdown(gain, score, groups, key, metric).items()}
        for field, key in keys.items()
    }
