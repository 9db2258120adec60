"""The oracle beside every result: what the simulator's true probabilities score on a split,
and how much of the learnable headroom a model's figure covers.

Rankings (for the click task; for add-to-cart each is multiplied by the true P(atc | click),
for purchase by P(atc | click) * P(purchase | atc): no category structure moves these):

- `bayes`: the true P(click), position bias included: the ceiling no ranker can pass;
- `blind_sub`: P(click | examined) with every sub-category's true weights: the ceiling of a
  position-blind model (ours see no position);
- `blind_top`: the same with per-top-category weights;
- `blind_global`: the same with one shared weight vector: what a model that learns no
  category structure at all can reach.

headroom share = (model - blind_global) / (blind_sub - blind_global).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from contract import schema
from training.metrics import ndcg_at_k, session_auc

ORACLE_FILE = "oracle.parquet"
RANKINGS = {
    "bayes": "p_click",
    "blind_sub": "click_blind",
    "blind_top": "click_blind_top",
    "blind_global": "click_blind_global",
}
ORACLE_TASKS = ("click", "atc", "purchase")


def oracle_scores(oracle: pd.DataFrame, task: str) -> dict[str, np.ndarray]:
    """{ranking: scores [n]} for `task` (one of ORACLE_TASKS) from oracle rows."""
    if task not in ORACLE_TASKS:
        raise ValueError(f"the oracle ranks {ORACLE_TASKS}, not {task!r}")
    conversion = np.ones(len(oracle))
    if task in ("atc", "purchase"):
        conversion = oracle["p_atc_given_click"].to_numpy(np.float64)
    if task == "purchase":
        conversion = conversion * oracle["p_purchase_given_atc"].to_numpy(np.float64)
    return {
        name: oracle[column].to_numpy(np.float64) * conversion for name, column in RANKINGS.items()
    }


def ranking_metrics(labels: np.ndarray, scores: np.ndarray, sessions: np.ndarray) -> dict:
    """Session AUC, NDCG@10 and NDCG: the figures of every table."""
    return {
        "session_auc": session_auc(labels, scores, sessions),
        "ndcg_at_10": ndcg_at_k(labels, scores, sessions, k=10),
        "ndcg": ndcg_at_k(labels, scores, sessions),
    }


def read_oracle(data_dir: Path, index: pd.Index | None = None) -> pd.DataFrame:
    """oracle.parquet of a generated log, optionally only the rows at `index` (the positional
    index of `pd.read_parquet(impressions.parquet)`, which splits keep)."""
    oracle = pd.read_parquet(Path(data_dir) / ORACLE_FILE)
    return oracle if index is None else oracle.iloc[np.asarray(index)]


def oracle_metrics(data_dir: Path, frame: pd.DataFrame, task: str) -> dict[str, dict]:
    """{ranking: ranking_metrics} of the oracle on `frame`'s rows (a split of the log)."""
    oracle = read_oracle(data_dir, frame.index)
    labels, sessions = frame[task].to_numpy(), frame[schema.SESSION_ID].to_numpy()
    return {
        name: ranking_metrics(labels, scores, sessions)
        for name, scores in oracle_scores(oracle, task).items()
    }


def headroom_share(value: float, oracle: dict[str, dict], metric: str = "session_auc") -> float:
    """(value - blind_global) / (blind_sub - blind_global) on `metric`; NaN without headroom."""
    low, high = oracle["blind_global"][metric], oracle["blind_sub"][metric]
    return float((value - low) / (high - low)) if high > low else float("nan")


def has_oracle(data_dir: Path | None) -> bool:
    return data_dir is not None and (Path(data_dir) / ORACLE_FILE).exists()


def summarise_test_split(data_dir: Path, split_seed: int = 0) -> dict:
    """The oracle table of the experiments' test split (`split_sessions` with `split_seed`),
    per task: {task: {ranking: metrics}}; also stored under "oracle" in ground_truth.json."""
    from training.dataset import split_sessions

    columns = [schema.SESSION_ID, *ORACLE_TASKS]
    frame = pd.read_parquet(Path(data_dir) / "impressions.parquet", columns=columns)
    test = split_sessions(frame, seed=split_seed)[2]
    table = {task: oracle_metrics(data_dir, test, task) for task in ORACLE_TASKS}
    return {"split": {"split_seed": split_seed, "part": "test"}, **table}


def add_to_ground_truth(data_dir: Path) -> dict:
    """Compute the test split's oracle table and write it into ground_truth.json."""
    path = Path(data_dir) / "ground_truth.json"
    truth = json.loads(path.read_text())
    truth["oracle"] = summarise_test_split(data_dir)
    path.write_text(json.dumps(truth, indent=1))
    return truth
