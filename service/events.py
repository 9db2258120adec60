"""Feedback events (POST /v1/events): validated one by one, joined to the answer they are about
by request_id, counted per model / experiment / variant / type, and written to the served log.

Semantics of a batch with bad events: each event is judged alone. The good ones are recorded
and counted whatever the others are; if any is bad the answer is 422 naming each bad one by
index and reason, with `accepted` saying how many were recorded. A sender must not resend the
batch (its good events would count twice), only fix and resend the bad ones.

An event whose request id the service does not know (older than the last
MOERANK_SERVED_REQUESTS answers, answered by another worker or process, or made up) is
accepted, counted under model/experiment/variant "unknown", and flagged in the answer.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from contract.served_log import EventRecord
from service import metrics
from service.lru import LRU
from service.rejections import Rejected, from_validation_errors, parse_json
from service.schemas import ITEM_ID, REQUEST_CONFIG, Count

# Label values: "" outside an experiment (Prometheus reads it as no label); "unknown" for
# an event whose request id the service does not know.
NONE, UNKNOWN = "", "unknown"


class Event(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["impression", "click", "add_to_cart", "purchase"]
    request_id: str = Field(min_length=1, max_length=128)
    item_id: str = ITEM_ID
    position: Count = Field(description="0-based rank at which the item was shown")
    timestamp: float = Field(ge=0, description="unix seconds")


class EventBatch(BaseModel):
    """The documented body; events are validated one at a time (see `record`)."""

    model_config = REQUEST_CONFIG

    events: list[Event] = Field(min_length=1)


class _Envelope(BaseModel):
    model_config = REQUEST_CONFIG

    events: list[Any] = Field(min_length=1)


EVENT = TypeAdapter(Event)


class EventsAccepted(BaseModel):
    accepted: int
    unknown_request_ids: int = Field(description="distinct request ids the service did not know")


REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_header(value: str | None) -> str | None:
    """X-Request-ID, if sent: 1-128 letters, digits and . _ : - (it goes into logs)."""
    if value is None:
        return None
    if not REQUEST_ID.fullmatch(value):
        raise Rejected.one(
            422, "invalid_value", "x-request-id", "1-128 characters of A-Z a-z 0-9 . _ : -"
        )
    return value


@dataclass(frozen=True)
class Served:
    model: str
    experiment: str | None
    variant: str | None


class ServedRequests:
    """request_id -> who served it, for the last `capacity` answers (an LRU: an id is
    forgotten `capacity` answers later, or sooner if it is never looked up)."""

    def __init__(self, capacity: int):
        self._lru = LRU(capacity)

    def remember(self, request_id: str, served: Served) -> None:
        self._lru.put(request_id, served)

    def get(self, request_id: str) -> Served | None:
        return self._lru.get(request_id)


@dataclass
class Outcome:
    accepted: int
    unknown_request_ids: int
    errors: list[dict[str, str]]


def record(body: bytes, served: ServedRequests, max_events: int, log) -> Outcome:
    """Validate and count a batch; `log` (or None) takes an EventRecord per good event.
    Rejected if the body as a whole is not a batch (malformed JSON, no events, too many)."""
    envelope = parse_json(_Envelope, body)
    if len(envelope.events) > max_events:
        raise from_validation_errors(
            [{"type": "too_long", "loc": ("events",), "msg": f"at most {max_events} events"}]
        )
    accepted, unknown, errors = 0, set(), []
    received = time.time()
    for index, raw in enumerate(envelope.events):
        try:
            event = EVENT.validate_python(raw)
        except ValidationError as exc:
            for error in exc.errors(include_url=False, include_input=False):
                where = ".".join(str(part) for part in ("events", index, *error["loc"]))
                errors.append({"field": where, "message": error["msg"]})
            continue
        who = served.get(event.request_id)
        if who is None:
            unknown.add(event.request_id)
            labels = (UNKNOWN, UNKNOWN, UNKNOWN)
        else:
            labels = (who.model, who.experiment or NONE, who.variant or NONE)
        metrics.EVENTS.labels(*labels, event.type).inc()
        accepted += 1
        if log is not None:
            log.write(
                EventRecord(
                    **event.model_dump(),
                    received_ts=received,
                    known=who is not None,
                    model=who and who.model,
                    experiment=who and who.experiment,
                    variant=who and who.variant,
                ),
                "event",
            )
    return Outcome(accepted, len(unknown), errors)
