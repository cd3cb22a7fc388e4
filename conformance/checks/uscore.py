"""Group `us-core`: a server claiming US Core 6.1.0 profiles does what each claim demands.

https://hl7.org/fhir/us/core/STU6.1/. The requirements come from one table shared with the
server (app/fhir/uscore: the US Core Server CapabilityStatement's SHALLs per profile, each
profile's mandatory and must-support elements); the checks trust nothing the server says
beyond its claims. Only profiles the CapabilityStatement names (`supportedProfile`) are held
to, and for each one:

- `us-core.server.*`: US Core Patient plus one more profile; `instantiates` only when the
  claimed profiles meet the US Core Server statement;
- `<slug>.declared`: the entry declares the SHALL interactions, search parameters,
  comparators (on date parameters), operations, _includes and _revincludes;
- `<slug>.instance`: the kit creates its sample (uscore_samples.py, every mandatory and
  must-support element filled), or in a read-only run finds an instance by the profile's
  identifying codes; `<slug>.read` reads it back;
- `<slug>.must-support`: every must-support element the sample carries comes back (a server
  SHALL be capable of populating them); read-only: which appear across the instances found;
- `<slug>.mandatory`: the instance, and up to 20 instances on the server carrying the
  profile's identifying codes (its category or LOINC code; all instances of a type with one
  profile), have the mandatory elements;
- `<slug>.search.*` (uscore_search.py): each SHALL search and combination on that instance;
- `<Type>.revinclude` / `<Type>.include.*`: the SHALL `_revinclude=Provenance:target` finds
  the kit's Provenance of the instance; the SHALL `_include`s bring the referenced resource.
"""

from __future__ import annotations

from typing import Any

from app.fhir.uscore import (
    PROFILES,
    SERVER_STATEMENT,
    Profile,
    TypeCapabilities,
    instance_of,
    instantiates_gaps,
    missing,
    populated,
    profile_for,
    unmet,
    values_at,
)
from conformance import rules
from conformance.checks.uscore_search import search_profile
from conformance.context import US_CORE, Check, Context
from conformance.uscore_samples import AUXILIARY, ORDER, SAMPLES, fill, placeholders

__all__ = ["run"]

_LOOKED_AT = 20


async def run(ctx: Context) -> None:
    caps = ctx.capabilities
    claimed: list[Profile] = []
    for rtype in caps.types():
        for canonical in caps.profiles(rtype):
            if not canonical.startswith(US_CORE):
                continue
            profile = profile_for(canonical)
            if profile is None or profile.type != rtype:
                ctx.check(
                    f"{rtype}.profile", f"{rtype} claims {canonical}", rules.US_CORE_SERVER
                ).skip("not a US Core 6.1.0 profile of this type: the kit holds no table for it")
            elif profile not in claimed:
                claimed.append(profile)
    if not claimed:
        ctx.check("profiles", "US Core profiles claimed", rules.US_CORE_SEARCH).skip(
            "the CapabilityStatement claims no US Core profile"
        )
        return
    _server(ctx, claimed)
    instances = await _instances(ctx, claimed)
    for profile in claimed:
        _declared(ctx, profile)
        instance = instances.get(profile.slug)
        if instance is None:
            continue
        served = await _read(ctx, profile, instance)
        if served is None:
            continue
        await _mandatory(ctx, profile, served)
        sent = ctx.shared["us-core-sent"].get(profile.slug)
        await _must_support(ctx, profile, served, sent)
        if "search-type" in caps.interactions(profile.type):
            await search_profile(ctx, profile, served)
    await _includes(ctx, claimed, instances)


def _server(ctx: Context, claimed: list[Profile]) -> None:
    slugs = {p.slug for p in claimed}
    c = ctx.check("server.profiles", "US Core Patient and at least one more", rules.US_CORE_SERVER)
    c.saw(ctx.shared["metadata_reply"])
    if c.expect(
        "us-core-patient" in slugs, "US Core Patient is not among the claimed profiles"
    ) and c.expect(len(slugs) > 1, "no US Core profile besides Patient is claimed"):
        c.ok(f"{len(slugs)} US Core 6.1.0 profiles claimed")
    c = ctx.check("server.instantiates", "instantiates the US Core Server", rules.US_CORE_SERVER)
    c.saw(ctx.shared["metadata_reply"])
    named = [str(u) for u in ctx.capabilities.statement.get("instantiates") or []]
    if not any(u.split("|")[0] == SERVER_STATEMENT for u in named):
        c.skip("the statement does not instantiate the US Core Server CapabilityStatement (SHOULD)")
        return
    gaps = instantiates_gaps(claimed, PROFILES)
    if c.expect(not gaps, f"instantiates the US Core Server yet lacks: {'; '.join(gaps)}"):
        c.ok()


def _declared(ctx: Context, profile: Profile) -> None:
    caps = ctx.capabilities
    entry = caps.resources.get(profile.type, {})
    declared = TypeCapabilities(
        interactions=frozenset(caps.interactions(profile.type)),
        params=caps.search_params(profile.type),
        multiple_or=frozenset(profile.multiple_or),  # a statement cannot say; searched instead
        includes=frozenset(caps.includes(profile.type)),
        revincludes=frozenset(caps.revincludes(profile.type)),
        operations=frozenset(o.get("name", "").lstrip("$") for o in entry.get("operation") or []),
        chainable=lambda _ref, _param: True,  # likewise: the chain searches show it
    )
    c = ctx.check(
        f"{profile.slug}.declared",
        f"{profile.title}: SHALL capabilities declared",
        rules.us_core_statement(profile.type),
    )
    c.saw(ctx.shared["metadata_reply"])
    gaps = unmet(profile, declared)
    if c.expect(not gaps, f"claims {profile.slug} but does not declare: {', '.join(gaps)}"):
        c.ok()


async def _instances(ctx: Context, claimed: list[Profile]) -> dict[str, dict[str, Any]]:
    """One instance per claimed profile: created from the kit's samples, else found."""
    ctx.shared["us-core-sent"] = sent = {}
    ctx.shared["us-core-evidence"] = evidence = {}
    ids: dict[str, str] = {}
    problems: dict[str, str] = {}
    if not ctx.read_only:
        needed = _closure({p.slug for p in claimed}, any(p.revincludes for p in claimed))
        for slug in ORDER:
            if slug not in needed:
                continue
            body = AUXILIARY.get(slug) or SAMPLES[slug]
            if slug == "us-core-provenance":
                body = {**body, "target": _targets(ids)}
            lacking = sorted(s for s in placeholders(body) if s not in ids)
            rtype = body["resourceType"]
            if lacking:
                problems[slug] = f"needs a {', '.join(lacking)} sample the kit could not create"
            elif "create" not in ctx.capabilities.interactions(rtype):
                problems[slug] = f"{rtype} create is not declared"
            else:
                filled = fill(body, ids)
                reply = await ctx.client.request("POST", rtype, json=filled)
                evidence[slug] = [reply.evidence]
                rid = reply.body.get("id") if isinstance(reply.body, dict) else None
                if reply.status != 201 or not rid:
                    problems[slug] = f"POST {rtype} answered {reply.status}, not 201"
                    continue
                ctx.created.append(f"{rtype}/{rid}")
                ids[slug] = str(rid)
                sent[slug] = {**filled, "id": str(rid)}
    found: dict[str, dict[str, Any]] = {}
    for profile in claimed:
        c = ctx.check(
            f"{profile.slug}.instance",
            f"an instance of {profile.title}",
            rules.us_core_profile(profile.title, profile.page),
        )
        for item in evidence.get(profile.slug, ()):
            c.saw(item)
        if profile.slug in sent:
            found[profile.slug] = sent[profile.slug]
            c.ok(f"created {profile.type}/{ids[profile.slug]} from the kit's sample")
            continue
        why = problems.get(profile.slug, "read-only run: the kit creates nothing")
        if why.startswith("POST"):  # a declared create refused a valid instance of the profile
            c.fail(f"the kit's {profile.slug} sample was not created: {why}")
        existing = await _search_instances(ctx, profile, limit=1)
        if existing:
            found[profile.slug] = existing[0]
            c.ok(f"found {profile.type}/{existing[0].get('id')} on the server ({why})")
        else:
            c.skip(f"{why}, and the server holds no instance of it")
    return found


def _closure(slugs: set[str], provenance: bool) -> set[str]:
    """The samples to create: the claimed ones, the Provenance naming them all (for the SHALL
    _revinclude), and every sample their references need."""
    out = set(slugs) | ({"us-core-provenance"} if provenance else set())
    todo = list(out)
    while todo:
        slug = todo.pop()
        body = AUXILIARY.get(slug) or SAMPLES.get(slug) or {}
        for needed in placeholders(body) - out:
            out.add(needed)
            todo.append(needed)
    return out


def _targets(ids: dict[str, str]) -> list[dict[str, str]]:
    types = {s: (AUXILIARY.get(s) or SAMPLES[s])["resourceType"] for s in ids}
    return [{"reference": f"{types[s]}/{rid}"} for s, rid in ids.items() if s in SAMPLES]


async def _search_instances(
    ctx: Context, profile: Profile, limit: int, check: Check | None = None
) -> list[dict[str, Any]]:
    """Instances of the profile on the server: searched by its identifying codes."""
    if "search-type" not in ctx.capabilities.interactions(profile.type):
        return []
    params = [("_count", str(max(limit, 1)))]
    for element, codings in profile.identity:
        params.append((element, ",".join(f"{c.system}|{c.code}" for c in codings)))
    reply = await ctx.client.get(profile.type, params=params)
    if check is not None:
        check.saw(reply)
    if reply.status != 200:
        return []
    return [r for r in reply.entries("match") if instance_of(r, profile)][:limit]


async def _read(ctx: Context, profile: Profile, instance: dict[str, Any]) -> dict[str, Any] | None:
    ref = f"{profile.type}/{instance.get('id')}"
    c = ctx.check(f"{profile.slug}.read", f"read {ref}", rules.us_core_statement(profile.type))
    if "read" not in ctx.capabilities.interactions(profile.type):
        c.skip("read is not declared (the declared check says whether it is SHALL)")
        return instance
    reply = await ctx.client.get(ref)
    c.saw(reply)
    ctx.shared["us-core-evidence"].setdefault(profile.slug, []).append(reply.evidence)
    body = reply.body if isinstance(reply.body, dict) else {}
    if c.expect(reply.status == 200, f"status {reply.status}, expected 200") and c.expect(
        body.get("resourceType") == profile.type and body.get("id") == instance.get("id"),
        f"the answer is not {ref}",
    ):
        c.ok()
        return body
    return None


async def _mandatory(ctx: Context, profile: Profile, served: dict[str, Any]) -> None:
    c = ctx.check(
        f"{profile.slug}.mandatory",
        f"{profile.title}: mandatory elements",
        rules.us_core_profile(profile.title, profile.page),
    )
    for item in ctx.shared["us-core-evidence"].get(profile.slug, [])[-1:]:
        c.saw(item)
    others = await _search_instances(ctx, profile, limit=_LOOKED_AT, check=c)
    looked = [served, *(r for r in others if r.get("id") != served.get("id"))]
    for resource in looked:
        absent = missing(resource, profile)
        if absent:
            c.fail(f"{profile.type}/{resource.get('id')} lacks {', '.join(absent)}")
            return
    c.ok(f"{len(looked)} {profile.type} resources looked at")


async def _must_support(
    ctx: Context, profile: Profile, served: dict[str, Any], sent: dict[str, Any] | None
) -> None:
    c = ctx.check(
        f"{profile.slug}.must-support",
        f"{profile.title}: must-support elements",
        rules.US_CORE_MUST_SUPPORT,
    )
    entries = [*profile.must_support, *(f"extension:{u}" for u in profile.extensions)]
    for item in ctx.shared["us-core-evidence"].get(profile.slug, []):
        c.saw(item)

    def has(resource: dict[str, Any], entry: str) -> bool:
        if entry.startswith("extension:"):
            url = entry.split(":", 1)[1]
            return any(e.get("url") == url for e in resource.get("extension") or [])
        return populated(resource, entry)

    if sent is not None:
        dropped = [e for e in entries if has(sent, e) and not has(served, e)]
        unsent = [e for e in entries if not has(sent, e)]
        if c.expect(not dropped, f"sent but not returned: {', '.join(dropped)}"):
            note = f"; the kit's sample has no {', '.join(unsent)}" if unsent else ""
            c.ok(f"all {len(entries) - len(unsent)} must-support elements sent came back{note}")
        return
    seen = [served, *await _search_instances(ctx, profile, limit=_LOOKED_AT, check=c)]
    unseen = [e for e in entries if not any(has(r, e) for r in seen)]
    if unseen:
        c.skip(
            f"read-only: not seen in the {len(seen)} instances looked at: {', '.join(unseen)} "
            "(conformant data may leave must-support elements out)"
        )
    else:
        c.ok(f"every must-support element appears across {len(seen)} instances")


async def _includes(
    ctx: Context, claimed: list[Profile], instances: dict[str, dict[str, Any]]
) -> None:
    """Per type: the SHALL _revinclude (the kit's Provenance of the instance) and _includes."""
    provenance = ctx.shared["us-core-sent"].get("us-core-provenance")
    done: set[str] = set()
    for profile in claimed:
        instance = instances.get(profile.slug)
        if profile.type in done or instance is None or not profile.searches:
            continue
        done.add(profile.type)
        rule = rules.us_core_statement(profile.type)
        ref = f"{profile.type}/{instance.get('id')}"
        for rev in profile.revincludes:
            c = ctx.check(f"{profile.type}.revinclude", f"{ref}&_revinclude={rev}", rule)
            reply = await ctx.client.get(
                profile.type, params=[("_id", str(instance.get("id"))), ("_revinclude", rev)]
            )
            c.saw(reply)
            if not c.expect(reply.status == 200, f"status {reply.status}, expected 200"):
                continue
            included = reply.ids("include")
            if provenance is not None:
                wanted = f"Provenance/{provenance.get('id')}"
                if c.expect(wanted in included, f"{wanted} targets {ref} but is not included"):
                    c.ok(f"{wanted} included")
            elif any(i.startswith("Provenance/") for i in included):
                c.ok("a Provenance of the instance is included")
            else:
                c.skip(f"no Provenance on the server targets {ref}")
        for inc in profile.includes:
            await _include(ctx, profile, instance, inc)


async def _include(ctx: Context, profile: Profile, instance: dict[str, Any], inc: str) -> None:
    ref = f"{profile.type}/{instance.get('id')}"
    c = ctx.check(
        f"{profile.type}.include.{inc.split(':')[-1]}",
        f"{ref}&_include={inc}",
        rules.us_core_statement(profile.type),
    )
    element = inc.split(":")[-1]
    targets = [
        v.get("reference")
        for v in values_at(instance, f"{element}Reference") + values_at(instance, element)
        if isinstance(v, dict) and isinstance(v.get("reference"), str)
    ]
    if not targets:
        c.skip(f"{ref} references no {element} resource")
        return
    wanted = "/".join(targets[0].split("/")[-2:])
    reply = await ctx.client.get(
        profile.type, params=[("_id", str(instance.get("id"))), ("_include", inc)]
    )
    c.saw(reply)
    if c.expect(reply.status == 200, f"status {reply.status}, expected 200") and c.expect(
        wanted in reply.ids("include"), f"{wanted} is not included"
    ):
        c.ok(f"{wanted} included")
