"""Reloads across uvicorn workers: POST /admin/reload reaches one worker, which records the
models it now serves (a registry Source, plain JSON) in a file the workers share; the others
poll it and follow. A worker that uvicorn restarts later starts from the recorded models, not
the configured ones."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from service.bundle import BundleError

log = logging.getLogger("uvicorn.error")


class ReloadFollower:
    def __init__(self, record: Path, interval_s: float = 1.0):
        self.record, self.interval_s = record, interval_s
        self._seen = self._read().get("id")

    def recorded(self) -> dict | None:
        """The last published reload ({"source": ..., "reloaded": [...]}), if any."""
        record = self._read()
        return record if "source" in record else None

    def publish(self, source: dict, reloaded: list[str]) -> None:
        """Record a reload this worker made; written whole, then renamed into place."""
        self._seen = uuid.uuid4().hex
        partial = self.record.with_name(f"{self.record.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"source": source, "reloaded": reloaded, "id": self._seen}))
        partial.replace(self.record)

    async def follow(self, apply: Callable[[dict], Awaitable[object]]) -> None:
        """Run until cancelled: apply whatever another worker published."""
        while True:
            await asyncio.sleep(self.interval_s)
            record = self._read()
            if record.get("id") in (None, self._seen):
                continue
            self._seen = record["id"]
            try:
                await apply(record)
            except BundleError as exc:
                log.error("another worker's reload %s failed here: %s", record, exc)
                continue
            log.info("followed a reload: %s", record["source"])

    def _read(self) -> dict:
        try:
            return json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}
