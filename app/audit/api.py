"""AuditEvent read and search over the audit log (https://hl7.org/fhir/R4/auditevent.html).

Served for unrestricted (`system/` or `user/`) AuditEvent scopes only, e.g.
`system/AuditEvent.rs`: a patient-scoped token gets 403. Search parameters: `patient`
(`Patient/x` or `x`), `date` (with `ge`, `gt`, `le`, `lt` or `eq` prefixes, repeatable),
`outcome` (0, 4, 8), `action` (C R U D E), `_id`, `_count`, and the paging `_cursor`;
anything else is a 400. Results come newest first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select

from app.auth.policy import AccessPolicy
from app.db import Database
from app.errors import Forbidden, Invalid, NotFound
from app.store.tables import audit_event

__all__ = ["AUDIT_TYPE", "SEARCH_PARAMS", "read_audit_event", "search_audit_events"]

AUDIT_TYPE = "AuditEvent"
# name -> FHIR search parameter type, as the CapabilityStatement declares them
SEARCH_PARAMS = {
    "_id": "token",
    "patient": "reference",
    "date": "date",
    "outcome": "token",
    "action": "token",
}
_PREFIXES = {"ge": "__ge__", "gt": "__gt__", "le": "__le__", "lt": "__lt__", "eq": "__eq__"}
_CS = "http://terminology.hl7.org/CodeSystem"


def _require(policy: AccessPolicy, permission: str) -> None:
    if policy.restriction(AUDIT_TYPE, permission) is not None:
        raise Forbidden("AuditEvents are available to system- or user-level scopes only")


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def render(row: Any) -> dict[str, Any]:
    """One audit row as an R4 AuditEvent."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": row.event_id,
        "type": {
            "system": f"{_CS}/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": row.interaction}],
        "action": row.action,
        "recorded": _utc(row.recorded).isoformat().replace("+00:00", "Z"),
        "outcome": row.outcome,
        "outcomeDesc": f"HTTP {row.status}",
        "agent": [],
        "source": {
            "observer": {"display": "dxf-bridge"},
            "type": [{"system": f"{_CS}/security-source-type", "code": "4"}],
        },
    }
    if row.purpose:
        event["purposeOfEvent"] = [
            {"coding": [{"system": f"{_CS}/v3-ActReason", "code": row.purpose}]}
        ]
    if row.client_id:
        event["agent"].append(
            {
                "type": {
                    "coding": [
                        {"system": f"{_CS}/extra-security-role-type", "code": "datacollector"}
                    ]
                },
                "who": {
                    "identifier": {"system": "urn:dxf-bridge:client-id", "value": row.client_id}
                },
                "requestor": True,
            }
        )
    if row.subject and row.subject != row.client_id:
        event["agent"].append(
            {
                "who": {"identifier": {"system": "urn:dxf-bridge:user", "value": row.subject}},
                "requestor": True,
            }
        )
    if not event["agent"]:
        event["agent"].append({"who": {"display": "unauthenticated caller"}, "requestor": True})
    entities: list[dict[str, Any]] = []
    if row.patient:
        entities.append(
            {
                "what": {"reference": f"Patient/{row.patient}"},
                "type": {"system": f"{_CS}/audit-entity-type", "code": "1"},
                "role": {"system": f"{_CS}/object-role", "code": "1"},
            }
        )
    if (
        row.res_type
        and row.res_id
        and not (row.res_type == "Patient" and row.res_id == row.patient)
    ):
        entities.append({"what": {"reference": f"{row.res_type}/{row.res_id}"}})
    elif row.res_type and not row.res_id:
        entities.append({"what": {"display": row.res_type}, "description": "resource type"})
    if row.search_params:
        entities.append(
            {
                "type": {"system": f"{_CS}/audit-entity-type", "code": "2"},
                "role": {"system": f"{_CS}/object-role", "code": "24"},
                "description": f"search parameters: {row.search_params}",
            }
        )
    if entities:
        event["entity"] = entities
    return event


async def read_audit_event(db: Database, policy: AccessPolicy, event_id: str) -> dict[str, Any]:
    _require(policy, "r")
    async with db.read() as conn:
        row = (
            await conn.execute(select(audit_event).where(audit_event.c.event_id == event_id))
        ).first()
    if row is None:
        raise NotFound(f"AuditEvent/{event_id} is not known")
    return render(row)


def _parse_date(value: str) -> tuple[str, datetime]:
    prefix, text = ("eq", value)
    if value[:2] in _PREFIXES:
        prefix, text = value[:2], value[2:]
    if len(text) in (4, 7):  # YYYY or YYYY-MM: the start of that year or month
        text += "-01-01" if len(text) == 4 else "-01"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"date must be an ISO date or dateTime, got {value!r}") from None
    return prefix, _utc(moment)


async def search_audit_events(
    db: Database,
    policy: AccessPolicy,
    query: list[tuple[str, str]],
    *,
    fhir_base: str,
    default_count: int,
    max_count: int,
) -> dict[str, Any]:
    _require(policy, "s")
    stmt = select(audit_event)
    count = default_count
    kept: list[tuple[str, str]] = []
    for name, value in query:
        if name in ("_format", "_pretty"):
            continue
        if name == "_count":
            if not value.isdigit():
                raise Invalid("_count must be a non-negative integer")
            count = min(int(value), max_count)
        elif name == "_cursor":
            if not value.isdigit():
                raise Invalid("the paging cursor is not valid")
            stmt = stmt.where(audit_event.c.seq < int(value))
            continue
        elif name == "_id":
            stmt = stmt.where(audit_event.c.event_id.in_(value.split(",")))
        elif name == "patient":
            stmt = stmt.where(audit_event.c.patient == value.removeprefix("Patient/"))
        elif name == "outcome":
            stmt = stmt.where(audit_event.c.outcome == value)
        elif name == "action":
            stmt = stmt.where(audit_event.c.action == value)
        elif name == "date":
            prefix, moment = _parse_date(value)
            column = audit_event.c.recorded
            stmt = stmt.where(getattr(column, _PREFIXES[prefix])(moment))
        else:
            raise Invalid(f"AuditEvent search does not support the parameter {name!r}")
        kept.append((name, value))
    stmt = stmt.order_by(audit_event.c.seq.desc()).limit(count + 1)
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    page = rows[:count]
    url = f"{fhir_base}/{AUDIT_TYPE}"
    links = [{"relation": "self", "url": f"{url}?{urlencode(kept)}" if kept else url}]
    if len(rows) > count and page:
        cursor = [*kept, ("_cursor", str(page[-1].seq))]
        links.append({"relation": "next", "url": f"{url}?{urlencode(cursor)}"})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {
                "fullUrl": f"{url}/{row.event_id}",
                "resource": render(row),
                "search": {"mode": "match"},
            }
            for row in page
        ],
    }
