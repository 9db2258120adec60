"""Serving a model trained on a user's own data: the manifest's score (a task, or the expected
grade of a cascade), requests that carry only what the model reads, and old manifests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_spec

from contract.features import OOV_INDEX, FeatureSpec, NumericField
from contract.manifest import Manifest, ManifestError, Score
from export.bundle import write_bundle
from export.serving_graph import example_inputs
from service.bundle import Bundle
from service.features import build_inputs
from service.item_columns import ItemColumns, item_columns
from service.schemas import Query, RankRequest
from training.checkpoint import save_checkpoint
from training.models.registry import build, config_for

CASCADE = ("grade_ge1", "grade_ge2", "grade_ge3")


def user_spec() -> FeatureSpec:
    """A shop's data: two numeric columns, no categories, no scenario, no platform."""
    return FeatureSpec(
        request_categorical=(),
        item_categorical=(),
        numeric=(NumericField("price", 20.0, 5.0), NumericField("rating", 4.0, 0.5)),
    )


def export(tmp_path, spec: FeatureSpec, score: str | None, tasks=CASCADE):
    torch.manual_seed(0)
    model = build("multitask", config_for("mlp_mtl", tasks=tasks, hidden=(8, 8)), spec).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    path = tmp_path / "model.pt"
    save_checkpoint(path, "mlp_mtl", model, spec, {})
    write_bundle(path, tmp_path / "bundle", version="t", score=score)
    return Bundle(tmp_path / "bundle", provider="cpu"), model


def request(items: list[dict], **query) -> tuple[Query, ItemColumns]:
    """build_inputs' arguments for these items and query attributes."""
    parsed = RankRequest.model_validate({"query": {"text": "red shoes", **query}, "items": items})
    return parsed.query, item_columns(parsed)


def test_an_expected_grade_bundle_ranks_by_the_sum_of_the_cascade(tmp_path):
    spec = user_spec()
    bundle, model = export(tmp_path, spec, "expected_grade")

    assert bundle.manifest.score == Score(formula="expected_grade", tasks=list(CASCADE))
    example = example_inputs(model, spec, 9, seed=4)
    scores, _, _ = bundle.score(*(t.numpy() for t in example))
    with torch.no_grad():
        expected = model(dict(zip(bundle.input_names, example))).logits.sigmoid().sum(1)
    assert np.abs(bundle.final_score(scores) - expected.numpy()).max() <= 1e-4
    described = bundle.describe()
    assert described["score"]["formula"] == "expected_grade"
    assert [f["name"] for f in described["numeric_features"]] == ["price", "rating"]
    assert described["query_fields"] == []


def test_a_model_that_reads_no_category_ranks_a_request_without_one(tmp_path):
    bundle, _ = export(tmp_path, user_spec(), "grade_ge2")

    assert bundle.score_columns == [1]
    inputs = build_inputs(bundle, *request([{"id": "a", "features": {"price": 3.0}}, {"id": "b"}]))
    assert inputs.request_cat.shape == (1, 0)
    assert inputs.imputed_features == 3  # missing numeric features: imputed and counted
    assert inputs.numeric.tolist() == [[3.0, 4.0], [20.0, 4.0]]


def test_a_model_that_reads_the_category_ranks_a_query_without_one_as_unknown(tmp_path):
    bundle, _ = export(tmp_path, make_spec(), None, tasks=("click",))

    known = {"brand": "brand1", "item_category": "item_category2"}
    item = [{"id": "a", "categorical": known}]
    without = build_inputs(bundle, *request(item, top_category="top_category1"))
    assert without.request_cat[0, 0] == OOV_INDEX  # the query category: the OOV bucket
    assert without.oov_categories == 3  # counted, with the scenario and platform left out
    given = build_inputs(bundle, *request(item, category="query_category3"))
    assert given.request_cat[0, 0] == 4 and given.oov_categories == 3


def test_an_unknown_score_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(ValueError, match="name one of the tasks"):
        export(tmp_path, user_spec(), "grade_ge4")


def test_a_schema_2_manifest_keeps_its_task_score_and_int8_queries(tmp_path):
    bundle, _ = export(tmp_path, user_spec(), None)
    raw = json.loads(bundle.manifest.to_json())
    raw["schema_version"] = 2
    raw["score"] = {"formula": "task_probability", "task": "grade_ge1"}
    raw["features"] = {**raw["features"], "text_dim": 8, "encoder_id": "e"}
    raw["text_encoder"] = {"id": "e", "dim": 8, "dir": "text_encoder"}
    raw["inputs"] += [
        {"name": n, "level": lv, "dtype": "float32", "shape": [s, 8], "columns": ["e"]}
        for n, lv, s in (("query_emb", "request", 1), ("item_emb", "item", "B"))
    ]

    manifest = Manifest.parse(raw)
    assert manifest.schema_version == 3 and manifest.score.reads == ["grade_ge1"]
    assert manifest.text_encoder.variant == "int8"
    with pytest.raises(ManifestError, match="expected_grade names the cascade"):
        Manifest.parse({**raw, "score": {"formula": "expected_grade", "task": "grade_ge1"}})
