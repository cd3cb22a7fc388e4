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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import insert

from app.auth.policy import Principal
from app.db import Database, Prepared
from app.fhir.compartments import patient_ids_of
from app.ids import time_ordered_uuid
from app.store.tables import audit_event

__all__ = ["AuditEntry", "AuditRecorder", "InWriteAudit", "entry_for_request"]

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
    def __init__(self, db: Database, *, base_url: str = "", wait_for_flush: bool = True) -> None:
        self._db = db
        self._base_url = base_url  # the FHIR base, to read absolute references to Patients
        self._wait_for_flush = wait_for_flush

    async def record(self, entry: AuditEntry, body: bytes | None = None) -> list[str]:
        """Write the request's audit rows (one transaction); returns the AuditEvent ids.
        `body` is the answer: with no patient context, its resources' patients are recorded.
        Raises when the rows cannot be written."""
        patients: list[str] = []
        if entry.patient is None and entry.status < 300 and body:
            patients = await self._patients_in(body)
        rows = self.rows(entry, patients)
        await self._db.execute_alone(_INSERT, rows, wait_for_flush=self._wait_for_flush)
        return [r["event_id"] for r in rows]

    def rows(self, entry: AuditEntry, patients: set[str] | list[str]) -> list[dict[str, object]]:
        """The audit rows of `entry`: one per patient (the first _MAX_PATIENTS) when it has no
        patient of its own and `patients` is not empty, else one."""
        entries = [entry]
        if entry.patient is None and patients:
            entries = [replace(entry, patient=p) for p in sorted(patients)[:_MAX_PATIENTS]]
        return [self._row(e) for e in entries]

    async def _patients_in(self, body: bytes) -> list[str]:
        """The ids of the Patients whose compartments hold the resources of an answer.

        Worked out from the resources' own references, by the rules that filled the
        compartment table when they were written (app.fhir.compartments), not by a query:
        a lookup by (type, id) pairs cannot use the compartment table's key, and scanned the
        whole table for every search answer (62 ms at 100,000 resources, growing with it)."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(parsed, dict):
            return []
        resources = [parsed]
        if parsed.get("resourceType") == "Bundle":
            entries = parsed.get("entry")
            resources = [e.get("resource") for e in entries or () if isinstance(e, dict)]
        patients: set[str] = set()
        for r in resources:
            if isinstance(r, dict) and isinstance(r.get("resourceType"), str):
                patients |= patient_ids_of(r, self._base_url)
        return sorted(patients)[:_MAX_PATIENTS]

    def _row(self, entry: AuditEntry) -> dict[str, object]:
        return {
            "event_id": time_ordered_uuid().hex,
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


class InWriteAudit:
    """The audit record of a create or update, written in the write's own transaction
    (FhirRepository.commit_record): the answer then waits for one commit, not two, and a
    write is never committed without its record. The status recorded is the one the write's
    answer carries (201 created, 200 otherwise); `recorded` holds it once the commit is done,
    and the router writes a record of its own only for an answer with another status (a
    failure after the commit) or for a request that wrote nothing."""

    def __init__(self, recorder: AuditRecorder, base: AuditEntry) -> None:
        self._recorder = recorder
        self._base = base  # the request's entry; status and resource id come from the write
        self._pending: int | None = None
        self.recorded: int | None = None

    def rows(self, result: Any, patients: set[str]) -> tuple[Prepared, list[dict[str, object]]]:
        status = 201 if result.created else 200
        entry = replace(self._base, status=status, res_id=result.resource.id)
        self._pending = status
        return _INSERT, self._recorder.rows(entry, patients)

    def committed(self) -> None:
        self.recorded = self._pending
