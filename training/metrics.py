"""Ranking metrics as plain functions over flat arrays: one row per impression.

Every function takes 1-D arrays of one length ``n`` (``labels``, ``scores``, ``groups``) in any
row order: rows of a session need not be contiguous. They are vectorised: one sort by
(session, score), then per-session sums with ``np.bincount``; no Python loop over sessions.

Per-session metrics come in two forms: ``per_session_*`` returns a :class:`PerSession` (one value
per session, NaN where the metric is undefined) and the plain name returns the mean over the
sessions where it is defined, which is what the papers report.

>>> labels = np.array([0, 1, 1, 0, 0, 1])
>>> scores = np.array([0.2, 0.9, 0.1, 0.3, 0.5, 0.5])
>>> groups = np.array([7, 7, 7, 3, 3, 3])
>>> per_session_auc(labels, scores, groups).values  # sessions 3 and 7, as np.unique orders them
array([0.75, 0.5 ])
>>> session_auc(labels, scores, groups)
0.625
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class PerSession:
    """One metric value per session.

    ``groups``: shape (n_sessions,), the distinct session ids, sorted as ``np.unique`` sorts them.
    ``values``: shape (n_sessions,), float; NaN where the metric is undefined for the session.
    """

    groups: np.ndarray
    values: np.ndarray

    @property
    def n_used(self) -> int:
        """Number of sessions where the metric is defined (the sessions the mean averages)."""
        return int(np.count_nonzero(~np.isnan(self.values)))

    def mean(self) -> float:
        """Mean over the sessions where the metric is defined; NaN if there are none."""
        defined = self.values[~np.isnan(self.values)]
        return float(defined.mean()) if defined.size else float("nan")


@dataclass(frozen=True)
class _SortedSessions:
    """Rows sorted by (session, score); ``order`` maps sorted position -> input row.

    Sessions are numbered 0..n_sessions-1 in sorted order and tie blocks (rows of one session
    with equal scores) 0..n_blocks-1; every array below is in sorted row order.
    """

    order: np.ndarray  # (n,)
    session: np.ndarray  # (n,) session number of each row
    position: np.ndarray  # (n,) 0-based position within its session
    block: np.ndarray  # (n,) tie-block number of each row
    block_starts: np.ndarray  # (n_blocks,) sorted position of each block's first row
    session_ids: np.ndarray  # (n_sessions,)
    sizes: np.ndarray  # (n_sessions,)


def _check_1d(**arrays: np.ndarray) -> None:
    lengths = {name: np.shape(a) for name, a in arrays.items()}
    shapes = set(lengths.values())
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"expected 1-D arrays of one length, got shapes {lengths}")


def _binary(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be binary (0/1 or bool); binarise graded labels first")
    return labels.astype(np.float64)


def _float_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


def _sort_sessions(scores: np.ndarray, groups: np.ndarray, descending: bool) -> _SortedSessions:
    order = np.lexsort((-scores if descending else scores, groups))
    g, s = groups[order], scores[order]
    n = len(order)
    new_session = np.ones(n, dtype=bool)
    new_session[1:] = g[1:] != g[:-1]
    new_block = new_session.copy()
    new_block[1:] |= s[1:] != s[:-1]
    session_starts = np.flatnonzero(new_session)
    session = np.cumsum(new_session) - 1
    return _SortedSessions(
        order=order,
        session=session,
        position=np.arange(n) - session_starts[session],
        block=np.cumsum(new_block) - 1,
        block_starts=np.flatnonzero(new_block),
        session_ids=g[session_starts],
        sizes=np.diff(np.append(session_starts, n)),
    )


def per_session_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> PerSession:
    """ROC AUC of each session (Mann-Whitney U over average ranks, so ties count 1/2 as in sklearn).

    labels: (n,) binary; scores: (n,) float, higher = more likely positive; groups: (n,) session
    ids of any sortable dtype. Returns one value per session, NaN for sessions with one class only
    (including sessions of one row).
    """
    _check_1d(labels=labels, scores=scores, groups=groups)
    y, scores, groups = _binary(labels), _float_scores(scores), np.asarray(groups)
    if y.size == 0:
        return PerSession(groups[:0], np.empty(0))
    ss = _sort_sessions(scores, groups, descending=False)
    y = y[ss.order]
    # Average 1-based rank of a tie block = mean of its first and last ranks.
    block_ends = np.append(ss.block_starts[1:], y.size) - 1
    block_rank = (ss.position[ss.block_starts] + ss.position[block_ends]) / 2 + 1
    n_sessions = ss.sizes.size
    n_pos = np.bincount(ss.session, weights=y, minlength=n_sessions)
    n_neg = ss.sizes - n_pos
    positive_rank_sum = np.bincount(
        ss.session, weights=y * block_rank[ss.block], minlength=n_sessions
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (positive_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return PerSession(ss.session_ids, auc)


def session_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Session AUC (GAUC; the papers' "AUC"): mean per-session ROC AUC over sessions with both
    classes. Shapes as :func:`per_session_auc`; the session count is its ``.n_used``."""
    return per_session_auc(labels, scores, groups).mean()


def global_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC over all rows, ties as in ``sklearn.metrics.roc_auc_score``.

    labels: (n,) binary with both classes present; scores: (n,) float.
    """
    auc = per_session_auc(labels, scores, np.zeros(np.shape(labels), dtype=np.int8)).values
    if auc.size != 1 or np.isnan(auc[0]):
        raise ValueError("global AUC needs both classes in labels")
    return float(auc[0])


def per_session_ndcg(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    k: int | None = None,
    gain: Literal["linear", "exp"] = "linear",
) -> PerSession:
    """NDCG@k of each session, log2 discount, tied scores averaged as sklearn's ``ndcg_score``.

    labels: (n,) non-negative relevance (binary or graded); scores: (n,) float; groups: (n,)
    session ids. ``k=None`` uses the whole session. ``gain="linear"`` uses the relevance itself,
    as ``sklearn.metrics.ndcg_score`` does; ``gain="exp"`` uses 2**rel - 1 (Burges et al. 2005),
    which weighs high grades more; both agree on binary labels. A tie block of scores gets the
    mean gain of its rows times the sum of its positions' discounts (McSherry & Najork 2008).
    Sessions whose ideal DCG is 0 (no relevant row) are NaN, so means skip them; sklearn instead
    scores them 0. Returns one value per session.
    """
    _check_1d(labels=labels, scores=scores, groups=groups)
    if k is not None and (int(k) != k or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    if gain not in ("linear", "exp"):
        raise ValueError(f'gain must be "linear" or "exp", got {gain!r}')
    rel = np.asarray(labels, dtype=np.float64)
    if (rel < 0).any():
        raise ValueError("NDCG needs non-negative relevance labels")
    scores, groups = _float_scores(scores), np.asarray(groups)
    if rel.size == 0:
        return PerSession(groups[:0], np.empty(0))
    ss = _sort_sessions(scores, groups, descending=True)
    row_gain = (rel if gain == "linear" else np.exp2(rel) - 1)[ss.order]
    # Computed as sklearn does (1 / log_2(position + 1)), so values agree to the last bits.
    discount = 1 / (np.log(ss.position + 2) / np.log(2))
    if k is not None:
        discount[ss.position >= k] = 0
    n_sessions, n_blocks = ss.sizes.size, ss.block_starts.size
    block_mean_gain = np.bincount(ss.block, weights=row_gain, minlength=n_blocks) / np.bincount(
        ss.block, minlength=n_blocks
    )
    block_discount = np.bincount(ss.block, weights=discount, minlength=n_blocks)
    block_session = ss.session[ss.block_starts]
    dcg = np.bincount(block_session, weights=block_mean_gain * block_discount, minlength=n_sessions)
    # Ideal DCG: same sessions at the same sorted positions, rows reordered by gain.
    ideal_gain = row_gain[np.lexsort((-row_gain, ss.session))]
    ideal_dcg = np.bincount(ss.session, weights=ideal_gain * discount, minlength=n_sessions)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndcg = np.where(ideal_dcg > 0, dcg / ideal_dcg, np.nan)
    return PerSession(ss.session_ids, ndcg)


def ndcg_at_k(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    k: int | None = None,
    gain: Literal["linear", "exp"] = "linear",
) -> float:
    """Mean NDCG@k over sessions with at least one relevant row. Arguments and shapes as
    :func:`per_session_ndcg`; the session count is its ``.n_used``."""
    return per_session_ndcg(labels, scores, groups, k=k, gain=gain).mean()


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float | None = None) -> float:
    """Mean binary cross-entropy (natural log), as ``sklearn.metrics.log_loss``.

    labels: (n,) binary; probs: (n,) predicted P(label = 1) in [0, 1]. Probabilities are clipped
    to [eps, 1 - eps]; ``eps=None`` is float64 machine epsilon, sklearn's choice.
    """
    _check_1d(labels=labels, probs=probs)
    y = _binary(labels)
    p = np.asarray(probs, dtype=np.float64)
    if y.size == 0:
        raise ValueError("logloss of no rows")
    if p.min() < 0 or p.max() > 1:
        raise ValueError("probs must lie in [0, 1]")
    eps = np.finfo(np.float64).eps if eps is None else eps
    # Clip p and 1 - p separately, as sklearn clips both columns of [1 - p, p].
    p_label = np.where(y == 1, np.clip(p, eps, 1 - eps), np.clip(1 - p, eps, 1 - eps))
    return float(-np.log(p_label).mean())


def breakdown(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    keys: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray, np.ndarray], PerSession] = per_session_auc,
) -> dict[object, tuple[float, int]]:
    """A per-session metric broken down by a row attribute (category, scenario, size bucket).

    labels, scores, groups, keys: (n,). ``metric`` is a per-session function such as
    :func:`per_session_auc` or ``functools.partial(per_session_ndcg, k=10)``. Rows are split by
    (key, session), so a session whose rows carry several keys counts once under each.
    Returns {key: (mean over the key's sessions where the metric is defined, their number)}, one
    entry per distinct key in sorted order; the mean is NaN when the number is 0.
    """
    _check_1d(labels=labels, scores=scores, groups=groups, keys=keys)
    key_ids, key_codes = np.unique(np.asarray(keys), return_inverse=True)
    session_ids, session_codes = np.unique(np.asarray(groups), return_inverse=True)
    # One composite session per (key, session): a single metric call covers every key.
    composite = key_codes.astype(np.int64) * session_ids.size + session_codes
    result = metric(labels, scores, composite)
    defined = ~np.isnan(result.values)
    key_of_session = result.groups[defined] // session_ids.size
    sums = np.bincount(key_of_session, weights=result.values[defined], minlength=key_ids.size)
    counts = np.bincount(key_of_session, minlength=key_ids.size)
    return {
        key.item(): (float(s / c) if c else float("nan"), int(c))
        for key, s, c in zip(key_ids, sums, counts, strict=True)
    }


def size_buckets(counts: np.ndarray, n_buckets: int) -> np.ndarray:
    """Bucket categories by training size into ``n_buckets`` quantile buckets of about equal
    numbers of categories (the x-axis of the paper's Figure 5); bucket 0 holds the smallest.

    counts: (n_categories,) training rows per category. Returns (n_categories,) int bucket
    indices. Equal counts always share a bucket, so heavy ties can leave buckets uneven or empty.

    >>> size_buckets(np.array([5, 1, 3, 100, 7, 2]), 3)
    array([1, 0, 1, 2, 2, 0])
    """
    counts = np.asarray(counts)
    if counts.ndim != 1:
        raise ValueError("counts must be 1-D")
    if n_buckets < 1:
        raise ValueError("n_buckets must be at least 1")
    # Rank of a count = number of strictly smaller counts, so ties share a rank.
    rank = np.searchsorted(np.sort(counts), counts, side="left")
    return (rank * n_buckets // max(counts.size, 1)).astype(np.int64)
