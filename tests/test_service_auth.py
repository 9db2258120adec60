"""Authentication through a real uvicorn process: every endpoint that changes what the
service serves or stores (the routes the OpenAPI document marks with a bearer scheme)
refuses missing, empty and wrong tokens and non-JSON bodies, and accepts each configured
token, from the variable and from the file (a mounted secret)."""

import httpx
import pytest

from loadtest.service_process import ServiceProcess

TOKENS = {"env": "tok-from-env-1", "file": "tok-from-file-2", "events": "tok-events-3"}


@pytest.fixture(scope="module")
def server(service_env, tmp_path_factory):
    secret = tmp_path_factory.mktemp("secret") / "admin-tokens"
    secret.write_text(f"{TOKENS['file']}\n")
    env = {
        **service_env,
        "MOERANK_ADMIN_TOKENS": f"{TOKENS['env']}, spare-token",
        "MOERANK_ADMIN_TOKENS_FILE": str(secret),
        "MOERANK_EVENTS_TOKENS": TOKENS["events"],
    }
    with ServiceProcess(env) as service:
        service.secret = secret
        yield service


def guarded_routes(url: str) -> list[str]:
    spec = httpx.get(f"{url}/openapi.json").json()
    return sorted(
        path
        for path, operations in spec["paths"].items()
        for operation in operations.values()
        if operation.get("security")
    )


def post(url, path, token=None, content=b'{"items": []}', content_type="application/json"):
    headers = {"content-type": content_type}
    if token is not None:
        headers["authorization"] = f"Bearer {token}".strip()  # "Bearer": the empty token
    return httpx.post(f"{url}{path}", content=content, headers=headers, timeout=60)


def test_the_mutating_endpoints_are_the_guarded_ones(server):
    assert {"/v1/items", "/admin/reload"} <= set(guarded_routes(server.url))
    assert "/v1/rank" not in guarded_routes(server.url)


@pytest.mark.parametrize("token", [None, "", "wrong", TOKENS["env"] + "x", TOKENS["env"][:-1]])
def test_missing_empty_and_wrong_tokens_are_refused(server, token):
    for path in guarded_routes(server.url):
        answer = post(server.url, path, token)
        assert answer.status_code == 401, (path, answer.text)
        assert answer.json()["detail"][0]["field"] == "authorization"


def test_each_configured_token_is_accepted_and_non_json_bodies_are_not(server):
    for path in guarded_routes(server.url):
        for source in ("env", "file"):
            # An empty item list is invalid: 422 shows the token got past authentication.
            answer = post(server.url, path, TOKENS[source])
            assert answer.status_code not in (401, 403, 415), (path, source, answer.text)
            for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
                answer = post(server.url, path, TOKENS[source], b"{}", content_type)
                assert answer.status_code == 415, (path, content_type, answer.text)


def test_events_tokens_do_not_open_admin_endpoints(server):
    assert post(server.url, "/v1/items", TOKENS["events"]).status_code == 401


def test_a_rotated_secret_file_takes_effect_without_a_restart(server):
    server.secret.write_text("rotated-token\n")
    try:
        assert post(server.url, "/v1/items", TOKENS["file"]).status_code == 401
        assert post(server.url, "/v1/items", "rotated-token").status_code == 422
    finally:
        server.secret.write_text(f"{TOKENS['file']}\n")


def test_unset_tokens_disable_the_endpoints(service_env):
    with ServiceProcess({**service_env, "MOERANK_ADMIN_TOKENS": ""}) as service:
        for path in guarded_routes(service.url):
            assert post(service.url, path, "anything").status_code == 403, path
