"""Bad input -> a 4xx whose message names the field, and one bounded reason for the metrics."""

from __future__ import annotations

from typing import TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)

# pydantic error type -> rejection reason; anything else is "invalid_value".
REASONS = {
    "json_invalid": "malformed_json",
    "json_type": "malformed_json",
    "too_many_items": "too_many_items",
    "duplicate_ids": "duplicate_ids",
    "finite_number": "non_finite_number",
    "extra_forbidden": "unknown_field",
    "missing": "missing_field",
}


class Rejected(Exception):
    """A request refused with `status`; `errors` are [{"field", "message"}]."""

    def __init__(self, status: int, reason: str, errors: list[dict[str, str]]):
        super().__init__(f"{reason}: {errors}")
        self.status, self.reason, self.errors = status, reason, errors

    @classmethod
    def one(cls, status: int, reason: str, field: str, message: str) -> Rejected:
        return cls(status, reason, [{"field": field, "message": message}])


def from_validation_errors(errors: list[dict]) -> Rejected:
    """pydantic's (or FastAPI's) error list -> Rejected; the first error names the reason."""
    fields = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        fields.append({"field": ".".join(loc) or "body", "message": error["msg"]})
    first = errors[0] if errors else {"type": "invalid"}
    reason = REASONS.get(first["type"], "invalid_value")
    loc = tuple(first.get("loc", ()))
    if first["type"] == "too_short" and (loc[-1:] == ("items",) or loc[-2:] == ("columns", "id")):
        reason = "empty_items"
    return Rejected(400 if reason == "malformed_json" else 422, reason, fields)


def parse_json(model: type[Model], body: bytes, context: dict | None = None) -> Model:
    """Validate a JSON body into `model`, or raise Rejected.

    The fast path is pydantic's own JSON parser. It refuses NaN and Infinity literals as
    malformed JSON, which would hide the field; only then is the body parsed again with
    them allowed, so the error names the field holding the non-finite number.
    """
    try:
        return model.model_validate_json(body, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
    if errors[0]["type"] == "json_invalid":
        try:
            data = pydantic_core.from_json(body, allow_inf_nan=True)
        except ValueError as exc:
            raise Rejected.one(400, "malformed_json", "body", f"invalid JSON: {exc}") from None
        try:
            model.model_validate(data, context=context)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
    raise from_validation_errors(errors)
