"""Evaluate a trained run against simple baselines on the same split:
`python -m training.evaluate OUT` (OUT: what `python -m training.train --spec ...` wrote).

For every model of the run (one, or one per fold) the test split is rebuilt exactly as in
training (run.json), and the model's ranking score (the expected grade for graded labels,
else its score task's probability) is compared with baselines scored on the same rows:

- bm25: BM25 of the query against the item text (when the spec names an item text);
- cosine: the text encoder's zero-shot cosine of query and item (when the run used text);
- xgboost: a pairwise XGBoost ranker trained on the training split's features (the spec's
  numeric and categorical columns, plus query/item token-overlap features when there is
  text), on the graded gain or the first task;
- random: a seeded random order (the floor).

`--results NAME` also writes results/NAME.json: the mean figures per scorer ([mean, std]
over folds), the training and evaluation commands, and the whole evaluation.

Figures (training.ranking_report): NDCG@k on the graded gain (else the first task), session
AUC per task, each saying what it was computed on; and NDCG@k per request field value (or
list size) for every scorer. Writes OUT/evaluation.json (or --json) and prints a table:
the mean over folds (± the std when there are several).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from contract import schema
from training.checkpoint import load_checkpoint
from training.data.spec import DataSpec, SpecError, load_spec, read_table
from training.dataset import TensorData
from training.fitting import Prepared
from training.own_data import prepare_spec, ranking_scores, score_name
from training.ranking_report import KS, gain_of, group_breakdown, ranking_figures
from training.results import write_results
from training.text_baselines import bm25, overlap_features
from training.train_spec import RUN_FILE, fail, fold_dirs
from training.trainer import predict

BASELINES = ("bm25", "cosine", "xgboost", "random")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("run", type=Path, help="the --out folder of training.train --spec")
    parser.add_argument("--k", type=int, nargs="+", default=list(KS), help="NDCG cut-offs")
    parser.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES))
    parser.add_argument("--json", type=Path, default=None, help="default: RUN/evaluation.json")
    parser.add_argument(
        "--results", default=None, help="also write results/<NAME>.json (with both commands)"
    )
    args = parser.parse_args(argv)
    run_file = args.run / RUN_FILE
    if not run_file.is_file():
        return fail([f"{run_file} does not exist: train with --spec --out {args.run} first"])
    run = json.loads(run_file.read_text())
    try:
        spec = load_spec(run["spec"])
        frame = read_table(spec)
    except SpecError as error:
        return fail(error.problems)
    ks = tuple(args.k)
    folds = []
    for split, folder in fold_dirs(args.run, run):
        if not (folder / "model.pt").is_file():
            return fail([f"{folder / 'model.pt'} does not exist: that fold was not trained"])
        prepared = prepare_spec(spec, frame, split, run["text"], Path(run["embeddings"]), False)
        model, checkpoint = load_checkpoint(folder / "model.pt")
        if checkpoint["spec"] != prepared.spec.to_dict():
            return fail([f"the data differs from what {folder / 'model.pt'} was trained on"])
        scores = {f"model ({run['model']})": ranking_scores(
            spec, predict(model, prepared.test), model.score_task)}  # fmt: skip
        scores.update(baseline_scores(spec, frame, prepared, args.baselines, split.seed))
        test = prepared.test_frame
        folds.append(
            {
                "split": f"test: {split.describe()}",
                "figures": {name: ranking_figures(spec, test, s, ks) for name, s in scores.items()},
                "breakdown": {name: group_breakdown(spec, test, s, ks[0]) for name, s in scores.items()},
            }
        )  # fmt: skip
    result = {
        "run": str(args.run),
        "spec": run["spec"],
        "model_score": score_name(spec, model.score_task),
        "folds": folds,
        "mean": _mean_figures(folds),
    }
    out = args.json or args.run / "evaluation.json"
    out.write_text(json.dumps(result, indent=2, default=float))
    print_table(result, ks)
    print(f"written: {out}")
    if args.results:
        rows = [{"scorer": name, **figures} for name, figures in result["mean"].items()]
        extra = {"train_command": run.get("command"), "run": run, "evaluation": result}
        print(f"written: {write_results(args.results, rows, extra)}")
    return 0


def baseline_scores(
    spec: DataSpec, frame: pd.DataFrame, prepared: Prepared, wanted: list[str], seed: int
) -> dict[str, np.ndarray]:
    """Each baseline's scores [n_test] on the test split (those the data allows)."""
    test = prepared.test_frame
    out: dict[str, np.ndarray] = {}
    queries = test[schema.QUERY_TEXT].astype(str).tolist()
    has_text = spec.has_text
    items = test[schema.ITEM_TITLE].fillna("").astype(str).tolist() if has_text else []
    if "bm25" in wanted and has_text:
        corpus = frame.drop_duplicates(schema.ITEM_ID)[schema.ITEM_TITLE].fillna("").tolist()
        out["bm25"] = bm25(queries, items, corpus)
    data = prepared.test
    if "cosine" in wanted and data.text is not None:
        query = data.text.query_table[data.query_rows]
        item = data.text.item_table[data.item_rows]
        out["cosine (zero-shot encoder)"] = (query * item).sum(1).numpy()
    if "xgboost" in wanted:
        scores = _xgboost(spec, prepared, has_text, seed)
        if scores is not None:
            out["xgboost"] = scores
    if "random" in wanted:
        out["random"] = np.random.default_rng(seed).random(len(test))
    return out


def _xgboost(spec: DataSpec, prepared: Prepared, has_text: bool, seed: int) -> np.ndarray | None:
    """Pairwise XGBoost on the wide features (+ token overlap with text); None: no features."""
    from training.xgboost_ranker import fit_rankers, margins, wide_features

    def with_overlap(data: TensorData, part: pd.DataFrame) -> TensorData:
        if not has_text:
            return data
        overlap = overlap_features(
            part[schema.QUERY_TEXT].astype(str).tolist(),
            part[schema.ITEM_TITLE].fillna("").astype(str).tolist(),
        )
        return replace(data, numeric=torch.cat([data.numeric, torch.from_numpy(overlap)], 1))

    train_frame = prepared.train_frame
    train = with_overlap(prepared.train, train_frame)
    if wide_features(train).shape[1] == 0:
        return None
    gain, _ = gain_of(spec, train_frame)
    train = replace(train, labels=torch.from_numpy(gain.astype(np.float32))[:, None])
    test = with_overlap(prepared.test, prepared.test_frame)
    return margins(fit_rankers(train, seed), wide_features(test))[:, 0]


def _mean_figures(folds: list[dict]) -> dict:
    """{scorer: {figure: [mean, std]}} over folds, for the numeric figures."""
    out = {}
    for name in folds[0]["figures"]:
        figures = [fold["figures"][name] for fold in folds]
        keys = [k for k, v in figures[0].items() if isinstance(v, float | int)]
        out[name] = {
            k: [
                float(np.nanmean([f[k] for f in figures])),
                float(np.nanstd([f[k] for f in figures])),
            ]
            for k in keys
        }
    return out


def print_table(result: dict, ks: tuple[int, ...]) -> None:
    mean = result["mean"]
    first = next(iter(mean.values()))
    columns = [f"ndcg@{k}" for k in ks] + [k for k in first if k.startswith("session_auc:")]
    on = result["folds"][0]["figures"][next(iter(mean))]["on"]
    print(f"{len(result['folds'])} split(s); {result['folds'][0]['split']}")
    print(f"groups per test split: {on['groups']} (one-item groups left out: "
          f"{on['one_item_groups_left_out']}); NDCG gain: {on['gain']}")  # fmt: skip
    print(f"model score: {result['model_score']}")
    width = max(len(name) for name in mean) + 2
    print("".ljust(width) + "".join(c.replace("session_auc:", "auc ").rjust(18) for c in columns))
    for name, figures in mean.items():
        cells = []
        for column in columns:
            value, spread = figures[column]
            cells.append(
                (f"{value:.4f}" + (f" ±{spread:.3f}" if len(result["folds"]) > 1 else "")).rjust(18)
            )
        print(name.ljust(width) + "".join(cells))


if __name__ == "__main__":
    sys.exit(main())
