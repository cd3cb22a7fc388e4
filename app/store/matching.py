"""Candidates for Patient/$match, found through the search index tables, never by a full scan.

https://hl7.org/fhir/R4/patient-operation-match.html leaves the matching algorithm to the
server; app/fhir/matching.py scores. This module only finds whom to score: the Patients that
share, with the given one, any of

- an identifier (spidx_token `identifier`, value and system),
- a phone number or email as written (spidx_token `telecom`),
- a family name and the birth date (spidx_string `family` ∩ spidx_date `birthdate`), or,
  when only one of the two is given, that one.

Each source is an index range capped at MAX_CANDIDATES_PER_SOURCE rows. The caller's policy
applies: it needs `s` on Patient, and a patient-confined token can only find its own Patient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, select

from app.fhir.search.dates import date_range
from app.fhir.search.extract import normalize
from app.store import statements as q
from app.store.base import StoredResource
from app.store.tables import resource, spidx_date, spidx_string, spidx_token

if TYPE_CHECKING:
    from app.store.repository import FhirRepository

__all__ = ["MAX_CANDIDATES_PER_SOURCE", "match_candidates"]

MAX_CANDIDATES_PER_SOURCE = 500


async def match_candidates(repo: FhirRepository, wanted: dict[str, Any]) -> list[StoredResource]:
    """The stored, live Patients worth scoring against `wanted` that the caller may see."""
    own = repo.policy.restriction("Patient", "s")
    statements = _sources(wanted)
    ids: set[str] = set()
    async with repo.db.read() as conn:
        for statement in statements:
            ids.update(row[0] for row in await conn.execute(statement))
    if own is not None:
        ids &= {own}
    if not ids:
        return []
    r = resource.c
    found: list[StoredResource] = []
    ordered = sorted(ids)
    async with repo.db.read() as conn:
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            rows = await conn.execute(
                select(r.res_type, r.res_id, r.version, r.last_updated, r.content).where(
                    r.res_type == "Patient", r.res_id.in_(chunk), r.deleted.is_(False)
                )
            )
            found += [q.stored_row(row) for row in rows]
    return found


def _sources(wanted: dict[str, Any]) -> list[Any]:
    t = spidx_token.c
    out: list[Any] = []
    for ident in _dicts(wanted.get("identifier")):
        value = ident.get("value")
        if not isinstance(value, str) or not value:
            continue
        conds = [t.res_type == "Patient", t.param == "identifier", t.value == value]
        if isinstance(ident.get("system"), str) and ident["system"]:
            conds.append(t.system == ident["system"])
        out.append(select(t.res_id).where(*conds).limit(MAX_CANDIDATES_PER_SOURCE))
    for point in _dicts(wanted.get("telecom")):
        value = point.get("value")
        if isinstance(value, str) and value:
            out.append(
                select(t.res_id)
                .where(t.res_type == "Patient", t.param == "telecom", t.value == value)
                .limit(MAX_CANDIDATES_PER_SOURCE)
            )
    families = {
        normalize(n["family"])
        for n in _dicts(wanted.get("name"))
        if isinstance(n.get("family"), str) and n["family"].strip()
    }
    birth = date_range(wanted["birthDate"]) if isinstance(wanted.get("birthDate"), str) else None
    s, d = spidx_string.c, spidx_date.c
    born = None
    if birth is not None:
        born = [d.res_type == "Patient", d.param == "birthdate", d.low >= birth[0]]
        born.append(d.high <= birth[1])
    for family in sorted(families):
        conds: list[Any] = [
            s.res_type == "Patient",
            s.param == "family",
            s.value_normalized == family,
        ]
        if born is not None:
            conds.append(exists(select(1).where(*born, d.res_id == s.res_id)))
        out.append(select(s.res_id).where(and_(*conds)).limit(MAX_CANDIDATES_PER_SOURCE))
    if born is not None and not families:
        out.append(select(d.res_id).where(*born).limit(MAX_CANDIDATES_PER_SOURCE))
    return out


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
