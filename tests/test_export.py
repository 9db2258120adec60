"""Export: every recipe's bundle passes the parity gates, a broken graph is refused without
leaving anything behind, and the service loads and scores what export writes."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import onnx
import pytest
import torch
from conftest import make_spec
from onnx import numpy_helper

import export.bundle
from export.bundle import PARITY_BATCHES, ParityError, write_bundle
from export.serving_graph import ServingGraph, batched_example, example_inputs
from training.checkpoint import save_checkpoint
from training.models.registry import FAMILIES, build, config_for, family_of_name

# Options that change only the training objective or training-time noise, never the graph
# served: recipes that differ in nothing else export the same graph, so one of them stands
# for the others. An option missing here only makes the test export more recipes.
TRAINING_ONLY = {
    "noisy_gate",
    "balance_weight",
    "hsc_weight",
    "adversarial_weight",
    "disagreeing",
    "dropout",
    "uncertainty",
    "calibration_weight",
}
SMALL = {"hidden": (16, 8), "embedding_dim": 4, "text_proj": 8}


def distinct_recipes() -> list[str]:
    """One recipe per distinct served graph, across every family in the registry."""
    chosen: dict[tuple, str] = {}
    for family, (_, _, recipes) in FAMILIES.items():
        for name, config in recipes.items():
            served = tuple(
                (f.name, getattr(config, f.name))
                for f in fields(config)
                if f.name not in TRAINING_ONLY
            )
            chosen.setdefault((family, served), name)
    return sorted(chosen.values())


def trained_looking(name: str, spec, seed: int = 0):
    """A recipe at small size with random, non-uniform parameters (distinct gate logits:
    fresh gates start at zero, where TopK would only break ties)."""
    torch.manual_seed(seed)
    known = {f.name for f in fields(FAMILIES[family_of_name(name)][1])}
    config = config_for(name, **{k: v for k, v in SMALL.items() if k in known})
    counts = torch.arange(spec.request_categorical[0].cardinality) + 1
    model = build(family_of_name(name), config, spec, counts)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval(), counts


def checkpoint(tmp_path, name: str, spec, seed: int = 0):
    model, counts = trained_looking(name, spec, seed)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, name, model, spec, {"test_session_auc": 0.5}, counts)
    return path, model


@pytest.fixture(scope="module")
def spec():
    return make_spec(text_dim=24)


@pytest.fixture(scope="module")
def encoder_stub(tmp_path_factory):
    """Only what export reads of an encoder directory: its identity (the ONNX encoder itself
    is tested in test_text_encoder.py and loaded by the service in the end-to-end tests)."""
    directory = tmp_path_factory.mktemp("encoder")
    (directory / "encoder.json").write_text(json.dumps({"encoder_id": "test-encoder"}))
    return directory


@pytest.mark.parametrize("name", distinct_recipes())
def test_every_recipe_exports_within_the_parity_gates(name, spec, encoder_stub, tmp_path):
    path, model = checkpoint(tmp_path, name, spec)
    meta = write_bundle(path, tmp_path / "bundle", encoder_stub, version="t1")

    experts = meta.experts
    skippable = model.request_level_gate and experts.k < experts.n
    assert experts.path == ("skip" if skippable else "dense")
    worst = meta.parity["onnx_vs_torch_max_abs"]
    assert sorted(worst) == sorted(PARITY_BATCHES) and max(worst.values()) <= 1e-4
    if skippable:
        assert meta.parity["skip_vs_dense_max_abs"] <= 1e-5
    assert (meta.batched is not None) == (skippable and model.batches_requests)
    if meta.batched:
        assert meta.parity["batched_vs_alone_max_abs"] <= 1e-5
        assert (tmp_path / "bundle" / meta.batched.file).exists()
    written = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert written["name"] == name and written["version"] == "t1"
    assert [i["name"] for i in written["inputs"]] == ServingGraph(model, False).input_names
    graph = onnx.load(tmp_path / "bundle" / "model.onnx")
    ops = {node.op_type for node in graph.graph.node}
    assert not ops & {"If", "Loop", "Scan"}
    if experts.path == "skip":  # the gated experts' weights are only read K rows at a time
        stacked = [t.name for t in graph.graph.initializer if t.name.endswith("item_weight")]
        readers = [{n.op_type for n in graph.graph.node if name in n.input} for name in stacked]
        assert "TopK" in ops and {"Gather"} in readers


def _perturbing_export(original, change):
    """export_onnx, then `change` added to every value of one expert weight of the graph."""

    def export_onnx(graph, example, path):
        original(graph, example, path)
        model = onnx.load(path)
        for tensor in model.graph.initializer:
            if "experts" in tensor.name and "weight" in tensor.name:
                values = numpy_helper.to_array(tensor).copy()
                values += change
                tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
                break
        else:
            raise AssertionError("no expert weight in the graph")
        onnx.save(model, path)

    return export_onnx


def test_a_graph_that_differs_from_torch_is_refused_and_nothing_is_written(
    spec, encoder_stub, tmp_path, monkeypatch
):
    path, _ = checkpoint(tmp_path, "dnn", spec)
    out = tmp_path / "bundles" / "dnn"
    out.mkdir(parents=True)  # the bundle a failed export must not replace
    (out / "manifest.json").write_text(json.dumps({"version": "good"}))
    before = sorted(p.name for p in out.parent.iterdir())

    exporter = export.bundle.export_onnx
    monkeypatch.setattr(export.bundle, "export_onnx", _perturbing_export(exporter, 0.5))
    with pytest.raises(ParityError, match="differs from torch"):
        write_bundle(path, out, encoder_stub, version="bad")
    monkeypatch.setattr(export.bundle, "export_onnx", _perturbing_export(exporter, np.nan))
    with pytest.raises(ParityError, match="differs from torch by nan"):
        write_bundle(path, tmp_path / "bundles" / "fresh", encoder_stub, version="bad")

    assert sorted(p.name for p in out.parent.iterdir()) == before  # no bundle, no leftovers
    assert json.loads((out / "manifest.json").read_text())["version"] == "good"


def test_the_service_loads_and_scores_an_exported_bundle(tmp_path):
    from service.bundle import Bundle

    spec = make_spec()  # no text: the service's encoder loading is the end-to-end tests' job
    path, model = checkpoint(tmp_path, "moe", spec, seed=3)
    write_bundle(path, tmp_path / "bundle", version="t")
    bundle = Bundle(tmp_path / "bundle", provider="cpu")
    assert bundle.manifest.experts.path == "skip"

    example = example_inputs(model, spec, 50, seed=9)
    scores, index, weight = bundle.score(*(t.numpy() for t in example))
    with torch.no_grad():
        out = model(dict(zip(bundle.input_names, example)))
    assert np.abs(scores - out.logits.sigmoid().numpy()).max() <= 1e-4
    assert sorted(index.tolist()) == sorted(out.gating.top_index[0].tolist())
    assert np.isclose(weight.sum(), 1.0, atol=1e-6)


def test_the_batched_graph_scores_each_request_as_it_scores_alone(spec, encoder_stub, tmp_path):
    """Requests of different lengths and different gates in one run of model_batched.onnx
    against each run alone through model.onnx: same experts, scores within 1e-5."""
    import onnxruntime as ort

    path, model = checkpoint(tmp_path, "adv_hsc_moe", spec, seed=5)
    meta = write_bundle(path, tmp_path / "bundle", encoder_stub, version="t")
    assert meta.experts.path == "skip" and meta.batched is not None
    alone_graph, together_graph = (
        ort.InferenceSession(str(tmp_path / "bundle" / name), providers=["CPUExecutionProvider"])
        for name in ("model.onnx", meta.batched.file)
    )
    lengths = [5, 100, 1, 37, 100, 2, 64]
    alone, together = batched_example(model, spec, lengths, seed=21)
    names = list(meta.batched.inputs)
    scores, index, weight = together_graph.run(
        None, {n: t.numpy() for n, t in zip(names, together)}
    )
    each = [
        alone_graph.run(None, {n: t.numpy() for n, t in zip(names, tensors)}) for tensors in alone
    ]
    assert len({tuple(e[1]) for e in each}) > 1  # the requests chose different experts
    assert index.tolist() == [e[1].tolist() for e in each]
    assert np.abs(weight - np.stack([e[2] for e in each])).max() <= 1e-5
    assert scores.shape == (sum(lengths), len(meta.tasks))
    assert np.abs(scores - np.concatenate([e[0] for e in each])).max() <= 1e-5
