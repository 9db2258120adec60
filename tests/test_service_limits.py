"""Bounded cost per caller, through a real uvicorn process: oversized headers, requests held
open half-sent, over-limit bodies sent whole before reading, aborted uploads, float32
overflow, over-long texts and cold-title floods each get a 4xx, a cut connection or a
flagged degradation, never a 5xx or seconds of CPU."""

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
import uuid

import httpx
import pytest

from loadtest.server_metrics import metric_delta
from loadtest.service_process import ServiceProcess

MAX_BODY = 200_000
REQUEST_TIMEOUT_S = 1.0
ADMIN = "test-limits-admin"


@pytest.fixture(scope="module")
def server(service_env):
    env = {
        **service_env,
        "MOERANK_MAX_BODY_BYTES": str(MAX_BODY),
        "MOERANK_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        "MOERANK_ADMIN_TOKENS": ADMIN,
    }
    with ServiceProcess(env) as service:
        yield service


@pytest.fixture
def example(small_bundle) -> dict:
    return json.loads((small_bundle[1] / "example_request.json").read_text())


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_10_mb_header_is_refused_without_being_held(server):
    sock = connect(server)
    with contextlib.suppress(OSError):  # the server closes while we are still sending
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000_000 + b"\r\n\r\n"
        )
    answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


def test_requests_held_open_half_sent_are_cut_off(server):
    before = server.metrics()
    head = connect(server)
    head.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    body = connect(server)
    body.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: 1000\r\n\r\n{")  # fmt: skip
    idle = connect(server)  # connects, sends nothing
    assert read_all(head).startswith(b"HTTP/1.1 408 ")
    assert read_all(body) == b""  # the app was reading the body: the connection is cut
    assert read_all(idle).startswith(b"HTTP/1.1 408 ")
    after = server.metrics()
    assert metric_delta(before, after, "moerank_request_duration_seconds_count", status="5xx") == 0


@pytest.mark.parametrize("size", [MAX_BODY + 1, 3_000_000, 20_000_000])
def test_an_over_limit_body_sent_whole_gets_its_413_json(server, size):
    """urllib writes the whole body (with Connection: close) before it reads an answer."""
    request = urllib.request.Request(
        f"{server.url}/v1/rank", b"{" + b" " * (size - 2) + b"}",
        {"content-type": "application/json"}, method="POST",
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["detail"][0]["field"] == "body"


def test_aborted_uploads_are_not_5xx_and_log_one_line_each(server):
    before = server.metrics()
    aborts = 5
    for _ in range(aborts):
        sock = connect(server)
        sock.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 100000\r\n\r\n{\"query\": ")  # fmt: skip
        time.sleep(0.1)
        sock.close()
    deadline = time.monotonic() + 10
    while metric_delta(before, server.metrics(), "moerank_request_duration_seconds_count",
                       status="disconnected") < aborts:  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.1)
    after = server.metrics()
    assert metric_delta(before, after, "moerank_request_duration_seconds_count", status="5xx") == 0
    assert "Traceback" not in server.output()
    assert server.output().count("client disconnected during POST /v1/rank") >= aborts


@pytest.mark.parametrize("value", ["1e39", "-1e39", "3.5e38", "-1.7976931348623157e308"])
def test_feature_values_outside_float32_are_a_422(server, example, value):
    name = next(iter(example["items"][0]["features"]))
    body = json.dumps(example).replace(
        json.dumps(name) + ": " + json.dumps(example["items"][0]["features"][name]),
        json.dumps(name) + ": " + value, 1,
    )  # fmt: skip
    answer = httpx.post(f"{server.url}/v1/rank", content=body,
                        headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["field"] == f"items.0.features.{name}"


def test_long_texts_are_cut_and_flagged_and_huge_ones_refused(server, example):
    url = server.url
    long = {**example, "query": {**example["query"], "text": "socks " * 500}}
    long["items"] = [{**it, "title": "wool " * 1000} for it in example["items"]]
    degraded = httpx.post(f"{url}/v1/rank", json=long, timeout=60).json()["degraded"]
    assert degraded["truncated_texts"] == 1 + len(example["items"])
    # Over the query's ceiling (4,096 characters): a 422 naming it (a 1 MB query is refused
    # the same way under the default 4 MiB body limit; here it would be a 413).
    huge_query = {**example, "query": {**example["query"], "text": "q" * 150_000}}
    answer = httpx.post(f"{url}/v1/rank", json=huge_query, timeout=60)
    assert answer.status_code == 422 and answer.json()["detail"][0]["field"] == "query.text"
    # 1,000 items of 100 KB titles: over the body limit, refused before it is read.
    item = {**example["items"][0], "title": "t" * 100_000}
    huge_titles = {**example, "items": [{**item, "id": str(n)} for n in range(1000)]}
    answer = httpx.post(f"{url}/v1/rank", json=huge_titles, timeout=60)
    assert answer.status_code == 413


def test_cold_titles_per_call_are_capped(server, example):
    items = [{**example["items"][0], "id": f"cap-{n}", "title": f"cold {uuid.uuid4().hex}"}
             for n in range(100)]  # fmt: skip
    answer = httpx.post(f"{server.url}/v1/rank", json={**example, "items": items}, timeout=120)
    degraded = answer.json()["degraded"]
    assert (degraded["online_encodes"], degraded["cold_encodes_skipped"]) == (32, 68)
    assert degraded["missing_embeddings"] == 68


@pytest.fixture(scope="module")
def capped(service_env):
    """A server with a small connection cap and discard bound (idle keep-alive kept 60 s)."""
    env = {
        **service_env,
        "MOERANK_MAX_BODY_BYTES": str(MAX_BODY),
        "MOERANK_MAX_CONNECTIONS": "4",
        "MOERANK_DISCARD_BYTES": "1000000",
        "MOERANK_KEEP_ALIVE_S": "60",
    }
    with ServiceProcess(env) as service:
        yield service


def healthz_on(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock.recv(65536)


def test_connections_over_the_cap_are_closed_at_once_and_the_others_keep_working(capped):
    """Cap 4: with four connections open a fifth is aborted before it holds anything, a
    request at the cap gets uvicorn's 503 (its limit_concurrency), and below it all is well."""
    held = [connect(capped) for _ in range(4)]
    fifth = connect(capped)
    with contextlib.suppress(ConnectionResetError):
        assert read_all(fifth) == b""  # aborted before any answer
    assert healthz_on(held[0]).startswith(b"HTTP/1.1 503 ")
    for sock in (*held, fifth):
        sock.close()
    deadline = time.monotonic() + 10
    while True:  # the server sees the closes shortly after
        fresh = connect(capped)
        with contextlib.suppress(ConnectionResetError):
            if healthz_on(fresh).startswith(b"HTTP/1.1 200 "):
                break
        assert time.monotonic() < deadline, "no connection accepted after the others closed"
        time.sleep(0.1)


def test_an_early_answered_body_is_dropped_only_up_to_the_discard_bound(capped):
    """A 64 MB body behind a 413: the server reads and drops about 1 MB of it (the bound),
    then closes, so the client cannot make it read the rest."""
    sock = connect(capped)
    size = 64_000_000
    sock.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n" % size)  # fmt: skip
    sent, chunk = 0, b" " * 65536
    with pytest.raises(OSError):  # reset or broken pipe once the server has closed
        while sent < size:
            sent += sock.send(chunk)
    assert sent < 16_000_000, sent  # the bound plus what the kernel buffers, not the body
    sock.close()
