"""we-can experiments: cross-domain AUC per platform (Table 4's shape) and the per-domain
attention weights of price and brand features (Figure 2).

python -m training.experiments.wecan --size small|full [--seeds 1,2 --merge]
Writes results/wecan_table4.json (rows {model, seed, domain, auc, session_auc,
headroom_share}) and
results/wecan_figure2.json + .png (rows {domain, field, weight}: mean attention weight of a field
on the test set, per platform). The generated log's platforms are the paper's three
(general A, high-end B, budget C) with brand mattering more on high-end and price on budget
(training/data/simulator/generator.py); the budget platform's traffic is raised so its test
split has >= 1,000 clicks at full size (common.WECAN_SIZES). All platforms train jointly (the
paper pairs A with B and with C); Deep & Cross on all data stands for the models without
transfer design. Beside them (references.reference_scores, no seed): the oracle rankings
oracle_<ranking> and the per-top-category logistic regression logreg_per_top (its inputs
include platform one-hots and their products with the numeric features). Every row's
headroom_share is of its AUC (the figure Table 4 ranks), against the oracle rows' AUC on the
same platform.
"""

from __future__ import annotations

import numpy as np
import torch

from contract import schema
from training.experiments.common import (
    WECAN_SIZES,
    experiment_args,
    mean_std,
    prepare_size,
    run_seeds,
)
from training.experiments.references import (
    add_headroom_shares,
    model_order,
    print_table,
    reference_scores,
)
from training.metrics import breakdown
from training.results import merged, results_dir, write_results
from training.trainer import predict

MODELS = ("deep_cross", "shared_private", "can", "we_can")
FIELDS = ("log_price", "brand_popularity", "brand")  # what Figure 2's platforms differ in
# we-can Table 4 (joint A & C): AUC on A and C.
PAPER_TABLE4 = {"Self-train (CAN-s)": (0.7456, 0.6734), "TL-WD": (0.7460, 0.6891),
                "WE-CAN": (0.7489, 0.7011)}  # fmt: skip


def figures(labels: np.ndarray, scores: np.ndarray, sessions: np.ndarray, keys) -> dict:
    """labels, scores [n] (click) -> {key: {"auc", "session_auc"}} per key of `keys`."""
    one_session = np.zeros(len(labels), np.int8)  # breakdown's per-key figure is then the AUC
    auc = breakdown(labels, scores, one_session, keys)
    gauc = breakdown(labels, scores, sessions, keys)
    return {key: {"auc": auc[key][0], "session_auc": gauc[key][0]} for key in auc}


def table4(prepared, size: str, seeds=None, merge: bool = False) -> dict:
    """Table 4 over `seeds` (default: the size's); merge=True keeps the rows of other seeds
    already in the file, so seeds can run as separate processes into one table. Returns
    {model: its first seed's model}."""
    test, spec = prepared.test, WECAN_SIZES[size]
    seeds = seeds or spec.seeds
    domains = prepared.test_frame[schema.PLATFORM].to_numpy().astype(str)
    labels = test.labels.numpy()[:, 0]

    def rows_of(name: str, scores: np.ndarray, **extra) -> list[dict]:
        return [
            {"model": name, **extra, "domain": key, **cells}
            for keys in (np.full(len(labels), "all"), domains)
            for key, cells in figures(labels, scores[:, 0], test.sessions, keys).items()
        ]

    order = ["all", *sorted(set(map(str, domains)))]
    clicks = {d: int(labels[domains == d].sum()) for d in order[1:]}

    def report(rows: list[dict]) -> None:
        """Write the table so far (after each model, so a cut-short run leaves its rows)."""
        with merged("wecan_table4", rows, {"size": size}, merge) as rows:
            write(rows)

    def write(rows: list[dict]) -> None:
        rows = add_headroom_shares(rows, "auc", "domain")
        done = [name for name in MODELS if any(r["model"] == name for r in rows)]
        names = model_order(rows, done)
        done_seeds = sorted({r["seed"] for r in rows if r.get("seed") is not None})
        title = f"Table 4 ({size}, {', '.join(done) or 'references'}): seeds {done_seeds}"
        overall = print_table(title, [r for r in rows if r["domain"] == "all"], names,
                              ("auc", "session_auc"))  # fmt: skip
        summary, headroom = (
            {name: {d: mean_std([r[figure] for r in rows if r["model"] == name
                                 and r["domain"] == d]) for d in order} for name in names}
            for figure in ("auc", "headroom_share")
        )  # fmt: skip
        extra = {"size": size, "models_done": done, "seeds_done": done_seeds, "summary": summary,
                 "headroom_share": headroom, "overall": overall, "test_clicks": clicks,
                 "paper": PAPER_TABLE4}  # fmt: skip
        write_results("wecan_table4", rows, extra)
        print(f"AUC by platform (test clicks {clicks})")
        for name in names:
            print(f"  {name:<20} " + "  ".join(f"{d}: {summary[name][d]}" for d in order))

    references, info = reference_scores(prepared, ("click",))
    rows = [r for name, s in references.items() for r in rows_of(name, s, **info.get(name, {}))]
    models = {}
    for name in MODELS:
        runs = run_seeds(prepared, spec, name, seeds)
        models[name] = runs[0][0]
        for seed, (model, _) in zip(seeds, runs):
            rows += rows_of(name, predict(model, test), seed=seed)
        report(rows)
    return models


@torch.no_grad()
def figure2(model, prepared, size: str) -> None:
    """Mean attention weight a^j of the price and brand fields per platform (test rows)."""
    model.eval()
    test, spec = prepared.test, prepared.spec
    rows = torch.arange(min(len(test), 50_000))
    inputs = test.batch(rows)
    request, item = model.inputs(inputs)
    fields = torch.cat([request, item], dim=1)
    column = [f.name for f in spec.request_categorical].index(schema.PLATFORM)
    vocab = spec.request_categorical[column].vocab
    out = []
    for code, platform in enumerate(vocab, start=1):
        weights = model.field_weights(fields, torch.full((len(rows),), code)).mean(0)
        for name in FIELDS:
            weight = float(weights[model.inputs.fields.index(name)])
            out.append({"domain": platform, "field": name, "weight": weight})
    write_results("wecan_figure2", out, {"size": size, "model": "can"})
    plot_figure2(out, list(vocab))
    print("Figure 2 (mean attention weight per platform):")
    for platform in vocab:
        cells = {r["field"]: round(r["weight"], 3) for r in out if r["domain"] == platform}
        print(f"  {platform:<10} {cells}")


def plot_figure2(rows: list[dict], platforms: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(FIELDS)
    for j, name in enumerate(FIELDS):
        heights = [next(r["weight"] for r in rows if r["domain"] == p and r["field"] == name)
                   for p in platforms]  # fmt: skip
        ax.bar(np.arange(len(platforms)) + j * width, heights, width, label=name)
    ax.set_xticks(np.arange(len(platforms)) + width, platforms)
    ax.set_ylabel("mean attention weight a^j")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(results_dir() / "wecan_figure2.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = experiment_args(
        "wecan",
        __doc__,
        WECAN_SIZES,
        argv,
        seeds_help="Table 4's seeds (default: the size's)",
        merge=True,
    )
    spec = WECAN_SIZES[args.size]
    prepared = prepare_size(spec, args.artifacts)
    models = table4(prepared, args.size, args.seeds, args.merge)
    if (args.seeds or spec.seeds)[0] == spec.seeds[0]:  # Figure 2 is the size's first seed's
        figure2(models["can"], prepared, args.size)


if __name__ == "__main__":
    main()
