"""training.metrics against scikit-learn on random cases, and against hand-computed examples."""

from __future__ import annotations

import doctest
import functools
import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, ndcg_score, roc_auc_score

from training import metrics
from training.metrics import (
    breakdown,
    global_auc,
    logloss,
    ndcg_at_k,
    per_session_auc,
    per_session_ndcg,
    session_auc,
    size_buckets,
)

SEEDS = (0, 1, 2, 3)
TOL = 1e-9


def random_sessions(seed: int, n_sessions: int = 150, min_size: int = 1, max_levels: int = 2):
    """Rows of random sessions, shuffled so sessions interleave, with sparse non-sorted ids.

    Scores are discretised to 4 levels so ties are common; labels have ``max_levels`` grades.
    Returns labels (n,), scores (n,), groups (n,).
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_size, 13, n_sessions)
    ids = rng.choice(10**6, n_sessions, replace=False)
    groups = np.repeat(ids, sizes)
    # Some sessions are all-negative: scale each session's positive rate.
    rate = np.repeat(rng.choice([0.0, 0.3, 0.6], n_sessions), sizes)
    labels = np.where(rng.random(groups.size) < rate, rng.integers(1, max_levels, groups.size), 0)
    scores = rng.integers(0, 4, groups.size) / 4
    perm = rng.permutation(groups.size)
    return labels[perm], scores[perm], groups[perm]


def sklearn_per_session(labels, scores, groups, score_one):
    """Reference loop: score_one(labels, scores) per session in np.unique order, NaN if None."""
    out = []
    for gid in np.unique(groups):
        rows = groups == gid
        value = score_one(labels[rows], scores[rows])
        out.append(np.nan if value is None else value)
    return np.array(out)


def sklearn_auc_or_none(y, s):
    return roc_auc_score(y, s) if len(np.unique(y)) == 2 else None


def sklearn_ndcg_or_none(y, s, k, gain="linear"):
    if y.sum() == 0 or y.size < 2:  # skipped sessions; sklearn refuses sessions of one row
        return None
    return ndcg_score((y if gain == "linear" else 2.0**y - 1)[None], s[None], k=k)


def test_docstring_examples_run():
    result = doctest.testmod(metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3
    assert result.failed == 0


# --- AUC -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_global_auc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 5000)
    continuous = rng.normal(size=5000) + labels
    tied = np.round(continuous, 1)
    assert np.unique(tied).size < 200  # ties are present
    for scores in (continuous, tied):
        assert abs(global_auc(labels, scores) - roc_auc_score(labels, scores)) < TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_per_session_auc_matches_sklearn_loop(seed):
    labels, scores, groups = random_sessions(seed)
    n_runs = 1 + np.count_nonzero(np.diff(groups))
    assert n_runs > 2 * np.unique(groups).size  # sessions are not contiguous
    ref = sklearn_per_session(labels, scores, groups, sklearn_auc_or_none)
    assert np.isnan(ref).any() and (~np.isnan(ref)).sum() > 20  # both kinds of session occur
    got = per_session_auc(labels, scores, groups)
    np.testing.assert_array_equal(got.groups, np.unique(groups))
    np.testing.assert_allclose(got.values, ref, rtol=0, atol=TOL)
    assert got.n_used == int((~np.isnan(ref)).sum())
    assert abs(session_auc(labels, scores, groups) - np.nanmean(ref)) < TOL


def test_session_auc_hand_example_excludes_one_class_and_single_row_sessions():
    labels = np.array([0, 0, 1, 1, 0, 1, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.5, 0.2, 0.3, 0.9, 0.7])
    groups = np.array(["a", "a", "a", "a", "b", "b", "c", "c", "d", "e"])
    # a: positives 0.35, 0.8 vs negatives 0.1, 0.4 -> 3 of 4 pairs; b: one tie -> 1/2;
    # c: positives only; d, e: one row each.
    got = per_session_auc(labels, scores, groups)
    assert list(got.groups) == ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(got.values, [0.75, 0.5, np.nan, np.nan, np.nan])
    assert got.n_used == 2
    assert session_auc(labels, scores, groups) == pytest.approx(0.625, abs=1e-15)


def test_session_auc_does_not_depend_on_row_order():
    labels, scores, groups = random_sessions(7)
    perm = np.random.default_rng(7).permutation(labels.size)
    a = per_session_auc(labels, scores, groups).values
    b = per_session_auc(labels[perm], scores[perm], groups[perm]).values
    np.testing.assert_array_equal(a, b)


def test_auc_rejects_graded_labels_and_nan_scores():
    with pytest.raises(ValueError, match="binary"):
        session_auc(np.array([0, 2]), np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="NaN"):
        session_auc(np.array([0, 1]), np.array([0.1, np.nan]), np.array([1, 1]))
    with pytest.raises(ValueError, match="both classes"):
        global_auc(np.array([1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="one length"):
        session_auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]), np.array([1, 1]))


# --- NDCG ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 5, 10, None])
@pytest.mark.parametrize("max_levels", [2, 4])  # binary, graded 0..3
def test_ndcg_matches_sklearn_loop(seed, k, max_levels):
    labels, scores, groups = random_sessions(seed, min_size=2, max_levels=max_levels)
    assert labels.max() == max_levels - 1
    ref = sklearn_per_session(labels, scores, groups, functools.partial(sklearn_ndcg_or_none, k=k))
    assert np.isnan(ref).any() and (~np.isnan(ref)).sum() > 20
    got = per_session_ndcg(labels, scores, groups, k=k)
    np.testing.assert_array_equal(got.groups, np.unique(groups))
    np.testing.assert_allclose(got.values, ref, rtol=0, atol=TOL)
    assert abs(ndcg_at_k(labels, scores, groups, k=k) - np.nanmean(ref)) < TOL


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 5, None])
def test_exponential_gain_ndcg_is_sklearn_on_transformed_relevance(seed, k):
    labels, scores, groups = random_sessions(seed, min_size=2, max_levels=4)
    ref = sklearn_per_session(
        labels, scores, groups, functools.partial(sklearn_ndcg_or_none, k=k, gain="exp")
    )
    got = per_session_ndcg(labels, scores, groups, k=k, gain="exp").values
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)
    linear = per_session_ndcg(labels, scores, groups, k=k).values
    assert np.nanmax(np.abs(got - linear)) > 1e-3  # the two gains differ on graded labels


def test_ndcg_hand_example():
    labels = np.array([1, 0, 1, 0, 0, 1, 1])
    scores = np.array([0.9, 0.8, 0.1, 0.5, 0.4, 0.3, 0.3])
    groups = np.array([2, 2, 2, 5, 5, 9, 9])
    # Session 2: DCG = 1 + 1/log2(4) = 1.5, ideal = 1 + 1/log2(3). Session 5: no relevant row.
    # Session 9: two tied relevant rows -> 1.
    got = per_session_ndcg(labels, scores, groups)
    np.testing.assert_allclose(got.values, [1.5 / (1 + 1 / math.log2(3)), np.nan, 1.0], atol=1e-15)
    assert got.n_used == 2
    # NDCG@1 of session 2 is 1; with graded gain a tie of grades 3 and 0 at the top averages.
    assert per_session_ndcg(labels, scores, groups, k=1).values[0] == 1.0
    tie = per_session_ndcg(np.array([3, 0, 1]), np.array([0.5, 0.5, 0.1]), np.zeros(3), k=1)
    assert tie.values[0] == pytest.approx(1.5 / 3, abs=1e-15)
    exp_tie = per_session_ndcg(
        np.array([3, 0, 1]), np.array([0.5, 0.5, 0.1]), np.zeros(3), k=1, gain="exp"
    )
    assert exp_tie.values[0] == pytest.approx(3.5 / 7, abs=1e-15)


def test_ndcg_single_row_sessions():
    got = per_session_ndcg(np.array([1, 0, 2]), np.array([0.3, 0.2, 0.1]), np.array([1, 2, 3]))
    np.testing.assert_array_equal(got.values, [1.0, np.nan, 1.0])


def test_ndcg_rejects_bad_options():
    args = (np.array([1, 0]), np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="gain"):
        per_session_ndcg(*args, gain="exponential")
    with pytest.raises(ValueError, match="k must"):
        per_session_ndcg(*args, k=0)
    with pytest.raises(ValueError, match="non-negative"):
        per_session_ndcg(np.array([-1, 0]), args[1], args[2])


# --- log loss --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_logloss_matches_sklearn_including_clipped_extremes(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 3000)
    probs = rng.random(3000)
    probs[:20] = 0.0  # log(0) without clipping
    probs[20:40] = 1.0
    assert logloss(labels, probs) == pytest.approx(log_loss(labels, probs), rel=0, abs=TOL)
    assert np.isfinite(logloss(labels, probs))


def test_logloss_hand_example_and_eps():
    labels, probs = np.array([1, 0]), np.array([0.8, 0.0])
    assert logloss(labels, probs) == pytest.approx(-math.log(0.8) / 2, abs=1e-15)
    assert logloss(labels, np.array([0.8, 1.0]), eps=1e-3) == pytest.approx(
        -(math.log(0.8) + math.log(1e-3)) / 2, abs=1e-12
    )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        logloss(labels, np.array([0.5, 1.5]))


# --- breakdown and size buckets ---------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_breakdown_matches_metric_on_each_key_subset(seed):
    labels, scores, groups = random_sessions(seed, min_size=2)
    rng = np.random.default_rng(seed)
    # Keys are per session (like query category), plus some per-row noise that splits sessions.
    session_key = dict(
        zip(np.unique(groups), rng.choice(["tv", "audio", "phone"], 150), strict=True)
    )
    keys = np.array([session_key[g] for g in groups])
    keys[rng.random(keys.size) < 0.05] = "other"
    ndcg10 = functools.partial(per_session_ndcg, k=10)
    for metric in (per_session_auc, ndcg10):
        got = breakdown(labels, scores, groups, keys, metric=metric)
        assert list(got) == sorted(set(keys))
        for key, (value, n_sessions) in got.items():
            rows = keys == key
            expected = metric(labels[rows], scores[rows], groups[rows])
            assert n_sessions == expected.n_used
            assert value == pytest.approx(expected.mean(), rel=0, abs=TOL, nan_ok=True)
        assert min(got[key][1] for key in ("tv", "audio", "phone")) > 10


def test_breakdown_hand_example_with_undefined_key():
    labels = np.array([0, 1, 0, 1, 1, 1])
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.5, 0.6])
    groups = np.array([1, 1, 2, 2, 3, 3])
    keys = np.array([10, 10, 10, 10, 20, 20])
    got = breakdown(labels, scores, groups, keys)  # per-session AUC by default
    assert got[10] == (0.5, 2)
    assert math.isnan(got[20][0]) and got[20][1] == 0


def test_size_buckets_equal_counts_and_ties():
    rng = np.random.default_rng(0)
    counts = rng.permutation(np.arange(1, 101) * 7)  # distinct sizes
    buckets = size_buckets(counts, 4)
    np.testing.assert_array_equal(np.bincount(buckets), [25, 25, 25, 25])
    # Bigger categories never land in a smaller bucket.
    order = np.argsort(counts)
    assert (np.diff(buckets[order]) >= 0).all()
    tied = size_buckets(np.array([1, 2, 2, 2, 3, 4]), 3)
    np.testing.assert_array_equal(tied, [0, 0, 0, 0, 2, 2])
