"""A loaded bundle: manifest, onnxruntime session, vocabularies and the text encoder.

Validation happens here, at load time, so a bad bundle is rejected before it serves: the
manifest against its schema (contract.manifest), the graph's inputs, the encoder's identity, and a real run of the graph
whose outputs must have the promised shapes and be probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.manifest import Manifest, ManifestError, batch_layout
from service.text_encoder import OnnxTextEncoder


class BundleError(ValueError):
    """The bundle is missing, malformed or does not compute."""


def providers(choice: str) -> list[str]:
    available = ort.get_available_providers()
    if choice in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if choice == "cuda":
        raise BundleError("MOERANK_PROVIDER=cuda but onnxruntime has no CUDA provider here")
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class Field:
    name: str
    lookup: dict[str, int]  # value -> index; anything else -> contract.features.OOV_INDEX


class Bundle:
    """What the service needs from a bundle directory; `score` runs the graph."""

    def __init__(
        self, path: Path, provider: str = "auto", threads: int = 1, encoder_variant="bundle"
    ):
        self.path = Path(path)
        try:
            self.manifest = m = Manifest.read(self.path)
        except ManifestError as exc:
            raise BundleError(str(exc)) from exc
        self.name, self.version, self.tasks = m.name, m.version, list(m.tasks)
        # Columns of the graph's scores summed into the ranking score (one for a task's
        # probability; the cascade's for an expected grade, contract.manifest.Score).
        self.score_columns = [self.tasks.index(task) for task in m.score.reads]
        self.score_weights = np.array(m.score.task_weights, np.float32)
        self.score_offset = np.float32(m.score.offset)
        features = m.features
        self.request_fields = [Field(f.name, f.lookup()) for f in features.request_categorical]
        self.query_fields = [f.name for f in features.request_categorical]
        self.item_fields = [Field(f.name, f.lookup()) for f in features.item_categorical]
        self.numeric_names = [f.name for f in features.numeric]
        self.numeric_means = np.array([f.mean for f in features.numeric], np.float32)
        self.text_dim, self.encoder_id = features.text_dim, features.encoder_id
        self.input_names = [i.name for i in m.inputs]
        self.top_k = m.experts.k
        self.numeric_index = {n: i for i, n in enumerate(self.numeric_names)}
        self.session = _session(self.path / "model.onnx", self.input_names, provider, threads)
        self.batched = None  # several calls in one run (score_requests); None: each alone
        if m.batched:
            names = list(m.batched.inputs)
            self.batched = _session(self.path / m.batched.file, names, provider, threads)
        self.encoder = None
        if self.text_dim:
            # "bundle": the variant the manifest names, whose vectors the model was evaluated on.
            if encoder_variant == "bundle":
                encoder_variant = m.text_encoder.variant
            self.encoder = self._load_encoder(encoder_variant, threads)
        self._check_outputs()

    def _load_encoder(self, variant: str, threads: int) -> OnnxTextEncoder:
        try:
            encoder = OnnxTextEncoder(self.path / self.manifest.text_encoder.dir, variant, threads)
            shape = encoder.encode(["warm up"]).shape
        except Exception as exc:  # missing files, bad JSON, onnxruntime's own errors
            raise BundleError(f"text encoder does not load: {exc}") from exc
        if (encoder.encoder_id, encoder.dim) != (self.encoder_id, self.text_dim):
            raise BundleError(
                f"model reads {self.encoder_id} vectors of dim {self.text_dim}; the bundle's "
                f"encoder is {encoder.encoder_id} of dim {encoder.dim}"
            )
        if shape != (1, self.text_dim):
            raise BundleError(f"text encoder outputs {shape}, expected (1, {self.text_dim})")
        return encoder

    def _check_outputs(self) -> None:
        """It must compute, with the shapes and ranges the manifest promises, before it serves."""
        k = self.top_k
        for items in (1, 7):
            try:
                scores, index, weight = self.score(*self.example(items))
            except Exception as exc:
                raise BundleError(f"model.onnx does not run: {exc}") from exc
            if scores.shape != (items, len(self.tasks)):
                raise BundleError(f"scores {scores.shape}, expected {(items, len(self.tasks))}")
            if not (np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()):
                raise BundleError("scores are not probabilities")
            if index.shape != weight.shape or index.shape[0] not in (1, k):
                raise BundleError(f"expert outputs {index.shape}/{weight.shape}, expected K={k}")
        if self.batched is not None:
            calls = [self.example(n) for n in (7, 1, 3)]
            try:
                together = self.score_requests(calls)
            except Exception as exc:
                raise BundleError(f"{self.manifest.batched.file} does not run: {exc}") from exc
            for one, alone in zip(together, (self.score(*call) for call in calls)):
                if any(
                    a.shape != b.shape or np.abs(a - b).max() > 1e-4 for a, b in zip(one, alone)
                ):
                    raise BundleError("the batched graph does not score as model.onnx does")

    def warm_up(self, calls: int, max_items: int) -> None:
        """First runs allocate onnxruntime's buffers: do them before the first request."""
        for _ in range(calls):
            for items in sorted({1, 10, 100, max_items}):
                self.score(*self.example(items))
            if self.batched is not None:  # the batcher's usual shapes: 100-item calls
                for calls in (2, 4, 8, 16):
                    self.score_requests([self.example(100)] * calls)
            if self.encoder is not None:
                self.encoder.encode(["warm up", "a longer product title to warm the encoder up"])

    def example(self, items: int) -> tuple[np.ndarray, ...]:
        """Valid all-OOV inputs for `items` items (warm-up and load checks)."""
        tensors = [
            np.zeros((1, len(self.request_fields)), np.int64),
            np.zeros((items, len(self.item_fields)), np.int64),
            np.tile(self.numeric_means, (items, 1)),
        ]
        if self.text_dim:
            tensors += [np.zeros((1, self.text_dim), np.float32)]
            tensors += [np.zeros((items, self.text_dim), np.float32)]
        return tuple(tensors)

    def score(self, *tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """scores [B, T], expert_index [K], expert_weight [K]."""
        scores, index, weight = self.session.run(None, dict(zip(self.input_names, tensors)))
        return scores, index, weight

    def score_requests(self, calls: list[tuple[np.ndarray, ...]]) -> list[tuple[np.ndarray, ...]]:
        """Several calls' inputs (each as `score` takes them) in one run of the batched graph
        -> each call's (scores [B, T], expert_index [K], expert_weight [K]), as `score`."""
        lengths = [call[1].shape[0] for call in calls]
        tensors = [np.concatenate(parts) for parts in zip(*calls)]
        feeds = dict(zip(self.manifest.batched.inputs, (*tensors, *batch_layout(lengths))))
        scores, index, weight = self.batched.run(None, feeds)
        return list(zip(np.split(scores, np.cumsum(lengths)[:-1]), index, weight))

    def final_score(self, scores: np.ndarray) -> np.ndarray:
        """[B] the ranking score from the graph's [B, T] task probabilities."""
        if self.manifest.score.formula == "task_probability":
            return scores[:, self.score_columns[0]]
        return scores[:, self.score_columns] @ self.score_weights + self.score_offset

    def describe(self) -> dict:
        m = self.manifest
        return {
            "name": self.name,
            "version": self.version,
            "family": m.family,
            "tasks": self.tasks,
            "score": m.score.model_dump(),
            "experts": m.experts.model_dump(),
            "text_encoder": m.text_encoder.model_dump() if m.text_encoder else None,
            "query_fields": self.query_fields,
            "numeric_features": [{"name": f.name, "impute": f.mean} for f in m.features.numeric],
            "categorical_features": [
                {"name": f.name, "values": len(f.lookup)} for f in self.item_fields
            ],
        }


def _session(path: Path, inputs: list[str], provider: str, threads: int) -> ort.InferenceSession:
    """An onnxruntime session for a graph of the bundle whose inputs must be `inputs`."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=providers(provider))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BundleError(f"{path.name} does not load: {exc}") from exc
    graph_inputs = [i.name for i in session.get_inputs()]
    if graph_inputs != inputs:
        raise BundleError(f"{path.name} inputs {graph_inputs} differ from manifest {inputs}")
    return session
