"""batch and transaction Bundles."""

from __future__ import annotations

from sqlalchemy import func, select

from app.store.tables import resource
from tests.conftest import FHIR_BASE, FHIR_JSON
from tests.factories import encounter, observation, patient

MRN = "urn:oid:2.16.840.1.113883.3.dxf.mrn"


def _tx(entries, kind="transaction"):
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _post(resource, full_url=None, if_none_exist=None):
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    if if_none_exist:
        entry["request"]["ifNoneExist"] = if_none_exist
    return entry


async def _count(db):
    async with db.read() as conn:
        return await conn.scalar(select(func.count()).select_from(resource))


async def test_transaction_rewrites_urn_uuid_references(client, auth):
    pid_urn = "urn:uuid:9d0c5f2e-4d8e-4b5c-9b1e-1b3f2f5a6c7d"
    bundle = _tx(
        [
            _post(observation("placeholder") | {"subject": {"reference": pid_urn}}),
            _post(encounter("placeholder") | {"subject": {"reference": pid_urn}}),
            _post(patient("400"), full_url=pid_urn),
        ]
    )
    r = await client.post("", json=bundle, headers={**auth, **FHIR_JSON})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created"] * 3
    pid = out["entry"][2]["resource"]["id"]
    assert out["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert out["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    obs_id = out["entry"][0]["resource"]["id"]
    stored = (await client.get(f"/Observation/{obs_id}", headers=auth)).json()
    assert stored["subject"]["reference"] == f"Patient/{pid}"


async def test_transaction_is_all_or_nothing(client, auth, db):
    before = await _count(db)
    bundle = _tx(
        [
            _post(patient("401")),
            _post({"resourceType": "Patient", "birthDate": "garbage"}),
        ]
    )
    r = await client.post("", json=bundle, headers={**auth, **FHIR_JSON})
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["expression"][0] == "Bundle.entry[1]"
    assert await _count(db) == before


async def test_transaction_failing_update_rolls_back_create(client, auth, db):
    res = (await client.post("/Patient", json=patient("402"), headers={**auth, **FHIR_JSON})).json()
    bundle = _tx(
        [
            _post(patient("403")),
            {
                "resource": res,
                "request": {"method": "PUT", "url": f"Patient/{res['id']}", "ifMatch": 'W/"7"'},
            },
        ]
    )
    r = await client.post("", json=bundle, headers={**auth, **FHIR_JSON})
    assert r.status_code == 412
    assert await _count(db) == 1


async def test_transaction_conditional_create_and_reference(client, auth):
    existing = (
        await client.post("/Patient", json=patient("404"), headers={**auth, **FHIR_JSON})
    ).json()
    urn = "urn:uuid:0b8e1f8a-5a59-4d0e-9a69-8f0f3f1ad1a1"
    bundle = _tx(
        [
            _post(patient("404"), full_url=urn, if_none_exist=f"identifier={MRN}|404"),
            _post(observation("x") | {"subject": {"reference": urn}}),
            _post(encounter("x") | {"subject": {"reference": f"Patient?identifier={MRN}|404"}}),
        ]
    )
    r = await client.post("", json=bundle, headers={**auth, **FHIR_JSON})
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["resource"]["id"] == existing["id"]
    assert entries[1]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert entries[2]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"


async def test_transaction_unresolvable_conditional_reference_is_412(client, auth, db):
    bundle = _tx([_post(encounter("x") | {"subject": {"reference": "Patient?identifier=nobody"}})])
    r = await client.post("", json=bundle, headers={**auth, **FHIR_JSON})
    assert r.status_code == 412
    assert await _count(db) == 0


async def test_transaction_delete_and_conditional_put(client, auth):
    doomed = (
        await client.post("/Patient", json=patient("405"), headers={**auth, **FHIR_JSON})
    ).json()
    bundle = _tx(
        [
            {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
            {
                "resource": patient("406"),
                "request": {"method": "PUT", "url": f"Patient?identifier={MRN}|406"},
            },
            {"request": {"method": "GET", "url": f"Patient/{doomed['id']}/_history/1"}},
        ]
    )
    r = await client.post("", json=bundle, headers={**auth, **FHIR_JSON})
    # vread is not offered inside a transaction; the whole transaction fails and nothing changes
    assert r.status_code == 400
    assert (await client.get(f"/Patient/{doomed['id']}", headers=auth)).status_code == 200
    bundle["entry"].pop()
    r = await client.post("", json=bundle, headers={**auth, **FHIR_JSON})
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["204 No Content", "201 Created"]
    assert (await client.get(f"/Patient/{doomed['id']}", headers=auth)).status_code == 410


async def test_batch_entries_succeed_or_fail_alone(client, auth, db):
    existing = (
        await client.post("/Patient", json=patient("407"), headers={**auth, **FHIR_JSON})
    ).json()
    bundle = _tx(
        [
            _post(patient("408")),
            _post({"resourceType": "Patient", "birthDate": "sometime"}),
            {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
            {"request": {"method": "GET", "url": "Patient/nope"}},
            {"request": {"method": "GET", "url": f"Patient?identifier={MRN}|407"}},
        ],
        kind="batch",
    )
    r = await client.post("", json=bundle, headers={**auth, **FHIR_JSON})
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == [
        "201 Created",
        "422 Unprocessable Entity",
        "200 OK",
        "404 Not Found",
        "200 OK",
    ]
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert out["entry"][2]["resource"]["id"] == existing["id"]
    assert out["entry"][4]["resource"]["type"] == "searchset"
    assert await _count(db) == 2


async def test_bundle_entry_limit(client, auth, container, db):
    limit = container.settings.max_bundle_entries
    bundle = _tx([_post(patient(str(i))) for i in range(limit + 1)])
    r = await client.post("", json=bundle, headers={**auth, **FHIR_JSON})
    assert r.status_code == 413
    assert str(limit) in r.json()["issue"][0]["diagnostics"]
    assert await _count(db) == 0


async def test_full_limit_transaction_commits(client, auth, container, db):
    limit = container.settings.max_bundle_entries
    bundle = _tx([_post(patient(str(i))) for i in range(limit)])
    r = await client.post(
        "", json=bundle, headers={**auth, **FHIR_JSON, "Prefer": "return=minimal"}
    )
    assert r.status_code == 200
    assert all("resource" not in e for e in r.json()["entry"])
    assert await _count(db) == limit


async def test_bundle_must_be_batch_or_transaction(client, auth):
    r = await client.post(
        "", json={"resourceType": "Bundle", "type": "collection"}, headers={**auth, **FHIR_JSON}
    )
    assert r.status_code == 400
    r = await client.post("", json=patient(), headers={**auth, **FHIR_JSON})
    assert r.status_code == 400


async def test_transaction_response_locations_are_relative(client, auth):
    r = await client.post("", json=_tx([_post(patient("409"))]), headers={**auth, **FHIR_JSON})
    entry = r.json()["entry"][0]
    assert entry["response"]["location"].startswith("Patient/")
    assert entry["fullUrl"].startswith(f"{FHIR_BASE}/Patient/")
