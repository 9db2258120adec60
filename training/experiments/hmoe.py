"""hmoe experiments: the click and CTCVR figures of Table 3, overall and per scenario.

python -m training.experiments.hmoe --size small|full
Writes results/hmoe_table3.json: rows {model, seed, scenario, ctr_gauc, ctr_ndcg_at_10,
ctcvr_auc} with scenario "all" and each scenario (country) of the log. Models: BaseDNN (one
bottom, one tower), IMMoE (MMoE with a gate and tower per scenario), HDNN (BaseDNN + the
stacked scenario gate), NoStopGrad-HMoE and HMoE. The log is the mlpr one (labels 6x denser),
so purchases number in the thousands at full size; ranking is by pCTR x pCVR.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from contract import schema
from training.experiments.common import experiment_args, mean_std
from training.experiments.mlpr import MLPR_SIZES, data_dir
from training.fitting import fit, prepare
from training.metrics import global_auc, ndcg_at_k, session_auc
from training.results import write_results
from training.trainer import predict

MODELS = ("base_dnn", "immoe", "hdnn", "hmoe_no_stopgrad", "hmoe")
TASKS = ("click", "purchase")
METRICS = ("ctr_gauc", "ctr_ndcg_at_10", "ctcvr_auc")
# hmoe Table 3 (Public AE): CTR-GAUC and CTR-NDCG@10 of the click models.
PAPER_TABLE3 = {"base_dnn": (0.6396, 0.4331), "immoe": (0.6608, 0.4594), "hdnn": (0.6524, 0.4552),
                "hmoe_no_stopgrad": (0.6596, 0.4611), "hmoe": (0.6650, 0.4632)}  # fmt: skip


def figures(labels: np.ndarray, scores: np.ndarray, sessions: np.ndarray) -> dict[str, float]:
    """labels, scores [n, 2] (click, purchase) -> the Table 3 figures."""
    return {
        "ctr_gauc": session_auc(labels[:, 0], scores[:, 0], sessions),
        "ctr_ndcg_at_10": ndcg_at_k(labels[:, 0], scores[:, 0], sessions, k=10),
        "ctcvr_auc": global_auc(labels[:, 1], scores[:, 1]),
    }


def table3(size: str, artifacts: Path) -> list[dict]:
    prepared = prepare(data_dir(size, artifacts), tasks=TASKS, progress=False)
    test, frame = prepared.test, prepared.test_frame
    scenarios = frame[schema.SCENARIO].to_numpy()
    labels = test.labels.numpy()
    settings = MLPR_SIZES[size]
    rows = []
    for seed in settings.seeds:
        for name in MODELS:
            config = replace(settings.train, seed=seed)
            model, _ = fit(prepared, name, {"tasks": TASKS}, config, progress=False)
            scores = predict(model, test)
            rows.append({"model": name, "seed": seed, "scenario": "all",
                         **figures(labels, scores, test.sessions)})  # fmt: skip
            for scenario in sorted(set(scenarios)):
                mask = scenarios == scenario
                rows.append({"model": name, "seed": seed, "scenario": str(scenario),
                             **figures(labels[mask], scores[mask], test.sessions[mask])})  # fmt: skip
            print(f"  {name} seed {seed} done", flush=True)
    summary = {
        name: {m: mean_std([r[m] for r in rows if r["model"] == name and r["scenario"] == "all"])
               for m in METRICS}
        for name in MODELS
    }  # fmt: skip
    write_results("hmoe_table3", rows, {"size": size, "summary": summary, "paper": PAPER_TABLE3})
    print(f"\nTable 3 ({size}): mean ± std over seeds {settings.seeds}; paper CTR figures in []")
    for name in MODELS:
        paper = PAPER_TABLE3[name]
        cells = [summary[name][m] for m in METRICS]
        print(f"  {name:<18} GAUC {cells[0]} [{paper[0]}]  NDCG@10 {cells[1]} [{paper[1]}]  "
              f"CTCVR AUC {cells[2]}")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    args = experiment_args("hmoe", __doc__, MLPR_SIZES, argv)
    table3(args.size, args.artifacts)


if __name__ == "__main__":
    np.seterr(invalid="ignore")
    main()
