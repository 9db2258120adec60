"""mlpr Table 5 on this machine: P99 of ranking 100 products, from request to ranked list,
every model through the same HTTP API in one run (so the ratios hold on a noisy machine).

Rows (the paper's P99 on a Xeon E5-2660 v4 + V100 in brackets):
- XGBoost ranker, no query/product embedding [58 ms]
- MLP_MTL, product embeddings precomputed in Redis [96 ms]
- MLPR without precomputing: every product title encoded in the request [171 ms]
- MLPR, product embeddings precomputed in Redis [112 ms]
- Adv & HSC-MoE, precomputed, all N experts (dense) and only the gate's K (skip)

Every row reads what it needs per call, as the paper measured it: item vectors from Redis
(one MGET, no in-process item LRU) and the query encoded in the request (no query LRU). The
no-precompute row sends ids no store holds, with titles, and encodes them inline
(MOERANK_COLD_ITEMS=inline). Latency depends on the architecture, not the weights: the bundles
are trained for one epoch on the default log (artifacts/data/searchlog, `make bundle`); MLPR
and MLP_MTL have the widths of `make reproduce SIZE=full`.

    python benchmarks/mlpr_table5.py [--artifacts artifacts] [--seconds 20] [--concurrency 1]

Writes results/mlpr_table5.json (rows {model, deployment, path, concurrency, items, cold_share,
rps, p50_ms, p95_ms, p99_ms, errors, server: stage breakdown}) with P99 ratios to XGBoost.
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

import redis
from serve_latency import measure_points, numbers

from contract.embeddings import load_embedding_store
from contract.schema import TASKS
from export.bundle import write_bundle
from export.xgboost_bundle import write_xgboost_bundle
from loadtest.traffic import read_log
from training.experiments.mlpr import options
from training.fitting import fit, prepare, score_metrics
from training.results import write_results
from training.trainer import TrainConfig
from training.xgboost_ranker import fit_rankers, margins, wide_features

PAPER_P99_MS = {"xgboost": 58, "mlp_mtl": 96, "mlpr_no_precompute": 171, "mlpr": 112}


def build_bundles(artifacts: Path) -> dict[str, Path]:
    """The Table 5 bundles under artifacts/bundles/table5 (built once; delete to rebuild)."""
    root, default = artifacts / "bundles" / "table5", artifacts / "bundles" / "default"
    encoder = default / "text_encoder"
    out = {name: root / name for name in ("xgboost", "mlp_mtl", "mlpr", "adv_hsc_moe_dense")}
    out["adv_hsc_moe_skip"] = default
    data = artifacts / "data" / "searchlog"
    if not (out["xgboost"] / "manifest.json").exists():
        plain = prepare(data, tasks=TASKS, progress=False)
        rankers = fit_rankers(plain.train, seed=0, rounds=300)
        scores = margins(rankers, wide_features(plain.test))[:, 0]
        training = {"test": score_metrics(plain.test, scores)}
        write_xgboost_bundle(rankers, plain.spec, TASKS, out["xgboost"], training, {"rounds": 300})
    text = None
    for name in ("mlp_mtl", "mlpr"):
        if (out[name] / "manifest.json").exists():
            continue
        text = text or prepare(data, tasks=TASKS, text=True, progress=False)
        run = artifacts / "runs" / "table5" / name
        config = TrainConfig(epochs=1, lr=1e-3, batch_size=1024)
        fit(text, name, {"tasks": TASKS, **options("full")}, config, run, progress=False)
        write_bundle(run / "model.pt", out[name], encoder)
    if not (out["adv_hsc_moe_dense"] / "manifest.json").exists():
        checkpoint = artifacts / "runs" / "default" / "model.pt"
        write_bundle(checkpoint, out["adv_hsc_moe_dense"], encoder, skip_experts=False)
    return out


def configurations(bundles: dict[str, Path], args) -> list[tuple[str, str, Path, dict, float]]:
    """(model, deployment, bundle, extra env, cold share) per Table 5 row."""
    redis_env = {
        "MOERANK_REDIS_URL": args.redis_url,
        "MOERANK_KEY_PREFIX": args.prefix,
        "MOERANK_EMBEDDING_STORE_PATH": str(args.artifacts / "item_embeddings.npz"),
    }
    inline = {"MOERANK_COLD_ITEMS": "inline"}  # the in-process store, nothing preloaded
    return [
        ("xgboost", "no query/product embedding", bundles["xgboost"], {}, 0.0),
        ("mlp_mtl", "product precomputing (Redis)", bundles["mlp_mtl"], redis_env, 0.0),
        ("mlpr_no_precompute", "titles encoded per request", bundles["mlpr"], inline, 1.0),
        ("mlpr", "product precomputing (Redis)", bundles["mlpr"], redis_env, 0.0),
        ("adv_hsc_moe_dense", "precomputing, all experts", bundles["adv_hsc_moe_dense"],
         redis_env, 0.0),
        ("adv_hsc_moe_skip", "precomputing, top-K experts", bundles["adv_hsc_moe_skip"],
         redis_env, 0.0),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--concurrency", type=lambda t: numbers(t, int), default=[1])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0, help="per point")
    parser.add_argument("--sessions", type=int, default=300, help="distinct log sessions used")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--timeout", type=float, default=30.0, help="per call, seconds")
    parser.add_argument("--name", default="mlpr_table5", help="results/<name>.json")
    args = parser.parse_args()
    args.prefix = f"moerank-table5-{uuid.uuid4().hex[:8]}"
    args.max_in_flight = max(args.concurrency)

    bundles = build_bundles(args.artifacts)
    store = load_embedding_store(args.artifacts / "item_embeddings.npz")
    log = read_log(args.artifacts / "data" / "searchlog", set(map(str, store.item_ids)))
    base_env = {"MOERANK_LRU_ITEMS": "0", "MOERANK_LRU_QUERIES": "0", "MOERANK_REDIS_URL": ""}
    rows = []
    try:
        for model, deployment, bundle, env, cold in configurations(bundles, args):
            path = json.loads((bundle / "manifest.json").read_text())["experts"]["path"]
            points = [(c, None, cold) for c in args.concurrency]
            env = {**base_env, "MOERANK_BUNDLE_PATH": str(bundle), **env}
            # Encoding 100 titles per call is ~100x slower: give that row enough calls.
            seconds = args.seconds * (3 if cold else 1)
            timed = argparse.Namespace(**{**vars(args), "seconds": seconds})
            measured = measure_points(model, path, env, points, log, timed)
            rows += [{**row, "deployment": deployment} for row in measured]
    finally:
        client = redis.Redis.from_url(args.redis_url)
        for keys in batched(client.scan_iter(f"{args.prefix}:*", count=1000), 1000):
            client.delete(*keys)
    base = {r["concurrency"]: r["p99_ms"] for r in rows if r["model"] == "xgboost"}
    print(f"\nTable 5 (P99 ms, {args.items} items; paper's in brackets; ratio to XGBoost)")
    for row in rows:
        paper = PAPER_P99_MS.get(row["model"])
        row["p99_over_xgboost"] = round(row["p99_ms"] / base[row["concurrency"]], 2)
        print(
            f"  {row['model']:<20} {row['deployment']:<30} c={row['concurrency']} "
            f"P50 {row['p50_ms']:7.2f}  P99 {row['p99_ms']:8.2f} "
            f"[{paper if paper else '-':>4}]  x{row['p99_over_xgboost']}"
        )
    extra = {"paper_p99_ms": PAPER_P99_MS,
             "paper_p99_over_xgboost": {k: round(v / 58, 2) for k, v in PAPER_P99_MS.items()},
             "bundles": {k: str(v) for k, v in bundles.items()}, "seconds": args.seconds}  # fmt: skip
    print("wrote", write_results(args.name, rows, extra))


def batched(iterable, n: int):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


if __name__ == "__main__":
    main()
