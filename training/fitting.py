"""Prepare a data set once, fit any recipe on it, score rankings: the library behind
`python -m training.train`, the experiments, the default bundle and export's XGBoost
baseline. `prepare` turns a generated (or read) data directory into tensors; `fit` trains a
recipe on it, so experiments that compare models share one preparation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from contract import schema
from contract.features import FeatureSpec
from training.checkpoint import save_checkpoint
from training.dataset import TensorData, category_counts, split_sessions, to_tensors
from training.features import build_spec
from training.metrics import ndcg_at_k, session_auc
from training.models import registry
from training.trainer import TrainConfig, predict, seed_everything, train


@dataclass
class Prepared:
    spec: FeatureSpec
    train: TensorData
    valid: TensorData
    test: TensorData
    test_frame: pd.DataFrame
    data_dir: Path | None = None  # where the log (and a generated log's oracle) lives
    train_frame: pd.DataFrame | None = None  # kept for baselines that read raw columns


def prepare(
    data_dir: Path, tasks=("click",), text: bool = False, split_seed: int = 0, progress=True
) -> Prepared:
    """Read <data_dir>/impressions.parquet, split by session, build the feature spec on train."""
    data_dir = Path(data_dir)
    frame = pd.read_parquet(data_dir / "impressions.parquet")
    train_frame, valid_frame, test_frame = split_sessions(frame, seed=split_seed)
    tables, text_dim, encoder_id = None, 0, ""
    if text:
        from training.text_encoder import ENCODER_ID
        from training.text_tables import build_text_tables

        catalog = pd.read_parquet(data_dir / "catalog.parquet")
        tables = build_text_tables(frame, catalog, data_dir / "embeddings", progress)
        text_dim, encoder_id = tables.query_table.shape[1], ENCODER_ID
    spec = build_spec(train_frame, text_dim=text_dim, encoder_id=encoder_id)
    return Prepared(
        spec,
        *(to_tensors(spec, f, tasks, tables) for f in (train_frame, valid_frame, test_frame)),
        test_frame=test_frame,
        data_dir=data_dir,
    )


DEFAULT_TEST_ON = (
    "the test split (10% of sessions); P(first task) against the first task's labels; session "
    "AUC over sessions with both labels, NDCG over sessions with a positive (any length)"
)


def test_metrics(model, data: TensorData) -> dict[str, float]:
    """The papers' figures on the first task: session AUC, NDCG@10 and NDCG (whole list)."""
    return score_metrics(data, predict(model, data)[:, 0])


def score_metrics(data: TensorData, scores) -> dict[str, float]:
    """Session AUC, NDCG@10 and NDCG of `scores` [n] against the first task's labels."""
    labels = data.labels.numpy()[:, 0]
    return {
        "session_auc": session_auc(labels, scores, data.sessions),
        "ndcg_at_10": ndcg_at_k(labels, scores, data.sessions, k=10),
        "ndcg": ndcg_at_k(labels, scores, data.sessions),
    }


def fit(
    prepared: Prepared,
    model_name: str,
    overrides: dict | None = None,
    config: TrainConfig | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
    report: Callable[[torch.nn.Module], dict] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train a recipe; returns the model (best validation epoch) and its test metrics:
    `report(model)`'s figures, by default `test_metrics` (the first task, every session).
    With out_dir, writes train_log.jsonl, model.pt (a checkpoint) and metrics.json."""
    config = config or TrainConfig()
    seed_everything(config.seed)
    model_config = registry.config_for(model_name, **(overrides or {}))
    has_category = schema.QUERY_CATEGORY in {f.name for f in prepared.spec.request_categorical}
    counts = category_counts(prepared.spec, prepared.train) if has_category else None
    model = registry.build(registry.family_of_name(model_name), model_config, prepared.spec, counts)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    result = train(model, prepared.train, prepared.valid, config, out_dir, progress)
    metrics = {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "valid_session_auc": result.best_valid_auc,
        "test": report(model) if report else test_metrics(model, prepared.test),
        "test_on": "a report of its own (see test)" if report else DEFAULT_TEST_ON,
        "history": [
            {
                "epoch": r["epoch"],
                "task_loss": round(r["task_loss"], 6),
                "lr": r["lr"],
                "valid_session_auc": round(r["valid"]["mean_session_auc"], 6),
            }
            for r in result.history
        ],
    }
    if out_dir:
        save_checkpoint(out_dir / "model.pt", model_name, model, prepared.spec, metrics, counts)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return model, metrics
