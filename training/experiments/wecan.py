"""we-can experiments: cross-domain AUC per platform (Table 4's shape) and the per-domain
attention weights of price and brand features (Figure 2).

python -m training.experiments.wecan --size small|full
Writes results/wecan_table4.json (rows {model, seed, domain, auc, session_auc}) and
results/wecan_figure2.json + .png (rows {domain, field, weight}: mean attention weight of a field
on the test set, per platform). The generated log's platforms are the paper's three
(general A, high-end B, budget C; traffic 100:10:1) with brand mattering more on high-end and
price on budget (training/data/simulator/generator.py). All platforms train jointly (the paper pairs A
with B and with C); Deep & Cross on all data stands for the models without transfer design.
"""

from __future__ import annotations

import numpy as np
import torch

from contract import schema
from training.experiments.common import SIZES, experiment_args, mean_std, prepare_size, run_seeds
from training.metrics import breakdown
from training.results import results_dir, write_results
from training.trainer import predict

MODELS = ("deep_cross", "shared_private", "can", "we_can")
FIELDS = ("log_price", "brand_popularity", "brand")  # what Figure 2's platforms differ in
# we-can Table 4 (joint A & C): AUC on A and C.
PAPER_TABLE4 = {"Self-train (CAN-s)": (0.7456, 0.6734), "TL-WD": (0.7460, 0.6891),
                "WE-CAN": (0.7489, 0.7011)}  # fmt: skip


def table4(prepared, size: str) -> dict:
    test, spec = prepared.test, SIZES[size]
    domains = prepared.test_frame[schema.PLATFORM].to_numpy().astype(str)
    labels = test.labels.numpy()[:, 0]
    one_session = np.zeros(len(labels), np.int8)  # breakdown's per-key figure is then the AUC
    rows, models = [], {}
    for name in MODELS:
        runs = run_seeds(prepared, spec, name, spec.seeds)
        models[name] = runs[0][0]
        for seed, (model, _) in zip(spec.seeds, runs):
            scores = predict(model, test)[:, 0]
            for keys in (np.full(len(labels), "all"), domains):
                auc = breakdown(labels, scores, one_session, keys)
                gauc = breakdown(labels, scores, test.sessions, keys)
                rows += [{"model": name, "seed": seed, "domain": domain, "auc": auc[domain][0],
                          "session_auc": gauc[domain][0]} for domain in auc]  # fmt: skip
        print(f"  {name} done", flush=True)
    order = ["all", *sorted(set(map(str, domains)))]
    summary = {name: {d: mean_std([r["auc"] for r in rows if r["model"] == name
                                   and r["domain"] == d]) for d in order} for name in MODELS}  # fmt: skip
    write_results("wecan_table4", rows, {"size": size, "summary": summary, "paper": PAPER_TABLE4})
    print(f"\nTable 4 ({size}): AUC by platform, mean ± std over seeds {spec.seeds}")
    for name in MODELS:
        print(f"  {name:<16} " + "  ".join(f"{d}: {summary[name][d]}" for d in order))
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
    args = experiment_args("wecan", __doc__, SIZES, argv)
    prepared = prepare_size(SIZES[args.size], args.artifacts)
    models = table4(prepared, args.size)
    figure2(models["can"], prepared, args.size)


if __name__ == "__main__":
    main()
