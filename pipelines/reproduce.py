"""Every paper experiment at one size: `python -m pipelines.reproduce --size small|full`.

Small fits CI's time; full is what the committed results/ hold (DESIGN.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.experiments import adv_hsc_moe, hmoe, mlpr, mlpr_real, wecan
from training.experiments.common import SIZES

EXPERIMENTS = {
    "adv_hsc_moe": adv_hsc_moe.main,
    "mlpr": mlpr.main,
    "mlpr_real": mlpr_real.main,
    "hmoe": hmoe.main,
    "wecan": wecan.main,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.reproduce", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS), default=list(EXPERIMENTS))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args(argv)
    for name in args.only:
        print(f"== {name} ({args.size})", flush=True)
        EXPERIMENTS[name](["--size", args.size, "--artifacts", str(args.artifacts)])


if __name__ == "__main__":
    main()
