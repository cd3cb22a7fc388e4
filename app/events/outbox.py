"""The transactional outbox: ADT events recorded in the same transaction as the message's
resources (the "transactional outbox" pattern; ../shared/reference/reliability.md, at-least-once
delivery from a durable queue).

`EventRecorder.record` runs inside Hl7Service's repository transaction, after the resources are
written and before the journal row moves to `processed`: one `event_outbox` row per ADT subject
(one per message; one per PID/MRG pair of an A40). So either the resources, the journal outcome
and the events commit together, or none does: a mapping failure leaves no event, and an event
committed before a crash is still there after a restart, waiting for the dispatcher.

The row names the Patient and Encounter *versions* this message left, so a notification carries
the resources as they were at the event, not as a later message changed them. Its key is a
name-based UUID of the deployment's base URL, the journal id and the subject's position: a
reprocessed message finds its event already recorded and records nothing new.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select

from app.db import Prepared
from app.errors import NotFound
from app.events.topic import kind_of
from app.hl7.mapping.common import MapContext
from app.store import statements as q
from app.store.tables import event_outbox, hl7_message
from app.store.writes import WriteSession

__all__ = ["EventRecorder", "event_key"]

_NAMESPACE = uuid.UUID("0b7e3c1a-6a55-4c1f-9d38-2f0d7f1a9e42")
_COLUMNS = [
    "event_key",
    "journal_id",
    "trigger",
    "kind",
    "patient_id",
    "patient_version",
    "encounter_id",
    "encounter_version",
    "other_patient_id",
    "sender",
    "occurred_at",
    "received_at",
    "created_at",
    "routed",
    "routed_at",
]
# Built once (app.db.Prepared): every ADT message runs them.
_RECEIVED = Prepared(
    select(hl7_message.c.received_at).where(hl7_message.c.id == bindparam("journal_id"))
)
_SEEN = Prepared(select(event_outbox.c.id).where(event_outbox.c.event_key == bindparam("key")))
_INSERT = Prepared(insert(event_outbox), _COLUMNS)


def event_key(base_url: str, journal_id: int, position: int) -> str:
    """The idempotency key of the `position`-th event of journal entry `journal_id`."""
    return str(uuid.uuid5(_NAMESPACE, f"{base_url}|hl7v2|{journal_id}|{position}"))


class EventRecorder:
    """Writes outbox rows inside the ingestion transaction; tells listeners after commit."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.listeners: list[Callable[[], None]] = []

    async def record(
        self,
        tx: WriteSession,
        journal_id: int,
        ctx: MapContext,
        *,
        received_at: datetime | None = None,
        versions: dict[tuple[str, str], int] | None = None,
    ) -> int:
        """Record the message's events (none for a non-event trigger); returns how many rows
        were added. Must run inside the transaction that writes the message's resources.

        What the caller already knows saves a query each: `received_at` (the journal row's)
        and `versions` (the version this transaction leaves each resource at). Whether an
        event is recorded already is always asked: the same journal row can be processed by
        two connections at once (an identical message resent while the first is in flight)."""
        msg = ctx.msg
        if msg.message_code != "ADT" or not ctx.adt_subjects:
            return 0
        trigger = msg.trigger_event
        kind = kind_of(trigger)
        if kind is None:
            return 0
        received = received_at
        if received is None:
            received = await tx.conn.scalar(_RECEIVED, {"journal_id": journal_id})
        known = versions or {}
        occurred: datetime | None = ctx.event.instant if ctx.event is not None else None
        added = 0
        for position, (patient_id, encounter_id, other_id) in enumerate(ctx.adt_subjects):
            key = event_key(self.base_url, journal_id, position)
            if await tx.conn.scalar(_SEEN, {"key": key}) is not None:
                continue  # reprocessed: this event is recorded already
            row: dict[str, Any] = {
                "event_key": key,
                "journal_id": journal_id,
                "trigger": trigger[:8],
                "kind": kind,
                "patient_id": patient_id,
                "patient_version": known.get(("Patient", patient_id))
                or await _version(tx, "Patient", patient_id),
                "encounter_id": encounter_id,
                "encounter_version": None,
                "other_patient_id": other_id,
                "sender": msg.sender[:512],
                "occurred_at": occurred,
                "received_at": received or tx.now,
                "created_at": tx.now,
                "routed": False,
                "routed_at": None,
            }
            if encounter_id is not None:
                row["encounter_version"] = known.get(("Encounter", encounter_id)) or await _version(
                    tx, "Encounter", encounter_id
                )
            await tx.conn.execute(_INSERT, row)
            added += 1
        return added

    def committed(self) -> None:
        """Called after the transaction that recorded events committed: wake the dispatcher."""
        for listener in self.listeners:
            listener()


async def _version(tx: WriteSession, rtype: str, rid: str) -> int:
    """The version this transaction leaves the resource at (its own writes included)."""
    row = (await tx.conn.execute(q.CURRENT, q.key(rtype, rid))).first()
    if row is None or row.deleted:
        raise NotFound(f"{rtype}/{rid} is not stored")  # the mapping wrote it: a bug
    return int(row.version)
