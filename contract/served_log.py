"""The served log: every answered ranking request and every feedback event, as the service
wrote them, for the next training round to read back (MOERANK_SERVED_LOG_DIR).

Format: a directory of JSON-lines segment files, `served-<pid>-<start ms>-<seq>.jsonl`, one
record per line, each a `ServedRecord` (kind "served") or an `EventRecord` (kind "event").
A segment is closed and a new one begun once it passes the size limit; several processes
(uvicorn workers) write segments of their own. Records are appended in the order the writer
received them; a reader orders nothing and joins events to answers by request_id.

A process killed mid-write can leave a last line cut short: `read_records` skips a line that
does not parse (counting it in `ReadStats`) rather than failing the whole log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 1
SEGMENT_GLOB = "served-*.jsonl"
EVENT_TYPES = ("impression", "click", "add_to_cart", "purchase")
RECORD_CONFIG = ConfigDict(extra="forbid", frozen=True)


class ServedQuery(BaseModel):
    model_config = RECORD_CONFIG

    text: str
    category: str | None = None  # absent for a model that reads no category
    top_category: str | None = None
    scenario: str | None = None
    platform: str | None = None


class ServedItem(BaseModel):
    """One returned item, with exactly the feature values the model ran on."""

    model_config = RECORD_CONFIG

    id: str
    position: int = Field(ge=0, description="0-based rank in the answer")
    score: float
    numeric: dict[str, float] = Field(description="after imputation: the training mean if absent")
    categorical: dict[str, str | None] = Field(
        description="as sent, None if absent (the model maps unknown values to OOV)"
    )
    imputed: list[str] = Field(default_factory=list, description="numeric names imputed")
    embedding: Literal["vector", "zero", "none"] = Field(
        description="vector: a stored or encoded item embedding; zero: the zero vector (cold "
        "or missing); none: the model reads no text"
    )


class ServedRecord(BaseModel):
    model_config = RECORD_CONFIG

    kind: Literal["served"] = "served"
    schema_version: int = SCHEMA_VERSION
    request_id: str
    ts: float = Field(description="unix seconds when the answer was made")
    model: str = Field(description="the models-file name that served it")
    bundle: str = Field(description="the bundle's manifest name")
    model_version: str
    encoder_id: str = Field(description="the text embeddings' version ('' if no text)")
    experiment: str | None = None
    variant: str | None = None
    unit: str | None = Field(None, description="the field hashed to pick the variant")
    user_id: str | None = None
    session_id: str | None = None
    query: ServedQuery
    items: list[ServedItem]


class EventRecord(BaseModel):
    model_config = RECORD_CONFIG

    kind: Literal["event"] = "event"
    schema_version: int = SCHEMA_VERSION
    type: Literal["impression", "click", "add_to_cart", "purchase"]
    request_id: str
    item_id: str
    position: int = Field(ge=0)
    timestamp: float = Field(description="when it happened (the sender's clock, unix s)")
    received_ts: float = Field(description="when the service accepted it (unix s)")
    known: bool = Field(description="the service still knew the request id when it arrived")
    model: str | None = None
    experiment: str | None = None
    variant: str | None = None


Record = Annotated[ServedRecord | EventRecord, Field(discriminator="kind")]
RECORD = TypeAdapter(Record)


@dataclass
class ReadStats:
    segments: int = 0
    records: int = 0
    unreadable_lines: int = 0  # a torn last line (kill -9 mid-write) or a foreign line


def segments(directory: str | Path) -> list[Path]:
    """The segment files of a served-log directory, oldest first within each process."""
    return sorted(Path(directory).glob(SEGMENT_GLOB))


def read_records(directory: str | Path, stats: ReadStats | None = None) -> Iterator[Record]:
    """Every record of every segment; lines that do not parse are skipped and counted."""
    stats = stats if stats is not None else ReadStats()
    for path in segments(directory):
        stats.segments += 1
        with path.open("rb") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    record = RECORD.validate_python(json.loads(line))
                except (ValueError, ValidationError):
                    stats.unreadable_lines += 1
                    continue
                stats.records += 1
                yield record
