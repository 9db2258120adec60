"""`python -m service` as a child process on a free port, ready when `start` returns: the
real thing (uvicorn, the lifespan, the sockets) for end-to-end tests, benchmarks and load
tests. It starts the service as a process and speaks HTTP to it; it imports none of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from loadtest.server_metrics import Samples, scrape


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """env: MOERANK_* settings (MOERANK_PORT is chosen here). The child's output goes to a
    file, shown when it fails to start. `args`: what Python runs, `-m service` unless another
    server (a benchmark's baseline app) that reads the same MOERANK_* settings and answers
    /readyz."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...] = ("-m", "service")):
        self.port, self.args = free_port(), args
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "MOERANK_PORT": str(self.port)}
        handle, log = tempfile.mkstemp(prefix="moerank-service-", suffix=".log")
        os.close(handle)
        self.log = Path(log)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180) -> ServiceProcess:
        self.launch()
        return self.wait_ready(timeout_s)

    def launch(self) -> None:
        """Start the process (again, on the same port) without waiting for it."""
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args], env=self.env, stdout=out, stderr=out
            )

    def wait_ready(self, timeout_s: float = 180) -> ServiceProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = self.output()
                self.stop()
                raise RuntimeError(f"service exited at start:\n{output}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        output = self.output()
        self.stop()
        raise RuntimeError(f"service not ready after {timeout_s} s:\n{output}")

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM (graceful: uvicorn finishes in-flight requests), SIGKILL if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL: a crash, no graceful shutdown."""
        self.proc.kill()
        self.proc.wait()

    def metrics(self) -> Samples:
        """Every sample of its /metrics: (name, sorted label pairs) -> value."""
        return scrape(self.url)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
