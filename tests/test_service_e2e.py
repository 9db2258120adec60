"""The service end to end through a real uvicorn process: rankings equal to the bundle's own
scores, every kind of bad input refused with a 4xx naming the field, /metrics counts that
match the requests made. In-process store; Redis has its own test file."""

import functools
import json
import random
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from contract.embeddings import load_embedding_store
from loadtest.server_metrics import metric_delta
from loadtest.service_process import ServiceProcess
from loadtest.traffic import as_columns
from service.text_encoder import OnnxTextEncoder
from tests.conftest import dicts_in

MAX_BODY = 200_000
ADMIN = {"authorization": "Bearer test-e2e-admin"}


@pytest.fixture(scope="module")
def server(service_env, small_bundle):
    env = {
        **service_env,
        "MOERANK_MAX_BODY_BYTES": str(MAX_BODY),
        "MOERANK_ADMIN_TOKENS": "test-e2e-admin",
    }
    with ServiceProcess(env) as service:
        yield service


@pytest.fixture(scope="module")
def pool_server(service_env, small_bundle):
    """The same service with the model run in its thread pool instead of on the loop."""
    with ServiceProcess({**service_env, "MOERANK_MODEL_CALLS": "thread_pool"}) as service:
        yield service


@pytest.fixture
def example(small_bundle) -> dict:
    return json.loads((small_bundle[1] / "example_request.json").read_text())


def direct_run(bundle_dir: Path, body: dict, item_vectors: np.ndarray) -> list[np.ndarray]:
    """The bundle's outputs for `body`, computed with onnxruntime and the manifest alone."""
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
        [index(f, it.get("categorical", {}).get(f["name"])) for f in feats["item_categorical"]]
        for it in items
    ]
    numeric = [
        [it.get("features", {}).get(f["name"], f["mean"]) for f in feats["numeric"]] for it in items
    ]
    # The variant the manifest names (the one its model was evaluated on), as the service does.
    variant = manifest["text_encoder"]["variant"]
    encoder = OnnxTextEncoder(bundle_dir / "text_encoder", variant=variant)
    query_emb = encoder.encode([" ".join(q["text"].lower().split())])
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"))
    feeds = dict(
        request_cat=np.array(request_cat, np.int64), item_cat=np.array(item_cat, np.int64),
        numeric=np.array(numeric, np.float32), query_emb=query_emb, item_emb=item_vectors,
    )  # fmt: skip
    return session.run(None, feeds)


def stored_vectors(artifacts: Path, ids: list[str]) -> np.ndarray:
    store = load_embedding_store(artifacts / "item_embeddings.npz")
    rows = {i: r for r, i in enumerate(store.item_ids)}
    return np.stack([store.embeddings[rows[i]].astype(np.float32) for i in ids])


@pytest.mark.parametrize("service", ["server", "pool_server"])
def test_rank_returns_the_bundle_ranking(service, request, small_bundle, example):
    url, (bundle_dir, artifacts) = request.getfixturevalue(service).url, small_bundle
    example["top_n"] = None
    answer = httpx.post(f"{url}/v1/rank", json=example, timeout=30)
    assert answer.headers["content-type"] == "application/json"
    answer = answer.json()
    ids = [it["id"] for it in example["items"]]
    scores, expert_index, expert_weight = direct_run(
        bundle_dir, example, stored_vectors(artifacts, ids)
    )
    order = np.argsort(-scores[:, 0], kind="stable")
    assert [i["id"] for i in answer["items"]] == [ids[i] for i in order]
    got = np.array([i["score"] for i in answer["items"]])
    np.testing.assert_allclose(got, scores[order, 0], atol=1e-5)
    assert [i["scores"] for i in answer["items"]] == [{"click": s} for s in got.tolist()]
    assert [e["index"] for e in answer["experts"]] == expert_index.tolist()
    np.testing.assert_allclose([e["weight"] for e in answer["experts"]], expert_weight, atol=1e-6)
    assert answer["degraded"] == {
        "embedding_cache_misses": 0,
        "online_encodes": 0,
        "deferred_encodes": 0,
        "cold_encodes_skipped": 0,
        "missing_embeddings": 0,
        "truncated_texts": 0,
        "non_finite_scores": 0,
        "imputed_features": 0,
        "oov_categories": 0,
        "embedding_store": "ok",
    }
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert answer["model"] == {
        "name": manifest["name"],
        "version": manifest["version"],
        "experiment": None,  # no models file: the single bundle, in no experiment
        "variant": None,
    }


def test_missing_inputs_are_imputed_reported_and_scored_as_the_manifest_says(
    server, small_bundle, example
):
    url, (bundle_dir, artifacts) = server.url, small_bundle
    ids = [it["id"] for it in example["items"]]
    del example["items"][0]["features"]["log_price"]
    example["items"][1]["features"] = {}
    example["items"][2]["categorical"]["brand"] = "no-such-brand"
    example["query"]["scenario"] = "Atlantis"
    example["top_n"] = None
    answer = httpx.post(f"{url}/v1/rank", json=example, timeout=30).json()
    assert answer["degraded"]["imputed_features"] == 1 + 9
    assert answer["degraded"]["oov_categories"] == 2
    scores = direct_run(bundle_dir, example, stored_vectors(artifacts, ids))[0][:, 0]
    got = {i["id"]: i["score"] for i in answer["items"]}
    np.testing.assert_allclose([got[i] for i in ids], scores, atol=1e-5)


def test_the_columnar_form_gets_the_row_forms_answer(server, example):
    """The same request with its items as columns: the same answer, byte for byte, with the
    same imputations and OOV buckets (a value left out of a row is a null in its column)."""
    example["top_n"] = None
    del example["items"][0]["features"]["log_price"]
    example["items"][1]["categorical"]["brand"] = "no-such-brand"
    del example["items"][2]["categorical"]["brand"]
    headers = {"x-request-id": "one-call-two-forms"}
    rows, columns = (
        httpx.post(f"{server.url}/v1/rank", json=body, headers=headers, timeout=30)
        for body in (example, as_columns(example))
    )
    assert (rows.status_code, columns.status_code) == (200, 200), columns.text
    assert rows.json()["degraded"]["imputed_features"] == 1
    assert rows.json()["degraded"]["oov_categories"] >= 2
    assert columns.content == rows.content


def test_top_n_and_items_without_embedding(server, example):
    url = server.url
    new = f"never-seen-{uuid.uuid4().hex}"
    example["items"].append({"id": new, "title": "wireless noise cancelling headphones"})
    example["items"].append({"id": "no-title-no-vector"})
    answer = httpx.post(f"{url}/v1/rank", json=example, timeout=30).json()
    assert len(answer["items"]) == example["top_n"]
    degraded = answer["degraded"]
    assert (degraded["embedding_cache_misses"], degraded["online_encodes"]) == (2, 1)
    assert degraded["missing_embeddings"] == 1
    assert degraded["imputed_features"] == 2 * 9
    again = httpx.post(f"{url}/v1/rank", json=example, timeout=30).json()["degraded"]
    # The title's vector is cached in-process by title (not stored): not encoded again.
    assert (again["embedding_cache_misses"], again["online_encodes"]) == (2, 0)
    assert again["missing_embeddings"] == 1


def test_upserted_items_rank_as_their_titles_encoded_online(server, example):
    """POST /v1/items stores the encoder's vectors: ranking the stored ids without titles
    gives the scores that fresh ids with the same titles get by online encoding."""
    url = server.url
    titles = [it["title"] for it in example["items"]]
    tag = uuid.uuid4().hex
    stored = [f"stored-{tag}-{n}" for n in range(len(titles))]
    upsert = {"items": [{"id": i, "title": t} for i, t in zip(stored, titles)]}
    answer = httpx.post(f"{url}/v1/items", json=upsert, headers=ADMIN, timeout=30)
    assert answer.status_code == 200 and answer.json()["stored"] == len(titles)
    by_store = [{**it, "id": i, "title": None} for it, i in zip(example["items"], stored)]
    by_title = [{**it, "id": f"fresh-{tag}-{n}"} for n, it in enumerate(example["items"])]
    results = []
    for items in (by_store, by_title):
        body = {**example, "items": items, "top_n": None}
        results.append(httpx.post(f"{url}/v1/rank", json=body, timeout=30).json())
    assert results[0]["degraded"]["embedding_cache_misses"] == 0
    assert results[1]["degraded"]["online_encodes"] == len(titles)
    np.testing.assert_array_equal(
        [i["score"] for i in results[0]["items"]], [i["score"] for i in results[1]["items"]]
    )


def body_with(example: dict, mutate) -> bytes:
    mutate(example)
    return json.dumps(example).encode()


def raw(example: dict, old: str, new: str) -> bytes:
    text = json.dumps(example)
    assert old in text
    return text.replace(old, new, 1).encode()


def first_price(example: dict) -> str:
    return f'"log_price": {json.dumps(example["items"][0]["features"]["log_price"])}'


BAD_INPUTS = {
    "empty items": (lambda e: body_with(e, lambda b: b.update(items=[])), 422, "items"),
    "too many items": (
        lambda e: body_with(e, lambda b: b.update(items=[{"id": f"i{n}"} for n in range(1001)])),
        422,
        "items",
    ),
    "duplicate ids": (
        lambda e: body_with(e, lambda b: b["items"].append(dict(b["items"][3]))),
        422,
        "items",
    ),
    "NaN": (lambda e: raw(e, first_price(e), '"log_price": NaN'), 422, "items.0.features.log_price"),
    "Infinity": (
        lambda e: raw(e, first_price(e), '"log_price": -Infinity'),
        422,
        "items.0.features.log_price",
    ),
    "overflow to inf": (
        lambda e: raw(e, first_price(e), '"log_price": 1e999'),
        422,
        "items.0.features.log_price",
    ),
    "string for a number": (
        lambda e: body_with(e, lambda b: b["items"][2]["features"].update(rating="4.5")),
        422,
        "items.2.features.rating",
    ),
    "bool for a number": (
        lambda e: body_with(e, lambda b: b["items"][2]["features"].update(rating=True)),
        422,
        "items.2.features.rating",
    ),
    "number for an id": (
        lambda e: body_with(e, lambda b: b["items"][1].update(id=17)),
        422,
        "items.1.id",
    ),
    "number for a category": (
        lambda e: body_with(e, lambda b: b["items"][1]["categorical"].update(brand=3)),
        422,
        "items.1.categorical.brand",
    ),
    "unknown numeric feature": (
        lambda e: body_with(e, lambda b: b["items"][4]["features"].update(colour=1.0)),
        422,
        "items.4.features.colour",
    ),
    "misspelt numeric feature": (
        lambda e: body_with(e, lambda b: b["items"][3]["features"].update(
            ratting=b["items"][3]["features"].pop("rating"))),
        422,
        "items.3.features.ratting",
    ),
    "unknown categorical feature": (
        lambda e: body_with(e, lambda b: b["items"][4]["categorical"].update(colour="red")),
        422,
        "items.4.categorical.colour",
    ),
    "unknown field": (lambda e: body_with(e, lambda b: b.update(surprise=1)), 422, "surprise"),
    "missing query text": (lambda e: body_with(e, lambda b: b["query"].pop("text")), 422, "query.text"),
    "items not a list": (lambda e: body_with(e, lambda b: b.update(items={})), 422, "items"),
    "top_n zero": (lambda e: body_with(e, lambda b: b.update(top_n=0)), 422, "top_n"),
    "not an object": (lambda e: b"[1, 2]", 422, "body"),
    "truncated JSON": (lambda e: json.dumps(e).encode()[:80], 400, "body"),
    "empty body": (lambda e: b"", 400, "body"),
    "not UTF-8": (
        lambda e: json.dumps(e).encode().replace(b'"text": "', b'"text": "\xff\xfe', 1),
        400,
        "body",
    ),
    "lone surrogate": (lambda e: raw(e, '"text": "', '"text": "\\ud800'), 400, "body"),
    "deep nesting": (lambda e: b'{"query": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "body"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_4xx_naming_the_field(server, example, case):
    url = server.url
    make, status, field = BAD_INPUTS[case]
    content = make(example)
    assert len(content) < MAX_BODY
    answer = httpx.post(
        f"{url}/v1/rank", content=content, headers={"content-type": "application/json"}
    )
    assert answer.status_code == status, answer.text
    assert field in [error["field"] for error in answer.json()["detail"]], answer.text


def test_body_over_the_limit_is_413_with_or_without_content_length(server, example):
    url = server.url
    example["items"] = [{"id": f"i{n}", "title": "x" * 300} for n in range(800)]
    content = json.dumps(example).encode()
    assert len(content) > MAX_BODY
    headers = {"content-type": "application/json"}
    sized = httpx.post(f"{url}/v1/rank", content=content, headers=headers)
    assert sized.status_code == 413

    def chunks():  # a generator body goes out chunked, with no content-length
        for start in range(0, len(content), 8192):
            yield content[start : start + 8192]

    chunked = httpx.post(f"{url}/v1/rank", content=chunks(), headers=headers)
    assert chunked.status_code == 413
    assert chunked.json()["detail"][0]["field"] == "body"


def test_no_input_produces_a_5xx(server, example):
    """Seeded random damage to a valid body: values replaced by other types, keys dropped,
    bytes flipped. Every answer is a 2xx, or a 4xx with a message."""
    url = server.url
    rng = random.Random(6)
    odd_values = [None, [], {}, "", "x" * 3000, -1, 0, 2**70, 1e308, -0.0, True, [1.5], {"a": 1}]
    original = json.dumps(example)
    statuses = set()
    with httpx.Client(base_url=url) as client:
        for _ in range(300):
            body = json.loads(original)
            for _ in range(rng.randint(1, 3)):
                target = rng.choice(dicts_in(body) or [body])
                key = rng.choice(list(target) + ["extra"])
                if rng.random() < 0.3:
                    target.pop(key, None)
                else:
                    target[key] = rng.choice(odd_values)
            content = json.dumps(body).encode()
            if rng.random() < 0.2:
                cut = rng.randrange(len(content))
                content = content[:cut] + bytes([rng.randrange(256)]) + content[cut + 1 :]
            answer = client.post("/v1/rank", content=content)
            assert answer.status_code < 500, (content[:300], answer.text)
            if answer.status_code >= 400:
                assert answer.json()["detail"][0]["message"]
            statuses.add(answer.status_code)
    assert {200, 400, 422} <= statuses  # the damage reached every kind of answer


def test_metrics_count_the_requests_made(server, example):
    url = server.url
    before = server.metrics()
    sizes = [1, 5, 20, 20, 3]
    query = example["query"]["text"]
    with httpx.Client(base_url=url) as client:
        for n, size in enumerate(sizes):
            text = query.upper() if n % 2 else f"  {query} "  # one query, once normalised
            body = {**example, "query": {**example["query"], "text": text}}
            body["items"] = example["items"][:size]
            assert client.post("/v1/rank", json=body).status_code == 200
        bad = {
            "duplicate_ids": {**example, "items": example["items"][:2] * 2},
            "empty_items": {**example, "items": []},
            "malformed_json": b"{",
        }
        for content in bad.values():
            kwargs = {"content": content} if isinstance(content, bytes) else {"json": content}
            assert client.post("/v1/rank", **kwargs).status_code in (400, 422)
    after = server.metrics()
    grew = functools.partial(metric_delta, before, after)
    calls, k = len(sizes), example_model(url)["experts"]["k"]
    rank = {"endpoint": "/v1/rank"}
    assert grew("moerank_request_duration_seconds_count", **rank, status="2xx") == calls
    assert grew("moerank_request_duration_seconds_count", **rank, status="4xx") == len(bad)
    assert grew("moerank_items_per_request_count") == calls
    assert grew("moerank_items_per_request_sum") == sum(sizes)
    for stage in ("parse", "embeddings", "query_encode", "inference", "respond"):
        assert grew("moerank_stage_duration_seconds_count", stage=stage) == calls
    assert grew("moerank_expert_selected_total") == calls * k
    assert grew("moerank_embedding_lookups_total", tier="lru", outcome="hit") == sum(sizes)
    assert grew("moerank_embedding_lookups_total", tier="lru", outcome="miss") == 0
    assert grew("moerank_query_embedding_lookups_total", outcome="miss") <= 1
    assert grew("moerank_query_embedding_lookups_total") == calls
    for reason in bad:
        assert grew("moerank_requests_rejected_total", reason=reason) == 1
    assert grew("moerank_requests_rejected_total") == len(bad)
    buckets = {
        dict(labels)["le"]
        for (name, labels) in after
        if name == "moerank_request_duration_seconds_bucket"
    }
    assert {"0.0005", "0.001", "0.002", "0.005", "1.0"} <= buckets
    info = [dict(ls) for (n, ls), v in after.items() if n == "moerank_model_info" and v == 1]
    assert [i["version"] for i in info] == [example_model(url)["version"]]


def test_event_loop_lag_is_sampled_while_idle(server):
    before = server.metrics()
    time.sleep(0.5)
    after = server.metrics()
    assert metric_delta(before, after, "moerank_event_loop_lag_seconds_count") >= 3  # 50 ms


def example_model(url: str) -> dict:
    return httpx.get(f"{url}/v1/models").json()


def test_models_health_readiness_and_docs(server, small_bundle):
    url, bundle_dir = server.url, small_bundle[0]
    models = example_model(url)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert models["version"] == manifest["version"]
    assert models["experts"]["path"] == "skip" and models["experts"]["k"] == 4
    assert [f["name"] for f in models["numeric_features"]] == [
        f["name"] for f in manifest["features"]["numeric"]
    ]
    assert models["max_items"] == 1000
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready", "embedding_store": "ok"}
    assert httpx.get(f"{url}/docs").status_code == 200
    spec = httpx.get(f"{url}/openapi.json").json()
    body = spec["paths"]["/v1/rank"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/RankRequest"
    assert "features" in spec["components"]["schemas"]["Item"]["properties"]
    rank, columns = (
        spec["components"]["schemas"]["RankRequest"],
        spec["components"]["schemas"]["Columns"],
    )
    assert [form["required"] for form in rank["oneOf"]] == [["items"], ["columns"]]
    assert columns["properties"]["id"]["maxItems"] == 1000
    assert "log_price" in columns["properties"]["features"]["propertyNames"]["enum"]
