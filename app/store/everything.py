"""Patient/$everything: a patient's whole record, from the compartment table, in one paged query.

Implements https://hl7.org/fhir/R4/patient-operation-everything.html: the Patient, every
resource in its compartment (https://hl7.org/fhir/R4/compartmentdefinition-patient.html), and
the Practitioner, PractitionerRole, Organization, Location and Medication resources those
reference; parameters `_since`, `_type`, `_count`, `start` and `end`.

Never another patient's data: a linked Patient (`Patient.link`) sits in the compartment table,
but a Patient row counts only as the compartment's own; other resources come in only through
the compartment or as one of the supporting types above, never by following a reference to a
clinical resource. The caller's policy applies to every row.

Paging is a keyset over (patient, type, id), so pages stay consistent while data is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, not_, or_, select, true, union

from app.store import statements as q
from app.store.base import StoredResource
from app.store.tables import resource, resource_compartment, spidx_date, spidx_reference

if TYPE_CHECKING:
    from app.store.repository import FhirRepository

__all__ = ["SUPPORTING_TYPES", "EverythingPage", "EverythingRequest", "everything"]

SUPPORTING_TYPES = ("Location", "Medication", "Organization", "Practitioner", "PractitionerRole")


@dataclass(frozen=True, slots=True)
class EverythingRequest:
    patient_id: str | None  # None: every patient the caller may read (type level)
    count: int
    types: tuple[str, ...] = ()  # `_type`; empty: all
    since: datetime | None = None
    start: datetime | None = None  # care dates: the range [start, end)
    end: datetime | None = None
    cursor: tuple[str, str, str] | None = None  # (patient, type, id) of the last row served


@dataclass(slots=True)
class EverythingPage:
    resources: list[StoredResource]
    next_cursor: tuple[str, str, str] | None


async def everything(repo: FhirRepository, request: EverythingRequest) -> EverythingPage:
    c = resource_compartment.c
    patient = repo.policy.restriction("Patient", "r")
    patients = _patient_filter(c.patient_id, request.patient_id, patient)
    own = select(c.patient_id, c.res_type, c.res_id).where(
        patients, or_(c.res_type != "Patient", c.res_id == c.patient_id)
    )
    ref = spidx_reference.c
    supporting = (
        select(c.patient_id, ref.target_type.label("res_type"), ref.target_id.label("res_id"))
        .select_from(
            resource_compartment.join(
                spidx_reference,
                and_(ref.res_type == c.res_type, ref.res_id == c.res_id),
            )
        )
        .where(
            patients,
            or_(c.res_type != "Patient", c.res_id == c.patient_id),
            ref.target_type.in_(SUPPORTING_TYPES),
        )
    )
    items = union(own, supporting).subquery("items")
    i = items.c
    r = resource.c
    conds: list[Any] = [
        r.res_type == i.res_type,
        r.res_id == i.res_id,
        r.deleted.is_(False),
        repo.type_filter(i.res_type, i.res_id, "r"),
    ]
    if request.types:
        conds.append(i.res_type.in_(request.types))
    if request.since is not None:
        conds.append(r.last_updated >= request.since)
    if request.start is not None or request.end is not None:
        conds.append(_in_care_period(i.res_type, i.res_id, request.start, request.end))
    if request.cursor is not None:
        pid, rtype, rid = request.cursor
        conds.append(
            or_(
                i.patient_id > pid,
                and_(i.patient_id == pid, i.res_type > rtype),
                and_(i.patient_id == pid, i.res_type == rtype, i.res_id > rid),
            )
        )
    statement = (
        select(i.patient_id, r.res_type, r.res_id, r.version, r.last_updated, r.content)
        .select_from(items.join(resource, and_(r.res_type == i.res_type, r.res_id == i.res_id)))
        .where(*conds)
        .order_by(i.patient_id, i.res_type, i.res_id)
        .limit(request.count + 1)
    )
    async with repo.db.read() as conn:
        rows = (await conn.execute(statement)).all()
    more = len(rows) > request.count
    rows = rows[: request.count]
    last = rows[-1] if rows and more else None
    cursor = (last.patient_id, last.res_type, last.res_id) if last is not None else None
    return EverythingPage([q.stored_row(row) for row in rows], cursor)


def _patient_filter(column: Any, requested: str | None, confined: str | None) -> Any:
    """Instance level: that patient; type level: every patient, or the caller's own only."""
    if requested is not None:
        return column == requested
    if confined is not None:
        return column == confined
    return true()


def _in_care_period(
    type_col: Any, id_col: Any, start: datetime | None, end: datetime | None
) -> Any:
    """The resource has no care date, or one overlapping [start, end). Patients and the
    supporting resources are never cut by dates; `_lastUpdated` is not a care date."""
    d = spidx_date.c
    dated = and_(d.res_type == type_col, d.res_id == id_col, d.param != "_lastUpdated")
    overlap = [dated]
    if start is not None:
        overlap.append(d.high > start)
    if end is not None:
        overlap.append(d.low < end)
    return or_(
        type_col.in_(("Patient", *SUPPORTING_TYPES)),
        not_(exists(select(1).where(dated))),
        exists(select(1).where(*overlap)),
    )
