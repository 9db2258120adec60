"""python -m export CHECKPOINT --out BUNDLE_DIR [--encoder DIR] [--dense]
[--score TASK | --spec SPEC]"""

from __future__ import annotations

import argparse
from pathlib import Path

from export.bundle import EXPECTED_GRADE, spec_score, write_bundle
from training.data.spec import load_spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--encoder", type=Path, help="text encoder directory (export.text_encoder)")
    parser.add_argument("--dense", action="store_true", help="run all N experts (no skipping)")
    parser.add_argument("--version", help="bundle version (default: UTC timestamp)")
    score = parser.add_mutually_exclusive_group()
    score.add_argument(
        "--spec",
        type=Path,
        help="the data spec the model was trained on: rank as evaluation did (the expected "
        "grade of a graded cascade, else the first task)",
    )
    score.add_argument(
        "--score",
        help=f"rank by this task's probability, or {EXPECTED_GRADE!r}: the sum of every "
        "task's probability for a grade cascade (default: what training chose, else the "
        "model's score task)",
    )
    args = parser.parse_args(argv)
    meta = write_bundle(
        args.checkpoint,
        args.out,
        args.encoder,
        skip_experts=False if args.dense else None,
        version=args.version,
        score=spec_score(load_spec(args.spec)) if args.spec else args.score,
    )
    print(meta.model_dump_json(include={"name", "version", "score", "experts", "parity"}, indent=2))


if __name__ == "__main__":
    main()
