"""The person a federated Patient search looks for, from its search parameters.

Patient search parameters (https://hl7.org/fhir/R4/patient.html#search) map onto the
PersonQuery an adapter locates by: `identifier` (`system|value` or `value`, each OR-value one
identifier), `family`, `given`, `name` (taken as the family name when `family` is absent),
`birthdate` (a plain date, or `eq` with one), `gender`, `address-postalcode`, `phone`, `email`
and `telecom`. Modifiers are ignored; other parameters only narrow the local search.
"""

from __future__ import annotations

import re

from app.adapters.base import PersonQuery

__all__ = ["person_from_search"]

_DATE = re.compile(r"^(?:eq)?(\d{4}-\d{2}-\d{2})$")


def person_from_search(pairs: list[tuple[str, str]]) -> PersonQuery | None:
    """The PersonQuery the search describes; None when it names neither an identifier, nor a
    name, nor a birth date, nor a phone or email (nothing an intermediary could locate by)."""
    identifiers: list[tuple[str, str]] = []
    given: list[str] = []
    telecom: list[str] = []
    single: dict[str, str] = {}
    for key, raw in pairs:
        name = key.partition(":")[0]
        values = [v for v in _split(raw) if v]
        if not values:
            continue
        if name == "identifier":
            for value in values:
                system, bar, code = value.rpartition("|")
                if code:
                    identifiers.append((system if bar else "", code))
        elif name == "given":
            given += values
        elif name in ("phone", "email", "telecom"):
            telecom += [v.rpartition("|")[2] for v in values]
        elif name in ("family", "name", "gender", "address-postalcode", "birthdate"):
            single.setdefault(name, values[0])
    birth = _DATE.match(single.get("birthdate", ""))
    person = PersonQuery(
        identifiers=tuple(identifiers),
        family=single.get("family") or single.get("name"),
        given=tuple(given),
        birth_date=birth.group(1) if birth else None,
        gender=single.get("gender"),
        postal_code=single.get("address-postalcode"),
        telecom=tuple(t for t in telecom if t),
    )
    if not (person.identifiers or person.family or person.birth_date or person.telecom):
        return None
    return person


def _split(raw: str) -> list[str]:
    """OR-values of a search parameter: `,` separates, `\\,` does not."""
    out, current, escaped = [], "", False
    for ch in raw:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            out.append(current)
            current = ""
        else:
            current += ch
    out.append(current)
    return [v.strip() for v in out]
