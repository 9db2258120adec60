"""Reloads across uvicorn workers: POST /admin/reload reaches one worker, which records the
bundle it now serves in a file the workers share; the others poll it and follow. A worker
that uvicorn restarts later starts from the recorded bundle, not the configured one."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from pathlib import Path

from service.bundle import BundleError
from service.model_slot import ModelSlot

log = logging.getLogger("uvicorn.error")


class ReloadFollower:
    def __init__(self, record: Path, interval_s: float = 1.0):
        self.record, self.interval_s = record, interval_s
        self._seen = self._read().get("id")

    def recorded_path(self) -> Path | None:
        path = self._read().get("bundle_path")
        return Path(path) if path else None

    def publish(self, bundle_path: Path) -> None:
        """Record a bundle this worker swapped in; written whole, then renamed into place."""
        self._seen = uuid.uuid4().hex
        partial = self.record.with_name(f"{self.record.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"bundle_path": str(bundle_path), "id": self._seen}))
        partial.replace(self.record)

    async def follow(self, slot: ModelSlot) -> None:
        """Run until cancelled: reload whatever another worker published."""
        while True:
            await asyncio.sleep(self.interval_s)
            record = self._read()
            if record.get("id") in (None, self._seen):
                continue
            self._seen = record["id"]
            try:
                bundle = await slot.reload(Path(record["bundle_path"]))
            except BundleError as exc:
                log.error("another worker's bundle %s failed here: %s", record, exc)
                continue
            log.info("followed a reload: now serving %s %s", bundle.name, bundle.version)

    def _read(self) -> dict:
        try:
            return json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}
