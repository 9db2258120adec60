"""The default bundle behind `make serve`: generate a search log, train a small Adv & HSC-MoE
ranker with text embeddings, export it with its text encoder, precompute item embeddings.

Every step is skipped when its output exists, so a second `make serve` starts in seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from contract import schema
from contract.manifest import Manifest
from export.bundle import write_bundle
from export.text_encoder import export_text_encoder
from training.data.simulator.generator import GeneratorConfig, generate
from training.fitting import fit, prepare
from training.text_encoder import ENCODER_ID
from training.text_tables import write_item_store
from training.trainer import TrainConfig

# Small enough to build in minutes on 2 cores, big enough to rank sensibly.
DATA = GeneratorConfig(
    impressions=200_000, seed=0, max_sub_categories=120, items_per_sub_category=100
)
TRAIN = TrainConfig(epochs=2, lr=1e-3, batch_size=1024)
MODEL = "adv_hsc_moe"
MODEL_OPTIONS = {"hidden": (128, 64)}  # the paper's 512 x 256 towers: `make reproduce`


def example_request(frame: pd.DataFrame, catalog: pd.DataFrame) -> dict:
    """A real session of the log as a /v1/rank body (the curl example `make serve` prints)."""
    sizes = frame.groupby(schema.SESSION_ID).size()
    session = frame[frame[schema.SESSION_ID] == sizes[sizes >= 20].index[0]]
    first = session.iloc[0]
    titles = catalog.set_index(schema.ITEM_ID)[schema.ITEM_TITLE]
    items = [
        {
            "id": str(row[schema.ITEM_ID]),
            "title": str(titles.get(row[schema.ITEM_ID], "")),
            "features": {f: float(row[f]) for f in schema.NUMERIC_FEATURES},
            "categorical": {c: str(row[c]) for c in schema.CATEGORICAL_FEATURES},
        }
        for _, row in session.head(20).iterrows()
    ]
    query = {
        "text": first[schema.QUERY_TEXT],
        "category": first[schema.QUERY_CATEGORY],
        "top_category": first[schema.TOP_CATEGORY],
        "scenario": first[schema.SCENARIO],
        "platform": first[schema.PLATFORM],
    }
    return {"query": query, "items": items, "top_n": 5}


def build(artifacts: Path, bundle_dir: Path, data: GeneratorConfig = DATA, train=TRAIN) -> Manifest:
    """Build (or reuse) every artifact and the bundle; returns the bundle manifest."""

    data_dir = artifacts / "data" / "searchlog"
    if not (data_dir / "ground_truth.json").exists():
        generate(data, data_dir)
    prepared = prepare(data_dir, text=True)
    run_dir = artifacts / "runs" / "default"
    if not (run_dir / "model.pt").exists():
        fit(prepared, MODEL, MODEL_OPTIONS, config=train, out_dir=run_dir)
    encoder_dir = artifacts / "encoder"
    if not (encoder_dir / "encoder.json").exists():
        export_text_encoder(encoder_dir)
    manifest = write_bundle(run_dir / "model.pt", bundle_dir, encoder_dir)
    catalog = pd.read_parquet(data_dir / "catalog.parquet")
    write_item_store(prepared.train.text, artifacts / "item_embeddings.npz", ENCODER_ID)
    body = example_request(pd.read_parquet(data_dir / "impressions.parquet"), catalog)
    (artifacts / "example_request.json").write_text(json.dumps(body, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.default_bundle", description=__doc__)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/default"))
    args = parser.parse_args(argv)
    manifest = build(args.artifacts, args.bundle)
    print(f"bundle {manifest.name} {manifest.version} written to {args.bundle}")


if __name__ == "__main__":
    main()
