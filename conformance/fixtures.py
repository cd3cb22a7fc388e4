"""The resources the kit creates once and shares between groups, and their removal.

Two Patients first, then sample pairs (see `samples.py`) of every declared type the kit can
build, A's pointing at the first Patient and B's at the second. Everything created is
recorded in `Context.created` and deleted, newest first, when the run ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conformance.context import Context
from conformance.samples import SAMPLES, fill

__all__ = ["Fixtures", "cleanup", "fixtures"]


@dataclass
class Fixtures:
    pa: str = ""
    pb: str = ""
    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (A id, B id)
    problems: dict[str, str] = field(default_factory=dict)  # type -> why no pair exists


async def create(ctx: Context, body: dict) -> tuple[str | None, str]:
    """POST a body; the new id, or None and the reason."""
    rtype = body["resourceType"]
    reply = await ctx.client.request("POST", rtype, json=body)
    if reply.status != 201 or not isinstance(reply.body, dict) or not reply.body.get("id"):
        return None, f"POST {rtype} answered {reply.status}, not 201 with the resource"
    rid = str(reply.body["id"])
    ctx.created.append(f"{rtype}/{rid}")
    return rid, ""


async def fixtures(ctx: Context) -> Fixtures:
    if "fixtures" in ctx.shared:
        return ctx.shared["fixtures"]
    fx = Fixtures()
    ctx.shared["fixtures"] = fx
    caps = ctx.capabilities
    if ctx.read_only:
        fx.problems = dict.fromkeys(caps.types(), "read-only run: the kit creates nothing")
        return fx
    if "create" not in caps.interactions("Patient"):
        fx.problems = dict.fromkeys(caps.types(), "the server declares no Patient create")
        return fx
    order = ["Patient", *sorted(t for t in SAMPLES if t != "Patient")]
    for rtype in order:
        if rtype not in caps.resources:
            continue
        if "create" not in caps.interactions(rtype):
            fx.problems[rtype] = f"{rtype} create is not declared"
            continue
        sample = SAMPLES[rtype]
        ida, why_a = await create(ctx, fill(sample.a, fx.pa, fx.pb))
        idb, why_b = await create(ctx, fill(sample.b, fx.pa, fx.pb))
        if ida is None or idb is None:
            fx.problems[rtype] = why_a or why_b
            if rtype == "Patient":
                fx.problems = dict.fromkeys(caps.types(), f"no sample Patients: {why_a or why_b}")
                return fx
            continue
        if rtype == "Patient":
            fx.pa, fx.pb = ida, idb
        fx.pairs[rtype] = (ida, idb)
    return fx


async def cleanup(ctx: Context) -> list[str]:
    """Delete what the kit created, newest first; the references it could not delete."""
    left = []
    for ref in reversed(ctx.created):
        rtype = ref.split("/", 1)[0]
        if "delete" not in ctx.capabilities.interactions(rtype):
            left.append(ref)
            continue
        reply = await ctx.client.request("DELETE", ref)
        if reply.status not in (200, 202, 204, 404, 410):
            left.append(ref)
    ctx.created.clear()
    return left
