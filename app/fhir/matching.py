"""How well a stored Patient matches the one given to Patient/$match: a score and a grade.

Implements the scoring side of https://hl7.org/fhir/R4/patient-operation-match.html: each
result carries `search.score` (0 to 1) and the match-grade extension
(http://hl7.org/fhir/StructureDefinition/match-grade: certain, probable, possible,
certainly-not).

The weighting is the WEIGHTS table below and nothing else. Each feature is compared only when
both Patients have it: agreement adds its `agree` weight, disagreement subtracts its `disagree`
weight, a feature missing on either side counts for nothing. The weights add up to 1, so a
Patient that agrees on everything scores 1; the score is kept within [0, 1].

    identifier  an identifier (system and value; a value without system matches any system)
    birthDate   the same date (at different precisions, no evidence either way)
    family      a family name in common (case- and accent-insensitive)
    given       a given name in common
    gender      the same administrative gender (`unknown` is no evidence)
    address     a postal code (first five characters) in common, or the same first line + city
    telecom     a phone number (last ten digits) or other contact value in common

A shared identifier dominates (0.55 of 1): with a birth date and a name agreeing it is a
certain match; demographics alone reach at most 0.45, a probable match. Two findings make a
candidate certainly-not a match, whatever its score: an identifier of the same system with a
different value (and none in common), or both birth date and gender disagreeing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.fhir.search.extract import normalize

__all__ = ["GRADES", "MATCH_GRADE", "WEIGHTS", "Feature", "MatchScore", "score_match"]

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    agree: float
    disagree: float


WEIGHTS: tuple[Feature, ...] = (
    #        feature       agree  disagree
    Feature("identifier", 0.55, 0.00),  # a conflicting identifier makes it certainly-not
    Feature("birthDate", 0.15, 0.15),
    Feature("family", 0.12, 0.06),  # family names change (marriage)
    Feature("given", 0.06, 0.03),
    Feature("gender", 0.04, 0.04),
    Feature("address", 0.04, 0.00),  # people move: a different address is no evidence
    Feature("telecom", 0.04, 0.00),  # and change numbers
)

# The lowest score of each grade, best first; below the last, a candidate is not returned.
GRADES: tuple[tuple[str, float], ...] = (("certain", 0.80), ("probable", 0.45), ("possible", 0.25))

_W = {f.name: f for f in WEIGHTS}


@dataclass(frozen=True, slots=True)
class MatchScore:
    score: float
    grade: str | None  # None: below every grade, not a match worth returning
    agreed: tuple[str, ...] = ()


def score_match(wanted: dict[str, Any], candidate: dict[str, Any]) -> MatchScore:
    """Score `candidate` (a stored Patient) against `wanted` (the $match input)."""
    total = 0.0
    agreed: list[str] = []
    verdicts = {
        "identifier": _identifiers(wanted, candidate),
        "birthDate": _birth_dates(wanted.get("birthDate"), candidate.get("birthDate")),
        "family": _overlap(_names(wanted, "family"), _names(candidate, "family")),
        "given": _overlap(_names(wanted, "given"), _names(candidate, "given")),
        "gender": _gender(wanted.get("gender"), candidate.get("gender")),
        "address": _agree_only(_addresses(wanted) & _addresses(candidate)),
        "telecom": _agree_only(_telecoms(wanted) & _telecoms(candidate)),
    }
    for name, verdict in verdicts.items():
        if verdict is True:
            total += _W[name].agree
            agreed.append(name)
        elif verdict is False:
            total -= _W[name].disagree
    score = round(min(1.0, max(0.0, total)), 4)
    conflict = verdicts["identifier"] is False or (
        verdicts["birthDate"] is False and verdicts["gender"] is False
    )
    if conflict:
        return MatchScore(score, "certainly-not", tuple(agreed))
    grade = next((g for g, floor in GRADES if score >= floor - 1e-9), None)
    return MatchScore(score, grade, tuple(agreed))


# ---- comparisons: True agree, False disagree, None no evidence ---------------------------------


def _identifiers(wanted: dict[str, Any], candidate: dict[str, Any]) -> bool | None:
    mine = _idents(wanted)
    theirs = _idents(candidate)
    if not mine or not theirs:
        return None
    for system, value in mine:
        if any(value == v and (not system or system == s) for s, v in theirs):
            return True
    shared_systems = {s for s, _ in mine if s} & {s for s, _ in theirs if s}
    return False if shared_systems else None


def _idents(patient: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (str(i.get("system") or ""), str(i["value"]))
        for i in _dicts(patient.get("identifier"))
        if isinstance(i.get("value"), str) and i["value"]
    }


def _birth_dates(a: Any, b: Any) -> bool | None:
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        return None
    if a == b:
        return True
    if a.startswith(b) or b.startswith(a):
        return None  # the same date at different precisions
    return False


def _names(patient: dict[str, Any], part: str) -> set[str]:
    out: set[str] = set()
    for name in _dicts(patient.get("name")):
        value = name.get(part)
        values = value if isinstance(value, list) else [value]
        out.update(normalize(v).strip() for v in values if isinstance(v, str) and v.strip())
    return out


def _overlap(a: set[str], b: set[str]) -> bool | None:
    if not a or not b:
        return None
    return bool(a & b)


def _gender(a: Any, b: Any) -> bool | None:
    known = ("male", "female", "other")
    if a not in known or b not in known:
        return None
    return bool(a == b)


def _agree_only(common: set[str]) -> bool | None:
    return True if common else None


def _addresses(patient: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for address in _dicts(patient.get("address")):
        postal = address.get("postalCode")
        if isinstance(postal, str) and postal.strip():
            out.add("zip:" + normalize(postal.strip())[:5])
        lines = [ln for ln in address.get("line") or [] if isinstance(ln, str)]
        city = address.get("city")
        if lines and isinstance(city, str):
            out.add(f"line:{normalize(lines[0]).strip()}|{normalize(city).strip()}")
    return out


def _telecoms(patient: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for point in _dicts(patient.get("telecom")):
        value = point.get("value")
        if not isinstance(value, str) or not value.strip():
            continue
        if point.get("system") in ("phone", "fax", "sms", "pager"):
            digits = re.sub(r"\D", "", value)[-10:]
            if digits:
                out.add("tel:" + digits)
        else:
            out.add(normalize(value.strip()))
    return out


def _dicts(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []
