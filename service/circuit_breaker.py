"""A circuit breaker for one dependency (Redis): closed -> open -> half-open -> closed.

Small and local on purpose: the async libraries (purgatory, aiobreaker) route every call
through an event bus and let every concurrent call through while half-open; here a dead
dependency costs one probe per cool-down, not one timeout per request.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    """Values of the breaker-state gauge: higher is worse."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class BreakerOpen(RuntimeError):
    """The dependency is not being called: the breaker is open or a probe is in flight."""


class CircuitBreaker:
    """`failures` consecutive failures open the breaker for `cooldown_s`; then exactly one
    call goes through as a probe: success closes the breaker, failure opens it again.

    Use: `breaker.before_call()` (raises BreakerOpen), then `success()` or `failure()`.
    Single-threaded (the event loop), so no lock.
    """

    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        on_change: Callable[[BreakerState], None] = lambda state: None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.failures, self.cooldown_s = failures, cooldown_s
        self._on_change, self._clock = on_change, clock
        self.state = BreakerState.CLOSED
        self._consecutive = 0
        self._since = 0.0  # when it opened, or when the probe started
        on_change(self.state)

    def before_call(self) -> None:
        if self.state is BreakerState.CLOSED:
            return
        now = self._clock()
        # Open past its cool-down, or half-open with a probe that never reported back (a
        # cancelled request): this caller becomes the probe.
        if now - self._since >= self.cooldown_s:
            self._since = now
            self._set(BreakerState.HALF_OPEN)
            return
        raise BreakerOpen(f"circuit {self.state.name.lower()}")

    def success(self) -> None:
        self._consecutive = 0
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        self._consecutive += 1
        if self.state is BreakerState.HALF_OPEN or self._consecutive >= self.failures:
            self._since = self._clock()
            self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        self.state = state
        self._on_change(state)
