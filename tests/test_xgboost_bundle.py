"""The XGBoost ranker baseline as a bundle: its graph computes what XGBoost computes, a graph
that does not is refused without replacing the old bundle, and the service ranks with it over
HTTP exactly as the rankers score the same rows through the training feature path."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

import export.xgboost_bundle as xgb_export
from contract import schema
from contract.schema import TASKS
from export.bundle import ParityError
from loadtest.service_process import ServiceProcess
from pipelines.default_bundle import example_request
from training.features import encode_frame
from training.xgboost_ranker import fit_rankers, margins, wide_rows


@pytest.fixture(scope="module")
def prepared(small_log_dir):
    from training.fitting import prepare

    return prepare(small_log_dir, tasks=TASKS, progress=False)


@pytest.fixture(scope="module")
def rankers(prepared):
    return fit_rankers(prepared.train, seed=0, rounds=15)


@pytest.fixture(scope="module")
def bundle_dir(prepared, rankers, tmp_path_factory):
    out = tmp_path_factory.mktemp("xgb") / "bundle"
    xgb_export.write_xgboost_bundle(rankers, prepared.spec, TASKS, out, {}, {"rounds": 15})
    return out


def test_the_graph_computes_the_rankers_margins(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["family"] == "xgboost" and manifest["tasks"] == list(TASKS)
    assert max(manifest["parity"]["onnx_vs_xgboost_max_abs"].values()) <= 1e-6
    assert [i["name"] for i in manifest["inputs"]] == ["request_cat", "item_cat", "numeric"]


def test_a_graph_of_other_trees_is_refused_and_the_old_bundle_stays(
    prepared, rankers, tmp_path, monkeypatch
):
    other = fit_rankers(prepared.train, seed=1, rounds=3)
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text('{"version": "good"}')
    original = xgb_export.build_graph
    monkeypatch.setattr(xgb_export, "build_graph", lambda _, spec: original(other, spec))
    with pytest.raises(ParityError, match="differs from XGBoost"):
        xgb_export.write_xgboost_bundle(rankers, prepared.spec, TASKS, out, {}, {})
    assert json.loads((out / "manifest.json").read_text())["version"] == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_the_service_ranks_with_it_as_the_rankers_score(
    bundle_dir, prepared, rankers, small_log_dir
):
    frame = pd.read_parquet(small_log_dir / "impressions.parquet")
    catalog = pd.read_parquet(small_log_dir / "catalog.parquet")
    body = {**example_request(frame, catalog), "top_n": None}
    # The same rows through the training path: encode_frame -> wide features -> XGBoost.
    sizes = frame.groupby(schema.SESSION_ID).size()
    rows = frame[frame[schema.SESSION_ID] == sizes[sizes >= 20].index[0]].head(20)
    encoded = encode_frame(prepared.spec, rows)
    wide = wide_rows(encoded["numeric"], encoded["request_cat"], encoded["item_cat"])
    expected = 1 / (1 + np.exp(-margins(rankers, wide)))
    env = {"MOERANK_BUNDLE_PATH": str(bundle_dir), "MOERANK_REDIS_URL": "",
           "MOERANK_WARMUP_CALLS": "1", "MOERANK_INFERENCE_THREADS": "1"}  # fmt: skip
    with ServiceProcess(env) as service:
        answer = httpx.post(f"{service.url}/v1/rank", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    got = {item["id"]: [item["scores"][t] for t in TASKS] for item in answer.json()["items"]}
    want = {str(i): list(row) for i, row in zip(rows[schema.ITEM_ID], expected)}
    assert got.keys() == want.keys()
    for item, scores in got.items():
        assert scores == pytest.approx(want[item], abs=1e-5)
    assert answer.json()["degraded"]["embedding_cache_misses"] == 0  # no text: nothing to miss
