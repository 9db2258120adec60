"""What every experiment shares: sizes (small for CI, full for the committed results), data,
and one loop that trains a list of recipes over seeds."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.generator import GeneratorConfig, generate
from training.train import Prepared, fit, prepare
from training.trainer import TrainConfig


@dataclass(frozen=True)
class Size:
    data: GeneratorConfig
    seeds: tuple[int, ...]
    hidden: tuple[int, ...]
    train: TrainConfig
    sweep_seeds: tuple[int, ...]  # seeds for the hyper-parameter sweeps
    sweep_epochs: int  # epochs of each sweep run (Tables 5-6, Figure 7)


SIZES = {
    "small": Size(
        data=GeneratorConfig(
            impressions=60_000, max_sub_categories=100, items_per_sub_category=100
        ),
        seeds=(0,),
        hidden=(64, 32),
        train=TrainConfig(epochs=2, lr=3e-3, batch_size=512, patience=1),
        sweep_seeds=(0,),
        sweep_epochs=2,
    ),
    "full": Size(
        data=GeneratorConfig(impressions=1_000_000),
        seeds=(0, 1, 2),
        # The paper's towers are 512 x 256; 21 Table 2 runs of those over 1M impressions take
        # ~9 h on 2 cores, so the full size uses 128 x 64 towers (same structure, N, K, D).
        hidden=(128, 64),
        train=TrainConfig(epochs=4, lr=1e-3, batch_size=1024, patience=1),
        # 21 sweep runs (N up to 32 experts) at 4 epochs would take ~2 h on one core; the
        # sweeps compare settings with each other, at 2 epochs each.
        sweep_seeds=(0,),
        sweep_epochs=2,
    ),
}


def data_dir(size: str, artifacts: Path) -> Path:
    """The generated search log of this size (generated on first use)."""
    out = artifacts / "data" / f"searchlog-{size}"
    if not (out / "ground_truth.json").exists():
        generate(SIZES[size].data, out)
    return out


def prepare_size(size: str, artifacts: Path, text: bool = False) -> Prepared:
    return prepare(data_dir(size, artifacts), text=text)


def run_seeds(
    prepared: Prepared,
    size: str,
    model: str,
    seeds,
    overrides: dict | None = None,
    epochs: int | None = None,
) -> list[tuple[object, dict]]:
    """Train `model` once per seed (for `epochs`, default the size's); [(model, metrics)]."""
    options = {"hidden": SIZES[size].hidden, **(overrides or {})}
    train = SIZES[size].train
    runs = []
    for seed in seeds:
        config = TrainConfig(**{**train.__dict__, "seed": seed, "epochs": epochs or train.epochs})
        runs.append(fit(prepared, model, options, config, progress=False))
    return runs


def mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std(ddof=1) if values.size > 1 else 0.0:.4f}"


def experiment_args(
    module: str,
    doc: str | None,
    sizes,
    argv: list[str] | None,
    only: tuple[str, ...] = (),
    seeds_help: str | None = None,
) -> argparse.Namespace:
    """The options every experiment CLI shares: --size, --artifacts, given `only` --only,
    and given `seeds_help` --seeds (what the experiment does with them)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m training.experiments.{module}", description=doc
    )
    parser.add_argument("--size", choices=sorted(sizes), default="small")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    if only:
        parser.add_argument("--only", nargs="+", choices=only, default=list(only))
    if seeds_help:
        parser.add_argument("--seeds", type=seed_list, help=seeds_help)
    return parser.parse_args(argv)


def seed_list(text: str) -> tuple[int, ...]:
    """--seeds 0,1 -> (0, 1)."""
    return tuple(int(seed) for seed in text.split(","))
