"""Text encoder variants: quality against the PyTorch encoder and single-query latency.

Quality: the cosine of each ONNX variant's vectors (fp32, int8, fp16; through
`service.text_encoder.OnnxTextEncoder`, the code the service runs) with the PyTorch fp32
encoder's, on real queries and product titles (Best Buy's small search log, typos kept) plus
the exporter's own parity texts. Latency: one query per call, as the service encodes a
request's query; the variants and PyTorch are timed in turn, in a fresh random order per round,
on the same queries.

    python benchmarks/text_encoder.py [--encoder artifacts/encoder] [--threads 1] [--rounds 400]

Exports the encoder to --encoder first when it is not there. Writes results/text_encoder.json.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from contract.schema import shared_data_dir
from export.text_encoder import PARITY_TEXTS, export_text_encoder
from service.text_encoder import OnnxTextEncoder
from training.results import write_results
from training.text_encoder import TextEncoder


def real_texts(queries: int, titles: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Distinct real queries and product names (Best Buy's small log), sampled reproducibly;
    the exporter's parity texts stand in when the shared data is absent (a user's clone)."""
    shared = shared_data_dir()
    if shared is None:
        print("no shared data (MOERANK_SHARED_DATA): measuring on the parity texts only")
        return list(PARITY_TEXTS), list(PARITY_TEXTS)
    data = shared / "bestbuy-small"
    clicks = pd.read_csv(data / "bestbuy_small_clicks.csv.gz", usecols=["query"])
    products = pd.read_csv(data / "bestbuy_small_products.csv.gz", usecols=["name"])
    rng = np.random.default_rng(seed)
    distinct = clicks["query"].dropna().astype(str).str.strip().drop_duplicates()
    distinct = distinct[distinct.str.len() > 0].to_numpy()
    names = products["name"].dropna().astype(str).drop_duplicates().to_numpy()
    pick = rng.choice(len(distinct), min(queries, len(distinct)), replace=False)
    pick_names = rng.choice(len(names), min(titles, len(names)), replace=False)
    return distinct[pick].tolist(), names[pick_names].tolist()


def cosines(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    dot = (vectors.astype(np.float64) * reference).sum(axis=1)
    return dot / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, default=Path("artifacts/encoder"))
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (service: 1)")
    parser.add_argument("--rounds", type=int, default=400, help="single-query calls per path")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--titles", type=int, default=872)
    args = parser.parse_args(argv)

    if not (args.encoder / "encoder.json").exists():
        export_text_encoder(args.encoder)
    torch.set_num_threads(args.threads)
    reference_encoder = TextEncoder()
    variants = {
        v: OnnxTextEncoder(args.encoder, variant=v, threads=args.threads)
        for v in ("fp32", "int8", "fp16")
    }
    queries, titles = real_texts(args.queries, args.titles)
    sets = {"queries": queries, "titles": titles, "parity_texts": list(PARITY_TEXTS)}
    quality = {}
    for set_name, texts in sets.items():
        reference = reference_encoder.encode(texts, progress=False)
        for variant, encoder in variants.items():
            c = cosines(encoder.encode(texts), reference)
            quality[(variant, set_name)] = {
                "cosine_min": round(float(c.min()), 6),
                "cosine_mean": round(float(c.mean()), 6),
                "cosine_p01": round(float(np.percentile(c, 1)), 6),
                "texts": len(texts),
            }

    calls = {f"onnx_{v}": (lambda q, e=e: e.encode([q])) for v, e in variants.items()}
    calls["torch_fp32"] = lambda q: reference_encoder.encode([q], progress=False)
    for fn in calls.values():  # warm-up
        for q in queries[:20]:
            fn(q)
    times = {name: [] for name in calls}
    order = list(calls)
    random.seed(0)
    for i in range(args.rounds):
        query = queries[i % len(queries)]
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            calls[name](query)
            times[name].append(time.perf_counter() - start)

    rows = []
    for name, samples in times.items():
        runtime, variant = name.split("_")
        ms = np.array(samples) * 1e3
        row = {
            "variant": variant,
            "runtime": "onnxruntime" if runtime == "onnx" else "torch",
            "threads": args.threads,
            "p50_ms": round(float(np.median(ms)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "calls": len(ms),
        }
        if runtime == "onnx":
            for set_name in sets:
                q = quality[(variant, set_name)]
                row[f"cosine_min_{set_name}"] = q["cosine_min"]
                row[f"cosine_mean_{set_name}"] = q["cosine_mean"]
                row[f"cosine_p01_{set_name}"] = q["cosine_p01"]
        rows.append(row)
        print(row)
    path = write_results(
        "text_encoder",
        rows,
        extra={
            "reference": "PyTorch fp32 (training.text_encoder.TextEncoder)",
            "texts": {k: len(v) for k, v in sets.items()},
            "encoder_id": reference_encoder.encoder_id,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
