"""Conditional create/update and concurrency: the database decides races, never read-then-write."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from app.store.tables import resource, resource_history
from tests.conftest import FHIR_JSON
from tests.factories import patient

MRN = "urn:oid:2.16.840.1.113883.3.dxf.mrn"


async def test_if_none_exist_returns_existing(client, auth):
    headers = {**auth, **FHIR_JSON, "If-None-Exist": f"identifier={MRN}|300"}
    first = await client.post("/Patient", json=patient("300"), headers=headers)
    assert first.status_code == 201
    second = await client.post("/Patient", json=patient("300"), headers=headers)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["meta"]["versionId"] == "1"


async def test_if_none_exist_with_two_matches_is_412(client, auth):
    for _ in range(2):
        await client.post("/Patient", json=patient("301"), headers={**auth, **FHIR_JSON})
    r = await client.post(
        "/Patient",
        json=patient("301"),
        headers={**auth, **FHIR_JSON, "If-None-Exist": "identifier=301"},
    )
    assert r.status_code == 412


async def test_if_none_exist_unknown_parameter_is_400(client, auth):
    r = await client.post(
        "/Patient", json=patient(), headers={**auth, **FHIR_JSON, "If-None-Exist": "nickname=x"}
    )
    assert r.status_code == 400
    assert "nickname" in r.json()["issue"][0]["diagnostics"]


async def test_fifty_concurrent_conditional_creates_make_one(client, auth, db):
    headers = {**auth, **FHIR_JSON, "If-None-Exist": f"identifier={MRN}|race-1"}
    responses = await asyncio.gather(
        *(client.post("/Patient", json=patient("race-1"), headers=headers) for _ in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(200) == 49, statuses
    assert len({r.json()["id"] for r in responses}) == 1
    async with db.read() as conn:
        count = await conn.scalar(select(func.count()).select_from(resource))
    assert count == 1


async def test_concurrent_if_match_updates_one_wins(client, auth, db):
    res = (await client.post("/Patient", json=patient("302"), headers={**auth, **FHIR_JSON})).json()
    pid = res["id"]
    headers = {**auth, **FHIR_JSON, "If-Match": 'W/"1"'}
    responses = await asyncio.gather(
        *(
            client.put(f"/Patient/{pid}", json={**res, "gender": g}, headers=headers)
            for g in ["male", "female", "other", "unknown"] * 5
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1 and statuses.count(412) == 19, statuses


async def test_concurrent_plain_updates_have_gapless_versions(client, auth, db):
    res = (await client.post("/Patient", json=patient("303"), headers={**auth, **FHIR_JSON})).json()
    pid = res["id"]
    responses = await asyncio.gather(
        *(
            client.put(
                f"/Patient/{pid}",
                json={**res, "birthDate": f"19{i:02d}-01-01"},
                headers={**auth, **FHIR_JSON},
            )
            for i in range(30)
        )
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    versions = sorted(int(r.json()["meta"]["versionId"]) for r in responses)
    assert versions == list(range(2, 32))
    async with db.read() as conn:
        stored = (
            (
                await conn.execute(
                    select(resource_history.c.version)
                    .where(resource_history.c.res_id == pid)
                    .order_by(resource_history.c.version)
                )
            )
            .scalars()
            .all()
        )
    assert stored == list(range(1, 32))


async def test_conditional_update_creates_then_updates(client, auth):
    url = f"/Patient?identifier={MRN}|304"
    created = await client.put(url, json=patient("304"), headers={**auth, **FHIR_JSON})
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = await client.put(
        url, json=patient("304", gender="male"), headers={**auth, **FHIR_JSON}
    )
    assert updated.status_code == 200
    assert updated.json()["id"] == pid and updated.json()["meta"]["versionId"] == "2"
    by_id = await client.put(
        f"/Patient?_id={pid}", json=patient("304", gender="female"), headers={**auth, **FHIR_JSON}
    )
    assert by_id.status_code == 200 and by_id.json()["meta"]["versionId"] == "3"


async def test_conditional_update_with_several_matches_is_412(client, auth):
    for _ in range(2):
        await client.post("/Patient", json=patient("305"), headers={**auth, **FHIR_JSON})
    r = await client.put(
        "/Patient?identifier=305", json=patient("305"), headers={**auth, **FHIR_JSON}
    )
    assert r.status_code == 412


async def test_conditional_update_id_conflict(client, auth):
    await client.put("/Patient/taken", json=patient("x", id="taken"), headers={**auth, **FHIR_JSON})
    r = await client.put(
        "/Patient?identifier=nomatch",
        json=patient("nomatch", id="taken"),
        headers={**auth, **FHIR_JSON},
    )
    assert r.status_code == 409


async def test_concurrent_conditional_updates_make_one(client, auth, db):
    url = f"/Patient?identifier={MRN}|race-2"
    responses = await asyncio.gather(
        *(client.put(url, json=patient("race-2"), headers={**auth, **FHIR_JSON}) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses).count(201) == 1
    async with db.read() as conn:
        count = await conn.scalar(select(func.count()).select_from(resource))
    assert count == 1


async def test_stale_conditional_key_does_not_block(client, auth):
    """After the matching resource changes identifier, the same criteria may create again."""
    headers = {**auth, **FHIR_JSON, "If-None-Exist": f"identifier={MRN}|306"}
    first = (await client.post("/Patient", json=patient("306"), headers=headers)).json()
    moved = {**first, "identifier": [{"system": MRN, "value": "306-moved"}]}
    await client.put(f"/Patient/{first['id']}", json=moved, headers={**auth, **FHIR_JSON})
    again = await client.post("/Patient", json=patient("306"), headers=headers)
    assert again.status_code == 201 and again.json()["id"] != first["id"]
