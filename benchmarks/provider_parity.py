"""The ranking served on another onnxruntime execution provider (CUDA) equals the CPU one.

Two services on the same bundle, one with MOERANK_PROVIDER=cpu and one with the provider
asked for, answer the same /v1/rank calls (generated log sessions, 100 items, the whole list
returned). Each answer must list the ids in the CPU's order, except where two neighbours'
CPU scores are within --tolerance (a near-tie that float rounding on another device may
swap), and every score must be within --tolerance of the CPU's. Both services encode queries
with the same text encoder variant, so only the ranking graph's device differs.

    python benchmarks/provider_parity.py --bundle artifacts/bundles/default [--provider cuda]

Exits 1 on a mismatch; writes results/<--name>.json.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import httpx
import orjson

from contract.embeddings import load_embedding_store
from loadtest.service_process import ServiceProcess
from loadtest.traffic import Mix, Traffic, read_log
from training.results import cpu_model, write_results


def compare(cpu: dict, other: dict, tolerance: float) -> dict:
    """How `other`'s answer differs from the CPU's: swapped positions not explained by a
    near-tie, and the largest score difference."""
    cpu_ids = [item["id"] for item in cpu["items"]]
    other_ids = [item["id"] for item in other["items"]]
    scores = {item["id"]: item["score"] for item in cpu["items"]}
    theirs = {item["id"]: item["score"] for item in other["items"]}
    unexplained = sum(
        a != b and abs(scores[a] - scores.get(b, float("inf"))) > tolerance
        for a, b in zip(cpu_ids, other_ids)
    )
    return {
        "same_ids": set(cpu_ids) == set(other_ids),
        "same_order": cpu_ids == other_ids,
        "unexplained_swaps": unexplained,
        "max_score_diff": max(abs(scores[i] - theirs.get(i, float("inf"))) for i in cpu_ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/default"))
    parser.add_argument("--artifacts", type=Path, help="default: the bundle's ../..")
    parser.add_argument("--provider", default="cuda")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--env", action="append", default=[], help="extra MOERANK_X=value")
    parser.add_argument("--name", default="provider_parity")
    args = parser.parse_args()
    artifacts = args.artifacts or args.bundle.resolve().parents[1]
    store = artifacts / "item_embeddings.npz"
    ids = set(map(str, load_embedding_store(store).item_ids))
    log = read_log(artifacts / "data" / "searchlog", ids)
    mix = Mix(((args.items, 1.0),), cold_share=0.0, bad_share=0.0, top_n=None)
    traffic = Traffic(log, mix, seed=2)
    sessions = random.Random(0).sample(range(len(log.queries)), min(args.calls, len(log.queries)))
    bodies = [traffic.next(session).body for session in sessions]
    env = {
        "MOERANK_BUNDLE_PATH": str(args.bundle),
        "MOERANK_EMBEDDING_STORE_PATH": str(store),
        **dict(pair.split("=", 1) for pair in args.env),
    }
    answers = {}
    for provider in ("cpu", args.provider):
        with (
            ServiceProcess({**env, "MOERANK_PROVIDER": provider}) as service,
            httpx.Client(base_url=service.url, timeout=60) as client,
        ):
            answers[provider] = []
            for body in bodies:
                answer = client.post(
                    "/v1/rank", content=body, headers={"content-type": "application/json"}
                )
                answer.raise_for_status()
                answers[provider].append(orjson.loads(answer.content))
    rows = [
        compare(cpu, other, args.tolerance)
        for cpu, other in zip(answers["cpu"], answers[args.provider])
    ]
    summary = {
        "calls": len(rows),
        "same_order": sum(r["same_order"] for r in rows),
        "unexplained_swaps": sum(r["unexplained_swaps"] for r in rows),
        "different_ids": sum(not r["same_ids"] for r in rows),
        "max_score_diff": max(r["max_score_diff"] for r in rows),
    }
    ok = not summary["unexplained_swaps"] and not summary["different_ids"]
    ok = ok and summary["max_score_diff"] <= args.tolerance
    extra = {"provider": args.provider, "tolerance": args.tolerance, "cpu": cpu_model()}
    path = write_results(args.name, rows, extra={**extra, **summary, "equal": ok})
    print(
        f"{args.provider} against cpu over {summary['calls']} calls of {args.items} items: "
        f"{summary['same_order']} in the same order, {summary['unexplained_swaps']} swaps "
        f"beyond near-ties, max score difference {summary['max_score_diff']:.2e} "
        f"-> {'EQUAL' if ok else 'DIFFERENT'} ({path})"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
