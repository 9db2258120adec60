"""mlpr Figure 2: gain over XGBoost by impression-count group of the test query-item pairs.

The paper sorts the test pairs by their number of impressions and cuts at the 25th and 75th
percentiles. In the generated log most pairs are shown once, so the sort key is (pair
impressions, query impressions) in the whole log: the 0-25% group holds once-shown pairs of
rare queries, the 75-100% group the pairs shown most often.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from contract.schema import ITEM_ID, QUERY_TEXT, TASKS  # noqa: E402
from training.experiments.mlpr_eval import task_metrics  # noqa: E402
from training.fitting import Prepared  # noqa: E402
from training.results import results_dir, write_results  # noqa: E402

GROUPS = ("0-25%", "25-75%", "75-100%")
CUTS = (0.25, 0.75)


def impression_groups(log: pd.DataFrame, test_frame: pd.DataFrame) -> np.ndarray:
    """[n_test] group 0, 1, 2 by the percentile of (pair impressions, query impressions)."""
    pair = log.groupby([QUERY_TEXT, ITEM_ID]).size().rename("pair")
    query = log.groupby(QUERY_TEXT).size().rename("query")
    keys = test_frame[[QUERY_TEXT, ITEM_ID]].join(pair, on=[QUERY_TEXT, ITEM_ID])
    keys = keys.join(query, on=QUERY_TEXT).fillna(0)  # a pair or query absent from the log: 0
    order = np.lexsort((keys["query"].to_numpy(), keys["pair"].to_numpy()))
    percentile = np.empty(len(order))
    percentile[order] = np.arange(len(order)) / max(len(order), 1)
    return np.searchsorted(CUTS, percentile, side="right")


def figure2(prepared: Prepared, size: str, scores: dict, data_dir: Path) -> None:
    """Rows {model, task, group, auc, ndcg_at_5, *_gain_over_xgboost}; means over seeds."""
    log = pd.read_parquet(data_dir / "impressions.parquet", columns=[QUERY_TEXT, ITEM_ID])
    group = impression_groups(log, prepared.test_frame)
    labels, sessions = prepared.test.labels.numpy(), prepared.test.sessions
    per_model: dict = {}
    for (name, _seed), s in scores.items():
        for g in range(len(GROUPS)):
            mask = group == g
            for t, task in enumerate(TASKS):
                m = task_metrics(labels[mask, t], s[mask, t], sessions[mask])
                per_model.setdefault((name, task, g), []).append(m)
    rows = []
    for (name, task, g), ms in per_model.items():
        mean = {k: float(np.nanmean([m[k] for m in ms])) for k in ("auc", "ndcg_at_5")}
        rows.append({"model": name, "task": task, "group": GROUPS[g],
                     "rows": int((group == g).sum()), **mean})  # fmt: skip
    base = {(r["task"], r["group"]): r for r in rows if r["model"] == "xgboost"}
    for r in rows:
        b = base[r["task"], r["group"]]
        for k in ("auc", "ndcg_at_5"):
            r[f"{k}_gain_over_xgboost"] = 100 * (r[k] - b[k]) / b[k]
    write_results("mlpr_figure2", rows, {"size": size, "groups": GROUPS})
    _plot(rows)
    print("Figure 2 (AUC gain over XGBoost in %, groups " + ", ".join(GROUPS) + "):")
    for r in rows:
        if r["group"] == GROUPS[0] and r["model"] != "xgboost":
            gains = [x["auc_gain_over_xgboost"] for x in rows
                     if x["model"] == r["model"] and x["task"] == r["task"]]  # fmt: skip
            print(f"  {r['model']:<12} {r['task']:<9} " + " ".join(f"{v:+.2f}" for v in gains))


def _plot(rows: list[dict]) -> None:
    models = sorted({r["model"] for r in rows} - {"xgboost"})
    fig, axes = plt.subplots(2, len(TASKS), figsize=(13, 7), sharex=True)
    for col, task in enumerate(TASKS):
        for row, metric in enumerate(("auc", "ndcg_at_5")):
            ax = axes[row, col]
            for model in models:
                points = [r for r in rows if r["model"] == model and r["task"] == task]
                points.sort(key=lambda r: GROUPS.index(r["group"]))
                ax.plot(GROUPS, [p[f"{metric}_gain_over_xgboost"] for p in points],
                        marker="o", label=model)  # fmt: skip
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_title(f"{task}: {metric} gain over XGBoost (%)", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(results_dir() / "mlpr_figure2.png", dpi=110)
    plt.close(fig)
