"""Speed of the exported expert paths, side by side in one run.

For each model (N experts, top K) and batch of B items, one request is scored by:

- `torch`: the PyTorch model in eager mode on its skipping path (the same K experts);
- `torch_dense`: the PyTorch model as trained and evaluated, all N experts (eval mode);
- `onnx_dense`: the exported graph that runs all N experts;
- `onnx_skip`: the exported graph that gathers and runs only the K chosen experts;
- `onnx_skip_unfactorised`: the skipping graph with the first layer unfactorised, every item
  row carrying its own copy of the request vector (what the factorisation saves);
- `matmul_ceiling`: onnxruntime running only the matrix products of the skipping path (the
  K experts' weights already gathered, no bias, activation, input block or gate): the rate
  this machine reaches on these shapes.

Paths are timed in turn, in a fresh random order for every repetition, so load from other
processes falls on all of them alike. onnxruntime sessions use the options the service uses
(service.bundle.Bundle). gflop_per_call counts the multiply-adds of the experts actually run
(x2 / 1e9).

    python benchmarks/export_paths.py [--batches 20,100,500] [--threads 1,2] [--seconds 6] [--min-reps 30]

Writes results/export_paths.json.
"""

from __future__ import annotations

import os

# torch's OpenMP workers must not spin between calls either (set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from contract import schema
from contract.features import CategoricalField, FeatureSpec, NumericField
from export.serving_graph import ServingGraph, example_inputs, export_onnx
from training.models.category_moe import CategoryMoE
from training.models.experts import StackedExperts
from training.models.registry import config_for
from training.results import write_results

SETTINGS = ((10, 4), (16, 2))  # (N, K): the paper's setting and its best
HIDDEN = (512, 256)  # experts 802 -> 512 -> 256 -> 1 (adv-hsc-moe §5.1.4)
TEXT_DIM = 384
# Expert input 802 = request 296 (4 x 16 + 232) + item 506 (2 x 16 + 9 + 2 x 232 + 1).
TEXT_PROJ = 232
PATHS = (
    "torch",
    "torch_dense",
    "onnx_dense",
    "onnx_skip",
    "onnx_skip_unfactorised",
    "matmul_ceiling",
)


def bench_spec() -> FeatureSpec:
    """The generator's fields with vocabularies of a mid-sized catalog and 384-d text."""

    def field(name: str, level: str, n: int) -> CategoricalField:
        return CategoricalField(name, level, tuple(f"{name}_{i}" for i in range(n)))

    return FeatureSpec(
        request_categorical=(
            field(schema.QUERY_CATEGORY, "request", 120),
            field(schema.TOP_CATEGORY, "request", 20),
            field(schema.SCENARIO, "request", 5),
            field(schema.PLATFORM, "request", 3),
        ),
        item_categorical=(field("brand", "item", 300), field("item_category", "item", 120)),
        numeric=tuple(NumericField(n, 0.0, 1.0) for n in schema.NUMERIC_FEATURES),
        text_dim=TEXT_DIM,
        encoder_id="bench",
    )


class UnfactorisedExperts(nn.Module):
    """StackedExperts with one [E, dr + dx, h] first layer applied to [request; item] rows:
    the request vector is copied to every item and multiplied B times instead of once."""

    def __init__(self, experts: StackedExperts):
        super().__init__()
        self.stacked = experts
        joined = torch.cat([experts.request_weight, experts.item_weight], dim=1)
        self.first_weight = nn.Parameter(joined.detach().clone())

    def forward(self, request_vec, item_vec, expert_index=None):
        def take(p):
            return p if expert_index is None else p.index_select(0, expert_index)

        rows = torch.cat([request_vec.expand(item_vec.shape[0], -1), item_vec], dim=1)
        hidden = torch.matmul(rows, take(self.first_weight))
        hidden = torch.relu(hidden + take(self.stacked.first_bias).unsqueeze(1))
        weights, biases = self.stacked.weights, self.stacked.biases
        for i, (w, b) in enumerate(zip(weights, biases)):
            hidden = torch.matmul(hidden, take(w)) + take(b).unsqueeze(1)
            if i < len(weights) - 1:
                hidden = torch.relu(hidden)
        return hidden.transpose(0, 1)


def build_model(spec: FeatureSpec, experts: int, top_k: int) -> CategoryMoE:
    torch.manual_seed(experts * 100 + top_k)
    config = config_for(
        "moe", experts=experts, top_k=top_k, hidden=HIDDEN, text_proj=TEXT_PROJ, noisy_gate=False
    )
    model = CategoryMoE(spec, config)
    nn.init.normal_(model.gate.gate.weight)  # a trained-looking gate, not a uniform one
    return model.eval()


def expert_macs(model: CategoryMoE, items: int, run: int, factorised: bool = True) -> int:
    """Multiply-adds of `run` experts for one request of `items` items."""
    experts = model.experts
    request_dim, item_dim = experts.request_weight.shape[1], experts.item_weight.shape[1]
    first = experts.item_weight.shape[2]
    if factorised:
        macs = request_dim * first + items * item_dim * first
    else:
        macs = items * (request_dim + item_dim) * first
    macs += sum(items * w.shape[1] * w.shape[2] for w in experts.weights)
    return run * macs


def ceiling_graph(model: CategoryMoE, index: torch.Tensor) -> bytes:
    """Only the skipping path's matrix products, on the K experts' weights gathered in advance."""
    experts = model.experts

    def gathered(p):
        return p.detach().index_select(0, index).numpy()

    names = ["request_weight", "item_weight", *[f"weight_{i}" for i in range(len(experts.weights))]]
    tensors = [experts.request_weight, experts.item_weight, *experts.weights]
    init = [numpy_helper.from_array(gathered(p), n) for n, p in zip(names, tensors)]
    nodes = [
        helper.make_node("MatMul", ["request_vec", "request_weight"], ["request_share"]),
        helper.make_node("MatMul", ["item_vec", "item_weight"], ["hidden_0"]),
    ]
    for i in range(len(experts.weights)):
        nodes.append(
            helper.make_node("MatMul", [f"hidden_{i}", f"weight_{i}"], [f"hidden_{i + 1}"])
        )
    dr, dx = experts.request_weight.shape[1], experts.item_weight.shape[1]
    floats = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "matmul_ceiling",
        [
            helper.make_tensor_value_info("request_vec", floats, [1, dr]),
            helper.make_tensor_value_info("item_vec", floats, ["items", dx]),
        ],
        [
            helper.make_tensor_value_info("request_share", floats, None),
            helper.make_tensor_value_info(f"hidden_{len(experts.weights)}", floats, None),
        ],
        init,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx_model.ir_version = 9  # what onnxruntime 1.2x reads
    return onnx_model.SerializeToString()


def session(model: str | bytes, threads: int) -> ort.InferenceSession:
    """The options service.bundle.Bundle uses, without spinning: each session's idle workers
    would otherwise spin after every run and take the cores from the path timed next."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def time_paths(calls: dict[str, Callable], seconds: float, min_reps: int) -> dict[str, list]:
    """Per-call wall times (s) of every path, interleaved in a fresh random order per round."""
    for fn in calls.values():  # warm-up: allocations, thread pools, caches
        for _ in range(3):
            fn()
    times = {name: [] for name in calls}
    order = list(calls)
    start = time.perf_counter()
    while len(times[order[0]]) < min_reps or time.perf_counter() - start < seconds:
        random.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
        if len(times[order[0]]) >= 5000:
            break
    return times


def torch_call(model: CategoryMoE, feeds: dict[str, torch.Tensor], skip: bool) -> torch.Tensor:
    with torch.inference_mode():
        return model(feeds, skip_experts=skip).logits.sigmoid()


def exported(model: CategoryMoE, spec: FeatureSpec, skip: bool, directory: Path, name: str):
    path = directory / f"{name}.onnx"
    export_onnx(ServingGraph(model, skip), example_inputs(model, spec, 7), path)
    return str(path)


def run(batches, threads_list, seconds, min_reps, directory: Path) -> tuple[list, dict]:
    spec = bench_spec()
    rows, checks = [], {}
    for experts, top_k in SETTINGS:
        name = f"moe_n{experts}_k{top_k}"
        model = build_model(spec, experts, top_k)
        unfactorised = copy.deepcopy(model)
        unfactorised.experts = UnfactorisedExperts(unfactorised.experts)
        files = {
            "onnx_dense": exported(model, spec, False, directory, f"{name}_dense"),
            "onnx_skip": exported(model, spec, True, directory, f"{name}_skip"),
            "onnx_skip_unfactorised": exported(
                unfactorised, spec, True, directory, f"{name}_unfactorised"
            ),
        }
        for threads in threads_list:
            torch.set_num_threads(threads)
            sessions = {path: session(f, threads) for path, f in files.items()}
            for items in batches:
                example = example_inputs(model, spec, items, seed=items)
                feeds = dict(zip(ServingGraph(model, True).input_names, example))
                numpy_feeds = {k: v.numpy() for k, v in feeds.items()}
                with torch.inference_mode():
                    reference = model(feeds, skip_experts=True)
                    request_vec, item_vec = model.inputs(feeds)
                index = reference.gating.top_index[0]
                ceiling = session(ceiling_graph(model, index), threads)
                ceiling_feeds = {"request_vec": request_vec.numpy(), "item_vec": item_vec.numpy()}
                outputs = {p: s.run(None, numpy_feeds)[0] for p, s in sessions.items()}
                torch_scores = reference.logits.sigmoid().numpy()
                checks[f"{name}/B={items}/threads={threads}"] = {
                    p: float(np.abs(o - torch_scores).max()) for p, o in outputs.items()
                }

                calls = {
                    "torch": partial(torch_call, model, feeds, True),
                    "torch_dense": partial(torch_call, model, feeds, False),
                }
                for path, s in sessions.items():
                    calls[path] = partial(s.run, None, numpy_feeds)
                calls["matmul_ceiling"] = partial(ceiling.run, None, ceiling_feeds)
                times = time_paths(calls, seconds, min_reps)
                run_experts = {"onnx_dense": experts, "torch_dense": experts}
                for path in PATHS:
                    macs = expert_macs(
                        model,
                        items,
                        run_experts.get(path, top_k),
                        factorised=path != "onnx_skip_unfactorised",
                    )
                    ms = np.array(times[path]) * 1e3
                    rows.append(
                        {
                            "model": name,
                            "path": path,
                            "experts": experts,
                            "k": top_k,
                            "batch": items,
                            "threads": threads,
                            "p50_ms": round(float(np.median(ms)), 4),
                            "p99_ms": round(float(np.percentile(ms, 99)), 4),
                            "gflop_per_call": round(2 * macs / 1e9, 5),
                            "experts_run": run_experts.get(path, top_k),
                            "repetitions": len(ms),
                        }
                    )
                print_group(rows[-len(PATHS) :])
    return rows, checks


def ratios(rows: list[dict]) -> list[dict]:
    """The issue's targets as ratios of p50s measured in the same run."""
    groups: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        key = (row["model"], row["batch"], row["threads"])
        groups.setdefault(key, {})[row["path"]] = row
    out = []
    for (model, items, threads), paths in groups.items():
        skip = paths["onnx_skip"]["p50_ms"]
        n, k = paths["onnx_skip"]["experts"], paths["onnx_skip"]["k"]
        out.append(
            {
                "model": model,
                "batch": items,
                "threads": threads,
                "dense_over_skip": round(paths["onnx_dense"]["p50_ms"] / skip, 3),
                "dense_over_skip_target": round(0.85 * n / k, 3),
                "torch_over_skip": round(paths["torch"]["p50_ms"] / skip, 3),
                "torch_dense_over_skip": round(paths["torch_dense"]["p50_ms"] / skip, 3),
                "skip_rate_over_ceiling": round(paths["matmul_ceiling"]["p50_ms"] / skip, 3),
                "unfactorised_over_skip": round(
                    paths["onnx_skip_unfactorised"]["p50_ms"] / skip, 3
                ),
            }
        )
    return out


def print_group(rows: list[dict]) -> None:
    head = rows[0]
    print(f"{head['model']} B={head['batch']} threads={head['threads']}")
    for row in rows:
        rate = row["gflop_per_call"] / row["p50_ms"] * 1e3
        print(
            f"  {row['path']:<24} p50 {row['p50_ms']:8.3f} ms  p99 {row['p99_ms']:8.3f} ms"
            f"  {row['gflop_per_call']:7.3f} GFLOP  {rate:6.1f} GFLOP/s  n={row['repetitions']}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="20,100,500")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per (model, B, threads)")
    parser.add_argument("--min-reps", type=int, default=30)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows, checks = run(batches, threads, args.seconds, args.min_reps, Path(tmp))
    summary = ratios(rows)
    for line in summary:
        print(line)
    path = write_results(
        "export_paths",
        rows,
        extra={
            "ratios": summary,
            "max_abs_vs_torch": checks,
            "shapes": {
                "expert_input": "802 = request 296 + item 506",
                "hidden": list(HIDDEN),
                "tasks": 1,
            },
            "spinning": {
                "onnxruntime": "session.intra_op.allow_spinning=0",
                "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"],
            },
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
