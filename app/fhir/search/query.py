"""A whole search request: criteria plus the result parameters of
https://hl7.org/fhir/R4/search.html#return (`_sort`, `_count`, `_include`, `_revinclude`,
`_summary`, `_elements`, `_total`) and the paging cursor.

Parsing is strict: an unknown or malformed parameter is a 400 naming it, unless the client
sent `Prefer: handling=lenient`, in which case the parameter is left out and the reason is
reported back in the Bundle (https://hl7.org/fhir/R4/search.html#errors).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from app.errors import Invalid
from app.fhir.models import RESOURCE_TYPES
from app.fhir.search.criteria import Criteria, Criterion, parse_parameter, search_params

__all__ = [
    "Cursor",
    "IncludeSpec",
    "SearchQuery",
    "SortKey",
    "parse_search",
]

SORTABLE = frozenset({"token", "uri", "string", "date", "number", "quantity", "reference"})
_SUMMARY = ("true", "false", "count", "text", "data")
_TOTAL = ("none", "estimate", "accurate")
_RESULT_PARAMS = {"_sort", "_include", "_revinclude", "_summary", "_elements", "_total"}
_IGNORED = {"_format", "_pretty"}
MAX_INCLUDE_SPECS = 20


@dataclass(frozen=True, slots=True)
class SortKey:
    param: str  # `_id`, `_lastUpdated` or a search parameter of the type
    kind: str
    descending: bool = False

    def render(self) -> str:
        return f"-{self.param}" if self.descending else self.param


@dataclass(frozen=True, slots=True)
class IncludeSpec:
    """`_include=Source:param[:Target]` (or `*`), `_revinclude=...`, each maybe `:iterate`."""

    source: str
    param: str | None  # None: every reference parameter (`*`)
    target: str | None
    reverse: bool = False
    iterate: bool = False

    def render(self) -> str:
        return f"{self.source}:{self.param or '*'}" + (f":{self.target}" if self.target else "")


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: after (`next`) or before (`prev`) the row with these sort values
    and id. Opaque to clients (base64url JSON)."""

    direction: str  # "next" or "prev"
    values: tuple[Any, ...]
    last_id: str

    def encode(self) -> str:
        values = [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in self.values]
        raw = orjson.dumps([self.direction, values, self.last_id])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, sort: tuple[SortKey, ...]) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            direction, values, last_id = orjson.loads(raw)
            if direction not in ("next", "prev") or not isinstance(last_id, str):
                raise ValueError
            if not isinstance(values, list) or len(values) != len(sort):
                raise ValueError
            decoded = tuple(_cursor_value(v, k) for v, k in zip(values, sort, strict=True))
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise Invalid("_cursor is not a valid paging cursor for this search") from None
        return cls(direction, decoded, last_id)


def _cursor_value(value: Any, key: SortKey) -> Any:
    if value is None:
        return None
    if key.kind == "date" or key.param == "_lastUpdated":
        if not (isinstance(value, dict) and isinstance(value.get("t"), str)):
            raise ValueError
        return datetime.fromisoformat(value["t"])
    if key.kind in ("number", "quantity"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError
        return float(value)
    if not isinstance(value, str):
        raise ValueError
    return value


@dataclass(slots=True)
class SearchQuery:
    criteria: Criteria
    count: int
    sort: tuple[SortKey, ...] = ()
    includes: tuple[IncludeSpec, ...] = ()
    cursor: Cursor | None = None
    total: str = "none"
    summary: str | None = None
    elements: tuple[str, ...] = ()
    ignored: list[str] = field(default_factory=list)  # lenient mode: what was left out, why
    echo: list[tuple[str, str]] = field(default_factory=list)  # the query as understood

    @property
    def resource_type(self) -> str:
        return self.criteria.resource_type


def parse_search(
    resource_type: str,
    pairs: list[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
    base_url: str | None = None,
    lenient: bool = False,
) -> SearchQuery:
    """Every parameter of a type-level search; see the module docstring for errors."""
    criteria: list[Criterion] = []
    query = SearchQuery(Criteria(resource_type, ()), default_count)
    seen: set[str] = set()
    for name, raw in pairs:
        if name in _IGNORED:
            continue
        try:
            if name in ("_count", "_cursor", "_total", "_summary", "_sort", "_elements"):
                if name in seen:
                    raise Invalid(f"parameter '{name}' may appear only once")
                seen.add(name)
            if name == "_count":  # links carry the clamped count
                query.count = _count(raw, max_count)
                continue
            if name == "_cursor":
                continue  # decoded below, once the sort order is known
            if name == "_total":
                query.total = _choice(name, raw, _TOTAL)
            elif name == "_summary":
                query.summary = _choice(name, raw, _SUMMARY)
            elif name == "_sort":
                query.sort = _sort(resource_type, raw)
            elif name == "_elements":
                query.elements = _elements(raw)
            elif name.partition(":")[0] in ("_include", "_revinclude"):
                query.includes += (_include(resource_type, name, raw),)
                if len(query.includes) > MAX_INCLUDE_SPECS:
                    raise Invalid(
                        f"at most {MAX_INCLUDE_SPECS} _include/_revinclude", code="too-costly"
                    )
            else:
                if len(criteria) >= 100:
                    raise Invalid("at most 100 search parameters per request", code="too-costly")
                criteria.append(parse_parameter(resource_type, name, raw, base_url=base_url))
        except Invalid as error:
            if not lenient or name in ("_cursor", "_count"):
                raise
            query.ignored.append(f"parameter '{name}' was ignored: {error.diagnostics}")
            continue
        query.echo.append((name, raw))
    query.criteria = Criteria(resource_type, tuple(criteria))
    cursor = next((v for k, v in pairs if k == "_cursor"), None)
    if cursor is not None:
        query.cursor = Cursor.decode(cursor, query.sort)
    if query.summary == "count":
        query.count, query.total = 0, "accurate"
    return query


def _count(raw: str, maximum: int) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise Invalid(f"_count must be a non-negative integer, not {raw[:20]!r}")
    return min(int(raw), maximum)


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    if raw not in allowed:
        raise Invalid(f"{name} takes one of {', '.join(allowed)}; not {raw[:20]!r}")
    return raw


def _sort(resource_type: str, raw: str) -> tuple[SortKey, ...]:
    keys = []
    kinds = search_params(resource_type)
    for item in raw.split(","):
        descending = item.startswith("-")
        param = item[1:] if descending else item
        kind = "date" if param == "_lastUpdated" else kinds.get(param)
        if param == "_id":
            kind = "token"
        if kind not in SORTABLE:
            raise Invalid(
                f"_sort: '{param}' is not a parameter of {resource_type} this server sorts by",
                code="not-supported",
            )
        keys.append(SortKey(param, kind, descending))
    if len(keys) > 5 or len({k.param for k in keys}) != len(keys):
        raise Invalid("_sort takes at most 5 distinct parameters")
    return tuple(keys)


def _elements(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    if not names or any(not n.isidentifier() for n in names):
        raise Invalid("_elements takes a comma-separated list of top-level element names")
    return names


def _include(resource_type: str, name: str, raw: str) -> IncludeSpec:
    base, _, modifier = name.partition(":")
    if modifier not in ("", "iterate", "recurse"):
        raise Invalid(f"'{name}': only the :iterate modifier is supported", code="not-supported")
    reverse = base == "_revinclude"
    iterate = modifier in ("iterate", "recurse")
    if raw == "*" and not reverse:
        return IncludeSpec(resource_type, None, None, reverse, iterate)
    parts = raw.split(":")
    if len(parts) not in (2, 3) or parts[0] not in RESOURCE_TYPES:
        raise Invalid(f"{base} takes Type:parameter[:TargetType], not {raw[:60]!r}")
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if param == "*" and not reverse:
        return IncludeSpec(source, None, target, reverse, iterate)
    if search_params(source).get(param) != "reference":
        raise Invalid(f"{base}: '{param}' is not a reference parameter of {source}")
    if target is not None and target not in RESOURCE_TYPES:
        raise Invalid(f"{base}: unknown target type '{target}'")
    if not iterate and not reverse and source != resource_type:
        raise Invalid(f"_include={raw} names {source}, but the search is on {resource_type}")
    return IncludeSpec(source, param, target, reverse, iterate)
