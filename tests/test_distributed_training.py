"""Training past one process: `torchrun --nproc_per_node 2 -m training.train` (DDP, gloo)
against the same streaming trainer in one process, on a small log written in many row
groups; and the parts that make it bounded in memory and the same on every rank."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from contract import schema
from contract.features import REQUEST_CATEGORICAL, FeatureSpec
from training.checkpoint import load_checkpoint
from training.distributed import TEST, TRAIN, FeatureCounts, Shard, score_split, session_split
from training.features import build_spec
from training.metrics import per_session_auc

TORCHRUN = Path(sys.executable).with_name("torchrun")  # installed with torch
COMMON = ["--model", "dnn", "--epochs", "2", "--lr", "3e-3", "--batch-size", "512"]


@pytest.fixture(scope="module")
def chunked_log(tmp_path_factory):
    """A small log in many row groups (the generator writes one per chunk of sessions)."""
    from training.data.simulator.generator import GeneratorConfig, generate

    out = tmp_path_factory.mktemp("chunked")
    generate(GeneratorConfig(impressions=40_000, seed=7, max_sub_categories=30,
                             items_per_sub_category=100, rate_multiplier=4.0,
                             calibration_sessions=500, sessions_per_chunk=100,
                             show_progress=False), out)  # fmt: skip
    return out


def test_shards_cover_every_row_once_and_the_split_keeps_sessions_whole(chunked_log):
    path = chunked_log / "impressions.parquet"
    columns = [schema.SESSION_ID, "click"]
    seen = []
    for rank in range(3):
        shard = Shard(path, rank, 3, columns)
        seen += [f for split in range(3) for f in shard.frames(split)]
    everything = pq.read_table(path, columns=columns).to_pandas()
    assert sum(len(f) for f in seen) == len(everything)
    split = session_split(everything[schema.SESSION_ID].to_numpy())
    per_session = pd.Series(split).groupby(everything[schema.SESSION_ID].to_numpy()).nunique()
    assert (per_session == 1).all()
    shares = np.bincount(split, minlength=3) / len(split)
    assert shares == pytest.approx([0.8, 0.1, 0.1], abs=0.05)
    with pytest.raises(ValueError, match="row groups"):
        Shard(path, 0, 1000, columns)


def test_merged_shard_counts_give_the_spec_of_the_whole_split(chunked_log):
    frame = pd.read_parquet(chunked_log / "impressions.parquet")
    train = frame[session_split(frame[schema.SESSION_ID].to_numpy()) == TRAIN]
    categorical = [*REQUEST_CATEGORICAL, *schema.CATEGORICAL_FEATURES]
    merged = FeatureCounts()
    for rows in np.array_split(np.arange(len(train)), 4):  # four shards' counts
        part = train.iloc[rows]
        counts = FeatureCounts()
        counts.add(part, categorical, list(schema.NUMERIC_FEATURES))
        merged.merge(counts)
    streamed = merged.spec(
        REQUEST_CATEGORICAL, schema.CATEGORICAL_FEATURES, schema.NUMERIC_FEATURES
    )
    whole = build_spec(train)
    assert streamed.request_categorical == whole.request_categorical
    assert streamed.item_categorical == whole.item_categorical
    for mine, theirs in zip(streamed.numeric, whole.numeric):
        assert mine.name == theirs.name
        assert (mine.mean, mine.std) == pytest.approx((theirs.mean, theirs.std), rel=1e-9)


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not beside this python")
def test_two_ranks_train_as_well_as_one_process(chunked_log, tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    subprocess.run([sys.executable, "-m", "training.train", "--stream", "--data", str(chunked_log),
                    "--out", str(one), *COMMON], check=True, capture_output=True)  # fmt: skip
    subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "training.train",
                    "--data", str(chunked_log), "--out", str(two), *COMMON],
                   check=True, capture_output=True)  # fmt: skip
    single = json.loads((one / "metrics.json").read_text())
    ddp = json.loads((two / "metrics.json").read_text())
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    # Within the test set's noise: two standard errors of the single process's session AUC.
    model, ckpt = load_checkpoint(one / "model.pt")
    spec = FeatureSpec.from_dict(ckpt["spec"])
    shard = Shard(chunked_log / "impressions.parquet", 0, 1,
                  [schema.SESSION_ID, *REQUEST_CATEGORICAL, *schema.CATEGORICAL_FEATURES,
                   *schema.NUMERIC_FEATURES, "click"])  # fmt: skip
    labels, probs, sessions = score_split(model, spec, shard, TEST, ("click",), 8192)
    per_session = per_session_auc(labels[:, 0], probs[:, 0], sessions).values
    per_session = per_session[~np.isnan(per_session)]
    noise = per_session.std() / np.sqrt(len(per_session))
    assert np.mean(per_session) == pytest.approx(single["test"]["session_auc"])
    gap = abs(ddp["test"]["session_auc"] - single["test"]["session_auc"])
    print(f"session AUC one process {single['test']['session_auc']:.4f}, two ranks "
          f"{ddp['test']['session_auc']:.4f}, standard error {noise:.4f}")  # fmt: skip
    assert gap <= 2 * noise
    assert single["test"]["session_auc"] > 0.6 and ddp["test"]["session_auc"] > 0.6
