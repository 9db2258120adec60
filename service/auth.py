"""Bearer tokens for every endpoint that changes what the service serves or stores.

`require_token(scope)` is a FastAPI dependency. Scopes: "admin" (/admin/*, /v1/items) and
"events" (/v1/events; an admin token is accepted there too). A scope's tokens come from
MOERANK_<SCOPE>_TOKENS (comma-separated) and MOERANK_<SCOPE>_TOKENS_FILE (one or more per
line or comma-separated: a mounted Kubernetes secret), all accepted at once so a token can
be rotated by adding the new one, moving the clients, then removing the old one. The file
is re-read on each call (these endpoints are rare), so a rotated secret takes effect
without a restart. No token configured: the endpoint is disabled (403), never open.

Each candidate is compared through its SHA-256 digest with hmac.compare_digest, and every
configured token is compared, so neither the time taken nor an early exit says which token
or how many leading characters matched, nor how long the tokens are.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.rejections import Rejected
from service.settings import Settings

log = logging.getLogger("uvicorn.error")
BEARER = HTTPBearer(auto_error=False, description="MOERANK_ADMIN_TOKENS / MOERANK_EVENTS_TOKENS")
SCOPES = {"admin": ("admin",), "events": ("events", "admin")}  # scope -> token sets accepted


def split_tokens(text: str | None) -> list[str]:
    """Tokens separated by commas or line breaks; blanks dropped."""
    return [t.strip() for t in (text or "").replace("\n", ",").split(",") if t.strip()]


def configured_tokens(settings: Settings, kind: str) -> list[str]:
    """The tokens of one kind ("admin", "events") from the variable and the file."""
    tokens = split_tokens(getattr(settings, f"{kind}_tokens"))
    path: Path | None = getattr(settings, f"{kind}_tokens_file")
    if path is not None:
        try:
            tokens += split_tokens(path.read_text())
        except OSError as exc:  # an unreadable secret disables, never opens, the endpoint
            log.error("cannot read %s tokens from %s: %s", kind, path, exc)
    return tokens


def token_matches(given: str, tokens: list[str]) -> bool:
    digest = hashlib.sha256(given.encode()).digest()
    matched = False
    for token in tokens:  # no early exit: the same work whichever token matches
        matched |= hmac.compare_digest(digest, hashlib.sha256(token.encode()).digest())
    return matched


def require_token(scope: str) -> Callable:
    """A dependency refusing the request unless it carries a bearer token of `scope`:
    403 when no token is configured for it (disabled), 401 when missing or wrong."""
    kinds = SCOPES[scope]

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        settings: Settings = request.app.state.settings
        tokens = [t for kind in kinds for t in configured_tokens(settings, kind)]
        if not tokens:
            names = " or ".join(f"MOERANK_{kind.upper()}_TOKENS[_FILE]" for kind in kinds)
            raise Rejected.one(403, "unauthorized", "authorization", f"disabled: {names} unset")
        if credentials is None or not token_matches(credentials.credentials, tokens):
            raise Rejected.one(401, "unauthorized", "authorization", "bearer token required")

    return check


def require_json(request: Request) -> None:
    """Mutating endpoints take application/json only: a browser can send text/plain or a
    form to any address without asking the server first (no CORS preflight), but not JSON.
    A request without a body (a plain /admin/reload) needs no content type."""
    headers = request.headers
    if headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
        return
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise Rejected.one(
            415, "unsupported_media_type", "content-type", "send the body as application/json"
        )
