"""Strong simple baselines every experiment table carries beside its networks.

- `per_top_logistic`: one ridge-penalised logistic regression per top-category (scikit-learn)
  on the networks' inputs: the z-scored numeric features, one-hot scenario and platform,
  their products with the numeric features (the simulator's scenario and platform weight
  shifts are linear in them), and whether the item is from the query's sub-category (a
  cross of two categorical inputs the networks also read). The penalty C is chosen on the
  validation split from a small grid, never on the test split.
- `xgboost`: the pairwise XGBoost ranker of `xgboost_ranker` (wide features).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from contract import schema
from contract.features import FeatureSpec
from training.dataset import TensorData
from training.metrics import session_auc

C_GRID = (0.01, 1.0)


def design_matrix(spec: FeatureSpec, data: TensorData) -> np.ndarray:
    """[n, d] float64 inputs of the logistic regression (see the module docstring)."""
    numeric = data.numeric.numpy().astype(np.float64)
    mean = np.array([f.mean for f in spec.numeric])
    std = np.array([f.std for f in spec.numeric])
    z = (numeric - mean) / std
    parts = [z]
    for name in (schema.SCENARIO, schema.PLATFORM):
        column = spec.request_field(name)
        one_hot = np.eye(spec.request_categorical[column].cardinality)[
            data.request_cat[:, column].numpy()
        ]
        parts += [one_hot, (one_hot[:, :, None] * z[:, None, :]).reshape(len(z), -1)]
    parts.append(same_sub_category(spec, data)[:, None])
    return np.hstack(parts)


def same_sub_category(spec: FeatureSpec, data: TensorData) -> np.ndarray:
    """[n] 1.0 where the item's category is the query's sub-category."""
    query_field = spec.request_categorical[spec.request_field(schema.QUERY_CATEGORY)]
    item_names = [f.name for f in spec.item_categorical]
    item_field = spec.item_categorical[item_names.index("item_category")]
    query = np.array(("<oov>", *query_field.vocab), dtype=object)[
        data.request_cat[:, spec.request_field(schema.QUERY_CATEGORY)].numpy()
    ]
    item = np.array(("<oov-item>", *item_field.vocab), dtype=object)[
        data.item_cat[:, item_names.index("item_category")].numpy()
    ]
    return (query == item).astype(np.float64)


def _groups(spec: FeatureSpec, data: TensorData) -> np.ndarray:
    return data.request_cat[:, spec.request_field(schema.TOP_CATEGORY)].numpy()


def _fit(x, y, c: float) -> LogisticRegression | None:
    """None for a top-category without both labels (its rows score 0: no ranking)."""
    if y.min() == y.max():
        return None
    return LogisticRegression(C=c, max_iter=300).fit(x, y)


def per_top_logistic(
    spec: FeatureSpec, train: TensorData, valid: TensorData, test: TensorData, task: int = 0
) -> tuple[np.ndarray, dict]:
    """Test scores [n_test] of per-top-category logistic regressions on label column `task`,
    with C from C_GRID by validation session AUC; and {"C": chosen, "valid_session_auc"}."""
    x = {name: design_matrix(spec, d) for name, d in (("train", train), ("valid", valid))}
    x["test"] = design_matrix(spec, test)
    group = {
        "train": _groups(spec, train),
        "valid": _groups(spec, valid),
        "test": _groups(spec, test),
    }
    y = train.labels.numpy()[:, task]
    x_mean, x_std = x["train"].mean(0), x["train"].std(0) + 1e-9
    x = {k: (v - x_mean) / x_std for k, v in x.items()}

    valid_labels = valid.labels.numpy()[:, task]
    best = (-1.0, None, None)
    for c in C_GRID:  # one fit per top-category and C, scoring validation and test
        out = {"valid": np.zeros(len(x["valid"])), "test": np.zeros(len(x["test"]))}
        for g in np.unique(group["train"]):
            rows = group["train"] == g
            model = _fit(x["train"][rows], y[rows], c)
            for split in out:
                mine = group[split] == g
                if model is not None and mine.any():
                    out[split][mine] = model.decision_function(x[split][mine])
        auc = session_auc(valid_labels, out["valid"], valid.sessions)
        if auc > best[0]:
            best = (auc, c, out["test"])
    return best[2], {"C": best[1], "valid_session_auc": best[0]}


def xgboost(train: TensorData, test: TensorData, task: int = 0, seed: int = 0) -> np.ndarray:
    """Test scores [n_test] of the pairwise XGBoost ranker on label column `task`."""
    from training.xgboost_ranker import fit_rankers, margins, wide_features

    one_task = TensorData(
        train.request_cat, train.item_cat, train.numeric, train.labels[:, task : task + 1],
        train.sessions,
    )  # fmt: skip
    return margins(fit_rankers(one_task, seed), wide_features(test))[:, 0]
