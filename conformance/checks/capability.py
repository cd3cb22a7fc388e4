"""Group `capability`: the CapabilityStatement itself (https://hl7.org/fhir/R4/http.html#capabilities).

GET [base]/metadata needs no token, answers 200 with a CapabilityStatement for FHIR 4.0.x in
application/fhir+json, and lists at least one resource type in server mode.
"""

from __future__ import annotations

from conformance import rules
from conformance.context import Context

__all__ = ["run"]


async def run(ctx: Context) -> None:
    c = ctx.check("metadata", "GET /metadata answers a CapabilityStatement", rules.CAPABILITIES)
    reply = ctx.shared["metadata_reply"]
    c.saw(reply)
    body = reply.body if isinstance(reply.body, dict) else {}
    if (
        c.expect(reply.status == 200, f"status {reply.status}, expected 200")
        and c.expect(body.get("resourceType") == "CapabilityStatement", "not a CapabilityStatement")
        and c.expect(
            str(body.get("fhirVersion", "")).startswith("4.0."),
            f"fhirVersion {body.get('fhirVersion')!r}, expected 4.0.x (R4)",
        )
        and c.expect(bool(ctx.capabilities.types()), "no resource types in a server-mode rest")
    ):
        c.ok(f"{len(ctx.capabilities.types())} resource types declared")
    c = ctx.check("metadata.content-type", "metadata is application/fhir+json", rules.MIME)
    c.saw(reply)
    ctype = reply.headers.get("content-type", "")
    if c.expect(ctype.startswith("application/fhir+json"), f"Content-Type {ctype!r}"):
        c.ok()
    c = ctx.check("metadata.formats", "the statement declares JSON", rules.MIME)
    formats = {str(f) for f in body.get("format") or []}
    if c.expect(
        bool(formats & {"json", "application/fhir+json"}), f"format lists {sorted(formats)}"
    ):
        c.ok()
