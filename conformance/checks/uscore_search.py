"""The `us-core` group's searches: every SHALL search of a claimed profile, on a real instance.

https://hl7.org/fhir/us/core/STU6.1/CapabilityStatement-us-core-server.html. For one instance
of the profile (the kit's sample, or one found on the server in a read-only run) the kit turns
the instance's own values into each SHALL search (app/fhir/uscore SEARCH_PATHS says which
element each parameter searches) and checks:

- the search finds the instance, and changing any one parameter to a value the instance does
  not have leaves it out (so no parameter is ignored);
- each SHALL comparator (gt, ge, lt, le) on a date, with a value two days outside the
  instance's dates on either side (time zones cannot blur a two-day margin);
- token parameters as `code` alone and references as a bare id, besides `system|code` and
  `Type/id` (general-requirements.html#search-syntax), once per parameter;
- multipleOr SHALL parameters with a comma-separated list, and SHALL chains.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from app.fhir.uscore import BY_SLUG, COMPARATORS, SEARCH_PATHS, Profile, values_at
from conformance import rules
from conformance.client import Reply
from conformance.context import Check, Context

__all__ = ["search_profile", "search_value"]

_ABSENT = f"kit-absent-{uuid.uuid4().hex[:12]}"
_TEXT_ABSENT = "Zzkitabsent"
# another valid code of the required value set, to search for what the instance is not
_OTHER_CODE = {
    "gender": ("male", "female", "other"),
    "intent": ("plan", "order", "proposal"),
    "status": ("entered-in-error", "active", "completed"),
}
_PAGES = 5


def search_value(instance: dict[str, Any], profile: Profile, param: str) -> str | None:
    """The value of `param` that matches `instance`, as a search string (None if it has none)."""
    path, kind = SEARCH_PATHS[profile.type][param]
    if kind == "id":
        return instance.get("id")
    values = [v for v in values_at(instance, path) if v not in (None, "", [], {})]
    if kind == "date":
        low, _ = _bounds(instance, path)
        return f"ge{low.isoformat()}" if low else None
    if not values:
        return None
    first = values[0]
    if kind == "Reference":
        ref = first.get("reference") if isinstance(first, dict) else None
        return "/".join(ref.split("/")[-2:]) if isinstance(ref, str) and "/" in ref else None
    if kind == "CodeableConcept":
        coding = _coding(values, profile, path)
        if coding is None:
            return None
        system = coding.get("system")
        return f"{system}|{coding['code']}" if system else coding["code"]
    if kind == "Identifier":
        for ident in values:
            if isinstance(ident, dict) and ident.get("value"):
                system = ident.get("system")
                return f"{system}|{ident['value']}" if system else ident["value"]
        return None
    if kind == "HumanName":
        for name in values:
            if isinstance(name, dict) and (name.get("family") or name.get("given")):
                return name.get("family") or name["given"][0]
        return None
    if kind == "Address":
        for address in values:
            if isinstance(address, dict):
                for part in ("city", "postalCode", "state"):
                    if address.get(part):
                        return str(address[part])
        return None
    return str(first) if isinstance(first, str | int) else None


def _coding(values: list[Any], profile: Profile, path: str) -> dict[str, Any] | None:
    """The identity coding for the profile's identifying element, else the first coding."""
    wanted = {(c.system, c.code) for element, cs in profile.identity if element == path for c in cs}
    codings = [c for v in values if isinstance(v, dict) for c in v.get("coding", [])]
    codings = [c for c in codings if isinstance(c, dict) and c.get("code")]
    for coding in codings:
        if (coding.get("system"), coding.get("code")) in wanted:
            return coding
    return codings[0] if codings else None


def _day(text: Any) -> date | None:
    try:
        return date.fromisoformat(str(text)[:10])
    except ValueError:
        return None


def _bounds(instance: dict[str, Any], path: str) -> tuple[date | None, date | None]:
    """The first and last day the instance's date element covers (None: open or absent)."""
    for value in values_at(instance, path):
        if isinstance(value, dict):  # a Period
            low, high = _day(value.get("start")), _day(value.get("end"))
            if low or high:
                return low, high
        elif (day := _day(value)) is not None:
            return day, day
    return None, None


def _perturbed(profile: Profile, param: str, value: str) -> str:
    """A value of `param` the instance does not have."""
    _path, kind = SEARCH_PATHS[profile.type][param]
    if kind == "id":
        return _ABSENT
    if kind == "Reference":
        return f"{value.split('/')[0]}/{_ABSENT}"
    if kind in ("CodeableConcept", "Identifier"):
        system = value.split("|")[0] if "|" in value else ""
        return f"{system}|{_ABSENT}" if system else _ABSENT
    if kind == "code":
        return next((c for c in _OTHER_CODE.get(param, ()) if c != value), _ABSENT)
    if kind == "date":
        return "eq1800-01-01"
    return _TEXT_ABSENT


async def _finds(
    ctx: Context, c: Check, rtype: str, params: list[tuple[str, str]], ref: str
) -> bool:
    """Whether the search (all its pages, up to five) returns `ref` as a match; fails `c` on a
    non-searchset answer and then returns False too (the caller checks c.done)."""
    reply: Reply = await ctx.client.get(rtype, params=[*params, ("_count", "100")])
    for _ in range(_PAGES):
        c.saw(reply)
        if reply.status != 200 or reply.resource_type != "Bundle":
            c.fail(f"status {reply.status}, expected 200 with a searchset Bundle")
            return False
        if ref in reply.ids():
            return True
        nxt = reply.link("next")
        if not nxt:
            return False
        reply = await ctx.client.get(nxt)
    return False


async def search_profile(ctx: Context, profile: Profile, instance: dict[str, Any]) -> None:
    ref = f"{profile.type}/{instance.get('id')}"
    rule = rules.us_core_statement(profile.type)
    formed: set[str] = set()  # parameters whose forms, comparators and OR lists were checked
    for combo in profile.searches:
        label = "+".join(combo)
        c = ctx.check(f"{profile.slug}.search.{label}", f"{profile.type}?{label}", rule)
        values = {p: search_value(instance, profile, p) for p in combo}
        lacking = [p for p, v in values.items() if v is None]
        if lacking:
            c.skip(f"{ref} has no value for {', '.join(lacking)}, so this search cannot be built")
            continue
        params = [(p, str(v)) for p, v in values.items()]
        if not await _finds(ctx, c, profile.type, params, ref):
            if not c.done:
                c.fail(f"the search does not return {ref}, whose values it uses")
            continue
        for p in combo:
            if SEARCH_PATHS[profile.type][p][1] == "date":
                continue
            other = [(q, v if q != p else _perturbed(profile, p, v)) for q, v in params]
            if await _finds(ctx, c, profile.type, other, ref):
                c.fail(f"{p}={dict(other)[p]} still returns {ref}: {p} is ignored")
                break
        if not c.done:
            c.ok(f"finds {ref}; each parameter changed leaves it out")
        for p in combo:
            if p in formed:
                continue
            formed.add(p)
            if p in profile.comparators:
                await _comparators(ctx, profile, instance, params, p, ref)
            if p in profile.multiple_or:
                await _multiple_or(ctx, profile, params, p, ref)
            await _forms(ctx, profile, params, p, ref)
    for chain in profile.chains:
        await _chain(ctx, profile, instance, chain, ref)


async def _comparators(
    ctx: Context,
    profile: Profile,
    instance: dict[str, Any],
    params: list[tuple[str, str]],
    param: str,
    ref: str,
) -> None:
    path, _kind = SEARCH_PATHS[profile.type][param]
    low, high = _bounds(instance, path)
    rest = [(q, v) for q, v in params if q != param]
    for prefix in COMPARATORS:
        c = ctx.check(
            f"{profile.slug}.search.{param}.{prefix}",
            f"{profile.type}?{param}={prefix}...",
            rules.us_core_statement(profile.type),
        )
        if low is None:
            c.skip(f"{ref} has no start date for {param}")
            continue
        two = timedelta(days=2)
        inside = low - two if prefix in ("gt", "ge") else (high or low) + two
        outside = (high + two if high else None) if prefix in ("gt", "ge") else low - two
        found = await _finds(ctx, c, profile.type, [*rest, (param, f"{prefix}{inside}")], ref)
        if c.done:
            continue
        if not found:
            c.fail(f"{param}={prefix}{inside} does not return {ref}")
            continue
        if outside is not None and await _finds(
            ctx, c, profile.type, [*rest, (param, f"{prefix}{outside}")], ref
        ):
            c.fail(f"{param}={prefix}{outside} returns {ref}, whose dates it excludes")
            continue
        if not c.done:
            c.ok(
                f"{prefix}{inside} finds {ref}"
                + (f", {prefix}{outside} does not" if outside else "")
            )


async def _multiple_or(
    ctx: Context, profile: Profile, params: list[tuple[str, str]], param: str, ref: str
) -> None:
    c = ctx.check(
        f"{profile.slug}.search.{param}.or",
        f"{profile.type}?{param}=a,b (multipleOr SHALL)",
        rules.us_core_statement(profile.type),
    )
    value = dict(params)[param]
    either = f"{_perturbed(profile, param, value)},{value}"
    found = await _finds(
        ctx, c, profile.type, [(q, either if q == param else v) for q, v in params], ref
    )
    if not c.done:
        _ = (
            c.ok(f"{param}={either} finds {ref}")
            if found
            else c.fail(f"{param}={either} does not return {ref}")
        )


async def _forms(
    ctx: Context, profile: Profile, params: list[tuple[str, str]], param: str, ref: str
) -> None:
    """Token `code` without its system, reference as a bare id (US Core search syntax)."""
    value = dict(params)[param]
    kind = SEARCH_PATHS[profile.type][param][1]
    if kind in ("CodeableConcept", "Identifier") and "|" in value:
        other, form = value.split("|", 1)[1], "code without system"
    elif kind == "Reference" and "/" in value:
        other, form = value.split("/", 1)[1], "bare id"
    else:
        return
    c = ctx.check(
        f"{profile.slug}.search.{param}.{'code' if form.startswith('code') else 'id'}",
        f"{profile.type}?{param}= as {form}",
        rules.US_CORE_SEARCH_SYNTAX,
    )
    found = await _finds(
        ctx, c, profile.type, [(q, other if q == param else v) for q, v in params], ref
    )
    if not c.done:
        _ = (
            c.ok(f"{param}={other} finds {ref}")
            if found
            else c.fail(f"{param}={other} ({form}) does not return {ref}")
        )


async def _chain(
    ctx: Context, profile: Profile, instance: dict[str, Any], chain: str, ref: str
) -> None:
    c = ctx.check(
        f"{profile.slug}.search.{chain}",
        f"{profile.type}?{chain}= (chained, SHALL)",
        rules.us_core_statement(profile.type),
    )
    link, _, target_param = chain.partition(".")
    path, _kind = SEARCH_PATHS[profile.type][link]
    refs = [v.get("reference") for v in values_at(instance, path) if isinstance(v, dict)]
    target_ref = next((r for r in refs if isinstance(r, str) and "/" in r), None)
    if target_ref is None:
        c.skip(f"{ref} has no {link} reference to chain through")
        return
    target = await ctx.client.get("/".join(target_ref.split("/")[-2:]))
    c.saw(target)
    target_type = target.resource_type or ""
    holder = BY_SLUG.get(f"us-core-{target_type.lower()}")
    value = None
    if target.status == 200 and holder is not None and target_param in SEARCH_PATHS[target_type]:
        value = search_value(target.body, holder, target_param)
    if value is None:
        c.skip(f"could not read a {target_param} of {target_ref}")
        return
    if not await _finds(ctx, c, profile.type, [(chain, value)], ref):
        if not c.done:
            c.fail(f"{chain}={value} does not return {ref}")
        return
    absent = _perturbed(holder, target_param, value)
    if await _finds(ctx, c, profile.type, [(chain, absent)], ref):
        c.fail(f"{chain}={absent} still returns {ref}")
    elif not c.done:
        c.ok(f"{chain}={value} finds {ref}")
