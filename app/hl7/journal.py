"""The HL7v2 journal: every received message is committed here before anything else happens.

Durability contract (issue 4; ../shared/reference/reliability.md section 1.1):
1. the raw bytes, sender (MSH-3|MSH-4), control id (MSH-10), SHA-256, received time and status
   `received` are committed in their own transaction;
2. mapping writes the resources and moves the row to `processed` (with the ACK) in ONE
   transaction, so a crash leaves either both or neither;
3. a row left `received` by a crash is processed when the sender resends it, or by
   `dxf-bridge hl7 reprocess --all-failed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from app.db import DbConnection, Prepared
from app.store.tables import hl7_message

__all__ = ["JournalEntry", "find_same_control_id", "get", "insert_entry", "listing", "set_outcome"]

_j = hl7_message.c
_ENTRY_COLUMNS = [
    "received_at",
    "transport",
    "sender",
    "control_id",
    "sha256",
    "message_type",
    "version",
    "status",
    "raw",
    "ack",
    "ack_code",
    "error_code",
    "error",
]
_OUTCOME_COLUMNS = ["status", "ack", "ack_code", "error_code", "error", "resources", "processed_at"]

# Built once (see app.db.Prepared): statements every message runs.
_FIND = Prepared(
    select(hl7_message)
    .where(_j.sender == bindparam("sender"), _j.control_id == bindparam("control_id"))
    .order_by(_j.id)
)
_INSERT = insert(hl7_message).returning(_j.id)  # RETURNING rows are not Prepared's to decode
_OUTCOME = Prepared(
    update(hl7_message).where(_j.id == bindparam("entry_id")),
    _OUTCOME_COLUMNS,
)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: int
    received_at: datetime
    transport: str
    sender: str
    control_id: str
    sha256: str
    message_type: str
    version: str
    status: str
    raw: bytes
    ack: str | None
    ack_code: str | None
    error_code: str | None
    error: str | None
    resources: str | None
    processed_at: datetime | None


def _entry(row: Any) -> JournalEntry:
    return JournalEntry(**{k: getattr(row, k) for k in JournalEntry.__slots__})


async def find_same_control_id(
    conn: DbConnection, sender: str, control_id: str
) -> list[JournalEntry]:
    rows = await conn.execute(_FIND, {"sender": sender, "control_id": control_id})
    return [_entry(r) for r in rows]


async def get(conn: DbConnection, entry_id: int) -> JournalEntry | None:
    row = (await conn.execute(select(hl7_message).where(_j.id == entry_id))).first()
    return _entry(row) if row is not None else None


async def insert_entry(conn: DbConnection, **values: Any) -> int:
    result = await conn.execute(_INSERT, {name: values.get(name) for name in _ENTRY_COLUMNS})
    return int(result.scalar_one())


async def set_outcome(conn: DbConnection, entry_id: int, **values: Any) -> None:
    """Record a message's outcome: every outcome column is set, those not given to NULL."""
    row = {name: values.get(name) for name in _OUTCOME_COLUMNS}
    await conn.execute(_OUTCOME, {"entry_id": entry_id, **row})


async def listing(
    conn: DbConnection, *, status: str | None = None, limit: int = 100
) -> list[JournalEntry]:
    query = select(hl7_message).order_by(_j.id.desc()).limit(limit)
    if status:
        query = query.where(_j.status == status)
    return [_entry(r) for r in await conn.execute(query)]


async def ids_with_status(conn: DbConnection, statuses: tuple[str, ...]) -> list[int]:
    rows = await conn.execute(select(_j.id).where(_j.status.in_(statuses)).order_by(_j.id))
    return [int(r.id) for r in rows]
