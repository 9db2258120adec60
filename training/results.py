"""Write a benchmark's or experiment's figures to results/<name>.json with how they were made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _git_commit() -> str:
    """HEAD, with "-dirty" when tracked files differ from it (figures from a modified tree).
    results/ does not count: an experiment that writes its table as it goes (after each seed
    or model) would otherwise mark its own later writes dirty."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git(
            "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"
        )
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"
    return commit + ("-dirty" if dirty else "")


def cpu_model() -> str:
    """The machine's CPU, as /proc/cpuinfo names it (benchmarks record where they ran)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def results_dir() -> Path:
    """Where figures go: $MOERANK_RESULTS_DIR, else the repository's results/."""
    return Path(os.environ.get("MOERANK_RESULTS_DIR", REPO_ROOT / "results"))


def write_results(
    name: str, rows: list[dict], extra: dict | None = None, directory: Path | None = None
) -> Path:
    """Write {rows, commit, command, cpu_count, date, **extra} to <directory>/<name>.json.

    rows: one dict per measured configuration. ``directory`` defaults to `results_dir()`. Returns the path written.
    """
    record = {
        "rows": rows,
        "commit": _git_commit(),
        "command": sys.argv,
        "cpu_count": len(os.sched_getaffinity(0)),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    path = (directory or results_dir()) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
