"""A caller's deadline for adapter calls, carried in a context variable.

The adapter Protocol (app/adapters/base.py) takes no deadline argument, so a caller that must
answer by a given time (a federated `$everything` fanning out to several intermediaries) sets
one around its calls:

    with deadline_in(8.0):
        record = await adapter.fetch_record(patient)

An adapter never starts a retry that could not finish before the earliest of the caller's
deadline and its own per-endpoint deadline (`remaining()` tells it how long is left). The
deadline is an `asyncio` loop time, so it is shared by the tasks a `TaskGroup` starts inside
the block (context variables are copied into new tasks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["deadline_at", "deadline_in", "remaining"]

_DEADLINE: ContextVar[float | None] = ContextVar("dxf_adapter_deadline", default=None)


def _now() -> float:
    return asyncio.get_running_loop().time()


@contextmanager
def deadline_at(when: float) -> Iterator[None]:
    """Calls inside the block must be done by loop time `when` (an earlier outer one wins)."""
    outer = _DEADLINE.get()
    token = _DEADLINE.set(when if outer is None else min(outer, when))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@contextmanager
def deadline_in(seconds: float) -> Iterator[None]:
    """Calls inside the block must be done within `seconds` from now."""
    with deadline_at(_now() + seconds):
        yield


def remaining(own_seconds: float | None = None, *, started: float | None = None) -> float:
    """Seconds left before the earlier of the caller's deadline and `own_seconds` after
    `started` (loop time; default now). Never negative."""
    now = _now()
    limits = []
    caller = _DEADLINE.get()
    if caller is not None:
        limits.append(caller)
    if own_seconds is not None:
        limits.append((now if started is None else started) + own_seconds)
    if not limits:
        return float("inf")
    return max(0.0, min(limits) - now)
