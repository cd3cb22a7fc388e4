"""Recording one audit row per FHIR request (DxF P&P "Privacy Standards and Security
Safeguards"; HIPAA 164.312(b); AuditEvent shape from https://hl7.org/fhir/R4/auditevent.html).

Who (client id, token subject), what (interaction, resource type and id, the names of search
parameters, never their values), which patient, when, the outcome (HTTP status) and the purpose
of use when the caller gives one (`X-Purpose-Of-Use` header or a `purpose_of_use` token claim).

Which patient: the token's patient context when it has one; otherwise, for a successful answer,
the Patients whose compartments hold the resources in the answer (one row per patient, so a
search over many patients' records leaves a trail for each of them, as IHE BALP asks); otherwise
the patient named by the request (the Patient read, or a `patient`/`subject` search value).
The row is written before the response is sent; if it cannot be written the caller gets 503
instead of the data (see FhirRouter). Rows are in `audit_event`, apart from FHIR resources, so
audit never shows up in `_history` and a FHIR client cannot write or change one.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import insert, select, tuple_

from app.auth.policy import Principal
from app.db import Database, Prepared
from app.store.tables import audit_event, resource_compartment

__all__ = ["AuditEntry", "AuditRecorder", "entry_for_request"]

# AuditEvent.action: C create, R read, U update, D delete, E execute (search, batch).
_ACTION = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "search-type": "E",
    "create": "C",
    "update": "U",
    "delete": "D",
    "transaction": "E",
    "batch": "E",
    # the intermediary registry's admin API (app/admin/intermediaries.py)
    "registry-add": "C",
    "registry-read": "R",
    "registry-check": "E",
    "registry-enable": "U",
    "registry-disable": "U",
}
_PURPOSE = re.compile(r"^[A-Za-z0-9._:|/-]{1,200}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_PATIENT_PARAMS = ("patient", "subject", "_id")
_COLUMNS = [c.name for c in audit_event.columns if c.name != "seq"]
_INSERT = Prepared(insert(audit_event), _COLUMNS)  # compiled once: one insert per request
_MAX_PATIENTS = 1000  # rows per request at most; a larger answer is audited for the first 1000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    interaction: str
    status: int
    client_id: str | None = None
    subject: str | None = None
    patient: str | None = None
    res_type: str | None = None
    res_id: str | None = None
    search_params: str | None = None
    purpose: str | None = None
    request_id: str | None = None

    @property
    def action(self) -> str:
        return _ACTION.get(self.interaction, "E")

    @property
    def outcome(self) -> str:
        """0 success, 4 minor failure (refused or invalid request), 8 serious failure."""
        if self.status < 400:
            return "0"
        return "4" if self.status < 500 else "8"


def _patient_from_query(res_type: str | None, pairs: list[tuple[str, str]]) -> str | None:
    for name, value in pairs:
        base = name.split(":", 1)[0]
        if base not in _PATIENT_PARAMS or (base == "_id" and res_type != "Patient"):
            continue
        candidate = value.split(",", 1)[0]
        candidate = candidate.rsplit("Patient/", 1)[-1] if "Patient/" in candidate else candidate
        if base == "subject" and "Patient/" not in value:
            continue
        if _ID.match(candidate):
            return candidate
    return None


def entry_for_request(
    scope: dict[str, Any],
    *,
    interaction: str,
    params: dict[str, str],
    principal: Principal | None,
    status: int,
) -> AuditEntry:
    """The audit entry for one FHIR request, from what the router knows about it."""
    res_type = params.get("type")
    res_id = params.get("id")
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    names = sorted({k for k, _ in pairs if k not in ("_format", "_pretty")})
    patient = principal.policy.patient if principal is not None else None
    if patient is None and res_type == "Patient" and res_id and _ID.match(res_id):
        patient = res_id
    if patient is None:
        patient = _patient_from_query(res_type, pairs)
    purpose = None
    headers = dict(scope.get("headers") or [])
    raw = headers.get(b"x-purpose-of-use")
    if raw is not None:
        purpose = raw.decode("latin-1").strip()
    elif principal is not None and isinstance(principal.claims.get("purpose_of_use"), str):
        purpose = str(principal.claims["purpose_of_use"])
    if purpose is not None and not _PURPOSE.match(purpose):
        purpose = "invalid"
    return AuditEntry(
        interaction=interaction,
        status=status,
        client_id=principal.client_id[:128] if principal else None,
        subject=principal.subject[:200] if principal else None,
        patient=patient,
        res_type=res_type if res_type and len(res_type) <= 64 else None,
        res_id=res_id if res_id and _ID.match(res_id) else None,
        search_params=",".join(names)[:1000] or None,
        purpose=purpose,
        request_id=scope.get("state", {}).get("request_id"),
    )


class AuditRecorder:
    def __init__(self, db: Database, *, wait_for_flush: bool = True) -> None:
        self._db = db
        self._wait_for_flush = wait_for_flush

    async def record(self, entry: AuditEntry, body: bytes | None = None) -> list[str]:
        """Write the request's audit rows (one transaction); returns the AuditEvent ids.
        `body` is the answer: with no patient context, its resources' patients are recorded.
        Raises when the rows cannot be written."""
        entries = [entry]
        if entry.patient is None and entry.status < 300 and body:
            patients = await self._patients_in(body)
            if patients:
                entries = [replace(entry, patient=p) for p in patients]
        rows = [self._row(e) for e in entries]
        await self._db.execute_alone(_INSERT, rows, wait_for_flush=self._wait_for_flush)
        return [r["event_id"] for r in rows]

    async def _patients_in(self, body: bytes) -> list[str]:
        """The ids of the Patients whose compartments hold the resources of an answer."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(parsed, dict):
            return []
        resources = [parsed]
        if parsed.get("resourceType") == "Bundle":
            resources = [e.get("resource") for e in parsed.get("entry", []) if isinstance(e, dict)]
        keys = {
            (r["resourceType"], r["id"])
            for r in resources
            if isinstance(r, dict)
            and isinstance(r.get("id"), str)
            and isinstance(r.get("resourceType"), str)
        }
        if not keys:
            return []
        c = resource_compartment.c
        stmt = (
            select(c.patient_id)
            .where(tuple_(c.res_type, c.res_id).in_(sorted(keys)))
            .distinct()
            .order_by(c.patient_id)
            .limit(_MAX_PATIENTS)
        )
        async with self._db.read() as conn:
            return [row[0] for row in (await conn.execute(stmt)).all()]

    def _row(self, entry: AuditEntry) -> dict[str, object]:
        return {
            "event_id": uuid.uuid4().hex,
            "recorded": datetime.now(UTC),
            "action": entry.action,
            "outcome": entry.outcome,
            "status": entry.status,
            "interaction": entry.interaction,
            "client_id": entry.client_id,
            "subject": entry.subject,
            "patient": entry.patient,
            "res_type": entry.res_type,
            "res_id": entry.res_id,
            "search_params": entry.search_params,
            "purpose": entry.purpose,
            "request_id": entry.request_id,
        }
