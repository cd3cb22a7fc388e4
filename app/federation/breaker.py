"""A circuit breaker per intermediary endpoint: stop calling one that keeps failing.

The classic three states (Nygard, "Release It!", ch. 5):

    closed     calls go through; `failures` consecutive failures open the breaker
    open       calls are refused at once (reported as circuit-open) for `cooldown` seconds
    half-open  after the cool-down, one trial call goes through and the others are refused;
               its success closes the breaker, its failure opens it for another cool-down

The clock is injected (monotonic seconds), so tests move time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError("a breaker opens after at least one failure")
        self.threshold = failures
        self.cooldown = cooldown
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False  # a half-open trial call is under way

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when it would now)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def allow(self) -> bool:
        """May a call go through now? A True answer in half-open state claims the one trial;
        the caller must then report it with `success()` or `failure()`."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if not self._cooled_down():
                return False
            self._state = BreakerState.HALF_OPEN
            self._trial = False
        if self._trial:
            return False
        self._trial = True
        return True

    def success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial = False

    def failure(self) -> None:
        self._failures += 1
        self._trial = False
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()

    def release(self) -> None:
        """The call neither succeeded nor failed (the endpoint does not offer what was asked):
        give back a half-open trial without changing the state."""
        self._trial = False

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.cooldown
