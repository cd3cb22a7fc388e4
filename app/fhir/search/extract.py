"""Resource -> search index rows, computed on the write path and stored in the same transaction.

Token parameters (https://hl7.org/fhir/R4/search.html#token) of the resource's type, taken from
the official definitions (registry.py) and evaluated with the FHIRPath subset (fhirpath.py):
Coding and CodeableConcept give (system, code); Identifier gives (system, value); ContactPoint
gives its value; code, uri, string and boolean primitives give their value with no system.
`_id` is answered from the resource table itself.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

from app.fhir.compartments import reference_target
from app.fhir.search.dates import value_ranges
from app.fhir.search.fhirpath import Evaluator, compile_path
from app.fhir.search.registry import params_for

__all__ = [
    "MAX_TOKEN_CHARS",
    "IndexRows",
    "index_rows",
    "RefRow",
    "TokenRow",
    "DateRow",
    "StringRow",
    "date_params",
    "date_rows",
    "normalize",
    "present_fields",
    "number_params",
    "quantity_params",
    "quantity_rows",
    "reference_params",
    "reference_rows",
    "string_params",
    "string_rows",
    "token_params",
    "uri_params",
    "token_rows",
]

MAX_TOKEN_CHARS = 512
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})

TokenRow = tuple[str, str | None, str | None]  # (param, system, value)
RefRow = tuple[str, str | None, str | None, str | None]  # (param, type, id, absolute url)
StringRow = tuple[str, str, str]  # (param, normalized, exact)
DateRow = tuple[str, datetime, datetime]  # (param, low, high): the range [low, high)
QuantityRow = tuple[str, str | None, str | None, float]  # (param, system, code, value)
_MAX_ID = 64
# the parts of HumanName and Address that a string search matches
_STRING_PARTS = (
    "text",
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
)
_MAX_URL = 2048


@cache
def _params(resource_type: str, kind: str) -> tuple[tuple[str, Evaluator], ...]:
    """The parameters of one search type for a resource type (each with an expression; `_id`
    is answered from the resource table)."""
    return tuple((code, evaluate) for code, evaluate, _ in _plans(resource_type, kind))


@cache
def _plans(
    resource_type: str, kind: str
) -> tuple[tuple[str, Evaluator, frozenset[str] | None], ...]:
    """(code, evaluator, the top-level elements its expression starts from, when known)."""
    return tuple(
        (code, compile_path(param.expression), _first_fields(param.expression))
        for code, param in sorted(params_for(resource_type).items())
        if param.type == kind and param.expression and code != "_id"
    )


_FIRST_FIELD = re.compile(r"^\(?([A-Z][A-Za-z]*)\.([a-z][A-Za-z0-9]*)\b")


def _first_fields(expression: str) -> frozenset[str] | None:
    """The top-level elements an expression reads (`Observation.value as Quantity` reads
    `value`); None when it is not a plain path, so it is always evaluated."""
    if "exists" in expression or " and " in expression:
        return None
    fields = set()
    for term in expression.split("|"):
        match = _FIRST_FIELD.match(term.strip())
        if match is None:
            return None
        fields.add(match.group(2))
    return frozenset(fields)


def present_fields(resource: dict[str, Any]) -> frozenset[str]:
    """The resource's top-level element names, choice elements also by their stem
    (`valueQuantity` is `value` too). Computed once per resource and handed to the *_rows
    functions, which skip the parameters that read none of them."""
    names = set(resource)
    for key in resource:
        stem = _stem(key) if isinstance(key, str) else None
        if stem:
            names.add(stem)
    return frozenset(names)


@lru_cache(maxsize=4096)
def _stem(key: str) -> str | None:
    """`value` for `valueQuantity`: the name before the first capital, if there is one."""
    for i, ch in enumerate(key):
        if ch.isupper():
            return key[:i]
    return None


@lru_cache(maxsize=8192)
def _applicable(
    resource_type: str, kind: str, present: frozenset[str]
) -> tuple[tuple[str, Evaluator], ...]:
    """The `kind` parameters of the type that read one of the `present` elements (or whose
    expression is not a plain path): a resource of a given set of elements is indexed by the
    same parameters as every other of that set, so the filtering is done once per set."""
    return tuple(
        (code, evaluate)
        for code, evaluate, fields in _plans(resource_type, kind)
        if fields is None or not fields.isdisjoint(present)
    )


@dataclass(slots=True)
class IndexRows:
    """Every index row of one resource, by table."""

    tokens: list[TokenRow]
    dates: list[DateRow]
    quantities: list[QuantityRow]
    strings: list[StringRow]
    references: list[RefRow]


def index_rows(resource: dict[str, Any], base_url: str) -> IndexRows:
    """token_rows, date_rows, quantity_rows, string_rows and reference_rows at once: the
    elements present are read once, and each token parameter is evaluated once for both its
    token rows and its `:text` rows."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return IndexRows([], [], [], [], [])
    present = present_fields(resource)
    tokens: list[Any] = []
    texts: list[Any] = []
    seen_tokens: set[tuple[Any, ...]] = set()
    seen_texts: set[tuple[Any, ...]] = set()
    for code, evaluate in _applicable(resource_type, "token", present):
        text_code = code + ":text"
        for value in evaluate(resource):
            for tail in _fitting_tokens(value):
                row = (code, *tail)
                if row not in seen_tokens:
                    seen_tokens.add(row)
                    tokens.append(row)
            for tail in _token_texts(value):
                row = (text_code, *tail)
                if row not in seen_texts:
                    seen_texts.add(row)
                    texts.append(row)
    tokens += _collect(resource, "uri", _fitting_uris, present=present)
    strings = _collect(resource, "string", _string_pairs, present=present) + texts
    quantities = _collect(resource, "quantity", _quantities, present=present)
    quantities += _collect(resource, "number", _numbers, present=present)
    return IndexRows(
        tokens,
        _collect(resource, "date", value_ranges, present=present),  # type: ignore[arg-type]
        quantities,  # type: ignore[arg-type]
        strings,
        reference_rows(resource, base_url, present),
    )


def token_params(resource_type: str) -> tuple[tuple[str, Evaluator], ...]:
    return _params(resource_type, "token")


def reference_params(resource_type: str) -> tuple[tuple[str, Evaluator], ...]:
    return _params(resource_type, "reference")


def string_params(resource_type: str) -> tuple[tuple[str, Evaluator], ...]:
    return _params(resource_type, "string")


def date_params(resource_type: str) -> tuple[tuple[str, Evaluator], ...]:
    return _params(resource_type, "date")


def quantity_params(resource_type: str) -> tuple[tuple[str, Evaluator], ...]:
    return _params(resource_type, "quantity")


def number_params(resource_type: str) -> tuple[tuple[str, Evaluator], ...]:
    return _params(resource_type, "number")


def _collect(
    resource: dict[str, Any],
    kind: str,
    convert: Callable[[Any], Iterable[tuple[Any, ...]]],
    suffix: str = "",
    present: frozenset[str] | None = None,
) -> list[tuple[Any, ...]]:
    """(param + suffix, *converted) for every value every `kind` parameter selects, without
    repeats."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return []
    rows: list[tuple[Any, ...]] = []
    seen: set[tuple[Any, ...]] = set()
    if present is None:
        present = present_fields(resource)
    for code, evaluate in _applicable(resource_type, kind, present):
        for value in evaluate(resource):
            for tail in convert(value):
                row = (code + suffix, *tail)
                if row not in seen:
                    seen.add(row)
                    rows.append(row)
    return rows


def uri_params(resource_type: str) -> tuple[tuple[str, Evaluator], ...]:
    return _params(resource_type, "uri")


def token_rows(resource: dict[str, Any], present: frozenset[str] | None = None) -> list[TokenRow]:
    """Token rows, and uri rows too: a uri is matched exactly, like a code with no system, so
    uri parameters share the token table (https://hl7.org/fhir/R4/search.html#uri)."""
    rows = _collect(resource, "token", _fitting_tokens, present=present)
    rows += _collect(resource, "uri", _fitting_uris, present=present)
    return rows  # type: ignore[return-value]


def string_rows(resource: dict[str, Any], present: frozenset[str] | None = None) -> list[StringRow]:
    """String rows, and the display texts of token values as `code:text` rows, which answer
    the token `:text` modifier (https://hl7.org/fhir/R4/search.html#token)."""
    rows = _collect(resource, "string", _string_pairs, present=present)
    rows += _collect(resource, "token", _token_texts, ":text", present)
    return rows  # type: ignore[return-value]


def _token_texts(value: Any) -> list[tuple[str, str]]:
    """CodeableConcept.text and Coding.display (also inside a concept), Identifier.type.text."""
    if not isinstance(value, dict):
        return []
    texts = [value.get("text"), value.get("display")]
    codings = value.get("coding")
    if isinstance(codings, list):
        texts += [c.get("display") for c in codings if isinstance(c, dict)]
    kind = value.get("type")
    if isinstance(kind, dict):
        texts.append(kind.get("text"))
    return _string_pairs_of(t for t in texts if isinstance(t, str))


def date_rows(resource: dict[str, Any], present: frozenset[str] | None = None) -> list[DateRow]:
    return _collect(resource, "date", value_ranges, present=present)  # type: ignore[return-value]


def quantity_rows(
    resource: dict[str, Any], present: frozenset[str] | None = None
) -> list[QuantityRow]:
    """Quantity rows (https://hl7.org/fhir/R4/search.html#quantity) and number rows, which are
    quantities without a unit: both are compared by value, so they share one table."""
    rows = _collect(resource, "quantity", _quantities, present=present)
    rows += _collect(resource, "number", _numbers, present=present)
    return rows  # type: ignore[return-value]


def _numbers(value: Any) -> list[tuple[None, None, float]]:
    number = _finite(value)
    return [] if number is None else [(None, None, number)]


def _quantities(value: Any) -> list[tuple[str | None, str | None, float]]:
    """Quantity (and its profiles Age, Duration, ...) gives its UCUM or other code, falling back
    to the human unit when there is no code; Money gives its currency."""
    if not isinstance(value, dict):
        return []
    number = _finite(value.get("value"))
    if number is None:
        return []
    if "currency" in value:
        return [("urn:iso:std:iso:4217", _str(value["currency"]), number)]
    code = _str(value.get("code")) or _str(value.get("unit"))
    system = _str(value.get("system"))
    return [(system, code, number)] if _fits(system) and _fits(code) else []


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def reference_rows(
    resource: dict[str, Any], base_url: str, present: frozenset[str] | None = None
) -> list[RefRow]:
    """(param, target type, target id, url) for every reference the type's parameters select.
    Local references (`Type/id`, with or without `_history`, or under this server's base URL)
    give type and id; references to other servers give only their URL; contained (`#x`) and
    unresolved `urn:` references give nothing."""

    def targets(value: Any) -> list[tuple[str | None, str | None, str | None]]:
        ref = value.get("reference") if isinstance(value, dict) else value
        target = _target(ref, base_url) if isinstance(ref, str) else None
        return [target] if target is not None else []

    return _collect(resource, "reference", targets, present=present)  # type: ignore[return-value]


def _fitting_uris(value: Any) -> list[tuple[None, str]]:
    return [(None, value)] if isinstance(value, str) and _fits(value) else []


def _fitting_tokens(value: Any) -> list[tuple[str | None, str | None]]:
    return [(s, t) for s, t in _tokens(value) if _fits(s) and _fits(t)]


def _string_pairs(value: Any) -> list[tuple[str, str]]:
    return _string_pairs_of(_strings(value))


def _string_pairs_of(texts: Iterable[str]) -> list[tuple[str, str]]:
    return [(normalize(text), text) for text in texts if text and len(text) <= MAX_TOKEN_CHARS]


def _tokens(value: Any) -> list[tuple[str | None, str | None]]:
    if isinstance(value, bool):
        return [(None, "true" if value else "false")]
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("coding"), list):  # CodeableConcept
        return [t for coding in value["coding"] for t in _tokens(coding)]
    system = value.get("system")
    if "code" in value:  # Coding
        return [(_str(system), _str(value.get("code")))]
    if "value" in value:
        if isinstance(system, str) and system in _CONTACT_SYSTEMS:  # ContactPoint
            return [(None, _str(value["value"]))]
        return [(_str(system), _str(value["value"]))]  # Identifier
    if isinstance(system, str):  # an Identifier with a system only
        return [(system, None)]
    return []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _fits(text: str | None) -> bool:
    return text is None or len(text) <= MAX_TOKEN_CHARS


@lru_cache(maxsize=4096)  # the same few references recur across a write's resources
def _target(ref: str, base_url: str) -> tuple[str | None, str | None, str | None] | None:
    if ref.startswith(("#", "urn:")):
        return None
    if ref.startswith(base_url + "/"):
        ref = ref[len(base_url) + 1 :]
    if "://" in ref:
        return (None, None, ref) if len(ref) <= _MAX_URL else None
    parts = ref.split("/")
    if len(parts) in (2, 4) and parts[0][:1].isupper() and len(parts[0]) <= _MAX_ID:
        target = reference_target("/".join(parts[:2]), base_url)
        if target is not None:
            return (target[0], target[1], None)
    return None


def normalize(text: str) -> str:
    """Case- and accent-insensitive form for string search
    (https://hl7.org/fhir/R4/search.html#string): NFKD, combining marks dropped, casefolded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        return []
    out: list[str] = []
    for part in _STRING_PARTS:
        item = value.get(part)
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out.extend(x for x in item if isinstance(x, str))
    return out
