"""The served-log writer (format: contract/served_log.py): off the request path, bounded in
memory, rotated by size.

`write` only puts a record (or a function making one) on a bounded queue; past
MOERANK_SERVED_LOG_QUEUE records it drops it and counts the drop. One thread builds the
records, serialises them and appends each batch it finds waiting with a single write() to
the current segment.

Flush policy: a batch is handed to the kernel (os.write, no user-space buffer) as soon as the
thread takes it, so a killed process (kill -9) loses only what was still queued; the file is
fsynced at most MOERANK_SERVED_LOG_FSYNC_MS after a write (and at rotation and shutdown), which
bounds what a power cut or kernel crash loses. A segment past MOERANK_SERVED_LOG_SEGMENT_BYTES
is fsynced and closed, and the next write starts a new one.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from contract.served_log import ServedItem, ServedQuery, ServedRecord
from service import metrics
from service.ranking import Ranked

log = logging.getLogger("uvicorn.error")
STOP = object()
BATCH = 1000  # records per write() at most


def served_record(ranked: Ranked, has_vector: np.ndarray | None) -> ServedRecord:
    """What the model saw for the items it returned: numeric values after imputation, the
    categorical values as sent, whether each item had a real embedding (`has_vector`, per
    request row; None: the model reads no text)."""
    request, route, inputs = ranked.request, ranked.route, ranked.inputs
    bundle, columns = route.bundle, ranked.columns
    names = bundle.numeric_names
    not_sent = [None] * len(columns)  # the column of a feature no item sent
    sent = {name: columns.features.get(name, not_sent) for name in names}
    categorical = {
        field.name: columns.categorical.get(field.name, not_sent) for field in bundle.item_fields
    }
    items = []
    for position, row in enumerate(ranked.order.tolist()):
        items.append(
            ServedItem(
                id=columns.ids[row],
                position=position,
                score=float(ranked.scores[row]),
                numeric=dict(zip(names, inputs.numeric[row].tolist())),
                categorical={name: values[row] for name, values in categorical.items()},
                imputed=[name for name in names if sent[name][row] is None],
                embedding="none" if has_vector is None else "vector" if has_vector[row] else "zero",
            )
        )
    return ServedRecord(
        request_id=ranked.request_id,
        ts=ranked.ts,
        model=route.model,
        bundle=bundle.name,
        model_version=bundle.version,
        encoder_id=bundle.encoder_id if bundle.text_dim else "",
        experiment=route.experiment,
        variant=route.variant,
        unit=route.unit,
        user_id=request.user_id,
        session_id=request.session_id,
        query=ServedQuery(
            **{name: getattr(request.query, name) for name in ServedQuery.model_fields}
        ),
        items=items,
    )


class ServedLogWriter:
    def __init__(self, directory: Path, capacity: int, segment_bytes: int, fsync_s: float):
        self.directory, self.segment_bytes, self.fsync_s = Path(directory), segment_bytes, fsync_s
        self.directory.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue = queue.Queue(max(1, capacity))
        self._capacity = capacity
        self._fd: int | None = None
        self._size, self._sequence, self._dirty_since = 0, 0, None
        self._thread = threading.Thread(target=self._run, name="moerank-served-log", daemon=True)
        self._thread.start()

    def write(self, record: BaseModel | Callable[[], BaseModel], kind: str) -> None:
        """Queue a record, or a function that makes it (run on the writer's thread)."""
        try:
            if self._capacity == 0:
                raise queue.Full
            self._queue.put_nowait((kind, record))
        except queue.Full:
            metrics.SERVED_LOG_RECORDS.labels(kind, "dropped").inc()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, fsync, close (blocking: call it in a thread)."""
        self._queue.put((None, STOP))
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            try:
                timeout = None if self._dirty_since is None else self.fsync_s
                batch = [self._queue.get(timeout=timeout)]
            except queue.Empty:
                self._sync()
                continue
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(record is STOP for _, record in batch)
            self._append([entry for entry in batch if entry[1] is not STOP])
            if stop:
                self._sync()
                if self._fd is not None:
                    os.close(self._fd)
                return
            if (
                self._dirty_since is not None
                and time.monotonic() - self._dirty_since >= self.fsync_s
            ):
                self._sync()

    def _append(self, batch: list) -> None:
        lines, kinds = [], []
        for kind, record in batch:
            try:
                made = record() if callable(record) else record
                lines.append(made.model_dump_json().encode() + b"\n")
                kinds.append(kind)
            except Exception:  # one record that cannot be made must not lose the others
                log.exception("a served-log record could not be made")
                metrics.SERVED_LOG_RECORDS.labels(kind, "error").inc()
        # A segment ends at the first line that takes it past the size limit.
        start = 0
        while start < len(lines):
            room, end = self.segment_bytes - self._size, start
            while end < len(lines) and room > 0:
                room -= len(lines[end])
                end += 1
            if not self._write(b"".join(lines[start:end]), kinds[start:end]):
                return
            start = end

    def _write(self, data: bytes, kinds: list[str]) -> bool:
        try:
            fd = self._segment()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            log.exception("writing %d served-log records failed", len(kinds))
            for kind in kinds:
                metrics.SERVED_LOG_RECORDS.labels(kind, "error").inc()
            return False
        for kind in kinds:
            metrics.SERVED_LOG_RECORDS.labels(kind, "written").inc()
        self._size += len(data)
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
        if self._size >= self.segment_bytes:
            self._sync()
            os.close(fd)
            self._fd, self._size = None, 0
        return True

    def _segment(self) -> int:
        if self._fd is None:
            self._sequence += 1
            name = f"served-{os.getpid()}-{time.time_ns() // 1_000_000}-{self._sequence:06d}.jsonl"
            self._fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return self._fd

    def _sync(self) -> None:
        if self._fd is not None and self._dirty_since is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                log.exception("fsync of the served log failed")
        self._dirty_since = None
