"""Searches in id order cut their page from the driving criterion's index (app/fhir/search/sql.py,
driver_page) and page exactly like the plain plan: same matches, same order, same links both
ways."""

from __future__ import annotations

from typing import Any

import pytest

from app.store import searching
from tests.conftest import FHIR_JSON
from tests.factories import observation, patient


async def _create(client, auth, body: dict[str, Any]) -> str:
    r = await client.post(f"/{body['resourceType']}", json=body, headers={**auth, **FHIR_JSON})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _walk(client, auth, query: str, relation: str = "next") -> tuple[list[list[str]], str]:
    """Follow `relation` links from the query; the pages' ids and the last page's body."""
    pages, url, last = [], "/" + query.lstrip("/"), {}
    while url:
        r = await client.get(url, headers=auth)
        assert r.status_code == 200, r.text
        last = r.json()
        pages.append([e["resource"]["id"] for e in last.get("entry", [])])
        links = [link["url"] for link in last["link"] if link["relation"] == relation]
        url = links[0].split("/fhir", 1)[1] if links else ""
    previous = [link["url"] for link in last["link"] if link["relation"] == "previous"]
    return pages, previous[0].split("/fhir", 1)[1] if previous else ""


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records for each search whether the driver cut the page (True) or the plain plan ran."""
    seen: list[bool] = []
    original = searching.driver_page

    def spy(*args: Any, **kw: Any) -> Any:
        page = original(*args, **kw)
        seen.append(page is not None)
        return page

    monkeypatch.setattr(searching, "driver_page", spy)
    return seen


@pytest.fixture
async def people(client, auth) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"a1c": [], "high": [], "all": []}
    for n in range(9):
        pid = await _create(client, auth, patient(f"mrn-{n}", family=f"Broad{n}"))
        groups["all"].append(pid)
        if n % 3:
            await _create(client, auth, observation(pid, code="4548-4"))
            groups["a1c"].append(pid)
        value = 150.0 if n % 2 else 90.0
        oid = await _create(client, auth, observation(pid, code="2345-7", value=value))
        if value > 140:
            groups["high"].append(oid)
    return groups


async def test_reverse_chain_pages_both_ways(client, auth, people, plans):
    query = "Patient?_has:Observation:patient:code=4548-4&_count=2"
    pages, prev = await _walk(client, auth, query)
    assert [i for page in pages for i in page] == sorted(people["a1c"])
    assert [len(p) for p in pages] == [2, 2, 2]
    assert plans and all(plans)
    back, _ = await _walk(client, auth, prev, relation="previous")
    assert [i for page in reversed(back) for i in page] == sorted(people["a1c"])[:4]


async def test_a_code_with_a_value_range(client, auth, people, plans):
    query = "Observation?code=2345-7&value-quantity=gt140&_count=2"
    pages, _ = await _walk(client, auth, query)
    assert [i for page in pages for i in page] == sorted(people["high"])
    assert all(plans)


async def test_a_string_prefix_and_a_missing_match(client, auth, people, plans):
    pages, _ = await _walk(client, auth, "Patient?name=broad&_count=4")
    assert [i for page in pages for i in page] == sorted(people["all"])
    pages, _ = await _walk(client, auth, "Patient?_has:Observation:patient:code=0000-0")
    assert pages == [[]]
    assert all(plans)


async def test_sorted_searches_and_id_lists_keep_the_plain_plan(client, auth, people, plans):
    await _walk(client, auth, "Patient?name=broad&_sort=family")
    ids = ",".join(people["all"][:3])
    pages, _ = await _walk(client, auth, f"Patient?_id={ids}")
    assert sorted(pages[0]) == sorted(people["all"][:3])
    assert plans == [False]  # _sort never asks the driver; an _id list cannot drive this way


def test_a_birth_date_drives_before_a_name_but_a_date_range_does_not():
    from app.fhir.search.criteria import parse_criteria
    from app.fhir.search.sql import _driver

    def driver(query: str) -> str:
        criteria = parse_criteria("Patient", query, require_some=True)
        return criteria.criteria[_driver(criteria)].param

    # a day of birth dates is a handful of patients; a family name grows with the data
    assert driver("family=Broad&birthdate=1980-02-29") == "birthdate"
    assert driver("family=Broad&birthdate=eq1980-02-29,1980-03-01") == "birthdate"
    assert driver("family=Broad&birthdate=1980") == "family"  # a year is many
    assert driver("family=Broad&birthdate=ge1980-02-29") == "family"
    assert driver("identifier=mrn-1&birthdate=1980-02-29") == "identifier"


async def test_family_and_birth_date_match_the_same_patients_whichever_drives(
    client, auth, people, plans
):
    pages, _ = await _walk(client, auth, "Patient?family=broad&birthdate=1980-02-29&_count=4")
    assert [i for page in pages for i in page] == sorted(people["all"])
    pages, _ = await _walk(client, auth, "Patient?family=broad1&birthdate=1980-02-29")
    assert pages == [[people["all"][1]]]
    pages, _ = await _walk(client, auth, "Patient?family=broad&birthdate=1980-03-01")
    assert pages == [[]]
    assert plans and all(plans)
