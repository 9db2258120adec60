"""python -m service: serve the bundle named by MOERANK_BUNDLE_PATH with uvicorn.

With MOERANK_WORKERS > 1 each worker is its own process with its own model and caches. They
share a run directory (MOERANK_RUN_DIR, made here): Prometheus samples go to its metrics/
(PROMETHEUS_MULTIPROC_DIR) so /metrics, whichever worker answers, reports all of them, and
a reload one worker receives is recorded there for the others to follow.
"""

import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from service.settings import Settings


def prepare_workers(settings: Settings) -> Path | None:
    """Before any worker imports service.metrics; returns the run directory made here."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:  # prometheus-client wants it empty at start
        for stale in Path(configured).glob("*.db"):
            stale.unlink()
    if settings.workers == 1:
        return None
    run_dir = Path(tempfile.mkdtemp(prefix="moerank-run-"))
    os.environ["MOERANK_RUN_DIR"] = str(run_dir)
    if not configured:
        (run_dir / "metrics").mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    return run_dir


def main() -> None:
    settings = Settings()
    run_dir = prepare_workers(settings)
    try:
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            access_log=settings.access_log,
            timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        )
    finally:
        if run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
