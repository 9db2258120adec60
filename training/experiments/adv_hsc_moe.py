"""adv-hsc-moe experiments: Table 2, Figure 5, Figure 6, Table 5, Figure 7 and Table 6.

python -m training.experiments.adv_hsc_moe --size small|full|full-quick [--only table2 ...]
    [--tasks purchase click] [--models dnn moe ...] [--seeds 0,1]
Figures 5 and 6 use the models Table 2 trains in the same process, or, run without table2
(`--only figure5 figure6`), the checkpoints its runs saved (every model and seed in Table 2's
file, e.g. filled by separate --merge processes).
Each writes results/adv_hsc_moe_<name>.json (and a PNG where the paper shows a figure);
Table 2 one file per ranked label, results/adv_hsc_moe_table2_<task>.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from contract import schema  # noqa: E402
from training.checkpoint import load_checkpoint  # noqa: E402
from training.dataset import category_counts  # noqa: E402
from training.experiments.common import (  # noqa: E402
    SIZES,
    data_dir,
    experiment_args,
    mean_std,
    prepare_size,
    run_label,
    run_seeds,
    tuned_runs,
)
from training.experiments.references import (  # noqa: E402
    model_order,
    oracle_rows,
    print_table,
    reference_rows,
    with_headroom,
)
from training.gate_diagnostics import category_silhouette, diagnose  # noqa: E402
from training.metrics import breakdown, size_buckets  # noqa: E402
from training.results import locked, other_runs, results_dir, write_results  # noqa: E402
from training.trainer import predict  # noqa: E402

TABLE2_MODELS = ("dnn", "moe", "mmoe_4", "mmoe_10", "adv_moe", "hsc_moe", "adv_hsc_moe")
# Rows beyond the paper's, run when named with --models: gates reading the top-category.
EXTRA_MODELS = ("moe_top_gate", "adv_hsc_moe_top_gate")
PAPER_TABLE2 = {  # adv-hsc-moe Table 2: AUC, NDCG@10, NDCG on the JD search log
    "dnn": (0.8131, 0.5596, 0.5960),
    "moe": (0.8176, 0.5656, 0.6013),
    "mmoe_4": (0.8203, 0.5635, 0.5954),
    "mmoe_10": (0.8211, 0.5644, 0.5964),
    "adv_moe": (0.8178, 0.5658, 0.6015),
    "hsc_moe": (0.8194, 0.5685, 0.6037),
    "adv_hsc_moe": (0.8227, 0.5710, 0.6059),
}
GATE_INPUTS = {  # Table 5 rows
    "SC": ("query_category",),
    "(TC, SC)": ("top_category", "query_category"),
    "(query, TC, SC)": ("query_text", "top_category", "query_category"),
    "all features": ("query_category", "top_category", "scenario", "platform", "item"),
}
NKD = (
    (10, 2, 1),
    (10, 4, 1),
    (16, 2, 1),
    (16, 2, 2),
    (16, 4, 1),
    (32, 2, 2),
    (32, 4, 1),
    (32, 4, 2),
)
LAMBDAS = (1e-1, 1e-2, 1e-3)


def table2(
    prepared,
    size: str,
    task: str = "click",
    run_dir: Path | None = None,
    models: tuple[str, ...] = TABLE2_MODELS,
    seeds: tuple[int, ...] | None = None,
    baselines: bool = True,
    merge: bool = False,
) -> dict:
    """Every model of Table 2 over the size's seeds, each tuned on validation (the size's
    Tuning grid), beside the oracle and the baselines, ranking `task` (the paper ranks
    purchases, eq. 13). Writes results/adv_hsc_moe_table2_<task>.json with, per run, the
    test figures, the share of the learnable headroom, the gate diagnostics and the training
    history; returns {model: [(model, metrics)]}. `models` and `seeds` (default: the size's)
    restrict the run; the results say which ran; baselines=False leaves out the fitted
    baselines (the oracle stays). merge=True keeps the rows of other (model, seed) runs of
    the same size and task already in the file, so models and seeds can run as separate
    processes into one table (written under a lock)."""
    seeds = seeds or SIZES[size].seeds
    if baselines:
        rows, oracle = reference_rows(prepared, task, xgboost=SIZES[size].xgboost_baseline)
    else:
        rows, oracle = oracle_rows(prepared, task)
    runs, tuning = {}, {}
    extra = {"size": size, "task": task, "paper": PAPER_TABLE2}
    for name in models:
        runs[name], tuning[name] = tuned_runs(prepared, SIZES[size], name, seeds, run_dir=run_dir)
        for seed, (model, metrics) in zip(seeds, runs[name]):
            row = {"model": name, "seed": seed, **metrics["test"]}
            row.update(best_epoch=metrics["best_epoch"], epochs_run=metrics["epochs_run"])
            row.update(gate=diagnose(model, prepared.test, prepared.spec))
            rows.append({**with_headroom(row, oracle), "history": metrics["history"]})
        # Written after every model, so a long run's finished models are never lost.
        write_table2(task, rows, {**extra, "tuning": tuning}, models, merge)
    write_table2(task, rows, {**extra, "tuning": tuning}, models, merge, summarise=True)
    return runs


def write_table2(
    task: str, rows: list[dict], extra: dict, models, merge: bool, summarise: bool = False
) -> None:
    """Write results/adv_hsc_moe_table2_<task><the size's results_suffix>.json; with merge, beside the rows of other
    (model, seed) runs of the same size and task in the file (under an exclusive lock); a
    reference (oracle, baseline) from this run replaces the file's. With summarise, print the
    table and the gates and store the summary."""
    name = f"adv_hsc_moe_table2_{task}{SIZES[extra['size']].results_suffix}"
    with locked(name) as path:
        if merge:
            kept, earlier = other_runs(path, rows, {"size": extra["size"], "task": task})
            tuning = {**earlier.get("tuning", {}), **extra.get("tuning", {})}
            rows, extra = kept + rows, {**extra, "tuning": tuning}
        if summarise:
            all_models = [
                m for m in TABLE2_MODELS + EXTRA_MODELS if any(r["model"] == m for r in rows)
            ]
            seeds = sorted({r["seed"] for r in rows if "seed" in r})
            title = f"Table 2 ({extra['size']}, ranking {task}): mean ± std over seeds {seeds}"
            extra = {**extra, "summary": print_table(title, rows, model_order(rows, all_models))}
            print_gates(rows)
        write_results(name, rows, extra)


def saved_runs(task: str, size: str, run_dir: Path) -> dict[str, list]:
    """{model: [(model, checkpoint)] by seed} for the runs in Table 2's file, loaded from the
    checkpoints of their chosen trials under run_dir."""
    name = f"adv_hsc_moe_table2_{task}{SIZES[size].results_suffix}"
    table = json.loads((results_dir() / f"{name}.json").read_text())
    runs: dict[str, list] = {}
    for row in sorted((r for r in table["rows"] if "seed" in r), key=lambda r: r["seed"]):
        chosen = table["tuning"][row["model"]]["chosen"]
        path = run_dir / row["model"] / run_label(chosen, row["seed"]) / "model.pt"
        runs.setdefault(row["model"], []).append(load_checkpoint(path))
    return runs


def print_gates(rows: list[dict]) -> None:
    """Routing entropy (uniform in brackets), largest expert share and top-category NMI."""
    print("gates: softmax entropy [uniform], top-K entropy [uniform], max usage, NMI(top)")
    for row in rows:
        gate = row.get("gate")
        if gate:
            print(
                f"  {row['model']:<12} seed {row['seed']}: {gate['softmax_entropy']:.3f} "
                f"[{gate['softmax_entropy_uniform']:.3f}] {gate['top_k_entropy']:.3f} "
                f"[{gate['top_k_entropy_uniform']:.3f}] {gate['expert_usage_max']:.3f} "
                f"{gate['normalised_mutual_information']:.3f}"
            )


def figure5(prepared, runs: dict[str, list], size: str, buckets: int = 5) -> None:
    """AUC gain over DNN by bucket of category training size (smallest bucket first)."""
    spec, test = prepared.spec, prepared.test
    column = spec.request_field(schema.QUERY_CATEGORY)
    counts = category_counts(spec, prepared.train).numpy()
    bucket_of = size_buckets(counts, buckets)
    keys = bucket_of[test.request_cat[:, column].numpy()]
    labels = test.labels.numpy()[:, 0]
    auc = {}
    for name, model_runs in runs.items():
        per_seed = [
            breakdown(labels, predict(m, test)[:, 0], test.sessions, keys) for m, _ in model_runs
        ]
        auc[name] = [np.mean([s[b][0] for s in per_seed if b in s]) for b in range(buckets)]
    size_of = [int(counts[bucket_of == b].sum()) for b in range(buckets)]
    rows = [
        {"model": name, "bucket": b, "train_rows": size_of[b], "auc": auc[name][b],
         "auc_gain_over_dnn": auc[name][b] - auc["dnn"][b]}
        for name in runs if name != "dnn" for b in range(buckets)
    ]  # fmt: skip
    write_results("adv_hsc_moe_figure5", rows, {"size": size})
    fig, left = plt.subplots(figsize=(8, 4.5))
    left.bar(range(buckets), size_of, color="#9ecae1")
    left.set_xlabel("category bucket by training size (small -> large)")
    left.set_ylabel("training rows")
    right = left.twinx()
    for name in runs:
        if name != "dnn":
            right.plot(range(buckets), np.array(auc[name]) - auc["dnn"], marker="o", label=name)
    right.axhline(0, color="grey", lw=0.5)
    right.set_ylabel("session AUC gain over DNN")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(results_dir() / "adv_hsc_moe_figure5.png", dpi=110)
    plt.close(fig)
    print("Figure 5 (gain over DNN by size bucket):")
    for name in runs:
        if name != "dnn":
            print(
                f"  {name:<12} " + " ".join(f"{g:+.4f}" for g in np.array(auc[name]) - auc["dnn"])
            )


def gate_vectors(model, cardinality: int, request_fields: int, column: int) -> np.ndarray:
    """softmax(G^I) for every sub-category (the gate reads only the sub-category)."""
    request_cat = torch.zeros(cardinality, request_fields, dtype=torch.long)
    request_cat[:, column] = torch.arange(cardinality)
    with torch.no_grad():
        gate_in = model.gate_features({"request_cat": request_cat}, None)
        return torch.softmax(model.gate(gate_in).clean_logits, dim=1).numpy()


def figure6(prepared, runs: dict[str, list], size: str, data_dir: Path) -> None:
    """t-SNE of sub-category gate vectors coloured by top-category, and the silhouette score
    of the top-category grouping in gate space (higher: siblings share experts more)."""
    import json

    from sklearn.manifold import TSNE

    spec = prepared.spec
    column = spec.request_field(schema.QUERY_CATEGORY)
    field = spec.request_categorical[column]
    truth = json.loads((data_dir / "ground_truth.json").read_text())["sub_categories"]
    tops = np.array([truth[c]["top_name"] for c in field.vocab])
    names = [n for n in ("moe", "adv_moe", "hsc_moe", "adv_hsc_moe") if n in runs]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 5), squeeze=False)
    axes = axes[0]
    rows = []
    for ax, name in zip(axes, names):
        model = runs[name][0][0]
        vectors = gate_vectors(model, field.cardinality, len(spec.request_categorical), column)[1:]
        score = category_silhouette(vectors, tops)
        rows.append({"model": name, "silhouette_by_top_category": score, "categories": len(tops)})
        points = TSNE(perplexity=min(30, len(tops) - 1), random_state=0, init="pca").fit_transform(
            vectors
        )
        for top in sorted(set(tops)):
            mask = tops == top
            ax.scatter(points[mask, 0], points[mask, 1], s=10, label=top)
        ax.set_title(f"{name} (silhouette {score:.3f})")
        ax.set_xticks([]), ax.set_yticks([])
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), title="top-category")
    fig.tight_layout()
    fig.savefig(results_dir() / "adv_hsc_moe_figure6.png", dpi=100)
    plt.close(fig)
    write_results("adv_hsc_moe_figure6", rows, {"size": size})
    print(
        "Figure 6 (silhouette of gate vectors by top-category):",
        {r["model"]: round(r["silhouette_by_top_category"], 4) for r in rows},
    )


def sweep(prepared, size: str, options: dict) -> list:
    """Adv & HSC-MoE with `options` over the sweep seeds, for the sweep epochs."""
    sweep_size = SIZES[size]
    return run_seeds(
        prepared,
        sweep_size,
        "adv_hsc_moe",
        sweep_size.sweep_seeds,
        options,
        sweep_size.sweep_epochs,
    )


def table5(size: str, artifacts: Path) -> None:
    """Gate inputs (N=10, K=4, D=1, λ1=λ2=1e-2 as in the paper's Table 5)."""
    prepared = prepare_size(SIZES[size], artifacts, text=True)
    rows = []
    for label, inputs in GATE_INPUTS.items():
        options = {
            "gate_inputs": inputs,
            "hsc_weight": 1e-2,
            "adversarial_weight": 1e-2,
            "text_proj": 32,
        }
        for seed, (_, metrics) in zip(
            SIZES[size].sweep_seeds,
            sweep(prepared, size, options),
        ):
            rows.append({"gate_input": label, "seed": seed, **metrics["test"]})
    write_results("adv_hsc_moe_table5", rows, {"size": size, "text": True})
    print("Table 5 (gate inputs):")
    for label in GATE_INPUTS:
        print(
            f"  {label:<16} {mean_std([r['session_auc'] for r in rows if r['gate_input'] == label])}"
        )


def figure7(prepared, size: str) -> None:
    """(N, K, D) settings of Adv & HSC-MoE."""
    rows = []
    for n, k, d in NKD:
        options = {"experts": n, "top_k": k, "disagreeing": d}
        for seed, (_, metrics) in zip(
            SIZES[size].sweep_seeds,
            sweep(prepared, size, options),
        ):
            rows.append(
                {"experts": n, "top_k": k, "disagreeing": d, "seed": seed, **metrics["test"]}
            )
    write_results("adv_hsc_moe_figure7", rows, {"size": size})
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"({r['experts']},{r['top_k']},{r['disagreeing']})" for r in rows]
    ax.bar(range(len(rows)), [r["session_auc"] for r in rows], color="#756bb1")
    ax.set_xticks(range(len(rows)), labels, rotation=30)
    ax.set_ylim(
        min(r["session_auc"] for r in rows) - 0.01, max(r["session_auc"] for r in rows) + 0.005
    )
    ax.set_ylabel("session AUC")
    ax.set_xlabel("(N, K, D)")
    fig.tight_layout()
    fig.savefig(results_dir() / "adv_hsc_moe_figure7.png", dpi=110)
    plt.close(fig)
    print("Figure 7 (N, K, D):", {lab: round(r["session_auc"], 4) for lab, r in zip(labels, rows)})


def table6(prepared, size: str) -> None:
    """λ1 (HSC) × λ2 (AdvLoss) grid, N=10, K=4, D=1."""
    rows = []
    for l1 in LAMBDAS:
        for l2 in LAMBDAS:
            options = {"hsc_weight": l1, "adversarial_weight": l2}
            for seed, (_, metrics) in zip(
                SIZES[size].sweep_seeds,
                sweep(prepared, size, options),
            ):
                rows.append({"lambda1": l1, "lambda2": l2, "seed": seed, **metrics["test"]})
    write_results("adv_hsc_moe_table6", rows, {"size": size})
    print(
        "Table 6 (λ1, λ2):",
        {(r["lambda1"], r["lambda2"]): round(r["session_auc"], 4) for r in rows},
    )


EXPERIMENTS = ("table2", "figure5", "figure6", "table5", "figure7", "table6")


def _options(parser) -> None:
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=("purchase", "click"),
        default=["purchase", "click"],
        help="Table 2's ranked labels, one table each (the paper ranks purchases, eq. 13: on "
        "its own log, with the size's purchase_rate_multiplier); Figures 5-6 use the first",
    )
    parser.add_argument(
        "--models", nargs="+", choices=TABLE2_MODELS + EXTRA_MODELS, default=TABLE2_MODELS
    )
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="leave the fitted baselines out of Table 2 (another run of the table has them)",
    )


def main(argv: list[str] | None = None) -> None:
    args = experiment_args(
        "adv_hsc_moe", __doc__, SIZES, argv, EXPERIMENTS, "Table 2's seeds", _options, merge=True
    )
    only = set(args.only)
    needs_table2 = only & {"table2", "figure5", "figure6"}
    for number, task in enumerate(args.tasks if needs_table2 else ()):
        prepared = prepare_size(SIZES[args.size], args.artifacts, task=task)
        run_dir = args.artifacts / "runs" / f"adv_hsc_moe_table2_{task}-{args.size}"
        if "table2" in only:
            runs = table2(
                prepared, args.size, task, run_dir, tuple(args.models), args.seeds,
                not args.no_baselines, args.merge,
            )  # fmt: skip
        else:
            runs = saved_runs(task, args.size, run_dir)
        if number == 0 and "figure5" in only and "dnn" in runs:
            figure5(prepared, runs, args.size)
        if number == 0 and "figure6" in only:
            figure6(prepared, runs, args.size, data_dir(SIZES[args.size], args.artifacts, task))
    prepared = (
        prepare_size(SIZES[args.size], args.artifacts) if only & {"figure7", "table6"} else None
    )
    if "table5" in only:
        table5(args.size, args.artifacts)
    if "figure7" in only:
        figure7(prepared, args.size)
    if "table6" in only:
        table6(prepared, args.size)


if __name__ == "__main__":
    main()
