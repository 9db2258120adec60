"""The walking skeleton end to end: a bundle served by a real uvicorn process over HTTP."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(small_bundle):
    bundle_dir, artifacts = small_bundle
    port = free_port()
    env = {
        **os.environ,
        "MOERANK_BUNDLE_PATH": str(bundle_dir),
        "MOERANK_EMBEDDING_STORE_PATH": str(artifacts / "item_embeddings.npz"),
        "MOERANK_PORT": str(port),
        "MOERANK_INTRA_OP_THREADS": "1",
    }
    env.pop("MOERANK_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "service"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"service exited: {proc.stdout.read()}")
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("service did not become ready")
    yield url, bundle_dir, artifacts
    proc.terminate()
    proc.wait(timeout=20)


def direct_scores(bundle_dir: Path, body: dict, store) -> np.ndarray:
    """The bundle's scores for `body`, computed with onnxruntime and the manifest alone."""
    from service.text_encoder import OnnxTextEncoder

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    feats = manifest["features"]

    def index(field, value):
        vocab = field["vocab"]
        return vocab.index(value) + 1 if value in vocab else 0

    names = {"query_category": "category"}
    q = body["query"]
    request_cat = [
        [index(f, q.get(names.get(f["name"], f["name"]))) for f in feats["request_categorical"]]
    ]
    items = body["items"]
    item_cat = [
        [index(f, it["categorical"].get(f["name"])) for f in feats["item_categorical"]]
        for it in items
    ]
    numeric = [[it["features"].get(f["name"], f["mean"]) for f in feats["numeric"]] for it in items]
    encoder = OnnxTextEncoder(bundle_dir / "text_encoder", variant="int8")
    query_emb = encoder.encode([" ".join(q["text"].lower().split())])
    rows = {i: r for r, i in enumerate(store.item_ids)}
    item_emb = np.stack([store.embeddings[rows[it["id"]]].astype(np.float32) for it in items])
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"))
    feeds = dict(
        request_cat=np.array(request_cat, np.int64), item_cat=np.array(item_cat, np.int64),
        numeric=np.array(numeric, np.float32), query_emb=query_emb, item_emb=item_emb,
    )  # fmt: skip
    return session.run(None, feeds)[0][:, 0]


def test_rank_returns_the_bundle_ranking(server):
    from service.text_encoder import load_embedding_store

    url, bundle_dir, artifacts = server
    body = json.loads((artifacts / "example_request.json").read_text())
    body["top_n"] = None
    answer = httpx.post(f"{url}/v1/rank", json=body, timeout=30).json()
    expected = direct_scores(
        bundle_dir, body, load_embedding_store(artifacts / "item_embeddings.npz")
    )
    order = np.argsort(-expected, kind="stable")
    assert [i["id"] for i in answer["items"]] == [body["items"][i]["id"] for i in order]
    got = np.array([i["score"] for i in answer["items"]])
    np.testing.assert_allclose(got, expected[order], atol=1e-5)
    assert answer["degraded"]["embedding_cache_misses"] == 0
    assert len(answer["experts"]) == 4
    assert abs(sum(e["weight"] for e in answer["experts"]) - 1) < 1e-5


def test_top_n_and_unknown_item_degrades(server):
    url, _, artifacts = server
    body = json.loads((artifacts / "example_request.json").read_text())
    body["items"].append({"id": "never-seen", "title": "wireless noise cancelling headphones"})
    body["items"].append({"id": "no-title"})
    answer = httpx.post(f"{url}/v1/rank", json=body, timeout=30).json()
    assert len(answer["items"]) == body["top_n"]
    assert answer["degraded"]["online_encodes"] == 1
    assert answer["degraded"]["missing_embeddings"] == 1
    assert answer["degraded"]["imputed_features"] == 2 * 9


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda b: b.update(items=[]), "items"),
        (lambda b: b["items"].append(dict(b["items"][0])), "duplicate"),
        (lambda b: b["items"][0]["features"].update(log_price="cheap"), "log_price"),
        (lambda b: b["items"][0]["features"].update(no_such_feature=1.0), "no_such_feature"),
        (lambda b: b["query"].pop("text"), "text"),
    ],
)
def test_bad_input_gets_4xx_naming_the_field(server, mutate, field):
    url, _, artifacts = server
    body = json.loads((artifacts / "example_request.json").read_text())
    mutate(body)
    response = httpx.post(f"{url}/v1/rank", json=body, timeout=30)
    assert response.status_code == 422
    assert field in response.text


def test_nan_and_malformed_json_are_4xx(server):
    url, _, artifacts = server
    raw = (artifacts / "example_request.json").read_text()
    body = raw.replace('"log_price": ', '"log_price": NaN, "x": ', 1)
    response = httpx.post(
        f"{url}/v1/rank", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    response = httpx.post(
        f"{url}/v1/rank", content=raw[:50], headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500


def test_models_health_and_metrics(server):
    url, _, _ = server
    models = httpx.get(f"{url}/v1/models").json()
    assert models["experts"]["path"] == "skip" and models["experts"]["k"] == 4
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    text = httpx.get(f"{url}/metrics").text
    assert 'moerank_request_duration_seconds_bucket{endpoint="/v1/rank"' in text
