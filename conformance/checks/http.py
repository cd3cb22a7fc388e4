"""Group `http`: content types, versions and ETags, If-Match, paging with _count, _include.

https://hl7.org/fhir/R4/http.html#mime-type (application/fhir+json), #versioning and
#concurrency (ETag W/"versionId", If-Match answered 412 when stale), and
https://hl7.org/fhir/R4/search.html#count (_count pages with a `next` link that leads to the
rest) and #include (_include / _revinclude, when the statement declares them).
"""

from __future__ import annotations

from conformance import rules
from conformance.checks.common import expect_outcome, is_bundle
from conformance.client import Reply
from conformance.context import Check, Context
from conformance.fixtures import Fixtures, fixtures
from conformance.samples import SAMPLES

__all__ = ["run"]


async def run(ctx: Context) -> None:
    fx = await fixtures(ctx)
    caps = ctx.capabilities
    declared = caps.interactions("Patient")
    pa = fx.pa
    why = fx.problems.get("Patient", "")

    c = ctx.check("read.headers", "read: fhir+json, ETag matching meta.versionId", rules.VERSIONING)
    if not pa or "read" not in declared:
        c.skip(why or "Patient read is not declared")
    else:
        r = await ctx.client.get(f"Patient/{pa}")
        c.saw(r)
        ctype = r.headers.get("content-type", "")
        vid = ((r.body or {}).get("meta") or {}).get("versionId") if r.body else None
        etag = r.headers.get("etag", "")
        if (
            c.expect(r.status == 200, f"status {r.status}, expected 200")
            and c.expect(ctype.startswith("application/fhir+json"), f"Content-Type {ctype!r}")
            and c.expect(bool(vid), "no meta.versionId")
            and c.expect(etag == f'W/"{vid}"', f'ETag {etag!r}, expected W/"{vid}"')
        ):
            c.ok()

    c = ctx.check("if-match", "update with a stale If-Match: 412", rules.VERSIONING)
    if not pa or "update" not in declared:
        c.skip(why or "Patient update is not declared")
    else:
        current = await ctx.client.get(f"Patient/{pa}")
        body = current.body if isinstance(current.body, dict) else {}
        r = await ctx.client.request(
            "PUT", f"Patient/{pa}", json=body, headers={"If-Match": 'W/"987654321"'}
        )
        expect_outcome(c, r, (412,))

    c = ctx.check("paging", "_count=1 pages through the matches by `next`", rules.PAGING)
    params = caps.search_params("Patient")
    if not pa or "search-type" not in declared or "_id" not in params:
        c.skip(why or "Patient search by _id is not declared")
    else:
        await _paging(ctx, c, fx.pa, fx.pb)

    await _include(ctx, fx)


async def _paging(ctx: Context, c: Check, pa: str, pb: str) -> None:
    r = await ctx.client.get("Patient", params={"_id": f"{pa},{pb}", "_count": "1"})
    c.saw(r)
    if not (
        c.expect(r.status == 200, f"status {r.status}, expected 200")
        and c.expect(is_bundle(r.body, "searchset"), "not a searchset Bundle")
        and c.expect(len(r.entries("match")) == 1, f"{len(r.entries('match'))} matches, not 1")
    ):
        return
    seen = r.ids()
    next_url = r.link("next")
    if not c.expect(bool(next_url), "two matches, _count=1 and no next link"):
        return
    r2 = await ctx.client.get(next_url)  # type: ignore[arg-type]
    c.saw(r2)
    if not c.expect(r2.status == 200, f"next page: status {r2.status}"):
        return
    seen |= r2.ids()
    want = {f"Patient/{pa}", f"Patient/{pb}"}
    if c.expect(seen == want, f"the two pages held {sorted(seen)}, expected {sorted(want)}"):
        c.ok()


async def _include(ctx: Context, fx: Fixtures) -> None:
    """Per sample type: T?_id=A&_include=T:p brings Patient A (not B), for each reference
    parameter p whose A value points at Patient A; Patient?_id=A&_revinclude=T:p brings T's A."""
    caps = ctx.capabilities
    checked = 0
    for rtype, (a, b) in sorted(fx.pairs.items()):
        for name, (value, _) in sorted(SAMPLES[rtype].values.items()):
            if value != "Patient/{PA}" or caps.search_params(rtype).get(name) != "reference":
                continue
            spec = f"{rtype}:{name}"
            if spec in caps.includes(rtype):
                checked += 1
                c = ctx.check(f"include.{spec}", f"{rtype}?_include={spec}", rules.INCLUDE)
                r = await ctx.client.get(rtype, params={"_id": a, "_include": spec})
                _judge_include(c, r, f"{rtype}/{a}", f"Patient/{fx.pa}", f"Patient/{fx.pb}")
            if spec in caps.revincludes("Patient"):
                checked += 1
                c = ctx.check(f"revinclude.{spec}", f"Patient?_revinclude={spec}", rules.INCLUDE)
                r = await ctx.client.get("Patient", params={"_id": fx.pa, "_revinclude": spec})
                _judge_include(c, r, f"Patient/{fx.pa}", f"{rtype}/{a}", f"{rtype}/{b}")
    if not checked:
        why = fx.problems.get("Patient") or (
            "no sample type's reference parameter is in searchInclude or searchRevInclude"
        )
        ctx.check("include", "_include and _revinclude", rules.INCLUDE).skip(why)


def _judge_include(c: Check, r: Reply, match: str, included: str, unrelated: str) -> None:
    c.saw(r)
    if (
        c.expect(r.status == 200, f"status {r.status}, expected 200")
        and c.expect(match in r.ids(), f"the match {match} is missing")
        and c.expect(included in r.ids("include"), f"{included} was not included")
        and c.expect(unrelated not in r.ids(None), f"the unrelated {unrelated} came too")
    ):
        c.ok()
