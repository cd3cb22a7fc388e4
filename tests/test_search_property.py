"""Property: the SQL search agrees with a plain in-memory evaluation of the same query.

Hypothesis generates small sets of Patients and Observations and queries over token, string,
date and quantity parameters (with modifiers, prefixes, OR and AND); both backends must return
exactly the resources the reference evaluation below selects. The reference is written from
https://hl7.org/fhir/R4/search.html directly, sharing no code with the server. Each example
tags its resources with a fresh code and every query filters on it, so examples do not see
each other's data.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FHIR_JSON

TAG_SYSTEM = "urn:dxf:test-run"
LOINC = "http://loinc.org"
FAMILIES = ["Ames", "amesbury", "Bell", "BELLAMY", "Cho", "Chopra", "Diaz"]
GENDERS = ["male", "female", "other", "unknown"]
CODES = ["8867-4", "8480-6", "718-7"]
PREFIXES = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]

birth_dates = st.dates(min_value=date(1940, 1, 1), max_value=date(1990, 12, 31))
patients = st.fixed_dictionaries(
    {
        "family": st.sampled_from(FAMILIES),
        "gender": st.none() | st.sampled_from(GENDERS),
        "birthDate": birth_dates,
    }
)
observations = st.fixed_dictionaries(
    {
        "code": st.sampled_from(CODES),
        "value": st.integers(0, 400).map(lambda n: Decimal(n) / 2),  # edges of 1-digit ranges
    }
)


# ---- the reference evaluation ----------------------------------------------------------------


def _date_range(text: str) -> tuple[date, date]:
    parts = [int(p) for p in text.split("-")]
    if len(parts) == 1:
        return date(parts[0], 1, 1), date(parts[0] + 1, 1, 1)
    if len(parts) == 2:
        y, m = parts
        return date(y, m, 1), date(y + (m == 12), m % 12 + 1, 1)
    low = date(*parts)
    return low, low + timedelta(days=1)


def _date_matches(prefix: str, search: str, stored: date) -> bool:
    low, high = _date_range(search)
    s_low, s_high = stored, stored + timedelta(days=1)
    within = s_low >= low and s_high <= high
    return {
        "eq": within,
        "ne": not within,
        "gt": s_high > high,
        "lt": s_low < low,
        "ge": s_high > high or within,
        "le": s_low < low or within,
        "sa": s_low >= high,
        "eb": s_high <= low,
    }[prefix]


def _number_matches(prefix: str, search: str, stored: Decimal) -> bool:
    value = Decimal(search)
    half = Decimal(5).scaleb(value.as_tuple().exponent - 1)  # type: ignore[operator]
    return {
        "eq": value - half <= stored < value + half,
        "ne": not (value - half <= stored < value + half),
        "gt": stored > value,
        "lt": stored < value,
        "ge": stored >= value,
        "le": stored <= value,
        "sa": stored > value,
        "eb": stored < value,
    }[prefix]


def _patient_matches(p: dict[str, Any], name: str, values: list[str]) -> bool:
    if name == "gender":
        return p["gender"] in values
    if name == "gender:not":
        return p["gender"] not in values
    if name == "family":
        return any(p["family"].casefold().startswith(v.casefold()) for v in values)
    if name == "family:exact":
        return p["family"] in values
    if name == "family:contains":
        return any(v.casefold() in p["family"].casefold() for v in values)
    assert name == "birthdate"
    return any(_date_matches(v[:2], v[2:], p["birthDate"]) for v in values)


def _observation_matches(o: dict[str, Any], name: str, values: list[str]) -> bool:
    if name == "code":
        return any(v.split("|")[-1] == o["code"] for v in values)
    assert name == "value-quantity"
    return any(_number_matches(v[:2], v[2:], o["value"]) for v in values)


# ---- query strategies --------------------------------------------------------------------------


def _date_text(d: date, precision: int) -> str:
    return d.isoformat()[: (4, 7, 10)[precision]]


def patient_criteria(people: list[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """Criteria whose values come from the generated patients as often as not, so that edges
    (the same year, a name's own prefix) are hit."""
    near_dates = st.sampled_from([p["birthDate"] for p in people]) | birth_dates
    near_names = st.sampled_from([p["family"] for p in people]) | st.sampled_from(FAMILIES)
    return st.one_of(
        st.tuples(
            st.sampled_from(["gender", "gender:not"]),
            st.lists(st.sampled_from(GENDERS), min_size=1, max_size=2),
        ),
        st.tuples(
            st.sampled_from(["family", "family:exact", "family:contains"]),
            st.lists(
                near_names.flatmap(
                    lambda f: st.tuples(st.integers(0, len(f) - 1), st.integers(1, len(f))).map(
                        lambda ab: f[min(ab) : max(ab[0] + 1, ab[1])]
                    )
                ),
                min_size=1,
                max_size=2,
            ),
        ),
        st.tuples(
            st.just("birthdate"),
            st.lists(
                st.tuples(st.sampled_from(PREFIXES), near_dates, st.integers(0, 2)).map(
                    lambda t: t[0] + _date_text(t[1], t[2])
                ),
                min_size=1,
                max_size=2,
            ),
        ),
    )


def observation_criteria(results: list[dict[str, Any]]) -> st.SearchStrategy[Any]:
    stored = [o["value"] for o in results]
    near_values = st.one_of(
        st.sampled_from(stored),
        st.sampled_from(stored).map(lambda v: v + Decimal("0.5")),
        st.sampled_from(stored).map(lambda v: v - Decimal("0.5")),
        st.decimals(min_value=0, max_value=200, places=1, allow_nan=False),
    )
    return st.one_of(
        st.tuples(
            st.just("code"),
            st.lists(
                st.sampled_from(CODES).flatmap(lambda c: st.sampled_from([c, f"{LOINC}|{c}"])),
                min_size=1,
                max_size=2,
            ),
        ),
        st.tuples(
            st.just("value-quantity"),
            st.lists(
                st.tuples(st.sampled_from(PREFIXES), near_values, st.booleans()).map(
                    lambda t: t[0] + (str(t[1]) if t[2] else str(int(t[1])))
                ),
                min_size=1,
                max_size=2,
            ),
        ),
    )


async def _search(client, auth, resource_type: str, tag: str, criteria) -> set[str]:
    params = [("_tag", f"{TAG_SYSTEM}|{tag}"), ("_count", "1000")]
    params += [(name, ",".join(values)) for name, values in criteria]
    r = await client.get(f"/{resource_type}", params=params, headers=auth)
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@_SETTINGS
@given(people=st.lists(patients, min_size=1, max_size=8), data=st.data())
async def test_patient_search_agrees_with_the_reference(client, auth, people, data):
    queries = data.draw(
        st.lists(st.lists(patient_criteria(people), min_size=1, max_size=2), min_size=1, max_size=6)
    )
    tag = uuid.uuid4().hex
    ids = {}
    for p in people:
        body = {
            "resourceType": "Patient",
            "meta": {"tag": [{"system": TAG_SYSTEM, "code": tag}]},
            "name": [{"family": p["family"]}],
            "birthDate": p["birthDate"].isoformat(),
        }
        if p["gender"]:
            body["gender"] = p["gender"]
        r = await client.post("/Patient", json=body, headers={**auth, **FHIR_JSON})
        ids[r.json()["id"]] = p
    for criteria in queries:
        expected = {
            pid for pid, p in ids.items() if all(_patient_matches(p, n, v) for n, v in criteria)
        }
        assert await _search(client, auth, "Patient", tag, criteria) == expected, criteria


@_SETTINGS
@given(results=st.lists(observations, min_size=1, max_size=8), data=st.data())
async def test_observation_search_agrees_with_the_reference(client, auth, results, data):
    queries = data.draw(
        st.lists(st.lists(observation_criteria(results), min_size=1, max_size=2), max_size=6)
    )
    tag = uuid.uuid4().hex
    ids = {}
    for o in results:
        body = {
            "resourceType": "Observation",
            "meta": {"tag": [{"system": TAG_SYSTEM, "code": tag}]},
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": o["code"]}]},
            "valueQuantity": {"value": float(o["value"]), "unit": "1", "code": "1"},
        }
        r = await client.post("/Observation", json=body, headers={**auth, **FHIR_JSON})
        ids[r.json()["id"]] = o
    for criteria in queries:
        expected = {
            oid for oid, o in ids.items() if all(_observation_matches(o, n, v) for n, v in criteria)
        }
        assert await _search(client, auth, "Observation", tag, criteria) == expected, criteria
