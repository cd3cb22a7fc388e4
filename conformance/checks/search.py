"""Group `search`: each declared search parameter returns what it should and not what it should not.

https://hl7.org/fhir/R4/search.html. For each type with a sample pair (A, B that differ in the
parameter's value, `samples.py`), a search with A's value must find A and not B, and B's value
the reverse. Searches are narrowed to the pair with `_id=A,B` when `_id` is declared, so other
data on the server cannot hide or fake a result. Modifiers (`:exact`, `:contains`, `:not`,
`:missing`) and prefixes (`lt`, `ge`, `ne` ...) are checked on the same pair: a server may refuse
a modifier it does not support with 400 (search.html#errors), which is a skip, but a 200 with
the wrong resources is a failure.
"""

from __future__ import annotations

from conformance import rules
from conformance.client import Reply
from conformance.context import Check, Context
from conformance.fixtures import fixtures
from conformance.model import Rule
from conformance.samples import SAMPLES, fill

__all__ = ["run"]

_CONSTRUCTED = {"token", "string", "date", "reference", "quantity", "uri"}


async def run(ctx: Context) -> None:
    fx = await fixtures(ctx)
    for rtype in ctx.capabilities.types():
        if "search-type" not in ctx.capabilities.interactions(rtype):
            continue
        declared = ctx.capabilities.search_params(rtype)
        if not declared:
            continue
        if rtype not in fx.pairs:
            why = fx.problems.get(rtype) or f"no minimal {rtype} body known to the kit"
            ctx.check(
                f"{rtype}.parameters", f"{len(declared)} declared {rtype} parameters", rules.SEARCH
            ).skip(f"{why}; not exercised: {', '.join(sorted(declared))}")
            continue
        a, b = fx.pairs[rtype]
        pair = _Pair(ctx, rtype, a, b, "_id" in declared)
        values = SAMPLES[rtype].values
        for name, kind in sorted(declared.items()):
            if name == "_id":
                await pair.expect(name, kind, [("_id", a)], "A", rules.SEARCH_TYPES, scoped=False)
            elif name == "_lastUpdated":
                await _last_updated(pair)
            elif name in values and kind in _CONSTRUCTED:
                va, vb = (fill(v, fx.pa, fx.pb) for v in values[name])
                if await pair.expect(name, kind, [(name, va)], "A", rules.SEARCH_TYPES):
                    await pair.expect(
                        f"{name}.reverse", kind, [(name, vb)], "B", rules.SEARCH_TYPES
                    )
                await _modifiers(pair, name, kind, va, vb)
            else:
                reason = (
                    f"{kind} parameters are not constructed by the kit"
                    if kind not in _CONSTRUCTED
                    else f"the kit has no pair of {rtype} values for {name}"
                )
                ctx.check(f"{rtype}.{name}", f"{rtype}?{name} ({kind})", rules.SEARCH_TYPES).skip(
                    reason
                )


class _Pair:
    def __init__(self, ctx: Context, rtype: str, a: str, b: str, scope: bool) -> None:
        self.ctx, self.rtype, self.a, self.b, self.scope = ctx, rtype, a, b, scope

    async def search(self, params: list[tuple[str, str]], *, scoped: bool = True) -> Reply:
        if scoped and self.scope:
            params = [*params, ("_id", f"{self.a},{self.b}")]
        return await self.ctx.client.get(self.rtype, params=[*params, ("_count", "100")])

    async def expect(
        self,
        label: str,
        kind: str,
        params: list[tuple[str, str]],
        wanted: str,
        rule: Rule,
        *,
        scoped: bool = True,
        refusable: bool = False,
    ) -> bool:
        """Search; `wanted` is "A", "B", "AB" or "" (neither). A 400 skips when `refusable`."""
        shown = "&".join(f"{k}={v}" for k, v in params)
        c = self.ctx.check(f"{self.rtype}.{label}", f"{self.rtype}?{shown} ({kind})", rule)
        reply = await self.search(params, scoped=scoped)
        c.saw(reply)
        if refusable and reply.status == 400:
            return c.skip("the server refuses this modifier or prefix with 400, as it may")
        return _judge(c, reply, self.rtype, {"A": self.a, "B": self.b}, wanted)


def _judge(c: Check, reply: Reply, rtype: str, ids: dict[str, str], wanted: str) -> bool:
    if not c.expect(reply.status == 200, f"status {reply.status}, expected 200"):
        return False
    if not c.expect(
        isinstance(reply.body, dict) and reply.body.get("type") == "searchset",
        "the answer is not a searchset Bundle",
    ):
        return False
    found = reply.ids()
    for label, rid in ids.items():
        ref = f"{rtype}/{rid}"
        if label in wanted and ref not in found:
            return c.fail(f"{label} ({ref}) should match and is missing")
        if label not in wanted and ref in found:
            return c.fail(f"{label} ({ref}) should not match and was returned")
    return c.ok()


async def _last_updated(pair: _Pair) -> None:
    if await pair.expect(
        "_lastUpdated", "date", [("_lastUpdated", "gt2000-01-01")], "AB", rules.PREFIXES
    ):
        await pair.expect(
            "_lastUpdated.lt", "date", [("_lastUpdated", "lt2000-01-01")], "", rules.PREFIXES
        )


async def _modifiers(pair: _Pair, name: str, kind: str, va: str, vb: str) -> None:
    mod = rules.MODIFIERS
    probes: list[tuple[str, list[tuple[str, str]], str, Rule]] = []
    if kind == "string":
        inner = va[1:-1] if len(va) > 4 else va[1:]
        probes += [
            (f"{name}:exact", [(f"{name}:exact", va)], "A", mod),
            (f"{name}:contains", [(f"{name}:contains", inner.lower())], "A", mod),
        ]
        if va.swapcase() != va:
            probes.append((f"{name}:exact.case", [(f"{name}:exact", va.swapcase())], "", mod))
        probes.append((f"{name}.case", [(name, va.swapcase())], "A", rules.SEARCH_TYPES))
    elif kind == "token":
        probes += [(f"{name}:not", [(f"{name}:not", va)], "B", mod)]
        if "|" in va:
            system, _, code = va.partition("|")
            probes.append((f"{name}.code-only", [(name, code)], "A", rules.SEARCH_TYPES))
            if system and system == vb.partition("|")[0]:
                probes.append(
                    (f"{name}.system-only", [(name, f"{system}|")], "AB", rules.SEARCH_TYPES)
                )
    elif kind == "reference" and va.startswith("Patient/"):
        rid = va.removeprefix("Patient/")
        probes.append((f"{name}:Patient", [(f"{name}:Patient", rid)], "A", mod))
        if name == "patient":
            probes.append((f"{name}.id-only", [(name, rid)], "A", rules.SEARCH_TYPES))
    elif kind in ("date", "quantity"):
        pre = rules.PREFIXES
        probes += [
            (f"{name}.lt", [(name, f"lt{vb}")], "A", pre),
            (f"{name}.ge", [(name, f"ge{vb}")], "B", pre),
            (f"{name}.gt", [(name, f"gt{va}")], "B", pre),
            (f"{name}.le", [(name, f"le{va}")], "A", pre),
            (f"{name}.ne", [(name, f"ne{va}")], "B", pre),
        ]
    if kind in _CONSTRUCTED:
        probes += [
            (f"{name}:missing", [(f"{name}:missing", "true")], "", mod),
            (f"{name}:missing.false", [(f"{name}:missing", "false")], "AB", mod),
        ]
    for label, params, wanted, rule in probes:
        # a modifier or prefix may be refused; a plain form of the parameter's syntax may not
        refusable = rule is not rules.SEARCH_TYPES
        await pair.expect(label, kind, params, wanted, rule, refusable=refusable)
