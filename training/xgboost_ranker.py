"""The XGBoost ranker baseline (mlpr Table 2 and Table 5): one rank:pairwise model per task,
grouped by session, on the wide features only (no text embeddings, as the paper's baseline)."""

from __future__ import annotations

import numpy as np

from training.dataset import TensorData


def wide_features(data: TensorData) -> np.ndarray:
    return wide_rows(data.numeric.numpy(), data.request_cat.numpy(), data.item_cat.numpy())


def wide_rows(numeric: np.ndarray, request_cat: np.ndarray, item_cat: np.ndarray) -> np.ndarray:
    """[n, f + r + c]: raw numeric features, then request and item category codes (the order
    the exported graph builds from the service's three inputs)."""
    return np.hstack([p.astype(np.float32) for p in (numeric, request_cat, item_cat)])


def fit_rankers(train: TensorData, seed: int, rounds: int = 200) -> list:
    """One XGBRanker per label column of `train`."""
    from xgboost import XGBRanker

    order = np.argsort(train.sessions, kind="stable")  # XGBoost wants each group contiguous
    _, qid = np.unique(train.sessions[order], return_inverse=True)
    features = wide_features(train)[order]
    rankers = []
    for t in range(train.labels.shape[1]):
        ranker = XGBRanker(
            objective="rank:pairwise",
            n_estimators=rounds,
            max_depth=6,
            learning_rate=0.1,
            subsample=0.8,
            colsample_bytree=0.8,
            tree_method="hist",
            random_state=seed,
            n_jobs=2,
        )
        ranker.fit(features, train.labels.numpy()[order, t], qid=qid)
        rankers.append(ranker)
    return rankers


def margins(rankers: list, wide: np.ndarray) -> np.ndarray:
    """[n, T] ranking margins of wide feature rows (the service reports their sigmoid)."""
    return np.stack([ranker.predict(wide) for ranker in rankers], axis=1)
