"""Why does the noisy top-K gate stay near uniform? One model, the gate's settings varied
one at a time at a fixed budget, each with its routing diagnostics.

python -m training.experiments.gate_study --size full-quick [--steps 200 --epochs 3]
Writes results/adv_hsc_moe_gate_study.json: per variant, test session AUC, headroom share
and `gate_diagnostics.diagnose` on the validation split.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from training.experiments.common import SIZES, experiment_args, prepare_size
from training.fitting import fit
from training.gate_diagnostics import diagnose
from training.oracle import has_oracle, headroom_share, oracle_metrics
from training.results import write_results

# name -> (recipe, options): today's gate (zero init, own embedding, balance 1e-2) and the
# changes the issue suspects, one at a time, then together.
VARIANTS = {
    "before": ("moe", {"shared_gate_embedding": False, "balance_weight": 1e-2}),
    "no_balance": ("moe", {"shared_gate_embedding": False, "balance_weight": 0.0}),
    "no_balance_gate_lr_x10": (
        "moe",
        {"shared_gate_embedding": False, "balance_weight": 0.0, "gate_lr_scale": 10.0},
    ),
    "shared_embedding_init_1": (
        "moe",
        {"shared_gate_embedding": True, "balance_weight": 0.0, "gate_init_std": 1.0},
    ),
    "recipe_gate_lr_x10": ("moe", {"gate_lr_scale": 10.0}),
}


def study(size: str, artifacts, steps: int, epochs: int) -> list[dict]:
    prepared = prepare_size(SIZES[size], artifacts)
    oracle = (
        oracle_metrics(prepared.data_dir, prepared.test_frame, "click")
        if has_oracle(prepared.data_dir)
        else None
    )
    train = replace(SIZES[size].train, epochs=epochs, max_steps_per_epoch=steps, patience=epochs)
    rows = []
    for name, (recipe, options) in VARIANTS.items():
        model, metrics = fit(prepared, recipe, SIZES[size].options(options), train, progress=False)
        auc = metrics["test"]["session_auc"]
        row = {
            "variant": name,
            "recipe": recipe,
            "options": options,
            **metrics["test"],
            "headroom_share": headroom_share(auc, oracle) if oracle else float("nan"),
            "gate": diagnose(model, prepared.valid, prepared.spec),
        }
        rows.append(row)
        gate = row["gate"]
        print(
            f"{name:<26} AUC {auc:.4f} share {row['headroom_share']:.3f} entropy "
            f"{gate['softmax_entropy']:.3f}/{gate['softmax_entropy_uniform']:.3f} largest "
            f"{gate['mean_largest_weight']:.3f} NMI {gate['normalised_mutual_information']:.3f}",
            flush=True,
        )
    write_results("adv_hsc_moe_gate_study", rows, {"size": size, "steps": steps, "epochs": epochs})
    return rows


def main(argv: list[str] | None = None) -> None:
    def options(parser) -> None:
        parser.add_argument("--steps", type=int, default=200, help="steps per epoch")
        parser.add_argument("--epochs", type=int, default=3)

    args = experiment_args("gate_study", __doc__, SIZES, argv, add_options=options)
    torch.set_num_threads(1)
    study(args.size, args.artifacts, args.steps, args.epochs)


if __name__ == "__main__":
    main()
