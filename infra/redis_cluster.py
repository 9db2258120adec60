"""A local Redis Cluster: `masters` redis-server processes in cluster mode (and `replicas`
per master), joined by `redis-cli --cluster create`, on free loopback ports.

    with LocalRedisCluster(tmp_dir, masters=3, replicas=1) as cluster:
        cluster.url                       # redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...
        cluster.stop_node(cluster.master_of(key))   # kill one master: its replica takes over

No persistence; cluster-node-timeout is short (`node_timeout_ms`) so a failover takes about a
second or two, not the default 15 s; replicas sync at once (no diskless-sync delay). Needs the redis-server and redis-cli binaries.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import key_slot


def available() -> str | None:
    """None when a cluster can be started here, else why not."""
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    return (
        f"{' and '.join(missing)} not installed (apt-get install redis-server)" if missing else None
    )


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalRedisCluster:
    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0,
                 node_timeout_ms: int = 1000):  # fmt: skip
        self.directory, self.masters, self.replicas = Path(directory), masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = [free_cluster_port() for _ in range(masters * (1 + replicas))]
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> LocalRedisCluster:
        for port in self.ports:
            self.start_node(port)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas",
             str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_healthy()
        return self

    def start_node(self, port: int) -> None:
        """Start (or restart, with its nodes.conf: it rejoins as it was) the node on `port`."""
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms), "--save", "",
             "--appendonly", "no", "--repl-diskless-sync-delay", "0", "--logfile", str(node_dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {port} did not start") from None
                time.sleep(0.05)

    def wait_healthy(self, timeout_s: float = 30) -> None:
        """Until every running node says cluster_state:ok and agrees on who holds the slots."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._state_ok(p) for p in self.running()):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become healthy")

    def _state_ok(self, port: int) -> bool:
        """This node says the cluster is ok and every slot's master it names is running."""
        client = redis.Redis(port=port)
        try:
            info = client.cluster("info")
            shards = client.execute_command("CLUSTER", "SLOTS")
            replication = client.info("replication")
        except redis.RedisError:
            return False
        running = set(self.running())
        return (
            replication.get("master_link_status", "up") == "up"  # a replica is in sync
            and info.get("cluster_state") == "ok"
            and int(info.get("cluster_slots_ok", 0)) == 16384
            and all(int(master[1]) in running for _, _, master, *_ in shards)
        )

    def running(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def master_of(self, key: str) -> int:
        """The port of the master holding `key`'s slot now."""
        slot = key_slot(key.encode())
        for port in self.running():
            try:
                shards = redis.Redis(port=port).execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for start, end, master, *_ in shards:
                if start <= slot <= end:
                    return int(master[1])
        raise RuntimeError(f"no running node knows slot {slot}")

    def stop_node(self, port: int) -> None:
        """SIGKILL: a crashed host, no goodbye to the cluster bus."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> LocalRedisCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
