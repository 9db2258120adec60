"""Train one model: `python -m training.train (--data DIR | --spec SPEC) --model NAME --out DIR`.

--data reads a generated log (impressions.parquet); --spec reads your own data as a data
spec describes it (training/data/spec.py; check it first with `python -m training.data.check
SPEC`). With --spec the tasks are the spec's labels, the features are the data's, text is
used when the spec names an item text (--no-text: not), the split is by group (--valid,
--test, or --folds K [--fold I]), and a recipe that needs what the data lacks fails before
anything is encoded or trained (exit 2, one line per problem). OUT gets run.json (what was
run, for `python -m training.evaluate OUT`), and model.pt + metrics.json (per fold in
fold_<i>/ with --folds).

The command line only; `prepare`/`fit` are training.fitting's, `prepare_spec`
training.own_data's.
"""

from __future__ import annotations

import argparse
import ast
import json
from dataclasses import fields
from pathlib import Path

from training import distributed
from training.fitting import fit, prepare
from training.trainer import TrainConfig


def parse_overrides(pairs: list[str]) -> dict:
    """["top_k=2", "hidden=(64, 32)"] -> {"top_k": 2, "hidden": (64, 32)}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set takes key=value, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="directory with impressions.parquet")
    source.add_argument("--spec", type=Path, help="a data spec (.toml) describing your data")
    parser.add_argument("--model", default="adv_hsc_moe")
    parser.add_argument("--set", action="append", default=[], help="model option key=value")
    parser.add_argument("--text", action="store_true", help="--data: use text embeddings")
    parser.add_argument("--no-text", action="store_true", help="--spec: ignore the item text")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--valid", type=float, default=0.1, help="--spec: share of groups")
    parser.add_argument("--test", type=float, default=0.1, help="--spec: share of groups")
    parser.add_argument("--folds", type=int, default=0, help="--spec: k folds by group")
    parser.add_argument("--fold", type=int, default=None, help="--spec: train this fold only")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument(
        "--embeddings", type=Path, default=None,
        help="--spec: text embedding cache (default artifacts/embeddings/<spec name>)",
    )  # fmt: skip
    parser.add_argument(
        "--stream",
        action="store_true",
        help="stream the Parquet shard by shard (training/distributed.py); implied under torchrun",
    )
    for f in fields(TrainConfig):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default
        )
    args = parser.parse_args(argv)
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    overrides = parse_overrides(args.set)
    if args.spec is not None:
        from training.train_spec import train_on_spec

        code = train_on_spec(args, overrides, config)
        if code:
            raise SystemExit(code)
        return
    if args.stream or distributed.launched_by_torchrun():
        if args.text:
            raise SystemExit("--text is not streamed: train with text in one process")
        metrics = distributed.fit_streaming(args.data, args.model, overrides, config, args.out)
        if metrics is not None:  # rank 0
            print(json.dumps(metrics, indent=2))
        return
    tasks = overrides.get("tasks", ("click",))
    prepared = prepare(args.data, tasks=tuple(tasks), text=args.text)
    _, metrics = fit(prepared, args.model, overrides, config, args.out)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
