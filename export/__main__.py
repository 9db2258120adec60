"""python -m export CHECKPOINT --out BUNDLE_DIR [--encoder DIR] [--dense]"""

from __future__ import annotations

import argparse
from pathlib import Path

from export.bundle import write_bundle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--encoder", type=Path, help="text encoder directory (export.text_encoder)")
    parser.add_argument("--dense", action="store_true", help="run all N experts (no skipping)")
    parser.add_argument("--version", help="bundle version (default: UTC timestamp)")
    args = parser.parse_args(argv)
    meta = write_bundle(
        args.checkpoint,
        args.out,
        args.encoder,
        skip_experts=False if args.dense else None,
        version=args.version,
    )
    print(meta.model_dump_json(include={"name", "version", "experts", "parity"}, indent=2))


if __name__ == "__main__":
    main()
