"""The event dispatcher: outbox -> deliveries -> receivers, at least once.

An asyncio task in the server's lifespan (and `dxf-bridge events deliver-once` for operators),
woken when the HL7 service commits an event and otherwise every DXF_EVENTS_POLL_SECONDS:

1. **route**: each unrouted `event_outbox` row becomes one `event_delivery` row per target, in
   one transaction with marking the event routed: active Subscriptions on the topic whose
   filters match (event kind; the patient named, or a member of the panel Group), active
   `event_receiver` rows (MLLP, FHIR message) whose kinds and panel match, and the registered
   intermediaries' adapters that take events (AdapterDirectory; capabilities().event_channels).
   A subscription's delivery gets the next `events-since-subscription-start` number;
2. **claim**: due pending deliveries (`next_attempt_at <= now`), with `FOR UPDATE SKIP LOCKED`
   on PostgreSQL (SQLite has one writer at a time), are taken by counting the attempt and
   moving `next_attempt_at` forward by a lease: a process that dies mid-delivery leaves the row
   to be claimed again once the lease ends;
3. **deliver** (app/events/channels.py) and record the outcome: delivered (with `delay_ms`, the
   time from the message's arrival to the receiver's acceptance), or a retry after exponential
   backoff with jitter (base * 2^(attempt-1), capped, times a random factor in [0.5, 1]), or dead
   after DXF_EVENTS_MAX_ATTEMPTS attempts or at once for an error that resending cannot fix,
   with the reason in `last_error` (endpoint, status, kind; never content).
4. **activate**: a Subscription with status `requested` gets a handshake notification; a 2xx
   answer makes it `active`, anything else `error` with the reason in `Subscription.error`.

Receivers see the same idempotency key on every attempt (Bundle.id, MessageHeader.id,
`Idempotency-Key`; MSH-10 for HL7v2), so an attempt that reached them but whose answer was lost
can be dropped when it comes again. The clock and the jitter source are injectable: tests
advance time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.adapters.base import (
    AdapterDirectory,
    AdapterError,
    AdtEvent,
    FailureKind,
    IntermediaryAdapter,
)
from app.db import Database, DbConnection, Prepared
from app.errors import FhirError, Gone, NotFound, PreconditionFailed
from app.events.channels import check_endpoint, post_json
from app.events.davinci import build_notification_bundle, event_code
from app.events.subscriptions import (
    SubscriptionSpec,
    group_members,
    notification_bundle,
    parse_subscription,
)
from app.events.topic import TOPIC_URL
from app.hl7.mllp_client import MllpClient
from app.hl7.service import SYSTEM_POLICY
from app.settings import Settings
from app.store.base import aware, utc_now_ms
from app.store.repository import FhirRepository
from app.store.tables import (
    event_delivery,
    event_outbox,
    event_receiver,
    event_subscription_counter,
    hl7_message,
    resource,
    resource_history,
)

__all__ = ["Claimed", "Dispatcher", "EventRow", "RunResult"]

log = logging.getLogger("dxf.events")

_o = event_outbox.c
_d = event_delivery.c
_r = event_receiver.c
_h = resource_history.c
_ROUTE_BATCH = 200
_LINGER_SECONDS = 0.02
_CACHED_VERSIONS = 2048

# Built once (app.db.Prepared): what every delivery runs. Every value is a named parameter.
_MINE = (
    _d.id == bindparam("delivery_id"),
    _d.status == bindparam("pending"),
    _d.attempts == bindparam("claimed_attempts"),
)
_OUTCOME = Prepared(
    update(event_delivery)
    .where(*_MINE)
    .values(
        status=bindparam("new_status"),
        next_attempt_at=bindparam("next_at"),
        delivered_at=bindparam("new_delivered_at"),
        delay_ms=bindparam("new_delay_ms"),
        last_error=bindparam("reason"),
    )
)
_UNROUTED = Prepared(select(func.min(_o.id)).where(_o.routed == bindparam("routed")))
_NEXT_DUE = Prepared(select(func.min(_d.next_attempt_at)).where(_d.status == bindparam("pending")))
_VERSION = Prepared(
    select(_h.content).where(
        _h.res_type == bindparam("rtype"),
        _h.res_id == bindparam("rid"),
        _h.version == bindparam("version"),
    )
)


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    event_key: str
    journal_id: int | None
    trigger: str
    kind: str
    patient_id: str
    patient_version: int
    encounter_id: str | None
    encounter_version: int | None
    other_patient_id: str | None
    sender: str
    occurred_at: datetime | None
    received_at: datetime


_EVENT_COLUMNS = [getattr(_o, name) for name in EventRow.__slots__]


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    target_kind: str
    target_id: str
    channel: str
    endpoint: str
    idempotency_key: str
    event_number: int | None
    attempts: int  # including this one
    event: EventRow


@dataclass(slots=True)
class RunResult:
    routed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    activated: int = 0

    @property
    def attempted(self) -> int:
        return self.delivered + self.retried + self.dead


@dataclass(slots=True)
class _Target:
    kind: str
    id: str
    channel: str
    endpoint: str
    key: str
    number: bool = False


def _safe_endpoint(url: str) -> str:
    """The endpoint without credentials or query (what operators see in listings)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url[:200]
    netloc, slash, path = rest.partition("/")
    netloc = netloc.rpartition("@")[2]
    return f"{scheme}://{netloc}{slash}{path.partition('?')[0]}"[:500]


class _Subscriptions:
    """The stored Subscriptions, re-read only when one changed (count and version sum)."""

    def __init__(self, fhir_base: str) -> None:
        self.fhir_base = fhir_base
        self._key: tuple[int, int] | None = None
        self.rows: list[tuple[str, int, dict[str, Any], SubscriptionSpec | None]] = []

    async def load(self, conn: DbConnection) -> None:
        r = resource.c
        row = (
            await conn.execute(
                select(func.count(), func.coalesce(func.sum(r.version), 0)).where(
                    r.res_type == "Subscription"
                )
            )
        ).first()
        key = (int(row[0]), int(row[1])) if row is not None else (0, 0)
        if key == self._key:
            return
        rows = await conn.execute(
            select(r.res_id, r.version, r.content)
            .where(r.res_type == "Subscription", r.deleted.is_(False))
            .order_by(r.res_id)
        )
        loaded = []
        for res_id, version, content in rows:
            body = orjson.loads(content)
            if body.get("criteria") != TOPIC_URL:
                continue
            try:
                spec: SubscriptionSpec | None = parse_subscription(body, self.fhir_base)
            except FhirError:
                spec = None
            loaded.append((res_id, int(version), body, spec))
        self.rows = loaded
        self._key = key

    def active(self) -> list[SubscriptionSpec]:
        return [
            spec
            for _, _, body, spec in self.rows
            if spec is not None and body.get("status") == "active"
        ]

    def requested(self) -> list[tuple[str, int, dict[str, Any]]]:
        return [
            (rid, version, body)
            for rid, version, body, _ in self.rows
            if body.get("status") == "requested"
        ]


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        directory: AdapterDirectory | None = None,
        clock: Callable[[], datetime] = utc_now_ms,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.settings = settings
        self.fhir_base = settings.fhir_base_url
        self.directory = directory
        self.clock = clock
        self.rng = rng
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(follow_redirects=False)
        self.repo = FhirRepository(
            db, policy=SYSTEM_POLICY, base_url=settings.fhir_base_url, clock=clock
        )
        self._subs = _Subscriptions(settings.fhir_base_url)
        self._groups: dict[str, tuple[int, frozenset[str]]] = {}
        self._specs: dict[str, tuple[int, SubscriptionSpec | None, str]] = {}
        self._versions: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._activation: asyncio.Task[int] | None = None
        # in the background loop, outcomes are written together at the top of each turn
        self._batching = False
        self._outcomes: list[dict[str, Any]] = []
        timeout = settings.events_timeout_seconds
        self.lease = timedelta(seconds=timeout * 3 + 5)

    # ---- background task ---------------------------------------------------------------------

    def wake(self) -> None:
        """A new event was committed (or a slot freed): look now, not at the next poll."""
        self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dxf-events-dispatcher")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._activation, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        try:
            await self._flush()  # what was delivered is recorded, not delivered again
        except Exception as exc:  # noqa: BLE001 - unrecorded outcomes are retried after the lease
            log.error("event outcomes not recorded", extra={"error": type(exc).__name__})
        if self._own_http:
            await self.http.aclose()

    async def _run(self) -> None:
        poll = self.settings.events_poll_seconds
        self._batching = True
        while True:
            self._wakeup.clear()
            wait = poll
            try:
                unrouted, next_due = await self._look()
                await self._start_activation()
                now = self.clock()
                free = self.settings.events_concurrency - len(self._inflight)
                due = next_due is not None and aware(next_due) <= aware(now)
                adapters = await self._event_adapters() if unrouted else []
                claimed: list[Claimed] = []
                if self._outcomes or (unrouted and adapters is not None) or (due and free > 0):
                    # one write transaction per turn: outcomes, routing, claiming
                    outcomes, self._outcomes = self._outcomes, []
                    try:
                        async with self.db.write() as conn:
                            if outcomes:
                                await conn.execute(_OUTCOME, outcomes)
                            if unrouted and adapters is not None:
                                await self._route_in(conn, adapters, now)
                            if free > 0 and (due or unrouted):
                                claimed = await self._claim_in(conn, now, free)
                    except BaseException:
                        self._outcomes[:0] = outcomes  # nothing was written: keep them
                        raise
                for item in claimed:
                    task = asyncio.create_task(self.attempt(item))
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
                if claimed and len(claimed) == free:
                    wait = 0  # there may be more due: look again after a turn of the loop
                elif next_due is not None and not due:
                    wait = min(poll, (aware(next_due) - aware(now)).total_seconds())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop outlives a database outage
                log.error("event dispatch failed", extra={"error": type(exc).__name__})
            if wait > 0:
                # asyncio.timeout, not wait_for: on 3.11 a wait_for whose event is set in the
                # same loop turn as a cancel swallows the cancel and hangs stop()
                woken = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()
                        woken = True
                if woken and _LINGER_SECONDS:
                    # let the commits of a busy feed gather: one turn (a read and a write
                    # transaction) then serves several events instead of one each
                    await asyncio.sleep(_LINGER_SECONDS)
            else:
                await asyncio.sleep(0)  # let deliveries and ingestion run between turns

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "event delivery task failed", extra={"error": type(task.exception()).__name__}
            )
        self.wake()

    async def _look(self) -> tuple[bool, datetime | None]:
        """One read: is an event waiting to be routed, when is the next delivery due; and the
        subscriptions, re-read when they changed."""
        async with self.db.read() as conn:
            unrouted = await conn.scalar(_UNROUTED, {"routed": False})
            due = await conn.scalar(_NEXT_DUE, {"pending": "pending"})
            await self._subs.load(conn)
        return unrouted is not None, due

    async def _flush(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        if outcomes:
            try:
                async with self.db.write() as conn:
                    await conn.execute(_OUTCOME, outcomes)
            except BaseException:
                self._outcomes[:0] = outcomes
                raise

    async def _start_activation(self) -> None:
        if self._activation is not None and not self._activation.done():
            return
        if self._subs.requested():
            self._activation = asyncio.create_task(self.activate())

    # ---- one pass, for tests and `dxf-bridge events deliver-once` ------------------------------

    async def run_once(self, *, limit: int = 500) -> RunResult:
        """Route what is unrouted, activate requested subscriptions, then claim every due
        delivery (up to `limit`) and attempt it, all awaited."""
        result = RunResult()
        while True:
            routed = await self.route()
            result.routed += routed
            if routed < _ROUTE_BATCH:
                break
        async with self.db.read() as conn:
            await self._subs.load(conn)
        if self._subs.requested():
            result.activated += await self.activate()
        claimed = await self.claim(limit)
        sem = asyncio.Semaphore(self.settings.events_concurrency)

        async def bounded(item: Claimed) -> str:
            async with sem:
                return await self.attempt(item)

        for outcome in await asyncio.gather(*(bounded(c) for c in claimed)):
            if outcome == "delivered":
                result.delivered += 1
            elif outcome == "dead":
                result.dead += 1
            else:
                result.retried += 1
        return result

    # ---- routing ------------------------------------------------------------------------------

    async def _event_adapters(self) -> list[IntermediaryAdapter] | None:
        if self.directory is None:
            return []
        try:
            adapters = await self.directory.active()
        except Exception as exc:  # noqa: BLE001 - route later rather than without them
            log.error("adapter directory unavailable", extra={"error": type(exc).__name__})
            return None
        return [a for a in adapters if a.capabilities().event_channels]

    async def route(self, *, check: bool = True) -> int:
        """Fan unrouted events out into deliveries; returns how many events were routed."""
        if check:
            async with self.db.read() as conn:
                if await conn.scalar(_UNROUTED, {"routed": False}) is None:
                    return 0
        adapters = await self._event_adapters()
        if adapters is None:
            return 0
        async with self.db.write() as conn:
            return await self._route_in(conn, adapters, self.clock())

    async def _route_in(
        self, conn: DbConnection, adapters: list[IntermediaryAdapter], now: datetime
    ) -> int:
        query = (
            select(*_EVENT_COLUMNS).where(_o.routed.is_(False)).order_by(_o.id).limit(_ROUTE_BATCH)
        )
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        events = [EventRow(*row) for row in await conn.execute(query)]
        if not events:
            return 0
        await self._subs.load(conn)
        subscriptions = self._subs.active()
        receivers = (await conn.execute(select(event_receiver).where(_r.active.is_(True)))).all()
        rows: list[dict[str, Any]] = []
        members: dict[str, frozenset[str]] = {}  # this batch's panels, read once
        for event in events:
            for target in await self._targets(
                conn, event, subscriptions, receivers, adapters, now, members
            ):
                rows.append(
                    {
                        "event_id": event.id,
                        "target_kind": target.kind,
                        "target_id": target.id,
                        "channel": target.channel,
                        "endpoint": _safe_endpoint(target.endpoint),
                        "idempotency_key": target.key,
                        "event_number": 0 if target.number else None,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "last_error": None,
                        "created_at": now,
                        "delivered_at": None,
                        "delay_ms": None,
                    }
                )
        await self._number(conn, rows)
        if rows:
            await conn.execute(insert(event_delivery), rows)
        await conn.execute(
            update(event_outbox)
            .where(_o.id.in_([e.id for e in events]))
            .values(routed=True, routed_at=now)
        )
        return len(events)

    async def _targets(
        self,
        conn: DbConnection,
        event: EventRow,
        subscriptions: list[SubscriptionSpec],
        receivers: list[Any],
        adapters: list[IntermediaryAdapter],
        now: datetime,
        members: dict[str, frozenset[str]],
    ) -> list[_Target]:
        patients = {event.patient_id} | (
            {event.other_patient_id} if event.other_patient_id else set()
        )
        out: list[_Target] = []
        for spec in subscriptions:
            if not spec.wants(event.kind) or _expired(spec.end, now):
                continue
            if not await self._matches(conn, patients, spec.patients, spec.groups, members):
                continue
            key = str(uuid.uuid5(uuid.UUID(event.event_key), f"Subscription/{spec.id}"))
            out.append(_Target("subscription", spec.id, "rest-hook", spec.endpoint, key, True))
        for rec in receivers:
            kinds = {k for k in rec.kinds.split(",") if k}
            if kinds and event.kind not in kinds:
                continue
            if rec.channel == "fhir-message" and event_code(event.kind) is None:
                continue
            if rec.panel and not await self._matches(
                conn, patients, frozenset(), (rec.panel,), members
            ):
                continue
            out.append(_Target("receiver", rec.name, rec.channel, rec.endpoint, event.event_key))
        for adapter in adapters:
            channels = adapter.capabilities().event_channels
            if channels <= {"fhir-message"} and event_code(event.kind) is None:
                continue
            out.append(
                _Target("adapter", adapter.name, "adapter", adapter.endpoint, event.event_key)
            )
        return out

    async def _matches(
        self,
        conn: DbConnection,
        patients: set[str],
        named: frozenset[str],
        groups: tuple[str, ...],
        members: dict[str, frozenset[str]],
    ) -> bool:
        if patients & named:
            return True
        for group_id in groups:
            if group_id not in members:
                members[group_id] = await self._members(conn, group_id)
            if patients & members[group_id]:
                return True
        return False

    async def _members(self, conn: DbConnection, group_id: str) -> frozenset[str]:
        r = resource.c
        where = (r.res_type == "Group", r.res_id == group_id)
        version = await conn.scalar(select(r.version).where(*where, r.deleted.is_(False)))
        if version is None:
            return frozenset()
        cached = self._groups.get(group_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        content = await conn.scalar(select(r.content).where(*where))
        members = group_members(orjson.loads(content), self.fhir_base) if content else frozenset()
        self._groups[group_id] = (int(version), members)
        return members

    async def _number(self, conn: DbConnection, rows: list[dict[str, Any]]) -> None:
        """Give each subscription's new deliveries the next event numbers, in event order: one
        counter update per subscription and batch (the row lock orders concurrent routers)."""
        by_target: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if row["event_number"] is not None:
                by_target.setdefault(row["target_id"], []).append(row)
        c = event_subscription_counter.c
        maker = sqlite_insert if self.db.is_sqlite else pg_insert
        for subscription_id, mine in sorted(by_target.items()):
            statement = (
                maker(event_subscription_counter)
                .values(subscription_id=subscription_id, events_since_start=len(mine))
                .on_conflict_do_update(
                    index_elements=["subscription_id"],
                    set_={"events_since_start": c.events_since_start + len(mine)},
                )
                .returning(c.events_since_start)
            )
            last = int((await conn.execute(statement)).scalar_one())
            for offset, row in enumerate(mine):
                row["event_number"] = last - len(mine) + 1 + offset

    # ---- claiming and delivering ----------------------------------------------------------------

    async def claim(self, limit: int, *, check: bool = True) -> list[Claimed]:
        """Take up to `limit` due deliveries: count the attempt, lease them."""
        if limit <= 0:
            return []
        now = self.clock()
        if check:
            async with self.db.read() as conn:
                due = await conn.scalar(_NEXT_DUE, {"pending": "pending"})
            if due is None or aware(due) > aware(now):
                return []
        async with self.db.write() as conn:
            return await self._claim_in(conn, now, limit)

    async def _claim_in(self, conn: DbConnection, now: datetime, limit: int) -> list[Claimed]:
        query = (
            select(_d.id)
            .where(_d.status == "pending", _d.next_attempt_at <= now)
            .order_by(_d.next_attempt_at, _d.id)
            .limit(limit)
        )
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        ids = [row.id for row in await conn.execute(query)]
        if not ids:
            return []
        await conn.execute(
            update(event_delivery)
            .where(_d.id.in_(ids))
            .values(attempts=_d.attempts + 1, next_attempt_at=now + self.lease)
        )
        rows = await conn.execute(
            select(
                _d.id,
                _d.target_kind,
                _d.target_id,
                _d.channel,
                _d.endpoint,
                _d.idempotency_key,
                _d.event_number,
                _d.attempts,
                *_EVENT_COLUMNS,
            )
            .select_from(event_delivery.join(event_outbox, _o.id == _d.event_id))
            .where(_d.id.in_(ids))
            .order_by(_d.id)
        )
        out = []
        for row in rows:
            values = tuple(row)
            out.append(Claimed(*values[:8], event=EventRow(*values[8:])))  # type: ignore[misc]
        return out

    async def attempt(self, claimed: Claimed) -> str:
        """Deliver one claimed delivery and record the outcome: delivered, pending or dead."""
        error: AdapterError | None = None
        try:
            await self._send(claimed)
        except AdapterError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a bug in one delivery must not stop the rest
            log.error(
                "event delivery failed unexpectedly",
                extra={"error": type(exc).__name__, "delivery_id": claimed.id},
            )
            error = AdapterError(
                FailureKind.MALFORMED, f"internal error ({type(exc).__name__})", retryable=True
            )
        now = self.clock()
        values: dict[str, Any] = {
            "delivery_id": claimed.id,
            "pending": "pending",
            "claimed_attempts": claimed.attempts,
            "new_status": "pending",
            "next_at": now + self.lease,  # unchanged unless retried
            "new_delivered_at": None,
            "new_delay_ms": None,
            "reason": None,
        }
        delay_ms = None
        if error is None:
            delay = aware(now) - aware(claimed.event.received_at)
            delay_ms = max(0, int(delay.total_seconds() * 1000))
            values.update(new_status="delivered", new_delivered_at=now, new_delay_ms=delay_ms)
            outcome = "delivered"
        else:
            reason = str(error)[:900]
            if not error.retryable:
                values.update(new_status="dead", reason=f"{reason} (not retried)")
                outcome = "dead"
            elif claimed.attempts >= self.settings.events_max_attempts:
                reason = f"{reason} (gave up after {claimed.attempts} attempts)"
                values.update(new_status="dead", reason=reason)
                outcome = "dead"
            else:
                next_at = now + self.backoff(claimed.attempts)
                values.update(next_at=next_at, reason=reason)
                outcome = "retry"
        if self._batching:
            self._outcomes.append(values)  # written at the top of the loop's next turn
        else:
            async with self.db.write() as conn:
                await conn.execute(_OUTCOME, values)
        log.info(
            "event delivery",
            extra={
                "delivery_id": claimed.id,
                "event_id": claimed.event.id,
                "target": claimed.target_kind,
                "channel": claimed.channel,
                "attempts": claimed.attempts,
                "outcome": outcome,
                "delay_ms": delay_ms,
                "error": error.kind.value if error is not None else None,
            },
        )
        return outcome

    def backoff(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter after the `attempts`-th failed attempt."""
        base = self.settings.events_backoff_base_seconds
        ceiling = self.settings.events_backoff_max_seconds
        delay = min(ceiling, base * 2 ** min(attempts - 1, 30))
        return timedelta(seconds=delay * (0.5 + 0.5 * self.rng()))

    async def _send(self, claimed: Claimed) -> str:
        if claimed.target_kind == "subscription":
            return await self._notify_subscriber(claimed)
        if claimed.target_kind == "receiver":
            return await self._forward(claimed)
        if claimed.target_kind == "adapter":
            return await self._hand_to_adapter(claimed)
        raise AdapterError(
            FailureKind.UNSUPPORTED, f"unknown target kind {claimed.target_kind!r}", retryable=False
        )

    async def _event_resources(
        self, event: EventRow
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The Patient and Encounter versions the event's message left (history rows, which
        never change: cached)."""
        wanted = [("Patient", event.patient_id, event.patient_version)]
        if event.encounter_id is not None and event.encounter_version is not None:
            wanted.append(("Encounter", event.encounter_id, event.encounter_version))
        missing = [key for key in wanted if key not in self._versions]
        if missing:
            async with self.db.read() as conn:
                for rtype, rid, version in missing:
                    content = await conn.scalar(
                        _VERSION, {"rtype": rtype, "rid": rid, "version": version}
                    )
                    if content is None:
                        raise AdapterError(
                            FailureKind.MALFORMED,
                            f"the event's {rtype} version is no longer stored",
                            retryable=False,
                        )
                    if len(self._versions) >= _CACHED_VERSIONS:
                        self._versions.pop(next(iter(self._versions)))
                    self._versions[(rtype, rid, version)] = orjson.loads(content)
        found = [self._versions[key] for key in wanted]
        return found[0], (found[1] if len(found) > 1 else None)

    async def _notify_subscriber(self, claimed: Claimed) -> str:
        event = claimed.event
        try:
            stored = await self.repo.read("Subscription", claimed.target_id)
        except (NotFound, Gone):
            raise AdapterError(
                FailureKind.UNSUPPORTED, "the subscription was deleted", retryable=False
            ) from None
        cached = self._specs.get(claimed.target_id)
        if cached is None or cached[0] != stored.version:
            body = orjson.loads(stored.content or b"{}")
            try:
                parsed: SubscriptionSpec | None = parse_subscription(body, self.fhir_base)
            except FhirError:
                parsed = None
            cached = (stored.version, parsed, str(body.get("status"))[:20])
            self._specs[claimed.target_id] = cached
        _, spec, status = cached
        if status != "active":
            raise AdapterError(
                FailureKind.UNSUPPORTED,
                f"the subscription is no longer active (status {status})",
                retryable=False,
            )
        if spec is None:
            raise AdapterError(
                FailureKind.UNSUPPORTED, "the subscription cannot be served", retryable=False
            )
        if event.encounter_id is not None:
            focus = ("Encounter", event.encounter_id)
            context = [("Patient", event.patient_id)]
        else:
            focus = ("Patient", event.patient_id)
            context = []
        resources: dict[tuple[str, str], dict[str, Any]] = {}
        if spec.content == "full-resource":
            patient, encounter = await self._event_resources(event)
            resources[("Patient", event.patient_id)] = patient
            if encounter is not None and event.encounter_id is not None:
                resources[("Encounter", event.encounter_id)] = encounter
        bundle = notification_bundle(
            spec,
            fhir_base=self.fhir_base,
            bundle_id=claimed.idempotency_key,
            event_number=claimed.event_number or 0,
            timestamp=self.clock(),
            focus=focus,
            context=context,
            resources=resources,
        )
        headers = [
            *spec.headers,
            ("Content-Type", spec.mime),
            ("Idempotency-Key", claimed.idempotency_key),
        ]
        return await post_json(
            self.http,
            spec.endpoint,
            bundle,
            headers=headers,
            timeout=self.settings.events_timeout_seconds,
            allow_http=self.settings.events_allow_http,
        )

    async def _adt_event(self, event: EventRow, *, with_message: bool) -> AdtEvent:
        patient, encounter = await self._event_resources(event)
        message = None
        if with_message and event.journal_id is not None:
            async with self.db.read() as conn:
                message = await conn.scalar(
                    select(hl7_message.c.raw).where(hl7_message.c.id == event.journal_id)
                )
        return AdtEvent(
            id=event.event_key,
            trigger=event.trigger,
            kind=event.kind,
            occurred_at=aware(event.occurred_at or event.received_at),
            patient=patient,
            encounter=encounter,
            message=bytes(message) if message is not None else None,
            sender=event.sender,
        )

    async def _forward(self, claimed: Claimed) -> str:
        async with self.db.read() as conn:
            receiver = (
                await conn.execute(select(event_receiver).where(_r.name == claimed.target_id))
            ).first()
        if receiver is None or not receiver.active:
            raise AdapterError(
                FailureKind.UNSUPPORTED, "the receiver was removed or disabled", retryable=False
            )
        timeout = self.settings.events_timeout_seconds
        if receiver.channel == "hl7v2-mllp":
            event = await self._adt_event(claimed.event, with_message=True)
            if event.message is None:
                raise AdapterError(
                    FailureKind.MALFORMED, "the original message is not stored", retryable=False
                )
            try:
                client = MllpClient(receiver.endpoint, connect_timeout=timeout, ack_timeout=timeout)
            except ValueError as exc:
                raise AdapterError(
                    FailureKind.UNSUPPORTED, str(exc), endpoint=receiver.name, retryable=False
                ) from None
            receipt = await client.deliver(event.message)
            return receipt.detail
        if receiver.channel == "fhir-message":
            event = await self._adt_event(claimed.event, with_message=False)
            bundle = build_notification_bundle(
                event,
                fhir_base=self.fhir_base,
                destination=receiver.endpoint,
                destination_name=receiver.name,
                timestamp=self.clock(),
            )
            extra = [tuple(line.split(":", 1)) for line in orjson.loads(receiver.headers)]
            headers = [
                *[(name.strip(), value.strip()) for name, value in extra],
                ("Content-Type", "application/fhir+json"),
                ("Idempotency-Key", claimed.idempotency_key),
            ]
            return await post_json(
                self.http,
                receiver.endpoint,
                bundle,
                headers=headers,
                timeout=timeout,
                allow_http=self.settings.events_allow_http,
                message=True,
            )
        raise AdapterError(
            FailureKind.UNSUPPORTED, f"unknown channel {receiver.channel!r}", retryable=False
        )

    async def _hand_to_adapter(self, claimed: Claimed) -> str:
        adapters = await self._event_adapters() or []
        adapter = next((a for a in adapters if a.name == claimed.target_id), None)
        if adapter is None:
            raise AdapterError(
                FailureKind.UNSUPPORTED,
                "the intermediary is no longer registered for events",
                retryable=False,
            )
        event = await self._adt_event(claimed.event, with_message=True)
        receipt = await adapter.deliver(event)
        if not receipt.accepted:
            raise AdapterError(
                FailureKind.OUTCOME,
                f"not accepted ({receipt.detail[:80]})",
                endpoint=adapter.name,
                retryable=True,
            )
        return receipt.detail or "accepted"

    # ---- subscription handshakes ----------------------------------------------------------------

    async def activate(self) -> int:
        """Handshake every `requested` subscription; returns how many became active."""
        async with self.db.read() as conn:
            await self._subs.load(conn)
        activated = 0
        for rid, version, body in self._subs.requested():
            error = None
            try:
                spec = parse_subscription(body, self.fhir_base)
                check_endpoint(spec.endpoint, allow_http=self.settings.events_allow_http)
                handshake = notification_bundle(
                    spec,
                    fhir_base=self.fhir_base,
                    bundle_id=str(uuid.uuid4()),
                    kind="handshake",
                    status="requested",
                    timestamp=self.clock(),
                )
                await post_json(
                    self.http,
                    spec.endpoint,
                    handshake,
                    headers=[*spec.headers, ("Content-Type", spec.mime)],
                    timeout=self.settings.events_timeout_seconds,
                    allow_http=self.settings.events_allow_http,
                )
            except AdapterError as exc:
                error = f"handshake failed: {exc}"
            except FhirError as exc:
                error = f"handshake not attempted: {exc}"
            updated = {k: v for k, v in body.items() if k != "error"}
            updated["status"] = "error" if error else "active"
            if error:
                updated["error"] = error[:500]
            try:
                await self.repo.update("Subscription", rid, updated, if_match=version)
            except (PreconditionFailed, NotFound, Gone):
                continue  # the client changed or removed it meanwhile: look again next time
            except FhirError as exc:
                log.error("subscription status not recorded", extra={"error": type(exc).__name__})
                continue
            log.info(
                "subscription handshake",
                extra={"outcome": updated["status"], "target": "subscription"},
            )
            activated += error is None
        return activated


def _expired(end: str | None, now: datetime) -> bool:
    if not end:
        return False
    try:
        moment = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        return False
    return moment <= aware(now)
