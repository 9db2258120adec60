"""Your own data, end to end, through the public commands: check -> train -> evaluate against
the baselines -> export -> embed the catalog -> serve -> rank queries over HTTP, each step
timed. The worked example (README, "Your own data") is CrowdFlower's graded search relevance:

    python -m pipelines.own_data                      # CrowdFlower from ../shared/data
    python -m pipelines.own_data --spec my_data.toml  # any data spec

Every step is a subprocess of the command a user would type (printed before it runs), so the
example proves those commands, not internal functions. The served answers are compared with
the offline scores the evaluation ranked by (fold 0's model on its test queries): the same
order, and the largest score difference. With the CrowdFlower default the figures go to
results/own_data_crowdflower.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from contract import schema
from contract.schema import shared_data_dir
from loadtest.service_process import ServiceProcess
from training.results import write_results

# The recipe and training settings of the worked example (training.models.text_match).
MODEL = "text_match"
TRAIN_ARGS = ("--epochs", "20", "--lr", "1e-3", "--weight-decay", "0.1", "--batch-size", "512",
              "--patience", "4", "--listwise", "1.0")  # fmt: skip
CROWDFLOWER_SPEC = """# CrowdFlower search relevance (Kaggle): 261 queries, 10,158 judged products
[source]
path = "{path}"

[columns]
query = "query"
item_id = "id"
item_text = "product_title"
ignore = ["product_description", "relevance_variance"]

[labels.graded]
column = "median_relevance"
range = [1, 4]
"""


class Steps:
    """Runs the public commands, timing each; the record goes into the results."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.commands: dict[str, str] = {}

    def run(self, name: str, *command: str) -> str:
        line = shlex.join(["python", *command[1:]] if command[0] == sys.executable else command)
        print(f"\n[{name}] $ {line}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        self.seconds[name] = round(time.perf_counter() - started, 2)
        self.commands[name] = line
        print(done.stdout[-4000:], end="", flush=True)
        if done.returncode:
            raise SystemExit(f"[{name}] failed ({done.returncode}):\n{done.stderr[-4000:]}")
        print(f"[{name}] {self.seconds[name]:.1f} s", flush=True)
        return done.stdout

    def timed(self, name: str, started: float) -> None:
        self.seconds[name] = round(time.perf_counter() - started, 2)
        print(f"[{name}] {self.seconds[name]:.1f} s", flush=True)


def python(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", *args)


def offline_scores(spec_path: Path, run_dir: Path) -> tuple:
    """(test frame, scores) of fold 0's model on its test split, as evaluation scored it."""
    from training.checkpoint import load_checkpoint
    from training.data.spec import load_spec, read_table
    from training.own_data import GroupSplit, prepare_spec, ranking_scores
    from training.train_spec import fold_dirs
    from training.trainer import predict

    run = json.loads((run_dir / "run.json").read_text())
    spec = load_spec(spec_path)
    split, folder = fold_dirs(run_dir, run)[0]
    prepared = prepare_spec(
        spec, read_table(spec), GroupSplit(**split.to_dict()), True, Path(run["embeddings"]), False
    )
    model, _ = load_checkpoint(folder / "model.pt")
    scores = ranking_scores(spec, predict(model, prepared.test), model.score_task)
    return prepared.test_frame, scores, folder


def rank_over_http(url: str, frame, queries: list[str]) -> list[dict]:
    """POST /v1/rank for each query's test items (ids and titles); the answers."""
    answers = []
    for query in queries:
        rows = frame[frame[schema.SESSION_ID] == query]
        body = {
            "query": {"text": str(rows[schema.QUERY_TEXT].iloc[0])},
            "items": [
                {"id": str(i), "title": str(t)}
                for i, t in zip(rows[schema.ITEM_ID], rows[schema.ITEM_TITLE].fillna(""))
            ],
        }
        request = urllib.request.Request(
            f"{url}/v1/rank", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            answers.append(json.loads(answer.read()))
    return answers


def compare(frame, scores: np.ndarray, queries: list[str], answers: list[dict]) -> dict:
    """Served vs offline per query: the largest score difference, and whether the served
    order is the offline order (ties, equal offline scores, may come in either order)."""
    ids = frame[schema.ITEM_ID].astype(str).to_numpy()
    sessions = frame[schema.SESSION_ID].to_numpy()
    worst, same_order = 0.0, True
    for query, answer in zip(queries, answers):
        offline = dict(zip(ids[sessions == query], scores[sessions == query]))
        served = [(item["id"], item["score"]) for item in answer["items"]]
        worst = max(worst, max(abs(offline[i] - s) for i, s in served))
        in_served_order = np.array([offline[i] for i, _ in served])
        same_order &= bool((np.diff(in_served_order) <= 1e-9).all())
    return {"queries": len(queries), "max_abs_score_difference": worst, "same_order": same_order}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.own_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--spec", type=Path, help="default: CrowdFlower from the shared data")
    parser.add_argument("--data", type=Path, help="shared data folder (MOERANK_SHARED_DATA)")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts/own_data"))
    parser.add_argument("--encoder", type=Path, help="an exported text encoder to reuse")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=5, help="test queries ranked over HTTP")
    parser.add_argument("--train-args", default=shlex.join(TRAIN_ARGS))
    parser.add_argument("--results", help="results/<name>.json to write (default: none, "
                        "own_data_crowdflower for the worked example)")  # fmt: skip
    args = parser.parse_args(argv)
    out = args.artifacts
    out.mkdir(parents=True, exist_ok=True)
    spec, results = args.spec, args.results
    if spec is None:
        data = args.data or shared_data_dir()
        source = Path(data or "") / "crowdflower" / "crowdflower_train.csv.gz"
        if not source.is_file():
            print(f"no CrowdFlower data at {source} (set --data or MOERANK_SHARED_DATA)")
            return 2
        spec = out / "crowdflower.toml"
        spec.write_text(CROWDFLOWER_SPEC.format(path=source.resolve()))
        results = results or "own_data_crowdflower"
    steps, run_dir = Steps(), out / "run"
    encoder, bundle, store = args.encoder or out / "encoder", out / "bundle", out / "items.npz"

    steps.run("check", *python("training.data.check", str(spec)))
    steps.run("train", *python("training.train", "--spec", str(spec), "--model", MODEL,
              "--folds", str(args.folds), "--out", str(run_dir), "--embeddings",
              str(out / "embeddings"), *shlex.split(args.train_args)))  # fmt: skip
    steps.run("evaluate", *python("training.evaluate", str(run_dir)))
    if not (encoder / "encoder.json").is_file():
        steps.run("export_text_encoder", *python("export.text_encoder", "--out", str(encoder)))
    steps.run("export", *python("export", str(run_dir / "fold_0" / "model.pt"), "--out",
              str(bundle), "--encoder", str(encoder), "--spec", str(spec)))  # fmt: skip
    store.unlink(missing_ok=True)
    steps.run("embed_items", *python("export.embed_items", "--spec", str(spec), "--encoder",
              str(encoder), "--out", str(store), "--dtype", "float32", "--variant", "fp32"))  # fmt: skip

    frame, scores, _ = offline_scores(spec, run_dir)
    queries = sorted(frame[schema.SESSION_ID].unique())[: args.queries]
    started = time.perf_counter()
    service = ServiceProcess(
        {
            "MOERANK_BUNDLE_PATH": str(bundle),
            "MOERANK_EMBEDDING_STORE_PATH": str(store),
            "MOERANK_EMBEDDING_DTYPE": "float32",  # as stored: served = offline scores
            "MOERANK_WARMUP_CALLS": "1",
        }
    ).start()
    steps.timed("serve_start", started)
    try:
        started = time.perf_counter()
        answers = rank_over_http(service.url, frame, queries)
        steps.timed("rank_over_http", started)
        with urllib.request.urlopen(f"{service.url}/v1/models") as answer:
            served_model = json.loads(answer.read())
    finally:
        service.stop()
    agreement = compare(frame, scores, queries, answers)
    print(f"\nserved vs offline on {len(queries)} test queries of fold 0: {agreement}")
    print(f"one answer: {json.dumps(answers[0]['items'][:3])}")
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    summary = summarise(evaluation)
    for line in summary["lines"]:
        print(line)
    print("wall time per step (s): " + ", ".join(f"{k} {v}" for k, v in steps.seconds.items()))
    if results:
        rows = [{"step": k, "seconds": v, "command": steps.commands.get(k)}
                for k, v in steps.seconds.items()]  # fmt: skip
        write_results(results, rows, {
            "command": shlex.join(["python", "-m", "pipelines.own_data", *(argv or sys.argv[1:])]),
            "spec": spec.read_text(), "model": MODEL, "train_args": args.train_args,
            "ndcg_at_5": summary["ndcg_at_5"], "margin_over_cosine": summary["margin"],
            "evaluation_mean": evaluation["mean"], "served_vs_offline": agreement,
            "served_score": served_model["score"], "wall_seconds": steps.seconds,
        })  # fmt: skip
    return 0 if agreement["same_order"] and agreement["max_abs_score_difference"] <= 1e-5 else 1


def summarise(evaluation: dict) -> dict:
    """NDCG@5 of each scorer (mean over folds) and the model's margin over the zero-shot
    cosine: the mean of the per-fold differences (the same test queries), and its folds won."""
    ndcg = {name: figures["ndcg@5"][0] for name, figures in evaluation["mean"].items()}
    model = next(name for name in ndcg if name.startswith("model"))
    cosine = next((name for name in ndcg if name.startswith("cosine")), None)
    lines = [f"NDCG@5 {name}: {value:.4f}" for name, value in ndcg.items()]
    margin = None
    if cosine:
        per_fold = [f["figures"][model]["ndcg@5"] - f["figures"][cosine]["ndcg@5"]
                    for f in evaluation["folds"]]  # fmt: skip
        margin = {
            "mean": float(np.mean(per_fold)),
            "std": float(np.std(per_fold)),
            "per_fold": per_fold,
            "folds_won": int(sum(d > 0 for d in per_fold)),
        }
        lines.append(f"margin over the zero-shot cosine: {margin['mean']:+.4f} "
                     f"(±{margin['std']:.4f}; won {margin['folds_won']}/{len(per_fold)} folds)")  # fmt: skip
    return {"ndcg_at_5": ndcg, "margin": margin, "lines": lines}


if __name__ == "__main__":
    raise SystemExit(main())
