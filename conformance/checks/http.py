"""Group `http`: content types, versions and ETags, If-Match, paging with _count, _include.

https://hl7.org/fhir/R4/http.html#mime-type (application/fhir+json), #versioning and
#concurrency (ETag W/"versionId", If-Match answered 412 when stale), and
https://hl7.org/fhir/R4/search.html#count (_count pages with a `next` link that leads to the
rest), #include (_include / _revinclude, when the statement declares them), and the result
parameters #sort, #summary and #elements on the sample Patients.
"""

from __future__ import annotations

from typing import Any

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
    if pa and "search-type" in declared and "_id" in params:
        await _result_parameters(ctx, fx, params)


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


async def _result_parameters(ctx: Context, fx: Fixtures, params: dict[str, str]) -> None:
    """_sort, _summary=count, _elements on the Patient pair (search.html#sort, #summary,
    #elements). The statement cannot declare these, so a 400 is a skip; a 200 must be right."""
    pair = f"{fx.pa},{fx.pb}"
    a, b = f"Patient/{fx.pa}", f"Patient/{fx.pb}"
    probes: list[tuple[str, dict[str, str], Any]] = [
        ("summary-count", {"_summary": "count"}, _counted),
        ("elements", {"_elements": "gender"}, _trimmed),
    ]
    if "birthdate" in params:
        probes += [
            ("sort", {"_sort": "birthdate"}, lambda r: _ordered(r, [a, b])),
            ("sort-descending", {"_sort": "-birthdate"}, lambda r: _ordered(r, [b, a])),
        ]
    for label, extra, judge in probes:
        shown = "&".join(f"{k}={v}" for k, v in extra.items())
        c = ctx.check(f"result.{label}", f"Patient?_id=A,B&{shown}", rules.RESULT_PARAMETERS)
        r = await ctx.client.get("Patient", params={"_id": pair, **extra})
        c.saw(r)
        if r.status == 400:
            c.skip("the server refuses this result parameter with 400, as it may")
            continue
        if c.expect(r.status == 200, f"status {r.status}, expected 200"):
            problem = judge(r)
            if c.expect(problem is None, problem or ""):
                c.ok()


def _counted(r: Reply) -> str | None:
    total = r.body.get("total") if isinstance(r.body, dict) else None
    if total != 2:
        return f"total is {total!r}, expected 2"
    return "_summary=count returned entries" if r.entries("match") else None


def _trimmed(r: Reply) -> str | None:
    entries = r.entries("match")
    if len(entries) != 2:
        return f"{len(entries)} matches, expected 2"
    if any("name" in e or "birthDate" in e for e in entries):
        return "elements not asked for (name, birthDate) are still there"
    if not all("gender" in e for e in entries):
        return "the element asked for (gender) is missing"
    return None


def _ordered(r: Reply, want: list[str]) -> str | None:
    got = [f"{e.get('resourceType')}/{e.get('id')}" for e in r.entries("match")]
    return None if got == want else f"order {got}, expected {want}"
