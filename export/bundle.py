"""Bundles: model.onnx + manifest.json + the text encoder, written only after parity checks.

The manifest (contract.manifest) holds everything the service needs to turn a request into
the graph's inputs; the service never imports torch and never unpickles anything.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from contract.features import FeatureSpec
from contract.manifest import (
    BATCH_INPUTS,
    BatchedGraph,
    Experts,
    Manifest,
    Score,
    TextEncoderRef,
    describe_inputs,
)
from export.serving_graph import (
    BatchedServingGraph,
    ServingGraph,
    batched_example,
    example_inputs,
    export_onnx,
)
from training.checkpoint import load_checkpoint

PARITY_BATCHES = (1, 7, 100, 1000)
TORCH_TOLERANCE = 1e-4  # onnxruntime vs PyTorch eval mode, absolute
PATHS_TOLERANCE = 1e-5  # skipping graph vs dense graph, batched vs alone, absolute
# Item counts of the requests the batched graph is checked on, together and each alone.
PARITY_REQUESTS = ((1,), (7, 1, 100), (100, 3, 30, 1, 64, 100, 12, 7))


class ParityError(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""


def run_onnx(session: ort.InferenceSession, names: list[str], tensors) -> list[np.ndarray]:
    return session.run(None, {n: t.numpy() for n, t in zip(names, tensors)})


def check_parity(path: Path, graph: ServingGraph, spec: FeatureSpec) -> dict[int, float]:
    """Max |onnx - torch| of the scores per batch size; raises ParityError over tolerance."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = {}
    for items in PARITY_BATCHES:
        example = example_inputs(graph.model, spec, items, seed=1000 + items)
        with torch.no_grad():
            reference = graph.model(dict(zip(graph.input_names, example))).logits.sigmoid()
        scores = run_onnx(session, graph.input_names, example)[0]
        worst[items] = float(np.abs(scores - reference.numpy()).max())
        if not worst[items] <= TORCH_TOLERANCE:  # NaN fails too
            raise ParityError(f"B={items}: onnx differs from torch by {worst[items]:.2e}")
    return worst


def check_paths_agree(skip: Path, dense: Path, graph: ServingGraph, spec) -> float:
    """Max |skip - dense| over the parity batches; raises ParityError over tolerance."""
    sessions = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (skip, dense)
    ]
    worst = 0.0
    for items in PARITY_BATCHES:
        example = example_inputs(graph.model, spec, items, seed=2000 + items)
        a, b = (run_onnx(s, graph.input_names, example)[0] for s in sessions)
        difference = float(np.abs(a - b).max())
        worst = difference if np.isnan(difference) else max(worst, difference)
    if not worst <= PATHS_TOLERANCE:  # NaN fails too
        raise ParityError(f"skipping and dense graphs differ by {worst:.2e}")
    return worst


def check_batched_agrees(batched: Path, single: Path, graph: BatchedServingGraph, spec) -> float:
    """Max |batched - alone| of scores and expert weights, and the same experts, over the
    PARITY_REQUESTS batches (each request with its own query, so its own gate); raises
    ParityError over tolerance."""
    sessions = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (batched, single)
    ]
    single_names = graph.input_names[: -len(BATCH_INPUTS)]
    worst = 0.0
    for n, lengths in enumerate(PARITY_REQUESTS):
        alone, together = batched_example(graph.model, spec, list(lengths), seed=3000 + 100 * n)
        scores, index, weight = run_onnx(sessions[0], graph.input_names, together)
        each = [run_onnx(sessions[1], single_names, tensors) for tensors in alone]
        if not (index == np.stack([e[1] for e in each])).all():
            raise ParityError(f"requests {lengths}: the batched graph chose other experts")
        differences = (
            np.abs(scores - np.concatenate([e[0] for e in each])).max(),
            np.abs(weight - np.stack([e[2] for e in each])).max(),
        )
        worst = max(worst, *map(float, differences))
        if not worst <= PATHS_TOLERANCE:  # NaN fails too
            raise ParityError(f"requests {lengths}: batched and alone differ by {worst:.2e}")
    return worst


def _experts(graph: ServingGraph, spec: FeatureSpec) -> tuple[int, int]:
    """(N, K): experts the gate chooses among, and how many it reports per request."""
    example = example_inputs(graph.model, spec, 2)
    with torch.no_grad():
        gating = graph.model(dict(zip(graph.input_names, example))).gating
        reported = graph(*example)[1].shape[0]
    return (1 if gating is None else gating.weights.shape[1]), reported


EXPECTED_GRADE = "expected_grade"


def ranking_score(choice: Score | str | None, tasks: list[str], model_task: str) -> Score:
    """The manifest's score from an export option: None -> the model's own score task; a task
    name -> its probability; "expected_grade" -> the sum over every task, the tasks being a
    cascade over consecutive grades (contract.manifest.Score); a Score as it is."""
    if isinstance(choice, Score):
        return choice
    if choice is None:
        return Score(task=model_task)
    if choice == EXPECTED_GRADE:
        return Score(formula=EXPECTED_GRADE, tasks=tasks)
    if choice not in tasks:
        raise ValueError(f"score {choice!r}: name one of the tasks {tasks} or {EXPECTED_GRADE!r}")
    return Score(task=choice)


def spec_score(data_spec) -> Score:
    """The score a data spec's labels rank by, as evaluation ranks (training.data.spec):
    the expected grade of a graded cascade, else the first task's probability."""
    labels = data_spec.labels
    if labels.score != EXPECTED_GRADE:
        return Score(task=labels.score)
    graded = labels.graded
    steps = np.diff(np.array((graded.range[0], *graded.thresholds), np.float64))
    return Score(
        formula=EXPECTED_GRADE,
        tasks=list(graded.tasks),
        weights=steps.tolist(),
        offset=float(graded.range[0]),
    )


def manifest(
    ckpt: dict,
    graph: ServingGraph,
    spec: FeatureSpec,
    parity: dict,
    version: str,
    batched: BatchedGraph | None = None,
    score: Score | str | None = None,
) -> Manifest:
    model, config = graph.model, ckpt["config"]
    experts, top_k = _experts(graph, spec)
    tasks = list(config["tasks"])
    return Manifest(
        name=ckpt["name"],
        version=version,
        family=ckpt["family"],
        tasks=tasks,
        score=ranking_score(score or ckpt.get("score"), tasks, model.score_task),
        inputs=describe_inputs(graph.input_names, spec),
        features=spec,
        normalisation="inside the graph: z-score with each numeric feature's mean and std",
        text_encoder=text_encoder_ref(spec),
        experts=Experts(
            n=experts,
            k=top_k,
            gate_inputs=list(config["gate_inputs"]) if experts > 1 else [],
            gate_level="none"
            if experts == 1
            else ("request" if model.request_level_gate else "item"),
            path="skip" if graph.skip_experts else "dense",
        ),
        batched=batched,
        recipe=config,
        training=ckpt["metrics"],
        parity=parity,
        created=now_utc(),
        software={"torch": torch.__version__, "onnxruntime": ort.__version__},
    )


def text_encoder_ref(spec: FeatureSpec) -> TextEncoderRef | None:
    """Where the bundle keeps the text encoder the model reads, if it reads text."""
    return TextEncoderRef(id=spec.encoder_id, dim=spec.text_dim) if spec.text_dim else None


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def default_version() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")


def move_into_place(staging: Path, out_dir: Path) -> None:
    """Replace out_dir by the finished staging directory."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), out_dir)


def write_bundle(
    checkpoint: Path,
    out_dir: Path,
    encoder_dir: Path | None = None,
    skip_experts: bool | None = None,
    version: str | None = None,
    score: Score | str | None = None,
) -> Manifest:
    """Export `checkpoint` to a bundle directory; returns the manifest.

    score: what the service ranks by (`ranking_score`); default the checkpoint's `score` if
    training recorded one, else the model's score task.

    skip_experts: None picks the skipping path whenever the gate is request-level and
    keeps fewer experts than there are (K < N; with K = N gathering would only copy). The
    bundle is assembled in a temporary directory and moved into place only after every
    parity check passed, so a failed export never leaves a half-written bundle.
    """
    model, ckpt = load_checkpoint(checkpoint)
    spec = FeatureSpec.from_dict(ckpt["spec"])
    if skip_experts is None:
        experts, top_k = _experts(ServingGraph(model, skip_experts=False), spec)
        skip_experts = model.request_level_gate and top_k < experts
    if spec.text_dim and encoder_dir is None:
        raise ValueError("this model reads text embeddings: pass the text encoder directory")
    version = version or default_version()
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(
        dir=out_dir.parent if out_dir.parent.exists() else None
    ) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        graph = ServingGraph(model, skip_experts)
        example = example_inputs(model, spec, 7)
        export_onnx(graph, example, staging / "model.onnx")
        parity = {"onnx_vs_torch_max_abs": check_parity(staging / "model.onnx", graph, spec)}
        if skip_experts:
            dense = ServingGraph(model, skip_experts=False)
            export_onnx(dense, example, Path(tmp) / "dense.onnx")
            parity["skip_vs_dense_max_abs"] = check_paths_agree(
                staging / "model.onnx", Path(tmp) / "dense.onnx", graph, spec
            )
        batched = None
        if skip_experts and model.batches_requests:
            together = BatchedServingGraph(model)
            batched = BatchedGraph(inputs=tuple(together.input_names))
            export_onnx(
                together, batched_example(model, spec, [3, 5, 2])[1], staging / batched.file
            )
            parity["batched_vs_alone_max_abs"] = check_batched_agrees(
                staging / batched.file, staging / "model.onnx", together, spec
            )
        if spec.text_dim:
            encoder = json.loads((Path(encoder_dir) / "encoder.json").read_text())
            if encoder["encoder_id"] != spec.encoder_id:
                raise ValueError(
                    f"model trained with encoder {spec.encoder_id!r}, got {encoder['encoder_id']!r}"
                )
            shutil.copytree(encoder_dir, staging / "text_encoder")
        meta = manifest(ckpt, graph, spec, parity, version, batched, score)
        meta.write(staging)
        move_into_place(staging, out_dir)
    return meta
