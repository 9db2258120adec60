"""Why does the gated MoE learn less than a per-top-category logistic regression? Table 2's
models with one input or expert option changed at a time, and the logistic regression
with its inputs taken apart (issue 12).

python -m training.experiments.table2_diagnosis --size full-quick --variants dnn moe_linear
    [--seed 1] [--steps 400 --epochs 10] [--logistic]
Appends its rows to results/adv_hsc_moe_table2_diagnosis<the size's results suffix>.json
(under a lock, so variants and seeds can run as separate processes): per variant and seed,
test session AUC, headroom share, the validation AUC per epoch and, for a gated model, the
routing diagnostics.
"""

from __future__ import annotations

import fcntl
import json
from dataclasses import replace

import numpy as np
import torch

from training import baselines
from training.experiments.common import SIZES, experiment_args, prepare_size
from training.fitting import fit
from training.gate_diagnostics import diagnose
from training.metrics import session_auc
from training.oracle import headroom_share, oracle_metrics
from training.results import results_dir, write_results

NAME = "adv_hsc_moe_table2_diagnosis"
_OFF = {"category_match": False, "linear_experts": False}  # the recipes before issue 12
_GATE = {"gate_lr_scale": 10.0}  # the full-quick size's tuning trial for a gated model
_GATE_X1 = {"gate_lr_scale": 1.0}
# Issue 12: the brand id (2,000 values, ~500 rows each at full-quick) gives every network a
# table that memorises rows; the logistic regression reads brand popularity, not the id.
_NO_BRAND = {"unread_item_fields": ("brand",)}
# Halve the learning rate after each epoch without a better validation AUC, with patience
# to use the smaller steps. "lr", "lr_decay" and "patience" set the run, not the model.
_DECAY = {"lr_decay": 0.5, "patience": 3}
TRAIN_OPTIONS = ("lr", "lr_decay", "patience")
_TOP = {**_GATE_X1, **_NO_BRAND, **_DECAY, "gate_inputs": ("top_category",)}
# name -> (recipe, options)
VARIANTS = {
    "dnn": ("dnn", _OFF),
    "dnn_linear": ("dnn", {**_OFF, "linear_experts": True}),
    "dnn_match": ("dnn", {**_OFF, "category_match": True}),
    "moe_linear": ("moe", {**_OFF, **_GATE, "linear_experts": True}),
    "moe_match": ("moe", {**_OFF, **_GATE, "category_match": True}),
    "moe_linear_gate_tc_sc": (
        "moe",
        {
            **_OFF,
            **_GATE,
            "linear_experts": True,
            "gate_inputs": ("top_category", "query_category"),
        },
    ),
    # Issue 12, with today's recipes (category match on, gate lr x10): can the experts learn
    # the per-category weights faster? A softer gate (x1: the other point of the full grid,
    # each expert trained on more rows) or 3x the experts' learning rate (9e-3; the gate's
    # stays 3e-2). "lr" sets the run's learning rate, not a model option.
    "moe_gate_lr_x1": ("moe", _GATE_X1),
    "adv_hsc_moe_gate_lr_x1": ("adv_hsc_moe", _GATE_X1),
    "moe_expert_lr_x3": ("moe", {"lr": 9e-3, "gate_lr_scale": 10.0 / 3}),
    "dnn_lr_x3": ("dnn", {"lr": 9e-3}),
    # Without the brand id, with the decaying learning rate, and both.
    "dnn_no_brand": ("dnn", _NO_BRAND),
    "dnn_decay": ("dnn", _DECAY),
    "dnn_no_brand_decay": ("dnn", {**_NO_BRAND, **_DECAY}),
    "moe_gate_lr_x1_no_brand": ("moe", {**_GATE_X1, **_NO_BRAND}),
    "moe_gate_lr_x1_no_brand_decay": ("moe", {**_GATE_X1, **_NO_BRAND, **_DECAY}),
    "adv_hsc_moe_gate_lr_x1_no_brand": ("adv_hsc_moe", {**_GATE_X1, **_NO_BRAND}),
    "adv_hsc_moe_gate_lr_x1_no_brand_decay": (
        "adv_hsc_moe",
        {**_GATE_X1, **_NO_BRAND, **_DECAY},
    ),
    # The paper's 512 x 256 towers (full-quick has 128 x 64).
    "dnn_no_brand_decay_512": ("dnn", {**_NO_BRAND, **_DECAY, "hidden": (512, 256)}),
    "adv_hsc_moe_gate_lr_x1_no_brand_decay_512": (
        "adv_hsc_moe",
        {**_GATE_X1, **_NO_BRAND, **_DECAY, "hidden": (512, 256)},
    ),
    # The gate reads the top-category, the grouping of the per-top regression (Table 5's
    # gate-input question asked of this log).
    "moe_gate_top_no_brand_decay": ("moe", _TOP),
    # moe_top_gate's trial at full-tuned (gate lr x10), for the h = 0 control.
    "moe_gate_top_x10_no_brand_decay": ("moe", {**_TOP, **_GATE}),
    # The top-category gate in Adv & HSC-MoE, with 2 of 10 experts per row, with the
    # paper's towers; a MoE gate reading both categories.
    "adv_hsc_moe_gate_top_no_brand_decay": ("adv_hsc_moe", _TOP),
    "moe_gate_top_k2_no_brand_decay": ("moe", {**_TOP, "top_k": 2}),
    "moe_gate_top_no_brand_decay_512": ("moe", {**_TOP, "hidden": (512, 256)}),
    "moe_gate_top_sub_no_brand_decay": (
        "moe",
        {**_TOP, "gate_inputs": ("top_category", "query_category")},
    ),
}


def run_variant(prepared, size: str, name: str, seed: int, steps: int, epochs: int, oracle):
    recipe, options = VARIANTS[name]
    model_options = {k: v for k, v in options.items() if k not in TRAIN_OPTIONS}
    run_options = {k: v for k, v in options.items() if k in TRAIN_OPTIONS}
    train = replace(
        SIZES[size].train, epochs=epochs, max_steps_per_epoch=steps, seed=seed, **run_options
    )
    model, metrics = fit(
        prepared, recipe, {"hidden": SIZES[size].hidden, **model_options}, train, progress=False
    )
    auc = metrics["test"]["session_auc"]
    return {
        "variant": name, "recipe": recipe, "options": options, "seed": seed,
        "steps_per_epoch": steps, "session_auc": auc,
        "headroom_share": headroom_share(auc, oracle),
        "best_epoch": metrics["best_epoch"],
        "valid_auc_per_epoch": [h["valid_session_auc"] for h in metrics["history"]],
        "gate": diagnose(model, prepared.valid, prepared.spec),
    }  # fmt: skip


def logistic_parts(prepared, oracle, c: float = 0.01) -> list[dict]:
    """The logistic regression's two advantages taken apart: per-top weights or one global
    weight vector, with or without the same-sub-category input (its last column)."""
    x = {s: baselines.design_matrix(prepared.spec, getattr(prepared, s)) for s in ("train", "test")}
    mean, std = x["train"].mean(0), x["train"].std(0) + 1e-9
    x = {k: (v - mean) / std for k, v in x.items()}
    group = {s: baselines._groups(prepared.spec, getattr(prepared, s)) for s in ("train", "test")}
    y, test = prepared.train.labels.numpy()[:, 0], prepared.test
    rows = []
    for per_top in (True, False):
        for match in (True, False):
            columns = slice(None) if match else slice(0, -1)
            scores = np.zeros(len(x["test"]))
            if not per_top:  # one group: every row
                group = {k: np.zeros(len(v), dtype=int) for k, v in x.items()}
            for g in np.unique(group["train"]):
                mine, theirs = group["train"] == g, group["test"] == g
                model = baselines._fit(x["train"][mine][:, columns], y[mine], c)
                if model is not None and theirs.any():
                    scores[theirs] = model.decision_function(x["test"][theirs][:, columns])
            auc = session_auc(test.labels.numpy()[:, 0], scores, test.sessions)
            rows.append({
                "variant": f"logreg_{'per_top' if per_top else 'global'}"
                f"{'' if match else '_without_same_sub'}", "C": c, "session_auc": auc,
                "headroom_share": headroom_share(auc, oracle),
            })  # fmt: skip
    return rows


def append_rows(rows: list[dict], extra: dict) -> None:
    """Add rows to the size's diagnosis file (the size's results suffix: h = 0 has its own),
    replacing earlier rows of the same variant and seed."""
    name = NAME + SIZES[extra["size"]].results_suffix
    path = results_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            earlier = json.loads(path.read_text())["rows"]
        except (OSError, ValueError, KeyError):
            earlier = []
        ours = {(r["variant"], r.get("seed")) for r in rows}
        kept = [r for r in earlier if (r["variant"], r.get("seed")) not in ours]
        write_results(name, kept + rows, extra)


def main(argv: list[str] | None = None) -> None:
    def options(parser) -> None:
        parser.add_argument("--variants", nargs="*", choices=sorted(VARIANTS), default=[])
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--steps", type=int, default=400, help="steps per epoch")
        parser.add_argument("--epochs", type=int, default=10)
        parser.add_argument("--logistic", action="store_true", help="the regression's parts")

    args = experiment_args("table2_diagnosis", __doc__, SIZES, argv, add_options=options)
    torch.set_num_threads(1)
    prepared = prepare_size(SIZES[args.size], args.artifacts)
    oracle = oracle_metrics(prepared.data_dir, prepared.test_frame, "click")
    rows = logistic_parts(prepared, oracle) if args.logistic else []
    for name in args.variants:
        rows.append(
            run_variant(prepared, args.size, name, args.seed, args.steps, args.epochs, oracle)
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "gate"}), flush=True)
    append_rows(rows, {"size": args.size, "task": "click"})


if __name__ == "__main__":
    main()
