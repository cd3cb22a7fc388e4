"""Group `crud`: every interaction the CapabilityStatement declares for a type really works.

https://hl7.org/fhir/R4/http.html: create, read, vread, update, search-type, history-instance,
history-type and delete, in that order, on a resource the kit creates itself and deletes at the
end. Types the kit cannot build (no minimal body in `samples.py`) and read-only runs get read
and search probes instead: search the type, then read (and vread) what it returned.
"""

from __future__ import annotations

from typing import Any

from conformance import rules
from conformance.checks.common import is_bundle, same_resource
from conformance.context import Context
from conformance.fixtures import fixtures
from conformance.samples import SAMPLES, fill

__all__ = ["run"]


async def run(ctx: Context) -> None:
    fx = await fixtures(ctx)
    for rtype in ctx.capabilities.types():
        declared = ctx.capabilities.interactions(rtype)
        if rtype in SAMPLES and not ctx.read_only and "create" in declared:
            await _cycle(ctx, rtype, declared, fill(SAMPLES[rtype].a, fx.pa, fx.pb))
        else:
            await _probe(ctx, rtype, declared)


async def _probe(ctx: Context, rtype: str, declared: set[str]) -> None:
    why = (
        "read-only run"
        if ctx.read_only
        else f"no minimal {rtype} body known to the kit"
        if rtype not in SAMPLES
        else "create not declared"
    )
    found: dict[str, Any] | None = None
    if "search-type" in declared:
        c = ctx.check(f"{rtype}.search", f"search {rtype} answers a searchset Bundle", rules.SEARCH)
        reply = await ctx.client.get(rtype, params={"_count": "1"})
        c.saw(reply)
        if c.expect(reply.status == 200, f"status {reply.status}, expected 200") and c.expect(
            is_bundle(reply.body, "searchset"), "the body is not a searchset Bundle"
        ):
            entries = reply.entries("match")
            found = entries[0] if entries else None
            c.ok(f"probe only ({why})")
    if "read" in declared:
        c = ctx.check(f"{rtype}.read", f"read {rtype}", rules.READ)
        if found is None or not found.get("id"):
            c.skip(f"{why}, and a search found no {rtype} to read")
        else:
            reply = await ctx.client.get(f"{rtype}/{found['id']}")
            c.saw(reply)
            if c.expect(reply.status == 200, f"status {reply.status}, expected 200") and c.expect(
                same_resource(reply.body, rtype, found["id"]),
                "the body is not the resource asked for",
            ):
                c.ok(f"probe only ({why})")
    if "vread" in declared:
        c = ctx.check(f"{rtype}.vread", f"vread {rtype}", rules.VREAD)
        vid = ((found or {}).get("meta") or {}).get("versionId")
        if not vid:
            c.skip(f"{why}, and no {rtype} with meta.versionId was found")
        else:
            reply = await ctx.client.get(f"{rtype}/{found['id']}/_history/{vid}")  # type: ignore[index]
            c.saw(reply)
            if c.expect(reply.status == 200, f"status {reply.status}, expected 200"):
                c.ok(f"probe only ({why})")
    others = sorted(declared - {"search-type", "read", "vread"})
    if others:
        ctx.check(f"{rtype}.write", f"{', '.join(others)} on {rtype}", rules.CREATE).skip(why)


async def _cycle(ctx: Context, rtype: str, declared: set[str], body: dict[str, Any]) -> None:
    c = ctx.check(f"{rtype}.create", f"create {rtype}", rules.CREATE)
    reply = await ctx.client.request("POST", rtype, json=body)
    c.saw(reply)
    if not (
        c.expect(reply.status == 201, f"status {reply.status}, expected 201 Created")
        and c.expect(same_resource(reply.body, rtype, None), "the body is not the created resource")
        and c.expect(bool(reply.headers.get("location")), "no Location header")
    ):
        _skip_rest(ctx, rtype, declared, "create failed")
        return
    rid = str(reply.body["id"])
    ctx.created.append(f"{rtype}/{rid}")
    c.ok()
    version = ((reply.body.get("meta") or {}).get("versionId")) or ""

    if "read" in declared:
        c = ctx.check(f"{rtype}.read", f"read {rtype}", rules.READ)
        r = await ctx.client.get(f"{rtype}/{rid}")
        c.saw(r)
        if c.expect(r.status == 200, f"status {r.status}, expected 200") and c.expect(
            same_resource(r.body, rtype, rid), "the body is not the resource created"
        ):
            c.ok()
    if "vread" in declared:
        c = ctx.check(f"{rtype}.vread", f"vread {rtype}", rules.VREAD)
        if not version:
            c.fail("the created resource has no meta.versionId, so it cannot be vread")
        else:
            r = await ctx.client.get(f"{rtype}/{rid}/_history/{version}")
            c.saw(r)
            if c.expect(r.status == 200, f"status {r.status}, expected 200") and c.expect(
                same_resource(r.body, rtype, rid), "the body is not the version asked for"
            ):
                c.ok()
    if "update" in declared:
        c = ctx.check(f"{rtype}.update", f"update {rtype}", rules.UPDATE)
        changed = {**body, "id": rid, "meta": {"tag": [{"system": _TAG, "code": "updated"}]}}
        r = await ctx.client.request("PUT", f"{rtype}/{rid}", json=changed)
        c.saw(r)
        new_version = ((r.body or {}).get("meta") or {}).get("versionId") if r.body else None
        if c.expect(r.status == 200, f"status {r.status}, expected 200") and c.expect(
            new_version is None or new_version != version,
            "the update kept the old versionId",
        ):
            c.ok()
    if "search-type" in declared:
        c = ctx.check(f"{rtype}.search", f"search {rtype} finds the new resource", rules.SEARCH)
        r = await ctx.client.get(rtype, params={"_id": rid})
        c.saw(r)
        if (
            c.expect(r.status == 200, f"status {r.status}, expected 200")
            and c.expect(is_bundle(r.body, "searchset"), "not a searchset Bundle")
            and c.expect(f"{rtype}/{rid}" in r.ids(), "the new resource is not in the result")
        ):
            c.ok()
    if "history-instance" in declared:
        c = ctx.check(f"{rtype}.history-instance", f"history of one {rtype}", rules.HISTORY)
        r = await ctx.client.get(f"{rtype}/{rid}/_history")
        c.saw(r)
        want = 2 if "update" in declared else 1
        if (
            c.expect(r.status == 200, f"status {r.status}, expected 200")
            and c.expect(is_bundle(r.body, "history"), "not a history Bundle")
            and c.expect(len(r.entries()) >= want, f"fewer than {want} versions listed")
        ):
            c.ok()
    if "history-type" in declared:
        c = ctx.check(f"{rtype}.history-type", f"history of type {rtype}", rules.HISTORY)
        r = await ctx.client.get(f"{rtype}/_history", params={"_count": "5"})
        c.saw(r)
        if c.expect(r.status == 200, f"status {r.status}, expected 200") and c.expect(
            is_bundle(r.body, "history"), "not a history Bundle"
        ):
            c.ok()
    if "delete" in declared:
        c = ctx.check(f"{rtype}.delete", f"delete {rtype}", rules.DELETE)
        r = await ctx.client.request("DELETE", f"{rtype}/{rid}")
        c.saw(r)
        if not c.expect(r.status in (200, 202, 204), f"status {r.status}, expected 200/204"):
            return
        after = await ctx.client.get(f"{rtype}/{rid}")
        c.saw(after)
        if c.expect(
            after.status in (404, 410), f"read after delete answered {after.status}, not 410/404"
        ):
            ctx.created.remove(f"{rtype}/{rid}")
            c.ok()


_TAG = "urn:dxf-bridge:conformance"


def _skip_rest(ctx: Context, rtype: str, declared: set[str], why: str) -> None:
    for code in sorted(declared - {"create"}):
        ctx.check(f"{rtype}.{code}", f"{code} {rtype}", rules.CREATE).skip(why)
