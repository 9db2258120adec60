"""The online experiment report: per variant CTR, add-to-cart rate and CTCVR with 95% CIs,
the relative lift against control with its CI and test, and the sample size a minimum
detectable effect needs.

    python -m pipelines.experiment_report --metrics http://127.0.0.1:8000 --control control
    python -m pipelines.experiment_report --served-log served/ --experiment abc
    python -m pipelines.experiment_report --shoppers shoppers.json

Where the counts come from: `--metrics` reads the service's /metrics
(`moerank_events_total{model,experiment,variant,type}`: what it was told happened);
`--served-log` reads a served-log directory (every returned item an impression, labelled
by its events, through `training.served_log`); `--shoppers` reads the summary of
`python -m loadtest --shoppers` (what the shoppers did, and the expected counts under the
generator's true model, reported beside the observed).

The statistics (statsmodels): every rate is events per impression (CTR = clicks,
ATC rate = add-to-carts, CTCVR = purchases, each / impressions); its CI is Wilson's score
interval. The lift of a variant is its rate over control's minus one, with the CI of the
ratio of two independent proportions (log method) and a two-sided z-test of equal
proportions. The sample size is the impressions per arm a two-sided test at `alpha` needs to
detect a relative lift of `mde` on control's rate with `power` (Cohen's h, NormalIndPower).
Impressions are treated as independent; shoppers are assigned by user, and one user's
impressions are correlated, so these intervals are somewhat narrower than a cluster-robust
analysis would give.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

# metric -> (the event count over impressions, the expected count under the true model)
METRICS = {
    "ctr": ("clicks", "expected_clicks"),
    "atc_rate": ("add_to_carts", "expected_add_to_carts"),
    "ctcvr": ("purchases", "expected_purchases"),
}
EVENT_COUNTS = {"impression": "impressions", "click": "clicks"}
EVENT_COUNTS |= {"add_to_cart": "add_to_carts", "purchase": "purchases"}
NO_VARIANT = ("", "none")  # the service's label value for a request in no experiment


def rate_with_ci(count: float, total: float, alpha: float) -> dict:
    if total <= 0:
        return {"rate": None, "ci": [None, None]}
    low, high = proportion_confint(int(count), int(total), alpha=alpha, method="wilson")
    return {"rate": count / total, "ci": [float(low), float(high)]}


def lift(treated: tuple[float, float], control: tuple[float, float], alpha: float) -> dict:
    """Relative lift of (count, impressions) `treated` over `control`, its CI and p-value."""
    (c1, n1), (c0, n0) = treated, control
    if min(c1, c0) <= 0 or min(n1, n0) <= 0:
        return {"lift": None, "ci": [None, None], "p_value": None}
    low, high = confint_proportions_2indep(
        int(c1), int(n1), int(c0), int(n0), method="log", compare="ratio", alpha=alpha
    )
    _, p_value = proportions_ztest([int(c1), int(c0)], [int(n1), int(n0)])
    return {"lift": (c1 / n1) / (c0 / n0) - 1, "ci": [low - 1, high - 1], "p_value": float(p_value)}


def sample_size(rate: float, mde: float, alpha: float, power: float) -> int | None:
    """Impressions per arm to detect a relative lift `mde` on `rate` (two-sided)."""
    if not 0 < rate < 1 or not 0 < rate * (1 + mde) < 1:
        return None
    effect = proportion_effectsize(rate * (1 + mde), rate)
    return math.ceil(NormalIndPower().solve_power(effect, alpha=alpha, power=power, ratio=1.0))


def report(
    arms: dict[str, dict[str, float]],
    control: str,
    mde: float = 0.02,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict:
    """arms: name -> counts (impressions, clicks, add_to_carts, purchases, and optionally
    requests and expected_* sums). Returns the report as JSON-ready data."""
    if control not in arms:
        raise ValueError(f"control arm {control!r} not among {sorted(arms)}")
    base = arms[control]
    out = {"control": control, "alpha": alpha, "mde": mde, "power": power, "arms": {}}
    for name, counts in arms.items():
        n = counts.get("impressions", 0)
        row = {"requests": counts.get("requests"), "impressions": n}
        for metric, (event, expected) in METRICS.items():
            row[metric] = rate_with_ci(counts.get(event, 0), n, alpha)
            if expected in counts and n:
                row[metric]["expected"] = counts[expected] / n
            if name != control:
                treated, untreated = (
                    (counts.get(event, 0), n),
                    (base.get(event, 0), base["impressions"]),
                )
                row[metric]["vs_control"] = lift(treated, untreated, alpha)
        out["arms"][name] = row
    out["sample_size_per_arm"] = {
        metric: sample_size(out["arms"][control][metric]["rate"] or 0, mde, alpha, power)
        for metric in METRICS
    }
    return out


def wins(result: dict, arm: str, metric: str = "ctr") -> bool:
    """The report's test: `arm` beats control on `metric` (two-sided test at alpha, lift > 0)."""
    versus = result["arms"][arm][metric].get("vs_control") or {}
    p_value = versus.get("p_value")
    return p_value is not None and p_value < result["alpha"] and versus["lift"] > 0


def arms_from_metrics(text: str, experiment: str | None = None) -> dict[str, dict[str, float]]:
    """Event counts per arm (the variant, or the model outside experiments) from a /metrics
    page, optionally of one experiment only."""
    arms: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "moerank_events_total":
                continue
            labels = sample.labels
            if experiment is not None and labels.get("experiment") != experiment:
                continue
            variant = labels.get("variant", "")
            arm = variant if variant not in NO_VARIANT else labels.get("model", "")
            counts = arms.setdefault(arm, dict.fromkeys(EVENT_COUNTS.values(), 0.0))
            if labels.get("type") in EVENT_COUNTS:
                counts[EVENT_COUNTS[labels["type"]]] += sample.value
    return arms


def arms_from_served_log(directory: Path, experiment: str | None = None) -> dict[str, dict]:
    """Counts per arm from a served log: every returned item is an impression, labelled by
    the events sent back for it (training.served_log, the same reader training uses)."""
    from training.served_log import to_impressions

    frame = to_impressions(directory).frame
    if frame.empty:
        return {}
    if experiment is not None:
        frame = frame[frame["served_experiment"] == experiment]
    arm = frame["served_variant"].fillna(frame["served_model"]).rename("arm")
    sums = frame.groupby(arm)[["click", "atc", "purchase"]].sum()
    requests = frame.groupby(arm)["session_id"].nunique()
    return {
        name: {
            "requests": float(requests[name]),
            "impressions": float((arm == name).sum()),
            "clicks": float(row["click"]),
            "add_to_carts": float(row["atc"]),
            "purchases": float(row["purchase"]),
        }
        for name, row in sums.iterrows()
    }


def scrape_arms(url: str, experiment: str | None = None) -> dict[str, dict[str, float]]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=10) as answer:
        return arms_from_metrics(answer.read().decode(), experiment)


def _cell(value: dict) -> str:
    if value.get("rate") is None:
        return "-"
    low, high = value["ci"]
    return f"{value['rate']:.4%} [{low:.4%}, {high:.4%}]"


def format_table(result: dict) -> str:
    lines = [f"{'arm':<14} {'impressions':>11}  " + "  ".join(f"{m:<30}" for m in METRICS)]
    for name, row in result["arms"].items():
        lines.append(
            f"{name[:14]:<14} {int(row['impressions']):>11}  "
            + "  ".join(f"{_cell(row[m]):<30}" for m in METRICS)
        )
        if "expected" in row["ctr"]:
            expected = "  ".join(f"{row[m].get('expected', float('nan')):<30.4%}" for m in METRICS)
            lines.append(f"{'  expected':<14} {'':>11}  {expected}")
        for metric in METRICS:
            versus = row[metric].get("vs_control")
            if versus and versus["lift"] is not None:
                low, high = versus["ci"]
                lines.append(
                    f"{'':<14} {metric} vs {result['control']}: {versus['lift']:+.2%} "
                    f"[{low:+.2%}, {high:+.2%}], p = {versus['p_value']:.3g}"
                )
    sizes = ", ".join(f"{m} {n if n else '-'}" for m, n in result["sample_size_per_arm"].items())
    lines.append(
        f"impressions per arm to detect a {result['mde']:+.1%} relative lift "
        f"(alpha {result['alpha']}, power {result['power']}): {sizes}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.experiment_report", description=__doc__.split("\n\n")[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--metrics", help="service URL whose /metrics holds the event counts")
    source.add_argument("--served-log", type=Path, help="a served-log directory")
    source.add_argument(
        "--shoppers", type=Path, help="summary JSON of python -m loadtest --shoppers"
    )
    parser.add_argument(
        "--experiment", help="only this experiment's arms (--metrics, --served-log)"
    )
    parser.add_argument("--control", default="control", help="the arm lifts are measured against")
    parser.add_argument("--mde", type=float, default=0.02, help="minimum detectable relative lift")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--out", type=Path, help="write the report JSON here")
    args = parser.parse_args(argv)
    if args.metrics:
        arms = scrape_arms(args.metrics, args.experiment)
    elif args.served_log:
        arms = arms_from_served_log(args.served_log, args.experiment)
    else:
        arms = json.loads(args.shoppers.read_text())["arms"]
    try:
        result = report(arms, args.control, args.mde, args.alpha, args.power)
    except ValueError as error:
        parser.error(str(error))
    print(format_table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
