"""Regression tests for problems found in review: races, compartment escapes, oracles, 500s."""

from __future__ import annotations

import asyncio

import orjson
from sqlalchemy import func, select

from app.store.tables import resource_history
from tests.conftest import FHIR_JSON, bearer
from tests.factories import observation, patient


async def test_concurrent_conditional_puts_all_apply(client, auth, db):
    url = "/Patient?identifier=urn:s|race-3"
    bodies = [patient("race-3", name=[{"family": f"F{i}"}]) for i in range(8)]
    bodies = [{**b, "identifier": [{"system": "urn:s", "value": "race-3"}]} for b in bodies]
    responses = await asyncio.gather(
        *(client.put(url, json=b, headers={**auth, **FHIR_JSON}) for b in bodies)
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    async with db.read() as conn:
        versions = await conn.scalar(select(func.count()).select_from(resource_history))
    assert versions == 8  # every body became a version: none was silently dropped


async def test_concurrent_updates_as_create_of_one_id_all_apply(client, auth, db):
    """Concurrent PUTs creating the same client-chosen id: one creates, the others find it and
    update it (a collision on the insert is retried as an update, never a 500)."""
    bodies = [{**patient("race-4", name=[{"family": f"F{i}"}]), "id": "race-4"} for i in range(8)]
    responses = await asyncio.gather(
        *(client.put("/Patient/race-4", json=b, headers={**auth, **FHIR_JSON}) for b in bodies)
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201], [
        r.text for r in responses if r.status_code >= 300
    ]
    async with db.read() as conn:
        versions = await conn.scalar(select(func.count()).select_from(resource_history))
    assert versions == 8


async def test_patient_token_cannot_write_into_another_compartment(client, auth, make_token):
    a = (await client.post("/Patient", json=patient("A"), headers={**auth, **FHIR_JSON})).json()
    b = (await client.post("/Patient", json=patient("B"), headers={**auth, **FHIR_JSON})).json()
    token = {**bearer(make_token("patient/*.cruds", patient=a["id"])), **FHIR_JSON}
    shared = observation(a["id"]) | {"performer": [{"reference": f"Patient/{b['id']}"}]}
    assert (await client.post("/Observation", json=shared, headers=token)).status_code == 403
    linked = {**a, "link": [{"other": {"reference": f"Patient/{b['id']}"}, "type": "seealso"}]}
    assert (await client.put(f"/Patient/{a['id']}", json=linked, headers=token)).status_code == 403
    b_token = bearer(make_token("patient/*.rs", patient=b["id"]))
    assert "entry" not in (await client.get("/Observation", headers=b_token)).json()


async def test_conditional_create_is_no_existence_oracle(client, auth, make_token):
    a = (await client.post("/Patient", json=patient("A2"), headers={**auth, **FHIR_JSON})).json()
    other = observation("someone-else") | {"identifier": [{"system": "urn:lab", "value": "L1"}]}
    await client.post("/Observation", json=other, headers={**auth, **FHIR_JSON})
    token = {**bearer(make_token("patient/*.cruds", patient=a["id"])), **FHIR_JSON}
    mine = observation(a["id"]) | {"identifier": [{"system": "urn:lab", "value": "L1"}]}
    r = await client.post(
        "/Observation", json=mine, headers={**token, "If-None-Exist": "identifier=urn:lab|L1"}
    )
    assert r.status_code == 201  # the other patient's match is invisible, not a 403
    again = await client.post(
        "/Observation", json=mine, headers={**token, "If-None-Exist": "identifier=urn:lab|L1"}
    )
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]


async def test_update_as_create_honours_a_confined_create_scope(client, auth, make_token):
    a = (await client.post("/Patient", json=patient("A3"), headers={**auth, **FHIR_JSON})).json()
    token = {
        **bearer(make_token("user/Observation.u patient/Observation.c", patient=a["id"])),
        **FHIR_JSON,
    }
    body = observation("not-a") | {"id": "new1"}
    assert (await client.put("/Observation/new1", json=body, headers=token)).status_code == 403


async def test_if_match_does_not_reveal_versions_outside_the_compartment(client, auth, make_token):
    a = (await client.post("/Patient", json=patient("A4"), headers={**auth, **FHIR_JSON})).json()
    theirs = (
        await client.post("/Observation", json=observation("B4"), headers={**auth, **FHIR_JSON})
    ).json()
    token = {**bearer(make_token("patient/*.cruds", patient=a["id"])), **FHIR_JSON}
    mine = {**theirs, "subject": {"reference": f"Patient/{a['id']}"}}
    r = await client.put(
        f"/Observation/{theirs['id']}", json=mine, headers={**token, "If-Match": 'W/"99"'}
    )
    assert r.status_code == 403 and "version" not in r.text


async def test_search_size_is_capped(client, auth):
    many = ",".join(f"a{i}" for i in range(101))
    r = await client.get(f"/Patient?identifier={many}", headers=auth)
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "too-costly"
    form = "&".join(f"identifier=a{i}" for i in range(101)).encode()
    r = await client.post(
        "/Patient/_search",
        content=form,
        headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400


async def test_odd_inputs_are_4xx(client, auth, make_token):
    long_ref = observation("a" * 70)
    assert (
        await client.post("/Observation", json=long_ref, headers={**auth, **FHIR_JSON})
    ).status_code == 201
    for path in (
        "/Patient?identifier=a%00b",
        "/Patient?_cursor=a%00",
        "/Patient?_count=%C2%B2",
        "/_history?_cursor=%C2%B2",
        "/_history?_since=0001-01-01T00:00:00%2B01:00",
    ):
        r = await client.get(path, headers=auth)
        assert 400 <= r.status_code < 500, (path, r.status_code)
    assert (await client.get("/Patient/x/_history/%C2%B2", headers=auth)).status_code == 404
    inner = '{"url":"urn:x","valueString":"v"}'
    deep = '{"url":"urn:x","extension":[' * 150 + inner + "]}" * 150
    r = await client.post(
        "/Patient",
        content=f'{{"resourceType":"Patient","extension":[{deep}]}}'.encode(),
        headers={**auth, **FHIR_JSON},
    )
    assert r.status_code in (400, 422)


async def test_non_string_kid_is_401(client):
    import base64

    def b64(d):
        return base64.urlsafe_b64encode(orjson.dumps(d)).rstrip(b"=").decode()

    token = f"{b64({'alg': 'RS256', 'kid': ['x']})}.{b64({'sub': 'x'})}.c2ln"
    r = await client.get("/Patient", headers=bearer(token))
    assert r.status_code == 401
