"""python -m service: serve the bundle named by MOERANK_BUNDLE_PATH with uvicorn.

With MOERANK_WORKERS > 1 each worker is its own process with its own model and caches. They
share a run directory (MOERANK_RUN_DIR, made here): Prometheus samples go to its metrics/
(PROMETHEUS_MULTIPROC_DIR) so /metrics, whichever worker answers, reports all of them, and
a reload one worker receives is recorded there for the others to follow.
"""

import contextlib
import ctypes
import os
import resource
import shutil
import tempfile
from pathlib import Path

import uvicorn

from service.http_protocol import GuardedHttpToolsProtocol
from service.settings import Settings

M_MMAP_THRESHOLD, MMAP_THRESHOLD = -3, 128 * 1024  # mallopt's parameter, glibc's default


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


def raise_descriptor_limit() -> None:
    """Up to the hard limit: the soft one (often 1,024) is what slow clients exhaust first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def return_freed_memory() -> None:
    """glibc raises its mmap threshold to the largest block freed, so after one long-text
    encode its tens-of-MB buffers come from the heap and stay in RSS when freed. A fixed
    threshold keeps them mmap'd and returned on free (a mixed soak: RSS 260-510 MB instead of
    470-650 MB). Set for this process, and in the environment for spawned workers."""
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its own rules
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def main() -> None:
    settings = Settings()
    raise_descriptor_limit()
    return_freed_memory()
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
            http=GuardedHttpToolsProtocol,
            timeout_keep_alive=settings.keep_alive_s,
            limit_concurrency=settings.max_connections,
        )
    finally:
        if run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
