"""Operations on the event tables: receivers, delivery listings, retries and delay figures.

Used by `dxf-bridge events ...` (app/events/commands.py) and the tests. Listings show ids,
kinds, endpoints (without credentials), statuses and reasons; never resource content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select, update

from app.db import Database
from app.events.davinci import event_code
from app.events.topic import KINDS
from app.hl7.mllp_client import parse_mllp_url
from app.store.base import aware, utc_now_ms
from app.store.tables import event_delivery, event_outbox, event_receiver

__all__ = [
    "DelayStats",
    "add_receiver",
    "delay_stats",
    "list_deliveries",
    "list_receivers",
    "remove_receiver",
    "retry",
]

_d = event_delivery.c
_o = event_outbox.c
_r = event_receiver.c
CHANNELS = ("hl7v2-mllp", "fhir-message")


async def add_receiver(
    db: Database,
    name: str,
    channel: str,
    endpoint: str,
    *,
    kinds: list[str] | None = None,
    panel: str | None = None,
    headers: list[str] | None = None,
) -> None:
    """Register (or replace) a receiver that takes ADT events. ValueError names a bad input."""
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError("a receiver name is 1-64 letters, digits, - or _")
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    if channel == "hl7v2-mllp":
        parse_mllp_url(endpoint)
    elif not endpoint.startswith(("https://", "http://")):
        raise ValueError("a FHIR message endpoint is an http(s) URL ($process-message)")
    wanted = [k for k in (kinds or []) if k]
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown event kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    if channel == "fhir-message" and wanted and not any(event_code(k) for k in wanted):
        raise ValueError(
            "Da Vinci notifications exist for admit, registration, transfer, discharge"
        )
    for line in headers or []:
        if ":" not in line or not line.split(":", 1)[0].strip():
            raise ValueError('a header is "Name: value"')
    row: dict[str, Any] = {
        "name": name,
        "channel": channel,
        "endpoint": endpoint,
        "kinds": ",".join(wanted),
        "panel": panel or None,
        "headers": orjson.dumps(headers or []).decode(),
        "active": True,
        "created_at": utc_now_ms(),
    }
    async with db.write() as conn:
        await conn.execute(delete(event_receiver).where(_r.name == name))
        await conn.execute(insert(event_receiver).values(**row))


async def remove_receiver(db: Database, name: str) -> bool:
    async with db.write() as conn:
        result = await conn.execute(delete(event_receiver).where(_r.name == name))
    return bool(result.rowcount)


async def list_receivers(db: Database) -> list[Any]:
    async with db.read() as conn:
        return list(await conn.execute(select(event_receiver).order_by(_r.name)))


async def list_deliveries(
    db: Database, *, status: str | None = None, limit: int = 100
) -> list[Any]:
    query = (
        select(
            _d.id,
            _d.event_id,
            _o.trigger,
            _o.kind,
            _d.target_kind,
            _d.target_id,
            _d.channel,
            _d.endpoint,
            _d.status,
            _d.attempts,
            _d.next_attempt_at,
            _d.created_at,
            _d.delivered_at,
            _d.delay_ms,
            _d.last_error,
        )
        .select_from(event_delivery.join(event_outbox, _o.id == _d.event_id))
        .order_by(_d.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(_d.status == status)
    async with db.read() as conn:
        return list(await conn.execute(query))


async def retry(db: Database, ids: list[int] | None = None, *, all_dead: bool = False) -> int:
    """Put dead deliveries back to pending, due now, with a fresh attempt count."""
    conds = [_d.status == "dead"]
    if not all_dead:
        conds.append(_d.id.in_(ids or []))
    async with db.write() as conn:
        result = await conn.execute(
            update(event_delivery)
            .where(*conds)
            .values(status="pending", attempts=0, next_attempt_at=utc_now_ms())
        )
    return int(result.rowcount or 0)


@dataclass(frozen=True, slots=True)
class DelayStats:
    counts: dict[str, int]
    delivered: int
    median_ms: int | None
    p99_ms: int | None
    max_ms: int | None
    unrouted: int
    oldest_pending: datetime | None

    def pending_age_seconds(self, now: datetime) -> float | None:
        if self.oldest_pending is None:
            return None
        return max(0.0, (aware(now) - aware(self.oldest_pending)).total_seconds())


def _percentile(values: list[int], share: float) -> int | None:
    if not values:
        return None
    rank = max(0, min(len(values) - 1, int(round(share * len(values) + 0.5)) - 1))
    return values[rank]


async def delay_stats(db: Database, *, since: datetime | None = None) -> DelayStats:
    """Counts by status; the delay of delivered notifications (median, p99, max)."""
    async with db.read() as conn:
        counts = {
            row[0]: int(row[1])
            for row in await conn.execute(
                select(_d.status, func.count()).group_by(_d.status).order_by(_d.status)
            )
        }
        delays_query = select(_d.delay_ms).where(_d.status == "delivered").order_by(_d.delay_ms)
        if since is not None:
            delays_query = delays_query.where(_d.delivered_at >= since)
        delays = [int(v) for (v,) in await conn.execute(delays_query) if v is not None]
        unrouted = int(await conn.scalar(select(func.count()).where(_o.routed.is_(False))) or 0)
        oldest = await conn.scalar(select(func.min(_d.created_at)).where(_d.status == "pending"))
    return DelayStats(
        counts=counts,
        delivered=len(delays),
        median_ms=_percentile(delays, 0.5),
        p99_ms=_percentile(delays, 0.99),
        max_ms=delays[-1] if delays else None,
        unrouted=unrouted,
        oldest_pending=oldest,
    )
