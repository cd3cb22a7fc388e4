"""Search criteria: a query string parsed into typed, normalised conditions and compiled to SQL.

Supports `_id` and the token parameters of each type (from the official definitions, see
extract.py) in all four forms of https://hl7.org/fhir/R4/search.html#token
(`system|code`, `|code`, `system|`, `code`), OR with `,` (with `\\,` escaping) and AND by
repeating a parameter. Anything else is refused by name, never silently ignored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true

from app.errors import Invalid
from app.fhir.models import RESOURCE_TYPES
from app.fhir.search.dates import date_range
from app.fhir.search.extract import (
    date_params,
    normalize,
    reference_params,
    string_params,
    token_params,
    uri_params,
)
from app.store.tables import resource, spidx_date, spidx_reference, spidx_string, spidx_token

__all__ = [
    "Criteria",
    "Criterion",
    "DateValue",
    "RefValue",
    "StringValue",
    "TokenValue",
    "parse_criteria",
    "search_params",
]


MAX_CRITERIA = 100
_INDEX_TABLES = {
    "token": spidx_token,
    "uri": spidx_token,
    "reference": spidx_reference,
    "string": spidx_string,
    "date": spidx_date,
}  # parameters per request, and OR-values per parameter


@cache
def search_params(resource_type: str) -> dict[str, str]:
    """The parameters this server can search on for a type, with their FHIR search type:
    `_id` and every indexed token and reference parameter (see extract.py)."""
    out = {"_id": "token"}
    out.update((code, "token") for code, _ in token_params(resource_type))
    out.update((code, "uri") for code, _ in uri_params(resource_type))
    out.update((code, "reference") for code, _ in reference_params(resource_type))
    out.update((code, "string") for code, _ in string_params(resource_type))
    out.update((code, "date") for code, _ in date_params(resource_type))
    return out


_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


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
class StringValue:
    """A string search value with its modifier: starts-with (default), `exact` or `contains`."""

    text: str
    modifier: str = ""

    def render(self) -> str:
        return f"{self.modifier}:{_escape(self.text)}" if self.modifier else _escape(self.text)


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
class TokenValue:
    system: str | None  # None: any system; "" : explicitly no system
    code: str | None  # None: any code

    def render(self) -> str:
        if self.system is None:
            return _escape(self.code or "")
        return f"{_escape(self.system)}|{_escape(self.code or '')}"


@dataclass(frozen=True, slots=True)
class Criterion:
    param: str
    values: tuple[TokenValue | RefValue | StringValue | DateValue, ...]  # OR
    kind: str = "token"
    modifier: str = ""  # "missing" or "not" (the others live in the values)

    @property
    def key(self) -> str:
        return f"{self.param}:{self.modifier}" if self.modifier else self.param


@dataclass(frozen=True, slots=True)
class Criteria:
    resource_type: str
    criteria: tuple[Criterion, ...]  # AND

    def normalized(self) -> str:
        parts = sorted(
            f"{c.key}={','.join(sorted(v.render() for v in c.values))}" for c in self.criteria
        )
        return f"{self.resource_type}?{'&'.join(parts)}"

    def key_hash(self, scope: str | None = None) -> str:
        """The conditional-create key; `scope` (a Patient id) keeps a confined caller's keys
        apart from everyone else's."""
        text = self.normalized() if scope is None else f"Patient/{scope}:{self.normalized()}"
        return hashlib.sha256(text.encode()).hexdigest()

    def where(self) -> ColumnElement[bool]:
        return and_(true(), *(_compile(c) for c in self.criteria))


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
    out: list[Criterion] = []
    for name, raw in pairs:
        if "\x00" in raw or "\x00" in name:
            raise Invalid("search values may not contain the NUL character")
        base, _, modifier = name.partition(":")
        kind = search_params(resource_type).get(base)
        if kind is None:
            raise Invalid(
                f"unknown search parameter '{name}' for {resource_type}", code="not-supported"
            )
        if modifier == "missing" and base != "_id":
            if raw not in ("true", "false"):
                raise Invalid(f"{name} takes true or false")
            out.append(Criterion(base, (TokenValue(None, raw),), kind, "missing"))
            continue
        if modifier and not (
            (kind == "reference" and modifier in RESOURCE_TYPES)
            or (kind == "string" and modifier in ("exact", "contains"))
            or (kind == "token" and modifier == "not" and base != "_id")
        ):
            raise Invalid(
                f"modifier ':{modifier}' is not supported on parameter '{base}'",
                code="not-supported",
            )
        values: tuple[TokenValue | RefValue | StringValue | DateValue, ...]
        if kind == "date":
            values = tuple(_date(base, v) for v in _split_or(raw) if v != "")
        elif kind == "string":
            values = tuple(StringValue(v, modifier) for v in _split_or(raw) if v != "")
        elif kind == "reference":
            values = tuple(
                _reference(v, modifier or None, base_url) for v in _split_or(raw) if v != ""
            )
        elif kind == "uri":  # matched whole and exactly (a canonical's `|version` included)
            values = tuple(TokenValue(None, v) for v in _split_or(raw) if v != "")
        else:
            values = tuple(_token(v) for v in _split_or(raw) if v != "")
        if not values:
            raise Invalid(f"search parameter '{name}' has no value")
        if len(values) > MAX_CRITERIA:
            raise Invalid(
                f"at most {MAX_CRITERIA} values for '{name}' per request", code="too-costly"
            )
        out.append(Criterion(base, values, kind, "not" if modifier == "not" else ""))
    if require_some and not out:
        raise Invalid("conditional interactions need at least one search criterion")
    return Criteria(resource_type, tuple(out))


def _split_or(raw: str) -> list[str]:
    values, cur, escaped = [], "", False
    for ch in raw:
        if escaped:
            cur += ch if ch in ",|$\\" else "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            values.append(cur)
            cur = ""
        else:
            cur += ch
    values.append(cur + ("\\" if escaped else ""))
    return values


def _token(text: str) -> TokenValue:
    if "|" in text:
        system, _, code = text.partition("|")
        return TokenValue(system=system, code=code or None)
    return TokenValue(system=None, code=text)


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
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|")


def _compile(criterion: Criterion) -> ColumnElement[bool]:
    if criterion.param == "_id":
        ids = [
            v.code
            for v in criterion.values
            if isinstance(v, TokenValue) and v.system is None and v.code
        ]
        return resource.c.res_id.in_(ids) if ids else false()
    if criterion.modifier == "missing":
        present = _indexed(criterion)
        missing = criterion.values[0]
        return ~present if isinstance(missing, TokenValue) and missing.code == "true" else present
    if any(isinstance(v, RefValue) for v in criterion.values):
        return _compile_reference(criterion)
    if any(isinstance(v, StringValue) for v in criterion.values):
        return _compile_string(criterion)
    if any(isinstance(v, DateValue) for v in criterion.values):
        return _compile_date(criterion)
    alternatives = []
    for v in criterion.values:
        assert isinstance(v, TokenValue)
        conds = []
        if v.code is not None:
            conds.append(spidx_token.c.value == v.code)
        if v.system == "":
            conds.append(spidx_token.c.system.is_(None))
        elif v.system is not None:
            conds.append(spidx_token.c.system == v.system)
        alternatives.append(and_(true(), *conds))
    matched = _indexed(criterion, or_(*alternatives))
    return ~matched if criterion.modifier == "not" else matched


def _compile_reference(criterion: Criterion) -> ColumnElement[bool]:
    ref = spidx_reference.c
    alternatives = []
    for v in criterion.values:
        assert isinstance(v, RefValue)
        if v.url is not None:
            alternatives.append(ref.target_url == v.url)
        elif v.type is not None:
            alternatives.append(and_(ref.target_id == v.id, ref.target_type == v.type))
        else:
            alternatives.append(ref.target_id == v.id)
    return _indexed(criterion, or_(*alternatives))


def _indexed(
    criterion: Criterion, condition: ColumnElement[bool] | None = None
) -> ColumnElement[bool]:
    """EXISTS an index row of the criterion's parameter for the outer resource (meeting
    `condition`, when given): the one shape every indexed parameter compiles to."""
    table = _INDEX_TABLES[criterion.kind].c
    conds = [
        table.res_type == resource.c.res_type,
        table.res_id == resource.c.res_id,
        table.param == criterion.param,
    ]
    if condition is not None:
        conds.append(condition)
    return exists(select(1).where(*conds))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _compile_string(criterion: Criterion) -> ColumnElement[bool]:
    col = spidx_string.c
    alternatives = []
    for v in criterion.values:
        assert isinstance(v, StringValue)
        if v.modifier == "exact":
            alternatives.append(col.value_exact == v.text)
        elif v.modifier == "contains":
            pattern = f"%{_like_escape(normalize(v.text))}%"
            alternatives.append(col.value_normalized.like(pattern, escape="\\"))
        else:
            pattern = f"{_like_escape(normalize(v.text))}%"
            alternatives.append(col.value_normalized.like(pattern, escape="\\"))
    return _indexed(criterion, or_(*alternatives))


def _date(param: str, text: str) -> DateValue:
    prefix = text[:2] if text[:2] in _DATE_PREFIXES else "eq"
    body = text[2:] if text[:2] in _DATE_PREFIXES else text
    found = date_range(body)
    if found is None:
        raise Invalid(f"'{text[:40]}' is not a date for parameter '{param}' (e.g. ge2024-01-31)")
    return DateValue(prefix, body, *found)


def _compile_date(criterion: Criterion) -> ColumnElement[bool]:
    """https://hl7.org/fhir/R4/search.html#prefix, over half-open ranges [low, high)."""
    col = spidx_date.c
    alternatives = []
    for v in criterion.values:
        assert isinstance(v, DateValue)
        within = and_(col.low >= v.low, col.high <= v.high)
        match v.prefix:
            case "eq":
                cond = within
            case "ne":
                cond = ~within
            case "gt":
                cond = col.high > v.high
            case "lt":
                cond = col.low < v.low
            case "ge":
                cond = or_(col.high > v.high, within)
            case "le":
                cond = or_(col.low < v.low, within)
            case "sa":
                cond = col.low >= v.high
            case "eb":
                cond = col.high <= v.low
            case _:  # ap: overlaps the value widened by 10% of its distance from now (>= 1 day)
                now = datetime.now(UTC)
                slack = max(abs(now - v.low) / 10, timedelta(days=1))
                cond = and_(col.low < v.high + slack, col.high > v.low - slack)
        alternatives.append(cond)
    return _indexed(criterion, or_(*alternatives))
