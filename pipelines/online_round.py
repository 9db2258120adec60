"""One round of online learning: served log -> training set -> fine-tune -> export -> canary
-> promote by reload when it wins.

    python -m pipelines.online_round --service http://127.0.0.1:8000 \\
        --models-file deploy/models.toml --serving best \\
        --checkpoint runs/best/model.pt --served-log served/ --work rounds/1 \\
        [--shoppers-log data/shopper-log --requests 50000]   # evaluate with simulated shoppers

Steps, each on what the previous one left on disk under --work:
1. the served log (`MOERANK_SERVED_LOG_DIR` of the running service) becomes impressions in
   the dataset contract (`training.served_log`: the features exactly as served, labels from
   the events joined by request id), split by request into train/valid/test;
2. the serving model is fine-tuned from its checkpoint on them (same feature spec, so the
   bundle keeps its manifest's features; a smaller learning rate than from scratch) and its
   offline session AUC is compared with the checkpoint's on the held-out requests;
3. the new checkpoint is exported to a bundle beside the models file;
4. a models file with the new model and an experiment `<round>` (control: the serving model,
   canary: the new one, `--canary-share`) becomes the default, loaded by POST /admin/reload;
5. traffic decides: simulated shoppers (`--shoppers-log`, through loadtest's driver) or live
   traffic until `--min-impressions` per arm (`--wait` seconds at most);
6. the experiment report's test (`pipelines.experiment_report.wins` on CTR): when the canary
   wins, every reference to the serving model is moved to the new one and reloaded
   (promoted); otherwise the original models file is reloaded (rolled back).
The round's JSON (offline and online figures, the decision) goes to <work>/round.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from contract.models_file import Experiment, ModelsFile, Variant, load_models_file
from pipelines.experiment_report import report, scrape_arms, wins


@dataclass(frozen=True)
class RoundConfig:
    """Fine-tuning and canary settings of a round."""

    epochs: int = 2
    lr: float = 3e-4
    batch_size: int = 1024
    max_steps_per_epoch: int = 0  # 0: whole epochs; else a bound on a big log's fine-tuning
    canary_share: float = 0.5
    min_impressions: int = 20_000
    wait_s: float = 600.0
    mde: float = 0.02


def render_models_file(models_file: ModelsFile) -> str:
    """TOML for a ModelsFile (absolute bundle paths). JSON strings are TOML basic strings."""
    lines = [f"default = {json.dumps(models_file.default)}", "", "[models]"]
    lines += [
        f"{json.dumps(name)} = {json.dumps(str(path))}" for name, path in models_file.models.items()
    ]
    for name, experiment in models_file.experiments.items():
        variants = ", ".join(
            f"{{name = {json.dumps(v.name)}, model = {json.dumps(v.model)}, share = {v.share!r}}}"
            for v in experiment.variants
        )
        lines += ["", f"[experiments.{json.dumps(name)}]", f"unit = {json.dumps(experiment.unit)}"]
        lines.append(f"variants = [{variants}]")
        if experiment.shadows:
            lines.append(f"shadows = {json.dumps(list(experiment.shadows))}")
    return "\n".join(lines) + "\n"


def canary_file(
    current: ModelsFile, serving: str, new: str, bundle: Path, name: str, share: float
) -> ModelsFile:
    """`current` plus the new model and the round's experiment, which plain traffic now gets."""
    variants = [
        Variant(name="control", model=serving, share=1.0 - share),
        Variant(name="canary", model=new, share=share),
    ]
    return ModelsFile(
        default=name,
        models={**current.models, new: bundle},
        experiments={**current.experiments, name: Experiment(unit="user_id", variants=variants)},
    )


def promoted_file(current: ModelsFile, serving: str, new: str, bundle: Path) -> ModelsFile:
    """`current` with every reference to `serving` (default, variants, shadows) moved to `new`."""

    def moved(model: str) -> str:
        return new if model == serving else model

    experiments = {
        name: Experiment(
            unit=e.unit,
            variants=[
                Variant(name=v.name, model=moved(v.model), share=v.share) for v in e.variants
            ],
            shadows=[moved(s) for s in e.shadows],
        )
        for name, e in current.experiments.items()
    }
    return ModelsFile(
        default=moved(current.default),
        models={**current.models, new: bundle},
        experiments=experiments,
    )


def reload(service: str, token: str, models_file: Path) -> dict:
    """POST /admin/reload with a whole models file (all-or-nothing on the service's side)."""
    request = urllib.request.Request(
        f"{service.rstrip('/')}/admin/reload",
        data=json.dumps({"models_file": str(models_file.resolve())}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.loads(answer.read())


def fine_tune(checkpoint: Path, frame, work: Path, config: RoundConfig) -> dict:
    """Fine-tune the checkpoint's model on `frame` (dataset contract); writes <work>/model.pt.
    Returns the offline session AUC of the checkpoint and of the fine-tuned model on the
    held-out requests."""
    from contract.features import FeatureSpec
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.dataset import split_sessions, to_tensors
    from training.fitting import test_metrics
    from training.trainer import TrainConfig, seed_everything, train

    seed_everything(0)
    # Request ids as session ids: integers for the metrics' grouping.
    frame = frame.assign(session_id=pd.factorize(frame["session_id"])[0])
    model, ckpt = load_checkpoint(checkpoint)
    spec = FeatureSpec.from_dict(ckpt["spec"])
    tasks = tuple(ckpt["config"].get("tasks", ("click",)))
    splits = [to_tensors(spec, part, tasks, None) for part in split_sessions(frame)]
    before = test_metrics(model, splits[2])
    train_config = TrainConfig(
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        patience=1,
        max_steps_per_epoch=config.max_steps_per_epoch,
    )
    result = train(model, splits[0], splits[1], train_config, work, progress=False)
    after = test_metrics(model, splits[2])
    metrics = {"fine_tuned_from": str(checkpoint), "best_epoch": result.best_epoch, "test": after}
    save_checkpoint(work / "model.pt", ckpt["name"], model, spec, metrics, ckpt["category_counts"])
    rows = [len(split) for split in splits]
    return {"rows": dict(zip(("train", "valid", "test"), rows)), "before": before, "after": after}


def wait_for_traffic(service: str, experiment: str, config: RoundConfig) -> dict:
    """Poll /metrics until both arms have min_impressions (or wait_s passes); the arms."""
    deadline = time.monotonic() + config.wait_s
    while True:
        arms = scrape_arms(service, experiment)
        enough = all(
            arms.get(a, {}).get("impressions", 0) >= config.min_impressions
            for a in ("control", "canary")
        )
        if enough or time.monotonic() > deadline:
            return arms
        time.sleep(5)


def run_round(
    service: str,
    admin_token: str,
    models_path: Path,
    serving: str,
    checkpoint: Path,
    served_log: Path,
    work: Path,
    config: RoundConfig = RoundConfig(),
    shoppers=None,
) -> dict:
    """The whole round (see the module docstring). `shoppers`: a callable(experiment) that
    drives traffic and returns its summary; None waits for live traffic instead."""
    from export.bundle import write_bundle
    from training.served_log import to_impressions

    work.mkdir(parents=True, exist_ok=True)
    current = load_models_file(models_path)
    if serving not in current.models:
        raise ValueError(f"{serving!r} is not a model of {models_path}: {sorted(current.models)}")
    round_name = f"round-{work.name}"
    new = f"{serving}-{work.name}"
    frame = to_impressions(served_log).frame
    if frame.empty:
        raise ValueError(f"{served_log} holds no answered requests to train on")
    offline = fine_tune(checkpoint, frame, work, config)
    bundle = models_path.resolve().parent / "bundles" / new
    write_bundle(work / "model.pt", bundle, None, version=new)
    canary_path = work / "models.canary.toml"
    canary_path.write_text(
        render_models_file(
            canary_file(current, serving, new, bundle, round_name, config.canary_share)
        )
    )
    reload(service, admin_token, canary_path)
    if shoppers is not None:
        traffic, arms = shoppers(round_name), scrape_arms(service, round_name)
    else:
        traffic, arms = None, wait_for_traffic(service, round_name, config)
    online = report(arms, "control", mde=config.mde)
    promote = wins(online, "canary")
    final_path = work / ("models.promoted.toml" if promote else "models.rolled_back.toml")
    final = promoted_file(current, serving, new, bundle) if promote else current
    final_path.write_text(render_models_file(final))
    reload(service, admin_token, final_path)
    result = {
        "round": round_name,
        "serving": serving,
        "new_model": new,
        "served_log_rows": len(frame),
        "offline_session_auc": offline,
        "online": online,
        "promoted": promote,
        "models_file": str(final_path),
        "traffic": traffic,
    }
    (work / "round.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.online_round", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--service", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--models-file", type=Path, required=True, help="the one the service serves now"
    )
    parser.add_argument("--serving", required=True, help="the model (a [models] name) to fine-tune")
    parser.add_argument("--checkpoint", type=Path, required=True, help="that model's checkpoint")
    parser.add_argument("--served-log", type=Path, required=True)
    parser.add_argument(
        "--work", type=Path, required=True, help="round directory (its name names the round)"
    )
    parser.add_argument("--epochs", type=int, default=RoundConfig.epochs)
    parser.add_argument("--lr", type=float, default=RoundConfig.lr)
    parser.add_argument("--max-steps", type=int, default=0, help="steps per epoch at most")
    parser.add_argument("--canary-share", type=float, default=RoundConfig.canary_share)
    parser.add_argument("--min-impressions", type=int, default=RoundConfig.min_impressions)
    parser.add_argument(
        "--wait", type=float, default=RoundConfig.wait_s, help="seconds of live traffic at most"
    )
    parser.add_argument("--mde", type=float, default=RoundConfig.mde)
    parser.add_argument(
        "--shoppers-log", type=Path, help="evaluate with simulated shoppers from this log"
    )
    parser.add_argument("--requests", type=int, default=20_000, help="simulated shoppers' requests")
    parser.add_argument(
        "--duration", type=float, default=600.0, help="simulated shoppers' seconds at most"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    admin_token = os.environ.get("MOERANK_ADMIN_TOKEN", "")
    if not admin_token:
        parser.error("set MOERANK_ADMIN_TOKEN: the round reloads the service")
    config = RoundConfig(
        epochs=args.epochs, lr=args.lr, max_steps_per_epoch=args.max_steps, canary_share=args.canary_share,
        min_impressions=args.min_impressions, wait_s=args.wait, mde=args.mde,
    )  # fmt: skip
    shoppers = None
    if args.shoppers_log:
        shoppers = simulated_shoppers(
            args.shoppers_log, args.service, os.environ.get("MOERANK_EVENTS_TOKEN", ""),
            requests=args.requests, duration_s=args.duration, concurrency=args.concurrency,
        )  # fmt: skip
    result = run_round(
        args.service, admin_token, args.models_file, args.serving, args.checkpoint,
        args.served_log, args.work, config, shoppers,
    )  # fmt: skip
    from pipelines.experiment_report import format_table

    print(format_table(result["online"]))
    print(f"{result['new_model']}: {'promoted' if result['promoted'] else 'rolled back'}; "
          f"models file {result['models_file']}")  # fmt: skip
    return 0


def simulated_shoppers(log: Path, service: str, token: str, **bounds):
    """A `shoppers` callable for run_round: loadtest's shopper driver on one experiment."""
    from loadtest.shopper_run import ShopperConfig, run_shoppers

    if not token:
        raise SystemExit("set MOERANK_EVENTS_TOKEN: simulated shoppers send events")

    def drive(experiment: str) -> dict:
        return run_shoppers(log, service, token, ShopperConfig(experiment=experiment, **bounds))

    return drive


if __name__ == "__main__":
    raise SystemExit(main())
