"""One trainer for every model: AdamW, deterministic seeds, early stopping on validation
session AUC, checkpoints, a JSON-lines training log."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm import tqdm

from training.dataset import TensorData
from training.metrics import session_auc
from training.models.protocol import Ranker


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 1024
    lr: float = 1e-4  # adv-hsc-moe §5.1.4
    weight_decay: float = 1e-2
    patience: int = 2  # epochs without a better validation session AUC before stopping
    # < 1: the learning rate is multiplied by it after each epoch without a better validation
    # session AUC (ReduceLROnPlateau, patience 0), so a run that stalls takes smaller steps
    lr_decay: float = 1.0
    seed: int = 0
    max_steps_per_epoch: int = 0  # 0: whole epoch
    eval_batch_size: int = 8192
    # Weight of the listwise term (`listwise_loss`, added to the pointwise BCE); > 0 also
    # makes batches of whole sessions, so each list is ranked against itself.
    listwise: float = 0.0


@dataclass
class TrainResult:
    best_valid_auc: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def task_objective(
    model: Ranker,
    logits: torch.Tensor,
    labels: torch.Tensor,
    example_weights: torch.Tensor | None = None,
):
    """(objective, per-task BCE [T]): the model's `combine_task_losses` hook (e.g. uncertainty
    weighting, mlpr eq. 10; the mean over tasks by default). Each task's BCE is the mean over
    examples, or their weighted sum with `example_weights` [B] (summing to 1)."""
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    per_task = bce.mean(0) if example_weights is None else example_weights @ bce
    return model.combine_task_losses(per_task), per_task


def listwise_loss(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor):
    """ListNet's softmax cross-entropy within each group, per task: logits, labels [B, T],
    groups [B] (the session of each row). For each (group, task) whose labels are not all
    zero, -sum_i p_i log softmax(logits)_i with p the labels normalised to sum 1; the mean
    over those pairs (0 when there are none). Only the order within a group matters."""
    _, local = torch.unique(groups, return_inverse=True)
    n, tasks = int(local.max()) + 1, logits.shape[1]
    index = local[:, None].expand(-1, tasks)
    top = torch.full((n, tasks), -torch.inf).scatter_reduce(0, index, logits, "amax")
    top = top.detach()
    sums = torch.zeros(n, tasks).index_add(0, local, (logits - top[local]).exp())
    log_softmax = logits - (sums.log() + top)[local]
    mass = torch.zeros(n, tasks).index_add(0, local, labels)
    share = labels / mass[local].clamp_min(1e-12)
    loss = -torch.zeros(n, tasks).index_add(0, local, share * log_softmax)
    ranked = mass > 0
    return loss[ranked].mean() if ranked.any() else logits.sum() * 0.0


def epoch_order(size: int, groups: torch.Tensor | None, generator) -> torch.Tensor:
    """A random order of the rows; with `groups`, the rows of each group kept together
    (groups in a random order, rows within each in a random order)."""
    rows = torch.randperm(size, generator=generator)
    if groups is None:
        return rows
    rank = torch.randperm(int(groups.max()) + 1, generator=generator)
    return rows[torch.argsort(rank[groups[rows]], stable=True)]


@torch.no_grad()
def predict(model: torch.nn.Module, data: TensorData, batch_size: int = 8192) -> np.ndarray:
    """Probabilities [n, T] in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(data)))
        out.append(torch.sigmoid(model(data.batch(rows)).logits))
    return torch.cat(out).numpy()


def evaluate(model, data: TensorData, batch_size: int = 8192) -> dict[str, float]:
    """Session AUC per task on `data` (see `auc_summary`)."""
    return auc_summary(data.labels.numpy(), predict(model, data, batch_size), data.sessions)


def auc_summary(labels: np.ndarray, probs: np.ndarray, sessions: np.ndarray) -> dict:
    """`session_auc` is the first task's, `mean_session_auc` the mean over the tasks where it
    is defined (the stopping rule; the same for one task), from labels and probs [n, T]."""
    per_task = [session_auc(labels[:, t], probs[:, t], sessions) for t in range(probs.shape[1])]
    defined = [a for a in per_task if not np.isnan(a)]
    return {
        "session_auc": float(per_task[0]),
        "mean_session_auc": float(np.mean(defined)) if defined else -1.0,
        "session_auc_per_task": per_task,
    }


def train(
    model: Ranker,
    train_data: TensorData,
    valid_data: TensorData,
    config: TrainConfig,
    out_dir: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Pointwise cross-entropy on every task (combined by `task_objective`) plus the model's
    penalties, plus `config.listwise` times the listwise term within sessions. Keeps the weights of the best validation epoch (mean session AUC over tasks);
    writes `train_log.jsonl` into out_dir. The model's `parameter_groups(lr)` hook gives
    AdamW's groups (e.g. a smaller learning rate for a fine-tuned encoder layer)."""
    seed_everything(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameter_groups(config.lr), lr=config.lr, weight_decay=config.weight_decay
    )
    plateau = None
    if config.lr_decay < 1.0:
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=config.lr_decay, patience=0, threshold=0.0
        )
    generator = torch.Generator().manual_seed(config.seed)
    best = TrainResult(best_valid_auc=-1.0, best_epoch=-1)
    best_state = None
    log = (out_dir / "train_log.jsonl").open("w") if out_dir else None
    groups = None
    if config.listwise:
        groups = torch.from_numpy(pd.factorize(train_data.sessions)[0].astype(np.int64))
    steps_per_epoch = -(-len(train_data) // config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    for epoch in range(config.epochs):
        model.train()
        started = time.perf_counter()
        order = epoch_order(len(train_data), groups, generator)
        totals: dict[str, float] = {}
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}", disable=not progress, leave=False)
        for step in bar:
            rows = order[step * config.batch_size : (step + 1) * config.batch_size]
            output = model(train_data.batch(rows))
            task_loss, per_task = task_objective(
                model, output.logits, train_data.labels[rows], output.example_weights
            )
            loss = task_loss + sum(output.penalties.values())
            if groups is not None:
                ranking = listwise_loss(output.logits, train_data.labels[rows], groups[rows])
                output.penalties["listwise"] = ranking.detach()
                loss = loss + config.listwise * ranking
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            named = {"task_loss": task_loss, "bce": per_task.mean(), **output.penalties}
            for name, value in named.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach())
            if step % 50 == 0:
                bar.set_postfix(loss=f"{task_loss.item():.4f}")
        metrics = evaluate(model, valid_data, config.eval_batch_size)
        record = {
            "epoch": epoch,
            "seconds": round(time.perf_counter() - started, 2),
            "lr": optimizer.param_groups[0]["lr"],
            **{k: v / steps_per_epoch for k, v in totals.items()},
            "valid": metrics,
        }
        best.history.append(record)
        if plateau is not None:
            plateau.step(metrics["mean_session_auc"])
        if log:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if metrics["mean_session_auc"] > best.best_valid_auc:
            best.best_valid_auc, best.best_epoch = metrics["mean_session_auc"], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best.best_epoch >= config.patience:
            break
    if log:
        log.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return best
