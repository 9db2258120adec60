"""What the mlpr experiments share: the XGBoost ranker baseline, per-task metric rows, lifts
over XGBoost, one model per task (MLP_single), and the neural runs over seeds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from training.dataset import TensorData
from training.experiments.common import mean_std
from training.fitting import Prepared, fit
from training.metrics import global_auc, ndcg_at_k, session_auc
from training.trainer import TrainConfig, predict
from training.xgboost_ranker import fit_rankers, margins, wide_features

METRICS = ("auc", "session_auc", "ndcg_at_1", "ndcg_at_5")


def task_metrics(labels: np.ndarray, scores: np.ndarray, sessions: np.ndarray) -> dict:
    """One task's figures. labels, scores, sessions: [n]. auc is the ROC AUC over all rows
    (the paper's prediction metric), session_auc its per-query mean; NDCG over queries with a
    positive (binary labels; graded relevance for NDCG only when the labels are graded)."""
    binary = np.isin(labels, (0, 1)).all()
    both = binary and 0 < labels.sum() < len(labels)
    return {
        "auc": global_auc(labels, scores) if both else float("nan"),
        "session_auc": session_auc(labels, scores, sessions) if binary else float("nan"),
        "ndcg_at_1": ndcg_at_k(labels, scores, sessions, k=1),
        "ndcg_at_5": ndcg_at_k(labels, scores, sessions, k=5),
    }


def metric_rows(model: str, seed: int, tasks, labels, scores, sessions, **extra) -> list[dict]:
    """labels, scores [n, T] -> one row per task: {model, seed, task, **extra, metrics}."""
    return [
        {"model": model, "seed": seed, "task": task, **extra,
         **task_metrics(labels[:, t], scores[:, t], sessions)}
        for t, task in enumerate(tasks)
    ]  # fmt: skip


def summarise(rows: list[dict], key: str = "model") -> dict:
    """{key value: {task: {metric: "mean ± std"}}} over seeds (with the headroom share where
    the rows carry one)."""
    out: dict = {}
    for row in rows:
        out.setdefault(row[key], {}).setdefault(row["task"], []).append(row)
    return {
        name: {
            task: {
                m: mean_std([r[m] for r in rs]) for m in (*METRICS, "headroom_share") if m in rs[0]
            }
            for task, rs in tasks.items()
        }
        for name, tasks in out.items()
    }


def lifts(rows: list[dict], baseline: str = "xgboost", key: str = "model") -> dict:
    """Percentage lift of each mean over the baseline's mean (the paper's Table 2 figures):
    {key value: {task: {metric: 100 * (mean - base) / base}}}."""
    means: dict = {}
    for row in rows:
        for m in METRICS:
            means.setdefault((row[key], row["task"], m), []).append(row[m])
    out: dict = {}
    for (name, task, m), values in means.items():
        base = np.nanmean(means[(baseline, task, m)])
        lift = 100 * (np.nanmean(values) - base) / base
        out.setdefault(name, {}).setdefault(task, {})[m] = round(float(lift), 3)
    return out


def print_table(title: str, rows: list[dict], tasks, key: str = "model") -> None:
    summary = summarise(rows, key)
    print(f"\n{title}")
    print(f"{key:<40} {'task':<9} " + " ".join(f"{m:<17}" for m in (*METRICS, "headroom")))
    for name, per_task in summary.items():
        for task in tasks:
            if task in per_task:
                cells = " ".join(f"{cell:<17}" for cell in per_task[task].values())
                print(f"{name:<40} {task:<9} {cells}")


def xgboost_scores(prepared: Prepared, seed: int, rounds: int = 200) -> np.ndarray:
    """XGBoost ranker (training/xgboost_ranker.py) -> test scores [n, T]."""
    return margins(fit_rankers(prepared.train, seed, rounds), wide_features(prepared.test))


def with_tasks(prepared: Prepared, columns: list[int]) -> Prepared:
    """The same splits with only the given label columns (one model per task)."""

    def keep(data: TensorData) -> TensorData:
        return replace(data, labels=data.labels[:, columns])

    return replace(
        prepared, train=keep(prepared.train), valid=keep(prepared.valid), test=keep(prepared.test)
    )


def neural_scores(
    prepared: Prepared, name: str, tasks, options: dict, config: TrainConfig
) -> np.ndarray:
    """Train `name` (all tasks at once; `mlp_single` once per task) -> test scores [n, T]."""
    return neural_run(prepared, name, tasks, options, config)[0]


def neural_run(prepared: Prepared, name: str, tasks, options: dict, config: TrainConfig):
    """(test scores [n, T], the trained models: one, or one per task for `mlp_single`)."""
    if name != "mlp_single":
        model, _ = fit(prepared, name, {"tasks": tuple(tasks), **options}, config, progress=False)
        return predict(model, prepared.test), [model]
    columns, models = [], []
    for t, task in enumerate(tasks):
        single = with_tasks(prepared, [t])
        model, _ = fit(single, name, {"tasks": (task,), **options}, config, progress=False)
        columns.append(predict(model, single.test)[:, 0])
        models.append(model)
    return np.stack(columns, axis=1), models
