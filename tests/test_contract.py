"""The contracts between stages (contract/): the bundle manifest's schema and versions, the
feature spec and the OOV rule, and the item-embedding formats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_spec

from contract.embeddings import (
    from_bytes,
    item_key,
    load_embedding_store,
    stored_item_ids,
    to_bytes,
    write_embedding_store,
)
from contract.features import OOV_INDEX, FeatureSpec
from contract.manifest import SCHEMA_VERSION, Manifest, ManifestError
from service.bundle import Bundle, BundleError

# A bundle the schema-1 exporter wrote (moerank before contract/): a small category MoE
# without text, kept as it was written.
SCHEMA_1_BUNDLE = Path(__file__).parent / "data" / "bundle_schema1"


def copy_with_manifest(tmp_path: Path, edit) -> Path:
    directory = tmp_path / "bundle"
    shutil.copytree(SCHEMA_1_BUNDLE, directory)
    raw = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps(edit(raw)))
    return directory


def test_a_schema_1_bundle_is_migrated_and_served():
    raw = json.loads((SCHEMA_1_BUNDLE / "manifest.json").read_text())
    assert raw["schema_version"] == 1 and "oov_rule" in raw and "torch_version" in raw

    bundle = Bundle(SCHEMA_1_BUNDLE, provider="cpu")
    manifest = bundle.manifest
    assert manifest.schema_version == SCHEMA_VERSION == 3
    assert manifest.oov_index == OOV_INDEX
    assert manifest.software == {"torch": raw["torch_version"]}
    assert manifest.recipe == raw["model_config"] and manifest.experts.path == "skip"
    assert bundle.describe()["name"] == "moe" and bundle.version == "schema1-test"
    scores, index, weight = bundle.score(*bundle.example(5))
    assert scores.shape == (5, 1) and np.isclose(weight.sum(), 1.0, atol=1e-6)


def test_the_migrated_manifest_is_written_as_schema_3_and_reads_back_equal():
    manifest = Manifest.read(SCHEMA_1_BUNDLE)
    written = json.loads(manifest.to_json())
    assert written["schema_version"] == 3 and "oov_rule" not in written
    assert "model_config" in written  # the JSON key; `recipe` in Python
    assert Manifest.parse(written) == manifest


@pytest.mark.parametrize("version", [0, 4, "1", None])
def test_an_unknown_schema_version_is_refused_saying_what_to_do(tmp_path, version):
    directory = copy_with_manifest(tmp_path, lambda m: {**m, "schema_version": version})
    with pytest.raises(ManifestError, match=f"schema_version {version!r} is not one"):
        Manifest.read(directory)
    with pytest.raises(BundleError, match="export the bundle again"):
        Bundle(directory, provider="cpu")


@pytest.mark.parametrize(
    "edit,says",
    [
        (lambda m: {**m, "tasks": ["atc"]}, "score task 'click' is not one of"),
        (lambda m: {**m, "experts": {**m["experts"], "gate_level": "global"}}, "gate_level"),
        (lambda m: {**m, "typo_field": 1}, "typo_field"),
        (lambda m: {k: v for k, v in m.items() if k != "features"}, "features"),
        (
            lambda m: {**m, "features": {**m["features"], "encoder_id": "enc", "text_dim": 8}},
            "features read enc vectors of dim 8; the text encoder is none",
        ),
        (
            lambda m: {**m, "inputs": m["inputs"][::-1]},
            "inputs \\['numeric', 'item_cat', 'request_cat'\\], expected",
        ),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_problem(tmp_path, edit, says):
    with pytest.raises(BundleError, match=says):
        Bundle(copy_with_manifest(tmp_path, edit), provider="cpu")


def test_a_missing_manifest_is_refused(tmp_path):
    with pytest.raises(BundleError, match="no readable manifest.json"):
        Bundle(tmp_path, provider="cpu")


def test_the_feature_spec_round_trips_and_applies_the_oov_rule():
    spec = make_spec(text_dim=8)
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    field = spec.item_categorical[0]
    lookup = field.lookup()
    assert [lookup[v] for v in field.vocab] == list(range(1, field.cardinality))
    assert lookup.get("never seen", OOV_INDEX) == OOV_INDEX == 0
    with pytest.raises(ValueError, match="text_dim"):
        FeatureSpec.from_dict({**spec.to_dict(), "text_dim": "eight"})


def test_item_embeddings_round_trip_through_the_file_and_the_redis_value(tmp_path):
    ids = np.array(["a", "b:c", "17"])
    vectors = np.arange(12, dtype=np.float16).reshape(3, 4)
    path = tmp_path / "store" / "items.npz"
    write_embedding_store(path, ids, vectors, "enc-1")
    store = load_embedding_store(path)
    assert store.encoder_id == "enc-1" and store.item_ids.tolist() == ids.tolist()
    assert store.embeddings.dtype == np.float16 and (store.embeddings == vectors).all()
    assert stored_item_ids(path)[0] == "enc-1" and not list(path.parent.glob("*.partial"))

    assert item_key("moerank", "enc-1", "b:c") == "moerank:emb:enc-1:b:c"
    for dtype in ("float32", "float16"):
        raw = to_bytes(vectors[1], dtype)
        assert len(raw) == 4 * np.dtype(dtype).itemsize
        assert from_bytes(raw, 4).tolist() == vectors[1].tolist()
    with pytest.raises(ValueError, match="does not fit dimension 5"):
        from_bytes(to_bytes(vectors[1]), 5)
