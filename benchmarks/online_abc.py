"""The A/B/C test with simulated shoppers, then one round of the online-learning loop.

    python benchmarks/online_abc.py --train-log artifacts/online/train-log \\
        --shopper-log artifacts/online/shopper-log --runs artifacts/online/runs \\
        --requests 200000 --duration 1500 --round-requests 60000 --round-duration 600

Before it: the two logs (same world, disjoint sessions) and the two trained rankers,
    python -m training.data.generate --impressions 500000 --seed 0 --out <train-log>
    python -m training.data.generate --impressions 1000000 --seed 0 --first-chunk 1000 \\
        --out <shopper-log>
    python -m training.train --data <train-log> --model dnn|mmoe_10 --set 'hidden=(128, 64)' \\
        --epochs 3 --lr 1e-3 --patience 1 --out <runs>/dnn|mmoe_10

Three equal-share variants of experiment "abc" keyed on user_id: `random` (the DNN recipe
with its untrained, seeded initial weights: a fixed random function of the features that no
label ever shaped), `control` (the trained DNN) and `best` (10-MMoE, the best of Adv &
HSC-MoE Table 2 here). One uvicorn process serves them from a models file, with the served
log on. Simulated shoppers (`python -m loadtest --shoppers`) from the held-out log drive it
for --requests or --duration. Then the report (from /metrics and from the shoppers' own
tally, with the expected rates under the generator's true model), the offline session AUC of
the three on the training log's test split, and a plot of online CTR per variant over time
with 95% bands. Then one round (`pipelines.online_round`): `best` is fine-tuned on the served
log, exported, served as a canary beside `best` in the same service, driven by shoppers, and
promoted or rolled back by the report's test.

Writes results/online_abc.json and .png, results/online_round.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.service_process import ServiceProcess  # noqa: E402
from loadtest.shopper_run import ShopperConfig, run_shoppers  # noqa: E402
from pipelines.experiment_report import format_table, report, scrape_arms  # noqa: E402
from pipelines.online_round import (  # noqa: E402
    RoundConfig,
    render_models_file,
    run_round,
    simulated_shoppers,
)
from training.results import cpu_model  # noqa: E402

ARMS = {"random": "random", "control": "dnn", "best": "mmoe_10"}  # variant -> model


def untrained_checkpoint(reference: Path, out: Path, seed: int = 0) -> None:
    """The reference checkpoint's recipe and feature spec with seeded initial weights."""
    from contract.features import FeatureSpec
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.models import registry
    from training.trainer import seed_everything

    _, ckpt = load_checkpoint(reference)
    seed_everything(seed)
    config = registry.config_from_dict(ckpt["family"], ckpt["config"])
    spec = FeatureSpec.from_dict(ckpt["spec"])
    model = registry.build(ckpt["family"], config, spec, ckpt["category_counts"]).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics = {"untrained": True, "seed": seed}
    save_checkpoint(out, ckpt["name"], model, spec, metrics, ckpt["category_counts"])


def offline_auc(train_log: Path, checkpoints: dict[str, Path]) -> dict[str, dict]:
    """Session AUC and NDCG@10 of each checkpoint on the training log's test split."""
    from training.checkpoint import load_checkpoint
    from training.fitting import prepare, test_metrics

    prepared = prepare(train_log, progress=False)
    return {
        name: test_metrics(load_checkpoint(p)[0], prepared.test) for name, p in checkpoints.items()
    }


def export_bundle(checkpoint: Path, out: Path, version: str) -> None:
    if not (out / "manifest.json").exists():
        from export.bundle import write_bundle

        write_bundle(checkpoint, out, None, version=version)


def ctr_over_time(snapshots: list[dict], alpha: float = 0.05) -> dict[str, dict[str, list]]:
    """Per arm, cumulative online CTR at each snapshot with its Wilson interval."""
    series: dict[str, dict[str, list]] = {}
    for snap in snapshots:
        for arm, counts in snap["arms"].items():
            if counts["impressions"] <= 0:
                continue
            low, high = proportion_confint(
                int(counts["clicks"]), int(counts["impressions"]), alpha=alpha, method="wilson"
            )
            row = series.setdefault(arm, {k: [] for k in ("t", "ctr", "low", "high", "expected")})
            row["t"].append(snap["elapsed_s"] / 60)
            row["ctr"].append(counts["clicks"] / counts["impressions"])
            row["low"].append(low)
            row["high"].append(high)
            row["expected"].append(counts["expected_clicks"] / counts["impressions"])
    return series


def plot(series: dict[str, dict[str, list]], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arm, row in sorted(series.items()):
        (line,) = ax.plot(row["t"], row["ctr"], label=f"{arm} (online)")
        ax.fill_between(row["t"], row["low"], row["high"], color=line.get_color(), alpha=0.25)
        ax.plot(row["t"], row["expected"], ls="--", color=line.get_color(), lw=1,
                label=f"{arm} (expected, ground truth)")  # fmt: skip
    ax.set_xlabel("minutes into the run")
    ax.set_ylabel("cumulative CTR (clicks / impressions)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def orderings(result: dict, offline: dict[str, dict]) -> dict:
    """Arms ranked by online CTR, by expected CTR and by offline session AUC (best first)."""
    arms = result["arms"]

    def by(key) -> list[str]:
        return sorted(arms, key=key, reverse=True)

    online = by(lambda a: arms[a]["ctr"]["rate"])
    expected = by(lambda a: arms[a]["ctr"]["expected"])
    auc = by(lambda a: offline[a]["session_auc"])
    return {
        "online_ctr": online,
        "expected_ctr": expected,
        "offline_session_auc": auc,
        "online_agrees_with_expected": online == expected,
        "online_agrees_with_offline_auc": online == auc,
    }


def machine() -> dict:
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count()}


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-log", type=Path, required=True)
    parser.add_argument("--shopper-log", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True, help="<runs>/dnn, <runs>/mmoe_10")
    parser.add_argument("--work", type=Path, default=Path("artifacts/online/abc"))
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--duration", type=float, default=1500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers")
    parser.add_argument("--round-requests", type=int, default=60_000)
    parser.add_argument("--round-duration", type=float, default=600)
    parser.add_argument("--round-steps", type=int, default=400, help="fine-tuning steps per epoch")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    (work / "bundles").mkdir(parents=True, exist_ok=True)
    checkpoints = {
        "control": args.runs / "dnn" / "model.pt",
        "best": args.runs / "mmoe_10" / "model.pt",
    }
    checkpoints["random"] = args.runs / "random" / "model.pt"
    if not checkpoints["random"].exists():
        untrained_checkpoint(checkpoints["control"], checkpoints["random"])
    for arm, model in ARMS.items():
        export_bundle(checkpoints[arm], work / "bundles" / model, version=f"{model}-abc")
    print("offline metrics on the training log's test split ...", flush=True)
    offline = offline_auc(args.train_log, checkpoints)
    print(json.dumps(offline, indent=1), flush=True)

    from contract.models_file import Experiment, ModelsFile, Variant

    share = 1 / 3
    variants = [Variant(name=arm, model=model, share=share) for arm, model in ARMS.items()]
    variants[-1] = Variant(name="best", model=ARMS["best"], share=1 - 2 * share)
    models = ModelsFile(
        default="abc",
        models={model: work / "bundles" / model for model in ARMS.values()},
        experiments={"abc": Experiment(unit="user_id", variants=variants)},
    )
    models_path = work / "models.toml"
    models_path.write_text(render_models_file(models))
    tokens = {"admin": secrets.token_hex(16), "events": secrets.token_hex(16)}
    served_log = work / "served-log"
    env = {
        "MOERANK_MODELS_FILE": str(models_path),
        "MOERANK_ADMIN_TOKENS": tokens["admin"],
        "MOERANK_EVENTS_TOKENS": tokens["events"],
        "MOERANK_SERVED_LOG_DIR": str(served_log),
        "MOERANK_REDIS_URL": "",
        "MOERANK_WORKERS": str(args.workers),
        "MOERANK_INTRA_OP_THREADS": "1",
    }
    bounds = {
        "requests": args.requests,
        "duration_s": args.duration,
        "concurrency": args.concurrency,
    }
    with ServiceProcess(env) as service:
        started = time.time()
        shoppers = run_shoppers(
            args.shopper_log,
            service.url,
            tokens["events"],
            ShopperConfig(experiment="abc", snapshot_s=30, **bounds),
        )
        from_metrics = report(scrape_arms(service.url, "abc"), "control")
        from_shoppers = report(shoppers["arms"], "control")
        print(format_table(from_shoppers), flush=True)
        abc = {
            "command": [sys.executable, *sys.argv],
            "commit": commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "machine": machine(),
            "sizes": {"train_log": json.loads((args.train_log / "ground_truth.json").read_text())["totals"],
                      "shopper_log": json.loads((args.shopper_log / "ground_truth.json").read_text())["totals"]},
            "variants": ARMS,
            "random_ranker": "the DNN recipe with seeded untrained weights (no training step)",
            "answered": shoppers["answered"],
            "answered_per_s": shoppers["answered_per_s"],
            "elapsed_s": shoppers["elapsed_s"],
            "rank_status": shoppers["rank_status"],
            "events": shoppers["events"],
            "report_from_shoppers": from_shoppers,
            "report_from_metrics": from_metrics,
            "offline": offline,
            "orderings": orderings(from_shoppers, offline),
            "ctr_over_time": ctr_over_time(shoppers["snapshots"]),
        }  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "online_abc.json").write_text(json.dumps(abc, indent=1))
        plot(abc["ctr_over_time"], args.out / "online_abc.png",
             f"A/B/C with simulated shoppers: {shoppers['answered']} ranked requests")  # fmt: skip
        print(json.dumps(abc["orderings"], indent=1), flush=True)

        drive = simulated_shoppers(
            args.shopper_log, service.url, tokens["events"], requests=args.round_requests,
            duration_s=args.round_duration, concurrency=args.concurrency, seed=1, snapshot_s=30,
        )  # fmt: skip
        round_result = run_round(
            service.url, tokens["admin"], models_path, ARMS["best"], checkpoints["best"],
            served_log, work / "round1", RoundConfig(max_steps_per_epoch=args.round_steps), drive,
        )  # fmt: skip
        traffic = round_result.pop("traffic")
        round_result |= {
            "command": abc["command"],
            "commit": abc["commit"],
            "machine": abc["machine"],
            "answered": traffic["answered"],
            "answered_per_s": traffic["answered_per_s"],
            "events": traffic["events"],
            "report_from_shoppers": report(traffic["arms"], "control"),
            "ctr_over_time": ctr_over_time(traffic["snapshots"]),
        }
        print(format_table(round_result["report_from_shoppers"]), flush=True)
        plot(round_result["ctr_over_time"], args.out / "online_round.png",
             f"Round 1: fine-tuned {ARMS['best']} (canary) against it (control)")  # fmt: skip
        (args.out / "online_round.json").write_text(json.dumps(round_result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
