"""The OpenAPI document matches what the service does: schemathesis runs every operation of a
real uvicorn process (fixed seed, bounded cases; positive and negative data), and any 5xx,
undocumented status code or content type, schema-valid request refused or schema-violating
request accepted fails the test."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.service_process import ServiceProcess

pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")
TOKEN = "test-openapi-admin"
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "schemathesis.toml"  # why 413 is an expected answer


@pytest.fixture(scope="module")
def server(service_env):
    env = {
        **service_env,
        "MOERANK_ADMIN_TOKENS": TOKEN,
        "MOERANK_EVENTS_TOKENS": TOKEN,
        # Small bodies: generated /v1/items calls encode every title they carry.
        "MOERANK_MAX_BODY_BYTES": "65536",
        "MOERANK_COLD_ITEMS": "background",
    }
    with ServiceProcess(env) as service:
        yield service


def test_schemathesis_finds_no_failure_on_any_operation(server, tmp_path):
    command = [
        str(Path(sys.executable).with_name("st")), "--config-file", str(CONFIG),
        "run", f"{server.url}/openapi.json",
        "--checks", "all", "--seed", "20261201", "--max-examples", "25",
        "--header", f"Authorization: Bearer {TOKEN}", "--request-timeout", "60",
        "--generation-database", "none", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PYTHONPATH": str(REPO), "NO_COLOR": "1"}  # fmt: skip
    run = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    assert selected and selected[1] == selected[2], run.stdout[-3000:]  # every operation
    assert f"Tested: {selected[1]}" in run.stdout
