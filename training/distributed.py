"""Training past one process: `torchrun --nproc_per_node N -m training.train --data DIR ...`.

Each rank streams its own shard of impressions.parquet, whole row groups dealt round-robin
(the generator writes one per chunk of sessions), through pyarrow a record batch at a time, so
a rank holds one row group plus a shuffle buffer whatever the file size. Sessions are split into
train/valid/test by a hash of their id (the same on every rank, no pass over all ids first).

- The feature spec: each rank counts its shard's training rows (category values, numeric
  moments); the counts are gathered and merged, so every rank builds the spec `build_spec`
  would build from the whole training split.
- Training: DistributedDataParallel over gloo (CPU), each rank taking batch_size / N rows a
  step so a step sees the single-process batch; shards of unequal length finish under
  `join()`. Unused experts (top-k gates) are allowed (find_unused_parameters).
- Evaluation: each rank scores its shard of a split; the (labels, scores, sessions) are
  gathered and rank 0 computes session AUC as `trainer.evaluate` does; early stopping is
  rank 0's decision, broadcast.

Rank 0 writes what `fit` writes: train_log.jsonl, model.pt, metrics.json. Text features are
not streamed (their tables are built in memory): --text is refused here.

On several machines the same command runs on each with a rendezvous (see README, Deploying).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from contract import schema
from contract.features import REQUEST_CATEGORICAL, CategoricalField, FeatureSpec, NumericField
from training.checkpoint import save_checkpoint
from training.features import encode_frame
from training.metrics import ndcg_at_k, session_auc
from training.models import registry
from training.trainer import TrainConfig, auc_summary, seed_everything, task_objective

TRAIN, VALID, TEST = 0, 1, 2


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def session_split(sessions: np.ndarray, seed: int = 0, valid: float = 0.1, test: float = 0.1):
    """TRAIN, VALID or TEST per row, from a hash of the session id: whole sessions, the same
    answer on every rank and for every file holding the session."""
    hashed = pd.util.hash_array(np.asarray(sessions), hash_key=f"split{seed:011d}")
    u = hashed / float(2**64)
    return np.where(u < test, TEST, np.where(u < test + valid, VALID, TRAIN))


@dataclass
class Shard:
    """This rank's row groups of one Parquet file."""

    path: Path
    rank: int
    world: int
    columns: list[str]
    split_seed: int = 0
    groups: list[int] = field(init=False)

    def __post_init__(self):
        count = pq.ParquetFile(self.path).metadata.num_row_groups
        if count < self.world:
            raise ValueError(
                f"{self.path} has {count} row groups for {self.world} ranks: write it with "
                "smaller row groups (the generator's --sessions-per-chunk)"
            )
        self.groups = list(range(self.rank, count, self.world))

    def frames(self, split: int, shuffle_seed: int | None = None) -> Iterator[pd.DataFrame]:
        """The rows of `split`, a record batch at a time; row groups in a seeded order."""
        groups = list(self.groups)
        if shuffle_seed is not None:
            np.random.default_rng(shuffle_seed).shuffle(groups)
        file = pq.ParquetFile(self.path)
        for group in groups:
            for batch in file.iter_batches(row_groups=[group], columns=self.columns):
                frame = batch.to_pandas()
                keep = session_split(frame[schema.SESSION_ID].to_numpy(), self.split_seed) == split
                if keep.any():
                    yield frame[keep]


def shuffled_batches(frames: Iterator[pd.DataFrame], rows: int, buffer_rows: int,
                     rng: np.random.Generator) -> Iterator[pd.DataFrame]:  # fmt: skip
    """Minibatches of `rows` drawn from a shuffle buffer of about `buffer_rows` rows."""
    buffer = pd.DataFrame()
    for frame in frames:
        buffer = pd.concat([buffer, frame], ignore_index=True)
        if len(buffer) < buffer_rows:
            continue
        buffer = buffer.iloc[rng.permutation(len(buffer))].reset_index(drop=True)
        full = len(buffer) - len(buffer) % rows
        for start in range(0, full, rows):
            yield buffer.iloc[start : start + rows]
        buffer = buffer.iloc[full:]
    buffer = buffer.iloc[rng.permutation(len(buffer))].reset_index(drop=True)
    for start in range(0, len(buffer), rows):
        yield buffer.iloc[start : start + rows]


# ---- the feature spec from every rank's counts ------------------------------------------------


@dataclass
class FeatureCounts:
    """What `build_spec` reads from the training rows, mergeable across shards."""

    values: dict[str, Counter] = field(default_factory=dict)  # categorical field -> counts
    moments: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # n, mean, M2

    def add(self, frame: pd.DataFrame, categorical: list[str], numeric: list[str]) -> None:
        for name in categorical:
            self.values.setdefault(name, Counter()).update(frame[name].astype(str))
        for name in numeric:
            x = frame[name].to_numpy(np.float64)
            self._merge_moments(name, (len(x), float(x.mean()), float(((x - x.mean()) ** 2).sum())))

    def merge(self, other: FeatureCounts) -> None:
        for name, counts in other.values.items():
            self.values.setdefault(name, Counter()).update(counts)
        for name, moments in other.moments.items():
            self._merge_moments(name, moments)

    def _merge_moments(self, name: str, b: tuple[int, float, float]) -> None:
        """Chan et al.'s pairwise update: exact, and stable where sums of squares are not."""
        a = self.moments.get(name, (0, 0.0, 0.0))
        n = a[0] + b[0]
        if n == 0:
            return
        delta = b[1] - a[1]
        mean = a[1] + delta * b[0] / n
        self.moments[name] = (n, mean, a[2] + b[2] + delta**2 * a[0] * b[0] / n)

    def spec(self, request: tuple[str, ...], item: tuple[str, ...], numeric: tuple[str, ...]):
        def categorical(name: str, level: str) -> CategoricalField:
            return CategoricalField(name, level, tuple(sorted(self.values.get(name, {}))))

        stats = []
        for name in numeric:
            n, mean, m2 = self.moments[name]
            std = float(np.sqrt(m2 / n))
            stats.append(NumericField(name, float(mean), std if std > 1e-12 else 1.0))
        return FeatureSpec(
            request_categorical=tuple(categorical(n, "request") for n in request),
            item_categorical=tuple(categorical(n, "item") for n in item),
            numeric=tuple(stats),
        )


def build_spec_streaming(shard: Shard) -> tuple[FeatureSpec, torch.Tensor]:
    """The spec from every rank's training rows, and the query-category counts (MMoE)."""
    request, item = REQUEST_CATEGORICAL, schema.CATEGORICAL_FEATURES
    counts = FeatureCounts()
    for frame in shard.frames(TRAIN):
        counts.add(frame, [*request, *item], list(schema.NUMERIC_FEATURES))
    everyone = [counts]
    if dist.is_initialized():
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, counts)
    merged = FeatureCounts()
    for part in everyone:
        merged.merge(part)
    spec = merged.spec(request, item, schema.NUMERIC_FEATURES)
    field_ = spec.request_categorical[spec.request_field(schema.QUERY_CATEGORY)]
    category = merged.values[schema.QUERY_CATEGORY]
    per_index = torch.tensor([0] + [category[v] for v in field_.vocab], dtype=torch.long)
    return spec, per_index


# ---- training -----------------------------------------------------------------------------


def to_inputs(spec: FeatureSpec, frame: pd.DataFrame, tasks: tuple[str, ...]):
    encoded = encode_frame(spec, frame)
    inputs = {k: torch.from_numpy(v) for k, v in encoded.items()}
    labels = torch.from_numpy(frame[list(tasks)].to_numpy(np.float32, copy=True))
    return inputs, labels


@torch.no_grad()
def score_split(model, spec, shard: Shard, split: int, tasks, batch_rows: int):
    """(labels [n, T], probabilities [n, T], sessions [n]) of a split, gathered from every
    rank (rows in rank order)."""
    model.eval()
    parts = []
    for frame in shard.frames(split):
        for start in range(0, len(frame), batch_rows):
            rows = frame.iloc[start : start + batch_rows]
            inputs, labels = to_inputs(spec, rows, tasks)
            probs = torch.sigmoid(model(inputs).logits).numpy()
            parts.append((labels.numpy(), probs, rows[schema.SESSION_ID].to_numpy()))
    mine = tuple(np.concatenate([p[i] for p in parts]) if parts else None for i in range(3))
    everyone = [mine]
    if dist.is_initialized():
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
    present = [p for p in everyone if p[0] is not None]
    return tuple(np.concatenate([p[i] for p in present]) for i in range(3))


def fit_streaming(data_dir: Path, model_name: str, overrides: dict, config: TrainConfig,
                  out_dir: Path, shuffle_rows: int = 65_536) -> dict | None:  # fmt: skip
    """Train on this rank's shard (in a torchrun group when there is one); rank 0 returns
    the metrics, the others None."""
    distributed = launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    try:
        return _fit(data_dir, model_name, overrides, config, out_dir, shuffle_rows, rank, world)
    finally:
        if distributed:
            dist.destroy_process_group()


def _fit(data_dir, model_name, overrides, config, out_dir, shuffle_rows, rank, world):
    seed_everything(config.seed)
    tasks = tuple(overrides.get("tasks", ("click",)))
    columns = [schema.SESSION_ID, *REQUEST_CATEGORICAL, *schema.CATEGORICAL_FEATURES,
               *schema.NUMERIC_FEATURES, *tasks]  # fmt: skip
    shard = Shard(Path(data_dir) / "impressions.parquet", rank, world, columns)
    spec, counts = build_spec_streaming(shard)
    model_config = registry.config_for(model_name, **overrides)
    model = registry.build(registry.family_of_name(model_name), model_config, spec, counts)
    # Every rank starts from rank 0's weights (DDP broadcasts them) and seeds its own draws.
    forward = DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    optimizer = torch.optim.AdamW(
        model.parameter_groups(config.lr), lr=config.lr, weight_decay=config.weight_decay
    )
    rows_per_rank = max(1, config.batch_size // world)
    best_auc, best_epoch, best_state, history = -1.0, -1, None, []
    out_dir = Path(out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = (out_dir / "train_log.jsonl").open("w") if rank == 0 else None
    for epoch in range(config.epochs):
        model.train()
        started, steps, loss_sum = time.perf_counter(), 0, 0.0
        rng = np.random.default_rng([config.seed, epoch, rank])
        batches = shuffled_batches(
            shard.frames(TRAIN, shuffle_seed=config.seed * 1000 + epoch), rows_per_rank,
            shuffle_rows, rng,
        )  # fmt: skip
        with forward.join() if world > 1 else contextlib.nullcontext():
            for frame in batches:
                if config.max_steps_per_epoch and steps >= config.max_steps_per_epoch:
                    break
                inputs, labels = to_inputs(spec, frame, tasks)
                output = forward(inputs)
                task_loss, _ = task_objective(model, output.logits, labels, output.example_weights)
                loss = task_loss + sum(output.penalties.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps, loss_sum = steps + 1, loss_sum + float(task_loss.detach())
        valid = auc_summary(*score_split(model, spec, shard, VALID, tasks, config.eval_batch_size))
        record = {"epoch": epoch, "seconds": round(time.perf_counter() - started, 2),
                  "steps": steps, "task_loss": loss_sum / max(steps, 1), "valid": valid}  # fmt: skip
        history.append(record)
        if log:
            log.write(json.dumps(record) + "\n")
            log.flush()
        improved = valid["mean_session_auc"] > best_auc
        if improved:
            best_auc, best_epoch = valid["mean_session_auc"], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        stop = [not improved and epoch - best_epoch >= config.patience]
        if world > 1:
            dist.broadcast_object_list(stop, src=0)  # rank 0's view decides for all
        if stop[0]:
            break
    if log:
        log.close()
    model.load_state_dict(best_state)
    labels, probs, sessions = score_split(model, spec, shard, TEST, tasks, config.eval_batch_size)
    if rank != 0:
        return None
    scores, first = probs[:, 0], labels[:, 0]
    metrics = {
        "best_epoch": best_epoch,
        "valid_session_auc": best_auc,
        "test": {
            "session_auc": session_auc(first, scores, sessions),
            "ndcg_at_10": ndcg_at_k(first, scores, sessions, k=10),
            "ndcg": ndcg_at_k(first, scores, sessions),
        },
        "world_size": world,
        "train_seconds": round(sum(r["seconds"] for r in history), 2),
    }
    save_checkpoint(out_dir / "model.pt", model_name, model, spec, metrics, counts)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
