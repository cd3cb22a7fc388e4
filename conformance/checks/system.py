"""Group `system`: the whole-system interactions the statement declares (rest.interaction).

https://hl7.org/fhir/R4/http.html#transaction (a transaction Bundle is applied as a whole and
answered by a transaction-response with one entry per request, `urn:uuid:` references rewritten
to the new ids), #batch, #history (system level) and #search (system level, `_type`-free:
`GET [base]?_id=...`).
"""

from __future__ import annotations

import uuid
from typing import Any

from conformance import rules
from conformance.checks.common import is_bundle
from conformance.context import Context

__all__ = ["run"]


async def run(ctx: Context) -> None:
    declared = {i.get("code") for i in ctx.capabilities.rest.get("interaction") or []}
    writable = "create" in ctx.capabilities.interactions("Patient")
    for code in ("transaction", "batch"):
        if code not in declared:
            continue
        c = ctx.check(code, f"a {code} Bundle", rules.TRANSACTION)
        if ctx.read_only or not writable:
            c.skip("read-only run" if ctx.read_only else "Patient create is not declared")
            continue
        await _bundle(ctx, c, code)
    if "history-system" in declared:
        c = ctx.check("history-system", "history of the whole system", rules.HISTORY)
        r = await ctx.client.get("_history", params={"_count": "5"})
        c.saw(r)
        if c.expect(r.status == 200, f"status {r.status}, expected 200") and c.expect(
            is_bundle(r.body, "history"), "not a history Bundle"
        ):
            c.ok()
    if "search-system" in declared:
        c = ctx.check("search-system", "search across all types", rules.SEARCH)
        r = await ctx.client.get("", params={"_id": f"kit-none-{uuid.uuid4().hex[:8]}"})
        c.saw(r)
        if c.expect(r.status == 200, f"status {r.status}, expected 200") and c.expect(
            is_bundle(r.body, "searchset"), "not a searchset Bundle"
        ):
            c.ok()


async def _bundle(ctx: Context, c: Any, kind: str) -> None:
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_url,
            "resource": {  # with the US Core Patient mandatory elements, like every kit Patient
                "resourceType": "Patient",
                "identifier": [{"system": "urn:dxf-bridge:conformance", "value": kind}],
                "name": [{"family": "Transactova"}],
                "gender": "unknown",
            },
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    linked = kind == "transaction" and "create" in ctx.capabilities.interactions("Observation")
    if linked:
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": patient_url},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    r = await ctx.client.request(
        "POST", "", json={"resourceType": "Bundle", "type": kind, "entry": entries}
    )
    c.saw(r)
    if not (
        c.expect(r.status == 200, f"status {r.status}, expected 200")
        and c.expect(is_bundle(r.body, f"{kind}-response"), f"not a {kind}-response Bundle")
    ):
        return
    answers = r.body.get("entry") or []
    locations = [((e.get("response") or {}).get("location") or "") for e in answers]
    for loc in locations:
        parts = loc.split("/_history")[0].rstrip("/").split("/")
        if len(parts) >= 2:
            ctx.created.append(f"{parts[-2]}/{parts[-1]}")
    statuses = [str((e.get("response") or {}).get("status", "")) for e in answers]
    if not (
        c.expect(len(answers) == len(entries), f"{len(answers)} entries for {len(entries)}")
        and c.expect(all(s.startswith("201") for s in statuses), f"entry statuses {statuses}")
    ):
        return
    if linked:
        obs = answers[1].get("resource") or {}
        patient_ref = locations[0].split("/_history")[0]
        subject = ((obs.get("subject") or {}).get("reference")) or ""
        if obs and not c.expect(
            subject != patient_url and patient_ref.endswith(subject),
            f"the urn:uuid reference became {subject!r}, not the new Patient",
        ):
            return
    c.ok()
