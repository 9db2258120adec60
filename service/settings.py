"""Service settings: one typed object, read from MOERANK_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path | None = None) -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup v2/v1 CPU quota.

    A container sees the host's CPUs in os.cpu_count(); sizing thread pools by that number
    oversubscribes a 2-CPU quota on a 64-core host and ruins tail latency.
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = count or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup or Path("/proc/self/cgroup"))
    return max(1, min(count, int(quota))) if quota else count


def cgroup_cpu_quota(root: Path, proc_cgroup: Path) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup path, or None if unlimited."""
    v2, v1 = _cgroup_paths(proc_cgroup)
    limits = []
    for directory in _ancestors(root, v2):  # cgroup v2: "max 100000" or "200000 100000"
        try:
            quota, period = (directory / "cpu.max").read_text().split()
            if quota != "max":
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            continue
    for directory in _ancestors(root / "cpu", v1) + _ancestors(root / "cpu,cpuacct", v1):
        try:  # cgroup v1: quota -1 means unlimited
            quota = int((directory / "cpu.cfs_quota_us").read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
            if quota > 0:
                limits.append(quota / period)
        except (OSError, ValueError):
            continue
    return max(1.0, min(limits)) if limits else None


def _cgroup_paths(proc_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup path in the v2 hierarchy and in the v1 cpu controller."""
    v2 = v1 = "/"
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(mount: Path, path: str) -> list[Path]:
    """mount/path and each parent up to the mount: a quota anywhere above binds too."""
    parts = [p for p in path.split("/") if p]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


class Settings(BaseSettings):
    """Every knob of the service; each field is MOERANK_<NAME> in the environment."""

    # An empty variable counts as unset: MOERANK_ADMIN_TOKEN= must not mean "the empty token".
    model_config = SettingsConfigDict(env_prefix="MOERANK_", extra="ignore", env_ignore_empty=True)

    bundle_path: Path = Path("artifacts/bundles/default")
    redis_url: str | None = None  # None: the embedded in-process store
    key_prefix: str = "moerank"
    embedding_store_path: Path | None = None  # precomputed item embeddings (.npz) to preload
    embedding_dtype: str = Field("float16", pattern="^(float16|float32)$")  # stored vectors
    example_request_path: Path | None = None  # a /v1/rank body to print a curl for at start
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1)  # uvicorn worker processes
    run_dir: Path | None = None  # shared by the workers (python -m service sets it)
    log_level: str = "info"
    access_log: bool = False  # one log line per request costs more than a ranking's parse
    provider: str = Field("auto", pattern="^(auto|cpu|cuda)$")  # auto: CUDA when available
    # Where a ranking call's model run and query encode happen. "event_loop": on the worker's
    # own thread, one call at a time (more cores: more MOERANK_WORKERS). "thread_pool": on
    # inference_threads threads. Handing ~0.7 ms calls to threads made a GIL convoy on 2
    # CPUs: at 300 calls/s P99 210 ms against 13.5 ms on the loop (results/serve_latency.json).
    model_calls: str = Field("event_loop", pattern="^(event_loop|thread_pool)$")
    # Threads for the text encoder's bulk calls (cold titles, /v1/items) and, with
    # model_calls=thread_pool, the model: the CPUs this process may use, shared among the
    # workers. Each call runs on one thread by default: on 2 CPUs a second intra-op
    # thread made a 100-item call no faster at P50 and 7-18x slower at P99 under load
    # (spinning threads fighting for the cores); parallelism comes from concurrent calls.
    inference_threads: int = Field(
        default_factory=lambda data: max(1, usable_cpus() // data["workers"]), ge=1
    )
    intra_op_threads: int = Field(1, ge=1)
    # Cross-request micro-batching (service/batcher.py), for bundles with a batched graph:
    # the calls at the model in one turn of the loop run as one onnxruntime call of at most
    # batch_max_items rows (calls x the longest call's items), waiting up to batch_wait_ms
    # for calls still on their way (a Redis lookup); a call alone never waits. 0: off.
    # Unset: 2 ms where the model runs on CUDA, off on CPU: on 2 vCPUs the model is ~1/5 of
    # a call's CPU and batching 100-item calls at c=16 cost calls/s and P99
    # (results/batching.json).
    batch_wait_ms: float | None = Field(None, ge=0)
    batch_max_items: int = Field(2000, ge=1)
    # "bundle": each bundle's manifest names the variant its model was evaluated on (fp32 for
    # bundles exported since manifest schema 3, int8 before), so queries encode at the
    # precision the stored item vectors have; fp32/int8/fp16 override it for every bundle.
    encoder_variant: str = Field("bundle", pattern="^(bundle|fp32|int8|fp16)$")
    # Cold items (a title, no stored vector): "background" answers with the zero vector, flags
    # it and encodes the title after the answer; "inline" encodes it before ranking (~3 ms of
    # CPU per title with the int8 encoder, on the request's clock).
    cold_items: str = Field("background", pattern="^(background|inline)$")
    pending_encodes: int = Field(10_000, ge=0)  # titles queued for the background encoder
    # A cold title's vector serves its own call and is cached in-process by title; it goes to
    # the shared store only when this allows (and never over a stored vector): service/
    # cold_titles.py. Per call at most max_cold_encodes titles, max_cold_chars characters of
    # them, are encoded or queued; the rest rank with the zero vector (flagged).
    store_cold_titles: bool = False
    cold_title_cache: int = Field(10_000, ge=0)
    max_cold_encodes: int = Field(32, ge=0)
    max_cold_chars: int = Field(4096, ge=0)  # ~4 titles at the token limit; ~60 typical ones
    # Texts are cut to these many characters before any work (flagged in degraded): about
    # the encoder's 256-token limit for titles, a long search for queries (encoding a query
    # happens on the request's clock; its cost grows with its length).
    max_title_chars: int = Field(1024, ge=1)
    max_query_chars: int = Field(256, ge=1)
    max_items: int = Field(1000, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # HTTP limits (service/http_protocol.py): a request line + headers over max_header_bytes
    # is a 431; a request not received whole within request_timeout_s is cut off (408), and
    # an idle keep-alive connection after keep_alive_s; over max_connections connections or
    # requests, new ones get a 503. After an early answer (a 413) up to discard_bytes of the
    # body still arriving are read and dropped so the client can read it.
    max_header_bytes: int = Field(16 * 1024, ge=1024)
    request_timeout_s: float = Field(30.0, gt=0)
    keep_alive_s: int = Field(5, ge=1)
    max_connections: int = Field(1000, ge=1)
    discard_bytes: int = Field(256 * 1024 * 1024, ge=0)  # the request timeout bounds it too
    redis_timeout_ms: float = Field(20.0, gt=0)  # a request's lookup, connection wait included
    redis_bulk_timeout_s: float = Field(5.0, gt=0)  # preload, write-back, /v1/items
    redis_pool_size: int = Field(32, ge=1)
    breaker_failures: int = Field(3, ge=1)  # consecutive failures that open the breaker
    breaker_cooldown_s: float = Field(1.0, gt=0)  # open this long, then one probe call
    # Item vectors are held as float32 (rounded to embedding_dtype first), the model's input
    # type: no conversion per call. 100,000 items of dimension 384 hold ~150 MB.
    lru_items: int = Field(100_000, ge=0)
    lru_queries: int = Field(50_000, ge=0)
    lru_preload_items: int = Field(10_000, ge=0)  # the file store's first N ids, into the LRU
    store_check_s: float = Field(5.0, gt=0)  # how often the store's generation marker is read
    warmup_calls: int = Field(5, ge=0)
    shutdown_timeout_s: float = Field(10.0, gt=0)  # in-flight requests get this long to finish
    # Bearer tokens (service/auth.py), comma-separated, and/or a file of them (a mounted
    # secret). None configured: the endpoints of that scope are disabled (403).
    # MOERANK_ADMIN_TOKEN, the single token of old, still counts.
    admin_tokens: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "MOERANK_ADMIN_TOKENS", "MOERANK_ADMIN_TOKEN", "admin_tokens"
        ),
    )
    admin_tokens_file: Path | None = None  # /admin/*, /v1/items
    events_tokens: str | None = None  # /v1/events (admin tokens are accepted there too)
    events_tokens_file: Path | None = None
    # Online experiments (README "Running an experiment"). Unset: MOERANK_BUNDLE_PATH alone,
    # served as model "default".
    models_file: Path | None = None
    max_events: int = Field(1000, ge=1)  # events in one POST /v1/events
    # request_id -> (model, experiment, variant) kept for events: the last N answers.
    served_requests: int = Field(200_000, ge=0)
    # Shadow scorings waiting (beyond: dropped, counted). Each holds its request and the
    # served model's inputs: ~0.3 MB for 100 items with text, so 200 bound it near 60 MB.
    shadow_queue: int = Field(200, ge=0)
    served_log_dir: Path | None = None  # unset: no served log
    # Records waiting for the writer thread (beyond: dropped, counted): an answer's record is
    # built there from the parsed request, ~0.15 MB for 100 items, so 2000 bound ~300 MB.
    served_log_queue: int = Field(2000, ge=0)
    served_log_segment_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # rotate past this size
    served_log_fsync_ms: float = Field(1000.0, ge=0)  # fsync at most this long after a write
