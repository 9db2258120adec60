"""HAProxy in front of local replicas, with deploy/haproxy/haproxy.cfg as its configuration:
the replicas' `server` lines go into a second file (the only thing written here), so what
runs is the shipped config.

    with LocalHAProxy(tmp_dir, {"r1": "127.0.0.1:8001", "r2": "127.0.0.1:8002"}) as lb:
        lb.url                      # http://127.0.0.1:<port>
        lb.servers()["r1"]          # {"status": "UP", "sessions": 12, ...} from its stats socket
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from loadtest.service_process import free_port

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "haproxy.cfg"


def available() -> str | None:
    return None if shutil.which("haproxy") else "haproxy not installed (apt-get install haproxy)"


class LocalHAProxy:
    def __init__(self, directory: Path, servers: dict[str, str]):
        self.directory, self.servers_by_name = Path(directory), servers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket = self.directory / "haproxy.sock"
        self.proc: subprocess.Popen | None = None

    def start(self) -> LocalHAProxy:
        replicas = self.directory / "replicas.cfg"
        lines = [f"    server {name} {address}" for name, address in self.servers_by_name.items()]
        replicas.write_text("backend rankers\n" + "\n".join(lines) + "\n")
        env = {**os.environ, "MOERANK_LB_BIND": f"127.0.0.1:{self.port}",
               "HAPROXY_STATS_SOCKET": str(self.socket)}  # fmt: skip
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(CONFIG), "-f", str(replicas)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy did not start: {self.proc.stderr.read().decode()}")
            time.sleep(0.05)
        return self

    def servers(self) -> dict[str, dict]:
        """Per server of the rankers backend: status (UP, DOWN, ...), sessions (total),
        weight now (ramping during slowstart), retries and redispatches."""
        rows = csv.DictReader(self.command("show stat").lstrip("# ").splitlines())
        return {
            row["svname"]: {
                "status": row["status"].split()[0],
                "sessions": int(row["stot"] or 0),
                "weight": int(row["weight"] or 0),
                "retries": int(row["wretr"] or 0),
                "redispatches": int(row["wredis"] or 0),
            }
            for row in rows
            if row["pxname"] == "rankers" and row["svname"] not in ("BACKEND", "FRONTEND")
        }

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(self.socket))
            conn.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def wait_status(self, name: str, status: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while self.servers()[name]["status"] != status:
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy: {name} not {status} after {timeout_s} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> LocalHAProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
