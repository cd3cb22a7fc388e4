"""Ask every active intermediary at once, under one deadline, and never fail because one did.

For each adapter the directory lists (app.adapters.base.AdapterDirectory) whose capabilities
offer a patient lookup (and, for `$everything`, a record: `$everything` or DocumentReference;
event-only channels and this server's own base URL are not asked), one task runs `locate`
and then, for a federated `$everything`, `fetch_record` for each patient located with a score
of at least `min_match_score` (at most MAX_PATIENTS_PER_SOURCE of them). All tasks
start together; `asyncio.wait` gives them `deadline` seconds, and a task still running then is
cancelled and reported as a TIMEOUT without waiting for it to wind down, so the answer never
waits longer than the deadline whatever an adapter does with the cancellation. The same deadline
is set for the adapters (app/adapters/deadline.py), so none starts a retry it could not finish.

Every outcome is a `SourceResult`: an AdapterError (any other exception an adapter raises
becomes a MALFORMED one naming only its class) or what was found. Each endpoint has a circuit
breaker (breaker.py): an open one is not called and is reported as CIRCUIT_OPEN; failures are
counted, UNSUPPORTED is not (the endpoint answered; it lacks the interaction).

Log lines name the endpoint, the failure kind and the time taken, never the patient.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from app.adapters.base import (
    AdapterDirectory,
    AdapterError,
    FailureKind,
    IntermediaryAdapter,
    PersonQuery,
    RemotePatient,
    RemoteRecord,
)
from app.adapters.deadline import deadline_in
from app.federation.breaker import CircuitBreaker

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = ["MAX_PATIENTS_PER_SOURCE", "Federator", "SourceResult"]

MAX_PATIENTS_PER_SOURCE = 3  # records fetched per intermediary for one person
log = logging.getLogger("dxf.federation")


@dataclass(slots=True)
class SourceResult:
    """What one intermediary contributed to a federated read, or why it did not."""

    name: str
    endpoint: str
    patients: list[RemotePatient] = field(default_factory=list)  # located and accepted
    records: list[RemoteRecord] = field(default_factory=list)  # one per accepted patient
    set_aside: int = 0  # located, but below the match threshold or over the per-source cap
    error: AdapterError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Federator:
    def __init__(
        self,
        directory: AdapterDirectory,
        *,
        deadline: float = 3.0,
        breaker_failures: int = 5,
        breaker_cooldown: float = 30.0,
        min_match_score: float = 0.9,
        own_base: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.own_base = own_base.rstrip("/") if own_base else None
        self.deadline = deadline
        self.min_match_score = min_match_score
        self._breaker_failures = breaker_failures
        self._breaker_cooldown = breaker_cooldown
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._abandoned: set[asyncio.Task[SourceResult]] = set()

    @classmethod
    def from_settings(
        cls,
        directory: AdapterDirectory,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> Federator:
        return cls(
            directory,
            deadline=settings.federation_deadline_seconds,
            breaker_failures=settings.federation_breaker_failures,
            breaker_cooldown=settings.federation_breaker_cooldown_seconds,
            min_match_score=settings.federation_min_match_score,
            own_base=settings.fhir_base_url,
            clock=clock,
        )

    def breaker(self, endpoint: str) -> CircuitBreaker:
        found = self._breakers.get(endpoint)
        if found is None:
            found = CircuitBreaker(
                failures=self._breaker_failures, cooldown=self._breaker_cooldown, clock=self._clock
            )
            self._breakers[endpoint] = found
        return found

    async def record(
        self,
        person: PersonQuery,
        *,
        types: Sequence[str] = (),
        since: datetime | None = None,
    ) -> list[SourceResult]:
        """Each intermediary's record of the person (for $everything)."""

        async def work(adapter: IntermediaryAdapter, result: SourceResult) -> None:
            await self._locate(adapter, person, result)
            if result.patients:
                result.records = list(
                    await asyncio.gather(
                        *(
                            adapter.fetch_record(p, types=types, since=since)
                            for p in result.patients
                        )
                    )
                )

        return await self._fan_out(work, record=True)

    async def locate(self, person: PersonQuery) -> list[SourceResult]:
        """Each intermediary's own Patients for the person (for a federated search)."""

        async def work(adapter: IntermediaryAdapter, result: SourceResult) -> None:
            await self._locate(adapter, person, result)

        return await self._fan_out(work, record=False)

    async def aclose(self) -> None:
        """Cancel the tasks abandoned at their deadline that are still winding down."""
        for task in list(self._abandoned):
            task.cancel()
        self._abandoned.clear()

    # ---- internals ---------------------------------------------------------------------------

    async def _locate(
        self, adapter: IntermediaryAdapter, person: PersonQuery, result: SourceResult
    ) -> None:
        located = await adapter.locate(person)
        accepted = sorted(
            (p for p in located if p.score >= self.min_match_score),
            key=lambda p: -p.score,
        )
        result.patients = accepted[:MAX_PATIENTS_PER_SOURCE]
        result.set_aside = len(located) - len(result.patients)

    async def _fan_out(
        self,
        work: Callable[[IntermediaryAdapter, SourceResult], Awaitable[None]],
        *,
        record: bool,
    ) -> list[SourceResult]:
        try:
            adapters = await asyncio.wait_for(self.directory.active(), self.deadline)
        except Exception as exc:  # noqa: BLE001 - no registry, no federation; never a failure
            log.error("intermediary directory unavailable", extra={"error": type(exc).__name__})
            failed = AdapterError(
                FailureKind.UNREACHABLE, "the intermediary registry is unavailable"
            )
            return [SourceResult("intermediary registry", "", error=failed)]
        results: list[SourceResult] = []
        tasks: dict[asyncio.Task[SourceResult], int] = {}
        started = self._clock()
        for adapter in adapters:
            if not _offers(adapter, record=record):
                continue  # an event-delivery channel only (an MLLP feed): nothing to ask
            if self.own_base and _safe(lambda a=adapter: a.endpoint).rstrip("/") == self.own_base:
                continue  # this server registered as an intermediary: never ask ourselves
            name = _safe(lambda a=adapter: a.name)  # type: ignore[misc]
            result = SourceResult(name, _safe(lambda a=adapter: a.endpoint))  # type: ignore[misc]
            results.append(result)
            breaker = self.breaker(result.endpoint)
            if not breaker.allow():
                result.error = AdapterError(
                    FailureKind.CIRCUIT_OPEN,
                    f"not called after {breaker.consecutive_failures} consecutive failures; "
                    f"next try in {breaker.retry_in():.0f} s",
                    endpoint=result.endpoint,
                )
                continue
            with deadline_in(self.deadline):  # adapters plan their retries within it
                task = asyncio.create_task(_guarded(work, adapter, result))
            tasks[task] = len(results) - 1
        if tasks:
            try:
                _, pending = await asyncio.wait(tasks, timeout=self.deadline)
            except asyncio.CancelledError:  # the request went away: so do its remote calls
                for task in tasks:
                    task.cancel()
                raise
            for task in pending:
                task.cancel()
                self._abandoned.add(task)
                task.add_done_callback(self._forget)
                late = results[tasks[task]]
                # a fresh result: whatever the abandoned task still does is never seen
                results[tasks[task]] = SourceResult(
                    late.name,
                    late.endpoint,
                    error=AdapterError(
                        FailureKind.TIMEOUT,
                        f"no answer within the {self.deadline:g} s deadline",
                        endpoint=late.endpoint,
                    ),
                )
            for index in tasks.values():
                self._settle(results[index])
        elapsed = self._clock() - started
        for result in results:
            if result.error is not None:
                log.warning(
                    "intermediary failed",
                    extra={
                        "endpoint": result.endpoint,
                        "kind": result.error.kind.value,
                        "status": result.error.status,
                        "elapsed_ms": round(elapsed * 1000),
                    },
                )
        return results

    def _settle(self, result: SourceResult) -> None:
        breaker = self.breaker(result.endpoint)
        if result.error is None:
            breaker.success()
        elif result.error.kind is FailureKind.UNSUPPORTED:
            breaker.release()
        else:
            breaker.failure()

    def _forget(self, task: asyncio.Task[SourceResult]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as never retrieved


async def _guarded(
    work: Callable[[IntermediaryAdapter, SourceResult], Awaitable[None]],
    adapter: IntermediaryAdapter,
    result: SourceResult,
) -> SourceResult:
    """Run one intermediary's work; every exception but cancellation becomes its error."""
    try:
        await work(adapter, result)
    except AdapterError as exc:
        if not exc.endpoint:
            exc.endpoint = result.endpoint
        result.error = exc
        result.patients, result.records = [], []
    except Exception as exc:  # noqa: BLE001 - an adapter's bug must not fail the read
        result.error = AdapterError(
            FailureKind.MALFORMED,
            f"the adapter failed unexpectedly ({type(exc).__name__})",
            endpoint=result.endpoint,
        )
        result.patients, result.records = [], []
    return result


def _offers(adapter: IntermediaryAdapter, *, record: bool) -> bool:
    """Does the adapter declare a patient lookup (and, for a record, a way to fetch one)?
    One whose capabilities cannot be read is asked anyway, so its failure is reported."""
    try:
        caps = adapter.capabilities()
    except Exception:  # noqa: BLE001
        return True
    if not (caps.identifier_search or caps.patient_match):
        return False
    return not record or caps.everything or caps.document_reference


def _safe(get: Callable[[], str]) -> str:
    try:
        return str(get())
    except Exception:  # noqa: BLE001 - a broken adapter still gets a line in the Bundle
        return "unknown"
