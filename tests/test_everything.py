"""Patient/$everything: the whole record, paged, never another patient's data."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FHIR_JSON, bearer
from tests.factories import encounter, observation, patient


async def _create(client, auth, body: dict[str, Any]) -> str:
    r = await client.post(f"/{body['resourceType']}", json=body, headers={**auth, **FHIR_JSON})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _all(client, headers, url: str) -> list[tuple[str, str]]:
    """Follow next links to the end; the (type, id) of every entry, in order."""
    out = []
    while url:
        r = await client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert bundle["type"] == "searchset"
        out += [
            (e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle.get("entry", [])
        ]
        nxt = [ln["url"] for ln in bundle["link"] if ln["relation"] == "next"]
        url = nxt[0].split("/fhir", 1)[1] if nxt else ""
    return out


@pytest.fixture
async def record(client, auth):
    """Patient A with a practitioner, an organization, encounters and observations; patient B
    linked to A, sharing A's encounter in an Observation of B's."""
    ids: dict[str, Any] = {}
    ids["org"] = await _create(client, auth, {"resourceType": "Organization", "name": "Clinic"})
    ids["doc"] = await _create(
        client, auth, {"resourceType": "Practitioner", "name": [{"family": "Osler"}]}
    )
    ids["unrelated_doc"] = await _create(client, auth, {"resourceType": "Practitioner"})
    a = patient("ev-a")
    a["managingOrganization"] = {"reference": f"Organization/{ids['org']}"}
    ids["a"] = await _create(client, auth, a)
    b = patient("ev-b")
    b["link"] = [{"other": {"reference": f"Patient/{ids['a']}"}, "type": "seealso"}]
    ids["b"] = await _create(client, auth, b)
    enc = encounter(ids["a"])
    enc["participant"] = [{"individual": {"reference": f"Practitioner/{ids['doc']}"}}]
    enc["period"] = {"start": "2024-03-01T10:00:00Z", "end": "2024-03-01T11:00:00Z"}
    ids["enc"] = await _create(client, auth, enc)
    ids["obs"] = []
    for year in (2022, 2023, 2024):
        o = observation(ids["a"])
        o["effectiveDateTime"] = f"{year}-06-01"
        ids["obs"].append(await _create(client, auth, o))
    other = observation(ids["b"], code="718-7")
    other["encounter"] = {"reference": f"Encounter/{ids['enc']}"}  # B's data, A's encounter
    ids["b_obs"] = await _create(client, auth, other)
    return ids


async def test_instance_everything_is_the_whole_record_and_nothing_else(client, auth, record):
    got = await _all(client, auth, f"/Patient/{record['a']}/$everything?_count=2")
    assert len(got) == len(set(got))  # paging neither repeats nor skips
    assert set(got) == {
        ("Patient", record["a"]),
        ("Organization", record["org"]),
        ("Practitioner", record["doc"]),
        ("Encounter", record["enc"]),
        *(("Observation", o) for o in record["obs"]),
    }
    # B is linked to A and its Observation points at A's encounter: neither is A's data
    assert ("Patient", record["b"]) not in got and ("Observation", record["b_obs"]) not in got
    got_b = await _all(client, auth, f"/Patient/{record['b']}/$everything")
    assert set(got_b) == {("Patient", record["b"]), ("Observation", record["b_obs"])}


async def test_everything_parameters(client, auth, record):
    a = record["a"]
    got = await _all(client, auth, f"/Patient/{a}/$everything?_type=Observation,Patient")
    assert {t for t, _ in got} == {"Observation", "Patient"} and len(got) == 4
    got = await _all(client, auth, f"/Patient/{a}/$everything?start=2023-01-01&end=2023-12-31")
    assert [i for t, i in got if t == "Observation"] == [record["obs"][1]]
    assert ("Patient", a) in got and ("Encounter", record["enc"]) not in got
    got = await _all(client, auth, f"/Patient/{a}/$everything?start=2024")
    assert {("Encounter", record["enc"]), ("Observation", record["obs"][2])} <= set(got)
    assert ("Observation", record["obs"][0]) not in got
    body = (await client.get(f"/Observation/{record['obs'][0]}", headers=auth)).json()
    since = body["meta"]["lastUpdated"]
    await client.put(f"/Observation/{record['obs'][0]}", json=body, headers={**auth, **FHIR_JSON})
    got = await _all(client, auth, f"/Patient/{a}/$everything?_since={since}")
    assert ("Observation", record["obs"][0]) in got
    for bad in ("_type=Unicorn", "start=yesterday", "nosuch=1", "_cursor=xyz"):
        r = await client.get(f"/Patient/{a}/$everything?{bad}", headers=auth)
        assert r.status_code == 400, bad
        assert r.json()["resourceType"] == "OperationOutcome"


async def test_everything_under_a_patient_token(client, auth, make_token, record):
    mine = bearer(make_token("patient/*.rs", patient=record["b"]))
    r = await client.get(f"/Patient/{record['a']}/$everything", headers=mine)
    assert r.status_code == 404  # another patient's record does not exist for this token
    got = await _all(client, mine, "/Patient/$everything")
    assert set(got) == {("Patient", record["b"]), ("Observation", record["b_obs"])}
    assert (await client.get("/Patient/$everything")).status_code == 401
    no_patient_scope = bearer(make_token("system/Observation.rs"))
    r = await client.get(f"/Patient/{record['a']}/$everything", headers=no_patient_scope)
    assert r.status_code == 403


async def test_type_level_everything_for_a_system_token(client, auth, record):
    got = await _all(client, auth, "/Patient/$everything?_count=3")
    patients = {i for t, i in got if t == "Patient"}
    assert patients == {record["a"], record["b"]}
    assert ("Observation", record["b_obs"]) in got and ("Encounter", record["enc"]) in got
    assert ("Practitioner", record["unrelated_doc"]) not in got


async def test_everything_is_declared(client):
    cs = (await client.get("/metadata")).json()
    pat = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert {
        "name": "everything",
        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    } in pat["operation"]
    obs = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Observation")
    assert "operation" not in obs
