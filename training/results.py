"""Write a benchmark's or experiment's figures to results/<name>.json with how they were made."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from contextlib import contextmanager
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


@contextmanager
def locked(name: str):
    """Hold an exclusive lock on results/<name>.json (created if absent) and yield its path:
    separate processes filling one table read, merge and write it one at a time."""
    path = results_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield path


def other_runs(path: Path, rows: list[dict], same: dict) -> tuple[list[dict], dict]:
    """(rows, record) of the results file `path` from runs that `rows` does not hold, when the
    file's `same` entries equal these (else ([], {})): what a process filling one table beside
    others keeps. A run is a (model, seed) pair; a reference row (no seed) in `rows` replaces
    the file's."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return [], {}
    if any(earlier.get(key) != value for key, value in same.items()):
        return [], {}
    ours = {(r["model"], r.get("seed")) for r in rows}
    return [r for r in earlier["rows"] if (r["model"], r.get("seed")) not in ours], earlier


@contextmanager
def merged(name: str, rows: list[dict], same: dict, merge: bool):
    """Under results/<name>.json's lock, yield the rows to write: `rows`, after the file's
    rows of other runs (other_runs) when `merge`."""
    with locked(name) as path:
        yield (other_runs(path, rows, same)[0] if merge else []) + rows
