"""Group `us-core`: what US Core 6.1 demands of types claiming its profiles.

https://hl7.org/fhir/us/core/STU6.1/CapabilityStatement-us-core-server.html lists, per profile,
the search parameters and combinations a server SHALL support. For each type whose entry in the
CapabilityStatement names a US Core profile, the kit checks that every SHALL parameter is
declared and that each SHALL search (with the kit's sample Patient where one is needed) answers
200 with a searchset Bundle, and that the resources a search returns carry the profile's
mandatory (min 1) elements. Types without a US Core claim are not held to this.
"""

from __future__ import annotations

from conformance import rules
from conformance.checks.common import is_bundle
from conformance.context import Context
from conformance.fixtures import fixtures

__all__ = ["MANDATORY", "REQUIRED_SEARCHES", "run"]

# type -> the SHALL searches, each a tuple of parameter names combined with AND
REQUIRED_SEARCHES: dict[str, tuple[tuple[str, ...], ...]] = {
    "Patient": (("_id",), ("identifier",), ("name",), ("birthdate", "name"), ("gender", "name")),
    "AllergyIntolerance": (("patient",),),
    "CarePlan": (("patient", "category"),),
    "CareTeam": (("patient", "status"),),
    "Condition": (("patient",),),
    "Coverage": (("patient",),),
    "Device": (("patient",),),
    "DiagnosticReport": (("patient",), ("patient", "category"), ("patient", "code")),
    "DocumentReference": (("_id",), ("patient",), ("patient", "category"), ("patient", "type")),
    "Encounter": (("_id",), ("patient",), ("date", "patient")),
    "Goal": (("patient",),),
    "Immunization": (("patient",),),
    "Location": (("name",), ("address",)),
    "MedicationDispense": (("patient",),),
    "MedicationRequest": (("patient", "intent"), ("patient", "intent", "status")),
    "Observation": (("patient", "category"), ("patient", "code"), ("patient", "category", "date")),
    "Organization": (("name",), ("address",)),
    "Practitioner": (("name",), ("identifier",)),
    "PractitionerRole": (("specialty",), ("practitioner",)),
    "Procedure": (("patient",), ("patient", "date")),
    "QuestionnaireResponse": (("patient",),),
    "RelatedPerson": (("_id",), ("patient",)),
    "ServiceRequest": (("patient",), ("_id",)),
    "Specimen": (("_id",), ("patient",)),
}

# type -> elements US Core 6.1 profiles make mandatory (min 1): every resource the server hands
# out for a type claiming the profile must carry them. Must-support elements beyond these can
# be absent from conformant data, so they cannot be judged from what a search returns.
MANDATORY: dict[str, tuple[str, ...]] = {
    "Patient": ("identifier", "name", "gender"),
    "AllergyIntolerance": ("code", "patient"),
    "CarePlan": ("status", "intent", "category", "subject"),
    "CareTeam": ("participant",),
    "Condition": ("category", "code", "subject"),
    "Coverage": ("status", "beneficiary", "payor"),
    "Device": ("type", "patient"),
    "DiagnosticReport": ("status", "category", "code", "subject"),
    "DocumentReference": ("status", "type", "category", "subject", "content"),
    "Encounter": ("status", "class", "type", "subject"),
    "Goal": ("lifecycleStatus", "description", "subject"),
    "Immunization": ("status", "vaccineCode", "patient"),
    "Location": ("name",),
    "MedicationRequest": ("status", "intent", "subject", "requester"),
    "Observation": ("status", "category", "code", "subject"),
    "Organization": ("active", "name"),
    "Practitioner": ("identifier", "name"),
    "Procedure": ("status", "code", "subject"),
    "ServiceRequest": ("status", "intent", "code", "subject"),
    "Specimen": ("type", "subject"),
}

# a value that is well-formed for each parameter; matching anything is not required
_PROBE = {
    "_id": "kit-probe",
    "identifier": "urn:dxf-bridge:conformance|ident-a",
    "name": "Conformanza",
    "birthdate": "1961-03-04",
    "gender": "female",
    "category": "laboratory",
    "code": "http://loinc.org|2339-0",
    "date": "ge2000-01-01",
    "status": "active",
    "intent": "order",
    "type": "http://loinc.org|34133-9",
    "address": "Arcata",
    "specialty": "http://nucc.org/provider-taxonomy|208D00000X",
    "practitioner": "Practitioner/kit-probe",
}


async def run(ctx: Context) -> None:
    caps = ctx.capabilities
    claimed = [t for t in caps.types() if caps.claims_us_core(t)]
    if not claimed:
        ctx.check("profiles", "US Core profiles claimed", rules.US_CORE_SEARCH).skip(
            "the CapabilityStatement claims no US Core profile"
        )
        return
    fx = await fixtures(ctx)
    patient = f"Patient/{fx.pa}" if fx.pa else "Patient/kit-probe"
    for rtype in claimed:
        await _mandatory(ctx, rtype)
        searches = REQUIRED_SEARCHES.get(rtype)
        declared = caps.search_params(rtype)
        if searches is None:
            ctx.check(f"{rtype}", f"{rtype} US Core searches", rules.US_CORE_SEARCH).skip(
                "US Core 6.1 requires no search on this type, or the kit does not know it"
            )
            continue
        for combo in searches:
            label = "+".join(combo)
            c = ctx.check(f"{rtype}.{label}", f"{rtype}?{label}", rules.US_CORE_SEARCH)
            missing = [p for p in combo if p not in declared]
            if missing:
                c.saw(ctx.shared["metadata_reply"])  # the statement is the evidence
            if not c.expect(not missing, f"SHALL parameters not declared: {', '.join(missing)}"):
                continue
            params = {p: (patient if p == "patient" else _PROBE.get(p, "x")) for p in combo}
            r = await ctx.client.get(rtype, params=params)
            c.saw(r)
            if c.expect(r.status == 200, f"status {r.status}, expected 200") and c.expect(
                is_bundle(r.body, "searchset"), "not a searchset Bundle"
            ):
                c.ok()


async def _mandatory(ctx: Context, rtype: str) -> None:
    c = ctx.check(
        f"{rtype}.mandatory",
        f"{rtype} resources carry US Core's mandatory elements",
        rules.US_CORE_PROFILE,
    )
    required = MANDATORY.get(rtype)
    if required is None:
        c.skip("the kit has no table of mandatory elements for this profile")
        return
    if "search-type" not in ctx.capabilities.interactions(rtype):
        c.skip(f"{rtype} search is not declared, so the kit cannot sample its resources")
        return
    r = await ctx.client.get(rtype, params={"_count": "20"})
    c.saw(r)
    if not c.expect(r.status == 200, f"status {r.status}, expected 200"):
        return
    resources = r.entries("match")
    if not resources:
        c.skip(f"no {rtype} on the server to look at")
        return
    for resource in resources:
        absent = [e for e in required if not _present(resource.get(e))]
        if absent:
            c.fail(f"{rtype}/{resource.get('id')} lacks {', '.join(absent)}")
            return
    c.ok(f"{len(resources)} {rtype} resources looked at")


def _present(value: object) -> bool:
    return value not in (None, "", [], {})
