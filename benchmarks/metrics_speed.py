"""Speed of the vectorised session metrics against a per-session scikit-learn loop.

Synthetic data: ``--sessions`` sessions of 10-100 items (about 1.1M rows for 20k sessions), rows
shuffled so sessions interleave. The vectorised metrics run on all rows (best of ``--repeats``);
the sklearn loop runs on ``--naive-sessions`` sessions and is extrapolated per session.

    python benchmarks/metrics_speed.py [--sessions 20000] [--naive-sessions 500]

Writes results/metrics_speed.json.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
from sklearn.metrics import ndcg_score, roc_auc_score

from training.metrics import per_session_auc, per_session_ndcg
from training.results import write_results


def make_sessions(n_sessions: int, seed: int):
    """labels (n,) 0/1, scores (n,) float, groups (n,) int64; sessions interleaved."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(10, 101, n_sessions)
    groups = np.repeat(rng.permutation(n_sessions).astype(np.int64), sizes)
    scores = rng.normal(size=groups.size)
    labels = (rng.random(groups.size) < 1 / (1 + np.exp(2.5 - scores))).astype(np.int64)
    perm = rng.permutation(groups.size)
    return labels[perm], scores[perm], groups[perm]


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def naive_auc(labels, scores):
    return roc_auc_score(labels, scores) if 0 < labels.sum() < labels.size else np.nan


def naive_ndcg10(labels, scores):
    return ndcg_score(labels[None], scores[None], k=10) if labels.sum() > 0 else np.nan


def naive_loop(score_one, labels, scores, groups):
    """Per-session sklearn calls on rows pre-split by session (the split is not timed)."""
    order = np.argsort(groups, kind="stable")
    starts = np.flatnonzero(np.diff(groups[order], prepend=groups[order][0] - 1))
    split = [(labels[idx], scores[idx]) for idx in np.split(order, starts[1:])]

    def run():
        return np.array([score_one(y, s) for y, s in split])

    return run, len(split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--naive-sessions", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    labels, scores, groups = make_sessions(args.sessions, args.seed)
    subset = groups < args.naive_sessions  # session ids are 0..n-1
    cases = [
        ("session_auc", per_session_auc, naive_auc),
        ("ndcg@10", functools.partial(per_session_ndcg, k=10), naive_ndcg10),
    ]
    rows = []
    for name, vectorised, score_one in cases:
        seconds = best_time(lambda v=vectorised: v(labels, scores, groups), args.repeats)
        sub = (labels[subset], scores[subset], groups[subset])
        run_naive, n_naive = naive_loop(score_one, *sub)
        naive_seconds = best_time(run_naive, 1)
        # Same values on the subset, so the two sides compute the same thing.
        diff = np.nanmax(np.abs(vectorised(*sub).values - run_naive()))
        naive_full = naive_seconds / n_naive * args.sessions
        rows.append(
            {
                "metric": name,
                "rows": int(labels.size),
                "sessions": args.sessions,
                "vectorised_s": round(seconds, 4),
                "naive_sessions_timed": n_naive,
                "naive_s_per_session": naive_seconds / n_naive,
                "naive_s_extrapolated": round(naive_full, 2),
                "speedup": round(naive_full / seconds, 1),
                "max_abs_diff_vs_sklearn": float(diff),
            }
        )
        print(
            f"{name:12s} {labels.size:,} rows / {args.sessions:,} sessions: "
            f"vectorised {seconds:.3f} s; sklearn loop {naive_seconds / n_naive * 1e3:.3f} ms"
            f"/session -> {naive_full:.1f} s extrapolated; speedup x{naive_full / seconds:.0f}; "
            f"max |diff| {diff:.1e}"
        )
    path = write_results("metrics_speed", rows, extra={"seed": args.seed})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
