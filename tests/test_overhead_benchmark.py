"""benchmarks/overhead.py in its quick mode against the small bundle: every configuration
answers every load point, and the JSON carries the ratios the issue asks for (figures of a
smoke run mean nothing, so no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_writes_the_ratios(small_bundle, tmp_path):
    bundle, _ = small_bundle
    subprocess.run(
        [sys.executable, "benchmarks/overhead.py", "--quick", "--bundle", str(bundle)],
        cwd=ROOT,
        # this checkout's packages, also where the editable install points at another
        env={**os.environ, "MOERANK_RESULTS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)},
        check=True,
        timeout=600,
    )
    result = json.loads((tmp_path / "overhead.json").read_text())
    assert result["pipeline_over_model"] > 0 and result["server_over_pipeline"] > 0
    assert result["cpu"] and (tmp_path / "overhead.png").stat().st_size > 0
    loads = {"c=1", "c=16", "rate=50/s"}
    assert set(result["ratios"]) == loads
    configs = {"model", "pipeline", "moerank", "plain"}
    assert {(r["pass"], r["load"], r["config"]) for r in result["rows"]} == {
        (p, load, config) for p in (1, 2) for load in loads for config in configs
    }
    for row in result["rows"]:
        assert row["calls"] > 0 and row["cpu_ms_per_call"] > 0
        assert row.get("errors", 0) == 0, row
