"""Login throttling for the app-launch sign-in page (OWASP API2, broken authentication).

After `max_failures` wrong passwords for one username within `window_seconds`, further sign-ins
for that username are refused without checking the password until the window has passed. The
count lives in this process's memory; a successful sign-in clears it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["LoginThrottle"]

_MAX_TRACKED = 10_000


class LoginThrottle:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        window_seconds: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window_seconds
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def _recent(self, username: str) -> list[float]:
        cutoff = self._clock() - self._window
        times = [t for t in self._failures.get(username, []) if t > cutoff]
        if times:
            self._failures[username] = times
        else:
            self._failures.pop(username, None)
        return times

    def blocked(self, username: str) -> bool:
        return len(self._recent(username.lower()[:128])) >= self._max

    def failed(self, username: str) -> None:
        key = username.lower()[:128]
        if len(self._failures) >= _MAX_TRACKED and key not in self._failures:
            for name in list(self._failures)[: _MAX_TRACKED // 10]:
                self._recent(name)  # drops names with no recent failures
            if len(self._failures) >= _MAX_TRACKED:
                self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(key, []).append(self._clock())

    def succeeded(self, username: str) -> None:
        self._failures.pop(username.lower()[:128], None)
