"""A broad reverse chain is answered by an ordered scan (app/store/searching.py, _broad_driver)
with the same pages as the id-list plan: same matches, same order, same paging links."""

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


async def _pages(client, auth, query: str) -> list[list[str]]:
    pages, url = [], f"/{query}"
    while url:
        r = await client.get(url, headers=auth)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([e["resource"]["id"] for e in body.get("entry", [])])
        nxt = [link["url"] for link in body["link"] if link["relation"] == "next"]
        url = nxt[0].split("/fhir", 1)[1] if nxt else ""
    return pages


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records each search's choice; the broad threshold is lowered to suit a small database."""
    seen: list[bool] = []
    original = searching._broad_driver

    async def spy(*args: Any) -> bool:
        seen.append(await original(*args))
        return seen[-1]

    monkeypatch.setattr(searching, "BROAD_DRIVER", 4)
    monkeypatch.setattr(searching, "_broad_driver", spy)
    return seen


async def test_a_broad_reverse_chain_pages_like_the_id_list_plan(client, auth, db, scans):
    with_code, without = [], []
    for n in range(9):
        pid = await _create(client, auth, patient(f"mrn-{n}", family=f"Broad{n}"))
        code = "4548-4" if n % 3 else "8867-4"
        await _create(client, auth, observation(pid, code=code))
        await _create(client, auth, observation(pid, code="8867-4"))
        (with_code if code == "4548-4" else without).append(pid)
    query = "Patient?_has:Observation:patient:code=4548-4&_count=2"
    pages = await _pages(client, auth, query)
    expected = sorted(with_code)
    assert [i for page in pages for i in page] == expected
    assert [len(p) for p in pages] == [2, 2, 2]
    if db.is_sqlite:
        assert scans[0] is True  # six referring Observations: broad at a threshold of four
    else:
        assert scans[0] is False  # PostgreSQL plans the list itself

    # a narrow driver keeps the id list
    scans.clear()
    assert await _pages(client, auth, "Patient?_has:Observation:patient:code=0000-0") == [[]]
    assert scans == [False]


async def test_a_sorted_or_counted_search_never_scans(client, auth, db, scans):
    for n in range(6):
        pid = await _create(client, auth, patient(f"mrn-s{n}", family=f"Sorted{n}"))
        await _create(client, auth, observation(pid, code="4548-4"))
    for extra in ("&_sort=family", "&_total=accurate"):
        scans.clear()
        await _pages(client, auth, f"Patient?_has:Observation:patient:code=4548-4{extra}")
        assert scans[0] is False
