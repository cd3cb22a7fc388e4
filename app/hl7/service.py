"""HL7v2 ingestion: journal -> map -> one repository transaction -> ACK.

The sequence for every message, whatever the transport (MLLP, POST /hl7v2, files):

1. tokenise and check the header (MSH-9 type and event, MSH-10, MSH-11, MSH-12);
2. journal (app.hl7.journal): commit the raw bytes first. An identical resend (same sender,
   MSH-10 and bytes) gets the stored ACK back and changes nothing; the same sender and MSH-10
   with other bytes is kept apart (status `conflict`) and answered AE/CE 205;
3. map and write: each resource gets `meta.profile` for the US Core 6.1.0 profiles it meets
   (app.fhir.uscore.stamp_profiles); the resources, their index rows, the ADT event's outbox
   row (app/events/outbox.py) and the journal row's move to `processed` (with the ACK) commit
   in ONE transaction through FhirRepository/WriteSession with a full-access system policy;
   the event dispatcher is told after the commit;
4. a mapping error rolls that back and commits the row as `error` with the reason: AE;
5. answer. A database failure before the journal commit answers AR (nothing is stored; the
   sender must resend). Only then is the ACK returned to the transport.

Messages handed in at the same moment are committed as a group (`_drain`): one transaction
journals them all (step 2), a second maps and writes them (steps 3-4) with a SAVEPOINT per
message, so a failing message rolls back only its own work and is journaled as error in that
transaction. Each message's answer still waits for the commit holding its outcome.

Logs carry the journal id, sender (MSH-3|MSH-4 names), control id, type, ACK code and a count;
never field values.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.auth.policy import AccessPolicy, ScopeGrant
from app.db import Database
from app.errors import FhirError, Gone, NotFound
from app.events.outbox import EventRecorder
from app.fhir.uscore import stamp_profiles
from app.hl7 import journal
from app.hl7.ack import build_ack, plan_ack
from app.hl7.mapping import MapContext, provenance, supported
from app.hl7.mapping.datatypes import IdentitySettings
from app.hl7.parse import Hl7Error, Message, parse_message
from app.settings import Settings
from app.store.base import format_instant, utc_now_ms
from app.store.repository import FhirRepository, WriteSession
from app.store.tables import spidx_reference

__all__ = ["Hl7Result", "Hl7Service", "SYSTEM_POLICY"]

log = logging.getLogger("dxf.hl7")

SYSTEM_POLICY = AccessPolicy(grants=(ScopeGrant("system", "*", frozenset("cruds")),))
_VERSION = re.compile(r"^2\.[1-9](\.[0-9A-Za-z]{1,3})?$")
_RETRIES = 5
_BATCH = 64  # most messages one group commit takes
_PG_GROUPS = 4  # groups processed at once on PostgreSQL (see Hl7Service.__init__)
# every (sender, control id) lock of a group in one statement, in key order (no deadlocks)
_LOCK_MANY = text(
    "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS BIGINT[])) AS k ORDER BY k"
)
_OUTAGE_NAMES = ("OperationalError", "InterfaceError", "ConnectionError", "PostgresConnectionError")


@dataclass(frozen=True, slots=True)
class Hl7Result:
    ack: str  # the ACK as ER7 text
    ack_bytes: bytes  # encoded in the message's character set
    code: str  # AA AE AR CA CE CR
    send: bool  # False when MSH-15/16 ask for no answer to this outcome
    journal_id: int | None
    duplicate: bool = False
    status: str = ""


@dataclass(slots=True)
class _Pending:
    """A message handed in and waiting for its group (see Hl7Service._drain)."""

    raw: bytes
    transport: str
    msg: Message | None
    problem: Hl7Error | None
    sender: str
    control_id: str
    digest: str
    future: asyncio.Future[Hl7Result] | None = None

    def values(self, now: datetime) -> dict[str, Any]:
        msg = self.msg
        return {
            "received_at": now,
            "transport": self.transport,
            "sender": self.sender[:512],
            "control_id": self.control_id,
            "sha256": self.digest,
            "message_type": (msg.message_type if msg is not None else "")[:40],
            "version": (msg.version if msg is not None else "")[:20],
            "raw": self.raw,
        }


def _answer_with(item: _Pending, result: Hl7Result) -> None:
    if item.future is not None and not item.future.done():
        item.future.set_result(result)


def _lock_key(resource_type: str, resource_id: str) -> int:
    digest = hashlib.sha256(f"{resource_type}/{resource_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _is_conflict(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40001", "40P01")


def _is_outage(exc: BaseException) -> bool:
    return any(type(e).__name__ in _OUTAGE_NAMES for e in (exc, exc.__cause__) if e is not None)


class Hl7Service:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now_ms,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.repo = FhirRepository(
            db, policy=SYSTEM_POLICY, base_url=settings.fhir_base_url, clock=clock
        )
        self.events: EventRecorder | None = (
            EventRecorder(settings.base_url) if settings.events_enabled else None
        )
        self.ident = IdentitySettings(
            systems=dict(settings.hl7_identifier_systems),
            system_prefix=settings.hl7_identifier_system_prefix,
            zone=settings.hl7_default_timezone,
        )
        self._queue: list[_Pending] = []
        self._drainers: set[asyncio.Task[None]] = set()
        # groups in flight at once: SQLite has one writer anyway; on PostgreSQL the server's
        # round trips of one group overlap the mapping of another
        self._max_groups = 1 if db.is_sqlite else _PG_GROUPS
        self._in_flight: set[tuple[str, str]] = set()  # (sender, control id) of groups in flight
        self._draining = 0  # _drain tasks started and not yet returned

    # ---- entry point ---------------------------------------------------------------------------

    async def handle(self, raw: bytes, transport: str) -> Hl7Result:
        """Ingest one message and return its answer, once its outcome is committed.

        Messages handed in at the same moment (from several connections) are committed in
        groups: see `_drain`. A caller that waits for each answer before handing in its next
        message (an MLLP connection does) keeps its messages in order."""
        item = self._prepare(raw, transport)
        loop = asyncio.get_running_loop()
        item.future = loop.create_future()
        self._queue.append(item)
        if self._draining < self._max_groups:
            # counted here and uncounted by _drain itself as it returns (not by a done
            # callback, which runs later): a caller handing in its next message right after
            # its answer must not find a task counted that has already stopped taking work
            self._draining += 1
            task = loop.create_task(self._drain())
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        return await item.future

    async def idle(self) -> None:
        """Wait until every message handed in so far is answered (used at shutdown)."""
        while self._drainers:
            await asyncio.wait(set(self._drainers))

    def _prepare(self, raw: bytes, transport: str) -> _Pending:
        msg: Message | None = None
        problem: Hl7Error | None = None
        try:
            msg = parse_message(raw, default_codec=self.settings.hl7_default_charset)
            problem = check_header(msg)
        except Hl7Error as exc:
            problem = exc
        sender = msg.sender if msg is not None else "|"
        control_id = (msg.control_id if msg is not None else "")[:200]
        digest = hashlib.sha256(raw).hexdigest()
        return _Pending(raw, transport, msg, problem, sender, control_id, digest)

    async def _handle_alone(self, item: _Pending) -> Hl7Result:
        """One message in transactions of its own: journal, then map and write."""
        try:
            return await self._journal_and_process(
                item.raw,
                item.transport,
                item.msg,
                item.problem,
                item.sender,
                item.control_id,
                item.digest,
            )
        except Exception as exc:  # noqa: BLE001 - the transport must always get an answer
            return self._not_stored(item, exc)

    def _not_stored(self, item: _Pending, exc: BaseException) -> Hl7Result:
        outage = _is_outage(exc)
        log.error(
            "hl7 message not journaled" if outage else "hl7 message failed",
            extra={
                "error": type(exc).__name__,
                "control_id": item.control_id,
                "transport": item.transport,
            },
        )
        failure = Hl7Error(
            "the receiver could not store the message; resend it later",
            code="207",
            reject=True,
        )
        return self._answer(item.msg, "reject", failure, None)

    # ---- group commit ---------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Take what is queued (up to _BATCH messages) as one group, answer it, repeat until
        the queue is empty. A group is journaled in one transaction and processed in a second
        one, with a savepoint per message; so at load two commits serve many messages, and at
        low load a message waits for nothing but the group in progress. Two messages with one
        sender and control id are never in flight together: the later one waits for a later
        group, where it finds the earlier one's outcome (a duplicate or a conflict). On
        PostgreSQL up to _PG_GROUPS tasks run this at once, each with its own groups."""
        try:
            while self._queue:
                group: list[_Pending] = []
                keys: set[tuple[str, str]] = set()
                rest: list[_Pending] = []
                for item in self._queue:
                    key = (item.sender[:512], item.control_id)
                    if len(group) < _BATCH and key not in keys and key not in self._in_flight:
                        keys.add(key)
                        group.append(item)
                    else:
                        rest.append(item)
                self._queue = rest
                if not group:
                    # each waiting message shares a control id with a group in flight: the
                    # task running that group takes it next
                    return
                self._in_flight |= keys
                try:
                    await self._run_group(group)
                except Exception as exc:  # noqa: BLE001 - every caller must get an answer
                    for item in group:
                        _answer_with(item, self._not_stored(item, exc))
                finally:
                    self._in_flight -= keys
        finally:
            self._draining -= 1

    async def _run_group(self, group: list[_Pending]) -> None:
        if len(group) == 1:
            _answer_with(group[0], await self._handle_alone(group[0]))
            return
        try:
            decided, todo = await self._journal_group(group)
        except Exception:  # noqa: BLE001 - nothing of the group was committed
            for item in group:
                _answer_with(item, await self._handle_alone(item))
            return
        for item, result in decided:
            _answer_with(item, result)
        if not todo:
            return
        try:
            done = await self._process_group(todo)
        except Exception:  # noqa: BLE001 - nothing of the processing was committed
            # the journal rows are committed: process each message alone, as before
            for item, entry_id, received_at in todo:
                assert item.msg is not None
                try:
                    result = await self.process(
                        entry_id, item.msg, item.transport, received_at=received_at
                    )
                except Exception as exc:  # noqa: BLE001
                    result = self._not_stored(item, exc)
                _answer_with(item, result)
            return
        for item, result in done:
            _answer_with(item, result)

    async def _journal_group(
        self, group: list[_Pending]
    ) -> tuple[list[tuple[_Pending, Hl7Result]], list[tuple[_Pending, int, datetime]]]:
        """Journal a group in one transaction: (answers decided by the journal alone, messages
        to process with their journal ids). Answers are returned only after the commit."""
        decided: list[tuple[_Pending, Hl7Result]] = []
        todo: list[tuple[_Pending, int, datetime]] = []
        logs: list[tuple[int, _Pending, Hl7Result]] = []
        now = self.clock()
        async with self.db.write() as conn:
            if not self.db.is_sqlite:
                keys = sorted(
                    {_lock_key("hl7_message", f"{i.sender[:512]}|{i.control_id}") for i in group}
                )
                await conn.execute(_LOCK_MANY, {"keys": keys})
            for item in group:
                values = item.values(now)
                earlier = await journal.find_same_control_id(
                    conn, values["sender"], item.control_id
                )
                same = next((e for e in earlier if e.sha256 == item.digest), None)
                if same is not None and same.status != "received" and same.ack:
                    decided.append((item, self._replay(same, item.msg)))
                elif same is not None:
                    todo.append((item, same.id, same.received_at))
                elif earlier and item.control_id:
                    problem = Hl7Error(
                        "MSH-10 was already used by this sender for a different message",
                        code="205",
                        location=("MSH", 1, 10, 1),
                    )
                    result = self._answer(item.msg, "error", problem, None)
                    entry_id = await journal.insert_entry(
                        conn,
                        **values,
                        status="conflict",
                        ack=result.ack,
                        ack_code=result.code,
                        error_code=problem.code,
                        error=problem.reason,
                    )
                    decided.append((item, _with_id(result, entry_id, "conflict")))
                    logs.append((entry_id, item, result))
                elif item.problem is not None:
                    problem = item.problem
                    outcome = "reject" if problem.reject else "error"
                    result = self._answer(item.msg, outcome, problem, None)
                    entry_id = await journal.insert_entry(
                        conn,
                        **values,
                        status="rejected",
                        ack=result.ack,
                        ack_code=result.code,
                        error_code=problem.code,
                        error=problem.reason,
                    )
                    decided.append((item, _with_id(result, entry_id, "rejected")))
                    logs.append((entry_id, item, result))
                else:
                    entry_id = await journal.insert_entry(conn, **values, status="received")
                    todo.append((item, entry_id, now))
        for entry_id, item, result in logs:
            self._log(entry_id, item.msg, result, 0, item.transport)
        return decided, todo

    async def _process_group(
        self, todo: list[tuple[_Pending, int, datetime]]
    ) -> list[tuple[_Pending, Hl7Result]]:
        """Map and write a group's messages in one transaction, each under a savepoint: a
        message that fails rolls back its own savepoint only and is journaled as `error` in
        the same transaction. A database failure (an outage, a deadlock) fails the whole
        transaction, which then commits nothing."""
        done: list[tuple[_Pending, Hl7Result, int, int]] = []
        async with self.repo.transaction() as tx:
            for item, entry_id, received_at in todo:
                msg = item.msg
                assert msg is not None
                try:
                    async with tx.conn.begin_nested():
                        result, written, events = await self._map_and_write(
                            tx, entry_id, msg, received_at=received_at
                        )
                except Exception as exc:
                    problem = self._mapping_problem(exc, entry_id)
                    result = self._answer(
                        msg, "reject" if problem.reject else "error", problem, entry_id
                    )
                    await journal.set_outcome(
                        tx.conn,
                        entry_id,
                        status="error",
                        ack=result.ack,
                        ack_code=result.code,
                        error_code=problem.code,
                        error=problem.reason,
                        processed_at=self.clock(),
                    )
                    done.append((item, _with_id(result, entry_id, "error"), 0, 0))
                    continue
                done.append((item, _with_id(result, entry_id, "processed"), written, events))
        if self.events is not None and any(events for *_, events in done):
            self.events.committed()
        for item, result, written, _events in done:
            self._log(result.journal_id or 0, item.msg, result, written, item.transport)
        return [(item, result) for item, result, *_ in done]

    def _mapping_problem(self, exc: Exception, entry_id: int) -> Hl7Error:
        """What a failure while mapping a message tells its sender; a database failure is
        raised again (it is not the message's fault)."""
        if isinstance(exc, Hl7Error):
            return exc
        if isinstance(exc, FhirError):
            first = exc.issues[0].diagnostics if exc.issues else str(exc)
            return Hl7Error(f"the mapped resources are not valid FHIR: {first}"[:400], code="207")
        if _is_outage(exc) or _is_conflict(exc):
            raise exc
        log.error(
            "hl7 mapping failed unexpectedly",
            extra={"error": type(exc).__name__, "journal_id": entry_id},
        )
        return Hl7Error("internal error while mapping the message", code="207")

    async def _journal_and_process(
        self,
        raw: bytes,
        transport: str,
        msg: Message | None,
        problem: Hl7Error | None,
        sender: str,
        control_id: str,
        digest: str,
    ) -> Hl7Result:
        now = self.clock()
        values = {
            "received_at": now,
            "transport": transport,
            "sender": sender[:512],
            "control_id": control_id,
            "sha256": digest,
            "message_type": (msg.message_type if msg is not None else "")[:40],
            "version": (msg.version if msg is not None else "")[:20],
            "raw": raw,
        }
        try:
            async with self.db.write() as conn:
                if not self.db.is_sqlite:
                    # one journal decision at a time per (sender, control id): two different
                    # messages reusing an id at once must still be seen as a conflict
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": _lock_key("hl7_message", f"{values['sender']}|{control_id}")},
                    )
                earlier = await journal.find_same_control_id(conn, values["sender"], control_id)
                same = next((e for e in earlier if e.sha256 == digest), None)
                if same is not None and same.status != "received" and same.ack:
                    return self._replay(same, msg)
                received_at = values["received_at"]
                if same is not None:
                    entry_id = same.id
                    received_at = same.received_at
                elif earlier and control_id:
                    problem = Hl7Error(
                        "MSH-10 was already used by this sender for a different message",
                        code="205",
                        location=("MSH", 1, 10, 1),
                    )
                    result = self._answer(msg, "error", problem, None)
                    entry_id = await journal.insert_entry(
                        conn,
                        **values,
                        status="conflict",
                        ack=result.ack,
                        ack_code=result.code,
                        error_code=problem.code,
                        error=problem.reason,
                    )
                    self._log(entry_id, msg, result, 0, transport)
                    return _with_id(result, entry_id, "conflict")
                elif problem is not None:
                    outcome = "reject" if problem.reject else "error"
                    result = self._answer(msg, outcome, problem, None)
                    entry_id = await journal.insert_entry(
                        conn,
                        **values,
                        status="rejected",
                        ack=result.ack,
                        ack_code=result.code,
                        error_code=problem.code,
                        error=problem.reason,
                    )
                    self._log(entry_id, msg, result, 0, transport)
                    return _with_id(result, entry_id, "rejected")
                else:
                    entry_id = await journal.insert_entry(conn, **values, status="received")
        except IntegrityError:
            # an identical message is being journaled by another connection right now
            async with self.db.read() as conn:
                earlier = await journal.find_same_control_id(conn, values["sender"], control_id)
            same = next((e for e in earlier if e.sha256 == digest), None)
            if same is not None and same.ack:
                return self._replay(same, msg)
            busy = Hl7Error(
                "the same message is being processed on another connection; resend it later",
                code="206",
                reject=True,
            )
            return self._answer(msg, "reject", busy, None)
        assert msg is not None
        return await self.process(entry_id, msg, transport, received_at=received_at)

    # ---- processing -----------------------------------------------------------------------------

    async def process(
        self,
        entry_id: int,
        msg: Message,
        transport: str,
        *,
        received_at: datetime | None = None,
    ) -> Hl7Result:
        """Map a journaled message and commit its resources with the journal row's outcome.
        A deadlock or serialization failure between two messages for the same resources is
        retried (PostgreSQL picks a victim; nothing of it was committed)."""
        for attempt in range(_RETRIES):
            try:
                return await self._process_once(entry_id, msg, transport, received_at)
            except DBAPIError as exc:
                code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
                if code not in ("40001", "40P01") or attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _process_once(
        self, entry_id: int, msg: Message, transport: str, received_at: datetime | None
    ) -> Hl7Result:
        try:
            async with self.repo.transaction() as tx:
                result, written, events = await self._map_and_write(
                    tx, entry_id, msg, received_at=received_at
                )
        except Exception as exc:
            return await self._failed(
                entry_id, msg, self._mapping_problem(exc, entry_id), transport
            )
        if events and self.events is not None:
            self.events.committed()
        self._log(entry_id, msg, result, written, transport)
        return _with_id(result, entry_id, "processed")

    async def _map_and_write(
        self,
        tx: WriteSession,
        entry_id: int,
        msg: Message,
        *,
        received_at: datetime | None = None,
    ) -> tuple[Hl7Result, int, int]:
        """Map the message and write its resources, events and journal outcome inside `tx`:
        (the AA answer, resources written, events recorded)."""
        mapper = supported(msg.message_code, msg.trigger_event)
        assert mapper is not None
        seen: dict[tuple[str, str], dict[str, Any] | None] = {}

        async def lookup(rtype: str, rid: str) -> dict[str, Any] | None:
            """The stored resource (read once per message, under its lock)."""
            if (rtype, rid) in seen:
                return seen[(rtype, rid)]
            if not self.db.is_sqlite:
                # a transaction-scoped lock on the resource's key, taken whether or not
                # it exists yet: a concurrent message for the same resource waits, so
                # neither merges over (or races to create) what the other writes.
                # (SQLite writers are serialised already, see app.db.)
                await tx.conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": _lock_key(rtype, rid)},
                )
            try:
                stored = await tx.read(rtype, rid)
                found = orjson.loads(stored.content) if stored.content else None
            except (NotFound, Gone):
                found = None
            seen[(rtype, rid)] = found
            return found

        async def referrers(rtype: str, rid: str) -> list[tuple[str, str]]:
            s = spidx_reference.c
            rows = await tx.conn.execute(
                select(s.res_type, s.res_id)
                .where(s.target_type == rtype, s.target_id == rid)
                .distinct()
                .order_by(s.res_type, s.res_id)
            )
            return [(r.res_type, r.res_id) for r in rows]

        ctx = MapContext(msg, self.ident, lookup, referrers)
        await mapper(ctx)
        provenance(
            ctx,
            f"{msg.sender}|{msg.control_id}|{entry_id}",
            entry_id,
            format_instant(tx.now),
        )
        written = 0
        versions: dict[tuple[str, str], int] = {}
        for (rtype, rid), body in ctx.out.items():
            stamp_profiles(body)
            stored = await lookup(rtype, rid)
            if stored is not None and _same(stored, body):
                version = (stored.get("meta") or {}).get("versionId")
                if isinstance(version, str) and version.isdigit():
                    versions[(rtype, rid)] = int(version)
                continue
            done = await tx.update(rtype, rid, body)
            versions[(rtype, rid)] = done.resource.version
            written += 1
        events = 0
        if self.events is not None:
            # the outbox rows commit with the resources and the journal outcome
            events = await self.events.record(
                tx,
                entry_id,
                ctx,
                received_at=received_at,
                versions=versions,
            )
        result = self._answer(msg, "ok", None, entry_id)
        await journal.set_outcome(
            tx.conn,
            entry_id,
            status="processed",
            ack=result.ack,
            ack_code=result.code,
            error_code=None,
            error=None,
            resources=orjson.dumps([f"{t}/{i}" for t, i in ctx.out]).decode(),
            processed_at=tx.now,
        )
        return result, written, events

    async def _failed(
        self, entry_id: int, msg: Message, problem: Hl7Error, transport: str
    ) -> Hl7Result:
        result = self._answer(msg, "reject" if problem.reject else "error", problem, entry_id)
        async with self.db.write() as conn:
            await journal.set_outcome(
                conn,
                entry_id,
                status="error",
                ack=result.ack,
                ack_code=result.code,
                error_code=problem.code,
                error=problem.reason,
                processed_at=self.clock(),
            )
        self._log(entry_id, msg, result, 0, transport)
        return _with_id(result, entry_id, "error")

    async def reprocess(self, entry_id: int) -> Hl7Result | None:
        """Map a journaled message again (after a mapping fix). None if there is no such row
        or it was never a message we take (rejected/conflict)."""
        async with self.db.read() as conn:
            entry = await journal.get(conn, entry_id)
        if entry is None or entry.status in ("rejected", "conflict"):
            return None
        msg = parse_message(entry.raw, default_codec=self.settings.hl7_default_charset)
        return await self.process(entry_id, msg, "reprocess")

    # ---- answers --------------------------------------------------------------------------------

    def _answer(
        self, msg: Message | None, outcome: str, problem: Hl7Error | None, entry_id: int | None
    ) -> Hl7Result:
        plan = plan_ack(msg, outcome)
        if msg is not None and msg.message_code == "ACK":
            plan = type(plan)(plan.code, False)  # never acknowledge an acknowledgement
        text = build_ack(
            msg,
            plan.code,
            now=datetime.now(UTC),
            application=self.settings.hl7_application,
            facility=self.settings.hl7_facility,
            error=problem,
        )
        return Hl7Result(text, _encode(text, msg), plan.code, plan.send, entry_id)

    def _replay(self, entry: journal.JournalEntry, msg: Message | None) -> Hl7Result:
        assert entry.ack is not None
        send = plan_ack(msg, "ok" if entry.ack_code in ("AA", "CA") else "error").send
        if msg is not None and msg.message_code == "ACK":
            send = False
        log.info(
            "hl7 duplicate",
            extra={
                "journal_id": entry.id,
                "control_id": entry.control_id,
                "ack_code": entry.ack_code,
            },
        )
        return Hl7Result(
            entry.ack,
            _encode(entry.ack, msg),
            entry.ack_code or "",
            send,
            entry.id,
            duplicate=True,
            status=entry.status,
        )

    def _log(
        self, entry_id: int, msg: Message | None, result: Hl7Result, written: int, transport: str
    ) -> None:
        log.info(
            "hl7 message",
            extra={
                "journal_id": entry_id,
                "sender": msg.sender if msg is not None else "",
                "control_id": msg.control_id if msg is not None else "",
                "message_type": msg.message_type if msg is not None else "",
                "ack_code": result.code,
                "resources": written,
                "transport": transport,
            },
        )


def check_header(msg: Message) -> Hl7Error | None:
    """MSH checks that decide whether we take the message at all (HL7 v2.5.1 2.9.2)."""
    msh = msg.msh
    if not msg.message_code:
        return Hl7Error("MSH-9 (message type) is required", code="101", location=("MSH", 1, 9, 1))
    if not msg.control_id:
        return Hl7Error(
            "MSH-10 (message control id) is required", code="101", location=("MSH", 1, 10, 1)
        )
    processing = msh.c(11).upper()
    # an empty MSH-11 is taken as P: many real feeds (and the IG's samples) leave it out
    if processing and processing not in ("P", "T", "D"):
        return Hl7Error(
            "MSH-11 processing id must be P, T or D",
            code="202",
            reject=True,
            location=("MSH", 1, 11, 1),
        )
    if not msg.version:
        return Hl7Error("MSH-12 (version id) is required", code="101", location=("MSH", 1, 12, 1))
    if not _VERSION.match(msg.version):
        return Hl7Error(
            "MSH-12 names an HL7 version this receiver does not take (2.1 to 2.8.x)",
            code="203",
            reject=True,
            location=("MSH", 1, 12, 1),
        )
    if msg.message_code == "ACK":
        return Hl7Error("acknowledgements are not ingested", code="200", reject=True)
    if supported(msg.message_code, msg.trigger_event) is None:
        known_type = msg.message_code in ("ADT", "ORU", "RDE", "VXU")
        return Hl7Error(
            f"{'event' if known_type else 'message type'} "
            f"{(msg.trigger_event if known_type else msg.message_code)[:10]!r} is not supported "
            "(ADT A01-A08, A11-A13, A28, A31, A40; ORU^R01; RDE^O11; VXU^V04)",
            code="201" if known_type else "200",
            reject=True,
            location=("MSH", 1, 9, 2 if known_type else 1),
        )
    return None


def _same(stored: dict[str, Any], body: dict[str, Any]) -> bool:
    a = {k: v for k, v in stored.items() if k not in ("meta", "text")}
    b = {k: v for k, v in body.items() if k not in ("meta", "text")}
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS
    )


def _encode(text: str, msg: Message | None) -> bytes:
    codec = msg.codec if msg is not None else "utf-8"
    try:
        return text.encode(codec, errors="replace")
    except LookupError:
        return text.encode("utf-8", errors="replace")


def _with_id(result: Hl7Result, entry_id: int, status: str) -> Hl7Result:
    return Hl7Result(
        result.ack, result.ack_bytes, result.code, result.send, entry_id, result.duplicate, status
    )
