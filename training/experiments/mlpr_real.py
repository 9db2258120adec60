"""mlpr's text-matching part on real query-product data (../shared/data).

python -m training.experiments.mlpr_real [--data DIR] [--only crowdflower bestbuy]
Writes results/mlpr_real_<set>.json. Skips (prints why) when the data folder is absent.

What the data can and cannot exercise:
- crowdflower: 261 real queries, 10,158 judged (query, product title) pairs, graded 0..3.
  It exercises the text side: MiniLM query/product embeddings, their interactions, the
  learned projection and fine-tuning of the last encoder layer, on queries never seen in
  training (folds by query). It has no engagement: the three tasks are the cascade
  relevance >= 1 -> >= 2 -> >= 3 (a later stage implies the earlier, as click -> ATC ->
  purchase), so the towers, attention units and probability transfer run on an ordinal
  cascade, not on click/ATC/purchase. No categories or scenario: gates read the query text.
- bestbuy-small: a real click log (Xbox 360 games, 5,960 distinct raw queries, 413
  products, all in one category). Only clicks: non-clicks are CONSTRUCTED by sampling (4
  per click: other items clicked for the same query, or random catalog items), so it
  exercises single-task click ranking with text and query-level vs item-level gates on
  real queries (with one category, the query-level gates read the query text alone);
  nothing about ATC, purchase or multi-task transfer.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from contract import schema
from contract.schema import shared_data_dir
from training.data.real.sets import read_real_set
from training.dataset import split_sessions, to_tensors
from training.experiments.mlpr_eval import (
    lifts,
    metric_rows,
    neural_scores,
    print_table,
    summarise,
    xgboost_scores,
)
from training.experiments.mlpr_finetune import finetune_runs, table_texts
from training.features import build_spec
from training.fitting import Prepared
from training.results import write_results
from training.trainer import TrainConfig

LEXICAL = ("query_jaccard", "query_in_title", "query_in_description", "title_tokens",
           "description_tokens")  # fmt: skip
CASCADE = ("relevance_ge1", "relevance_ge2", "relevance_ge3")
TRAIN = TrainConfig(epochs=12, lr=2e-3, batch_size=256, patience=3)
FINETUNE_EPOCHS = 3  # continued training, frozen (control) or with the last encoder layer
SMALL = {"hidden": (64, 32), "embedding_dim": 8}


def _tokens(text) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", str(text).lower())) if isinstance(text, str) else set()


def lexical_features(frame: pd.DataFrame, description: str | None = None) -> pd.DataFrame:
    """The wide features we can compute from text alone (the real sets have no ranking
    features): query-title Jaccard, share of query tokens in the title and description,
    log token counts. Returns `frame` with LEXICAL columns added."""

    def tokens(column: str | None) -> list[set[str]]:
        if column is None:
            return [set()] * len(frame)
        return [_tokens(text) for text in frame[column].tolist()]

    out = frame.copy()
    pairs = list(zip(tokens(schema.QUERY_TEXT), tokens(schema.ITEM_TITLE), tokens(description)))
    out["query_jaccard"] = [len(q & t) / max(len(q | t), 1) for q, t, _ in pairs]
    out["query_in_title"] = [len(q & t) / max(len(q), 1) for q, t, _ in pairs]
    out["query_in_description"] = [len(q & d) / max(len(q), 1) for q, _, d in pairs]
    out["title_tokens"] = np.log1p([len(t) for _, t, _ in pairs])
    out["description_tokens"] = np.log1p([len(d) for _, _, d in pairs])
    return out


def prepare_real(frame, tasks, request_categorical, splits, cache: Path) -> Prepared:
    """Feature spec on the train split, text tables over every query and title."""
    from training.text_encoder import ENCODER_ID
    from training.text_tables import build_text_tables

    train, valid, test = splits
    catalog = frame[[schema.ITEM_ID, schema.ITEM_TITLE]].drop_duplicates(schema.ITEM_ID)
    tables = build_text_tables(frame, catalog, cache, progress=False)
    spec = build_spec(
        train, numeric=LEXICAL, item_categorical=(), request_categorical=request_categorical,
        text_dim=tables.query_table.shape[1], encoder_id=ENCODER_ID,
    )  # fmt: skip
    data = [to_tensors(spec, f, tasks, tables) for f in (train, valid, test)]
    return Prepared(spec, *data, test_frame=test)


def _expected_relevance(scores: np.ndarray) -> np.ndarray:
    return scores.sum(1, keepdims=True)  # Σ_k P(relevance >= k) = E[relevance]


def crowdflower(data_dir: Path, cache: Path, folds: int = 5) -> None:
    """Graded relevance, folds by query; NDCG of E[relevance] = Σ_k ŷ(relevance >= k)."""
    from training.text_encoder import default_encoder

    frame = read_real_set("crowdflower", data_dir)
    frame[schema.ITEM_ID] = frame[schema.ITEM_ID].astype(str)
    frame = lexical_features(frame, "product_description")
    for k, task in enumerate(CASCADE, start=1):
        frame[task] = (frame[schema.RELEVANCE] >= k).astype(np.float32)
    queries = np.sort(frame[schema.SESSION_ID].unique())
    fold_of = dict(zip(queries, np.random.default_rng(0).permutation(len(queries)) % folds))
    item_gate = {"gate_inputs": ("query_text", "item")}
    models = {  # label -> (recipe, options): text off = the spec's text tables unused
        "mlp_mtl (wide only)": ("mlp_mtl", {}),
        "mlpr": ("mlpr", item_gate),
        "mlpr, query-level gates (dense)": ("mlpr", {"gate_inputs": ("query_text",)}),
    }  # mlp_mtl with text: the fine-tuning rows below
    encoder = default_encoder()
    catalog = frame[[schema.ITEM_ID, schema.ITEM_TITLE]].drop_duplicates(schema.ITEM_ID)
    texts = None
    rows = []
    for fold in range(folds):
        in_fold = frame[schema.SESSION_ID].map(fold_of) == fold
        rest = frame[~in_fold]
        train, valid, _ = split_sessions(rest, valid=0.1, test=0.0, seed=fold)
        prepared = prepare_real(frame, CASCADE, (), (train, valid, frame[in_fold]), cache)
        graded = prepared.test_frame[[schema.RELEVANCE]].to_numpy(np.float64)
        sessions = prepared.test.sessions
        graded_train = torch.from_numpy(train[[schema.RELEVANCE]].to_numpy(np.float32))
        xgb = replace(prepared, train=replace(prepared.train, labels=graded_train))
        scores = {"xgboost": xgboost_scores(xgb, fold)}
        for label, (name, options) in models.items():
            if label == "mlp_mtl (wide only)":
                scores[label] = _wide_only(
                    prepared, name, CASCADE, {**SMALL, **options}, TRAIN, fold
                )
            else:
                scores[label] = neural_scores(
                    prepared, name, CASCADE, {**SMALL, **options}, replace(TRAIN, seed=fold)
                )
        # Fine-tuning the encoder's last layer (Table 3) where the vocabulary is real.
        if texts is None:
            titles = catalog[schema.ITEM_TITLE].astype(str).tolist()
            texts = table_texts(prepared.train.text, titles, encoder)
        config = replace(TRAIN, seed=fold)
        more = replace(config, epochs=FINETUNE_EPOCHS, patience=1)
        options = {**SMALL, "tasks": CASCADE}
        tuned = finetune_runs(prepared, "mlp_mtl", options, config, texts, more, encoder)
        scores.update({f"mlp_mtl | {setting}": v for setting, v in tuned.items()})
        for label, s in scores.items():
            s = s if label == "xgboost" else _expected_relevance(s)
            rows += metric_rows(label, fold, ("relevance",), graded, s, sessions)
        print(f"  crowdflower fold {fold} done", flush=True)
    _write("crowdflower", rows, {"folds": folds, "split": "folds by query (unseen queries)"})


def _wide_only(prepared: Prepared, name, tasks, options: dict, config, seed: int) -> np.ndarray:
    """The recipe on a spec without text: ranking features alone."""
    spec = replace(prepared.spec, text_dim=0, encoder_id="")
    strip = {k: replace(getattr(prepared, k), text=None) for k in ("train", "valid", "test")}
    plain = replace(prepared, spec=spec, **strip)
    return neural_scores(plain, name, tasks, options, replace(config, seed=seed))


def _write(name: str, rows: list[dict], extra: dict) -> None:
    write_results(f"mlpr_real_{name}", rows,
                  {**extra, "summary": summarise(rows), "lift_over_xgboost": lifts(rows)})  # fmt: skip
    print_table(f"{name}: mean ± std over folds/seeds", rows, sorted({r["task"] for r in rows}))


BESTBUY_TRAIN = TrainConfig(epochs=4, lr=2e-3, batch_size=1024, patience=1)
BESTBUY_REQUEST = (schema.QUERY_CATEGORY, schema.TOP_CATEGORY)


def bestbuy(data_dir: Path, cache: Path, seeds=(0, 1, 2)) -> None:
    """Click ranking among each session's click and 4 sampled non-clicks; split by session."""
    frame = read_real_set("bestbuy-small-candidates", data_dir)
    frame[schema.ITEM_ID] = frame[schema.ITEM_ID].astype(str)
    frame[schema.ITEM_TITLE] = frame[schema.ITEM_TITLE].fillna("")
    for column in BESTBUY_REQUEST:
        frame[column] = frame[column].fillna("unknown")
    frame = lexical_features(frame)
    request_gate = (*BESTBUY_REQUEST, "query_text")
    models = {
        "mlp_mtl (wide only)": ("mlp_mtl", {}),
        "mlp_mtl": ("mlp_mtl", {}),
        "mlpr": ("mlpr", {"gate_inputs": (*request_gate, "item")}),
        "mlpr, query-level top-2 gates": ("mlpr_query_gate", {"gate_inputs": request_gate}),
    }
    tasks, rows = ("click",), []
    for seed in seeds:
        splits = split_sessions(frame, seed=seed)
        prepared = prepare_real(frame, tasks, BESTBUY_REQUEST, splits, cache)
        scores = {"xgboost": xgboost_scores(prepared, seed)}
        for label, (name, options) in models.items():
            options = {**SMALL, **options}
            if label == "mlp_mtl (wide only)":
                scores[label] = _wide_only(prepared, name, tasks, options, BESTBUY_TRAIN, seed)
            else:
                config = replace(BESTBUY_TRAIN, seed=seed)
                scores[label] = neural_scores(prepared, name, tasks, options, config)
        test = prepared.test
        for label, s in scores.items():
            rows += metric_rows(label, seed, tasks, test.labels.numpy(), s, test.sessions)
        print(f"  bestbuy seed {seed} done", flush=True)
    _write("bestbuy", rows, {"seeds": list(seeds), "negatives": "4 sampled per click"})


SETS = {"crowdflower": crowdflower, "bestbuy": bestbuy}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.experiments.mlpr_real")
    parser.add_argument("--data", type=Path, default=None, help="default: MOERANK_SHARED_DATA")
    parser.add_argument("--only", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--size", choices=("small", "full"), default="small",
                        help="accepted for `make reproduce`; the real sets have one size")  # fmt: skip
    args = parser.parse_args(argv)
    data_dir = args.data or shared_data_dir()
    if data_dir is None or not Path(data_dir).is_dir():
        print("mlpr_real: no shared data folder (set MOERANK_SHARED_DATA); skipped")
        return
    for name in args.only:
        cache = args.artifacts / "data" / f"{name}-embeddings"
        SETS[name](Path(data_dir), cache)


if __name__ == "__main__":
    main()
