"""benchmarks/overhead.py in its quick mode against the small bundle: every configuration
answers every load point, and the JSON carries the ratios the issue asks for (figures of a
smoke run mean nothing, so no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("columnar", [False, True])
def test_quick_run_writes_the_ratios(small_bundle, tmp_path, columnar):
    bundle, _ = small_bundle
    mode = ["--columnar"] if columnar else []
    subprocess.run(
        [sys.executable, "benchmarks/overhead.py", "--quick", "--bundle", str(bundle), *mode],
        cwd=ROOT,
        # this checkout's packages, also where the editable install points at another
        env={**os.environ, "MOERANK_RESULTS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)},
        check=True,
        timeout=600,
    )
    name = "overhead_columnar" if columnar else "overhead"
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["pipeline_over_model"] > 0 and result["server_over_pipeline"] > 0
    assert result["cpu"] and (tmp_path / f"{name}.png").stat().st_size > 0
    loads = {"c=1", "c=16", "rate=50/s"}
    assert set(result["ratios"]) == loads
    configs = {"model", "pipeline", "moerank", "plain"}
    if columnar:  # both forms in one run: each ratio of the columnar form, and columns/rows
        configs |= {"pipeline_columns", "moerank_columns"}
        assert result["columns"]["pipeline_over_model"] > 0
        assert result["columns"]["server_over_pipeline"] > 0
        assert result["columns"]["server_columns_over_rows"] > 0
    else:
        assert result["columns"] is None
    assert {(r["pass"], r["load"], r["config"]) for r in result["rows"]} == {
        (p, load, config) for p in (1, 2) for load in loads for config in configs
    }
    for row in result["rows"]:
        assert row["calls"] > 0 and row["cpu_ms_per_call"] > 0
        assert row.get("errors", 0) == 0, row
