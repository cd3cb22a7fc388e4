"""Group `errors`: failures come back with the right status and an OperationOutcome.

https://hl7.org/fhir/R4/http.html (read: 404 for an unknown id; create/update: 400/422 for an
invalid resource, 415 for an unsupported content type), https://hl7.org/fhir/R4/search.html#errors
(400 for an unknown parameter under Prefer: handling=strict, and for a malformed value), and
https://hl7.org/fhir/R4/security.html (401 without credentials, when the server is secured).
"""

from __future__ import annotations

from conformance import rules
from conformance.checks.common import expect_outcome, new_id
from conformance.context import Context

__all__ = ["run"]


async def run(ctx: Context) -> None:
    caps = ctx.capabilities
    types = caps.types()
    readable = [t for t in types if "read" in caps.interactions(t)]
    searchable = [t for t in types if "search-type" in caps.interactions(t)]
    creatable = [t for t in types if "create" in caps.interactions(t)]
    first = _prefer("Patient", readable)
    c = ctx.check("unknown-id", "read of an unknown id: 404 OperationOutcome", rules.READ)
    if first is None:
        c.skip("no type declares read")
    else:
        expect_outcome(c, await ctx.client.get(f"{first}/{new_id()}"), (404,))

    target = _prefer("Patient", searchable)
    c = ctx.check(
        "unknown-parameter", "unknown search parameter, handling=strict: 400", rules.SEARCH_ERRORS
    )
    if target is None:
        c.skip("no type declares search-type")
    else:
        reply = await ctx.client.get(
            target,
            params={"kit-no-such-parameter": "1"},
            headers={"Prefer": "handling=strict"},
        )
        expect_outcome(c, reply, (400,))

    c = ctx.check("bad-value", "malformed date value: 400 OperationOutcome", rules.SEARCH_ERRORS)
    dated = next(
        (
            (t, n)
            for t in searchable
            for n, k in sorted(caps.search_params(t).items())
            if k == "date" and not n.startswith("_")
        ),
        None,
    )
    if dated is None:
        c.skip("no declared date parameter to send a malformed value to")
    else:
        reply = await ctx.client.get(dated[0], params={dated[1]: "not-a-date"})
        expect_outcome(c, reply, (400,))

    writable = _prefer("Patient", creatable)
    for check_id, title, kwargs, statuses, rule in (
        (
            "content-type",
            "create with Content-Type text/plain: 415",
            {"content": b"resourceType=Patient", "headers": {"Content-Type": "text/plain"}},
            (415,),
            rules.MIME,
        ),
        (
            "invalid-resource",
            "create of an invalid resource: 400/422",
            {"json": {"resourceType": writable, "kitNoSuchElement": True}},
            (400, 422),
            rules.CREATE,
        ),
        (
            "wrong-type",
            "create with a body of another type: 400/422",
            {"json": {"resourceType": "Basic" if writable != "Basic" else "Patient"}},
            (400, 422),
            rules.CREATE,
        ),
    ):
        c = ctx.check(check_id, title, rule)
        if writable is None:
            c.skip("no type declares create")
        elif ctx.read_only:
            c.skip("read-only run: the kit sends no writes")
        else:
            expect_outcome(c, await ctx.client.request("POST", writable, **kwargs), statuses)

    c = ctx.check("missing-token", "request without a token: 401 OperationOutcome", rules.SECURITY)
    if target is None:
        c.skip("no type declares search-type")
    elif not caps.secured():
        c.skip("the CapabilityStatement declares no security service")
    else:
        reply = await ctx.client.get(target, authorize=False)
        expect_outcome(c, reply, (401,))


def _prefer(rtype: str, among: list[str]) -> str | None:
    if rtype in among:
        return rtype
    return among[0] if among else None
