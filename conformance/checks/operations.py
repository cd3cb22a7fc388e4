"""Group `operations`: declared operations answer with the right Bundle.

Patient/$everything (https://hl7.org/fhir/R4/patient-operation-everything.html): a searchset
Bundle holding the Patient and the resources of its compartment, and nothing of another
Patient's. Other declared operations are listed as skipped: the kit has no probe for them.
"""

from __future__ import annotations

from conformance import rules
from conformance.checks.common import is_bundle
from conformance.context import Context
from conformance.fixtures import fixtures
from conformance.model import Rule
from conformance.samples import PATIENT_COMPARTMENT

__all__ = ["run"]


async def run(ctx: Context) -> None:
    caps = ctx.capabilities
    for rtype in caps.types():
        for op in sorted(caps.operations(rtype)):
            if (rtype, op) == ("Patient", "everything"):
                await _everything(ctx)
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
