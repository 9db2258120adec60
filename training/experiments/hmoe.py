"""hmoe experiments: the click and CTCVR figures of Table 3, overall and per scenario.

python -m training.experiments.hmoe --size small|full [--seeds 1,2 --merge]
Writes results/hmoe_table3<the size's results_suffix>.json: rows {model, seed, scenario,
ctr_gauc, ctr_ndcg_at_10, ctcvr_auc, headroom_share} with scenario "all" and each scenario
(country) of the log.
Models: BaseDNN (one bottom, one tower), IMMoE (MMoE with a gate and tower per scenario),
HDNN (BaseDNN + the stacked scenario gate), NoStopGrad-HMoE and HMoE. The log is the mlpr one
(labels 6x denser), so purchases number in the thousands at full size; ranking is by
pCTR x pCVR. Beside them (references.reference_scores, no seed): the oracle rankings
oracle_<ranking> (CTCVR ranked by the true P(click) x P(purchase | click)) and the
per-top-category logistic regression logreg_per_top (one for click, one for purchase). Every
row's headroom_share is of its CTR GAUC, against the oracle rows of its scenario.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from contract import schema
from training.experiments.common import MULTITASK_SIZES, data_dir, experiment_args, mean_std
from training.experiments.references import (
    add_headroom_shares,
    model_order,
    print_table,
    reference_scores,
)
from training.fitting import fit, prepare
from training.metrics import breakdown, per_session_ndcg
from training.results import merged, write_results
from training.trainer import predict

MODELS = ("base_dnn", "immoe", "hdnn", "hmoe_no_stopgrad", "hmoe")
TASKS = ("click", "purchase")
METRICS = ("ctr_gauc", "ctr_ndcg_at_10", "ctcvr_auc")
# hmoe Table 3 (Public AE): CTR-GAUC and CTR-NDCG@10 of the click models.
PAPER_TABLE3 = {"base_dnn": (0.6396, 0.4331), "immoe": (0.6608, 0.4594), "hdnn": (0.6524, 0.4552),
                "hmoe_no_stopgrad": (0.6596, 0.4611), "hmoe": (0.6650, 0.4632)}  # fmt: skip


def figures(labels: np.ndarray, scores: np.ndarray, sessions: np.ndarray, keys) -> dict:
    """labels, scores [n, 2] (click, purchase) -> {key: the Table 3 figures} per key of `keys`."""
    one_session = np.zeros(len(labels), np.int8)  # breakdown's per-key figure is then the AUC
    by_metric = {
        "ctr_gauc": breakdown(labels[:, 0], scores[:, 0], sessions, keys),
        "ctr_ndcg_at_10": breakdown(
            labels[:, 0], scores[:, 0], sessions, keys, partial(per_session_ndcg, k=10)
        ),
        "ctcvr_auc": breakdown(labels[:, 1], scores[:, 1], one_session, keys),
    }
    return {
        key: {m: by_key[key][0] for m, by_key in by_metric.items()} for key in by_metric["ctr_gauc"]
    }


def table3(size: str, artifacts: Path, seeds=None, merge: bool = False) -> list[dict]:
    """Table 3 over `seeds` (default: the size's); merge=True keeps the rows of other seeds
    already in the file, so seeds can run as separate processes into one table."""
    spec = MULTITASK_SIZES[size]
    seeds, name = seeds or spec.seeds, f"hmoe_table3{spec.results_suffix}"
    prepared = prepare(data_dir(spec, artifacts), tasks=TASKS, progress=False)
    test, labels = prepared.test, prepared.test.labels.numpy()
    scenarios = prepared.test_frame[schema.SCENARIO].to_numpy().astype(str)

    def rows_of(name: str, scores: np.ndarray, **extra) -> list[dict]:
        return [
            {"model": name, **extra, "scenario": key, **cells}
            for keys in (np.full(len(labels), "all"), scenarios)
            for key, cells in figures(labels, scores, test.sessions, keys).items()
        ]

    def report(rows: list[dict]) -> list[dict]:
        """Write the table so far (after each seed, so a cut-short run leaves its rows)."""
        with merged(name, rows, {"size": size}, merge) as rows:
            return write(rows)

    def write(rows: list[dict]) -> list[dict]:
        rows = add_headroom_shares(rows, "ctr_gauc", "scenario")
        seeds = sorted({r["seed"] for r in rows if r.get("seed") is not None})
        overall = [r for r in rows if r["scenario"] == "all"]
        names = model_order(overall, MODELS)
        title = f"Table 3 ({size}): mean ± std over seeds {seeds}, references first"
        summary = print_table(title, overall, names, METRICS)
        by_scenario = {
            name: {key: mean_std([r["ctr_gauc"] for r in rows if r["model"] == name
                                  and r["scenario"] == key]) for key in sorted(set(scenarios))}
            for name in names
        }  # fmt: skip
        extra = {"size": size, "seeds_done": seeds, "summary": summary,
                 "ctr_gauc_by_scenario": by_scenario, "paper": PAPER_TABLE3}  # fmt: skip
        write_results(name, rows, extra)
        return rows

    references, info = reference_scores(prepared, TASKS)
    rows = [r for name, s in references.items() for r in rows_of(name, s, **info.get(name, {}))]
    for seed in seeds:
        for model_name in MODELS:
            model, _ = fit(
                prepared, model_name, {"tasks": TASKS}, spec.train_config(seed), progress=False
            )
            rows += rows_of(model_name, predict(model, test), seed=seed)
            print(f"  {model_name} seed {seed} done", flush=True)
        table = report(rows)
    print("paper CTR GAUC / NDCG@10: "
          + ", ".join(f"{n} {g} / {d}" for n, (g, d) in PAPER_TABLE3.items()))  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> None:
    args = experiment_args(
        "hmoe",
        __doc__,
        MULTITASK_SIZES,
        argv,
        seeds_help="Table 3's seeds (default: the size's)",
        merge=True,
    )
    table3(args.size, args.artifacts, args.seeds, args.merge)


if __name__ == "__main__":
    np.seterr(invalid="ignore")
    main()
