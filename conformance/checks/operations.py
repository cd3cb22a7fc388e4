"""Group `operations`: declared operations answer with the right Bundle.

Patient/$everything (https://hl7.org/fhir/R4/patient-operation-everything.html): a searchset
Bundle holding the Patient and the resources of its compartment, and nothing of another
Patient's. Patient/$match (https://hl7.org/fhir/R4/patient-operation-match.html): given sample
Patient A, a searchset Bundle whose best entry is A, with `search.score` and the match-grade
extension, and without B. Other declared operations are listed as skipped: the kit has no
probe for them.
"""

from __future__ import annotations

from conformance import rules
from conformance.checks.common import is_bundle
from conformance.context import Context
from conformance.fixtures import fixtures
from conformance.model import Rule
from conformance.samples import PATIENT_COMPARTMENT, SAMPLES, fill

__all__ = ["run"]


async def run(ctx: Context) -> None:
    caps = ctx.capabilities
    for rtype in caps.types():
        for op in sorted(caps.operations(rtype)):
            if (rtype, op) == ("Patient", "everything"):
                await _everything(ctx)
            elif (rtype, op) == ("Patient", "match"):
                await _match(ctx)
            else:
                ctx.check(
                    f"{rtype}.{op}",
                    f"{rtype}/${op}",
                    Rule("FHIR R4 operation", f"${op}", "https://hl7.org/fhir/R4/operations.html"),
                ).skip("the kit has no probe for this operation")


async def _everything(ctx: Context) -> None:
    c = ctx.check("Patient.everything", "Patient/$everything", rules.EVERYTHING)
    fx = await fixtures(ctx)
    if not fx.pa:
        c.skip(fx.problems.get("Patient", "no sample Patients"))
        return
    compartment = {f"Patient/{fx.pa}"} | {
        f"{t}/{a}" for t, (a, _) in fx.pairs.items() if t in PATIENT_COMPARTMENT
    }
    unwanted = {f"Patient/{fx.pb}"} | {
        f"{t}/{b}" for t, (_, b) in fx.pairs.items() if t in PATIENT_COMPARTMENT
    }
    found: set[str] = set()
    url: str | None = f"Patient/{fx.pa}/$everything"
    params: dict[str, str] | None = {"_count": "200"}
    for _ in range(20):
        if url is None:
            break
        r = await ctx.client.get(url, params=params)
        c.saw(r)
        if not (
            c.expect(r.status == 200, f"status {r.status}, expected 200")
            and c.expect(is_bundle(r.body, "searchset"), "not a searchset Bundle")
        ):
            return
        found |= r.ids(None)
        url, params = r.link("next"), None
    missing = sorted(compartment - found)
    extra = sorted(unwanted & found)
    if c.expect(not missing, f"missing from the Bundle: {', '.join(missing)}") and c.expect(
        not extra, f"another Patient's resources in the Bundle: {', '.join(extra)}"
    ):
        c.ok(f"{len(compartment)} expected resources present")


MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
GRADES = ("certain", "probable", "possible", "certainly-not")


async def _match(ctx: Context) -> None:
    c = ctx.check("Patient.match", "Patient/$match", rules.MATCH)
    fx = await fixtures(ctx)
    if not fx.pa:
        c.skip(fx.problems.get("Patient", "no sample Patients"))
        return
    wanted = fill(SAMPLES["Patient"].a, fx.pa, fx.pb)
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": wanted}]}
    r = await ctx.client.request("POST", "Patient/$match", json=body)
    c.saw(r)
    if not (
        c.expect(r.status == 200, f"status {r.status}, expected 200")
        and c.expect(is_bundle(r.body, "searchset"), "not a searchset Bundle")
    ):
        return
    matches = [
        e for e in r.body.get("entry") or [] if (e.get("search") or {}).get("mode") == "match"
    ]
    if not c.expect(bool(matches), "no match entry for sample Patient A"):
        return
    best = matches[0]
    search = best.get("search") or {}
    grades = [
        x.get("valueCode") for x in search.get("extension") or [] if x.get("url") == MATCH_GRADE
    ]
    found = {f"Patient/{(e.get('resource') or {}).get('id')}" for e in matches}
    if (
        c.expect(
            (best.get("resource") or {}).get("id") == fx.pa,
            "the best match is not sample Patient A",
        )
        and c.expect(
            isinstance(search.get("score"), int | float) and 0 <= search["score"] <= 1,
            "the match has no search.score between 0 and 1",
        )
        and c.expect(len(grades) == 1 and grades[0] in GRADES, "no match-grade extension")
        and c.expect(f"Patient/{fx.pb}" not in found, "sample Patient B matched A")
    ):
        c.ok(f"A found with score {search['score']} ({grades[0]})")
