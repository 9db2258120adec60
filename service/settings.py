"""Service settings: one typed object, read from MOERANK_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def usable_cpus() -> int:
    """CPUs this process may really use: affinity mask, capped by a cgroup v2/v1 CPU quota."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_quota()
    return max(1, min(count or 1, int(quota) if quota else count or 1))


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else max(1.0, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else max(1.0, quota / period)
    except (OSError, ValueError):
        return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MOERANK_", extra="ignore")

    bundle_path: Path = Path("artifacts/bundles/default")
    redis_url: str | None = None  # None: the embedded in-process store
    key_prefix: str = "moerank"
    embedding_store_path: Path | None = None  # precomputed item embeddings (.npz) to preload
    example_request_path: Path | None = None  # a /v1/rank body to print a curl for at start
    host: str = "127.0.0.1"
    port: int = 8000
    provider: str = Field("auto", pattern="^(auto|cpu|cuda)$")  # auto: CUDA when available
    intra_op_threads: int = Field(default_factory=usable_cpus, ge=1)
    encoder_variant: str = Field("int8", pattern="^(fp32|int8|fp16)$")
    max_items: int = Field(1000, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    redis_timeout_ms: float = Field(20.0, gt=0)
    lru_items: int = Field(200_000, ge=0)
    lru_queries: int = Field(50_000, ge=0)
    admin_token: str | None = None
