"""Train one model on a data set: `python -m training.train --data DIR --model NAME [--set k=v]`.

The command line only; `prepare` and `fit` are training.fitting's.
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
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    parser.add_argument(
        "--data", type=Path, required=True, help="directory with impressions.parquet"
    )
    parser.add_argument("--model", default="adv_hsc_moe")
    parser.add_argument("--set", action="append", default=[], help="model option key=value")
    parser.add_argument("--text", action="store_true", help="use query/product text embeddings")
    parser.add_argument("--out", type=Path, required=True)
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
