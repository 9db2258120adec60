"""mlpr experiments on the generated search log: Table 2, Table 4, Figure 2, query- vs
item-level gates, and fine-tuning the encoder (Table 3).

python -m training.experiments.mlpr --size small|full [--only table2 table4 ...]
Each writes results/mlpr_<name>.json (and a PNG for Figure 2). The log is generated with
denser labels (rate_multiplier) than the adv-hsc-moe one, so ATC and purchase have enough
positives to rank; every neural model reads the MiniLM query/product embeddings.
"""

from __future__ import annotations

import numpy as np
import torch

from contract.schema import TASKS
from training.experiments.common import MULTITASK_SIZES, data_dir, experiment_args
from training.experiments.mlpr_eval import (
    lifts,
    metric_rows,
    neural_run,
    neural_scores,
    print_table,
    summarise,
    xgboost_scores,
)
from training.experiments.mlpr_figure2 import figure2
from training.experiments.mlpr_finetune import table3
from training.experiments.references import add_headroom_shares, reference_scores
from training.fitting import Prepared, prepare
from training.models.mlpr import QUERY_GATE
from training.results import merged, write_results

TABLE2 = ("mlp_single", "mlp_mtl", "esm2", "mmoe", "ple", "aitm", "mlpr")
CHAIN = ("mlp_mtl", "mtl_uncertainty", "mtl_two_stage", "mtl_attention", "mlpr")
CHAIN_LABELS = dict(zip(CHAIN, ("MLP_MTL", "+uncertainty loss", "+specific experts (two-stage)",
                                "+attention units", "+probability transfer")))  # fmt: skip
ITEM_GATE = (*QUERY_GATE, "item")  # the paper's gates read the whole input x (eq. 3)
GATES = {  # label -> (recipe, overrides)
    "item-level, dense (N=8)": ("mlpr", {}),
    "request-level, dense (N=8)": ("mlpr", {"gate_inputs": QUERY_GATE}),
    "request-level, top-2 of 8 (skippable)": ("mlpr_query_gate", {"gate_inputs": QUERY_GATE}),
}
# mlpr Table 2: lift over XGBoost in % (AUC, NDCG@1, NDCG@5) x (click, ATC, purchase).
PAPER_TABLE2 = {
    "mlp_single": ((3.93, 2.06, 0.01), (8.06, 3.39, 0.06), (5.46, 2.20, 1.36)),
    "mlp_mtl": ((3.78, 2.70, 0.03), (8.81, 4.97, -0.28), (5.85, 3.54, 1.36)),
    "esm2": ((1.48, 0.28, -0.70), (2.64, -2.66, -2.04), (1.42, -2.79, 0.03)),
    "mmoe": ((-0.73, -0.15, -1.01), (-1.70, -5.23, -4.52), (-1.66, -3.79, -1.99)),
    "ple": ((5.80, 3.63, 0.56), (10.14, 6.31, 3.28), (7.84, 4.86, 3.69)),
    "aitm": ((5.86, 3.98, 0.64), (9.88, 6.93, 3.13), (7.73, 4.86, 3.49)),
    "mlpr": ((6.48, 4.66, 1.03), (17.22, 10.61, 5.36), (10.48, 8.10, 5.65)),
}


RESULTS_PREFIX = "mlpr_"


def options(size: str, overrides: dict | None = None) -> dict:
    return MULTITASK_SIZES[size].options({"gate_inputs": ITEM_GATE, **(overrides or {})})


def run(prepared: Prepared, size: str, names, overrides: dict | None = None, seeds=None) -> dict:
    """{(name, seed): test scores [n, T]} for XGBoost and neural recipes over `seeds`
    (default: the size's)."""
    scores = {}
    for seed in seeds or MULTITASK_SIZES[size].seeds:
        for name in names:
            if name == "xgboost":
                scores[name, seed] = xgboost_scores(
                    prepared, seed, MULTITASK_SIZES[size].xgboost_rounds
                )
            else:
                config = MULTITASK_SIZES[size].train_config(seed)
                scores[name, seed] = neural_scores(
                    prepared, name, TASKS, options(size, overrides), config
                )
            print(f"  {name} seed {seed} done", flush=True)
    return scores


def rows_of(prepared: Prepared, scores: dict, label=lambda name: name) -> list[dict]:
    test = prepared.test
    return [
        row
        for (name, seed), s in scores.items()
        for row in metric_rows(label(name), seed, TASKS, test.labels.numpy(), s, test.sessions)
    ]


def reference_rows(prepared: Prepared) -> list[dict]:
    """The oracle rankings (generated logs) and the per-top-category logistic regression, one
    row per task with no seed (references.reference_scores)."""
    test, (scores, info) = prepared.test, reference_scores(prepared, TASKS)
    return [
        row
        for name, s in scores.items()
        for row in metric_rows(
            name, None, TASKS, test.labels.numpy(), s, test.sessions, **info.get(name, {})
        )
    ]


def table2(prepared: Prepared, size: str, seeds=None, merge: bool = False) -> dict:
    """Table 2 over `seeds` (default: the size's) beside the references; each row's headroom
    share is of its session AUC, against the oracle rows of its task. merge=True keeps the
    rows of other seeds already in the file (seeds run as separate processes)."""
    scores = run(prepared, size, ("xgboost", *TABLE2), seeds=seeds)
    name = f"{RESULTS_PREFIX}table2{MULTITASK_SIZES[size].results_suffix}"
    with merged(name, reference_rows(prepared) + rows_of(prepared, scores), {"size": size},
                merge) as rows:  # fmt: skip
        rows = add_headroom_shares(rows, "session_auc", "task")
        extra = {"size": size, "seeds": sorted({r["seed"] for r in rows if r["seed"] is not None}),
                 "summary": summarise(rows), "lift_over_xgboost": lifts(rows),
                 "paper_lift_over_xgboost": PAPER_TABLE2}  # fmt: skip
        write_results(name, rows, extra)
    print_table(f"Table 2 ({size}): mean ± std over seeds {extra['seeds']}", rows, TASKS)
    return scores


def table4(prepared: Prepared, size: str, scores: dict) -> None:
    """The ablation chain; reuses Table 2's mlp_mtl, mlpr and XGBoost runs."""
    missing = [n for n in ("xgboost", *CHAIN) if (n, MULTITASK_SIZES[size].seeds[0]) not in scores]
    scores = {**scores, **run(prepared, size, missing)}
    order = ("xgboost", *CHAIN)
    keys = sorted((k for k in scores if k[0] in order), key=lambda k: (order.index(k[0]), k[1]))
    chain = {k: scores[k] for k in keys}
    rows = rows_of(prepared, chain, lambda n: CHAIN_LABELS.get(n, n))
    extra = {"size": size, "summary": summarise(rows),
             "lift_over_xgboost": lifts(rows), "gain_over_mlp_mtl": lifts(rows, "MLP_MTL")}  # fmt: skip
    write_results(f"{RESULTS_PREFIX}table4", rows, extra)
    print_table(f"Table 4 ({size}): the ablation chain", rows, TASKS)


def gating(prepared: Prepared, size: str, scores: dict) -> None:
    """Query-level vs item-level first-layer gates (same MLPR otherwise), and what the
    query-level gates run per request on the test set."""
    rows, usage = [], {}
    for label, (name, overrides) in GATES.items():
        runs = {k: v for k, v in scores.items() if k[0] == name and not overrides}
        if not runs:
            runs, models = {}, []
            for seed in MULTITASK_SIZES[size].seeds:
                config, opts = MULTITASK_SIZES[size].train_config(seed), options(size, overrides)
                runs[name, seed], trained = neural_run(prepared, name, TASKS, opts, config)
                models += trained
            if models[0].request_level_gate:
                usage[label] = [gate_usage(m, prepared.test) for m in models]
        rows += rows_of(prepared, runs, lambda _, label=label: label)
    extra = {"size": size, "summary": summarise(rows), "request_level_usage": usage}
    write_results(f"{RESULTS_PREFIX}gating", rows, extra)
    print_table(f"Gates ({size}): request-level vs item-level", rows, TASKS)
    print("Request-level gates per test request:", usage)


@torch.no_grad()
def gate_usage(model, test, requests: int = 200) -> dict:
    """Over the first `requests` test sessions served one at a time (R = 1): distinct
    first-layer experts the tasks' gates choose, and the largest |dense - skipping| score."""
    model.eval()
    distinct, gap = [], 0.0
    _, first = np.unique(test.sessions, return_index=True)
    for start in np.sort(first)[:requests]:
        rows = torch.from_numpy(np.flatnonzero(test.sessions == test.sessions[start]))
        inputs = test.batch(rows)
        inputs.update({k: inputs[k][:1] for k in ("request_cat", "query_emb") if k in inputs})
        _, item_vec = model.inputs(inputs)
        chosen = {
            int(model.extraction.candidates[k][i])
            for k, g in enumerate(model.extraction.route(inputs, item_vec))
            for i in g.top_index[0]
        }
        distinct.append(len(chosen))
        dense, skipped = model(inputs).logits, model(inputs, skip_experts=True).logits
        gap = max(gap, float((dense - skipped).abs().max()))
    experts = model.extraction.total
    return {"experts": experts, "mean_distinct_run": float(np.mean(distinct)),
            "max_dense_vs_skip_logit_gap": gap}  # fmt: skip


EXPERIMENTS = ("table2", "table4", "gating", "figure2", "table3")


def main(argv: list[str] | None = None) -> None:
    args = experiment_args(
        "mlpr", __doc__, MULTITASK_SIZES, argv, EXPERIMENTS,
        seeds_help="Table 2's seeds and Table 3's fine-tuning seeds (default: the size's), e.g. "
        "0,1; rows of other seeds already in results/mlpr_table3.json are kept, so seeds can "
        "run as separate processes (Table 2's with --merge)",
        merge=True,
    )  # fmt: skip
    only, directory = set(args.only), data_dir(MULTITASK_SIZES[args.size], args.artifacts)
    prepared = prepare(directory, tasks=TASKS, text=True, progress=False)
    scores: dict = {}
    if only & {"table2", "table4", "gating", "figure2"}:
        scores = table2(prepared, args.size, args.seeds, args.merge)
    if "table4" in only:
        table4(prepared, args.size, scores)
    if "gating" in only:
        gating(prepared, args.size, scores)
    if "figure2" in only:
        figure2(prepared, args.size, scores, directory)
    if "table3" in only:
        size = MULTITASK_SIZES[args.size]
        seeds = args.seeds or size.finetune_seeds
        table3(prepared, size, args.size, directory, seeds, options(args.size))


if __name__ == "__main__":
    np.seterr(invalid="ignore")
    main()
