"""Search criteria: a query string parsed into typed, normalised conditions.

Implements the parameter syntax of https://hl7.org/fhir/R4/search.html for the parameters of
each type (the official definitions, see registry.py and extract.py):

- token (`system|code`, `|code`, `system|`, `code`; `:not`, `:text`), uri (exact, `:below`,
  `:above`), string (starts-with; `:exact`, `:contains`), date (prefixes over precision-aware
  ranges), reference (`Type/id`, `id`, absolute URL, `:Type`), number and quantity
  (`[prefix]value[|system|code]` with the value's precision), composite (`a$b`, for composites
  over the resource itself such as Observation `code-value-quantity`);
- `:missing` on every indexed parameter; OR with `,` (`\\,` escapes), AND by repetition;
- chaining (`subject:Patient.name=x`, `patient.identifier=x`, up to three links) and reverse
  chaining (`_has:Observation:patient:code=x`, nestable).

Anything else is refused by name (400), never silently ignored. Compilation to SQL is sql.py's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from urllib.parse import parse_qsl

from app.errors import Invalid
from app.fhir.models import RESOURCE_TYPES
from app.fhir.search.dates import date_range
from app.fhir.search.extract import (
    date_params,
    number_params,
    quantity_params,
    reference_params,
    string_params,
    token_params,
    uri_params,
)
from app.fhir.search.registry import params_for

__all__ = [
    "MAX_CRITERIA",
    "CompositeValue",
    "Criteria",
    "Criterion",
    "DateValue",
    "NumberValue",
    "RefValue",
    "StringValue",
    "TokenValue",
    "Value",
    "parse_criteria",
    "parse_parameter",
    "search_params",
]

MAX_CRITERIA = 100  # parameters per request, and OR-values per parameter
MAX_CHAIN = 3
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@cache
def search_params(resource_type: str) -> dict[str, str]:
    """The parameters this server can search on for a type, with their FHIR search type:
    `_id`, every indexed parameter (see extract.py) and the composites over the resource
    itself whose components are indexed."""
    out = dict(_indexed_params(resource_type))
    for code, param in params_for(resource_type).items():
        if param.type == "composite" and _composite_parts(resource_type, code):
            out[code] = "composite"
    return out


@cache
def _indexed_params(resource_type: str) -> dict[str, str]:
    out = {"_id": "token"}
    for kind, params in (
        ("token", token_params),
        ("uri", uri_params),
        ("reference", reference_params),
        ("string", string_params),
        ("date", date_params),
        ("quantity", quantity_params),
        ("number", number_params),
    ):
        out.update((code, kind) for code, _ in params(resource_type))
    return out


@cache
def _composite_parts(resource_type: str, code: str) -> tuple[tuple[str, str], ...]:
    """(component parameter, its type) of a composite whose base is the resource itself; ()
    for composites over repeating parts (`Observation.component`), which need per-element
    index rows this server does not keep."""
    param = params_for(resource_type)[code]
    if param.expression != resource_type or not param.components:
        return ()
    kinds = _indexed_params(resource_type)
    parts = tuple((c.param, kinds.get(c.param, "")) for c in param.components)
    if any(kind in ("", "composite") for _, kind in parts):
        return ()
    return parts


# ---- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenValue:
    system: str | None  # None: any system; "" : explicitly no system
    code: str | None  # None: any code

    def render(self) -> str:
        if self.system is None:
            return _escape(self.code or "")
        return f"{_escape(self.system)}|{_escape(self.code or '')}"


@dataclass(frozen=True, slots=True)
class StringValue:
    """A string (or token `:text`) value with its modifier: starts-with (default), `exact`,
    `contains`; uri values use `below` and `above` too."""

    text: str
    modifier: str = ""

    def render(self) -> str:
        return f"{self.modifier}:{_escape(self.text)}" if self.modifier else _escape(self.text)


@dataclass(frozen=True, slots=True)
class DateValue:
    """A date search value: a prefix and the UTC range [low, high) its text covers."""

    prefix: str
    text: str
    low: datetime
    high: datetime

    def render(self) -> str:
        return f"{self.prefix}{_escape(self.text)}"


@dataclass(frozen=True, slots=True)
class NumberValue:
    """A number or quantity value: a prefix, the number, and the range [low, high) its
    precision covers (`5.4` is 5.35 up to 5.45); quantities may name a unit system and code."""

    prefix: str
    text: str
    value: float
    low: float
    high: float
    system: str | None = None
    code: str | None = None

    def render(self) -> str:
        unit = "" if self.system is None and self.code is None else f"|{self.system or ''}"
        unit += f"|{self.code or ''}" if unit else ""
        return f"{self.prefix}{self.text}{unit}"


@dataclass(frozen=True, slots=True)
class RefValue:
    """A reference search value: `Type/id`, `id` (any type, or the `:Type` modifier's), or an
    absolute URL of a resource on another server."""

    type: str | None
    id: str | None
    url: str | None = None

    def render(self) -> str:
        if self.url is not None:
            return _escape(self.url)
        return _escape(f"{self.type}/{self.id}" if self.type else self.id or "")


@dataclass(frozen=True, slots=True)
class CompositeValue:
    """One value of a composite parameter: a value per component, in definition order."""

    parts: tuple[tuple[str, Value], ...]  # (component parameter, its value)

    def render(self) -> str:
        return "$".join(v.render() for _, v in self.parts)


Value = TokenValue | StringValue | DateValue | NumberValue | RefValue | CompositeValue


@dataclass(frozen=True, slots=True)
class Criterion:
    """One parameter's condition: OR over `values`; or a chain / reverse chain over `nested`.

    kind: the parameter's search type, or `chain` (`nested` holds the condition per target
    type) or `has` (`nested` holds the condition on the referring type, `via` the referring
    parameter)."""

    param: str
    values: tuple[Value, ...]
    kind: str = "token"
    modifier: str = ""  # "missing" or "not" (the others live in the values)
    nested: tuple[tuple[str, Criterion], ...] = ()
    via: str = ""

    @property
    def key(self) -> str:
        if self.kind == "chain":
            return f"{self.param}.[{'|'.join(f'{t}:{c.key}' for t, c in self.nested)}]"
        if self.kind == "has":
            (source, inner) = self.nested[0]
            return f"_has:{source}:{self.via}:{inner.key}"
        return f"{self.param}:{self.modifier}" if self.modifier else self.param

    def rendered_values(self) -> str:
        if self.nested:
            return self.nested[0][1].rendered_values()
        return ",".join(sorted(v.render() for v in self.values))


@dataclass(frozen=True, slots=True)
class Criteria:
    resource_type: str
    criteria: tuple[Criterion, ...]  # AND

    def normalized(self) -> str:
        parts = sorted(f"{c.key}={c.rendered_values()}" for c in self.criteria)
        return f"{self.resource_type}?{'&'.join(parts)}"

    def key_hash(self, scope: str | None = None) -> str:
        """The conditional-create key; `scope` (a Patient id) keeps a confined caller's keys
        apart from everyone else's."""
        text = self.normalized() if scope is None else f"Patient/{scope}:{self.normalized()}"
        return hashlib.sha256(text.encode()).hexdigest()

    def where(self, guard: object = None, *, driven: bool = False) -> object:
        """The SQL condition on `resource` (see sql.py); `guard` applies the caller's access
        policy to the resources chains and `_has` look into; `driven`: another condition
        (a compartment) drives the search."""
        from app.fhir.search.sql import criteria_condition

        return criteria_condition(self, guard, driven=driven)  # type: ignore[arg-type]


# ---- parsing ---------------------------------------------------------------------------------


def parse_criteria(
    resource_type: str,
    pairs: str | list[tuple[str, str]],
    *,
    require_some: bool = False,
    base_url: str | None = None,
) -> Criteria:
    """Parse `a=b&c=d` (or already split pairs) into Criteria; unknown parameters -> 400."""
    if isinstance(pairs, str):
        pairs = parse_qsl(pairs.lstrip("?"), keep_blank_values=True)
    if len(pairs) > MAX_CRITERIA:
        raise Invalid(f"at most {MAX_CRITERIA} search parameters per request", code="too-costly")
    out = [parse_parameter(resource_type, name, raw, base_url=base_url) for name, raw in pairs]
    if require_some and not out:
        raise Invalid("conditional interactions need at least one search criterion")
    return Criteria(resource_type, tuple(out))


def parse_parameter(
    resource_type: str, name: str, raw: str, *, base_url: str | None = None, depth: int = 0
) -> Criterion:
    """One `name=value` pair of a search on `resource_type` (Invalid names the parameter)."""
    if "\x00" in raw or "\x00" in name:
        raise Invalid("search values may not contain the NUL character")
    if depth > MAX_CHAIN:
        raise Invalid(f"'{name}': chains are limited to {MAX_CHAIN} links", code="too-costly")
    if name.startswith("_has:"):
        return _reverse_chain(resource_type, name, raw, base_url, depth)
    if "." in name:
        return _chain(resource_type, name, raw, base_url, depth)
    base, _, modifier = name.partition(":")
    kind = search_params(resource_type).get(base)
    if kind is None:
        raise Invalid(
            f"unknown search parameter '{name}' for {resource_type}", code="not-supported"
        )
    if modifier == "missing" and base != "_id" and kind != "composite":
        if raw not in ("true", "false"):
            raise Invalid(f"{name} takes true or false")
        return Criterion(base, (TokenValue(None, raw),), kind, "missing")
    if modifier and modifier not in _MODIFIERS.get(kind, ()) and not _type_modifier(kind, modifier):
        raise Invalid(
            f"modifier ':{modifier}' is not supported on parameter '{base}'",
            code="not-supported",
        )
    if base == "_id" and modifier:
        raise Invalid("_id takes no modifier", code="not-supported")
    texts = [v for v in _split_or(raw) if v != ""]
    if not texts:
        raise Invalid(f"search parameter '{name}' has no value")
    if len(texts) > MAX_CRITERIA:
        raise Invalid(f"at most {MAX_CRITERIA} values for '{name}' per request", code="too-costly")
    values = tuple(_value(resource_type, base, kind, modifier, text, base_url) for text in texts)
    if kind == "token" and modifier == "text":
        kind = "string"  # matched against the indexed display texts (see extract.py)
        base = f"{base}:text"
    return Criterion(base, values, kind, "not" if modifier == "not" else "")


_MODIFIERS = {
    "token": ("not", "text"),
    "string": ("exact", "contains"),
    "uri": ("below", "above"),
}


def _type_modifier(kind: str, modifier: str) -> bool:
    return kind == "reference" and modifier in RESOURCE_TYPES


def _value(
    resource_type: str, param: str, kind: str, modifier: str, raw: str, base_url: str | None
) -> Value:
    """One OR-value (still escaped: composites and tokens split it further)."""
    text = _unescape(raw)
    match kind:
        case "date":
            return _date(param, text)
        case "string":
            return StringValue(text, modifier)
        case "reference":
            return _reference(text, modifier or None, base_url)
        case "uri":  # matched whole (a canonical's `|version` included) unless below/above
            return StringValue(text, modifier) if modifier else TokenValue(None, text)
        case "number":
            return _number(param, text)
        case "quantity":
            return _quantity(param, raw)
        case "composite":
            return _composite(resource_type, param, raw, base_url)
        case _:
            if modifier == "text":
                return StringValue(text)
            return _token(raw)


def _split_or(raw: str, sep: str = ",") -> list[str]:
    """Split on unescaped `sep`, keeping every escape for the value's own parser."""
    values, cur, escaped = [], "", False
    for ch in raw:
        if escaped:
            cur += ch
            escaped = False
        elif ch == "\\":
            cur += ch
            escaped = True
        elif ch == sep:
            values.append(cur)
            cur = ""
        else:
            cur += ch
    values.append(cur)
    return values


def _unescape(text: str) -> str:
    """`\\,`, `\\|`, `\\$` and `\\\\` stand for themselves; other backslashes are kept."""
    out, escaped = "", False
    for ch in text:
        if escaped:
            out += ch if ch in ",|$\\" else "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out += ch
    return out + ("\\" if escaped else "")


def _split_pipe(text: str) -> list[str]:
    """A token or quantity value's parts: split on unescaped `|`, each part unescaped."""
    return [_unescape(part) for part in _split_or(text, "|")]


def _token(text: str) -> TokenValue:
    parts = _split_pipe(text)
    if len(parts) == 1:
        return TokenValue(system=None, code=parts[0])
    system, code = parts[0], "|".join(parts[1:])
    return TokenValue(system=system, code=code or None)


def _reference(text: str, of_type: str | None, base_url: str | None) -> RefValue:
    if base_url and text.startswith(base_url + "/"):
        text = text[len(base_url) + 1 :]
    if "://" in text:
        return RefValue(None, None, text)
    parts = text.split("/")
    if len(parts) in (2, 4) and parts[0] in RESOURCE_TYPES:
        if of_type and parts[0] != of_type:
            raise Invalid(f"reference {text!r} contradicts the :{of_type} modifier")
        return RefValue(parts[0], parts[1])
    if "/" in text:
        raise Invalid(f"{text!r} is not a reference (Type/id, id or an absolute URL)")
    return RefValue(of_type, text)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")


def _prefixed(text: str) -> tuple[str, str]:
    if text[:2] in _PREFIXES:
        return text[:2], text[2:]
    return "eq", text


def _date(param: str, text: str) -> DateValue:
    prefix, body = _prefixed(text)
    found = date_range(body)
    if found is None:
        raise Invalid(f"'{text[:40]}' is not a date for parameter '{param}' (e.g. ge2024-01-31)")
    return DateValue(prefix, body, *found)


def _number(param: str, text: str, *, what: str = "number") -> NumberValue:
    prefix, body = _prefixed(text)
    try:
        exact = Decimal(body)
    except InvalidOperation:
        exact = None
    if exact is None or not exact.is_finite() or len(body) > 40 or body.strip() != body:
        raise Invalid(f"'{text[:40]}' is not a {what} for parameter '{param}' (e.g. gt5.4)")
    exponent = exact.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)  # half a unit in the last written digit
    return NumberValue(prefix, body, float(exact), float(exact - half), float(exact + half))


def _quantity(param: str, text: str) -> NumberValue:
    parts = _split_pipe(text)
    if len(parts) not in (1, 3):
        raise Invalid(f"'{text[:60]}' is not a quantity for '{param}' (e.g. 5.4|system|code)")
    number = _number(param, parts[0], what="quantity")
    if len(parts) == 1:
        return number
    system, code = parts[1] or None, parts[2] or None
    return NumberValue(
        number.prefix, number.text, number.value, number.low, number.high, system, code
    )


def _composite(resource_type: str, param: str, text: str, base_url: str | None) -> Value:
    components = _composite_parts(resource_type, param)
    texts = _split_or(text, "$")
    if len(texts) != len(components):
        raise Invalid(
            f"'{param}' takes {len(components)} values joined by '$', e.g. "
            "http://loinc.org|8480-6$gt100"
        )
    parts = []
    for (component, kind), part in zip(components, texts, strict=True):
        if part == "":
            raise Invalid(f"'{param}': the value for '{component}' is empty")
        parts.append((component, _value(resource_type, component, kind, "", part, base_url)))
    return CompositeValue(tuple(parts))


def _chain(resource_type: str, name: str, raw: str, base_url: str | None, depth: int) -> Criterion:
    """`ref[:Type].rest`: resources whose `ref` points at a resource matching `rest=raw`."""
    head, _, rest = name.partition(".")
    base, _, of_type = head.partition(":")
    if search_params(resource_type).get(base) != "reference":
        raise Invalid(
            f"'{name}': chaining needs a reference parameter, and '{base}' is not one on "
            f"{resource_type}",
            code="not-supported",
        )
    if of_type and of_type not in RESOURCE_TYPES:
        raise Invalid(f"'{name}': unknown resource type '{of_type}'", code="not-supported")
    targets = (of_type,) if of_type else params_for(resource_type)[base].target
    inner_name = rest.partition(":")[0].partition(".")[0]
    nested = []
    for target in targets:
        if target in RESOURCE_TYPES and (
            inner_name in search_params(target) or inner_name.startswith("_has")
        ):
            nested.append(
                (target, parse_parameter(target, rest, raw, base_url=base_url, depth=depth + 1))
            )
    if not nested:
        raise Invalid(
            f"'{name}': no target of '{base}' has a search parameter '{inner_name}'",
            code="not-supported",
        )
    return Criterion(base, (), "chain", nested=tuple(nested))


def _reverse_chain(
    resource_type: str, name: str, raw: str, base_url: str | None, depth: int
) -> Criterion:
    """`_has:Type:ref:rest`: resources that a `Type` resource matching `rest=raw` points at
    through its parameter `ref` (https://hl7.org/fhir/R4/search.html#has)."""
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise Invalid(f"'{name}' is not of the form _has:Type:reference:parameter")
    _, source, via, rest = parts
    if source not in RESOURCE_TYPES:
        raise Invalid(f"'{name}': unknown resource type '{source}'", code="not-supported")
    if search_params(source).get(via) != "reference":
        raise Invalid(
            f"'{name}': '{via}' is not a reference parameter of {source}", code="not-supported"
        )
    targets = params_for(source)[via].target
    if targets and resource_type not in targets:
        raise Invalid(f"'{name}': {source}.{via} never points at a {resource_type}")
    inner = parse_parameter(source, rest, raw, base_url=base_url, depth=depth + 1)
    return Criterion(f"_has:{source}:{via}", (), "has", nested=((source, inner),), via=via)
