"""`python -m training.train --spec SPEC ...`: train a recipe on a user's own data.

Everything that can fail is checked before text is encoded or a model trained: the spec and
its data (training.data.spec), the recipe against the data (training.recipe_needs), the
split. Problems print one line each ("error: ...") and the command exits 2.

OUT/run.json records what was run (the spec, model, options, split, text, tasks, score), so
`python -m training.evaluate OUT` scores the same split; each trained model writes model.pt
and metrics.json (its test figures from training.ranking_report, which say what they were
computed on) into OUT, or OUT/fold_<i>/ with --folds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from contract.schema import QUERY_CATEGORY
from training.data.spec import DataSpec, SpecError, load_spec, read_table
from training.features import build_spec
from training.fitting import Prepared, fit
from training.models import registry
from training.own_data import (
    GroupSplit,
    data_fields,
    feature_columns,
    prepare_spec,
    ranking_scores,
    request_fields,
    score_name,
)
from training.ranking_report import ranking_figures
from training.recipe_needs import fit_recipe, options_of
from training.trainer import TrainConfig, predict

EXIT_PROBLEMS = 2
RUN_FILE = "run.json"


def fail(problems: list[str] | tuple[str, ...]) -> int:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_PROBLEMS


def default_cache(spec_path: Path) -> Path:
    """artifacts/embeddings/<spec name>-<hash of its path>: one cache per spec file."""
    digest = hashlib.sha1(str(spec_path.resolve()).encode()).hexdigest()[:8]
    return Path("artifacts") / "embeddings" / f"{spec_path.stem}-{digest}"


def fold_dirs(out: Path, run: dict) -> list[tuple[GroupSplit, Path]]:
    """(split, directory) of every model a run trained."""
    split = run["split"]
    if not split["folds"]:
        return [(GroupSplit(**split), out)]
    folds = run["trained_folds"]
    return [(GroupSplit(**{**split, "fold": f}), out / f"fold_{f}") for f in folds]


def train_on_spec(args: argparse.Namespace, overrides: dict, config: TrainConfig) -> int:
    try:
        spec = load_spec(args.spec)
        frame = read_table(spec)
    except SpecError as error:
        return fail(error.problems)
    text = spec.has_text and not args.no_text
    recipe = fit_recipe(args.model, overrides, data_fields(spec, frame, text))
    if recipe.problems:
        return fail(recipe.problems)
    problem = build_problem(args.model, recipe.config, spec, frame, text)
    if problem:
        return fail([problem])
    try:
        base = GroupSplit(args.valid, args.test, args.split_seed, args.folds, args.fold or 0)
    except ValueError as error:
        return fail([str(error)])
    if args.fold is not None and not args.folds:
        return fail(["--fold needs --folds K"])
    folds = [args.fold] if args.fold is not None else list(range(args.folds))
    options = options_of(recipe.config)
    run = {
        "command": sys.argv,
        "spec": str(args.spec.resolve()),
        "spec_text": args.spec.read_text(encoding="utf-8"),  # as it was when trained
        "model": args.model,
        "options": options,
        "adapted": list(recipe.notes),
        "split": base.to_dict(),
        "trained_folds": folds,
        "text": text,
        "embeddings": str((args.embeddings or default_cache(args.spec)).resolve()),
        "tasks": list(spec.labels.tasks),
        "train_config": asdict(config),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / RUN_FILE).write_text(json.dumps(run, indent=2))
    for note in recipe.notes:
        print(f"note: {note}", file=sys.stderr)
    progress = sys.stderr.isatty()
    results = {}
    for split, out in fold_dirs(args.out, run):
        prepared = prepare_spec(spec, frame, split, text, Path(run["embeddings"]), progress)
        report = _reporter(spec, prepared, split)
        _, metrics = fit(prepared, args.model, options, config, out, progress, report=report)
        results[out.name if split.folds else "test"] = metrics["test"]
        print(json.dumps({"run": str(out), **metrics["test"]}, indent=2))
    if len(folds) > 1:
        summary = {"model": args.model, "folds": results, "mean": _mean(results.values())}
        (args.out / "metrics.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps({"mean over folds": summary["mean"]}, indent=2))
    return 0


def build_problem(name: str, config, spec: DataSpec, frame, text: bool) -> str | None:
    """Build the model once on a feature map of the whole data (text of the encoder's
    width), so an option the data cannot carry fails before minutes of encoding."""
    from training.text_encoder import DIM

    numeric, categorical = feature_columns(spec, frame)
    probe = build_spec(
        frame.fillna({c: 0.0 for c in numeric}),
        numeric=tuple(numeric),
        item_categorical=tuple(categorical),
        request_categorical=request_fields(frame),
        text_dim=DIM if text else 0,
    )
    counts = None
    if QUERY_CATEGORY in frame.columns:
        field = probe.request_categorical[probe.request_field(QUERY_CATEGORY)]
        counts = torch.ones(field.cardinality, dtype=torch.long)
    try:
        registry.build(registry.family_of_name(name), config, probe, counts)
    except (ValueError, RuntimeError, IndexError) as error:
        return f"model {name!r} cannot be built on this data: {error}"
    return None


def _reporter(spec: DataSpec, prepared: Prepared, split: GroupSplit):
    def report(model) -> dict:
        probs = predict(model, prepared.test)
        scores = ranking_scores(spec, probs, model.score_task)
        figures = ranking_figures(spec, prepared.test_frame, scores)
        figures["on"] = {
            "split": f"test: {split.describe()}",
            "score": score_name(spec, model.score_task),
            **figures["on"],
        }
        return figures

    return report


def _mean(reports) -> dict:
    reports = list(reports)
    keys = [k for k, v in reports[0].items() if isinstance(v, float | int)]
    return {k: float(np.nanmean([r[k] for r in reports])) for k in keys}
