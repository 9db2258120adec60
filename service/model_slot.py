"""The bundle being served, and its replacement without a pause (POST /admin/reload).

A new bundle is loaded, validated and warmed up in a thread beside the old one, then swapped
in with one assignment. A ranking call reads `slot.current` once and keeps that bundle to the
end, so calls in flight finish on the old model; the old one is freed when the last of them
lets go. A bundle that fails validation is never swapped in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from service import metrics
from service.bundle import Bundle, BundleError


class ModelSlot:
    def __init__(self, bundle: Bundle, load: Callable[[Path], Bundle]):
        self.current, self._load = bundle, load
        self._lock = asyncio.Lock()  # one reload at a time; requests never wait on it
        _announce(None, bundle)

    async def reload(self, path: Path) -> Bundle:
        """The new bundle once it serves; BundleError (old model untouched) if it is bad."""
        async with self._lock:
            try:
                bundle = await asyncio.to_thread(self._load, path)
            except Exception as exc:  # whatever failed, the old model keeps serving
                metrics.RELOADS.labels("rejected").inc()
                if isinstance(exc, BundleError):
                    raise
                raise BundleError(f"{type(exc).__name__}: {exc}") from exc
            old, self.current = self.current, bundle
            _announce(old, bundle)
            metrics.RELOADS.labels("ok").inc()
            return bundle


def _announce(old: Bundle | None, new: Bundle) -> None:
    if old is not None:
        metrics.MODEL_INFO.labels(old.name, old.version, old.encoder_id).set(0)
    metrics.MODEL_INFO.labels(new.name, new.version, new.encoder_id).set(1)
