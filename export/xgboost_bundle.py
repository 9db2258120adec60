"""The XGBoost ranker baseline as a bundle the service serves like any other (mlpr Table 5).

    python -m export.xgboost_bundle --data DIR --out BUNDLE_DIR [--rounds 300] [--seed 0]

trains one rank:pairwise ranker per task on the wide features (training/xgboost_ranker.py)
and writes model.onnx + manifest.json. The graph takes the service's three inputs, builds the
wide feature row in the same order as training (raw numeric, request codes repeated per item,
item codes), runs one TreeEnsembleRegressor per task and reports sigmoid(margin) per task: an
order-preserving squash of a ranking margin, not a calibrated probability.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
import xgboost
from onnx import TensorProto, helper

from contract.features import FeatureSpec
from contract.manifest import GRAPH_INPUTS, Experts, Manifest, Score, describe_inputs
from contract.schema import TASKS
from export.bundle import (
    PARITY_BATCHES,
    TORCH_TOLERANCE,
    ParityError,
    default_version,
    move_into_place,
    now_utc,
)
from export.serving_graph import example_inputs
from training.xgboost_ranker import margins, wide_rows

INPUT_NAMES = GRAPH_INPUTS[:3]  # no text
OPSET = 15  # onnxmltools' XGBoost converter supports up to 15


def tree_nodes(ranker, features: int, name: str) -> tuple[list, list]:
    """The ranker's trees as ONNX nodes reading "wide" [B, F] and writing `name` [B, 1].

    onnxmltools converts regressors and classifiers, not XGBRanker; a ranker's trees sum to a
    margin exactly as a squared-error regressor's do, so its booster is converted as one.
    """
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from xgboost import XGBRegressor

    booster = ranker.get_booster().copy()
    booster.set_param({"objective": "reg:squarederror"})
    regressor = XGBRegressor()
    regressor._Booster = booster
    converted = convert_xgboost(
        regressor, initial_types=[("wide", FloatTensorType([None, features]))], target_opset=OPSET
    )
    graph = converted.graph
    renames = {graph.output[0].name: name}
    nodes = []
    for node in graph.node:
        node.name = f"{name}/{node.name}"
        node.output[:] = [renames.get(o, f"{name}/{o}") for o in node.output]
        node.input[:] = [i if i == "wide" else renames.get(i, f"{name}/{i}") for i in node.input]
        nodes.append(node)
    initializers = list(graph.initializer)
    for init in initializers:
        init.name = f"{name}/{init.name}"
    return nodes, initializers


def build_graph(rankers: list, spec: FeatureSpec) -> onnx.ModelProto:
    r, c, f = len(spec.request_categorical), len(spec.item_categorical), len(spec.numeric)
    const = helper.make_tensor
    nodes = [
        helper.make_node("Cast", ["request_cat"], ["request_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["item_cat"], ["item_f"], to=TensorProto.FLOAT),
        helper.make_node("Shape", ["numeric"], ["numeric_shape"], start=0, end=1),
        helper.make_node("Constant", [], ["request_width"], value=const("w", TensorProto.INT64, [1], [r])),
        helper.make_node("Concat", ["numeric_shape", "request_width"], ["request_shape"], axis=0),
        helper.make_node("Expand", ["request_f", "request_shape"], ["request_rows"]),
        helper.make_node("Concat", ["numeric", "request_rows", "item_f"], ["wide"], axis=1),
    ]  # fmt: skip
    initializers, margins = [], []
    for t, ranker in enumerate(rankers):
        tree, weights = tree_nodes(ranker, f + r + c, f"margin_{t}")
        nodes += tree
        initializers += weights
        margins.append(f"margin_{t}")
    nodes += [
        helper.make_node("Concat", margins, ["margins"], axis=1),
        helper.make_node("Sigmoid", ["margins"], ["scores"]),
        helper.make_node("Constant", [], ["expert_index"], value=const("i", TensorProto.INT64, [1], [0])),
        helper.make_node("Constant", [], ["expert_weight"], value=const("v", TensorProto.FLOAT, [1], [1.0])),
    ]  # fmt: skip
    inputs = [
        helper.make_tensor_value_info("request_cat", TensorProto.INT64, [1, r]),
        helper.make_tensor_value_info("item_cat", TensorProto.INT64, ["B", c]),
        helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["B", f]),
    ]
    outputs = [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", len(rankers)]),
        helper.make_tensor_value_info("expert_index", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("expert_weight", TensorProto.FLOAT, [1]),
    ]
    graph = helper.make_graph(nodes, "xgboost_ranker", inputs, outputs, initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", 3)],
        ir_version=8,  # what opset 15 needs; the onnx package's newest may outrun onnxruntime
    )
    onnx.checker.check_model(model)
    return model


def check_parity(path: Path, rankers: list, spec: FeatureSpec) -> dict[int, float]:
    """Max |onnx - sigmoid(XGBoost margin)| per batch size over random valid inputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = {}
    for items in PARITY_BATCHES:
        request_cat, item_cat, numeric = (
            t.numpy() for t in example_inputs(None, spec, items, seed=1000 + items)[:3]
        )
        # Trees split on raw values: spread the draws over each feature's training range.
        numeric = numeric * np.array([max(f.std, 1e-3) for f in spec.numeric], np.float32)
        numeric += np.array([f.mean for f in spec.numeric], np.float32)
        tensors = {"request_cat": request_cat, "item_cat": item_cat, "numeric": numeric}
        wide = wide_rows(
            tensors["numeric"], np.repeat(tensors["request_cat"], items, 0), tensors["item_cat"]
        )
        reference = 1 / (1 + np.exp(-margins(rankers, wide)))
        scores = session.run(None, tensors)[0]
        worst[items] = float(np.abs(scores - reference).max())
        if not worst[items] <= TORCH_TOLERANCE:  # NaN fails too
            raise ParityError(f"B={items}: onnx differs from XGBoost by {worst[items]:.2e}")
    return worst


def write_xgboost_bundle(
    rankers: list, spec: FeatureSpec, tasks, out_dir: Path, training: dict, config: dict,
    version: str | None = None,
) -> Manifest:  # fmt: skip
    """Export per-task rankers to a bundle directory (after the parity check); the manifest."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        onnx.save(build_graph(rankers, spec), str(staging / "model.onnx"))
        parity = {"onnx_vs_xgboost_max_abs": check_parity(staging / "model.onnx", rankers, spec)}
        meta = Manifest(
            name="xgboost",
            version=version or default_version(),
            family="xgboost",
            tasks=list(tasks),
            score=Score(task=tasks[0]),
            inputs=describe_inputs(INPUT_NAMES, spec),
            features=spec,
            normalisation="none: trees split on the raw numeric values",
            text_encoder=None,
            experts=Experts(n=1, k=1, gate_inputs=[], gate_level="none", path="dense"),
            recipe=config,
            training=training,
            parity=parity,
            created=now_utc(),
            software={"xgboost": xgboost.__version__, "onnxmltools": onnxmltools.__version__},
        )
        meta.write(staging)
        move_into_place(staging, out_dir)
    return meta


def main(argv: list[str] | None = None) -> None:
    from training.fitting import prepare, score_metrics
    from training.xgboost_ranker import fit_rankers, wide_features

    parser = argparse.ArgumentParser(prog="python -m export.xgboost_bundle", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="a generated search log")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    prepared = prepare(args.data, tasks=TASKS, progress=False)
    rankers = fit_rankers(prepared.train, args.seed, args.rounds)
    training = {
        "test": score_metrics(prepared.test, margins(rankers, wide_features(prepared.test))[:, 0])
    }
    config = {"rounds": args.rounds, "seed": args.seed, "objective": "rank:pairwise"}
    meta = write_xgboost_bundle(rankers, prepared.spec, TASKS, args.out, training, config)
    print(meta.model_dump_json(include={"name", "version", "training", "parity"}, indent=2))


if __name__ == "__main__":
    main()
